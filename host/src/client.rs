//! The CLI side: find or start the daemon, send it one request, render what
//! comes back. Works the same over SSH (no terminal needed; progress bars
//! only when stderr is a terminal).

use crate::ctl::{Reply, Request, StatusReport, MAX_CTL_FRAME};
use crate::paths::Paths;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tails_proto::{read_frame, write_frame, FrameError};
use tokio::net::UnixStream;

/// Longest any single reply may take (an `up` under TCG included).
const REPLY: Duration = Duration::from_secs(600);

/// Connect to a running daemon, if there is one.
pub async fn connect(paths: &Paths) -> Option<UnixStream> {
    UnixStream::connect(paths.control_socket()).await.ok()
}

/// Something a long request reports before its final reply.
pub enum Event<'a> {
    Step(&'a str),
    Tor(&'a tails_proto::TorProgress),
}

fn tor_bar() -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(100);
    if let Ok(style) = indicatif::ProgressStyle::with_template("tor [{bar:30}] {pos:>3}% {msg}") {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

/// Send `req` and call `on_progress` for every report until the final reply, which is returned.
pub async fn call(
    mut conn: UnixStream,
    req: &Request,
    mut on_progress: impl FnMut(Event),
) -> Result<Reply> {
    let sent = write_frame(&mut conn, req, MAX_CTL_FRAME, Duration::from_secs(10)).await;
    if let Err(e) = sent {
        // Whatever answers may have spoken before hanging up: that says more.
        return match read_frame::<_, Reply>(&mut conn, MAX_CTL_FRAME, Duration::from_secs(1)).await
        {
            Err(FrameError::Closed) | Err(FrameError::Timeout(_)) | Ok(_) => {
                Err(anyhow::Error::new(e).context("cannot talk to the daemon"))
            }
            Err(e2) => Err(anyhow::Error::new(e2)
                .context("the control socket does not answer like tails-server")),
        };
    }
    loop {
        match read_frame::<_, Reply>(&mut conn, MAX_CTL_FRAME, REPLY).await {
            Ok(Reply::Progress(m)) => on_progress(Event::Step(&m)),
            Ok(Reply::Tor(p)) => on_progress(Event::Tor(&p)),
            Ok(r) => return Ok(r),
            Err(FrameError::Closed) => {
                bail!("the daemon is stopping (it closed the connection); try again")
            }
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                bail!("the daemon is stopping (it closed the connection); try again")
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The running daemon's pid, from its pid file.
fn daemon_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.daemon_pid())
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Wait (at most 10 s) for a daemon that said it is stopping to be gone, so
/// that a following command cannot meet it half-way out.
async fn wait_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Is `pid` a live process? A zombie (such as a daemon this CLI started and
/// has not reaped) is not.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// What a daemon that died left behind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stale {
    /// The dead daemon's pid, from its pid file.
    pub daemon_pid: Option<u32>,
    /// Its processes still running (QEMU, vhost-device-vsock): `name pid`.
    pub processes: Vec<String>,
    /// The host table is still loaded (so those processes stay fenced in).
    pub host_firewall: bool,
}

impl Stale {
    /// One line: what was found.
    pub fn describe(&self) -> String {
        let who = match self.daemon_pid {
            Some(p) => format!("the daemon (pid {p}) died"),
            None => "a daemon died".into(),
        };
        let procs = if self.processes.is_empty() {
            "no process of its stack still runs".to_string()
        } else {
            format!("still running: {}", self.processes.join(", "))
        };
        let fw = if self.host_firewall {
            format!(
                "the host firewall (table {}) stayed loaded",
                crate::firewall::table_name()
            )
        } else {
            "the host firewall is not loaded".into()
        };
        format!("{who}; {procs}; {fw}")
    }
}

/// The live processes a dead daemon's state file names (only QEMU and
/// vhost-device-vsock, checked by name: a pid may have been reused).
fn stale_processes(paths: &Paths) -> Vec<(u32, String)> {
    let Ok(j) = std::fs::read(paths.state_file()) else {
        return Vec::new();
    };
    let Ok(st) = serde_json::from_slice::<crate::stack::StateFile>(&j) else {
        return Vec::new();
    };
    st.pids
        .into_iter()
        .filter(|p| pid_alive(*p))
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim().to_string();
            (comm.starts_with("qemu-system") || comm.starts_with("vhost-device"))
                .then_some((pid, comm))
        })
        .collect()
}

/// What a dead daemon left, if it left anything (runtime files or the host
/// table); `None` while a daemon runs or when all is clean. Changes nothing.
pub fn find_stale(paths: &Paths) -> Option<Stale> {
    let daemon = std::fs::read_to_string(paths.daemon_pid())
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if daemon.is_some_and(pid_alive) {
        return None;
    }
    let host_firewall = crate::firewall::status(&crate::firewall::nft()).present;
    if !paths.runtime.exists() && !host_firewall {
        return None;
    }
    Some(Stale {
        daemon_pid: daemon,
        processes: stale_processes(paths)
            .into_iter()
            .map(|(pid, name)| format!("{name} (pid {pid})"))
            .collect(),
        host_firewall,
    })
}

/// If a daemon died, stop the processes it left, then remove the host table
/// and the runtime files; returns what was found.
pub fn clean_stale(paths: &Paths) -> Option<Stale> {
    let found = find_stale(paths)?;
    let procs = stale_processes(paths);
    for (pid, _) in &procs {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The table goes only once its processes are gone.
    let start = Instant::now();
    while procs.iter().any(|(p, _)| pid_alive(*p)) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if procs.iter().all(|(p, _)| !pid_alive(*p)) {
        if let Err(e) = crate::firewall::remove(&crate::firewall::nft()) {
            eprintln!("tails-server: cannot remove the host firewall: {e}");
        }
    }
    crate::stack::remove_runtime(paths);
    Some(found)
}

/// Start the daemon detached, its output in the daemon log, and wait for its socket.
async fn spawn_daemon(paths: &Paths) -> Result<UnixStream> {
    std::fs::create_dir_all(&paths.log)
        .with_context(|| format!("create {}", paths.log.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .with_context(|| format!("open {}", paths.daemon_log().display()))?;
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let start = Instant::now();
    loop {
        if let Some(c) = connect(paths).await {
            return Ok(c);
        }
        if let Ok(Some(s)) = child.try_wait() {
            bail!(
                "the daemon exited ({s}); see {}",
                paths.daemon_log().display()
            );
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "the daemon did not open {}; see {}",
                paths.control_socket().display(),
                paths.daemon_log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

pub async fn up(paths: &Paths, network: crate::ctl::Network, bridges: Vec<String>) -> Result<()> {
    let conn = match connect(paths).await {
        Some(c) => c,
        None => {
            if let Some(st) = clean_stale(paths) {
                eprintln!(
                    "found what a dead daemon left ({}); stopped it all and starting afresh",
                    st.describe()
                );
            }
            spawn_daemon(paths).await?
        }
    };
    let pid = daemon_pid(paths);
    let start = Instant::now();
    let pb = spinner();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let reply = call(conn, &Request::Up { network, bridges }, |ev| {
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
            // A failed start stops its daemon; let it finish first.
            if !paths.runtime.join("stack.json").exists() {
                wait_gone(pid).await;
            }
            bail!("up failed: {e}")
        }
        other => bail!("unexpected reply {other:?}"),
    }
}

pub async fn down(paths: &Paths) -> Result<()> {
    let pid = daemon_pid(paths);
    match connect(paths).await {
        Some(c) => match call(c, &Request::Down, |_| {}).await? {
            Reply::Done(m) => {
                wait_gone(pid).await;
                println!("{m}")
            }
            Reply::Error(e) => bail!("{e}"),
            other => bail!("unexpected reply {other:?}"),
        },
        None => {
            if let Some(st) = clean_stale(paths) {
                println!(
                    "tails-server is down (cleaned up after a dead daemon: {}; all stopped and removed)",
                    st.describe()
                );
            } else {
                println!("tails-server is already down");
            }
        }
    }
    Ok(())
}

pub async fn status(paths: &Paths, json: bool) -> Result<()> {
    let Some(c) = connect(paths).await else {
        let stale = find_stale(paths);
        if json {
            println!(
                "{}",
                serde_json::json!({"up": false, "stale_runtime_files": paths.runtime.exists(), "left_behind": stale})
            );
        } else if let Some(st) = stale {
            println!(
                "tails-server is down, but {}: run `tails-server down` to clean up",
                st.describe()
            );
        } else {
            println!("tails-server is down");
        }
        return Ok(());
    };
    match call(c, &Request::Status, |_| {}).await? {
        Reply::Status(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_status(&r);
            }
            Ok(())
        }
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn print_status(r: &StatusReport) {
    println!("daemon: running (pid {})", r.daemon_pid);
    println!("accelerator: {}", r.accel);
    println!("backend: {}", r.backend);
    println!("network: {}", r.network.name());
    println!("vsock device: {}", r.vsock);
    let fw = &r.host_firewall;
    match (&fw.error, fw.present) {
        (Some(e), _) => println!("host firewall: unreadable ({e})"),
        (None, true) => println!(
            "host firewall: table {} ({} rules, {} packets dropped)",
            fw.table, fw.rules, fw.dropped_packets
        ),
        (None, false) => println!("host firewall: MISSING (table {} is not loaded)", fw.table),
    }
    println!("path out: {}", r.path_out);
    for vm in &r.vms {
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
        println!("  console-log: {}", vm.console_log);
        if let Some(t) = &vm.tor {
            println!("  tor: {}% ({})", t.progress, t.summary);
        }
    }
}

/// Run a command in a guest and return what it produced.
async fn exec_output(
    paths: &Paths,
    vm: tails_proto::Role,
    argv: Vec<String>,
    timeout: u64,
    stdin: Vec<u8>,
) -> Result<tails_proto::msg::ExecOutput> {
    let Some(c) = connect(paths).await else {
        bail!("tails-server is not up: run `tails-server up`");
    };
    match call(
        c,
        &Request::Exec {
            vm,
            argv,
            timeout_secs: timeout,
            stdin,
        },
        |_| {},
    )
    .await?
    {
        Reply::Exec(out) => Ok(out),
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// Largest stdin `exec --stdin` passes (it travels in one host frame).
pub const MAX_EXEC_STDIN: usize = 160 << 10;

/// Run a command in a guest; returns the exit code to exit with.
pub async fn exec(
    paths: &Paths,
    vm: tails_proto::Role,
    argv: Vec<String>,
    timeout: u64,
    pass_stdin: bool,
) -> Result<i32> {
    use std::io::{Read, Write};
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
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
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
    let argv = vec!["sh".into(), "-c".into(), crate::identity::SCRIPT.into()];
    let out = exec_output(paths, tails_proto::Role::Appvm, argv, 60, Vec::new()).await?;
    if out.exit_code != Some(0) || out.timed_out {
        bail!(
            "the identity script failed in the App VM (exit {:?}): see `tails-server exec appvm -- sh -c …`",
            out.exit_code
        );
    }
    let facts = crate::identity::parse(&out.stdout).map_err(anyhow::Error::msg)?;
    let fp = crate::identity::fingerprint(&facts);
    if json {
        let v = serde_json::json!({"fingerprint": fp, "facts": facts});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (k, v) in &facts {
            println!("{k}: {v}");
        }
        println!("fingerprint: {fp}");
    }
    Ok(())
}
