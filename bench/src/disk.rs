//! `disk`: sequential write (fsync'ed) then read (after dropping the page
//! cache) of 256 MiB by the App VM on its persistent data disk, against the
//! same on a raw file on the host's own disk, in the same run. Target:
//! ratio ≥ 0.5 under TCG.
//!
//! The App VM's disk path is the whole stack of persistence: the guest's
//! ext4 on virtio-blk, QEMU's writes to `appvm.img` in the store's ext4, the
//! loop device, qemu-storage-daemon's FUSE export and its LUKS layer, the
//! container file on the host's disk. The guest's figures are timed inside
//! the guest (its clock runs at its own rate, not the host's: they are
//! compared to a host wall clock over the same amount of data).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{median, run_ok};

const DIR: &str = "/run/ts-bench-disk";
const STATE: &str = "/run/ts-bench-disk/state";
const MIB: u64 = 256;
const PASS: &str = "a passphrase for the disk benchmark only";

fn ts(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("TAILS_SERVER_STATE_DIR", STATE)
        .env("TAILS_SERVER_STORE", format!("{DIR}/store.luks"));
    c
}

/// Seconds of `dd` writing then reading `MIB` MiB at `file`, with `sh`
/// running the script (the host's shell, or the App VM's through exec).
fn dd_script(file: &str) -> String {
    format!(
        "set -e; t0=$(date +%s.%N); dd if=/dev/zero of={file} bs=1M count={MIB} conv=fsync status=none; \
         t1=$(date +%s.%N); sync; echo 3 > /proc/sys/vm/drop_caches; t2=$(date +%s.%N); \
         dd if={file} of=/dev/null bs=1M status=none; t3=$(date +%s.%N); rm -f {file}; sync; \
         echo \"$t0 $t1 $t2 $t3\""
    )
}

/// (write, read) seconds from the script's four timestamps.
fn parse(out: &str) -> Result<(f64, f64)> {
    let t: Vec<f64> = out
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("timestamps: {out:?}"))?;
    if t.len() != 4 {
        bail!("four timestamps expected: {out:?}");
    }
    Ok((t[1] - t[0], t[3] - t[2]))
}

/// The App VM's data disk, formatted and mounted on /mnt/bench (by the
/// benchmark: no persistent service is needed for it).
const MOUNT: &str = "d=; for b in /sys/block/vd*; do [ \"$(cat $b/serial)\" = tails-appvm-data ] && d=/dev/${b##*/}; done; \
    [ -n \"$d\" ]; mkdir -p /mnt/bench; mountpoint -q /mnt/bench || { \
    [ \"$(head -c 65536 $d | tr -d '\\000' | head -c 1 | wc -c)\" = 0 ] && mkfs.ext4 -q -m 0 $d; \
    mount -o nosuid,nodev $d /mnt/bench; }";

/// The stack down (locking the store) and the benchmark's files gone.
fn clean(bin: &Path) {
    let _ = ts(bin, &["down"]).output();
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("umount {STATE}/amnesic 2>/dev/null; rm -rf {DIR}"),
        ])
        .status();
}

pub fn run(bin: &Path, runs: u32) -> Result<()> {
    clean(bin);
    std::fs::create_dir_all(DIR)?;
    let pass = format!("{DIR}/pass");
    std::fs::write(&pass, format!("{PASS}\n"))?;
    run_ok(&mut ts(
        bin,
        &[
            "persistence",
            "create",
            "--size-mib",
            "768",
            "--passphrase-file",
            &pass,
        ],
    ))?;
    run_ok(&mut ts(
        bin,
        &["persistence", "unlock", "--passphrase-file", &pass],
    ))?;
    run_ok(&mut ts(bin, &["up", "--network", "none"]))?;
    run_ok(&mut ts(bin, &["exec", "appvm", "--", "sh", "-c", MOUNT]))?;
    let host_file = format!("/var/tmp/ts-bench-disk-{}", std::process::id());
    let (mut vw, mut vr, mut hw, mut hr) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let out = run_ok(&mut ts(
            bin,
            &[
                "exec",
                "appvm",
                "--timeout",
                "600",
                "--",
                "sh",
                "-c",
                &dd_script("/mnt/bench/f"),
            ],
        ))?;
        let (w, r) = parse(&out)?;
        let t0 = Instant::now();
        let host = run_ok(Command::new("sh").args(["-c", &dd_script(&host_file)]))?;
        let (h_w, h_r) = parse(&host)?;
        let wall = t0.elapsed().as_secs_f64();
        eprintln!(
            "run {}: App VM write {w:.2} s read {r:.2} s; host raw file write {h_w:.2} s read {h_r:.2} s ({wall:.1} s in all)",
            i + 1
        );
        vw.push(w);
        vr.push(r);
        hw.push(h_w);
        hr.push(h_r);
    }
    clean(bin);
    let mb = |s: f64| MIB as f64 / s;
    let (vw, vr, hw, hr) = (median(vw), median(vr), median(hw), median(hr));
    println!("{MIB} MiB sequential, runs: {runs} (medians)");
    println!(
        "host raw file:            write {:7.1} MiB/s, read {:7.1} MiB/s",
        mb(hw),
        mb(hr)
    );
    println!(
        "App VM persistent disk:   write {:7.1} MiB/s, read {:7.1} MiB/s",
        mb(vw),
        mb(vr)
    );
    println!(
        "ratio App VM / host:      write {:.2}, read {:.2} (target >= 0.5)",
        hw / vw,
        hr / vr
    );
    Ok(())
}
