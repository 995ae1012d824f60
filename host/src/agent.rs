//! Host side of a guest agent connection.
//!
//! Dials the agent through vhost-device-vsock's Unix socket (`CONNECT <port>`
//! / `OK <port>`), checks the greeting against the VM the host dialled, and
//! exchanges `tails-proto` frames. Everything the guest sends is bounded in
//! size and time; any violation ends this connection with an error and
//! nothing else.

use std::path::Path;
use std::time::Duration;
use tails_proto::msg::{
    ExecOutput, ExecRequest, GuestMsg, HostMsg, OnionPublish, Role, TorConfig, TorProgress,
    AGENT_PORT, MAX_GUEST_FRAME, MAX_HOST_FRAME,
};
use tails_proto::{read_frame, write_frame, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const HANDSHAKE: Duration = Duration::from_secs(5);
const REPLY: Duration = Duration::from_secs(10);
/// A service start waits for the service to listen (a slow start under TCG).
const SERVICE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the vsock device at {path}: {source}")]
    Dial {
        path: String,
        source: std::io::Error,
    },
    #[error("vsock handshake refused (agent not listening yet?): {0}")]
    Handshake(String),
    #[error("agent protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("agent claims to be {got} but this is the {want} socket")]
    WrongRole { want: Role, got: Role },
    #[error("unexpected reply from the agent: {0}")]
    Unexpected(String),
    #[error("the agent reports: {0}")]
    Remote(String),
}

/// An open, greeted connection to one guest agent.
pub struct Agent {
    stream: UnixStream,
    pub version: String,
}

/// Read the `OK <port>\n` line, at most 32 bytes, within the deadline.
async fn read_ok_line(s: &mut UnixStream) -> Result<(), AgentError> {
    let mut line = Vec::with_capacity(32);
    let fut = async {
        loop {
            let b = s
                .read_u8()
                .await
                .map_err(|e| AgentError::Handshake(e.to_string()))?;
            if b == b'\n' {
                return Ok(());
            }
            line.push(b);
            if line.len() > 32 {
                return Err(AgentError::Handshake("reply line too long".into()));
            }
        }
    };
    tokio::time::timeout(HANDSHAKE, fut)
        .await
        .map_err(|_| AgentError::Handshake("no reply".into()))??;
    // vhost-device-vsock answers `OK <host-side port>`; accept any OK.
    if line.starts_with(b"OK ") {
        Ok(())
    } else {
        Err(AgentError::Handshake(format!(
            "expected `OK <port>`, got {:?}",
            String::from_utf8_lossy(&line)
        )))
    }
}

/// Open a connection to vsock `port` of the guest behind `uds` (its
/// vhost-device-vsock socket): `CONNECT <port>`, then its `OK` line.
pub(crate) async fn dial(uds: &Path, port: u32) -> Result<UnixStream, AgentError> {
    let mut stream = UnixStream::connect(uds)
        .await
        .map_err(|source| AgentError::Dial {
            path: uds.display().to_string(),
            source,
        })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| AgentError::Handshake(e.to_string()))?;
    read_ok_line(&mut stream).await?;
    Ok(stream)
}

impl Agent {
    /// Dial `role`'s agent through the vsock socket at `uds`.
    pub async fn connect(uds: &Path, role: Role) -> Result<Agent, AgentError> {
        let mut stream = dial(uds, AGENT_PORT).await?;
        let hello: GuestMsg = read_frame(&mut stream, MAX_GUEST_FRAME, HANDSHAKE).await?;
        match hello {
            GuestMsg::Hello {
                role: got,
                agent_version,
            } => {
                if got != role {
                    return Err(AgentError::WrongRole { want: role, got });
                }
                let version = printable(&agent_version, 64);
                Ok(Agent { stream, version })
            }
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    async fn call(&mut self, msg: &HostMsg, deadline: Duration) -> Result<GuestMsg, AgentError> {
        write_frame(&mut self.stream, msg, MAX_HOST_FRAME, REPLY).await?;
        match read_frame(&mut self.stream, MAX_GUEST_FRAME, deadline).await? {
            GuestMsg::Error { message } => Err(AgentError::Remote(printable(&message, 512))),
            m => Ok(m),
        }
    }

    /// Round trip; returns the agent's uptime in milliseconds.
    pub async fn ping(&mut self) -> Result<u64, AgentError> {
        match self.call(&HostMsg::Ping, REPLY).await? {
            GuestMsg::Pong { uptime_ms } => Ok(uptime_ms),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// Run a command in the guest. The reply deadline is the command's own
    /// timeout plus a margin, so a guest cannot hold the host longer.
    pub async fn exec(
        &mut self,
        argv: Vec<String>,
        timeout: Duration,
        stdin: Vec<u8>,
    ) -> Result<ExecOutput, AgentError> {
        let req = HostMsg::Exec(ExecRequest {
            argv,
            timeout_ms: timeout.as_millis() as u64,
            stdin,
        });
        match self.call(&req, timeout + REPLY).await? {
            GuestMsg::Exec(out) => Ok(out),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// Tor VM: write the torrc and start tor.
    pub async fn start_tor(&mut self, cfg: TorConfig) -> Result<(), AgentError> {
        match self.call(&HostMsg::StartTor(cfg), REPLY).await? {
            GuestMsg::TorStarted => Ok(()),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// Tor VM: tor's bootstrap state, made safe to show.
    pub async fn tor_status(&mut self) -> Result<TorProgress, AgentError> {
        match self.call(&HostMsg::TorStatus, REPLY).await? {
            GuestMsg::Tor(p) => Ok(TorProgress {
                progress: p.progress.min(100),
                summary: printable(&p.summary, 160),
                running: p.running,
            }),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// Tor VM: publish an onion service; returns tor's service id (only for
    /// the caller to compare with the address it computed) and the number of
    /// descriptor uploads. The guest may take the request's timeout plus a
    /// margin, no longer.
    pub async fn publish_onion(&mut self, req: OnionPublish) -> Result<(String, u32), AgentError> {
        let deadline = Duration::from_millis(req.timeout_ms) + REPLY;
        match self.call(&HostMsg::PublishOnion(req), deadline).await? {
            GuestMsg::OnionPublished {
                service_id,
                uploads,
            } => Ok((printable(&service_id, 64), uploads)),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// Tor VM: take an onion service down.
    pub async fn remove_onion(&mut self, service_id: &str) -> Result<(), AgentError> {
        let msg = HostMsg::RemoveOnion {
            service_id: service_id.to_owned(),
        };
        match self.call(&msg, REPLY).await? {
            GuestMsg::OnionRemoved => Ok(()),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// App VM: start, stop or query a service; whether it runs. Only the
    /// `running` flag of the answer is used; the name must be the one asked.
    pub async fn service(&mut self, msg: HostMsg, name: &str) -> Result<bool, AgentError> {
        match self.call(&msg, SERVICE).await? {
            GuestMsg::Service { name: n, running } if n == name => Ok(running),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }

    /// Order a power-off; Ok once the agent acknowledged.
    pub async fn power_off(&mut self) -> Result<(), AgentError> {
        match self.call(&HostMsg::PowerOff, REPLY).await? {
            GuestMsg::PoweringOff => Ok(()),
            other => Err(AgentError::Unexpected(kind(&other).into())),
        }
    }
}

/// A guest-chosen string made safe to show: at most `max` characters, and
/// nothing a terminal would interpret (escape sequences, control characters).
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A message's kind, for errors (never its guest-chosen contents).
fn kind(m: &GuestMsg) -> &'static str {
    match m {
        GuestMsg::Hello { .. } => "Hello",
        GuestMsg::Pong { .. } => "Pong",
        GuestMsg::Exec(_) => "Exec",
        GuestMsg::PoweringOff => "PoweringOff",
        GuestMsg::TorStarted => "TorStarted",
        GuestMsg::Tor(_) => "Tor",
        GuestMsg::OnionPublished { .. } => "OnionPublished",
        GuestMsg::OnionRemoved => "OnionRemoved",
        GuestMsg::Service { .. } => "Service",
        GuestMsg::Error { .. } => "Error",
    }
}

#[cfg(test)]
mod tests {
    //! A fake vsock device + guest that misbehaves in every way we can think
    //! of: the host must get an error, quickly, and never hang or panic.
    use super::*;
    use tokio::net::UnixListener;

    async fn fake_guest(
        script: impl FnOnce(UnixStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            + Send
            + 'static,
    ) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("vm.vsock");
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            script(s).await;
        });
        (dir, path)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p =
                    std::env::temp_dir().join(format!("ts-agent-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    async fn ok_then(mut s: UnixStream, bytes: Vec<u8>) {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"OK 1024\n").await;
        let _ = s.write_all(&bytes).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&tails_proto::MAGIC);
        f.extend_from_slice(&tails_proto::VERSION.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn expect_err(bytes: Vec<u8>) -> AgentError {
        let (_d, p) = fake_guest(move |s| Box::pin(ok_then(s, bytes))).await;
        let start = std::time::Instant::now();
        let r = Agent::connect(&p, Role::Appvm).await;
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "took {:?}",
            start.elapsed()
        );
        match r {
            Err(e) => e,
            Ok(_) => panic!("hostile guest accepted"),
        }
    }

    #[tokio::test]
    async fn good_guest_is_accepted() {
        let hello = serde_json::to_vec(&GuestMsg::Hello {
            role: Role::Appvm,
            agent_version: "0.1.0".into(),
        })
        .unwrap();
        let (_d, p) = fake_guest(move |s| Box::pin(ok_then(s, frame(&hello)))).await;
        let a = Agent::connect(&p, Role::Appvm).await.unwrap();
        assert_eq!(a.version, "0.1.0");
    }

    #[test]
    fn guest_strings_cannot_drive_the_terminal() {
        assert_eq!(printable("0.1\x1b]0;pwned\x07\n", 64), "0.1?]0;pwned??");
        assert_eq!(printable(&"x".repeat(100), 64).len(), 64);
        assert_eq!(printable("h\u{e9}llo", 64), "h?llo");
    }

    #[tokio::test]
    async fn guest_claiming_another_role_is_refused() {
        let hello = serde_json::to_vec(&GuestMsg::Hello {
            role: Role::Torvm,
            agent_version: "0.1.0".into(),
        })
        .unwrap();
        assert!(matches!(
            expect_err(frame(&hello)).await,
            AgentError::WrongRole { .. }
        ));
    }

    #[tokio::test]
    async fn garbage_oversized_and_silent_guests_fail_fast() {
        assert!(matches!(
            expect_err(b"\x00\x01garbage garbage".to_vec()).await,
            AgentError::Frame(_)
        ));
        let mut big = frame(b"");
        big[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            expect_err(big).await,
            AgentError::Frame(tails_proto::FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            expect_err(frame(b"{\"Hello\":")).await,
            AgentError::Frame(_)
        ));
        // Silent after OK: the handshake deadline ends it.
        assert!(matches!(
            expect_err(Vec::new()).await,
            AgentError::Frame(tails_proto::FrameError::Timeout(_))
        ));
    }

    #[tokio::test]
    async fn endless_handshake_line_is_cut() {
        let (_d, p) = fake_guest(|mut s| {
            Box::pin(async move {
                let _ = s.write_all(&[b'O'; 4096]).await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            })
        })
        .await;
        assert!(matches!(
            Agent::connect(&p, Role::Appvm).await,
            Err(AgentError::Handshake(_))
        ));
    }
}
