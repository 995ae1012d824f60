//! Where the host agent keeps its files.
//!
//! Runtime files (sockets, pids, the stack's state) live under one runtime
//! directory and are all removed by `down`; logs outlive a run so that a
//! failed `up` can point at them; images live in the cache of the images crate.
//! The installed programs and the catalog are in the library directory
//! beside the executable's (`/usr/lib/tails-server` for the Debian package's
//! `/usr/bin/tails-server`, `/usr/local/lib/tails-server` for setup.sh's).

use std::path::{Path, PathBuf};

/// The directories of one installation. Every path is derived from these.
#[derive(Debug, Clone)]
pub struct Paths {
    pub runtime: PathBuf,
    pub log: PathBuf,
    pub images: PathBuf,
    /// Where the static guest agents and service definitions are installed.
    pub lib: PathBuf,
    /// Kept state: the services' options, onion keys and client keys (0700).
    pub state: PathBuf,
    /// The encrypted persistent store's container file.
    pub store: PathBuf,
}

/// Where an installation's own programs and catalog are when nothing else
/// says: setup.sh's prefix.
pub const DEFAULT_LIB_DIR: &str = "/usr/local/lib/tails-server";

/// The library directory: `TAILS_SERVER_LIB_DIR` if set, else the one
/// that belongs to the running executable (`<prefix>/lib/tails-server` for
/// `<prefix>/bin/tails-server`) if it exists, else [`DEFAULT_LIB_DIR`] (a
/// build in `target/` uses setup.sh's installation).
pub fn lib_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TAILS_SERVER_LIB_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| lib_dir_of(&exe))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LIB_DIR))
}

/// `<prefix>/lib/tails-server` for `<prefix>/bin/<exe>`.
fn lib_dir_of(exe: &Path) -> Option<PathBuf> {
    let prefix = exe.parent()?.parent()?;
    Some(prefix.join("lib").join("tails-server"))
}

fn env_or(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

impl Paths {
    /// The standard locations, each overridable by an environment variable
    /// (used by tests to run a second installation beside the first).
    pub fn from_env() -> Self {
        Paths {
            runtime: env_or("TAILS_SERVER_RUNTIME_DIR", "/run/tails-server"),
            log: env_or("TAILS_SERVER_LOG_DIR", "/var/log/tails-server"),
            images: env_or("TAILS_SERVER_IMAGE_DIR", tails_images::DEFAULT_CACHE_DIR),
            lib: lib_dir(),
            state: env_or("TAILS_SERVER_STATE_DIR", "/var/lib/tails-server/state"),
            store: env_or("TAILS_SERVER_STORE", "/var/lib/tails-server/store.luks"),
        }
    }

    /// The lock a daemon holds for its whole life, beside the runtime
    /// directory (which it removes at the end): no second daemon starts,
    /// cleans up after a dead one or takes a stack over while it is held.
    pub fn runtime_lock(&self) -> PathBuf {
        self.runtime.with_extension("lock")
    }
    /// The control socket, where the daemon (or systemd, for it: socket
    /// activation) listens.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime.join("control.sock")
    }
    pub fn daemon_pid(&self) -> PathBuf {
        self.runtime.join("daemon.pid")
    }
    /// The running stack's processes (so that a daemon started after one
    /// that died finds them).
    pub fn state_file(&self) -> PathBuf {
        self.runtime.join("stack.json")
    }
    /// What runs of each service (see the supervisor).
    pub fn live_file(&self) -> PathBuf {
        self.runtime.join("live.json")
    }
    /// What the daemon is asked to keep running (see the supervisor).
    pub fn desired_file(&self) -> PathBuf {
        self.runtime.join("desired.json")
    }
    /// The vsock backends' directories.
    pub fn vsock_dir(&self) -> PathBuf {
        self.runtime.join("vsock")
    }
    /// `vm`'s vsock backend's directory (its two sockets; its user's, 0700).
    pub fn vsock_vm_dir(&self, vm: &str) -> PathBuf {
        self.vsock_dir().join(vm)
    }
    /// vhost-user socket QEMU connects to for `vm`.
    pub fn vhost_socket(&self, vm: &str) -> PathBuf {
        self.vsock_vm_dir(vm).join("vhost.sock")
    }
    /// Host side of `vm`'s vsock (the `CONNECT <port>` socket).
    pub fn vsock_uds(&self, vm: &str) -> PathBuf {
        self.vsock_vm_dir(vm).join("vsock.sock")
    }
    /// Where the jails' roots are built (root's, 0700).
    pub fn jail_dir(&self) -> PathBuf {
        self.runtime.join("jail")
    }
    /// The mount point of one jailed process's root.
    pub fn jail_root(&self, name: &str) -> PathBuf {
        self.jail_dir().join(name)
    }
    /// The jailer (see the tails-jailer crate).
    pub fn jailer(&self) -> PathBuf {
        self.lib.join("tails-jailer")
    }
    /// The internal link's directory (the Tor VM's user's, 0700).
    pub fn link_dir(&self) -> PathBuf {
        self.runtime.join("link")
    }
    /// The internal link's listening end, held by the App VM's QEMU.
    pub fn link_socket(&self) -> PathBuf {
        self.link_dir().join("internal.sock")
    }
    /// `vm`'s private directory, owned by its QEMU user.
    pub fn vm_dir(&self, vm: &str) -> PathBuf {
        self.runtime.join(vm)
    }
    pub fn qmp_socket(&self, vm: &str) -> PathBuf {
        self.vm_dir(vm).join("qmp.sock")
    }
    pub fn console_log(&self, vm: &str) -> PathBuf {
        self.log.join(format!("{vm}.console.log"))
    }
    /// Cached verdict of the KVM boot probe (kept across runs).
    pub fn accel_cache(&self) -> PathBuf {
        self.images.join("accel-probe.json")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.log.join("daemon.log")
    }
    /// `vm`'s vsock backend's messages.
    pub fn vhost_log(&self, vm: &str) -> PathBuf {
        self.log.join(format!("vhost-device-vsock.{vm}.log"))
    }
    pub fn agent(&self, vm: &str) -> PathBuf {
        self.lib.join(format!("tails-{vm}-agent"))
    }
    pub fn services(&self) -> PathBuf {
        self.lib.join("services")
    }
    /// The persistent store: its container, its decrypted export's directory
    /// (root's only) and its mountpoint, both beside the runtime directory: they
    /// outlive a daemon that dies (the next one finds the store as it was).
    /// The boot settings file a greeter or an image may write (see
    /// [`crate::boot`]).
    pub fn isolate_file(&self) -> PathBuf {
        env_or("TAILS_SERVER_ISOLATE_FILE", crate::boot::DEFAULT_FILE)
    }
    pub fn vault(&self) -> tails_vault::Vault {
        tails_vault::Vault {
            file: self.store.clone(),
            work: self.runtime.with_extension("vault"),
            mountpoint: self.runtime.with_extension("store"),
        }
    }
    /// The services' amnesic state (those with persistence off): a tmpfs
    /// of its own mounted in the state directory, in place of the plain
    /// files of before. Not in the runtime directory, which `down` removes:
    /// the state outlives `down` and a daemon that dies (a service keeps
    /// its address for the whole session), but not the host's next boot.
    pub fn amnesic(&self) -> PathBuf {
        self.state.join("amnesic")
    }
    /// `vm`'s disk in the unlocked persistent store (the App VM's data, the
    /// Tor VM's state).
    pub fn vm_disk(&self, vm: &str) -> PathBuf {
        self.vault()
            .mountpoint
            .join("disks")
            .join(format!("{vm}.img"))
    }
}

/// Find `name` in the installation's library directory ([`lib_dir`]: the
/// Debian package ships vhost-device-vsock there), then in the system
/// directories ([`tails_images::SYSTEM_DIRS`]). Fixed, not `$PATH`: a root
/// daemon must not run whatever a caller's environment points at, and the
/// unprivileged users it runs programs as must be able to read them.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let lib = lib_dir();
    std::iter::once(lib.as_path())
        .chain(tails_images::SYSTEM_DIRS.iter().map(Path::new))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Make the (empty, root-only) mount point of a jail's root; the jailer
/// mounts the jail's own tmpfs on it, in the jail's mount namespace only.
pub fn make_jail_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = root.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::create_dir(root) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lib_dir_is_beside_the_executables_bin() {
        assert_eq!(
            lib_dir_of(Path::new("/usr/bin/tails-server")).unwrap(),
            Path::new("/usr/lib/tails-server")
        );
        assert_eq!(
            lib_dir_of(Path::new("/usr/local/bin/tails-server-gui")).unwrap(),
            Path::new("/usr/local/lib/tails-server")
        );
        assert_eq!(lib_dir_of(Path::new("/tails-server")), None);
    }

    #[test]
    fn a_test_build_falls_back_to_the_default_lib_dir() {
        // This test's executable is in target/*/deps/, which has no
        // lib/tails-server beside it.
        if std::env::var_os("TAILS_SERVER_LIB_DIR").is_none() {
            assert_eq!(lib_dir(), Path::new(DEFAULT_LIB_DIR));
        }
    }
}
