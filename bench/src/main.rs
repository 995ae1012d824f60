//! Benchmarks, each printed with its baseline measured in the same run.
//!
//! `boot`: time from `tails-server up` to both agents ready, against two
//! bare QEMU boots at once of the same kernel (same machine options,
//! accelerator and memory sizes) with an initramfs whose init only powers
//! off. Target: ratio ≤ 1.15. It also prints the ratio to one bare boot, and
//! where each guest's time goes (see [`phases`]).
//!
//! `onion`: see [`onion`].
//!
//! `recovery`: see [`recovery`].
//!
//! `services`: see [`services`].
//!
//! `disk`: see [`disk`].
//!
//! `transfer`: see [`transfer`].
//!
//! `memory`: see [`memory`].

mod disk;
mod memory;
mod onion;
mod phases;
mod recovery;
mod services;
mod transfer;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tails_server::accel::Accel;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Bench,
    /// The tails-server binary to measure.
    #[arg(long, default_value = "/usr/local/bin/tails-server", global = true)]
    bin: PathBuf,
}

#[derive(Subcommand)]
enum Bench {
    /// `up` to both agents ready vs a bare boot of the same kernel.
    Boot {
        /// Runs of each; the median is reported.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        runs: u32,
    },
    /// `nginx enable` to the first authorized page vs a plain tor publishing
    /// the same kind of service, on the testnet.
    Onion {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        runs: u32,
    },
    /// Each kill (Tor VM, App VM, the App VM's vsock backend, daemon) to the first
    /// answer again vs a cold `up` + `enable`, on the testnet.
    Recovery {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
        runs: u32,
    },
    /// Each service's `enable` to its client's first success through Tor vs
    /// nginx's, on the testnet.
    Services {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
        runs: u32,
    },
    /// 256 MiB written and read by the App VM on its persistent disk vs the
    /// same on a raw file of the host's (no network needed).
    Disk {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
        runs: u32,
    },
    /// 20 MiB through the App VM's nginx onion service vs a plain tor's on
    /// the host, to the same testnet client; then the internal link and
    /// vsock alone.
    Transfer {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
        runs: u32,
    },
    /// The smallest guest RAM of each VM that boots and serves (bisection),
    /// and the host's RSS of the QEMUs and vsock backends, on the testnet.
    Memory {
        /// The smallest size tried, in MiB.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(48..=512))]
        floor: u32,
    },
}

/// Whatever runs taken down, then the testnet and a stack on it keeping its
/// state in `state` (fresh), with `page` where the App VM's nginx serves it.
fn stack_on_testnet(bin: &Path, state: &str, page: &str) -> Result<()> {
    stack_down(bin, state);
    run_ok(Command::new(bin).args(["testnet", "up"]))?;
    let ts = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.args(args).env("TAILS_SERVER_STATE_DIR", state);
        c
    };
    run_ok(&mut ts(&["up", "--network", "local"]))?;
    let script = tails_tests::page_script(page);
    run_ok(&mut ts(&["exec", "appvm", "--", "sh", "-c", &script]))?;
    Ok(())
}

/// The stack and the testnet down, `state` removed (errors ignored: nothing
/// may run).
fn stack_down(bin: &Path, state: &str) {
    let _ = run_ok(Command::new(bin).arg("down"));
    let _ = run_ok(Command::new(bin).args(["testnet", "down"]));
    let _ = std::fs::remove_dir_all(state);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `-cpu` argument the stack gives `role`'s VM under `accel`.
fn cpu_of(role: tails_proto::Role, accel: Accel) -> String {
    let tsc = accel == Accel::Kvm && tails_server::accel::tsc_scaling();
    tails_server::vmm::qemu::vm_cpu_arg(role, accel, tsc)
}

/// The bare QEMU command: same machine options, CPU (`role`'s) and kernel
/// command line as the stack's VMs.
fn bare_cmd(
    vmlinux: &Path,
    initrd: &Path,
    accel: Accel,
    mem: &str,
    role: tails_proto::Role,
) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args([
        "-machine",
        &format!("{},memory-backend=mem", tails_server::vmm::qemu::MACHINE),
        "-accel",
        &tails_server::vmm::qemu::accel_arg(accel),
        "-cpu",
        &cpu_of(role, accel),
        "-m",
        mem,
    ])
    .args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
    ])
    .arg("-kernel")
    .arg(vmlinux)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        "console=ttyS0 quiet panic=-1 oops=panic i8042.noaux i8042.nokbd i8042.nopnp",
    ])
    .args(["-serial", "null"])
    .stdout(Stdio::null());
    c
}

/// Two bare boots at once (192 MiB and 512 MiB, like the Tor VM and the App
/// VM), timed until both powered off: the same load shape as `up`.
fn bare_pair(vmlinux: &Path, initrd: &Path, accel: Accel) -> Result<f64> {
    let start = Instant::now();
    let mut a = bare_cmd(vmlinux, initrd, accel, "192M", tails_proto::Role::Torvm).spawn()?;
    let mut b = bare_cmd(vmlinux, initrd, accel, "512M", tails_proto::Role::Appvm).spawn()?;
    let (sa, sb) = (a.wait()?, b.wait()?);
    if !sa.success() || !sb.success() {
        bail!("bare QEMU boot failed: {sa}, {sb}");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn bare_boot(vmlinux: &Path, initrd: &Path, accel: Accel) -> Result<f64> {
    let start = Instant::now();
    let status = bare_cmd(vmlinux, initrd, accel, "128M", tails_proto::Role::Appvm).status()?;
    if !status.success() {
        bail!("bare QEMU boot failed: {status}");
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The VMs, in the order of the phase table's columns.
const VMS: [&str; 2] = ["torvm", "appvm"];

/// Each VM's phase durations of its last boot (see [`phases`]) and the uptime
/// at which its agent listened.
type Phases = [(Vec<Option<f64>>, Option<f64>); 2];

/// Time `up` to both agents ready; also returns the accelerator it chose and
/// where the guests' time went.
fn up_time(bin: &Path) -> Result<(f64, Accel, Phases)> {
    run_ok(Command::new(bin).arg("down"))?;
    let start = Instant::now();
    run_ok(Command::new(bin).args(["up", "--network", "none"]))?;
    let t = start.elapsed().as_secs_f64();
    let status = run_ok(Command::new(bin).args(["status", "--json"]))?;
    let paths = tails_server::Paths::from_env();
    let phases = VMS.map(|vm| {
        let log = std::fs::read_to_string(paths.console_log(vm)).unwrap_or_default();
        (phases::durations(&log), phases::ready_at(&log))
    });
    run_ok(Command::new(bin).arg("down"))?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let accel = serde_json::from_value(status["accel"].clone())
        .with_context(|| format!("status names no accelerator: {}", status["accel"]))?;
    Ok((t, accel, phases))
}

/// The median of what is there (`None` if nothing is).
fn median_of(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| median(v))
}

/// Prints the median of each phase in each VM over `runs`, as a Markdown
/// table (the README keeps it), and what is left outside the guests.
fn print_phases(runs: &[Phases], up: f64) {
    let cell = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.2} s"));
    println!();
    println!("| phase (guest uptime, medians) | Tor VM | App VM |");
    println!("|---|---|---|");
    for (i, (name, _)) in phases::PHASES.iter().enumerate() {
        let m = |vm: usize| median_of(runs.iter().map(|r| r[vm].0.get(i).copied().flatten()));
        println!("| {name} | {} | {} |", cell(m(0)), cell(m(1)));
    }
    let ready = |vm: usize| median_of(runs.iter().map(|r| r[vm].1));
    println!(
        "| **agent ready (uptime)** | **{}** | **{}** |",
        cell(ready(0)),
        cell(ready(1))
    );
    let last = ready(0).into_iter().chain(ready(1)).reduce(f64::max);
    println!(
        "| outside the guests: QEMU start, firmware, host's waits (`up` − later agent) | {} | |",
        cell(last.map(|l| up - l))
    );
}

fn boot(bin: &Path, runs: u32) -> Result<()> {
    let dir = run_ok(Command::new(bin).args(["image", "show"]))?;
    let vmlinux = Path::new(dir.trim()).join(tails_images::VMLINUX);
    let initrd =
        std::env::temp_dir().join(format!("tails-bench-poweroff-{}.cpio", std::process::id()));
    tails_images::initramfs::write_poweroff(&initrd)?;
    let mut bare = Vec::new();
    let mut pair = Vec::new();
    let mut up = Vec::new();
    let mut phases = Vec::new();
    // One `up` first, not counted: after `setup.sh` the daemon's first
    // stack on new images probes KVM again and reads cold files.
    eprintln!("warm-up run (not counted)");
    up_time(bin)?;
    // Interleave, so that both see the same machine load.
    let mut accel = None;
    for i in 0..runs {
        // The baseline runs with the accelerator the daemon chose.
        let (u, a, ph) = up_time(bin)?;
        accel = Some(a);
        phases.push(ph);
        let b = bare_boot(&vmlinux, &initrd, a)?;
        let p = bare_pair(&vmlinux, &initrd, a)?;
        eprintln!(
            "run {}: bare boot {b:.2} s, two bare boots {p:.2} s, up {u:.2} s",
            i + 1
        );
        bare.push(b);
        pair.push(p);
        up.push(u);
    }
    let _ = std::fs::remove_file(&initrd);
    let (b, p, u) = (median(bare), median(pair), median(up));
    let accel = accel.map_or("none", Accel::name);
    println!("accelerator: {accel}, runs: {runs} (medians)");
    println!("bare QEMU boot of the same kernel to power-off:       {b:.2} s");
    println!("two such bare boots at once (Tor VM + App VM sizes):  {p:.2} s");
    println!("tails-server up to both agents ready:                 {u:.2} s");
    // Issue 14's measure: `up` against two bare boots at once (the same
    // load shape); the single boot is shown for comparison.
    println!("ratio up / two bare boots: {:.2} (target <= 1.15)", u / p);
    println!("ratio up / one bare boot:  {:.2}", u / b);
    print_phases(&phases, u);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Bench::Boot { runs } => boot(&cli.bin, runs),
        Bench::Onion { runs } => onion::run(&cli.bin, runs),
        Bench::Recovery { runs } => recovery::run(&cli.bin, runs),
        Bench::Services { runs } => services::run(&cli.bin, runs),
        Bench::Disk { runs } => disk::run(&cli.bin, runs),
        Bench::Transfer { runs } => transfer::run(&cli.bin, runs),
        Bench::Memory { floor } => memory::run(&cli.bin, floor),
    }
}
