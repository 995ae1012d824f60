//! Issue 10, points 1 and 2 on the real stack: each VM has a vsock backend
//! of its own, and each QEMU and each backend runs in its jail. Looked at
//! from outside through /proc (its root, its mounts, its namespaces, its
//! credentials), what each one sees and reaches is exactly its allowed
//! list; a jailed backend that makes a forbidden system call is killed.

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const JAILER: &str = tails_jailer::DEFAULT_PATH;

/// The pid of the process whose command line contains `needle` (not the
/// jailer that started it).
fn pid_with(comm: &str, needle: &str) -> u32 {
    pids_named(comm)
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .unwrap_or_else(|| panic!("no {comm} process with {needle:?}"))
}

fn uid(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .expect("user lookup")
        .unwrap_or_else(|| panic!("no user {user}: run ./setup.sh"))
        .uid
        .as_raw()
}

fn status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status")
}

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

/// Its mounts: mount point → options.
fn mounts(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .expect("mountinfo")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[4].to_string(), f[5].to_string())
        })
        .collect()
}

/// Every file it can see that is not a directory (a walk of its root as
/// the kernel shows it to us): path → is a socket.
fn visible(pid: u32) -> Vec<(String, bool)> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut out = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
        {
            // Through any mount on it (a bound socket shows as a socket).
            let t = std::fs::symlink_metadata(e.path())
                .expect("stat")
                .file_type();
            if t.is_dir() {
                todo.push(e.path());
            } else {
                let rel = e.path().strip_prefix(&root).expect("under root").to_owned();
                out.push((format!("/{}", rel.display()), t.is_socket()));
            }
        }
    }
    out.sort();
    out
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
}

fn libraries(program: &Path) -> Vec<String> {
    tails_jailer::jail::libraries(program)
        .expect("ldd")
        .into_iter()
        .map(|p| p.display().to_string())
        .collect()
}

fn program(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe")
}

/// What every jailed process shares: its own uid, no capability, no new
/// privileges, a seccomp filter, namespaces of its own (`net` too unless
/// `host_net`), no core dumps, its cgroup.
fn common(pid: u32, what: &str, user: &str, cgroup: &str, host_net: bool) {
    let st = status(pid);
    let u = uid(user).to_string();
    assert_eq!(
        field(&st, "Uid").split_whitespace().collect::<Vec<_>>(),
        vec![u.as_str(); 4],
        "{what}: runs as {user}"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&st, cap), "0000000000000000", "{what}: {cap}");
    }
    assert_eq!(field(&st, "NoNewPrivs"), "1", "{what}");
    assert_eq!(field(&st, "Seccomp"), "2", "{what}: a seccomp filter");
    for kind in ["mnt", "pid", "ipc", "uts"] {
        assert_ne!(
            ns(&pid.to_string(), kind),
            ns("self", kind),
            "{what}: {kind} namespace"
        );
    }
    let own_net = ns(&pid.to_string(), "net") != ns("self", "net");
    assert_eq!(own_net, !host_net, "{what}: network namespace");
    if !host_net {
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("net/dev");
        let ifaces: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(ifaces, vec!["lo"], "{what}: interfaces");
        let ip = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "ip", "-o", "addr"])
            .output()
            .expect("nsenter ip");
        let addrs = String::from_utf8_lossy(&ip.stdout);
        assert!(ip.status.success(), "{what}: {ip:?}");
        assert!(
            !addrs.contains("inet"),
            "{what}: no address at all: {addrs}"
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit");
    assert_eq!(
        core.split_whitespace().nth(4),
        Some("0"),
        "{what}: no core dump of guest memory: {core}"
    );
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cg.contains(&format!("tails-server/{cgroup}")),
        "{what}: in its cgroup: {cg}"
    );
    println!(
        "{what}: uid {user}, no capability, no_new_privs, seccomp, own namespaces, cgroup {cgroup}"
    );
}

/// The inode of the memfd that holds `pid`'s mapping of guest RAM.
fn guest_ram_inodes(pid: u32) -> BTreeSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("maps")
        .lines()
        .filter(|l| l.contains("memfd:"))
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .collect()
}

fn check_backend(role: &str) -> u32 {
    let dir = format!("{RUNTIME}/vsock/{role}");
    let pid = pid_with("vhost-device", &format!("socket={dir}/vhost.sock"));
    let what = format!("{role}'s vsock backend");
    common(
        pid,
        &what,
        &format!("tails-vsock-{role}"),
        &format!("{role}-vsock"),
        false,
    );
    let exe = program(pid);
    let mut want: BTreeSet<String> = libraries(&exe).into_iter().collect();
    want.insert(exe.display().to_string());
    want.insert(dir.clone());
    want.insert("/".into());
    let got: BTreeSet<String> = mounts(pid).into_iter().map(|(m, _)| m).collect();
    assert_eq!(got, want, "{what}: its mounts");
    let rw: Vec<String> = mounts(pid)
        .into_iter()
        .filter(|(_, o)| o.split(',').any(|x| x == "rw"))
        .map(|(m, _)| m)
        .collect();
    assert_eq!(rw, vec![dir.clone()], "{what}: writable");
    // vhost-device-vsock unlinks its vhost-user socket once QEMU is
    // connected (and makes it again when QEMU goes).
    let files = visible(pid);
    let sockets: BTreeSet<String> = files.iter().filter(|f| f.1).map(|f| f.0.clone()).collect();
    let may: BTreeSet<String> = [format!("{dir}/vhost.sock"), format!("{dir}/vsock.sock")].into();
    assert!(
        sockets.contains(&format!("{dir}/vsock.sock")) && sockets.is_subset(&may),
        "{what}: the sockets it can reach: {sockets:?}"
    );
    let mut want_files: BTreeSet<String> = libraries(&exe).into_iter().collect();
    want_files.insert(exe.display().to_string());
    want_files.extend(sockets.iter().cloned());
    let got_files: BTreeSet<String> = files.into_iter().map(|f| f.0).collect();
    assert_eq!(got_files, want_files, "{what}: every file it sees");
    assert_eq!(
        field(&status(pid), "Seccomp_filters"),
        "2",
        "{what}: our filter"
    );
    println!(
        "{what}: sees {} files, reaches {} sockets",
        got_files.len(),
        sockets.len()
    );
    pid
}

fn check_qemu(role: &str) -> u32 {
    let pid = pid_with("qemu-system", &format!("{role},debug-threads"));
    let what = format!("{role}'s QEMU");
    common(
        pid,
        &what,
        &format!("tails-{role}"),
        &format!("{role}-qemu"),
        false,
    );
    let exe = program(pid);
    let vm_dir = format!("{RUNTIME}/{role}");
    let vhost = format!("{RUNTIME}/vsock/{role}/vhost.sock");
    let mut want: BTreeSet<String> = libraries(&exe).into_iter().collect();
    for p in [
        "/",
        &exe.display().to_string(),
        &vm_dir,
        &vhost,
        "/dev/null",
        "/dev/urandom",
        "/usr/share/qemu",
        "/usr/share/seabios",
    ] {
        want.insert(p.to_string());
    }
    if role == "torvm" {
        want.insert(format!("{RUNTIME}/link"));
    }
    let mut images = BTreeSet::new();
    let mut got = BTreeSet::new();
    for (m, _) in mounts(pid) {
        if m.starts_with("/var/lib/tails-server/images/") {
            images.insert(
                Path::new(&m)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        } else {
            got.insert(m);
        }
    }
    assert_eq!(got, want, "{what}: its mounts");
    let mut want_images: BTreeSet<String> =
        ["vmlinux".to_string(), format!("{role}.initramfs")].into();
    want_images.insert(format!("{role}.squashfs"));
    assert_eq!(images, want_images, "{what}: its images");
    let rw: BTreeSet<String> = mounts(pid)
        .into_iter()
        .filter(|(_, o)| o.split(',').any(|x| x == "rw"))
        .map(|(m, _)| m)
        .collect();
    assert_eq!(
        rw,
        [vm_dir.clone(), "/dev/null".into(), "/dev/urandom".into()].into(),
        "{what}: writable"
    );
    let files = visible(pid);
    let sockets: BTreeSet<String> = files.iter().filter(|f| f.1).map(|f| f.0.clone()).collect();
    let mut want_sockets: BTreeSet<String> = [vhost.clone(), format!("{vm_dir}/qmp.sock")].into();
    if role == "torvm" {
        want_sockets.insert(format!("{RUNTIME}/link/internal.sock"));
    }
    assert_eq!(sockets, want_sockets, "{what}: the sockets it can reach");
    let outside_firmware: Vec<&String> = files
        .iter()
        .map(|f| &f.0)
        .filter(|f| !f.starts_with("/usr/share/qemu/") && !f.starts_with("/usr/share/seabios/"))
        .filter(|f| !want.contains(*f) && !want_sockets.contains(*f))
        .filter(|f| !f.starts_with("/var/lib/tails-server/images/"))
        .collect();
    assert!(
        outside_firmware.is_empty(),
        "{what}: files it should not see: {outside_firmware:?}"
    );
    println!(
        "{what}: sees {} files (QEMU's firmware among them), reaches {} sockets",
        files.len(),
        sockets.len()
    );
    pid
}

#[test]
fn every_vm_process_runs_alone_in_its_jail() {
    clean_start(Path::new(RUNTIME));
    ts_ok(&["up", "--network", "none"]);
    let mut backends = Vec::new();
    let mut qemus = Vec::new();
    for role in ["torvm", "appvm"] {
        backends.push(check_backend(role));
        qemus.push(check_qemu(role));
    }
    // One backend per VM, each mapping its own VM's memory only.
    assert_eq!(
        pids_named("vhost-device").len(),
        2,
        "one vsock backend per VM"
    );
    for i in 0..2 {
        let own = guest_ram_inodes(qemus[i]);
        let other = guest_ram_inodes(qemus[1 - i]);
        let mapped = guest_ram_inodes(backends[i]);
        assert!(
            !own.is_empty() && !mapped.is_empty(),
            "guest RAM is a memfd"
        );
        assert!(mapped.is_subset(&own), "a backend maps its own VM's RAM");
        assert!(mapped.is_disjoint(&other), "and never the other VM's");
    }
    // The stack still works through the jails.
    let r = ts_ok(&["exec", "appvm", "--", "echo", "jailed"]);
    assert!(r.stdout.contains("jailed"), "{r:?}");
    ts_ok(&["down"]);
    assert!(
        wait_until(10, || leftovers(Path::new(RUNTIME)).is_empty()),
        "left behind: {:?}",
        leftovers(Path::new(RUNTIME))
    );
    assert!(
        !Path::new("/sys/fs/cgroup/pids/tails-server/appvm-qemu").exists()
            && !Path::new("/sys/fs/cgroup/tails-server/appvm-qemu").exists(),
        "the cgroups are removed"
    );
}

/// Run `program ARGS` in a test jail (`seccomp`, `log`).
fn jailed(
    program: &Path,
    args: &[&str],
    seccomp: Option<tails_jailer::Policy>,
    log: Option<tails_jailer::LogSpec>,
) -> std::process::Output {
    jailed_named(program, args, seccomp, log).0
}

/// [`jailed`], and the jail's name (its cgroup's).
fn jailed_named(
    program: &Path,
    args: &[&str],
    seccomp: Option<tails_jailer::Policy>,
    log: Option<tails_jailer::LogSpec>,
) -> (std::process::Output, String) {
    // One directory per call: the tests of this file may run at once.
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = PathBuf::from(format!("/run/tails-server-jailtest-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).expect("mkdir");
    std::fs::create_dir_all(dir.join("work")).expect("mkdir");
    let user = nix::unistd::User::from_name("tails-vsock-appvm")
        .expect("lookup")
        .expect("user tails-vsock-appvm");
    let spec = tails_jailer::JailSpec {
        name: format!("jailtest-{n}"),
        root: dir.join("root"),
        program: program.to_path_buf(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![],
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: vec![],
        cwd: dir.join("work"),
        net: tails_jailer::Net::Empty,
        binds: vec![tails_jailer::Bind::rw(dir.join("work"))],
        pass_fds: 0,
        limits: tails_jailer::Limits {
            open_files: 64,
            processes: 16,
            memory_bytes: 64 << 20,
            pids: 16,
        },
        seccomp,
        log,
    };
    let out = Command::new(JAILER)
        .arg(serde_json::to_string(&spec).expect("json"))
        .output()
        .expect("run the jailer");
    let _ = std::fs::remove_dir_all(&dir);
    (out, spec.name)
}

/// Run `ts-syscall WHAT` in a jail with the vsock backends' filter.
fn jailed_syscall(what: &str) -> std::process::Output {
    jailed(
        Path::new(env!("CARGO_BIN_EXE_ts-syscall")),
        &[what],
        Some(tails_jailer::Policy::VsockBackend),
        None,
    )
}

#[test]
fn a_jailed_program_s_output_is_escaped_and_capped() {
    let log = PathBuf::from("/var/log/tails-server-jailtest.log");
    let old = PathBuf::from("/var/log/tails-server-jailtest.log.1");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&old);
    const MAX: u64 = 64 << 10;
    // A guest console that floods, with escape sequences and carriage returns.
    let script = r"i=0; while [ $i -lt 6000 ]; do printf '[31mline %d
' $i; i=$((i+1)); done";
    let out = jailed(
        Path::new("/bin/sh"),
        &["-c", script],
        None,
        Some(tails_jailer::LogSpec {
            path: log.clone(),
            max_bytes: MAX,
        }),
    );
    assert!(out.status.success(), "{out:?}");
    let cur = std::fs::read(&log).expect("log");
    let prev = std::fs::read(&old).expect("the rotated log");
    for (name, bytes) in [("log", &cur), ("old log", &prev)] {
        assert!(
            !bytes.iter().any(|b| *b == 0x1b || *b == b'\r'),
            "{name}: no raw control character"
        );
    }
    let text = String::from_utf8_lossy(&prev);
    assert!(
        text.contains("\\x1b[31mline "),
        "escaped: {}",
        &text[..200.min(text.len())]
    );
    // Capped: one read's worth past the limit at most, and one old log.
    assert!((cur.len() as u64) < MAX + (64 << 10), "{}", cur.len());
    assert!(
        (prev.len() as u64) >= MAX,
        "rotated at the cap: {}",
        prev.len()
    );
    assert!(
        String::from_utf8_lossy(&cur).contains("line 5999"),
        "the end is in the current log"
    );
    let mode = std::fs::metadata(&log).expect("meta").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    println!(
        "log capped at {} bytes (+ {} in the old one), control characters escaped",
        cur.len(),
        prev.len()
    );
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&old);
}

#[test]
fn a_jailed_backend_that_makes_a_forbidden_call_is_killed() {
    for allowed in ["unix", "thread"] {
        let out = jailed_syscall(allowed);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok"),
            "{allowed} is allowed: {out:?}"
        );
    }
    for forbidden in ["inet", "fork", "ptrace"] {
        let out = jailed_syscall(forbidden);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{forbidden}: killed by the filter: {out:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "{forbidden}: it did not go on: {out:?}"
        );
        println!("{forbidden}: killed by SIGSYS");
    }
    // A bad spec: one line, nothing started.
    let out = Command::new(JAILER)
        .arg("{not json")
        .output()
        .expect("jailer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("tails-jailer: bad spec"), "{err}");
    // A jail that fails after its cgroup was made (here: its log cannot be
    // opened) removes the cgroup.
    let (out, name) = jailed_named(
        Path::new("/bin/true"),
        &[],
        None,
        Some(tails_jailer::LogSpec {
            path: PathBuf::from("/nonexistent-dir/tails-jailtest.log"),
            max_bytes: 4096,
        }),
    );
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/tails-jailtest.log"), "{err}");
    for parent in [
        "/sys/fs/cgroup/tails-server",
        "/sys/fs/cgroup/memory/tails-server",
        "/sys/fs/cgroup/pids/tails-server",
    ] {
        let left = Path::new(parent).join(&name);
        assert!(!left.exists(), "{} is left", left.display());
    }
}
