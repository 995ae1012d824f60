//! The API's client side: find the daemon (or start it), send one request,
//! and collect its progress reports and final reply. Used by the CLI and
//! the GUI alike; it renders nothing.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tails_proto::{read_frame, write_frame, FrameError};
use tokio::net::UnixStream;

use crate::api::{Reply, Request, TorProgress, MAX_FRAME};
use crate::paths::Paths;
use crate::proc::pid_alive;

/// Longest any single reply may take (an `up` under TCG included).
const REPLY: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot talk to the daemon: {0}")]
    Send(#[source] FrameError),
    #[error("the control socket does not answer like tails-server: {0}")]
    Protocol(#[source] FrameError),
    #[error("the daemon is stopping (it closed the connection); try again")]
    Closed,
    #[error("cannot start the daemon: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the daemon exited ({status}): {last}")]
    Exited { status: String, last: String },
    #[error("the daemon did not open {socket} in time; see {log}")]
    NoSocket { socket: String, log: String },
    #[error("cannot open {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Something a long request reports before its final reply.
pub enum Event<'a> {
    Step(&'a str),
    Tor(&'a TorProgress),
}

/// Connect to a running daemon, if there is one.
pub async fn connect(paths: &Paths) -> Option<UnixStream> {
    UnixStream::connect(paths.control_socket()).await.ok()
}

/// Connect to the daemon, starting it if none runs.
pub async fn connect_or_start(paths: &Paths) -> Result<UnixStream, ClientError> {
    match connect(paths).await {
        Some(c) => Ok(c),
        None => spawn_daemon(paths).await,
    }
}

/// Send `req` and call `on_progress` for every report until the final
/// reply, which is returned.
pub async fn call(
    mut conn: UnixStream,
    req: &Request,
    mut on_progress: impl FnMut(Event),
) -> Result<Reply, ClientError> {
    let sent = write_frame(&mut conn, req, MAX_FRAME, Duration::from_secs(10)).await;
    if let Err(e) = sent {
        // Whatever answers may have spoken before hanging up: that says more.
        return match read_frame::<_, Reply>(&mut conn, MAX_FRAME, Duration::from_secs(1)).await {
            Err(FrameError::Closed) | Err(FrameError::Timeout(_)) | Ok(_) => {
                Err(ClientError::Send(e))
            }
            Err(e2) => Err(ClientError::Protocol(e2)),
        };
    }
    loop {
        match read_frame::<_, Reply>(&mut conn, MAX_FRAME, REPLY).await {
            Ok(Reply::Progress(m)) => on_progress(Event::Step(&m)),
            Ok(Reply::Tor(p)) => on_progress(Event::Tor(&p)),
            Ok(r) => return Ok(r),
            Err(FrameError::Closed) => return Err(ClientError::Closed),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Err(ClientError::Closed)
            }
            Err(e) => return Err(ClientError::Protocol(e)),
        }
    }
}

/// Wait (at most 10 s) for a daemon that said it is stopping to be gone, so
/// that a following command cannot meet it half-way out.
pub async fn wait_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why the daemon we started exited: the last error line in the daemon's
/// log (`tails-server: …`, what a daemon prints as it fails), else the last
/// line (another daemon may have written after ours).
fn last_log_line(paths: &Paths) -> String {
    let text = std::fs::read_to_string(paths.daemon_log()).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("tails-server: "))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("");
    let line = line
        .split_once("tails-server daemon: ")
        .map(|(_, l)| l)
        .or_else(|| line.strip_prefix("tails-server: "))
        .unwrap_or(line);
    format!("{line} (see {})", paths.daemon_log().display())
}

/// Start the daemon detached, its output in the daemon log, and wait for
/// its socket.
pub async fn spawn_daemon(paths: &Paths) -> Result<UnixStream, ClientError> {
    let log_err = |source| ClientError::Log {
        path: paths.daemon_log().display().to_string(),
        source,
    };
    std::fs::create_dir_all(&paths.log).map_err(log_err)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .map_err(log_err)?;
    let exe = std::env::current_exe().map_err(ClientError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(log_err)?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ClientError::Spawn)?;
    let start = Instant::now();
    loop {
        // Ours ended (refused: another daemon holds the lock): say so, even
        // if that other one's socket is there by now.
        if let Ok(Some(s)) = child.try_wait() {
            return Err(ClientError::Exited {
                status: s.to_string(),
                last: last_log_line(paths),
            });
        }
        if let Some(c) = connect(paths).await {
            // Reap it when it exits (it lives on in its own session).
            std::thread::spawn(move || child.wait());
            return Ok(c);
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err(ClientError::NoSocket {
                socket: paths.control_socket().display().to_string(),
                log: paths.daemon_log().display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
