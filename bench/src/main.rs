//! Benchmarks, each printed with its baseline measured in the same run.
//!
//! `boot`: time from `tails-server up` to both agents ready, against a bare
//! QEMU boot of the same kernel (same machine options and accelerator) with
//! an initramfs whose init only powers off. Target: ratio ≤ 1.15.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// The accelerator `tails-server` would use.
fn accel(bin: &Path) -> Result<&'static str> {
    if let Ok(a) = std::env::var("TAILS_SERVER_ACCEL") {
        return Ok(if a == "kvm" { "kvm" } else { "tcg" });
    }
    let mut child = Command::new(bin)
        .arg("probe-kvm")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Some(s) = child.try_wait()? {
            return Ok(if s.success() { "kvm" } else { "tcg" });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok("tcg")
}

fn bare_boot(vmlinux: &Path, initrd: &Path, accel: &str) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args([
            "-machine",
            &format!("q35,accel={accel},memory-backend=mem"),
            "-cpu",
            "qemu64",
            "-m",
            "128M",
        ])
        .args(["-object", "memory-backend-memfd,id=mem,size=128M,share=on"])
        .arg("-kernel")
        .arg(vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 oops=panic i8042.noaux i8042.nokbd i8042.nopnp",
        ])
        .args(["-serial", "null"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("bare QEMU boot failed: {status}");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn up_time(bin: &Path) -> Result<f64> {
    run_ok(Command::new(bin).arg("down"))?;
    let start = Instant::now();
    run_ok(Command::new(bin).arg("up"))?;
    let t = start.elapsed().as_secs_f64();
    run_ok(Command::new(bin).arg("down"))?;
    Ok(t)
}

fn boot(bin: &Path, runs: u32) -> Result<()> {
    let dir = run_ok(Command::new(bin).args(["image", "show"]))?;
    let vmlinux = Path::new(dir.trim()).join(tails_images::VMLINUX);
    let accel = accel(bin)?;
    let initrd =
        std::env::temp_dir().join(format!("tails-bench-poweroff-{}.cpio", std::process::id()));
    tails_images::initramfs::write_poweroff(&initrd)?;
    let mut bare = Vec::new();
    let mut up = Vec::new();
    // Interleave, so that both see the same machine load.
    for i in 0..runs {
        let b = bare_boot(&vmlinux, &initrd, accel)?;
        let u = up_time(bin)?;
        eprintln!("run {}: bare boot {b:.2} s, up {u:.2} s", i + 1);
        bare.push(b);
        up.push(u);
    }
    let _ = std::fs::remove_file(&initrd);
    let (b, u) = (median(bare), median(up));
    println!("accelerator: {accel}, runs: {runs} (medians)");
    println!("bare QEMU boot of the same kernel to power-off: {b:.2} s");
    println!("tails-server up to both agents ready:           {u:.2} s");
    println!("ratio: {:.2} (target <= 1.15)", u / b);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Bench::Boot { runs } => boot(&cli.bin, runs),
    }
}
