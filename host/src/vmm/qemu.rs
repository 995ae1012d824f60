//! The embedded backend: one QEMU process per VM, controlled over QMP (qapi).
//!
//! QEMU runs in its jail (tails-jailer: its own mount, PID, IPC, UTS and,
//! unless it carries the Tor VM's uplink, network namespace; only the files
//! of [`jail_spec`]; no capability; the VM's own unprivileged user; rlimits
//! and a cgroup), in its own session, with `-sandbox on` (seccomp) and
//! `-nodefaults`: it gets only the devices listed here. Guest RAM is a
//! shared memfd (vhost-user needs it). The internal link's listening end is
//! handed to the App VM's QEMU as a descriptor; the Tor VM's QEMU dials it.
//! The guest's serial console and QEMU's own messages go to the console log,
//! which the host opens: QEMU writes no file of its own.

use super::{Backend, NicLink, Vm, VmInfo, VmSpec, VmmError};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Version string of every SMBIOS table (BIOS, system, board, chassis).
const SMBIOS_VERSION: &str = "1";
/// BIOS date in the SMBIOS tables.
const SMBIOS_DATE: &str = "01/01/2026";

/// The machine type, versioned: the guest sees the same chipset whatever
/// QEMU the host runs (Debian 12's 7.2 and backports' 10.x both have it).
pub const MACHINE: &str = "pc-q35-7.2";

/// The CPU every VM gets, pinned in full so that a guest sees the same CPU
/// on an Intel and an AMD host, under KVM as under TCG: QEMU's `qemu64`
/// model with its vendor, family, model, stepping and name written out (by
/// default QEMU shows the host's vendor under KVM), the host-dependent
/// virtualization features off, and `enforce`: QEMU refuses to start rather
/// than silently give a different feature list on a host that lacks one.
/// Under KVM on a host that can scale the TSC, its frequency is pinned too.
pub fn cpu_arg(accel: crate::accel::Accel, tsc_scaling: bool) -> String {
    let mut cpu = String::from(
        "qemu64,vendor=AuthenticAMD,family=15,model=107,stepping=1,\
         model-id=QEMU Virtual CPU version 2.5+,-svm,-vmx,enforce",
    );
    if accel == crate::accel::Accel::Kvm && tsc_scaling {
        cpu.push_str(",tsc-frequency=2000000000");
    }
    cpu
}

/// What the Tor VM's CPU has beyond [`cpu_arg`] under TCG: the instructions
/// OpenSSL's AES and GHASH use (AES-NI, PCLMULQDQ, SSSE3, SSE4.1/4.2). TCG
/// emulates them itself, whatever the host has, so they tell the guest
/// nothing about the host; without them tor's AES runs as table lookups
/// emulated one instruction at a time (a Tor VM carried about half as much
/// through its onion service so). Never under KVM, where the guest would
/// get the host's own (an old host lacks them, and `enforce` would refuse
/// to start), and never in the App VM, whose CPU is the same on every host.
const TORVM_TCG_CPU_FLAGS: &str = "+aes,+pclmulqdq,+ssse3,+sse4.1,+sse4.2";

/// The `-cpu` argument of `role`'s VM: [`cpu_arg`], and for the Tor VM
/// under TCG [`TORVM_TCG_CPU_FLAGS`] too.
pub fn vm_cpu_arg(
    role: tails_proto::Role,
    accel: crate::accel::Accel,
    tsc_scaling: bool,
) -> String {
    let mut cpu = cpu_arg(accel, tsc_scaling);
    if role == tails_proto::Role::Torvm && accel == crate::accel::Accel::Tcg {
        cpu.push(',');
        cpu.push_str(TORVM_TCG_CPU_FLAGS);
    }
    cpu
}

/// How often a dialling link end tries again while the other VM restarts.
const LINK_RECONNECT_MS: u32 = 100;

/// First descriptor number the NIC sockets get in QEMU.
const FIRST_NIC_FD: RawFd = 3;
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Qemu {
    pub binary: PathBuf,
    /// tails-jailer, which starts each QEMU in its jail.
    pub jailer: PathBuf,
}

/// Largest console log before it is rotated (one old one is kept): a guest
/// that floods its console cannot fill the host's disk.
pub const LOG_MAX_BYTES: u64 = 4 << 20;

/// Where QEMU finds its firmware (SeaBIOS, the PVH and linuxboot option
/// ROMs): bound read-only into its jail when present.
const FIRMWARE_DIRS: [&str; 2] = ["/usr/share/qemu", "/usr/share/seabios"];

/// The size of TCG's translation cache, in MiB. QEMU's default on a 64-bit
/// host is 1 GiB, filled as code is translated and never given back: each
/// QEMU's RSS grew by far more than its guest needed (see `bench memory`).
/// What a guest's kernel, agent and tor or services run fits in much less;
/// a full cache is flushed and translation starts again, it does not fail.
pub const TCG_TB_MIB: u64 = 64;

/// Memory a QEMU may use beyond its guest's RAM (the cgroup's limit):
/// TCG's translation cache on top of what KVM needs.
fn overhead_mib(accel: crate::accel::Accel) -> u64 {
    match accel {
        crate::accel::Accel::Kvm => 256,
        crate::accel::Accel::Tcg => 256 + TCG_TB_MIB,
    }
}

/// The `-accel` argument: KVM as it is, TCG with its translation cache
/// bounded by [`TCG_TB_MIB`].
pub fn accel_arg(accel: crate::accel::Accel) -> String {
    match accel {
        crate::accel::Accel::Kvm => "kvm".into(),
        crate::accel::Accel::Tcg => format!("tcg,tb-size={TCG_TB_MIB}"),
    }
}

/// What `spec`'s QEMU may see and use: its kernel, initramfs and disks, its
/// vsock backend's vhost-user socket, its own directory (QMP), the link's
/// directory when it dials the other VM, `/dev/null`, `/dev/urandom`,
/// `/dev/kvm` under KVM, QEMU's firmware; its own empty network namespace
/// unless it has a user-mode NIC (the Tor VM's uplink, under the host
/// table).
pub fn jail_spec(binary: &Path, spec: &VmSpec) -> tails_jailer::JailSpec {
    use tails_jailer::{Bind, Limits, Net};
    let mut binds = vec![
        Bind::ro(&spec.kernel),
        Bind::ro(&spec.initrd),
        Bind::ro(&spec.vhost_vsock),
        Bind::rw(&spec.dir),
        Bind::dev("/dev/null"),
        Bind::dev("/dev/urandom"),
    ];
    for d in &spec.disks {
        binds.push(if d.read_only {
            Bind::ro(&d.path)
        } else {
            Bind::rw(&d.path)
        });
    }
    let mut net = Net::Empty;
    let mut pass_fds = 0;
    for nic in &spec.nics {
        match &nic.link {
            NicLink::StreamListen(_) => pass_fds += 1,
            NicLink::StreamConnect(path) => {
                // Its directory: the listening end is made anew when the
                // other VM restarts.
                if let Some(dir) = path.parent() {
                    binds.push(Bind::ro(dir));
                }
            }
            NicLink::User => net = Net::Host,
        }
    }
    if spec.accel == crate::accel::Accel::Kvm {
        binds.push(Bind::dev("/dev/kvm"));
    }
    for d in FIRMWARE_DIRS {
        if Path::new(d).is_dir() {
            binds.push(Bind::ro(d));
        }
    }
    tails_jailer::JailSpec {
        name: format!("{}-qemu", spec.name),
        root: spec.jail_root.clone(),
        program: binary.to_path_buf(),
        args: args(spec),
        env: vec![],
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
        cwd: spec.dir.clone(),
        net,
        binds,
        pass_fds,
        limits: Limits {
            open_files: 1024,
            processes: 256,
            memory_bytes: (u64::from(spec.memory_mib) + overhead_mib(spec.accel)) << 20,
            pids: 256,
        },
        seccomp: None,
        log: Some(tails_jailer::LogSpec {
            path: spec.console_log.clone(),
            max_bytes: LOG_MAX_BYTES,
        }),
    }
}

/// The QEMU command line for `spec` (the `i`-th listening stream-socket NIC
/// is descriptor `FIRST_NIC_FD + i`).
pub fn args(spec: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    let mem = format!("{}M", spec.memory_mib);
    push(&["-name", &format!("{},debug-threads=off", spec.name)]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-msg", "timestamp=off"]);
    push(&["-machine", &format!("{MACHINE},memory-backend=mem")]);
    push(&["-accel", &accel_arg(spec.accel)]);
    push(&["-cpu", &spec.identity.cpu_model]);
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-m", &mem]);
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
    ]);
    push(&["-kernel", &spec.kernel.display().to_string()]);
    push(&["-initrd", &spec.initrd.display().to_string()]);
    push(&["-append", &spec.cmdline]);
    push(&["-serial", "stdio"]);
    push(&[
        "-qmp",
        &format!(
            "unix:{},server=on,wait=off",
            spec.dir.join("qmp.sock").display()
        ),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=vsock0,path={}", spec.vhost_vsock.display()),
    ]);
    push(&["-device", "vhost-user-vsock-pci,chardev=vsock0"]);
    push(&["-object", "rng-random,id=rng0,filename=/dev/urandom"]);
    push(&["-device", "virtio-rng-pci,rng=rng0"]);
    let mut next_fd = FIRST_NIC_FD;
    for (i, nic) in spec.nics.iter().enumerate() {
        let netdev = match &nic.link {
            NicLink::StreamListen(_) => {
                next_fd += 1;
                format!(
                    "stream,id=net{i},server=on,addr.type=fd,addr.str={}",
                    next_fd - 1
                )
            }
            NicLink::StreamConnect(path) => format!(
                "stream,id=net{i},server=off,addr.type=unix,addr.path={},reconnect-ms={LINK_RECONNECT_MS}",
                path.display()
            ),
            // No IPv6, no forwarded ports, no TFTP or SMB: outbound TCP/UDP only.
            NicLink::User => format!("user,id=net{i},ipv6=off"),
        };
        push(&["-netdev", &netdev]);
        push(&[
            "-device",
            &format!("virtio-net-pci,netdev=net{i},mac={},romfile=", nic.mac),
        ]);
    }
    for (i, d) in spec.disks.iter().enumerate() {
        // A writable disk reports write errors (a full store) to the guest
        // instead of pausing the VM; the guest's flushes reach the store.
        let mode = if d.read_only {
            "readonly=on"
        } else {
            "readonly=off,cache=writeback,werror=report,rerror=report"
        };
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id=disk{i},format=raw,{mode}",
                d.path.display()
            ),
        ]);
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive=disk{i},serial={}", d.serial),
        ]);
    }
    let id = &spec.identity;
    push(&["-uuid", &id.system_uuid]);
    // Every SMBIOS string the guest can read is ours: left alone, QEMU and
    // the firmware fill in their own versions (the host's package versions).
    let m = &id.manufacturer;
    for table in [
        format!("type=0,vendor={m},version={SMBIOS_VERSION},date={SMBIOS_DATE},release=1.0"),
        format!(
            "type=1,manufacturer={m},product={},version={SMBIOS_VERSION},serial=0,sku=0,family={m},uuid={}",
            id.product, id.system_uuid
        ),
        format!("type=2,manufacturer={m},product={},version={SMBIOS_VERSION},serial=0,asset=0", id.product),
        format!("type=3,manufacturer={m},version={SMBIOS_VERSION},serial=0,asset=0,sku=0"),
    ] {
        push(&["-smbios", &table]);
    }
    push(&["-rtc", "base=utc"]);
    push(&[
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    a
}

impl Backend for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(&self, spec: VmSpec) -> Result<Box<dyn Vm>, VmmError> {
        let spawn_err = |source| VmmError::Spawn {
            what: format!("QEMU for {}", spec.name),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.console_log)
            .map_err(spawn_err)?;
        let log2 = log.try_clone().map_err(spawn_err)?;
        // Move each NIC socket above any descriptor number we are going to
        // assign, so the dup2 calls in the child cannot clobber one another.
        let mut high: Vec<OwnedFd> = Vec::new();
        for nic in &spec.nics {
            let NicLink::StreamListen(fd) = &nic.link else {
                continue;
            };
            let dup = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
                .map_err(|e| spawn_err(e.into()))?;
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we own.
            high.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) });
        }
        let raw: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();
        let jail = jail_spec(&self.binary, &spec);
        crate::paths::make_jail_root(&jail.root).map_err(spawn_err)?;
        let json = serde_json::to_string(&jail).map_err(|e| spawn_err(std::io::Error::other(e)))?;
        let mut cmd = Command::new(&self.jailer);
        cmd.arg(json)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&spec.dir);
        // SAFETY: only async-signal-safe calls (setsid, dup2) in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (i, fd) in raw.iter().enumerate() {
                    if libc::dup2(*fd, FIRST_NIC_FD + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn_err)?;
        drop(high);
        let pid = child.id();
        let exited = Arc::new(Mutex::new(None::<String>));
        let slot = exited.clone();
        std::thread::Builder::new()
            .name(format!("wait-{}", spec.name))
            .spawn(move || {
                let how = match child.wait() {
                    Ok(s) => describe_exit(s),
                    Err(e) => format!("lost: {e}"),
                };
                if let Ok(mut g) = slot.lock() {
                    *g = Some(how);
                }
            })
            .map_err(spawn_err)?;
        Ok(Box::new(QemuVm {
            name: spec.name.clone(),
            pid,
            qmp: spec.dir.join("qmp.sock"),
            end: End::Child(exited),
        }))
    }
}

pub fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!(
            "killed by signal {}",
            nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|_| sig.to_string())
        ),
        _ => "ended".into(),
    }
}

struct QemuVm {
    name: String,
    pid: u32,
    qmp: PathBuf,
    end: End,
}

/// How a QEMU's end is seen.
enum End {
    /// Our child: a thread waits for it and says how it ended.
    Child(Arc<Mutex<Option<String>>>),
    /// Started by a daemon that died: polled, by pid and start time.
    Adopted(crate::proc::ProcId),
}

/// A QEMU that a daemon which died started: taken over by pid and start
/// time (never by pid alone), controlled over its QMP socket like any other.
/// Its end is seen by polling the process (it is not our child).
pub fn adopt(name: &str, proc: crate::proc::ProcId, qmp: PathBuf) -> Box<dyn Vm> {
    Box::new(QemuVm {
        name: name.to_owned(),
        pid: proc.pid,
        qmp,
        end: End::Adopted(proc),
    })
}

/// The VM's state, memory and accelerator, asked over QMP.
fn info(name: &str, qmp: &Path) -> Result<VmInfo, VmmError> {
    let status = qmp_call(name, qmp, &qapi::qmp::query_status {})?;
    let mem = qmp_call(name, qmp, &qapi::qmp::query_memory_size_summary {})?;
    let kvm = qmp_call(name, qmp, &qapi::qmp::query_kvm {})?;
    let state = serde_json::to_value(status.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    Ok(VmInfo {
        state,
        memory_mib: mem.base_memory / (1 << 20),
        accel: if kvm.enabled { "kvm" } else { "tcg" }.into(),
    })
}

/// Run one QMP command on a fresh connection, bounded by [`QMP_TIMEOUT`]
/// as a whole (connect, handshake, command, answer): past it the socket is
/// shut down, which ends the call, and the caller gets an error. A QEMU
/// that never answers cannot hold a caller longer than that.
fn qmp_call<C>(vm: &str, sock: &Path, cmd: &C) -> Result<C::Ok, VmmError>
where
    C: qapi::Command + Clone + Send + 'static,
    C::Ok: Send + 'static,
{
    let err = |detail: String| VmmError::Control {
        vm: vm.to_owned(),
        detail,
    };
    let stream = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| err(format!("{}: {e}", sock.display())))?;
    for set in [
        std::os::unix::net::UnixStream::set_read_timeout,
        std::os::unix::net::UnixStream::set_write_timeout,
    ] {
        set(&stream, Some(QMP_TIMEOUT)).map_err(|e| err(e.to_string()))?;
    }
    let guard = stream.try_clone().map_err(|e| err(e.to_string()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let cmd = cmd.clone();
    std::thread::Builder::new()
        .name("qmp".into())
        .spawn(move || {
            // qapi's handshake panics on EOF; contain that to this call.
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut qmp = qapi::Qmp::from_stream(&stream);
                qmp.handshake().map_err(|e| e.to_string())?;
                qmp.execute(&cmd).map_err(|e| e.to_string())
            }));
            let _ = tx.send(match res {
                Ok(r) => r,
                Err(_) => Err("QMP connection closed during the handshake".into()),
            });
        })
        .map_err(|e| err(e.to_string()))?;
    match rx.recv_timeout(QMP_TIMEOUT) {
        Ok(r) => r.map_err(err),
        Err(_) => {
            let _ = guard.shutdown(std::net::Shutdown::Both);
            Err(err(format!("no answer within {} s", QMP_TIMEOUT.as_secs())))
        }
    }
}

impl Vm for QemuVm {
    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn exited(&self) -> Option<String> {
        match &self.end {
            End::Child(slot) => slot.lock().ok().and_then(|g| g.clone()),
            End::Adopted(p) => {
                (!p.alive()).then(|| "ended (it was started by a daemon that died)".to_owned())
            }
        }
    }

    fn info(&self) -> Result<VmInfo, VmmError> {
        if self.exited().is_some() {
            return Err(VmmError::NotRunning {
                vm: self.name.clone(),
            });
        }
        info(&self.name, &self.qmp)
    }

    fn powerdown(&self) -> Result<(), VmmError> {
        qmp_call(&self.name, &self.qmp, &qapi::qmp::system_powerdown {}).map(|_| ())
    }

    fn pause(&self) -> Result<(), VmmError> {
        qmp_call(&self.name, &self.qmp, &qapi::qmp::stop {}).map(|_| ())
    }

    fn resume(&self) -> Result<(), VmmError> {
        qmp_call(&self.name, &self.qmp, &qapi::qmp::cont {}).map(|_| ())
    }

    fn quit(&self) -> Result<(), VmmError> {
        qmp_call(&self.name, &self.qmp, &qapi::qmp::quit {}).map(|_| ())
    }

    fn kill(&self) {
        match &self.end {
            End::Adopted(p) => p.kill(),
            End::Child(_) if self.exited().is_none() => {
                // QEMU itself, so that its jailer reaps it and cleans up;
                // the jailer if QEMU cannot be found (QEMU then dies of its
                // parent-death signal).
                let target = crate::proc::ProcId::of(self.pid)
                    .and_then(|j| j.jailed())
                    .map_or(self.pid, |q| q.pid);
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(target as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            End::Child(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;
    use crate::vmm::{Disk, Identity, Nic};

    fn spec() -> VmSpec {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a: OwnedFd = a.into();
        VmSpec {
            name: "appvm".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![],
            memory_mib: 512,
            vcpus: 1,
            accel: Accel::Tcg,
            kernel: "/img/vmlinux".into(),
            initrd: "/img/appvm.initramfs".into(),
            cmdline: "console=ttyS0".into(),
            disks: vec![Disk {
                path: "/img/root".into(),
                read_only: true,
                serial: "tails-appvm-root".into(),
            }],
            nics: vec![Nic {
                mac: "00:11:22:33:44:55".into(),
                link: NicLink::StreamListen(a),
            }],
            vhost_vsock: "/run/x/appvm.vhost".into(),
            dir: "/run/x/appvm".into(),
            jail_root: "/run/x/jail/appvm-qemu".into(),
            console_log: "/var/log/x.log".into(),
            identity: Identity {
                cpu_model: cpu_arg(Accel::Tcg, false),
                system_uuid: "5c1d2c2a-6f1e-4d39-9a7c-0d0000000002".into(),
                manufacturer: "M".into(),
                product: "P".into(),
            },
        }
    }

    /// The Tor VM's NICs: it dials the link, and has the uplink.
    fn torvm_nics() -> Vec<Nic> {
        vec![
            Nic {
                mac: "00:55:44:33:22:11".into(),
                link: NicLink::StreamConnect("/run/x/link/internal.sock".into()),
            },
            Nic {
                mac: "52:54:00:12:34:56".into(),
                link: NicLink::User,
            },
        ]
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn a_qemu_that_never_answers_cannot_hold_a_call() {
        let d = std::env::temp_dir().join(format!("ts-qmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        let sock = d.join("qmp.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        // Accepts, then trickles a byte a second and never finishes its
        // greeting: no single read times out, the call as a whole must.
        let held = std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                for _ in 0..(QMP_TIMEOUT.as_secs() + 5) {
                    if std::io::Write::write_all(&mut c, b" ").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        });
        let t = std::time::Instant::now();
        let r = qmp_call("testvm", &sock, &qapi::qmp::query_status {});
        let took = t.elapsed();
        assert!(r.is_err(), "no answer is an error");
        assert!(
            took < QMP_TIMEOUT + Duration::from_secs(2),
            "bounded as a whole: {took:?}"
        );
        let _ = held.join();
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_cpu_is_pinned_in_full_under_kvm_too() {
        for (accel, tsc) in [
            (Accel::Tcg, false),
            (Accel::Tcg, true),
            (Accel::Kvm, false),
            (Accel::Kvm, true),
        ] {
            let cpu = cpu_arg(accel, tsc);
            let props: Vec<&str> = cpu.split(',').collect();
            assert_eq!(props[0], "qemu64", "a named model, never host or max");
            for p in [
                "vendor=AuthenticAMD",
                "family=15",
                "model=107",
                "stepping=1",
                "model-id=QEMU Virtual CPU version 2.5+",
                "-svm",
                "-vmx",
                "enforce",
            ] {
                assert!(props.contains(&p), "{accel:?}: {p} in {cpu}");
            }
            let pinned_tsc = props.iter().any(|p| p.starts_with("tsc-frequency="));
            assert_eq!(pinned_tsc, accel == Accel::Kvm && tsc, "{cpu}");
        }
        // The same string under KVM and TCG but for the TSC: what the guest
        // sees does not depend on the host's vendor.
        assert_eq!(cpu_arg(Accel::Kvm, false), cpu_arg(Accel::Tcg, false));
    }

    #[test]
    fn only_the_tor_vm_under_tcg_gets_the_aes_instructions() {
        use tails_proto::Role;
        for (accel, tsc) in [(Accel::Tcg, false), (Accel::Kvm, false), (Accel::Kvm, true)] {
            // The App VM: the pinned CPU, under either accelerator.
            assert_eq!(vm_cpu_arg(Role::Appvm, accel, tsc), cpu_arg(accel, tsc));
        }
        assert_eq!(
            vm_cpu_arg(Role::Torvm, Accel::Kvm, true),
            cpu_arg(Accel::Kvm, true),
            "nothing the host may lack under KVM"
        );
        let tor = vm_cpu_arg(Role::Torvm, Accel::Tcg, false);
        assert!(tor.starts_with(&cpu_arg(Accel::Tcg, false)), "{tor}");
        let props: Vec<&str> = tor.split(',').collect();
        for p in [
            "+aes",
            "+pclmulqdq",
            "+ssse3",
            "+sse4.1",
            "+sse4.2",
            "enforce",
        ] {
            assert!(props.contains(&p), "{p} in {tor}");
        }
        assert!(!props.iter().any(|p| *p == "host" || *p == "max"), "{tor}");
    }

    #[test]
    fn each_qemu_gets_only_its_own_files_in_its_jail() {
        let s = spec();
        let j = jail_spec(Path::new("/usr/bin/qemu-system-x86_64"), &s);
        assert_eq!(j.validate(), Ok(()));
        assert_eq!(
            j.net,
            tails_jailer::Net::Empty,
            "no uplink: no network at all"
        );
        assert_eq!(j.pass_fds, 1, "the link's listening end");
        assert_eq!((j.uid, j.gid), (s.uid, s.gid));
        assert!(j.seccomp.is_none(), "QEMU installs its own (-sandbox on)");
        let paths: Vec<String> = j
            .binds
            .iter()
            .map(|b| b.path.display().to_string())
            .collect();
        for p in [
            "/img/vmlinux",
            "/img/appvm.initramfs",
            "/img/root",
            "/run/x/appvm.vhost",
            "/run/x/appvm",
        ] {
            assert!(paths.contains(&p.to_string()), "{p} in {paths:?}");
        }
        let writable: Vec<&str> = j
            .binds
            .iter()
            .filter(|b| b.writable && !b.device)
            .map(|b| b.path.to_str().unwrap())
            .collect();
        assert_eq!(
            writable,
            ["/run/x/appvm"],
            "only its own directory is writable"
        );
        assert!(!paths.iter().any(|p| p == "/dev/kvm"), "TCG: no /dev/kvm");
        assert!(
            j.binds.iter().all(|b| !b.exec),
            "nothing executable but QEMU and its libraries"
        );
        assert!(j.limits.memory_bytes > u64::from(s.memory_mib) << 20);
        // The Tor VM's QEMU with its uplink: the host's namespace (under
        // the host table); it dials the link in a directory of its own.
        let mut t = spec();
        t.accel = Accel::Kvm;
        t.nics = torvm_nics();
        let j = jail_spec(Path::new("/usr/bin/qemu-system-x86_64"), &t);
        assert_eq!(j.net, tails_jailer::Net::Host);
        assert_eq!(j.pass_fds, 0);
        let paths: Vec<String> = j
            .binds
            .iter()
            .map(|b| b.path.display().to_string())
            .collect();
        assert!(paths.contains(&"/run/x/link".to_string()), "{paths:?}");
        assert!(paths.contains(&"/dev/kvm".to_string()), "KVM: /dev/kvm");
    }

    #[test]
    fn command_line_is_locked_down() {
        let a = args(&spec());
        assert!(a.contains(&"-nodefaults".to_string()));
        assert!(a.contains(&"-no-user-config".to_string()));
        assert_eq!(after(&a, "-cpu"), [cpu_arg(Accel::Tcg, false)]);
        assert!(
            !a.iter().any(|x| x == "host"
                || x == "max"
                || x.contains("host-phys-bits")
                || x.contains("passthrough")
                || x.contains("hostfwd")),
            "no host passthrough of any kind: {a:?}"
        );
        assert_eq!(
            after(&a, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
        assert_eq!(after(&a, "-machine"), ["pc-q35-7.2,memory-backend=mem"]);
        assert_eq!(after(&a, "-accel"), ["tcg,tb-size=64"]);
        assert!(after(&a, "-device").contains(&"virtio-rng-pci,rng=rng0"));
        assert!(
            after(&a, "-object")[0].contains("memory-backend-memfd")
                && after(&a, "-object")[0].contains("share=on")
        );
        // The only NIC is the fd-passed stream link: no tap, no user networking.
        assert_eq!(
            after(&a, "-netdev"),
            ["stream,id=net0,server=on,addr.type=fd,addr.str=3"]
        );
        let mut torvm = spec();
        torvm.nics = torvm_nics();
        assert_eq!(
            after(&args(&torvm), "-netdev"),
            [
                "stream,id=net0,server=off,addr.type=unix,addr.path=/run/x/link/internal.sock,reconnect-ms=100",
                "user,id=net1,ipv6=off"
            ]
        );
        assert!(after(&a, "-device")
            .contains(&"virtio-net-pci,netdev=net0,mac=00:11:22:33:44:55,romfile="));
        assert!(after(&a, "-drive")[0].contains("readonly=on"));
        assert!(after(&a, "-device")
            .iter()
            .any(|d| d.contains("serial=tails-appvm-root")));
        assert_eq!(after(&a, "-rtc"), ["base=utc"]);
        // All four SMBIOS tables are ours, so no firmware or QEMU version
        // of the host shows through.
        let smbios = after(&a, "-smbios");
        for t in ["type=0,", "type=1,", "type=2,", "type=3,"] {
            assert_eq!(smbios.iter().filter(|s| s.starts_with(t)).count(), 1, "{t}");
        }
        assert!(smbios.iter().all(|s| s.contains("version=1")), "{smbios:?}");
    }
}
