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
    #[error("you may not use Tails Server: only root and the members of the group tails-server may (as root: adduser <user> tails-server, then log in again)")]
    Denied,
    #[error("the Tails Server daemon is not running, and only root may start it: `sudo systemctl enable --now tails-server.socket` (then it starts when asked)")]
    NotRunning,
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

/// Connect to a running daemon: `Ok(None)` if none runs, an error if
/// this user may not talk to it.
pub async fn try_connect(paths: &Paths) -> Result<Option<UnixStream>, ClientError> {
    match UnixStream::connect(paths.control_socket()).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(ClientError::Denied),
        Err(_) => Ok(None),
    }
}

/// Connect to the daemon, starting it if none runs (root only).
pub async fn connect_or_start(paths: &Paths) -> Result<UnixStream, ClientError> {
    match try_connect(paths).await? {
        Some(c) => Ok(c),
        None if !nix::unistd::geteuid().is_root() => Err(ClientError::NotRunning),
        None => spawn_daemon(paths).await,
    }
}

/// What a `Watch` connection brings.
pub enum Watched {
    /// The state now.
    State(Box<crate::api::Snapshot>),
    /// A step of what someone asked.
    Step(String),
    Tor(TorProgress),
}

/// Watch the daemon on `conn`: `on` is called for every report until it
/// says stop (returns `false`), the daemon stops (both `Ok`), or the
/// connection fails.
pub async fn watch(
    mut conn: UnixStream,
    mut on: impl FnMut(Watched) -> bool,
) -> Result<(), ClientError> {
    write_frame(
        &mut conn,
        &Request::Watch,
        MAX_FRAME,
        Duration::from_secs(10),
    )
    .await
    .map_err(ClientError::Send)?;
    loop {
        // No deadline: a quiet daemon sends nothing for as long as nothing
        // changes.
        match read_frame::<_, Reply>(&mut conn, MAX_FRAME, Duration::MAX).await {
            Ok(Reply::Event(s)) => {
                if !on(Watched::State(s)) {
                    return Ok(());
                }
            }
            Ok(Reply::Progress(m)) => {
                if !on(Watched::Step(m)) {
                    return Ok(());
                }
            }
            Ok(Reply::Tor(p)) => {
                if !on(Watched::Tor(p)) {
                    return Ok(());
                }
            }
            Ok(Reply::Error(e)) if e.kind == crate::api::ErrorKind::Denied => {
                return Err(ClientError::Denied)
            }
            Ok(_) | Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(ClientError::Protocol(e)),
        }
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
        // (A daemon that refuses this peer says why and closes at once.)
        return match read_frame::<_, Reply>(&mut conn, MAX_FRAME, Duration::from_secs(1)).await {
            Ok(r @ Reply::Error(_)) => Ok(r),
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

/// The `tails-server` program: this one, or the one beside this program
/// (the GUI), or the one on `PATH`.
fn daemon_program() -> Result<std::path::PathBuf, ClientError> {
    let exe = std::env::current_exe().map_err(ClientError::Spawn)?;
    if exe.file_name().is_some_and(|n| n == "tails-server") {
        return Ok(exe);
    }
    let beside = exe.with_file_name("tails-server");
    if beside.is_file() {
        return Ok(beside);
    }
    crate::paths::find_program("tails-server").ok_or_else(|| {
        ClientError::Spawn(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "tails-server is not installed beside this program nor on PATH",
        ))
    })
}

/// Start the daemon detached, its output in the daemon log, and wait for
/// its socket.
pub async fn spawn_daemon(paths: &Paths) -> Result<UnixStream, ClientError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ClientError::NotRunning);
    }
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
    let mut cmd = Command::new(daemon_program()?);
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
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
