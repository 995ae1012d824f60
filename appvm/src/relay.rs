//! The App VM's side of the `allow-localhost` / `allow-lan` relay.
//!
//! The host listens on a service's target port (on its loopback or its
//! local-network addresses) and dials this relay on vsock [`RELAY_PORT`] once
//! per connection it accepted. Each connection starts with the target port,
//! 2 big-endian bytes; the relay then connects to `127.0.0.1:<port>` and
//! copies bytes both ways. Nothing else is said: the App VM never learns who
//! connected, and it never opens a connection to the host.
//!
//! Only ports in the allowed set (the services with allow-localhost or
//! allow-lan on, kept by the agent as it starts and stops them) are
//! reached; only the host (CID 2) may connect; at most [`MAX_CONNECTIONS`] at
//! once; the header and the inner connection each have [`DEADLINE`].

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tails_guest::log;
use tails_proto::RELAY_PORT;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY, VMADDR_CID_HOST};

/// The target ports the host may reach through the relay.
pub type Allowed = Arc<Mutex<BTreeSet<u16>>>;

/// Most relayed connections at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// For the 2-byte header, and for the service to accept the inner connection.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Why one relayed connection was closed.
#[derive(Debug)]
pub enum RelayError {
    /// The header did not arrive (closed early, or not within the deadline).
    Header(String),
    /// The port is not one of the allowed services' ports.
    NotAllowed(u16),
    /// The service did not accept the connection.
    Connect { port: u16, reason: String },
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Header(e) => write!(f, "no target port from the host: {e}"),
            RelayError::NotAllowed(p) => write!(f, "port {p} is not relayed"),
            RelayError::Connect { port, reason } => {
                write!(f, "cannot connect to 127.0.0.1:{port}: {reason}")
            }
        }
    }
}

/// The target port the header names, if it is allowed. A poisoned lock
/// allows nothing.
pub fn target(header: [u8; 2], allowed: &Mutex<BTreeSet<u16>>) -> Result<u16, RelayError> {
    let port = u16::from_be_bytes(header);
    let ok = port != 0 && allowed.lock().is_ok_and(|set| set.contains(&port));
    if ok {
        Ok(port)
    } else {
        Err(RelayError::NotAllowed(port))
    }
}

/// Serve the relay in the background (on the current tokio runtime); a
/// failure to listen is logged.
pub fn spawn(allowed: Allowed) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serve(allowed).await {
            log(format!("relay stopped: {e}"));
        }
    })
}

/// Listen on vsock [`RELAY_PORT`] and relay each connection from the host.
pub async fn serve(allowed: Allowed) -> std::io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, RELAY_PORT))?;
    log(format!("relay listening on vsock port {RELAY_PORT}"));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // E.g. out of file descriptors: wait instead of spinning.
                log(format!("relay accept: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if peer.cid() != VMADDR_CID_HOST {
            log(format!(
                "relay: refused a connection from CID {}",
                peer.cid()
            ));
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log("relay: too many connections; closing one");
            continue;
        };
        let allowed = allowed.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = relay(stream, &allowed, DEADLINE).await {
                log(format!("relay: {e}"));
            }
        });
    }
}

/// One connection: header, check, inner connection, copy until both sides
/// are done. Generic so that the tests drive it without vsock.
async fn relay<S>(
    mut host: S,
    allowed: &Mutex<BTreeSet<u16>>,
    deadline: Duration,
) -> Result<(), RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0u8; 2];
    tokio::time::timeout(deadline, host.read_exact(&mut header))
        .await
        .map_err(|_| RelayError::Header(format!("none within {deadline:?}")))?
        .map_err(|e| RelayError::Header(e.to_string()))?;
    let port = target(header, allowed)?;
    let connect_err = |reason: String| RelayError::Connect { port, reason };
    let mut service =
        tokio::time::timeout(deadline, TcpStream::connect((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|_| connect_err(format!("not within {deadline:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
    let _ = service.set_nodelay(true);
    // Errors while copying (resets, half-closes) end only this connection.
    let _ = tokio::io::copy_bidirectional(&mut host, &mut service).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn allowed(ports: &[u16]) -> Mutex<BTreeSet<u16>> {
        Mutex::new(ports.iter().copied().collect())
    }

    #[test]
    fn the_header_is_a_big_endian_allowed_port() {
        let set = allowed(&[8080, 5222]);
        assert_eq!(target([0x1f, 0x90], &set).unwrap(), 8080);
        assert_eq!(target(5222u16.to_be_bytes(), &set).unwrap(), 5222);
        // Little-endian 8080 is 36895: not allowed.
        assert!(matches!(
            target([0x90, 0x1f], &set),
            Err(RelayError::NotAllowed(36895))
        ));
        assert!(matches!(
            target([0, 22], &set),
            Err(RelayError::NotAllowed(22))
        ));
    }

    #[test]
    fn port_zero_and_an_empty_or_poisoned_set_allow_nothing() {
        let set = allowed(&[0, 8080]);
        assert!(target([0, 0], &set).is_err());
        assert!(target([0x1f, 0x90], &allowed(&[])).is_err());
        let poisoned = Arc::new(allowed(&[8080]));
        let p = poisoned.clone();
        let _ = std::thread::spawn(move || {
            let _guard = p.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(poisoned.is_poisoned());
        assert!(target([0x1f, 0x90], &poisoned).is_err());
    }

    /// An echo service on 127.0.0.1; its port.
    async fn echo_service() -> u16 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn an_allowed_port_is_connected_and_relayed_both_ways() {
        let port = echo_service().await;
        let (mut host, guest) = tokio::io::duplex(1024);
        let set = Arc::new(allowed(&[port]));
        let s = set.clone();
        let task = tokio::spawn(async move { relay(guest, &s, DEADLINE).await });
        host.write_all(&port.to_be_bytes()).await.unwrap();
        host.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        host.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        drop(host);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_port_not_allowed_is_never_connected() {
        let port = echo_service().await;
        let (mut host, guest) = tokio::io::duplex(1024);
        let set = allowed(&[port.wrapping_add(1)]);
        host.write_all(&port.to_be_bytes()).await.unwrap();
        let r = relay(guest, &set, DEADLINE).await;
        assert!(matches!(r, Err(RelayError::NotAllowed(p)) if p == port));
        // The host's side sees the end.
        let mut b = [0u8; 1];
        assert_eq!(host.read(&mut b).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_short_or_missing_header_ends_the_connection() {
        let set = allowed(&[8080]);
        let (mut host, guest) = tokio::io::duplex(1024);
        host.write_all(&[0x1f]).await.unwrap();
        drop(host);
        assert!(matches!(
            relay(guest, &set, DEADLINE).await,
            Err(RelayError::Header(_))
        ));

        let (_host, guest) = tokio::io::duplex(1024);
        let start = std::time::Instant::now();
        assert!(matches!(
            relay(guest, &set, Duration::from_millis(200)).await,
            Err(RelayError::Header(_))
        ));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_allowed_port_nobody_listens_on_is_a_connect_error() {
        let free = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (mut host, guest) = tokio::io::duplex(1024);
        host.write_all(&free.to_be_bytes()).await.unwrap();
        let r = relay(guest, &allowed(&[free]), DEADLINE).await;
        assert!(matches!(r, Err(RelayError::Connect { port, .. }) if port == free));
    }
}
