//! The embedded backend: one QEMU process per VM, controlled over QMP (qapi).
//!
//! QEMU runs as the VM's own unprivileged user, in its own session, with
//! `-sandbox on` (seccomp) and `-nodefaults`: it gets only the devices listed
//! here. Guest RAM is a shared memfd (vhost-user needs it). The internal link
//! is a stream socket pair handed over as a file descriptor, so it has no
//! name on the host. The guest's serial console and QEMU's own messages go to
//! the console log, which the host opens: QEMU writes no file of its own.

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

/// How often a dialling link end tries again while the other VM restarts.
const LINK_RECONNECT_MS: u32 = 100;

/// First descriptor number the NIC sockets get in QEMU.
const FIRST_NIC_FD: RawFd = 3;
const QMP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Qemu {
    pub binary: PathBuf,
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
    push(&[
        "-machine",
        &format!("q35,accel={},memory-backend=mem", spec.accel.name()),
    ]);
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
        let ro = if d.read_only { "on" } else { "off" };
        push(&[
            "-drive",
            &format!(
                "file={},if=none,id=disk{i},format=raw,readonly={ro}",
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
        let mut cmd = Command::new(&self.binary);
        cmd.args(args(&spec))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&spec.dir);
        crate::accel::drop_privileges(&mut cmd, (spec.uid, spec.gid), spec.groups.clone());
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

fn describe_exit(s: std::process::ExitStatus) -> String {
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

/// Run one QMP command on a fresh connection, bounded by [`QMP_TIMEOUT`].
fn qmp_call<C: qapi::Command>(vm: &str, sock: &Path, cmd: &C) -> Result<C::Ok, VmmError> {
    let err = |detail: String| VmmError::Control {
        vm: vm.to_owned(),
        detail,
    };
    let stream = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| err(format!("{}: {e}", sock.display())))?;
    stream
        .set_read_timeout(Some(QMP_TIMEOUT))
        .map_err(|e| err(e.to_string()))?;
    stream
        .set_write_timeout(Some(QMP_TIMEOUT))
        .map_err(|e| err(e.to_string()))?;
    // qapi's handshake panics on EOF; contain that to this call.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut qmp = qapi::Qmp::from_stream(&stream);
        qmp.handshake().map_err(|e| e.to_string())?;
        qmp.execute(cmd).map_err(|e| e.to_string())
    }));
    match res {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err("QMP connection closed during the handshake".into())),
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

    fn quit(&self) -> Result<(), VmmError> {
        qmp_call(&self.name, &self.qmp, &qapi::qmp::quit {}).map(|_| ())
    }

    fn kill(&self) {
        match &self.end {
            End::Adopted(p) => p.kill(),
            End::Child(_) if self.exited().is_none() => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
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
            console_log: "/var/log/x.log".into(),
            identity: Identity {
                cpu_model: "qemu64".into(),
                system_uuid: "5c1d2c2a-6f1e-4d39-9a7c-0d0000000002".into(),
                manufacturer: "M".into(),
                product: "P".into(),
            },
        }
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn command_line_is_locked_down() {
        let a = args(&spec());
        assert!(a.contains(&"-nodefaults".to_string()));
        assert!(a.contains(&"-no-user-config".to_string()));
        assert_eq!(after(&a, "-cpu"), ["qemu64"]);
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
        assert_eq!(after(&a, "-machine"), ["q35,accel=tcg,memory-backend=mem"]);
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
        torvm.nics = vec![
            Nic {
                mac: "00:55:44:33:22:11".into(),
                link: NicLink::StreamConnect("/run/x/link/internal.sock".into()),
            },
            Nic {
                mac: "52:54:00:12:34:56".into(),
                link: NicLink::User,
            },
        ];
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
