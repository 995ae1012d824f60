//! Which accelerator QEMU gets: KVM only where it really runs a guest.
//!
//! `/dev/kvm` can exist and answer ioctls while running a vCPU hangs or fails
//! (nested set-ups without hardware support). So the probe runs a real
//! 9-byte real-mode guest (`out` then `hlt`) in a child process with a
//! deadline; anything but the expected exits means TCG.

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

/// Decide the accelerator: `TAILS_SERVER_ACCEL=kvm|tcg` forces it, otherwise
/// the probe decides. The probe runs `<this exe> probe-kvm` for at most 3 s.
pub fn detect() -> Accel {
    match std::env::var("TAILS_SERVER_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let Ok(exe) = std::env::current_exe() else {
        return Accel::Tcg;
    };
    let Ok(mut child) = Command::new(exe)
        .arg("probe-kvm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Accel::Tcg;
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Accel::Kvm,
            Ok(Some(_)) | Err(_) => return Accel::Tcg,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Accel::Tcg
}

/// The probe itself (runs in the child): Ok when a vCPU executed our code.
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
