//! `recovery`: time from killing one part of the stack (SIGKILL: the Tor
//! VM's QEMU, the App VM's QEMU, the App VM's vsock backend, the daemon) to the
//! first answer an authorized client gets again, against the time from a
//! cold `up` + `enable` to the first answer, in the same run. Target: each
//! ratio ≤ 0.5 (only what died is redone).
//!
//! One client of the testnet, holding the key, fetches in a loop for the
//! whole run (its descriptor cache is as stale after a restart as after a
//! cold start). A recovery is timed from the kill to the first answer after
//! the last unanswered fetch, once the service has answered every fetch for
//! 20 s (so the next kill meets a settled stack). For the daemon, the next
//! one is started by `up` at once.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tails_tests::faults::{kill, FetchLoop, Part};
use tails_tests::torclient::FreshClient;

use crate::{median, run_ok};

const STATE: &str = "/run/ts-bench-recovery-state";
const RUNTIME: &str = "/run/tails-server";
const LIMIT: Duration = Duration::from_secs(420);
/// Answered without a failure for this long: recovered.
const SETTLE: Duration = Duration::from_secs(20);

fn ts(bin: &Path, args: &[&str]) -> Result<String> {
    run_ok(
        Command::new(bin)
            .args(args)
            .env("TAILS_SERVER_STATE_DIR", STATE),
    )
}

fn field(out: &str, key: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
        .with_context(|| format!("no {key} in the output of enable"))
}

pub fn run(bin: &Path, runs: u32) -> Result<()> {
    let _ = ts(bin, &["down"]);
    let _ = std::fs::remove_dir_all(STATE);
    let _ = run_ok(Command::new(bin).args(["testnet", "down"]));
    run_ok(Command::new(bin).args(["testnet", "up"]))?;
    // A first enable makes the key; the client holds it from then on.
    ts(bin, &["up", "--network", "local"])?;
    let out = ts(bin, &["nginx", "enable"])?;
    let address = field(&out, "address")?;
    let line = field(&out, "auth-private")?;
    let join = tails_testnet::join_options(&tails_testnet::Config::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = FreshClient::with_keys("ts-outside", &join, "10.100.0.2:9091".parse()?, &[&line]);
    let fetching = FetchLoop::start(None, client.socks, &address, 80);
    if fetching.first_answer_after(Instant::now(), LIMIT).is_none() {
        bail!("the client never got an answer from {address}");
    }
    let mut cold = Vec::new();
    let mut rec: Vec<Vec<f64>> = vec![Vec::new(); Part::ALL.len()];
    for i in 1..=runs {
        ts(bin, &["down"])?;
        let t0 = Instant::now();
        ts(bin, &["up", "--network", "local"])?;
        ts(bin, &["nginx", "enable"])?;
        let back = fetching
            .first_answer_after(t0, LIMIT)
            .context("no answer after a cold start")?;
        cold.push(back.duration_since(t0).as_secs_f64());
        for (k, part) in Part::ALL.into_iter().enumerate() {
            let killed = kill(part, Path::new(RUNTIME));
            if part == Part::Daemon {
                ts(bin, &["up", "--network", "local"])?;
            }
            let back = fetching
                .recovered(killed, SETTLE, LIMIT)
                .with_context(|| format!("no steady answers after killing {}", part.name()))?;
            rec[k].push(back.duration_since(killed).as_secs_f64());
        }
        println!(
            "run {i}: cold {:.1} s; {}",
            cold[cold.len() - 1],
            Part::ALL
                .iter()
                .zip(&rec)
                .map(|(p, v)| format!("{} {:.1} s", p.name(), v[v.len() - 1]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    drop(fetching);
    drop(client);
    let _ = ts(bin, &["down"]);
    let _ = run_ok(Command::new(bin).args(["testnet", "down"]));
    let _ = std::fs::remove_dir_all(STATE);
    let cold = median(cold);
    println!("runs: {runs} (medians), testnet, client authorization on");
    println!("cold up + enable to the first answer: {cold:.2} s (baseline)");
    for (p, v) in Part::ALL.iter().zip(rec) {
        let m = median(v);
        println!(
            "kill {} to the first answer: {m:.2} s, ratio {:.2} (target ≤ 0.5)",
            p.name(),
            m / cold
        );
    }
    Ok(())
}
