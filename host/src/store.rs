//! The host's kept state, with one writer: the daemon.
//!
//! - `<state>/lock`: held (flock) by the daemon for as long as it runs, so a
//!   second daemon cannot write the same state at the same time.
//! - `<state>/settings.json`: host-wide settings (autostart at boot).
//! - `services/<name>/state.json`: one service's options, onion key and
//!   authorized clients (0600, in 0700 directories), in one of two places,
//!   by its `persistence` option: the persistent store's mount (on: kept,
//!   encrypted, across reboots) or the amnesic directory, a tmpfs of its
//!   own in the state directory (off: gone when the host reboots).
//!   Never both: a save removes the other copy. Files from before (plain,
//!   under `<state>/services/`) are read until the next save moves them.
//!
//! Every file carries a schema version and is written whole and durably:
//! a temporary file in the same directory, fsync, rename over the old one,
//! fsync of the directory ([`write_private`]). A file that cannot be parsed
//! (truncated, corrupted, from a newer version) is an error naming the file,
//! and is never written over: the person decides what to do with it.
//!
//! Serializing the changes is the caller's part: the daemon keeps its
//! [`Store`] behind one lock, and loads, changes and saves under it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The schema of the files written here.
pub const SCHEMA: u32 = 1;

/// Largest state file read (a service's state is a few KiB).
const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another tails-server daemon{} holds the lock {path}: it runs or is starting; use it, or stop it first (`tails-server down`)", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: String, pid: Option<u32> },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({reason}); nothing was changed: restore it from a backup, or move it away to start afresh (what it held is lost then)")]
    Damaged { path: String, reason: String },
    #[error("{path} has schema {found}, newer than this tails-server reads ({SCHEMA}): update tails-server")]
    Schema { path: String, found: u32 },
    #[error("{service} is kept in the persistent store, which is {}: `tails-server persistence {}` first; nothing was changed", if *.missing { "not made yet" } else { "locked" }, if *.missing { "create" } else { "unlock" })]
    StoreLocked { service: String, missing: bool },
    #[error("cannot make the memory-backed state directory {path}: {source}")]
    Tmpfs {
        path: String,
        #[source]
        source: nix::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Make `dir` (and its parents) and set it to `mode`.
pub fn private_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", dir))
}

/// Write `bytes` to `path` whole and durably, mode 0600: a temporary file
/// beside it, fsync, rename over `path`, fsync of the directory. A reader
/// sees the old contents or the new ones, never a mix, also after a crash.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{seq}", std::process::id()));
    let written = (|| {
        // A fresh file of ours: never one (or a symlink) someone put there.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", &tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("replace", path)(e));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// Versioned envelope of every file.
#[derive(Serialize)]
struct Versioned<'a, T> {
    schema: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Read a JSON file: its schema version (0 for a file from before schema
/// versions, which had none) and its contents; `None` if it does not exist.
pub fn read_versioned(path: &Path) -> Result<Option<(u32, serde_json::Value)>, StoreError> {
    use std::io::Read;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io("read", path))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(damaged(path, format!("larger than {} KiB", MAX_FILE >> 10)));
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| damaged(path, e.to_string()))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(damaged(path, "not a JSON object".into()));
    };
    let schema = match obj.remove("schema") {
        None => 0,
        Some(s) => s
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| damaged(path, "its schema version is not a number".into()))?,
    };
    if schema > SCHEMA {
        return Err(StoreError::Schema {
            path: path.display().to_string(),
            found: schema,
        });
    }
    Ok(Some((schema, v)))
}

/// The error for a file that cannot be read as what it should be.
pub fn damaged(path: &Path, reason: String) -> StoreError {
    StoreError::Damaged {
        path: path.display().to_string(),
        reason,
    }
}

/// Read a JSON file of the current schema; `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match read_versioned(path)? {
        None => Ok(None),
        Some((SCHEMA, v)) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| damaged(path, e.to_string())),
        Some((n, _)) => Err(damaged(
            path,
            format!("schema {n} is not readable any more"),
        )),
    }
}

/// Write a versioned JSON file with [`write_private`].
pub fn write_json<T: Serialize>(path: &Path, body: &T) -> Result<(), StoreError> {
    let v = Versioned {
        schema: SCHEMA,
        body,
    };
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| StoreError::Io {
        what: "encode",
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_private(path, &bytes)
}

/// The persistent store, as the daemon last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistent {
    /// There is none.
    Missing,
    Locked,
    /// Unlocked, mounted here.
    Unlocked(PathBuf),
}

impl Persistent {
    /// What `vault` is now.
    pub fn of(vault: &tails_vault::Vault) -> Persistent {
        if vault.is_unlocked() {
            Persistent::Unlocked(vault.mountpoint.clone())
        } else if vault.exists() {
            Persistent::Locked
        } else {
            Persistent::Missing
        }
    }
}

/// Where a service's state file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Persistent(PathBuf),
    Amnesic(PathBuf),
    /// Plain, from before.
    Legacy(PathBuf),
}

impl Location {
    pub fn path(&self) -> &Path {
        match self {
            Location::Persistent(p) | Location::Amnesic(p) | Location::Legacy(p) => p,
        }
    }
}

/// The state directory, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The services' amnesic state (a tmpfs).
    amnesic: PathBuf,
    persistent: Persistent,
    /// Held open (and flock'ed) for as long as the store lives.
    _lock: File,
}

/// Largest amnesic state (a service's file is a few KiB).
const AMNESIC_SIZE: &str = "size=8m";

/// Make `dir` a tmpfs of its own (root's, 0700, nosuid, nodev, noexec,
/// 8 MiB) unless it is one already: what is written there never reaches a
/// disk (swap aside), and is gone when the host reboots.
pub fn memory_dir(dir: &Path) -> Result<(), StoreError> {
    private_dir(dir, 0o700)?;
    if tails_vault::is_mount_point(dir) {
        return Ok(());
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=0700,{AMNESIC_SIZE}").as_str()),
    )
    .map_err(|source| StoreError::Tmpfs {
        path: dir.display().to_string(),
        source,
    })
}

/// Take an exclusive lock on `path` (created 0600 if missing) for as long
/// as the returned file is open, and write our pid into it; if another
/// process holds it, say which.
pub fn lock_exclusive(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io("open", path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        return Err(StoreError::Locked {
            path: path.display().to_string(),
            pid,
        });
    }
    // Whose lock it is, for the error another process gets.
    let _ = f.set_len(0);
    let _ = f.write_all(format!("{}\n", std::process::id()).as_bytes());
    Ok(f)
}

impl Store {
    /// Take the state directory `dir` (made 0700 if needed) for this
    /// process, with `amnesic` as the services' memory-backed directory
    /// (see [`memory_dir`]); fails if another process holds it. The
    /// persistent store is [`Persistent::Missing`] until
    /// [`Store::set_persistent`] says otherwise.
    pub fn open(dir: &Path, amnesic: &Path) -> Result<Store, StoreError> {
        private_dir(dir, 0o700)?;
        let f = lock_exclusive(&dir.join("lock"))?;
        memory_dir(amnesic)?;
        Ok(Store {
            dir: dir.to_owned(),
            amnesic: amnesic.to_owned(),
            persistent: Persistent::Missing,
            _lock: f,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the persistent store is now (the daemon says so as it locks and
    /// unlocks it).
    pub fn set_persistent(&mut self, p: Persistent) {
        self.persistent = p;
    }

    pub fn persistent(&self) -> &Persistent {
        &self.persistent
    }

    fn file_in(root: &Path, name: &str) -> PathBuf {
        root.join("services").join(name).join("state.json")
    }

    /// Where `name`'s state file is: the persistent store (if unlocked),
    /// the amnesic directory, the plain one from before; `None`: nowhere.
    pub fn locate(&self, name: &str) -> Option<Location> {
        let mut places = Vec::new();
        if let Persistent::Unlocked(m) = &self.persistent {
            places.push(Location::Persistent(Self::file_in(m, name)));
        }
        places.push(Location::Amnesic(Self::file_in(&self.amnesic, name)));
        places.push(Location::Legacy(Self::file_in(&self.dir, name)));
        places
            .into_iter()
            .find(|l| std::fs::symlink_metadata(l.path()).is_ok())
    }

    /// `name`'s state file where it is, or where an amnesic one would go.
    pub fn service_file(&self, name: &str) -> PathBuf {
        self.locate(name)
            .map(|l| l.path().to_owned())
            .unwrap_or_else(|| Self::file_in(&self.amnesic, name))
    }

    /// The error for a service that has no file: it may be in the locked
    /// store (`None` when it cannot be).
    pub fn maybe_locked_away(&self, name: &str) -> Option<StoreError> {
        (self.persistent == Persistent::Locked).then(|| StoreError::StoreLocked {
            service: name.to_owned(),
            missing: false,
        })
    }

    /// Read a service's file; `None` if it has none yet.
    pub fn read_service<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StoreError> {
        read_json(&self.service_file(name))
    }

    /// The services whose state is in the unlocked persistent store.
    pub fn persistent_services(&self) -> Vec<String> {
        let Persistent::Unlocked(m) = &self.persistent else {
            return Vec::new();
        };
        let mut names: Vec<String> = std::fs::read_dir(m.join("services"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().join("state.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Write a service's file (its directories 0700) in the persistent
    /// store or the amnesic directory, then remove any other copy of it.
    pub fn write_service<T: Serialize>(
        &self,
        name: &str,
        body: &T,
        persistent: bool,
    ) -> Result<(), StoreError> {
        let root = if persistent {
            match &self.persistent {
                Persistent::Unlocked(m) => m.clone(),
                other => {
                    return Err(StoreError::StoreLocked {
                        service: name.to_owned(),
                        missing: *other == Persistent::Missing,
                    })
                }
            }
        } else {
            self.amnesic.clone()
        };
        let path = Self::file_in(&root, name);
        private_dir(&root.join("services"), 0o700)?;
        if let Some(d) = path.parent() {
            private_dir(d, 0o700)?;
        }
        write_json(&path, body)?;
        let mut others = vec![self.dir.clone()];
        if persistent {
            others.push(self.amnesic.clone());
        } else if let Persistent::Unlocked(m) = &self.persistent {
            others.push(m.clone());
        }
        for other in others {
            let f = Self::file_in(&other, name);
            if let Some(d) = f.parent().filter(|d| d.exists()) {
                std::fs::remove_dir_all(d).map_err(io("remove", d))?;
                File::open(other.join("services"))
                    .and_then(|d| d.sync_all())
                    .map_err(io("sync", &other))?;
            }
        }
        Ok(())
    }

    pub fn settings_file(&self) -> PathBuf {
        self.dir.join("settings.json")
    }

    pub fn read_settings<T: DeserializeOwned + Default>(&self) -> Result<T, StoreError> {
        Ok(read_json(&self.settings_file())?.unwrap_or_default())
    }

    pub fn write_settings<T: Serialize>(&self, body: &T) -> Result<(), StoreError> {
        write_json(&self.settings_file(), body)
    }
}

/// For tests: a store in `dir` with its amnesic tmpfs in `dir/amnesic`.
#[cfg(test)]
pub(crate) fn test_store(dir: &Path) -> Store {
    #[allow(clippy::expect_used)]
    Store::open(dir, &dir.join("amnesic")).expect("store")
}

/// For tests: unmount what [`test_store`] mounted and remove `dir`.
#[cfg(test)]
pub(crate) fn test_cleanup(dir: &Path) {
    let _ = nix::mount::umount(&dir.join("amnesic"));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ts-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn open(d: &Path) -> Store {
        test_store(d)
    }

    fn unmount_test(d: &Path) {
        test_cleanup(d)
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Thing {
        n: u32,
        s: String,
    }

    #[test]
    fn a_symlink_in_the_way_is_replaced_never_followed() {
        let d = tmp("symlink");
        std::fs::create_dir_all(&d).expect("mkdir");
        let victim = d.join("victim");
        std::fs::write(&victim, "keep me").expect("write");
        let target = d.join("state.json");
        std::os::unix::fs::symlink(&victim, &target).expect("symlink");
        write_private(&target, b"{}").expect("write through the name");
        let meta = std::fs::symlink_metadata(&target).expect("meta");
        assert!(meta.file_type().is_file(), "a file of ours, not the link");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep me");
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&d)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_second_store_on_the_same_dir_is_refused() {
        let d = tmp("lock");
        let first = Store::open(&d, &d.join("amnesic")).expect("first");
        let e = Store::open(&d, &d.join("amnesic")).expect_err("second");
        assert!(
            matches!(e, StoreError::Locked { pid: Some(p), .. } if p == std::process::id()),
            "{e}"
        );
        assert!(e.to_string().contains("holds the lock"), "{e}");
        drop(first);
        Store::open(&d, &d.join("amnesic")).expect("free again once the first is gone");
        unmount_test(&d);
    }

    #[test]
    fn writes_are_whole_private_and_versioned() {
        let d = tmp("write");
        let s = open(&d);
        let t = Thing {
            n: 7,
            s: "x".into(),
        };
        s.write_service("nginx", &t, false).expect("write");
        let path = s.service_file("nginx");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        assert_eq!(mode(&d), 0o700);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"schema\": 1"), "{text}");
        assert_eq!(s.read_service::<Thing>("nginx").expect("read"), Some(t));
        assert_eq!(s.read_service::<Thing>("other").expect("read"), None);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        unmount_test(&d);
    }

    #[test]
    fn damaged_files_are_named_and_left_alone() {
        let d = tmp("damaged");
        let s = open(&d);
        s.write_service("nginx", &Thing::default(), false)
            .expect("write");
        let path = s.service_file("nginx");
        let full = std::fs::read(&path).expect("read");
        for (what, bytes) in [
            ("truncated", full[..full.len() / 2].to_vec()),
            ("garbage", b"\x00\xffnot json".to_vec()),
            ("no schema (an old file)", b"{\"n\":1,\"s\":\"\"}".to_vec()),
            ("not an object", b"[1,2]".to_vec()),
            (
                "wrong shape",
                b"{\"schema\":1,\"n\":\"one\",\"s\":\"\"}".to_vec(),
            ),
            ("empty", Vec::new()),
        ] {
            std::fs::write(&path, &bytes).expect("damage");
            let e = s.read_service::<Thing>("nginx").expect_err(what);
            let line = e.to_string();
            assert!(matches!(e, StoreError::Damaged { .. }), "{what}: {line}");
            assert!(line.contains(&path.display().to_string()), "{what}: {line}");
            assert_eq!(line.lines().count(), 1, "{what}: {line}");
            assert_eq!(
                std::fs::read(&path).expect("read"),
                bytes,
                "{what}: untouched"
            );
        }
        std::fs::write(&path, b"{\"schema\":99,\"n\":1,\"s\":\"\"}").expect("newer");
        let e = s.read_service::<Thing>("nginx").expect_err("newer");
        assert!(matches!(e, StoreError::Schema { found: 99, .. }), "{e}");
        unmount_test(&d);
    }

    #[test]
    fn a_service_is_kept_in_one_place_by_its_persistence() {
        let d = tmp("places");
        let mut s = open(&d);
        let amnesic = d.join("amnesic");
        assert!(
            tails_vault::is_mount_point(&amnesic),
            "the amnesic directory is a tmpfs of its own"
        );
        let fstype = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(amnesic.to_str().expect("utf-8")))
            .map(|l| l.split(" - ").nth(1).unwrap_or("").to_owned())
            .expect("its line");
        assert!(fstype.starts_with("tmpfs "), "{fstype}");
        let t = Thing {
            n: 1,
            s: "a".into(),
        };
        // No store: a persistent save is refused and changes nothing.
        let e = s.write_service("web", &t, true).expect_err("no store");
        assert!(e.to_string().contains("persistence create"), "{e}");
        assert_eq!(s.locate("web"), None);
        // A file from before, plain under the state directory, is read
        // where it is, and moved by the next save.
        let legacy = d.join("services/web/state.json");
        std::fs::create_dir_all(d.join("services/web")).expect("mkdir");
        write_json(&legacy, &t).expect("legacy");
        assert_eq!(s.locate("web"), Some(Location::Legacy(legacy.clone())));
        assert_eq!(s.read_service::<Thing>("web").expect("read"), Some(t));
        let t2 = Thing {
            n: 2,
            s: "b".into(),
        };
        s.write_service("web", &t2, false).expect("amnesic");
        assert!(!legacy.exists(), "the plain copy is gone");
        let in_memory = amnesic.join("services/web/state.json");
        assert_eq!(s.locate("web"), Some(Location::Amnesic(in_memory.clone())));
        // Locked: a service without a file may be in the store.
        s.set_persistent(Persistent::Locked);
        assert!(s.maybe_locked_away("chat").is_some());
        let e = s.write_service("web", &t2, true).expect_err("locked");
        assert!(e.to_string().contains("persistence unlock"), "{e}");
        assert!(in_memory.exists(), "nothing changed");
        // Unlocked: persistence on moves it into the store, off moves it back.
        let mount = d.join("store");
        s.set_persistent(Persistent::Unlocked(mount.clone()));
        s.write_service("web", &t2, true).expect("into the store");
        let kept = mount.join("services/web/state.json");
        assert_eq!(s.locate("web"), Some(Location::Persistent(kept.clone())));
        assert!(!in_memory.exists(), "not in memory any more");
        assert_eq!(s.persistent_services(), ["web"]);
        s.write_service("web", &t2, false)
            .expect("out of the store");
        assert!(!kept.exists(), "removed from the store");
        assert!(s.persistent_services().is_empty());
        assert_eq!(s.read_service::<Thing>("web").expect("read"), Some(t2));
        unmount_test(&d);
    }
}
