//! The API's transport: the Unix socket, the peer check and the framing.
//! What a request does is in [`super::handlers`].
//!
//! Who may connect: root, and the members of the system group
//! [`GROUP`] (the desktop user of the GUI), checked with the peer's
//! credentials from the kernel (uid, gid and supplementary groups), not
//! only by the socket's mode. A member may do everything but run commands
//! in a guest ([`Request::Exec`], root in the VMs: root only).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tails_proto::{read_frame, write_frame};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::handlers::Handlers;
use crate::api::{ApiError, ErrorKind, Reply, Request, MAX_FRAME};

/// The system group whose members may use the API besides root.
pub const GROUP: &str = "tails-server";

/// How long a client may take to send its request, or to take a reply.
const IO: Duration = Duration::from_secs(30);

/// Who may connect, besides root.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// [`GROUP`]'s gid, when the group exists.
    pub group: Option<u32>,
}

impl Access {
    /// The group as the system defines it now.
    pub fn from_system() -> Access {
        let group = nix::unistd::Group::from_name(GROUP)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        Access { group }
    }
}

/// Accept connections until the handlers say stop, or until the daemon has
/// been idle (nothing asked, no client) for `idle`.
pub async fn serve(
    listener: UnixListener,
    handlers: Arc<Handlers>,
    access: Access,
    idle: Duration,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut quit = handlers.quit_signal();
    loop {
        tokio::select! {
            _ = quit.changed() => break,
            r = listener.accept() => {
                let conn = match r {
                    Ok((c, _)) => c,
                    Err(e) => {
                        crate::log(format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let h = handlers.clone();
                let active = active.clone();
                active.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Err(e) = connection(conn, h, access).await {
                        crate::log(format!("client: {e}"));
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            _ = tokio::time::sleep(idle) => {
                if active.load(Ordering::SeqCst) == 0 && handlers.idle() {
                    crate::log("nothing to supervise and no client: stopping");
                    break;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("refused client uid {0}: not root and not in the group {GROUP}")]
    Refused(u32),
    #[error("cannot read the peer's credentials: {0}")]
    Cred(#[source] std::io::Error),
    #[error(transparent)]
    Frame(#[from] tails_proto::FrameError),
}

/// Who the peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Root,
    Member,
}

/// The peer's supplementary groups (`SO_PEERGROUPS`), as the kernel saw
/// them when it connected.
fn peer_groups(fd: RawFd) -> std::io::Result<Vec<u32>> {
    let mut buf = vec![0u32; 64];
    loop {
        let mut len = libc::socklen_t::try_from(buf.len() * 4).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `buf` is valid for `len` bytes; the kernel writes at most
        // `len` bytes and sets `len` to what it wrote (or needs).
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            buf.truncate(len as usize / 4);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        // NGROUPS_MAX is 65536.
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 {
            let need = (len as usize / 4).max(buf.len() * 2).min(65536);
            buf.resize(need, 0);
            continue;
        }
        return Err(e);
    }
}

fn check_peer(conn: &UnixStream, access: Access) -> Result<Peer, ConnError> {
    let cred = conn.peer_cred().map_err(ConnError::Cred)?;
    if cred.uid() == 0 {
        return Ok(Peer::Root);
    }
    let Some(group) = access.group else {
        return Err(ConnError::Refused(cred.uid()));
    };
    if cred.gid() == group
        || peer_groups(conn.as_raw_fd())
            .map_err(ConnError::Cred)?
            .contains(&group)
    {
        return Ok(Peer::Member);
    }
    Err(ConnError::Refused(cred.uid()))
}

/// One connection: one request, its replies (a `Watch`: until either side
/// goes).
async fn connection(
    mut conn: UnixStream,
    handlers: Arc<Handlers>,
    access: Access,
) -> Result<(), ConnError> {
    let peer = match check_peer(&conn, access) {
        Ok(p) => p,
        Err(e) => {
            // Said to the client too: it can tell the person what to do.
            let refused = Reply::Error(ApiError {
                kind: ErrorKind::Denied,
                message: format!(
                    "only root and the members of the group {GROUP} may use Tails Server (as root: adduser <user> {GROUP}, then log in again)"
                ),
            });
            let _ = write_frame(&mut conn, &refused, MAX_FRAME, Duration::from_secs(1)).await;
            return Err(e);
        }
    };
    let req: Request = read_frame(&mut conn, MAX_FRAME, IO).await?;
    if peer != Peer::Root && matches!(req, Request::Exec { .. }) {
        let refused = Reply::Error(ApiError {
            kind: ErrorKind::Denied,
            message: "only root may run commands in a VM (`tails-server exec` as root)".into(),
        });
        write_frame(&mut conn, &refused, MAX_FRAME, IO).await?;
        return Ok(());
    }
    let watching = matches!(req, Request::Watch);
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let work = tokio::spawn(async move { handlers.handle(req, tx).await });
    if watching {
        // Until the client hangs up (it sends nothing more) or cannot keep
        // up; dropping `rx` ends the watch.
        let (mut rd, mut wr) = conn.into_split();
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(reply) => {
                        if write_frame(&mut wr, &reply, MAX_FRAME, IO).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = rd.read(&mut byte) => break,
            }
        }
        drop(rx);
        let _ = work.await;
        return Ok(());
    }
    while let Some(reply) = rx.recv().await {
        // A client that went away must not stop the work it started.
        let _ = write_frame(&mut conn, &reply, MAX_FRAME, IO).await;
    }
    let _ = work.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kernel_gives_the_peers_groups() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let mut got = peer_groups(a.as_raw_fd()).expect("SO_PEERGROUPS");
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        want.dedup();
        got.dedup();
        assert_eq!(got, want);
        // Root is root, whatever the group.
        let none = Access { group: None };
        let uid = nix::unistd::geteuid();
        let peer = check_peer(&a, none);
        if uid.is_root() {
            assert_eq!(peer.expect("root"), Peer::Root);
        } else {
            assert!(matches!(peer, Err(ConnError::Refused(_))));
        }
    }
}
