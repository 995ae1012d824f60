//! The jailed process's cgroup: a memory and a pid limit, under
//! `tails-server/<name>` of the cgroup tree (v2, or v1's `memory` and
//! `pids` hierarchies), where that tree is writable.

use crate::spec::Limits;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "tails-server";

/// The cgroup directories of one jailed process (one for v2, two for v1).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), crate::jail::JailError> {
    std::fs::write(path, value).map_err(|source| crate::jail::JailError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), crate::jail::JailError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(crate::jail::JailError::Io {
            what: format!("creating {}", path.display()),
            source,
        }),
    }
}

impl Cgroup {
    /// Make (or reuse, after a crash) the cgroup of `name` with `limits`.
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup, crate::jail::JailError> {
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").exists() {
            // v2: the controllers must be enabled on the way down.
            let parent = root.join(PARENT);
            mkdir(&parent)?;
            for dir in [root, parent.as_path()] {
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+memory +pids");
            }
            let dir = parent.join(name);
            mkdir(&dir)?;
            write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            write(&dir.join("pids.max"), &limits.pids.to_string())?;
            return Ok(Cgroup { dirs: vec![dir] });
        }
        let mut dirs = Vec::new();
        for (ctl, file, value) in [
            ("memory", "memory.limit_in_bytes", limits.memory_bytes),
            ("pids", "pids.max", limits.pids),
        ] {
            let parent = root.join(ctl).join(PARENT);
            mkdir(&parent)?;
            let dir = parent.join(name);
            mkdir(&dir)?;
            write(&dir.join(file), &value.to_string())?;
            dirs.push(dir);
        }
        Ok(Cgroup { dirs })
    }

    /// Move the calling process into it.
    pub fn join(&self) -> Result<(), crate::jail::JailError> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), "0")?;
        }
        Ok(())
    }

    /// Remove it, once its process has ended (the kernel may take a moment
    /// to let go of it).
    pub fn remove(self) {
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Where it is (for the tests' listing).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}
