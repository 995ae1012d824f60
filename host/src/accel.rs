//! Which accelerator QEMU gets: KVM only where it really boots our kernel.
//!
//! `/dev/kvm` can exist and even run a few instructions while a real guest
//! hangs (nested set-ups without full hardware support, as on our CI). So
//! the probe has two steps: a 9-byte real-mode guest run through kvm-ioctls
//! in a child process (cheap, rules out the obvious), then a real boot of the
//! image's kernel with an initramfs that only powers off, under QEMU with
//! KVM, as the VM's own user, with a deadline. The verdict of the second step
//! is cached per host kernel, QEMU binary and guest kernel, so only the first
//! `up` on a machine pays for it.

use crate::paths::Paths;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How long a KVM boot to power-off may take before KVM is declared broken.
const BOOT_PROBE: Duration = Duration::from_secs(20);

/// Run `cmd` with a deadline; true if it exited 0 in time.
fn succeeds_within(cmd: &mut Command, limit: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let start = Instant::now();
    while start.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// What the boot probe's verdict depends on.
fn probe_key(qemu: &Path, vmlinux: &Path) -> String {
    let uname = nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {}",
                u.release().to_string_lossy(),
                u.version().to_string_lossy()
            )
        })
        .unwrap_or_default();
    let stamp = |p: &Path| {
        p.metadata()
            .map(|m| format!("{}:{}:{}", p.display(), m.size(), m.mtime()))
            .unwrap_or_default()
    };
    // Who may open /dev/kvm decides too (the VM users reach it through a group).
    let dev = Path::new("/dev/kvm")
        .metadata()
        .map(|m| format!("{:o}:{}:{}", m.mode(), m.uid(), m.gid()))
        .unwrap_or_else(|_| "absent".into());
    format!("{uname}|{dev}|{}|{}", stamp(qemu), stamp(vmlinux))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Verdict {
    key: String,
    accel: Accel,
}

/// Decide the accelerator for VMs run as `user` (uid, gid, groups).
/// `TAILS_SERVER_ACCEL=kvm|tcg` forces it.
pub fn detect(
    paths: &Paths,
    qemu: &Path,
    vmlinux: &Path,
    user: (u32, u32),
    groups: &[u32],
) -> Accel {
    match std::env::var("TAILS_SERVER_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let key = probe_key(qemu, vmlinux);
    let cache = paths.accel_cache();
    if let Ok(Ok(v)) = std::fs::read(&cache).map(|b| serde_json::from_slice::<Verdict>(&b)) {
        if v.key == key {
            return v.accel;
        }
    }
    let Ok(exe) = std::env::current_exe() else {
        return Accel::Tcg;
    };
    if !succeeds_within(Command::new(exe).arg("probe-kvm"), Duration::from_secs(3)) {
        return Accel::Tcg;
    }
    let accel = if boot_probe(paths, qemu, vmlinux, user, groups) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    if let Ok(j) = serde_json::to_vec(&Verdict { key, accel }) {
        let _ = std::fs::write(&cache, j);
    }
    accel
}

/// Boot `vmlinux` to power-off under KVM as the VM user.
fn boot_probe(
    paths: &Paths,
    qemu: &Path,
    vmlinux: &Path,
    user: (u32, u32),
    groups: &[u32],
) -> bool {
    let initrd = paths.runtime.join("kvm-probe.cpio");
    if tails_images::initramfs::write_poweroff(&initrd).is_err() {
        return false;
    }
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-machine", "q35,accel=kvm", "-cpu", "qemu64", "-m", "128M"])
    .arg("-kernel")
    .arg(vmlinux)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", "console=ttyS0 quiet panic=-1", "-serial", "null"])
    .env_clear();
    drop_privileges(&mut cmd, user, groups.to_vec());
    let ok = succeeds_within(&mut cmd, BOOT_PROBE);
    let _ = std::fs::remove_file(&initrd);
    ok
}

/// Make `cmd` run as `user` with exactly the supplementary `groups`.
pub fn drop_privileges(cmd: &mut Command, user: (u32, u32), groups: Vec<u32>) {
    // SAFETY: only async-signal-safe system calls run in the child.
    unsafe {
        cmd.pre_exec(move || {
            let gids: Vec<libc::gid_t> = groups.clone();
            if libc::setgroups(gids.len(), gids.as_ptr()) < 0
                || libc::setgid(user.1) < 0
                || libc::setuid(user.0) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The group that may open /dev/kvm, if the host has one.
pub fn kvm_group() -> Option<u32> {
    nix::unistd::Group::from_name("kvm")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Can KVM on this host run a guest at a TSC frequency of our choosing
/// (`KVM_CAP_TSC_CONTROL`)? Asked only when KVM is used.
pub fn tsc_scaling() -> bool {
    kvm_ioctls::Kvm::new()
        .map(|k| k.check_extension(kvm_ioctls::Cap::TscControl))
        .unwrap_or(false)
}

/// The probe's first step (runs in a child): Ok when a vCPU executed our code.
pub fn probe_kvm() -> Result<(), String> {
    use kvm_bindings::kvm_userspace_memory_region;
    use kvm_ioctls::{Kvm, VcpuExit};

    const GUEST_ADDR: u64 = 0x1000;
    const MEM_SIZE: usize = 0x4000;
    // mov dx, 0x3f8; mov al, 'K'; out dx, al; hlt
    const CODE: [u8; 8] = [0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xf4, 0xf4];

    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("create vm: {e}"))?;
    // SAFETY: anonymous private mapping of MEM_SIZE bytes; checked for failure.
    let mem = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if mem == libc::MAP_FAILED {
        return Err("mmap failed".into());
    }
    // SAFETY: `mem` is a fresh mapping of MEM_SIZE >= CODE.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(CODE.as_ptr(), mem as *mut u8, CODE.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDR,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem as u64,
        flags: 0,
    };
    // SAFETY: the mapping stays alive until the process exits.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("memory region: {e}"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("create vcpu: {e}"))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| e.to_string())?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    let mut regs = vcpu.get_regs().map_err(|e| e.to_string())?;
    regs.rip = GUEST_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
    let mut saw_out = false;
    for _ in 0..4 {
        match vcpu.run().map_err(|e| format!("run: {e}"))? {
            VcpuExit::IoOut(0x3f8, data) if data == [b'K'] => saw_out = true,
            VcpuExit::Hlt if saw_out => return Ok(()),
            other => return Err(format!("unexpected exit {other:?}")),
        }
    }
    Err("guest did not halt".into())
}
