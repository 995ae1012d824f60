//! The stack's commands: `up`, `down`, `status`, `exec`, `identity`.
//! Each sends one request to the daemon and renders the answer. Works the
//! same over SSH (no terminal needed; progress bars only when stderr is a
//! terminal).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tails_server::api::{Network, Reply, Request, Role, StatusReport, MAX_EXEC_STDIN};
use tails_server::client::{self, call, Event};
use tails_server::Paths;

/// The final reply, or its error as the command's error.
pub fn expect(reply: Reply) -> Result<Reply> {
    match reply {
        Reply::Error(e) => bail!("{e}"),
        r => Ok(r),
    }
}

/// A reply of another kind than the request wants.
pub fn unexpected(r: &Reply) -> anyhow::Error {
    anyhow::anyhow!(
        "the daemon answered something unexpected ({r:?}): is it the same version as this command?"
    )
}

fn spinner() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.enable_steady_tick(Duration::from_millis(120));
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}") {
        pb.set_style(style);
    }
    Some(pb)
}

fn tor_bar() -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(100);
    if let Ok(style) = indicatif::ProgressStyle::with_template("tor [{bar:30}] {pos:>3}% {msg}") {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

pub async fn up(paths: &Paths, network: Network, bridges: Vec<String>) -> Result<()> {
    let start = Instant::now();
    let pb = spinner();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut attempt = 0;
    let (reply, pid) = loop {
        attempt += 1;
        let conn = client::connect_or_start(paths).await?;
        let pid = tails_server::takeover::daemon_pid(paths);
        let mut heard = false;
        let req = Request::Up {
            network,
            bridges: bridges.clone(),
        };
        let r = call(conn, &req, |ev| {
            heard = true;
            let elapsed = start.elapsed().as_secs_f64();
            match ev {
                Event::Step(m) => match &pb {
                    Some(pb) => {
                        pb.println(format!("[{elapsed:5.1}s] {m}"));
                        pb.set_message(m.to_owned());
                    }
                    None => eprintln!("[{elapsed:5.1}s] {m}"),
                },
                Event::Tor(p) => match &pb {
                    Some(pb) => {
                        let b = bar.get_or_insert_with(|| {
                            pb.finish_and_clear();
                            tor_bar()
                        });
                        b.set_position(p.progress.into());
                        b.set_message(p.summary.clone());
                    }
                    None => eprintln!("[{elapsed:5.1}s] tor {}%: {}", p.progress, p.summary),
                },
            }
        })
        .await;
        match r {
            // A daemon on its way out (just killed, or stopping after a
            // `down`) took the request and answered nothing: ask the next.
            Err(client::ClientError::Closed) if !heard && attempt < 3 => {
                client::wait_gone(pid).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => break (r, pid),
        }
    };
    if let Some(b) = bar {
        b.finish();
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    match reply? {
        Reply::Done(m) => {
            println!("{m} ({:.1} s)", start.elapsed().as_secs_f64());
            Ok(())
        }
        Reply::Error(e) => {
            // A failed start leaves a daemon with nothing to do, which
            // stops by itself; let it finish first.
            if !paths.desired_file().exists() || !paths.state_file().exists() {
                client::wait_gone(pid).await;
            }
            bail!("up failed: {e}")
        }
        other => Err(unexpected(&other)),
    }
}

pub async fn down(paths: &Paths) -> Result<()> {
    let found = match client::try_connect(paths).await? {
        Some(_) => None,
        None => match tails_server::takeover::find(paths) {
            // What a dead daemon left is the next daemon's to clean up.
            Some(_) => {
                let conn = client::spawn_daemon(paths).await?;
                status_report(conn)
                    .await
                    .ok()
                    .and_then(|r| r.supervisor.found_at_start)
            }
            None => {
                println!("tails-server is already down");
                return Ok(());
            }
        },
    };
    let pid = tails_server::takeover::daemon_pid(paths);
    let Some(conn) = client::try_connect(paths).await? else {
        bail!("the daemon is stopping; try again");
    };
    match expect(call(conn, &Request::Down, |_| {}).await?)? {
        Reply::Done(m) => {
            client::wait_gone(pid).await;
            match found {
                Some(f) => println!("{m} (cleaned up after a dead daemon: {f})"),
                None => println!("{m}"),
            }
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

async fn status_report(conn: tokio::net::UnixStream) -> Result<StatusReport> {
    match expect(call(conn, &Request::Status, |_| {}).await?)? {
        Reply::Status(r) => Ok(*r),
        other => Err(unexpected(&other)),
    }
}

/// `watch`: the daemon's events as JSON lines, flushed one by one.
pub async fn watch(paths: &Paths) -> Result<()> {
    use std::io::Write;
    use tails_server::client::Watched;
    let conn = client::connect_or_start(paths).await?;
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    client::watch(conn, |w| {
        let line = match w {
            Watched::State(s) => serde_json::json!({ "state": s }),
            Watched::Step(m) => serde_json::json!({ "step": m }),
            Watched::Tor(p) => serde_json::json!({ "tor": p }),
        };
        // A reader that went away ends the watch at the next event.
        match writeln!(out, "{line}").and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })
    .await?;
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

pub async fn status(paths: &Paths, json: bool) -> Result<()> {
    let Some(c) = client::try_connect(paths).await? else {
        let stale = tails_server::takeover::find(paths);
        if json {
            println!(
                "{}",
                serde_json::json!({"up": false, "stale_runtime_files": paths.runtime.exists(), "left_behind": stale})
            );
        } else if let Some(st) = stale {
            println!(
                "tails-server is down, but {}: run `tails-server down` to clean up, or `tails-server up` to take it over and bring back what was asked",
                st.describe()
            );
        } else {
            println!("tails-server is down");
        }
        return Ok(());
    };
    let r = status_report(c).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print_status(&r);
    }
    Ok(())
}

fn ago(at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(at);
    format!("{} s ago", now.saturating_sub(at))
}

fn print_status(r: &StatusReport) {
    println!(
        "daemon: running (pid {}, since {})",
        r.daemon_pid,
        ago(r.supervisor.daemon_started)
    );
    match (&r.desired.network, r.desired.up) {
        (Some(n), true) => println!("asked: up on the {n} network"),
        _ => println!("asked: down"),
    }
    if let Some(f) = &r.supervisor.found_at_start {
        println!("found at start: {f}");
    }
    match &r.stack {
        None => println!("stack: not running"),
        Some(s) => {
            println!("accelerator: {}", s.accel);
            println!("backend: {}", s.backend);
            println!("network: {}", s.network.name());
            println!("vsock backends: {}", s.vsock);
        }
    }
    let fw = &r.host_firewall;
    match (&fw.error, fw.present) {
        (Some(e), _) => println!("host firewall: unreadable ({e})"),
        (None, true) => println!(
            "host firewall: table {} ({} rules, {} packets dropped)",
            fw.table, fw.rules, fw.dropped_packets
        ),
        (None, false) => println!("host firewall: MISSING (table {} is not loaded)", fw.table),
    }
    if let Some(s) = &r.stack {
        println!("path out: {}", s.path_out);
        for vm in &s.vms {
            println!("{}:", vm.name);
            println!("  state: {}", vm.state);
            println!("  agent: {}", vm.agent);
            if let Some(u) = vm.uptime_secs {
                println!("  uptime: {u} s");
            }
            if let Some(m) = vm.memory_mib {
                println!("  memory: {m} MiB");
            }
            if let Some(a) = &vm.accel {
                println!("  accelerator: {a}");
            }
            if let Some(p) = vm.pid {
                println!("  pid: {p}");
            }
            println!("  restarts: {}", vm.restarts);
            println!("  console-log: {}", vm.console_log);
            if let Some(t) = &vm.tor {
                println!("  tor: {}% ({})", t.progress, t.summary);
            }
        }
    }
    for svc in &r.services {
        let state = match (svc.running, svc.published) {
            (true, true) => "running, published",
            (true, false) => "running, not published",
            (false, true) => "published, not running",
            (false, false) => "not running",
        };
        print!("service {}: {state}", svc.name);
        if let Some(e) = &svc.error {
            print!(" (error: {e})");
        }
        println!();
    }
    if let Some(e) = &r.supervisor.last_error {
        println!("last error: {e}");
    }
    for i in r.supervisor.incidents.iter().rev().take(10).rev() {
        println!("incident ({}): {}", ago(i.at), i.what);
    }
}

/// Run a command in a guest and return what it produced.
async fn exec_output(
    paths: &Paths,
    vm: Role,
    argv: Vec<String>,
    timeout: u64,
    stdin: Vec<u8>,
) -> Result<tails_server::api::ExecOutput> {
    let Some(c) = client::try_connect(paths).await? else {
        bail!("tails-server is not up: run `tails-server up`");
    };
    let req = Request::Exec {
        vm,
        argv,
        timeout_secs: timeout,
        stdin,
    };
    match expect(call(c, &req, |_| {}).await?)? {
        Reply::Exec(out) => Ok(out),
        other => Err(unexpected(&other)),
    }
}

/// Run a command in a guest; returns the exit code to exit with.
pub async fn exec(
    paths: &Paths,
    vm: Role,
    argv: Vec<String>,
    timeout: u64,
    pass_stdin: bool,
    raw: bool,
) -> Result<i32> {
    use std::io::{IsTerminal, Read, Write};
    let mut stdin = Vec::new();
    if pass_stdin {
        std::io::stdin()
            .take(MAX_EXEC_STDIN as u64 + 1)
            .read_to_end(&mut stdin)
            .context("read stdin")?;
        if stdin.len() > MAX_EXEC_STDIN {
            bail!(
                "stdin is larger than {} KiB: split it and run exec once per part",
                MAX_EXEC_STDIN >> 10
            );
        }
    }
    let out = exec_output(paths, vm, argv, timeout, stdin).await?;
    let shown = |bytes: &[u8], tty: bool| {
        if tty && !raw {
            tails_server::terminal_safe(bytes)
        } else {
            bytes.to_vec()
        }
    };
    std::io::stdout().write_all(&shown(&out.stdout, std::io::stdout().is_terminal()))?;
    std::io::stderr().write_all(&shown(&out.stderr, std::io::stderr().is_terminal()))?;
    if out.truncated {
        eprintln!("tails-server: output was cut at 1 MiB");
    }
    if out.timed_out {
        eprintln!("tails-server: command killed after {timeout} s");
        return Ok(124);
    }
    Ok(match (out.exit_code, out.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    })
}

/// `tails-server identity`: what the App VM sees of its machine, and a
/// fingerprint of it.
pub async fn identity(paths: &Paths, json: bool) -> Result<()> {
    use tails_server::identity;
    let argv = vec!["sh".into(), "-c".into(), identity::SCRIPT.into()];
    let out = exec_output(paths, Role::Appvm, argv, 60, Vec::new()).await?;
    if out.exit_code != Some(0) || out.timed_out {
        bail!(
            "the identity script failed in the App VM (exit {:?}): see `tails-server exec appvm -- sh -c …`",
            out.exit_code
        );
    }
    let facts = identity::parse(&out.stdout).map_err(anyhow::Error::msg)?;
    let fp = identity::fingerprint(&facts);
    let clock = identity::clock_window();
    if json {
        let v = serde_json::json!({
            "fingerprint": fp,
            "facts": facts,
            "clock": clock,
            "unpinned": identity::UNPINNED,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, v) in &facts {
            println!("{k}: {v}");
        }
        println!("fingerprint: {fp}");
        println!("clock: {clock}");
        println!("not pinned (the same on no two hosts, or not at all):");
        for u in identity::UNPINNED {
            println!("  - {u}");
        }
    }
    Ok(())
}
