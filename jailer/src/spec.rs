//! What a jailed process gets: the description the host agent writes and the
//! jailer obeys. Everything not listed here is absent from the jail.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The network namespace of a jailed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// The host's namespace, under the host's firewall (the Tor VM's QEMU,
    /// whose user-mode network makes tor's connections).
    Host,
    /// A namespace of its own with only a loopback interface, down: no inet
    /// at all, whatever the host's firewall does.
    Empty,
}

/// A host path made visible in the jail, at the same path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// Absolute path of a file, a directory, a socket or a device node.
    pub path: PathBuf,
    /// Mounted read-write (otherwise read-only).
    #[serde(default)]
    pub writable: bool,
    /// Programs and libraries on it may be mapped executable.
    #[serde(default)]
    pub exec: bool,
    /// A device node (otherwise the mount is `nodev`).
    #[serde(default)]
    pub device: bool,
}

impl Bind {
    /// Read-only data.
    pub fn ro(path: impl Into<PathBuf>) -> Self {
        Bind {
            path: path.into(),
            writable: false,
            exec: false,
            device: false,
        }
    }

    /// Read-write data (a directory where the process makes its sockets).
    pub fn rw(path: impl Into<PathBuf>) -> Self {
        Bind {
            writable: true,
            ..Bind::ro(path)
        }
    }

    /// A device node, read-write.
    pub fn dev(path: impl Into<PathBuf>) -> Self {
        Bind {
            writable: true,
            device: true,
            ..Bind::ro(path)
        }
    }
}

/// Resource limits of the jailed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_NPROC (processes and threads of its uid, which is its own).
    pub processes: u64,
    /// The cgroup's memory limit in bytes (memory.max / memory.limit_in_bytes).
    pub memory_bytes: u64,
    /// The cgroup's pid limit (pids.max).
    pub pids: u64,
}

/// Where the program's stdout and stderr go, through the log pump
/// ([`crate::logpump`]): escaped, and capped at `max_bytes` (one old log is
/// kept beside it as `<path>.1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    pub path: PathBuf,
    pub max_bytes: u64,
}

/// A seccomp policy the jailer installs before it runs the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// vhost-device-vsock: AF_UNIX sockets, epoll, guest memory maps and
    /// threads; anything else kills it.
    VsockBackend,
}

/// One jailed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailSpec {
    /// Short name: messages, the cgroup's name (letters, digits, `-`).
    pub name: String,
    /// An empty directory the jail's root is built on (a tmpfs mounted there
    /// in the jail's own mount namespace; the host sees nothing of it).
    pub root: PathBuf,
    /// Absolute path of the program; it and its shared libraries are made
    /// visible read-only.
    pub program: PathBuf,
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// The whole environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The unprivileged user and group it runs as (never 0), and exactly
    /// these supplementary groups.
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub groups: Vec<u32>,
    /// Its working directory (inside one of `binds`).
    pub cwd: PathBuf,
    pub net: Net,
    /// Everything else it may see.
    pub binds: Vec<Bind>,
    /// Descriptors 3, 4, … (this many) are passed on; all others are closed.
    #[serde(default)]
    pub pass_fds: u32,
    pub limits: Limits,
    /// `None`: no filter of ours (QEMU installs its own, `-sandbox on`).
    #[serde(default)]
    pub seccomp: Option<Policy>,
    /// `None`: stdout and stderr are passed on as they are.
    #[serde(default)]
    pub log: Option<LogSpec>,
}

/// Why a specification is refused before anything is started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("name {0:?} must be 1-32 letters, digits or '-'")]
    Name(String),
    #[error("{0} must be an absolute path without '..'")]
    Path(String),
    #[error("uid and gid must not be 0 (root)")]
    Root,
    #[error("the working directory {0} is not inside a bound directory")]
    Cwd(String),
}

fn clean(p: &std::path::Path) -> Result<(), SpecError> {
    use std::path::Component;
    let ok = p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && p != std::path::Path::new("/");
    if ok {
        Ok(())
    } else {
        Err(SpecError::Path(p.display().to_string()))
    }
}

impl JailSpec {
    /// Check what can be checked without touching the system.
    pub fn validate(&self) -> Result<(), SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !name_ok {
            return Err(SpecError::Name(self.name.clone()));
        }
        if self.uid == 0 || self.gid == 0 || self.groups.contains(&0) {
            return Err(SpecError::Root);
        }
        clean(&self.root)?;
        clean(&self.program)?;
        clean(&self.cwd)?;
        for b in &self.binds {
            clean(&b.path)?;
        }
        if let Some(l) = &self.log {
            clean(&l.path)?;
        }
        if !self.binds.iter().any(|b| self.cwd.starts_with(&b.path)) {
            return Err(SpecError::Cwd(self.cwd.display().to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JailSpec {
        JailSpec {
            name: "appvm-vsock".into(),
            root: "/run/tails-server/jail/appvm-vsock".into(),
            program: "/usr/local/bin/vhost-device-vsock".into(),
            args: vec![],
            env: vec![],
            uid: 989,
            gid: 989,
            groups: vec![],
            cwd: "/run/tails-server/vsock/appvm".into(),
            net: Net::Empty,
            binds: vec![Bind::rw("/run/tails-server/vsock/appvm")],
            pass_fds: 0,
            limits: Limits {
                open_files: 64,
                processes: 32,
                memory_bytes: 64 << 20,
                pids: 32,
            },
            seccomp: Some(Policy::VsockBackend),
            log: Some(LogSpec {
                path: "/var/log/tails-server/vhost-device-vsock.appvm.log".into(),
                max_bytes: 1 << 20,
            }),
        }
    }

    #[test]
    fn a_good_spec_passes_and_round_trips() {
        let s = spec();
        assert_eq!(s.validate(), Ok(()));
        let back: JailSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.uid = 0;
        assert_eq!(s.validate(), Err(SpecError::Root));
        let mut s = spec();
        s.groups = vec![0];
        assert_eq!(s.validate(), Err(SpecError::Root));
        let mut s = spec();
        s.name = "../x".into();
        assert!(matches!(s.validate(), Err(SpecError::Name(_))));
        let mut s = spec();
        s.binds.push(Bind::ro("/run/../etc/shadow"));
        assert!(matches!(s.validate(), Err(SpecError::Path(_))));
        let mut s = spec();
        s.binds.push(Bind::ro("relative"));
        assert!(matches!(s.validate(), Err(SpecError::Path(_))));
        let mut s = spec();
        s.binds.push(Bind::ro("/"));
        assert!(matches!(s.validate(), Err(SpecError::Path(_))));
        let mut s = spec();
        s.cwd = "/tmp".into();
        assert!(matches!(s.validate(), Err(SpecError::Cwd(_))));
        assert!(serde_json::from_str::<JailSpec>(r#"{"name":"x","bogus":1}"#).is_err());
    }
}
