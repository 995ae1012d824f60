//! The host's relay for `allow-localhost` and `allow-lan` (issue 12, point 5).
//!
//! A service runs inside the App VM, which has no network to the host. When
//! a person allows it, the host listens on the service's target port — on
//! loopback ([`Scope::Localhost`]) or on its own local-network addresses
//! ([`Scope::Lan`]) — and relays each accepted TCP connection over vsock to
//! the App VM agent's relay ([`RELAY_PORT`]), which connects to
//! `127.0.0.1:<target port>` inside the App VM.
//!
//! What holds:
//! - the host always dials; the App VM never opens a connection to the host;
//! - nothing of the peer's address reaches the guest (only the target port,
//!   2 big-endian bytes), and the log gets counts, never an address;
//! - each listener checks its peer (loopback only, or local ranges only) on
//!   top of the host table's input chain ([`tails_nft::host`]);
//! - at most [`MAX_CONNECTIONS`] connections at once per relay; the guest
//!   must answer within [`HANDSHAKE`];
//! - dropping (or [`Relay::stop`]ping) a relay ends its listeners and its live
//!   connections, so the port is free again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tails_proto::RELAY_PORT;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::agent::AgentError;

/// Most connections one relay carries at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The guest's side must be reached and answer `OK` within this.
pub const HANDSHAKE: Duration = Duration::from_secs(10);

/// Who may connect to a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This computer only: listens on 127.0.0.1 and ::1, loopback peers only.
    Localhost,
    /// The local network: listens on the host's local-range addresses, peers
    /// from local ranges only (see [`is_local`]).
    Lan,
}

impl Scope {
    /// Whether a connection from `peer` is accepted.
    pub fn admits(self, peer: IpAddr) -> bool {
        match self {
            Scope::Localhost => canonical(peer).is_loopback(),
            Scope::Lan => is_local(peer),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Localhost => "this computer",
            Scope::Lan => "the local network",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(
        "port {} is in use on this computer ({addr}): stop what listens there, or turn allow-localhost and allow-lan off",
        addr.port()
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("this computer has no address on a local network: allow-lan has nowhere to listen")]
    NoAddress,
    #[error("{0} is not an address of this computer on a local network (allow-lan listens only on those)")]
    NotLan(IpAddr),
    #[error("target port 0 cannot be relayed")]
    PortZero,
    #[error("cannot read this computer's addresses: {0}")]
    Addresses(#[source] std::io::Error),
}

/// Whether `ip` is in a local range: loopback (127/8, ::1), RFC 1918 (10/8,
/// 172.16/12, 192.168/16), IPv4 link-local (169.254/16), IPv6 unique-local
/// (fc00::/7) or link-local (fe80::/10). An IPv4-mapped IPv6 address is
/// judged as its IPv4 address. Shared address space (100.64/10: the ISP's
/// CGNAT), public, unspecified and multicast addresses are not local.
pub fn is_local(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => a.is_loopback() || a.is_private() || a.is_link_local(),
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_loopback() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The host's own local-range, non-loopback addresses on interfaces that are
/// up: where a [`Scope::Lan`] relay listens. IPv6 link-local addresses are
/// skipped: binding one needs its interface's scope id, and a peer on the
/// link reaches the host on its other addresses.
pub fn lan_addresses() -> std::io::Result<Vec<IpAddr>> {
    use nix::net::if_::InterfaceFlags;
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        if !ifa.flags.contains(InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(a) = addr.as_sockaddr_in() {
            IpAddr::V4(a.ip())
        } else if let Some(a) = addr.as_sockaddr_in6() {
            IpAddr::V6(a.ip())
        } else {
            continue;
        };
        if lan_listenable(ip) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// Local range, not loopback, not IPv6 link-local (no scope id to bind).
fn lan_listenable(ip: IpAddr) -> bool {
    let v6_link_local = matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    is_local(ip) && !canonical(ip).is_loopback() && !v6_link_local
}

/// What a relay's connections share.
struct Shared {
    scope: Scope,
    port: u16,
    uds: PathBuf,
    handshake: Duration,
    slots: Arc<Semaphore>,
    refused: AtomicU64,
    busy: AtomicU64,
}

/// One service's relay in one scope: its listeners and live connections.
/// Dropping it aborts them all (their sockets close as the runtime drops the
/// tasks); [`Relay::stop`] also waits for that.
pub struct Relay {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Listen on `port` for `scope` and relay each admitted connection to the
    /// App VM through its vsock socket `uds`. For [`Scope::Localhost`] the
    /// relay listens on 127.0.0.1 and, if the host has it, ::1 (`addrs` is
    /// not used); for [`Scope::Lan`] on each of `addrs` (see
    /// [`lan_addresses`]). Nothing listens unless every bind succeeded.
    pub async fn start(
        scope: Scope,
        addrs: &[IpAddr],
        port: u16,
        uds: PathBuf,
    ) -> Result<Relay, RelayError> {
        let listen = match scope {
            Scope::Localhost => {
                let mut v = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
                if has_ipv6_loopback() {
                    v.push(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
                }
                v
            }
            Scope::Lan => {
                if addrs.is_empty() {
                    return Err(RelayError::NoAddress);
                }
                if let Some(bad) = addrs.iter().find(|a| !lan_listenable(**a)) {
                    return Err(RelayError::NotLan(*bad));
                }
                addrs.iter().map(|a| SocketAddr::new(*a, port)).collect()
            }
        };
        Self::start_on(scope, &listen, uds, HANDSHAKE, MAX_CONNECTIONS).await
    }

    /// `start` with the listen addresses, the handshake deadline and the
    /// connection limit given (the tests shorten and lower them).
    async fn start_on(
        scope: Scope,
        listen: &[SocketAddr],
        uds: PathBuf,
        handshake: Duration,
        max: usize,
    ) -> Result<Relay, RelayError> {
        let port = listen.first().map_or(0, SocketAddr::port);
        if port == 0 {
            return Err(RelayError::PortZero);
        }
        let mut listeners = Vec::with_capacity(listen.len());
        for addr in listen {
            let l = TcpListener::bind(addr).await.map_err(|source| {
                if source.kind() == std::io::ErrorKind::AddrInUse {
                    RelayError::Bind {
                        addr: *addr,
                        source,
                    }
                } else {
                    RelayError::Listen {
                        addr: *addr,
                        source,
                    }
                }
            })?;
            listeners.push(l);
        }
        let shared = Arc::new(Shared {
            scope,
            port,
            uds,
            handshake,
            slots: Arc::new(Semaphore::new(max)),
            refused: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        for l in listeners {
            tasks.spawn(accept_loop(l, shared.clone()));
        }
        crate::log(format!(
            "relay for target port {port}: listening for {scope} on {} address(es)",
            listen.len()
        ));
        Ok(Relay {
            shared,
            addrs: listen.to_vec(),
            tasks,
        })
    }

    /// Connections closed at once because the peer was outside the scope.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Where it listens.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// End the listeners and live connections; when this returns, the port
    /// is free again.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Whether ::1 can be bound (not when IPv6 is disabled).
fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Accept on `l` until aborted. The live connections are tasks of this
/// loop's own set, so aborting the loop ends them too.
async fn accept_loop(l: TcpListener, sh: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if !sh.scope.admits(peer.ip()) {
                        // Dropping `tcp` closes it. The address is not logged.
                        note(&sh.refused, &sh, "refused from outside the scope");
                        continue;
                    }
                    let Ok(permit) = sh.slots.clone().try_acquire_owned() else {
                        note(&sh.busy, &sh, "closed: too many at once");
                        continue;
                    };
                    let sh = sh.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = relay_one(tcp, &sh).await {
                            crate::log(format!(
                                "relay for target port {}: a connection failed: {e}",
                                sh.port
                            ));
                        }
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: wait instead of spinning.
                    crate::log(format!("relay for target port {}: accept: {e}", sh.port));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Count one event and log the count at 1, 2, 4, 8, … (a scan cannot flood
/// the log).
fn note(counter: &AtomicU64, sh: &Shared, what: &str) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        crate::log(format!(
            "relay for target port {} ({}): {n} connection(s) {what}",
            sh.port, sh.scope
        ));
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("cannot reach the App VM's vsock device: {0}")]
    Dial(std::io::Error),
    #[error("the App VM's relay did not answer: {0}")]
    Handshake(#[from] AgentError),
    #[error("the App VM's relay did not answer within {0:?}")]
    Timeout(Duration),
}

/// Dial the App VM's relay, send the target port, then copy both ways until
/// both sides are done.
async fn relay_one(mut tcp: TcpStream, sh: &Shared) -> Result<(), ConnError> {
    let _ = tcp.set_nodelay(true);
    let mut guest = tokio::time::timeout(sh.handshake, dial(&sh.uds, sh.port))
        .await
        .map_err(|_| ConnError::Timeout(sh.handshake))??;
    // Errors while copying are the peers' business (resets, half-closes).
    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut guest).await;
    Ok(())
}

/// `CONNECT <RELAY_PORT>`, `OK …`, then the 2-byte big-endian target port.
async fn dial(uds: &Path, port: u16) -> Result<UnixStream, ConnError> {
    let mut s = crate::agent::dial(uds, RELAY_PORT).await?;
    s.write_all(&port.to_be_bytes())
        .await
        .map_err(ConnError::Dial)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;
    use tokio::sync::mpsc;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::SeqCst);
            let p = std::env::temp_dir().join(format!("ts-relay-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// What the fake guest saw of one connection: the CONNECT line and the
    /// target port.
    type Seen = (String, u16);

    /// A fake vhost-device-vsock + App VM relay: answers `OK 1025`, reads the
    /// port, echoes the rest. With `silent`, it accepts and never answers.
    fn fake_guest(silent: bool) -> (TempDir, PathBuf, mpsc::UnboundedReceiver<Seen>) {
        let dir = TempDir::new();
        let path = dir.0.join("appvm.vsock");
        let l = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if silent {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(s);
                        return;
                    }
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    r.get_mut().write_all(b"OK 1025\n").await.unwrap();
                    let port = r.read_u16().await.unwrap();
                    tx.send((line, port)).unwrap();
                    let (mut rd, mut wr) = tokio::io::split(r);
                    let _ = tokio::io::copy(&mut rd, &mut wr).await;
                });
            }
        });
        (dir, path, rx)
    }

    /// A port that was free a moment ago.
    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn echo(port: u16, msg: &[u8]) -> Vec<u8> {
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        c.write_all(msg).await.unwrap();
        let mut got = vec![0; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    }

    /// Whether the server closed `c` within `within` (read returns 0 or an error).
    async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(within, c.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn loopback_client_reaches_the_guest_with_only_the_target_port() {
        let (_d, uds, mut seen) = fake_guest(false);
        let port = free_port();
        let r = Relay::start(Scope::Localhost, &[], port, uds)
            .await
            .unwrap();
        assert!(r.addrs().iter().all(|a| a.ip().is_loopback()));
        assert_eq!(echo(port, b"hello, service").await, b"hello, service");
        let (line, got) = seen.recv().await.unwrap();
        assert_eq!(line, "CONNECT 1025\n");
        assert_eq!(got, port);
        if r.addrs().len() == 2 {
            let mut c = TcpStream::connect((Ipv6Addr::LOCALHOST, port))
                .await
                .unwrap();
            c.write_all(b"v6").await.unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"v6");
        }
        assert_eq!(r.refused(), 0);
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_bind_error_naming_the_port() {
        let (_d, uds, _seen) = fake_guest(false);
        let held = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let e = Relay::start(Scope::Localhost, &[], port, uds.clone())
            .await
            .err()
            .unwrap();
        assert!(matches!(e, RelayError::Bind { addr, .. } if addr.port() == port));
        let text = e.to_string();
        assert!(text.contains(&format!("port {port} is in use")), "{text}");
        assert!(text.contains("allow-localhost and allow-lan off"), "{text}");

        // Two relays on one port: the second one is refused the same way.
        drop(held);
        let _first = Relay::start(Scope::Localhost, &[], port, uds.clone())
            .await
            .unwrap();
        assert!(matches!(
            Relay::start(Scope::Localhost, &[], port, uds).await,
            Err(RelayError::Bind { .. })
        ));
    }

    #[test]
    fn local_ranges() {
        for (ip, local) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("::1", true),
            ("10.0.0.1", true),
            ("172.16.0.1", true),
            ("172.31.255.254", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.10.20", true),
            ("100.64.0.1", false),
            ("8.8.8.8", false),
            ("0.0.0.0", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("::ffff:192.168.1.1", true),
            ("::ffff:8.8.8.8", false),
            ("::ffff:127.0.0.1", true),
            ("fd00::1", true),
            ("fc00::1", true),
            ("fe80::1", true),
            ("fec0::1", false),
            ("2001:db8::1", false),
            ("::", false),
            ("ff02::1", false),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(is_local(addr), local, "{ip}");
        }
    }

    #[test]
    fn each_scope_admits_only_its_peers() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(Scope::Localhost.admits(ip(peer)), "{peer}");
        }
        for peer in ["192.168.1.2", "10.0.0.1", "fd00::1", "8.8.8.8"] {
            assert!(!Scope::Localhost.admits(ip(peer)), "{peer}");
        }
        for peer in ["192.168.1.2", "fe80::1", "127.0.0.1"] {
            assert!(Scope::Lan.admits(ip(peer)), "{peer}");
        }
        for peer in ["100.64.0.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!Scope::Lan.admits(ip(peer)), "{peer}");
        }
    }

    #[tokio::test]
    async fn lan_relay_refuses_what_is_not_a_local_address_of_ours() {
        let uds = PathBuf::from("/nonexistent");
        for bad in ["127.0.0.1", "8.8.8.8", "fe80::1", "100.64.0.1"] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(
                matches!(
                    Relay::start(Scope::Lan, &[ip], 8080, uds.clone()).await,
                    Err(RelayError::NotLan(a)) if a == ip
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Relay::start(Scope::Lan, &[], 8080, uds.clone()).await,
            Err(RelayError::NoAddress)
        ));
        assert!(matches!(
            Relay::start(Scope::Localhost, &[], 0, uds).await,
            Err(RelayError::PortZero)
        ));
    }

    #[test]
    fn lan_addresses_are_local_and_bindable() {
        for ip in lan_addresses().unwrap() {
            assert!(lan_listenable(ip), "{ip}");
            assert!(!ip.is_loopback(), "{ip}");
            std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("{ip}: {e}"));
        }
    }

    #[tokio::test]
    async fn a_peer_outside_the_scope_is_closed_and_counted() {
        // A Localhost-scope relay made to listen on a LAN address of this
        // machine: a connection to it comes from that address, not loopback.
        let Some(lan) = lan_addresses().unwrap().into_iter().next() else {
            eprintln!("no LAN address on this machine: peer check not exercised end to end");
            return;
        };
        let (_d, uds, mut seen) = fake_guest(false);
        let port = free_port();
        let listen = [SocketAddr::new(lan, port)];
        let r = Relay::start_on(Scope::Localhost, &listen, uds, HANDSHAKE, 4)
            .await
            .unwrap();
        let mut c = TcpStream::connect(listen[0]).await.unwrap();
        assert!(closed_within(&mut c, Duration::from_secs(2)).await);
        assert_eq!(r.refused(), 1);
        assert!(seen.try_recv().is_err(), "the guest was never dialled");
    }

    #[tokio::test]
    async fn stop_frees_the_port_at_once_and_ends_live_connections() {
        let (_d, uds, _seen) = fake_guest(false);
        let port = free_port();
        let r = Relay::start(Scope::Localhost, &[], port, uds.clone())
            .await
            .unwrap();
        let mut live = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        live.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        live.read_exact(&mut b).await.unwrap();
        r.stop().await;
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port free after stop");
        assert!(closed_within(&mut live, Duration::from_secs(2)).await);

        // Dropping does the same once the runtime has dropped the tasks.
        let r = Relay::start(Scope::Localhost, &[], port, uds)
            .await
            .unwrap();
        drop(r);
        let mut free = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                free = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(free, "port free after drop");
    }

    #[tokio::test]
    async fn a_silent_guest_ends_the_connection_at_the_deadline() {
        let (_d, uds, _seen) = fake_guest(true);
        let port = free_port();
        let listen = [SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
        let _r = Relay::start_on(
            Scope::Localhost,
            &listen,
            uds,
            Duration::from_millis(300),
            4,
        )
        .await
        .unwrap();
        let mut c = TcpStream::connect(listen[0]).await.unwrap();
        let start = std::time::Instant::now();
        assert!(closed_within(&mut c, Duration::from_secs(3)).await);
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once() {
        let (_d, uds, _seen) = fake_guest(false);
        let port = free_port();
        let listen = [SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
        let _r = Relay::start_on(Scope::Localhost, &listen, uds, HANDSHAKE, 1)
            .await
            .unwrap();
        let mut first = TcpStream::connect(listen[0]).await.unwrap();
        first.write_all(b"1").await.unwrap();
        let mut b = [0u8; 1];
        first.read_exact(&mut b).await.unwrap();
        let mut second = TcpStream::connect(listen[0]).await.unwrap();
        assert!(closed_within(&mut second, Duration::from_secs(2)).await);
        // The first one still works.
        first.write_all(b"2").await.unwrap();
        first.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"2");
        // Once it ends, its slot is free again.
        drop(first);
        let mut ok = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut c = TcpStream::connect(listen[0]).await.unwrap();
            if c.write_all(b"3").await.is_ok()
                && tokio::time::timeout(Duration::from_millis(500), c.read_exact(&mut b))
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                ok = true;
                break;
            }
        }
        assert!(ok, "the slot came back");
    }
}
