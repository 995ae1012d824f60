//! vhost-device-vsock, rust-vmm's vsock device in user space: one process
//! per VM, each under a uid of its own and in its own jail (no network, no
//! file but its sockets, a seccomp filter), so that it maps that VM's memory
//! only. A bug in one reached from its guest gives nothing of the other VM.
//!
//! The host agent hands the vhost-user socket to the VM's QEMU user (0600)
//! and keeps the host-side socket (`CONNECT <port>`) to itself. When either
//! the backend or its VM's QEMU ends, both are started again together.

use crate::paths::Paths;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tails_jailer::{Bind, JailSpec, Limits, Net, Policy};
use tails_proto::Role;

/// Largest backend log before it is rotated (one old one is kept).
const LOG_MAX_BYTES: u64 = 1 << 20;

/// Guest CID of each VM.
pub fn cid(role: Role) -> u32 {
    match role {
        Role::Torvm => 3,
        Role::Appvm => 4,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    #[error("cannot start {role}'s vhost-device-vsock: {source}")]
    Spawn {
        role: Role,
        #[source]
        source: std::io::Error,
    },
    #[error("{role}'s vhost-device-vsock {how}; see {log}")]
    Died {
        role: Role,
        how: String,
        log: String,
    },
    #[error("{role}'s vhost-device-vsock did not create {path} within {secs} s; see {log}")]
    NoSocket {
        role: Role,
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

/// One VM's running device: our child, or one a daemon that died started.
pub struct VhostVsock {
    role: Role,
    proc: Proc,
}

enum Proc {
    Child(Child),
    Adopted(crate::proc::ProcId),
}

/// The `--vm` argument for `role`.
pub fn vm_arg(paths: &Paths, role: Role) -> String {
    format!(
        "guest-cid={},socket={},uds-path={}",
        cid(role),
        paths.vhost_socket(role.name()).display(),
        paths.vsock_uds(role.name()).display(),
    )
}

/// What the backend of `role` may see and use.
pub fn jail_spec(binary: &Path, paths: &Paths, role: Role, user: (u32, u32)) -> JailSpec {
    let dir = paths.vsock_vm_dir(role.name());
    JailSpec {
        name: format!("{}-vsock", role.name()),
        root: paths.jail_root(&format!("{}-vsock", role.name())),
        program: binary.to_path_buf(),
        args: vec!["--vm".into(), vm_arg(paths, role)],
        env: vec![("RUST_LOG".into(), "warn".into())],
        uid: user.0,
        gid: user.1,
        groups: vec![],
        cwd: dir.clone(),
        net: Net::Empty,
        binds: vec![Bind::rw(dir)],
        pass_fds: 0,
        limits: Limits {
            open_files: 256,
            processes: 32,
            memory_bytes: 128 << 20,
            pids: 32,
        },
        seccomp: Some(Policy::VsockBackend),
        log: Some(tails_jailer::LogSpec {
            path: paths.vhost_log(role.name()),
            max_bytes: LOG_MAX_BYTES,
        }),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VhostError + '_ {
    move |source| VhostError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Hand the socket at `path`, in a directory the backend (uid `maker`)
/// owns, to `to`: only if it is a socket that uid made (never a symlink or
/// a hard link it put there instead), and without following a link
/// (`lchown`). Its mode is the backend's 0700 (umask 077 in its jail).
fn give_socket(path: &Path, maker: u32, to: (u32, u32)) -> Result<(), VhostError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if !meta.file_type().is_socket() || meta.uid() != maker || meta.nlink() != 1 {
        return Err(VhostError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other("not the socket vhost-device-vsock makes: refusing it"),
        });
    }
    std::os::unix::fs::lchown(path, Some(to.0), Some(to.1)).map_err(io_err(path))
}

impl VhostVsock {
    /// Start `role`'s device in its jail as `user`, not waiting for it:
    /// [`VhostVsock::ready`] does (two devices spawned one after the other
    /// start at once).
    pub fn spawn(
        jailer: &Path,
        binary: &Path,
        paths: &Paths,
        role: Role,
        user: (u32, u32),
    ) -> Result<Self, VhostError> {
        let log = paths.vhost_log(role.name());
        let dir = paths.vsock_vm_dir(role.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        std::os::unix::fs::chown(&dir, Some(user.0), Some(user.1)).map_err(io_err(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&dir))?;
        let spec = jail_spec(binary, paths, role, user);
        crate::paths::make_jail_root(&spec.root).map_err(io_err(&spec.root))?;
        let json = serde_json::to_string(&spec).map_err(|e| VhostError::Spawn {
            role,
            source: std::io::Error::other(e),
        })?;
        let open_log = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(io_err(&log))
        };
        let mut cmd = Command::new(jailer);
        cmd.arg(json)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|source| VhostError::Spawn { role, source })?;
        Ok(VhostVsock {
            role,
            proc: Proc::Child(child),
        })
    }

    /// Wait (up to 10 s each) for the sockets of a device [`VhostVsock::spawn`]
    /// started as `user`, and give the vhost-user one to the VM's user
    /// `vm_user`. On an error the device is stopped.
    pub fn ready(
        &mut self,
        paths: &Paths,
        user: (u32, u32),
        vm_user: (u32, u32),
    ) -> Result<(), VhostError> {
        let log = paths.vhost_log(self.role.name());
        let vhost = paths.vhost_socket(self.role.name());
        let uds = paths.vsock_uds(self.role.name());
        let ready = (|| {
            self.wait_for(&vhost, &log, Duration::from_secs(10))?;
            self.wait_for(&uds, &log, Duration::from_secs(10))?;
            give_socket(&vhost, user.0, vm_user)
        })();
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    fn wait_for(&mut self, path: &Path, log: &Path, deadline: Duration) -> Result<(), VhostError> {
        let start = Instant::now();
        loop {
            if path.exists() {
                return Ok(());
            }
            if let Some(how) = self.proc.exited() {
                return Err(VhostError::Died {
                    role: self.role,
                    how,
                    log: log.display().to_string(),
                });
            }
            if start.elapsed() > deadline {
                return Err(VhostError::NoSocket {
                    role: self.role,
                    path: path.display().to_string(),
                    secs: deadline.as_secs(),
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Take over the device a daemon that died started.
    pub fn adopt(role: Role, proc: crate::proc::ProcId) -> Self {
        VhostVsock {
            role,
            proc: Proc::Adopted(proc),
        }
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

    /// SIGTERM to the jailer, which passes it on and kills the backend at
    /// once (PID 1 of its namespace without a handler, it never gets it),
    /// then reaps it and removes its cgroup; SIGKILL to
    /// the jailer after 3 s as the last resort (the backend then dies of its
    /// parent-death signal).
    pub fn stop(&mut self) {
        match &mut self.proc {
            Proc::Child(c) => crate::proc::terminate(c, Duration::from_secs(3)),
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
                Ok(Some(s)) => Some(crate::vmm::qemu::describe_exit(s)),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            Proc::Adopted(p) => {
                (!p.alive()).then(|| "ended (it was started by a daemon that died)".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_backend_s_own_socket_is_handed_over() {
        let d = std::env::temp_dir().join(format!("ts-vhost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        let me = nix::unistd::getuid().as_raw();
        let to = (me, nix::unistd::getgid().as_raw());
        // A symlink the backend put where its socket should be: refused,
        // and what it points at is left alone.
        let victim = d.join("victim");
        std::fs::write(&victim, "x").expect("write");
        let link = d.join("vhost.sock");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        assert!(give_socket(&link, me, to).is_err(), "a symlink");
        std::fs::remove_file(&link).expect("rm");
        // A hard link to someone else's file: not a socket, refused.
        std::fs::hard_link(&victim, &link).expect("hard link");
        assert!(give_socket(&link, me, to).is_err(), "a regular file");
        std::fs::remove_file(&link).expect("rm");
        // A socket of another uid: refused.
        let _l = std::os::unix::net::UnixListener::bind(&link).expect("bind");
        assert!(give_socket(&link, me + 1, to).is_err(), "another maker");
        // The backend's own socket: handed over.
        give_socket(&link, me, to).expect("its own socket");
        let _ = std::fs::remove_dir_all(d);
    }
}
