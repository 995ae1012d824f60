//! vhost-device-vsock, rust-vmm's vsock device in user space.
//!
//! One process serves both VMs, each in its own group (`torvm`, `appvm`) so
//! that the guests cannot reach each other over vsock. It runs as its own
//! unprivileged user; the host agent then hands each vhost-user socket to its
//! VM's user (0600) and keeps the host-side sockets to itself.

use crate::paths::Paths;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tails_proto::Role;

/// Guest CID of each VM.
pub fn cid(role: Role) -> u32 {
    match role {
        Role::Torvm => 3,
        Role::Appvm => 4,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("cannot start vhost-device-vsock: {0}")]
    Spawn(std::io::Error),
    #[error("vhost-device-vsock {how}; see {log}")]
    Died { how: String, log: String },
    #[error("vhost-device-vsock did not create {path} within {secs} s; see {log}")]
    NoSocket {
        path: String,
        secs: u64,
        log: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The running device: our child, or one a daemon that died started.
pub struct VhostVsock {
    proc: Proc,
}

enum Proc {
    Child(Child),
    Adopted(crate::proc::ProcId),
}

/// The `--vm` argument for `role`.
pub fn vm_arg(paths: &Paths, role: Role) -> String {
    format!(
        "guest-cid={},socket={},uds-path={},groups={}",
        cid(role),
        paths.vhost_socket(role.name()).display(),
        paths.vsock_uds(role.name()).display(),
        role.name()
    )
}

fn wait_for(
    path: &Path,
    proc: &mut Proc,
    log: &Path,
    deadline: Duration,
) -> Result<(), VhostError> {
    let start = Instant::now();
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Some(how) = proc.exited() {
            return Err(VhostError::Died {
                how,
                log: log.display().to_string(),
            });
        }
        if start.elapsed() > deadline {
            return Err(VhostError::NoSocket {
                path: path.display().to_string(),
                secs: deadline.as_secs(),
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn chown_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), VhostError> {
    let io = |source| VhostError::Io {
        path: path.display().to_string(),
        source,
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
}

impl VhostVsock {
    /// Start the device as `user`, wait for its sockets, and give each VM's
    /// vhost-user socket to that VM's user. `vm_users` maps role → (uid, gid).
    pub fn start(
        binary: &Path,
        paths: &Paths,
        user: (u32, u32),
        vm_users: &[(Role, (u32, u32))],
    ) -> Result<Self, VhostError> {
        let log = paths.vhost_log();
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|source| VhostError::Io {
                    path: log.display().to_string(),
                    source,
                })
        };
        let mut cmd = Command::new(binary);
        for (role, _) in vm_users {
            cmd.arg("--vm").arg(vm_arg(paths, *role));
        }
        cmd.env_clear()
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?)
            .uid(user.0)
            .gid(user.1);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(VhostError::Spawn)?;
        let mut proc = Proc::Child(child);
        let result = (|| {
            for (role, (uid, gid)) in vm_users {
                let vhost: PathBuf = paths.vhost_socket(role.name());
                let uds: PathBuf = paths.vsock_uds(role.name());
                wait_for(&vhost, &mut proc, &log, Duration::from_secs(10))?;
                wait_for(&uds, &mut proc, &log, Duration::from_secs(10))?;
                chown_mode(&vhost, *uid, *gid, 0o600)?;
                chown_mode(&uds, user.0, user.1, 0o600)?;
            }
            Ok(())
        })();
        let mut dev = VhostVsock { proc };
        if let Err(e) = result {
            dev.stop();
            return Err(e);
        }
        Ok(dev)
    }

    /// Take over the device a daemon that died started.
    pub fn adopt(proc: crate::proc::ProcId) -> Self {
        VhostVsock {
            proc: Proc::Adopted(proc),
        }
    }

    /// After `role`'s QEMU went away: vhost-device-vsock serves that VM
    /// again on a new vhost-user socket; wait for it and give it to the VM's
    /// user again (0600), before a new QEMU connects.
    pub fn rearm(
        &mut self,
        paths: &Paths,
        user: (u32, u32),
        role: Role,
        vm_user: (u32, u32),
    ) -> Result<(), VhostError> {
        let log = paths.vhost_log();
        let vhost = paths.vhost_socket(role.name());
        let uds = paths.vsock_uds(role.name());
        wait_for(&vhost, &mut self.proc, &log, Duration::from_secs(10))?;
        wait_for(&uds, &mut self.proc, &log, Duration::from_secs(10))?;
        chown_mode(&vhost, vm_user.0, vm_user.1, 0o600)?;
        chown_mode(&uds, user.0, user.1, 0o600)
    }

    pub fn pid(&self) -> u32 {
        match &self.proc {
            Proc::Child(c) => c.id(),
            Proc::Adopted(p) => p.pid,
        }
    }

    /// Which process it is (for the state file).
    pub fn proc_id(&self) -> Option<crate::proc::ProcId> {
        crate::proc::ProcId::of(self.pid())
    }

    /// `None` while running.
    pub fn exited(&mut self) -> Option<String> {
        self.proc.exited()
    }

    /// SIGTERM, then SIGKILL after a second.
    pub fn stop(&mut self) {
        match &mut self.proc {
            Proc::Child(c) => crate::proc::terminate(c, Duration::from_secs(1)),
            Proc::Adopted(p) => {
                crate::proc::kill_all(std::slice::from_ref(p), Duration::from_secs(3));
            }
        }
    }
}

impl Proc {
    fn exited(&mut self) -> Option<String> {
        match self {
            Proc::Child(c) => match c.try_wait() {
                Ok(Some(s)) => Some(s.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            Proc::Adopted(p) => {
                (!p.alive()).then(|| "ended (it was started by a daemon that died)".to_owned())
            }
        }
    }
}
