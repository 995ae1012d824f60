//! `memory`: the guest RAM each VM needs, found by bisection: the smallest
//! size (in steps of 8 MiB) at which `up --network local` on the testnet
//! and an `enable` of nginx with a fetch of its page by an authorized
//! client both succeed, the other VM keeping its default size. Also the
//! host's RSS of each QEMU and of each vhost-device-vsock while nginx
//! serves, at the defaults and at the sizes found. Printed against the
//! targets (Tor VM ≤ 128 MiB, App VM ≤ 256 MiB) and against Whonix's
//! documented minimums (Gateway 512 MiB, Workstation 2 GiB).
//!
//! The sizes reach the daemon as `TAILS_SERVER_TORVM_MIB` /
//! `TAILS_SERVER_APPVM_MIB`; every trial is a fresh daemon (`down` stops
//! it), and the size the VM really got is read back from `status`.
//!
//! The testnet's directory is tiny: a tor on the public network holds a
//! consensus and microdescriptors of some 7000 relays (tens of MiB more),
//! so the Tor VM's default keeps room above what is found here.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run_ok;
use tails_server::paths::Paths;

const STATE: &str = "/run/ts-bench-memory-state";
const PAGE: &str = "tails-server memory benchmark page";
/// Granularity of the bisection.
const STEP: u32 = 8;
/// Whonix's documented minimums (Gateway, Workstation), in MiB.
const WHONIX_GATEWAY: u32 = 512;
const WHONIX_WORKSTATION: u32 = 2048;
/// A healthy trial takes well under a minute under TCG; a guest that
/// thrashes is given up on after this.
const TRIAL_LIMIT: Duration = Duration::from_secs(150);

/// Host RSS (MiB) of the stack's processes while serving.
#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    torvm_qemu: f64,
    appvm_qemu: f64,
    torvm_vsock: f64,
    appvm_vsock: f64,
}

/// `cmd` with the trial's environment.
fn ts(bin: &Path, sizes: (u32, u32), args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("TAILS_SERVER_STATE_DIR", STATE)
        .env("TAILS_SERVER_TORVM_MIB", sizes.0.to_string())
        .env("TAILS_SERVER_APPVM_MIB", sizes.1.to_string());
    c
}

/// Run `cmd` for at most `limit`; its stdout, or why it failed.
fn run_within(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer in {} s", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.trim().lines().last().unwrap_or("failed").to_owned())
    }
}

/// The last line of a VM's console that tells why it failed, if any.
fn console_hint(vm: &str) -> Option<String> {
    let log = std::fs::read_to_string(Paths::from_env().console_log(vm)).ok()?;
    log.lines()
        .rev()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("out of memory")
                || l.contains("oom")
                || l.contains("panic")
                || l.contains("unable to")
        })
        .map(|l| l.trim().chars().take(160).collect())
}

/// VmRSS of `pid`, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The pid of the process whose argv has `exe` as its program's file name
/// and an argument containing `needle`. (Not the pids of the daemon's state
/// file or of `status`: those are each VM's jailer, whose child QEMU is.)
fn pid_of(exe: &str, needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut args = argv.split(|b| *b == 0).map(String::from_utf8_lossy);
        let prog = args.next()?;
        (Path::new(prog.as_ref()).file_name()?.to_str()? == exe && args.any(|a| a.contains(needle)))
            .then_some(pid)
    })
}

fn rss_now() -> Result<Rss> {
    let get = |exe: &str, needle: &str| {
        pid_of(exe, needle)
            .and_then(rss_mib)
            .with_context(|| format!("no running {exe} with {needle:?} in its arguments"))
    };
    Ok(Rss {
        torvm_qemu: get("qemu-system-x86_64", "torvm,")?,
        appvm_qemu: get("qemu-system-x86_64", "appvm,")?,
        torvm_vsock: get("vhost-device-vsock", "/torvm/")?,
        appvm_vsock: get("vhost-device-vsock", "/appvm/")?,
    })
}

/// One trial: `up`, the page, `enable`, a fetch by an authorized client;
/// then `down`. `Ok(Some(rss))` if all succeeded, `Ok(None)` if the VMs
/// could not boot or serve with these sizes (said on stderr), `Err` if the
/// benchmark itself is broken.
fn trial(bin: &Path, sizes: (u32, u32)) -> Result<Option<Rss>> {
    let _ = run_ok(Command::new(bin).arg("down"));
    let _ = std::fs::remove_dir_all(STATE);
    let t0 = Instant::now();
    let outcome = (|| -> Result<Result<Rss, String>> {
        if let Err(e) = run_within(
            &mut ts(bin, sizes, &["up", "--network", "local"]),
            TRIAL_LIMIT,
        ) {
            return Ok(Err(format!("up: {e}")));
        }
        // The size the VMs really have: the knob must have reached them.
        let status = run_ok(&mut ts(bin, sizes, &["status", "--json"]))?;
        let status: serde_json::Value = serde_json::from_str(&status)?;
        for (vm, want) in [("torvm", sizes.0), ("appvm", sizes.1)] {
            let got = status["vms"]
                .as_array()
                .and_then(|vms| vms.iter().find(|v| v["name"] == vm))
                .and_then(|v| v["memory_mib"].as_u64());
            if got != Some(u64::from(want)) {
                bail!("{vm} was asked for {want} MiB but status says {got:?}: {status}");
            }
        }
        let script = tails_tests::page_script(PAGE);
        if let Err(e) = run_within(
            &mut ts(bin, sizes, &["exec", "appvm", "--", "sh", "-c", &script]),
            TRIAL_LIMIT,
        ) {
            return Ok(Err(format!("writing the page: {e}")));
        }
        let out = match run_within(&mut ts(bin, sizes, &["nginx", "enable"]), TRIAL_LIMIT) {
            Ok(o) => o,
            Err(e) => return Ok(Err(format!("nginx enable: {e}"))),
        };
        let address = tails_tests::yaml_field(&out, "address");
        let auth = tails_tests::yaml_field(&out, "auth-private");
        match crate::onion::fetch(bin, &address, &auth) {
            Ok(body) if body.contains(PAGE) => {}
            Ok(body) => bail!(
                "the fetch gave another page: {}",
                body.chars().take(200).collect::<String>()
            ),
            Err(e) => return Ok(Err(format!("fetch: {e:#}"))),
        }
        Ok(Ok(rss_now()?))
    })();
    let hints: Vec<String> = ["torvm", "appvm"]
        .iter()
        .filter_map(|vm| console_hint(vm).map(|h| format!("{vm}: {h}")))
        .collect();
    let _ = run_ok(Command::new(bin).arg("down"));
    let secs = t0.elapsed().as_secs_f64();
    match outcome? {
        Ok(rss) => {
            eprintln!(
                "  Tor VM {:>4} MiB, App VM {:>4} MiB: serves ({secs:.0} s)",
                sizes.0, sizes.1
            );
            Ok(Some(rss))
        }
        Err(why) => {
            eprintln!(
                "  Tor VM {:>4} MiB, App VM {:>4} MiB: fails ({secs:.0} s): {why}{}",
                sizes.0,
                sizes.1,
                if hints.is_empty() {
                    String::new()
                } else {
                    format!(" [console: {}]", hints.join("; "))
                }
            );
            Ok(None)
        }
    }
}

/// The smallest size in `lo..=hi` (multiples of [`STEP`]) for which `ok`
/// holds, assuming it holds for every size above one that passes; `hi`
/// must pass. With what it measured at that size.
fn smallest(
    lo: u32,
    hi: u32,
    mut ok: impl FnMut(u32) -> Result<Option<Rss>>,
) -> Result<(u32, Rss)> {
    let Some(mut best) = ok(hi)? else {
        bail!("the default size {hi} MiB itself fails: see the lines above");
    };
    if let Some(r) = ok(lo)? {
        return Ok((lo, r));
    }
    let (mut bad, mut good) = (lo, hi);
    while good - bad > STEP {
        let mid = (bad + good) / 2 / STEP * STEP;
        let mid = if mid <= bad { bad + STEP } else { mid };
        match ok(mid)? {
            Some(r) => {
                good = mid;
                best = r;
            }
            None => bad = mid,
        }
    }
    Ok((good, best))
}

pub fn run(bin: &Path, floor: u32) -> Result<()> {
    let _ = run_ok(Command::new(bin).arg("down"));
    run_ok(Command::new(bin).args(["testnet", "up"]))?;
    let d = tails_server::stack::Memory::DEFAULT;
    eprintln!(
        "defaults (Tor VM {} MiB, App VM {} MiB), then the Tor VM bisected:",
        d.torvm, d.appvm
    );
    let tor = smallest(floor, d.torvm, |m| trial(bin, (m, d.appvm)));
    let tor = match tor {
        Ok(t) => t,
        Err(e) => {
            let _ = run_ok(Command::new(bin).args(["testnet", "down"]));
            return Err(e);
        }
    };
    eprintln!("the App VM bisected:");
    let app = smallest(floor, d.appvm, |m| trial(bin, (d.torvm, m)));
    let at_default = trial(bin, (d.torvm, d.appvm));
    let _ = run_ok(Command::new(bin).args(["testnet", "down"]));
    let _ = std::fs::remove_dir_all(STATE);
    let (app, at_default) = (app?, at_default?);
    let def = at_default.context("the defaults failed on the last trial: see above")?;
    println!("smallest guest RAM that boots and serves (up, enable nginx, an authorized fetch through the testnet; steps of {STEP} MiB):");
    // A size found at the floor is only an upper bound.
    let floor_note = |m: u32| {
        if m == floor {
            " (the floor tried: it may need less)"
        } else {
            ""
        }
    };
    println!(
        "  Tor VM: {:>4} MiB{}  (default {}; target <= 128; Whonix Gateway's minimum {WHONIX_GATEWAY} MiB, ratio {:.2})",
        tor.0,
        floor_note(tor.0),
        d.torvm,
        f64::from(tor.0) / f64::from(WHONIX_GATEWAY)
    );
    println!(
        "  App VM: {:>4} MiB{}  (default {}; target <= 256; Whonix Workstation's minimum {WHONIX_WORKSTATION} MiB, ratio {:.2})",
        app.0,
        floor_note(app.0),
        d.appvm,
        f64::from(app.0) / f64::from(WHONIX_WORKSTATION)
    );
    println!(
        "host RSS while serving (MiB):   at the defaults   Tor VM at {} / App VM at {}",
        tor.0, app.0
    );
    for (what, a, b) in [
        ("Tor VM QEMU", def.torvm_qemu, tor.1.torvm_qemu),
        ("App VM QEMU", def.appvm_qemu, app.1.appvm_qemu),
        (
            "Tor VM vhost-device-vsock",
            def.torvm_vsock,
            tor.1.torvm_vsock,
        ),
        (
            "App VM vhost-device-vsock",
            def.appvm_vsock,
            app.1.appvm_vsock,
        ),
    ] {
        println!("  {what:<28} {a:>8.1}        {b:>8.1}");
    }
    println!(
        "  all four at the defaults: {:.1} MiB",
        def.torvm_qemu + def.appvm_qemu + def.torvm_vsock + def.appvm_vsock
    );
    println!(
        "(the testnet's directory is tiny: on the public network tor holds some tens of MiB more)"
    );
    Ok(())
}
