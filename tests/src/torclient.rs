//! Tor clients for the onion-service tests: a SOCKS5 client that reports
//! tor's extended error codes (0xF4 "missing client authorization" and the
//! like), a minimal control-port client (cookie authentication, one command),
//! and a fresh tor client started in the testnet's outside namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What a SOCKS5 CONNECT through tor gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetch {
    /// The connection was made; the first line of the HTTP reply and its body.
    Ok { status: String, body: String },
    /// tor refused with this SOCKS5 reply code (0xF4: missing client auth).
    Refused(u8),
    /// Something else went wrong (text for the assertion message).
    Failed(String),
}

/// `GET /` on `host:port` through the SOCKS5 proxy at `socks`.
pub fn http_get(socks: SocketAddr, host: &str, port: u16, timeout: Duration) -> Fetch {
    match try_get(socks, host, port, timeout) {
        Ok(f) => f,
        Err(e) => Fetch::Failed(e.to_string()),
    }
}

fn try_get(socks: SocketAddr, host: &str, port: u16, timeout: Duration) -> std::io::Result<Fetch> {
    let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(10))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&[5, 1, 0])?;
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello)?;
    if hello != [5, 0] {
        return Ok(Fetch::Failed(format!("SOCKS greeting refused: {hello:?}")));
    }
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend(host.as_bytes());
    req.extend(port.to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[1] != 0 {
        return Ok(Fetch::Refused(head[1]));
    }
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0]) + 2
        }
        _ => return Ok(Fetch::Failed("bad SOCKS address type".into())),
    };
    let mut rest = vec![0u8; skip];
    s.read_exact(&mut rest)?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut resp = Vec::new();
    s.take(1 << 20).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(Fetch::Ok { status, body })
}

/// One command on a tor control port with cookie authentication; the reply
/// lines.
pub fn control(addr: SocketAddr, cookie: &Path, command: &str) -> Result<Vec<String>, String> {
    let cookie = std::fs::read(cookie).map_err(|e| format!("{}: {e}", cookie.display()))?;
    let hex: String = cookie.iter().map(|b| format!("{b:02X}")).collect();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("AUTHENTICATE {hex}\r\n{command}\r\nQUIT\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    for l in BufReader::new(s).lines() {
        let l = l.map_err(|e| e.to_string())?;
        lines.push(l);
    }
    Ok(lines)
}

/// A tor client of our own in the outside namespace, joined to the testnet,
/// with `ExtendedErrors` on its SOCKS port; killed on drop.
pub struct FreshClient {
    child: Child,
    dir: PathBuf,
    netns: String,
    pub socks: SocketAddr,
}

impl FreshClient {
    pub fn start(netns: &str, join_options: &[String], socks: SocketAddr) -> FreshClient {
        Self::with_keys(netns, join_options, socks, &[])
    }

    /// A client holding the `auth_private` lines given (one per service),
    /// as Tor Browser would after a person pasted them.
    pub fn with_keys(
        netns: &str,
        join_options: &[String],
        socks: SocketAddr,
        auth_private: &[&str],
    ) -> FreshClient {
        let dir = std::env::temp_dir().join(format!(
            "ts-fresh-client-{}-{}",
            std::process::id(),
            socks.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("client dir");
        let mut torrc = String::new();
        for o in join_options {
            torrc.push_str(o);
            torrc.push('\n');
        }
        torrc.push_str(&format!(
            "DataDirectory {}\nSocksPort {socks} ExtendedErrors\nSocksPolicy accept 10.0.0.0/8\nLog notice file {}\n\
             ControlPort {}\nCookieAuthentication 1\n",
            dir.join("data").display(),
            dir.join("tor.log").display(),
            control_of(socks),
        ));
        if !auth_private.is_empty() {
            let keys = dir.join("keys");
            std::fs::create_dir_all(&keys).expect("keys dir");
            std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .expect("chmod keys");
            for (i, line) in auth_private.iter().enumerate() {
                std::fs::write(keys.join(format!("k{i}.auth_private")), format!("{line}\n"))
                    .expect("key file");
            }
            torrc.push_str(&format!("ClientOnionAuthDir {}\n", keys.display()));
        }
        let path = dir.join("torrc");
        std::fs::write(&path, torrc).expect("torrc");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "tor", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tor");
        FreshClient {
            child,
            dir,
            netns: netns.to_owned(),
            socks,
        }
    }
}

/// A fresh client's control port: its SOCKS port + 1000, on the same
/// address (SOCKS ports of the tests' clients are next to each other).
fn control_of(socks: SocketAddr) -> SocketAddr {
    let port = socks
        .port()
        .checked_add(1000)
        .expect("a SOCKS port below 64536");
    SocketAddr::new(socks.ip(), port)
}

/// How long a test's tor client goes without an answer from an onion
/// service that came back before it is told NEWNYM. The stack is back well
/// within it: after a VM is killed its service is published again in 7–8 s,
/// after `enable` in 1–2 s; a client still without an answer then is held
/// back by its own caches. (This was 60 s; in the fault test a client told
/// NEWNYM then answered 1.7 s later.)
pub const NEWNYM_AFTER: Duration = Duration::from_secs(30);

/// `attempt(limit)` tries for at most `limit`. When it gives nothing within
/// [`NEWNYM_AFTER`], the client `what` names is made to forget its
/// onion-service state by `forget` (NEWNYM: tor's failure caches would keep
/// it away for 2–3 minutes more; tor's client, not the stack), and
/// `attempt(rest)` runs once more.
pub fn with_newnym_after<T>(
    what: &str,
    mut attempt: impl FnMut(Duration) -> Option<T>,
    forget: impl FnOnce(),
    rest: Duration,
) -> Option<T> {
    attempt(NEWNYM_AFTER).or_else(|| {
        println!(
            "{what}: no answer for {} s: the client is told NEWNYM",
            NEWNYM_AFTER.as_secs()
        );
        forget();
        attempt(rest)
    })
}

impl FreshClient {
    /// `SIGNAL NEWNYM`, as Tor Browser's "New Identity" does: the client
    /// forgets its onion-service state (descriptors, the introduction points
    /// that failed, the directories it already asked), which otherwise keeps
    /// it from an onion service that came back for 2–3 minutes. Its keys
    /// (files in ClientOnionAuthDir) stay.
    pub fn new_identity(&self) {
        let cookie = self.dir.join("data/control_auth_cookie");
        let ns = crate::open_netns(&self.netns);
        // From inside the client's own namespace (one thread only): the
        // command goes over its loopback, never over a link a test captures.
        let r = std::thread::scope(|t| {
            t.spawn(|| {
                crate::enter_netns(ns)?;
                control(control_of(self.socks), &cookie, "SIGNAL NEWNYM")
            })
            .join()
        })
        .unwrap_or_else(|_| Err("the control thread panicked".into()))
        .unwrap_or_else(|e| panic!("the client's control port: {e}"));
        // Replies: AUTHENTICATE's, then the signal's.
        assert_eq!(
            r.get(1).map(String::as_str),
            Some("250 OK"),
            "NEWNYM refused: {r:?}"
        );
    }

    /// Whether this client's tor reached 100 % bootstrap within `secs` (read
    /// from its log).
    pub fn wait_bootstrapped(&self, secs: u64) -> bool {
        let log = self.dir.join("tor.log");
        crate::wait_until(secs, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Bootstrapped 100%"))
        })
    }
}

impl Drop for FreshClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
