//! Early init: mounts, kernel modules, sysctls, and the split between the
//! reaping PID 1 and the agent process.

use nix::mount::{mount, MsFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::ffi::CString;
use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

/// List of modules to load at boot, in dependency order, written by the image builder.
pub const MODULES_LIST: &str = "/etc/tails-server/modules.load";
/// List of the modules a persistent (ext4) disk needs beyond those of
/// [`MODULES_LIST`], in dependency order: loaded by [`load_disk_modules`]
/// when the agent first mounts one, not at boot.
pub const DISK_MODULES_LIST: &str = "/etc/tails-server/modules.disk";

/// The files of [`DISK_MODULES_LIST`] not loaded yet, opened at boot by
/// [`load_modules`] (the App VM switches to a root without them afterwards;
/// an open file outlives that).
static DISK_MODULES: std::sync::Mutex<std::collections::VecDeque<(String, fs::File)>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: String,
        source: nix::Error,
    },
    #[error("load module {path}: {source}")]
    Module { path: String, source: nix::Error },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("fork: {0}")]
    Fork(nix::Error),
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Mount a file system, creating the target directory first.
pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    fs::create_dir_all(target).map_err(io_err(target))?;
    mount(Some(source), target, Some(fstype), flags, data).map_err(|e| InitError::Mount {
        what: format!("{fstype} {source}"),
        target: target.to_owned(),
        source: e,
    })
}

/// Mount /proc, /sys, /dev, /run and /tmp as every init does.
pub fn mount_pseudo_fs() -> Result<(), InitError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nosuid, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0620,ptmxmode=0666"),
    )?;
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount_fs(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    // devtmpfs has no /dev/fd or /dev/std*; programs (nft -f -) expect them.
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(link)(e)),
        }
    }
    crate::log("init started");
    Ok(())
}

/// The module files a list names (paths, one per line), opened in its order;
/// no list at all: none.
fn open_list(list: &str) -> Result<Vec<(String, fs::File)>, InitError> {
    let text = match fs::read_to_string(list) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(list)(e)),
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|path| {
            let f = fs::File::open(path).map_err(io_err(path))?;
            Ok((path.to_owned(), f))
        })
        .collect()
}

/// Load one module file. A module that is already loaded (`EEXIST`) is fine.
fn load_one(path: &str, f: &fs::File) -> Result<(), InitError> {
    let params = CString::default();
    match nix::kmod::finit_module(f.as_fd(), &params, nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(InitError::Module {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Load the modules named in [`MODULES_LIST`] (paths, dependency order), and
/// open those of [`DISK_MODULES_LIST`] for [`load_disk_modules`]. Returns
/// how many were loaded and how many wait for a disk.
pub fn load_modules() -> Result<(usize, usize), InitError> {
    let boot = open_list(MODULES_LIST)?;
    for (path, f) in &boot {
        load_one(path, f)?;
    }
    let disk = open_list(DISK_MODULES_LIST)?;
    let waiting = disk.len();
    *DISK_MODULES.lock().unwrap_or_else(|p| p.into_inner()) = disk.into();
    Ok((boot.len(), waiting))
}

/// Load the modules of [`DISK_MODULES_LIST`] that are not loaded yet (none
/// after the first call that succeeded). Blocks: ext4 takes about 0.2 s
/// under TCG. A module that fails stays on the list with those after it.
/// The lock is held throughout: two disks mounted at once load each module
/// once, in order. (A poisoned lock only means a panic elsewhere while it
/// was held; the list itself is still whole.)
pub fn load_disk_modules() -> Result<usize, InitError> {
    let mut waiting = DISK_MODULES.lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    while let Some((path, f)) = waiting.front() {
        load_one(path, f)?;
        waiting.pop_front();
        n += 1;
    }
    Ok(n)
}

/// Write a sysctl value through /proc/sys.
/// IPv4 sysctls both guests set before their links come up: ARP answered
/// only for the asking NIC's own address, announcements from it only, strict
/// reverse-path filtering, no ICMP redirects either way, no source routing.
/// (`all` is what counts for these, combined with each NIC's own value.)
pub const HARDENING_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_announce", "2"),
    ("net.ipv4.conf.all.rp_filter", "1"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.all.accept_source_route", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
];

pub fn sysctl(key: &str, value: &str) -> Result<(), InitError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    fs::write(&path, value).map_err(io_err(&path))
}

/// Make the root of this mount namespace `new_root` (already a mount point),
/// carrying /dev, /proc, /sys, /run and /tmp along, the way `switch_root` does.
pub fn switch_root(new_root: &str) -> Result<(), InitError> {
    for m in ["/dev", "/proc", "/sys", "/run", "/tmp"] {
        let target = format!("{new_root}{m}");
        fs::create_dir_all(&target).map_err(io_err(&target))?;
        mount(
            Some(m),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| InitError::Mount {
            what: format!("move {m}"),
            target: target.clone(),
            source: e,
        })?;
    }
    std::env::set_current_dir(new_root).map_err(io_err(new_root))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|e| {
        InitError::Mount {
            what: "move new root".into(),
            target: "/".into(),
            source: e,
        }
    })?;
    nix::unistd::chroot(".").map_err(|e| InitError::Mount {
        what: "chroot".into(),
        target: new_root.into(),
        source: e,
    })?;
    std::env::set_current_dir("/").map_err(io_err("/"))
}

/// Fork: the parent stays PID 1 and reaps every orphan; the child returns and
/// becomes the agent. When the agent dies the VM powers off: a VM without its
/// agent cannot be controlled and must not linger.
///
/// Must be called before any thread is started (the tokio runtime included).
pub fn split_reaper() -> Result<(), InitError> {
    match unsafe {
        // SAFETY: called while the process is single-threaded (documented
        // precondition), so the child may run arbitrary code.
        fork()
    }
    .map_err(InitError::Fork)?
    {
        ForkResult::Child => Ok(()),
        ForkResult::Parent { child } => reap_forever(child),
    }
}

fn reap_forever(agent: Pid) -> ! {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => {
                crate::log(format!("agent exited with {code}; powering off"));
                power_off();
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                crate::log(format!("agent killed by {sig}; powering off"));
                power_off();
            }
            Ok(_) => {}
            Err(nix::Error::ECHILD) => std::thread::sleep(std::time::Duration::from_millis(200)),
            Err(_) => {}
        }
    }
}

/// Other processes than init and the caller.
fn others_alive() -> bool {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.bytes().all(|b| b.is_ascii_digit())
                    && n != "1"
                    && n != me
                    // Kernel threads have no command line.
                    && fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
            })
        })
        .unwrap_or(false)
}

/// Ask every process to stop (up to 3 s: tor writes its state, a database
/// its journal), kill what is left, unmount the persistent disks, sync,
/// and power the machine off.
pub fn power_off() -> ! {
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), nix::sys::signal::Signal::SIGTERM);
    let start = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(100));
    while others_alive() && start.elapsed() < std::time::Duration::from_secs(3) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), nix::sys::signal::Signal::SIGKILL);
    // Killed processes release their files once reaped (by init).
    std::thread::sleep(std::time::Duration::from_millis(100));
    crate::disk::unmount_all();
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot(2) only returns on error; there is nothing left to do but wait.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// uid and gid of `name` from /etc/passwd (read directly: a static binary
/// cannot rely on NSS).
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// True when this process is the VM's init.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// Is `p` present? (Small helper for optional files in images.)
pub fn exists(p: &str) -> bool {
    Path::new(p).exists()
}
