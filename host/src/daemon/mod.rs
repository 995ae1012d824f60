//! The daemon: the one owner of the state and the supervisor of the stack.
//!
//! Started by `up` (or any command that needs it) or by its systemd unit;
//! it takes the state lock, takes over from a daemon that died, starts the
//! reconciler ([`crate::supervisor`]) and serves the API on a root-only Unix
//! socket ([`transport`], with one function per request in [`handlers`]).
//! It stops after `down`, or when nothing is asked of it and nobody talks to
//! it, removing every runtime file.

mod handlers;
mod transport;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::DaemonError;
use crate::paths::Paths;
use crate::store::Store;
use crate::supervisor::{Desired, StackWant, Supervisor};

/// How long a daemon with nothing to supervise waits for a request.
const IDLE: Duration = Duration::from_secs(2);

/// The first descriptor systemd passes (sd_listen_fds(3)).
const SD_LISTEN_FDS_START: std::os::fd::RawFd = 3;

/// The listening socket systemd passed to this process (socket activation:
/// `tails-server.socket`), if it did: `LISTEN_PID` is ours and
/// `LISTEN_FDS` is 1. It must be the control socket, or it is refused.
fn systemd_listener(
    sock: &std::path::Path,
) -> Result<Option<tokio::net::UnixListener>, DaemonError> {
    use std::os::fd::FromRawFd;
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let fds = std::env::var("LISTEN_FDS").ok();
    // Not for the processes this one starts.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if !ours {
        return Ok(None);
    }
    if fds.as_deref() != Some("1") {
        return Err(DaemonError::Activation(format!(
            "systemd passed {} sockets; tails-server.socket gives one",
            fds.unwrap_or_default()
        )));
    }
    // SAFETY: systemd passed this process descriptor 3 to own (LISTEN_PID
    // is ours); nothing else in this process has taken it.
    let std_listener =
        unsafe { std::os::unix::net::UnixListener::from_raw_fd(SD_LISTEN_FDS_START) };
    let bad = |what: String| DaemonError::Activation(what);
    let at = std_listener.local_addr().map_err(|e| {
        bad(format!(
            "the socket systemd passed is not a Unix socket: {e}"
        ))
    })?;
    if at.as_pathname() != Some(sock) {
        return Err(bad(format!(
            "the socket systemd passed is {:?}, not {}",
            at.as_pathname(),
            sock.display()
        )));
    }
    std_listener
        .set_nonblocking(true)
        .map_err(|e| bad(format!("cannot use the socket systemd passed: {e}")))?;
    tokio::net::UnixListener::from_std(std_listener)
        .map(Some)
        .map_err(|e| bad(format!("cannot use the socket systemd passed: {e}")))
}

/// How the daemon was started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Bring the stack up at once with the autostart settings (the systemd
    /// unit at boot).
    pub boot: bool,
}

/// Run the daemon in the foreground until it is told to stop.
pub async fn run(paths: Paths, opts: Options) -> Result<(), DaemonError> {
    let io = |what: &'static str, p: &std::path::Path| {
        let path = p.display().to_string();
        move |source| crate::store::StoreError::Io { what, path, source }
    };
    // One daemon per runtime directory, from before it looks at what a dead
    // one left until its very end.
    if let Some(parent) = paths.runtime.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    let _runtime_lock = crate::store::lock_exclusive(&paths.runtime_lock())?;
    std::fs::create_dir_all(&paths.runtime).map_err(io("create", &paths.runtime))?;
    std::fs::set_permissions(&paths.runtime, std::fs::Permissions::from_mode(0o711))
        .map_err(io("chmod", &paths.runtime))?;
    // One daemon per state: the lock is held for as long as we run.
    let mut store = Store::open(&paths.state, &paths.amnesic())?;
    store.set_persistent(crate::store::Persistent::of(&paths.vault()));
    let sock = paths.control_socket();
    // Socket activation: systemd listens, and gave us its socket.
    let activated = systemd_listener(&sock)?;
    let given = activated.is_some();
    if !given && tokio::net::UnixStream::connect(&sock).await.is_ok() {
        return Err(DaemonError::Busy);
    }
    // A desired state left by a daemon that died wins over the boot
    // settings: it is what was asked last.
    let left = paths.desired_file().exists();
    let mut desired = match crate::supervisor::read_desired(&paths) {
        Ok(d) => d,
        Err(e) => {
            crate::log(format!("{e}: starting with nothing asked"));
            Desired::default()
        }
    };
    // What a boot does, once per boot of the host: a daemon that socket
    // activation starts later in the same boot (after a `down`) only serves.
    let booted = paths.runtime.with_extension("booted");
    if opts.boot && !left && !booted.exists() {
        let _ = std::fs::write(&booted, b"");
        let settings: handlers::Settings = store.read_settings()?;
        let (cmdline, file) = crate::boot::host_says(&paths.isolate_file());
        let choice = crate::boot::decide(
            cmdline,
            file,
            settings.isolate,
            settings.autostart.is_some(),
        );
        crate::log(format!(
            "at boot: isolation is {} (decided by {})",
            if choice.on {
                "on"
            } else {
                "off: nothing of Tails Server starts"
            },
            choice.source.words()
        ));
        if choice.on {
            let (network, bridges) = settings
                .autostart
                .map(|a| (a.network, a.bridges))
                .unwrap_or((crate::api::Network::Public, Vec::new()));
            desired.stack = Some(StackWant {
                network,
                bridges,
                confirmed: true,
            });
        }
    }
    let keep_table = desired.stack.is_some();
    // What a dead daemon left: taken over if the stack is to run on (after
    // the socket is ours), else stopped now.
    let left_behind = crate::takeover::find_left(&paths, given);
    let record: Option<crate::stack::StateFile> =
        crate::store::read_json(&paths.state_file()).ok().flatten();
    let adoptable = keep_table
        && left_behind
            .as_ref()
            .is_some_and(|s| !s.processes.is_empty());
    let found = match (&left_behind, adoptable) {
        (Some(_), false) => crate::takeover::take_over(&paths, keep_table, given),
        _ => None,
    };
    // Root's, and readable by the group of the API's other users if there
    // is one (the peer is checked again on every connection); systemd's
    // socket has the unit's mode and group.
    let access = transport::Access::from_system();
    let listener = match activated {
        Some(l) => l,
        None => {
            let _ = std::fs::remove_file(&sock);
            let listener = tokio::net::UnixListener::bind(&sock).map_err(io("bind", &sock))?;
            let mode = match access.group {
                Some(gid) => {
                    nix::unistd::chown(&sock, None, Some(nix::unistd::Gid::from_raw(gid)))
                        .map_err(|e| io("chown", &sock)(e.into()))?;
                    0o660
                }
                None => 0o600,
            };
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod", &sock))?;
            listener
        }
    };
    std::fs::write(paths.daemon_pid(), std::process::id().to_string())
        .map_err(io("write", &paths.daemon_pid()))?;
    crate::store::write_json(&paths.desired_file(), &desired)?;
    let (catalog, errors) = tails_catalog::Catalog::load_dir(&paths.services());
    for e in errors {
        crate::log(format!("skipping a service: {e}"));
    }
    let boot = opts.boot && !left && desired.stack.is_some();
    let sup = Supervisor::new(paths.clone(), catalog, store, desired);
    if let Some(f) = found {
        if keep_table {
            sup.adopt_table();
        }
        sup.set_found_at_start(f);
    }
    if let (true, Some(stale), Some(record)) = (adoptable, left_behind, record) {
        let what = match sup.adopt(&record).await {
            Ok(how) => format!("{}; {how}", stale.describe()),
            Err(e) => {
                // Cannot take it over: stop it, and start afresh.
                let stopped = crate::takeover::take_over(&paths, true, given).unwrap_or_default();
                sup.adopt_table();
                format!("{stopped}; could not take it over ({e}): starting it afresh")
            }
        };
        sup.set_found_at_start(what);
    }
    if boot {
        handlers::enable_autostart_services(&sup).await;
    }
    tokio::spawn(sup.clone().run());
    crate::log(format!("listening on {}", sock.display()));
    transport::serve(
        listener,
        Arc::new(handlers::Handlers::new(sup.clone())),
        access,
        IDLE,
    )
    .await;
    // Let the last reply reach its client before the socket goes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Only while the runtime directory is still ours.
    if crate::takeover::daemon_pid(&paths) == Some(std::process::id()) {
        if given {
            crate::stack::remove_runtime_but_socket(&paths);
        } else {
            crate::stack::remove_runtime(&paths);
        }
    }
    crate::log("stopped");
    Ok(())
}
