//! The host's encrypted persistent store: one LUKS container in a file.
//!
//! The container is real LUKS (QEMU's LUKS driver writes and reads the
//! format cryptsetup does; `cryptsetup luksDump` reads its header). It is
//! opened in userspace, because the kernels Tails Server runs on may have no
//! device-mapper (this project's CI machine has none): `qemu-storage-daemon`
//! decrypts it and exports the plaintext as a FUSE file in a root-only
//! directory, which is mounted (ext4, through a loop device, `nosuid`,
//! `nodev`, `noexec`) on the host only. Nothing of it ever reaches a guest:
//! the VMs get disk images that live inside the mounted store.
//!
//! The passphrase is handed to QEMU through a memfd (never a file on disk,
//! never an argument), and every copy this crate makes is zeroized.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

/// A passphrase, zeroized when dropped.
pub type Passphrase = Zeroizing<Vec<u8>>;

/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 8;
/// The longest passphrase accepted.
pub const MAX_PASSPHRASE: usize = 1024;
/// The fd number the passphrase has in QEMU's programs.
const SECRET_FD: i32 = 3;
/// The second one (the new passphrase of a change).
const NEW_SECRET_FD: i32 = 4;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the passphrase does not open the persistent store (nothing was changed)")]
    WrongPassphrase,
    #[error("a passphrase has {MIN_PASSPHRASE} to {MAX_PASSPHRASE} bytes")]
    BadPassphrase,
    #[error("there is no persistent store at {0}: `tails-server persistence create` makes one")]
    Missing(PathBuf),
    #[error("a persistent store exists at {0} already")]
    Exists(PathBuf),
    #[error("the persistent store is unlocked already (at {0})")]
    Unlocked(PathBuf),
    #[error("{program} failed: {message}")]
    Tool {
        program: &'static str,
        message: String,
    },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where a store lives and where it is opened.
#[derive(Debug, Clone)]
pub struct Vault {
    /// The container file (0600).
    pub file: PathBuf,
    /// A root-only directory for the decrypted export and its daemon's pid.
    pub work: PathBuf,
    /// Where the store's file system is mounted on the host (0700).
    pub mountpoint: PathBuf,
}

/// A memfd holding `data`, for a child to read as `/proc/self/fd/N`.
fn memfd(data: &[u8]) -> Result<OwnedFd, VaultError> {
    let name = c"tails-vault-secret";
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd
    // or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io(Path::new("memfd"))(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = File::from(owned);
    f.write_all(data).map_err(io(Path::new("memfd")))?;
    Ok(f.into())
}

/// `program` with the secrets given to it as fds 3 (and 4), its output kept.
fn with_secrets(program: &'static str, secrets: &[&OwnedFd]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let fds: Vec<i32> = secrets.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (a secret may sit at 3 or 4 already), then into
            // place: dup2 to another number clears FD_CLOEXEC on the copy; the
            // temporary copies close at exec.
            let mut high = [0i32; 2];
            for (i, fd) in fds.iter().enumerate().take(2) {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate().take(fds.len().min(2)) {
                if libc::dup2(*fd, SECRET_FD + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

fn secret_object(id: &str, fd: i32) -> String {
    format!("secret,id={id},file=/proc/self/fd/{fd}")
}

/// Run `cmd` (named `program`); its failure in one line, a wrong passphrase
/// told apart.
fn run(program: &'static str, mut cmd: Command) -> Result<(), VaultError> {
    let out = cmd.output().map_err(|e| VaultError::Tool {
        program,
        message: format!("cannot run it: {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Invalid password") || err.contains("cannot unlock any keyslot") {
        return Err(VaultError::WrongPassphrase);
    }
    let line = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .to_string();
    Err(VaultError::Tool {
        program,
        message: format!("{} ({})", line, out.status),
    })
}

fn check_passphrase(p: &[u8]) -> Result<(), VaultError> {
    if (MIN_PASSPHRASE..=MAX_PASSPHRASE).contains(&p.len()) {
        Ok(())
    } else {
        Err(VaultError::BadPassphrase)
    }
}

/// Whether something is mounted on `p` (from /proc/self/mountinfo; our
/// paths have no characters mountinfo escapes).
pub fn is_mount_point(p: &Path) -> bool {
    let target = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|t| t == target))
    })
}

impl Vault {
    fn export(&self) -> PathBuf {
        self.work.join("plain")
    }

    fn pidfile(&self) -> PathBuf {
        self.work.join("qsd.pid")
    }

    /// Whether the container exists.
    pub fn exists(&self) -> bool {
        self.file.symlink_metadata().is_ok()
    }

    /// Whether it is unlocked (its file system mounted).
    pub fn is_unlocked(&self) -> bool {
        is_mount_point(&self.mountpoint)
    }

    /// Make a new container of `size_mib` MiB holding an empty ext4, locked.
    pub fn create(&self, passphrase: &[u8], size_mib: u64) -> Result<(), VaultError> {
        check_passphrase(passphrase)?;
        if self.exists() {
            return Err(VaultError::Exists(self.file.clone()));
        }
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let secret = memfd(passphrase)?;
        let mut cmd = with_secrets("/usr/bin/qemu-img", &[&secret]);
        cmd.args(["create", "-q", "--object"])
            .arg(secret_object("s0", SECRET_FD))
            .args(["-f", "luks", "-o", "key-secret=s0"])
            .arg(&self.file)
            .arg(format!("{size_mib}M"));
        if let Err(e) = run("qemu-img", cmd) {
            let _ = std::fs::remove_file(&self.file);
            return Err(e);
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.file, std::fs::Permissions::from_mode(0o600))
                .map_err(io(&self.file))?;
        }
        let made = self.open_export(passphrase).and_then(|()| {
            let mut mkfs = Command::new("/usr/sbin/mkfs.ext4");
            mkfs.args(["-q", "-F", "-L", "tails-store", "-E", "lazy_itable_init=0"])
                .arg(self.export())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            run("mkfs.ext4", mkfs)
        });
        let closed = self.close_export();
        if let Err(e) = made.and(closed) {
            let _ = std::fs::remove_file(&self.file);
            return Err(e);
        }
        Ok(())
    }

    /// Decrypt the container into the FUSE export (qemu-storage-daemon, which
    /// returns once the export is there).
    fn open_export(&self, passphrase: &[u8]) -> Result<(), VaultError> {
        std::fs::create_dir_all(&self.work).map_err(io(&self.work))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.work, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&self.work))?;
        }
        let export = self.export();
        File::create(&export).map_err(io(&export))?;
        let secret = memfd(passphrase)?;
        let mut cmd = with_secrets("/usr/bin/qemu-storage-daemon", &[&secret]);
        cmd.arg("--object")
            .arg(secret_object("s0", SECRET_FD))
            .arg("--blockdev")
            .arg(format!(
                "driver=file,filename={},node-name=file,cache.direct=off",
                self.file.display()
            ))
            .arg("--blockdev")
            .arg("driver=luks,file=file,key-secret=s0,node-name=plain")
            .arg("--export")
            .arg(format!(
                "fuse,id=plain,node-name=plain,mountpoint={},writable=on,allow-other=off",
                export.display()
            ))
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--daemonize");
        let res = run("qemu-storage-daemon", cmd);
        if res.is_err() {
            let _ = std::fs::remove_file(&export);
        }
        res
    }

    /// Stop the export's daemon (it flushes and unmounts the export), and wait
    /// until it is gone; if it does not go, its files are kept (so that `lock`
    /// can be tried again) and that is an error.
    fn close_export(&self) -> Result<(), VaultError> {
        let pidfile = self.pidfile();
        let pid: Option<i32> = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse().ok());
        if let Some(pid) = pid {
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            let alive = || {
                std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|s| !s.contains(") Z "))
            };
            // SAFETY: kill with a pid read from the daemon's own (root-only) pidfile.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..200 {
                if !alive() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            if alive() {
                return Err(VaultError::Tool {
                    program: "qemu-storage-daemon",
                    message: format!("pid {pid} did not stop within 5 s of SIGTERM"),
                });
            }
        }
        let _ = std::fs::remove_file(&pidfile);
        let _ = std::fs::remove_file(self.export());
        Ok(())
    }

    /// Open the store with `passphrase` and mount it on the mountpoint. A wrong
    /// passphrase changes nothing.
    pub fn unlock(&self, passphrase: &[u8]) -> Result<(), VaultError> {
        if !self.exists() {
            return Err(VaultError::Missing(self.file.clone()));
        }
        if self.is_unlocked() {
            return Err(VaultError::Unlocked(self.mountpoint.clone()));
        }
        check_passphrase(passphrase).map_err(|_| VaultError::WrongPassphrase)?;
        self.open_export(passphrase)?;
        let mounted = (|| {
            std::fs::create_dir_all(&self.mountpoint).map_err(io(&self.mountpoint))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.mountpoint, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&self.mountpoint))?;
            let mut mount = Command::new("/usr/bin/mount");
            mount
                .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noexec"])
                .arg(self.export())
                .arg(&self.mountpoint)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            run("mount", mount)
        })();
        if let Err(e) = mounted {
            let _ = self.close_export();
            return Err(e);
        }
        Ok(())
    }

    /// Unmount the store and close it: after this, only the passphrase opens it.
    pub fn lock(&self) -> Result<(), VaultError> {
        if self.is_unlocked() {
            let mut umount = Command::new("/usr/bin/umount");
            umount
                .arg(&self.mountpoint)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            run("umount", umount)?;
        }
        self.close_export()
    }

    /// Replace the passphrase: the new one is added to a free key slot, then
    /// the old one's slot is erased. A wrong old passphrase changes nothing.
    pub fn change_passphrase(&self, old: &[u8], new: &[u8]) -> Result<(), VaultError> {
        if !self.exists() {
            return Err(VaultError::Missing(self.file.clone()));
        }
        check_passphrase(new)?;
        check_passphrase(old).map_err(|_| VaultError::WrongPassphrase)?;
        let (o, n) = (memfd(old)?, memfd(new)?);
        let amend = |key: &str, opts: &str| {
            let mut cmd = with_secrets("/usr/bin/qemu-img", &[&o, &n]);
            cmd.arg("amend")
                .arg("--object")
                .arg(secret_object("old", SECRET_FD))
                .arg("--object")
                .arg(secret_object("new", NEW_SECRET_FD))
                .arg("--image-opts")
                .arg(format!(
                    "driver=luks,key-secret={key},file.filename={}",
                    self.file.display()
                ))
                .args(["-o", opts]);
            run("qemu-img", cmd)
        };
        amend("old", "state=active,new-secret=new")?;
        amend("new", "state=inactive,old-secret=old")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_are_bounded() {
        assert!(check_passphrase(b"short").is_err());
        assert!(check_passphrase(&[b'x'; MAX_PASSPHRASE + 1]).is_err());
        assert!(check_passphrase(b"long enough").is_ok());
    }

    #[test]
    fn a_memfd_holds_the_secret() {
        let fd = memfd(b"hunter22-secret").unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(std::fs::read(path).unwrap(), b"hunter22-secret");
    }
}
