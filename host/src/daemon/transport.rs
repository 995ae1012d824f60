//! The API's transport: the Unix socket, the peer check and the framing.
//! What a request does is in [`super::handlers`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tails_proto::{read_frame, write_frame};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::handlers::Handlers;
use crate::api::{Reply, Request, MAX_FRAME};

/// How long a client may take to send its request, or to take a reply.
const IO: Duration = Duration::from_secs(30);

/// Accept connections until the handlers say stop, or until the daemon has
/// been idle (nothing asked, no client) for `idle`.
pub async fn serve(listener: UnixListener, handlers: Arc<Handlers>, idle: Duration) {
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
                    if let Err(e) = connection(conn, h).await {
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
    #[error("refused client uid {0}")]
    NotRoot(u32),
    #[error("cannot read the peer's credentials: {0}")]
    Cred(#[source] std::io::Error),
    #[error(transparent)]
    Frame(#[from] tails_proto::FrameError),
}

/// One connection: one request, its replies.
async fn connection(mut conn: UnixStream, handlers: Arc<Handlers>) -> Result<(), ConnError> {
    // Root only: the socket is 0600 root, and the peer is checked too.
    let cred = conn.peer_cred().map_err(ConnError::Cred)?;
    if cred.uid() != 0 {
        return Err(ConnError::NotRoot(cred.uid()));
    }
    let req: Request = read_frame(&mut conn, MAX_FRAME, IO).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let work = tokio::spawn(async move { handlers.handle(req, tx).await });
    while let Some(reply) = rx.recv().await {
        // A client that went away must not stop the work it started.
        let _ = write_frame(&mut conn, &reply, MAX_FRAME, IO).await;
    }
    let _ = work.await;
    Ok(())
}
