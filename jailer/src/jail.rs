//! Building the jail and running the program in it (Firecracker's jailer is
//! the model).
//!
//! The jailer runs as root, single-threaded. It compiles the seccomp filter
//! and finds the program's libraries first, then unshares the PID namespace
//! and forks. The child, PID 1 of that namespace, joins its cgroup, unshares
//! the mount, IPC and UTS namespaces (and the network one for
//! [`Net::Empty`]), builds a root
//! of its own on a tmpfs with only the spec's files bound into it,
//! `pivot_root`s into it, sets its rlimits, drops every capability from its
//! bounding set, becomes the unprivileged user, sets `PR_SET_NO_NEW_PRIVS`,
//! installs the filter and executes the program. The parent stays outside as
//! the process the host agent watches: it forwards SIGTERM/SIGINT/SIGHUP
//! (and sends SIGKILL a second later to a program that ignores them, at
//! once to a namespace init that cannot get them: [`drops_signal`]),
//! waits, removes the cgroup and ends the way the program ended (the same
//! exit code, or killed by the same signal). If the parent is killed, the
//! child gets SIGKILL (`PR_SET_PDEATHSIG`, checked against a pipe so that a
//! parent that died before the call is noticed too). With a [`LogSpec`],
//! the program's stdout and stderr go through the log pump
//! ([`crate::logpump`]), forked first, outside the new PID namespace.
//!
//! [`LogSpec`]: crate::spec::LogSpec

use crate::cgroup::Cgroup;
use crate::spec::{Bind, JailSpec, Net};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Sys { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Io { what, source }
}

/// The signals the parent passes on to the program.
const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The child's pid, for the signal handler (0 before the fork).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A stop was asked (SIGTERM and the like): the child gets [`GRACE`] to end.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// The last signal passed on to the child (0: none yet).
static FORWARDED_SIG: AtomicI32 = AtomicI32::new(0);

/// How long a child that was passed SIGTERM may take before it gets SIGKILL
/// (one the kernel did not pass it on to gets SIGKILL at once: see
/// [`drops_signal`]).
const GRACE: Duration = Duration::from_secs(1);

extern "C" fn forward(sig: libc::c_int) {
    FORWARDED_SIG.store(sig, Ordering::SeqCst);
    STOPPING.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Wait for the child; after a stop was asked, give it [`GRACE`], then
/// SIGKILL. The child is always reaped here (never left to init).
fn wait_child(child: nix::unistd::Pid) -> nix::Result<WaitStatus> {
    use nix::sys::wait::WaitPidFlag;
    let mut since: Option<Instant> = None;
    loop {
        if !STOPPING.load(Ordering::SeqCst) {
            match waitpid(child, None) {
                // A signal arrived: a stop, perhaps.
                Err(nix::Error::EINTR) => continue,
                other => return other,
            }
        }
        let t = match since {
            Some(t) => t,
            None => {
                // The kernel drops a signal sent to the init of a PID
                // namespace that has no handler for it: such a child would
                // only wait out the grace time, so it gets SIGKILL now.
                let sig = FORWARDED_SIG.load(Ordering::SeqCst);
                if std::fs::read_to_string(format!("/proc/{child}/status"))
                    .is_ok_and(|st| drops_signal(&st, sig))
                {
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                }
                *since.insert(Instant::now())
            }
        };
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if t.elapsed() > GRACE => {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                STOPPING.store(false, Ordering::SeqCst);
            }
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            other => return other,
        }
    }
}

/// Does a process whose `/proc/PID/status` is `status` drop signal `sig`
/// from its parent? Only the init of a PID namespace (innermost pid 1)
/// does, for a signal it has no handler for (pid_namespaces(7)); any other
/// process acts on it (the grace time still ends one that ignores it).
/// Unreadable fields: no.
fn drops_signal(status: &str, sig: libc::c_int) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let ns_init = field("NSpid:")
        .and_then(|v| v.split_whitespace().last())
        .is_some_and(|innermost| innermost == "1");
    let caught = field("SigCgt:").and_then(|hex| u64::from_str_radix(hex, 16).ok());
    match (ns_init, caught) {
        (true, Some(mask)) if (1..=64).contains(&sig) => mask & (1u64 << (sig - 1)) == 0,
        _ => false,
    }
}

/// The dynamic loader of this machine (Debian amd64), which `ldd` runs too.
const LD_SO: &str = "/lib64/ld-linux-x86-64.so.2";

/// The shared libraries `program` loads, as the dynamic loader lists them
/// (none for a static program). This is what `ldd` does, without its shell:
/// `ld.so --verify` first (exit 0 or 2: a dynamic program this loader
/// handles; 1: not a dynamic one, which `--list` would crash on), then
/// `ld.so --list`. Two execs instead of a bash script and three, a few ms
/// a jail.
pub fn libraries(program: &Path) -> Result<Vec<PathBuf>, JailError> {
    // `--verify` says 1 for a missing file too: say what is wrong instead.
    if !program.is_file() {
        return Err(JailError::Refused(format!(
            "{}: no such program",
            program.display()
        )));
    }
    let ld = |flag: &str| {
        std::process::Command::new(LD_SO)
            .arg(flag)
            .arg(program)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io(format!("running {LD_SO} {flag}")))
    };
    let verify = ld("--verify")?;
    match verify.status.code() {
        Some(0 | 2) => {}
        Some(1) => return Ok(vec![]),
        _ => {
            return Err(JailError::Refused(format!(
                "{LD_SO} --verify {} failed ({}): {}",
                program.display(),
                verify.status,
                String::from_utf8_lossy(&verify.stderr).trim()
            )))
        }
    }
    let out = ld("--list")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(JailError::Refused(format!(
            "{LD_SO} --list {} failed ({}): {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(JailError::Refused(format!(
                "{}: a library is missing: {line}",
                program.display()
            )));
        }
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest.split(" (").next().unwrap_or(""),
            None => line.split(" (").next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Run `spec`'s program in its jail; returns only on an error before the
/// fork, otherwise ends this process the way the program ended.
pub fn run(spec: &JailSpec) -> Result<std::convert::Infallible, JailError> {
    spec.validate()?;
    // The jail's directories must be traversable by the jailed uid whatever
    // umask the caller has (the daemon's is 077); the program gets 077.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let filters = match spec.seccomp {
        Some(p) => crate::policy::filters(p)?,
        None => vec![],
    };
    let mut binds = vec![Bind {
        exec: true,
        ..Bind::ro(&spec.program)
    }];
    binds.extend(libraries(&spec.program)?.into_iter().map(|l| Bind {
        exec: true,
        ..Bind::ro(l)
    }));
    binds.extend(spec.binds.iter().cloned());
    let argv: Vec<CString> = std::iter::once(spec.program.as_os_str().as_bytes().to_vec())
        .chain(spec.args.iter().map(|a| a.as_bytes().to_vec()))
        .map(CString::new)
        .collect::<Result<_, _>>()
        .map_err(|_| JailError::Refused("an argument holds a NUL byte".into()))?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| JailError::Refused("the environment holds a NUL byte".into()))?;
    let cgroup = match Cgroup::create(&spec.name, &spec.limits) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!(
                "tails-jailer: {}: no cgroup limits ({e}); rlimits only",
                spec.name
            );
            None
        }
    };
    // Until the fork, a failure removes the cgroup made for the program.
    let give_up = |cgroup: Option<Cgroup>, e: JailError| -> JailError {
        if let Some(c) = cgroup {
            c.remove();
        }
        e
    };
    let prepared = (|| -> Result<_, JailError> {
        // No core dump of guest memory, ever (the parent too).
        setrlimit(libc::RLIMIT_CORE, 0)?;
        // The log pump first, in the host's PID namespace (out of the jailed
        // program's reach): the program's stdout and stderr go to its pipe.
        let log = match &spec.log {
            Some(l) => Some(start_pump(spec, l)?),
            None => None,
        };
        let (death_r, death_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        // The PID namespace is for the child; the rest the child unshares
        // itself, so that its mounts are its own (the parent keeps the host's
        // view, to remove the cgroup at the end).
        nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(sys("unshare (pid)"))?;
        Ok((log, death_r, death_w))
    })();
    let (log, death_r, death_w) = match prepared {
        Ok(p) => p,
        Err(e) => return Err(give_up(cgroup, e)),
    };
    let mut blocked = SigSet::empty();
    for s in FORWARDED {
        blocked.add(s);
    }
    let old = match blocked
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .map_err(sys("sigprocmask"))
    {
        Ok(old) => old,
        Err(e) => return Err(give_up(cgroup, e)),
    };
    // SAFETY: this process is single-threaded (the jailer starts no thread),
    // so the child may do anything after the fork.
    let forked = match unsafe { nix::unistd::fork() }.map_err(sys("fork")) {
        Ok(f) => f,
        Err(e) => return Err(give_up(cgroup, e)),
    };
    match forked {
        ForkResult::Child => {
            drop(death_w);
            let _ = old.thread_set_mask();
            if let Some((w, _)) = &log {
                for fd in [1, 2] {
                    // SAFETY: dup2 on descriptors we own.
                    unsafe { libc::dup2(w.as_raw_fd(), fd) };
                }
            }
            drop(log);
            let e = child(
                spec,
                &binds,
                &filters,
                cgroup.as_ref(),
                death_r,
                &argv,
                &envp,
            );
            eprintln!("tails-jailer: {}: {e}", spec.name);
            // SAFETY: _exit ends the child without running the parent's
            // destructors twice.
            unsafe { libc::_exit(126) }
        }
        ForkResult::Parent { child } => {
            drop(death_r);
            CHILD.store(child.as_raw(), Ordering::SeqCst);
            // Only the child writes into the pump's pipe now.
            let pump = log.map(|(w, pid)| {
                drop(w);
                pid
            });
            for fd in 3..3 + spec.pass_fds as i32 {
                let _ = nix::unistd::close(fd);
            }
            // No SA_RESTART: the wait is interrupted, to start the grace time.
            let handler = nix::sys::signal::SigAction::new(
                nix::sys::signal::SigHandler::Handler(forward),
                nix::sys::signal::SaFlags::empty(),
                SigSet::empty(),
            );
            for s in FORWARDED {
                // SAFETY: `forward` only calls kill(2).
                unsafe { nix::sys::signal::sigaction(s, &handler) }.map_err(sys("sigaction"))?;
            }
            let _ = old.thread_set_mask();
            let status = wait_child(child);
            drop(death_w);
            if let Some(p) = pump {
                reap_pump(p);
            }
            if let Some(c) = cgroup {
                c.remove();
            }
            end_like(status)
        }
    }
}

/// Open the log files, make the pipe, and fork the pump; the pipe's write
/// end and the pump's pid.
fn start_pump(
    spec: &JailSpec,
    l: &crate::spec::LogSpec,
) -> Result<(OwnedFd, nix::unistd::Pid), JailError> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |path: &Path, append: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .append(append)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))
    };
    let cur = open(&l.path, true)?;
    let mut old = l.path.clone().into_os_string();
    old.push(".1");
    let prev = open(Path::new(&old), false)?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: single-threaded; the child only pumps and exits.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork (log pump)"))? {
        ForkResult::Child => {
            drop(w);
            // Not the program's descriptors (a NIC's socket), not stdin.
            for fd in (3..3 + spec.pass_fds as i32).chain([0, 1]) {
                let _ = nix::unistd::close(fd);
            }
            let dropped = (|| -> Result<(), JailError> {
                for cap in 0..=63 {
                    // SAFETY: prctl with integer arguments only.
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
                }
                nix::unistd::setgroups(&[]).map_err(sys("setgroups"))?;
                let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
                nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
                nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
                prctl("no_new_privs", libc::PR_SET_NO_NEW_PRIVS, 1)
            })();
            if let Err(e) = dropped {
                eprintln!("tails-jailer: {}: log pump: {e}", spec.name);
                // SAFETY: ends the forked pump.
                unsafe { libc::_exit(126) }
            }
            crate::logpump::pump(std::fs::File::from(r), cur, prev, l.max_bytes);
            // SAFETY: ends the forked pump.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => Ok((w, child)),
    }
}

/// The program has ended: the pump reads to the end of the pipe and ends;
/// one that does not within a second is killed (the jailer must not linger
/// while the host agent waits for it).
fn reap_pump(pid: nix::unistd::Pid) {
    use nix::sys::wait::WaitPidFlag;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::Error::EINTR) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return,
        }
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// End this process the way the child ended.
fn end_like(status: nix::Result<WaitStatus>) -> ! {
    match status {
        Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            // SAFETY: resetting a signal to its default disposition.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
            let mut set = SigSet::empty();
            set.add(sig);
            let _ = set.thread_unblock();
            let _ = nix::sys::signal::raise(sig);
            std::process::exit(128 + sig as i32)
        }
        Ok(_) | Err(_) => std::process::exit(125),
    }
}

fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> Result<(), JailError> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: a plain syscall on a stack value.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(JailError::Io {
            what: format!("setrlimit {resource}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn prctl(what: &str, option: libc::c_int, arg: libc::c_ulong) -> Result<(), JailError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } != 0 {
        return Err(JailError::Io {
            what: what.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Bind `b` into the jail's root at the same path.
fn bind(root: &Path, b: &Bind) -> Result<(), JailError> {
    let target = inside(root, &b.path);
    let what = |w: &str| format!("{w} {}", b.path.display());
    let meta = std::fs::metadata(&b.path).map_err(io(what("binding")))?;
    if meta.is_dir() {
        std::fs::create_dir_all(&target).map_err(io(what("mount point for")))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(what("mount point for")))?;
        }
        std::fs::File::create(&target).map_err(io(what("mount point for")))?;
    }
    mount(
        Some(&b.path),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(what("binding")))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
    if !b.writable {
        flags |= MsFlags::MS_RDONLY;
    }
    if !b.exec {
        flags |= MsFlags::MS_NOEXEC;
    }
    if !b.device {
        flags |= MsFlags::MS_NODEV;
    }
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>).map_err(sys(what("remounting")))
}

/// Build the root and enter it.
fn enter_root(spec: &JailSpec, binds: &[Bind]) -> Result<(), JailError> {
    let root = &spec.root;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m,nr_inodes=512"),
    )
    .map_err(sys("mounting the jail's root"))?;
    for b in binds {
        bind(root, b)?;
    }
    nix::unistd::chdir(root).map_err(sys("entering the jail's root"))?;
    // pivot_root(".", "."): the old root ends up on top of the new one, and
    // is then detached.
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the host's root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )
    .map_err(sys("making the jail's root read-only"))
}

/// The child: PID 1 of the new namespace. Returns only on an error.
#[allow(clippy::too_many_arguments)]
fn child(
    spec: &JailSpec,
    binds: &[Bind],
    filters: &[seccompiler::BpfProgram],
    cgroup: Option<&Cgroup>,
    death_r: OwnedFd,
    argv: &[CString],
    envp: &[CString],
) -> JailError {
    match child_setup(spec, binds, filters, cgroup, death_r) {
        Ok(()) => match nix::unistd::execve(&argv[0], argv, envp) {
            Ok(never) => match never {},
            Err(e) => JailError::Sys {
                what: format!("executing {}", spec.program.display()),
                source: e,
            },
        },
        Err(e) => e,
    }
}

fn child_setup(
    spec: &JailSpec,
    binds: &[Bind],
    filters: &[seccompiler::BpfProgram],
    cgroup: Option<&Cgroup>,
    death_r: OwnedFd,
) -> Result<(), JailError> {
    if let Some(c) = cgroup {
        c.join()?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
    if spec.net == Net::Empty {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(sys("unshare"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making / private"))?;
    let last_cap: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    enter_root(spec, binds)?;
    nix::unistd::sethostname("jail").map_err(sys("sethostname"))?;
    // What it creates (its sockets) is its own only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    setrlimit(libc::RLIMIT_NOFILE, spec.limits.open_files)?;
    setrlimit(libc::RLIMIT_NPROC, spec.limits.processes)?;
    setrlimit(libc::RLIMIT_CORE, 0)?;
    // Descriptors: stdio and the passed ones stay; the death pipe goes
    // right after them (close-on-exec); everything else is closed.
    let keep = 3 + spec.pass_fds as i32;
    let death = nix::fcntl::fcntl(&death_r, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(keep))
        .map_err(sys("moving the death pipe"))?;
    drop(death_r);
    // SAFETY: close_range on descriptor numbers only.
    if unsafe { libc::syscall(libc::SYS_close_range, death + 1, u32::MAX, 0) } != 0 {
        return Err(io("close_range")(std::io::Error::last_os_error()));
    }
    for cap in 0..=last_cap {
        prctl("dropping a capability", libc::PR_CAPBSET_DROP, cap)?;
    }
    prctl(
        "clearing the ambient capabilities",
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    )?;
    let groups: Vec<Gid> = spec.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(sys("setgroups"))?;
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
    prctl("no_new_privs", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    // After the uid change, which clears it.
    prctl(
        "parent-death signal",
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
    )?;
    let mut fds = [libc::pollfd {
        fd: death,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll on one valid descriptor, no wait.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    if n != 0 {
        return Err(JailError::Refused(
            "the jailer's parent is gone: not starting".into(),
        ));
    }
    nix::unistd::chdir(&spec.cwd).map_err(sys(format!("chdir {}", spec.cwd.display())))?;
    for f in filters {
        seccompiler::apply_filter(f)
            .map_err(|e| JailError::Refused(format!("installing the seccomp filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{drops_signal, libraries};
    use std::path::{Path, PathBuf};

    /// What `ldd` lists for `program`, parsed as [`libraries`] parses.
    fn ldd(program: &str) -> Vec<PathBuf> {
        let out = std::process::Command::new("/usr/bin/ldd")
            .arg(program)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let p = l.split_once("=> ").map_or(l, |(_, r)| r);
                let p = p.split(" (").next().unwrap_or("");
                p.starts_with('/').then(|| PathBuf::from(p))
            })
            .collect()
    }

    #[test]
    fn libraries_are_what_ldd_lists() {
        // A dynamic program: the same list, in the same order, libc in it.
        let sh = libraries(Path::new("/bin/sh")).unwrap();
        assert_eq!(sh, ldd("/bin/sh"));
        assert!(
            sh.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{sh:?}"
        );
        // A static program (busybox-static) and a script, which is no
        // dynamic program either: none.
        assert_eq!(
            libraries(Path::new("/bin/busybox")).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            libraries(Path::new("/usr/bin/ldd")).unwrap(),
            Vec::<PathBuf>::new()
        );
        // No program at all: refused, saying so.
        let e = libraries(Path::new("/nonexistent/program")).unwrap_err();
        assert!(e.to_string().contains("no such program"), "{e}");
    }

    /// The fields of `/proc/PID/status` that count, for a process whose
    /// pids are `nspid` and whose handlers are `sigcgt`.
    fn status(nspid: &str, sigcgt: &str) -> String {
        format!("Name:\tx\nNSpid:\t{nspid}\nSigBlk:\t0000000000000000\nSigCgt:\t{sigcgt}\n")
    }

    #[test]
    fn only_a_namespace_init_without_a_handler_drops_the_signal() {
        let term = libc::SIGTERM;
        // vhost-device-vsock: PID 1 of its namespace, no SIGTERM handler.
        assert!(drops_signal(&status("4242\t1", "0000000000000000"), term));
        // QEMU: PID 1 of its namespace, with one (bit 15 is SIGTERM).
        assert!(!drops_signal(&status("4242\t1", "0000000000004000"), term));
        // Another handler does not count.
        assert!(drops_signal(&status("4242\t1", "0000000000000002"), term));
        // Not a namespace init: the signal acts on it (or the grace time ends it).
        assert!(!drops_signal(&status("4242", "0000000000000000"), term));
        assert!(!drops_signal(&status("4242\t7", "0000000000000000"), term));
        // Unreadable or missing fields, or no signal yet: wait as before.
        assert!(!drops_signal("Name:\tx\n", term));
        assert!(!drops_signal(&status("4242\t1", "zz"), term));
        assert!(!drops_signal(&status("4242\t1", "0000000000000000"), 0));
    }
}
