//! Issue 10, points 4 and 7 on the real stack: one daemon at a time (two
//! `up` started together), `down` wins over a start in progress within
//! seconds, `exec` never lets a guest's escape sequences reach a terminal,
//! and what the daemon creates is root's only (umask 077).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";

/// The running daemons (processes of the binary under test with `daemon`).
fn daemons() -> Vec<u32> {
    pids_named("tails-server")
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"daemon"))
        })
        .collect()
}

fn spawn_up() -> std::process::Child {
    Command::new(bin())
        .args(["up", "--network", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn up")
}

#[test]
fn two_ups_at_once_make_one_stack() {
    clean_start(Path::new(RUNTIME));
    let (a, b) = (spawn_up(), spawn_up());
    let runs: Vec<Run> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait").into())
        .collect();
    let ok: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    assert!(!ok.is_empty(), "one of them brings the stack up: {runs:?}");
    for r in runs.iter().filter(|r| r.code != 0) {
        // The other is refused in one line and leaves the first alone.
        let lines: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("tails-server:"))
            .collect();
        assert_eq!(lines.len(), 1, "one error line: {r:?}");
        assert!(lines[0].contains("holds the lock"), "{r:?}");
        println!("the second `up`: {}", lines[0]);
    }
    assert_eq!(daemons().len(), 1, "one daemon");
    assert_eq!(pids_named("qemu-system").len(), 2, "one stack");
    assert!(host_table_loaded());
    // The stack the winner made works, with its files.
    let r = ts_ok(&["exec", "appvm", "--", "echo", "one stack"]);
    assert!(r.stdout.contains("one stack"), "{r:?}");
    let st = status_json();
    assert_eq!(
        vm_status(&st, "appvm")["agent"]
            .as_str()
            .map(|s| s.starts_with("ready")),
        Some(true),
        "{st}"
    );
    ts_ok(&["down"]);
    assert!(wait_until(10, || leftovers(Path::new(RUNTIME)).is_empty()));
    assert!(!host_table_loaded());
}

#[test]
fn down_wins_over_a_start_in_progress() {
    clean_start(Path::new(RUNTIME));
    let up = spawn_up();
    // Until the VMs are booting.
    assert!(
        wait_until(20, || pids_named("qemu-system").len() == 2),
        "the VMs never started"
    );
    let t0 = Instant::now();
    let down = ts(&["down"]);
    let took = t0.elapsed();
    assert_eq!(down.code, 0, "{down:?}");
    let up: Run = up.wait_with_output().expect("wait up").into();
    println!(
        "down took {:.1} s while up was starting the VMs",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(10),
        "down must win within seconds: {took:?}"
    );
    assert_ne!(up.code, 0, "the start was stopped: {up:?}");
    assert!(
        up.stderr
            .contains("`down` was asked while the stack or a service was starting"),
        "{up:?}"
    );
    assert!(
        wait_until(10, || leftovers(Path::new(RUNTIME)).is_empty()),
        "left behind: {:?}",
        leftovers(Path::new(RUNTIME))
    );
    assert!(!host_table_loaded(), "the host table goes with the stack");
}

#[test]
fn exec_shows_a_guest_s_escape_sequences_escaped_on_a_terminal() {
    clean_start(Path::new(RUNTIME));
    // A fresh log directory: every file in it is made by this run.
    let logs = "/run/ts-hardening-logs";
    let _ = std::fs::remove_dir_all(logs);
    let env = [("TAILS_SERVER_LOG_DIR", logs)];
    let r = ts_env(&["up", "--network", "none"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    // On a terminal (script(1) gives it a pty): escaped.
    let on_tty = |extra: &str| -> Vec<u8> {
        let cmd = format!(
            "TAILS_SERVER_LOG_DIR={logs} {} exec {extra} appvm -- printf '\\033]0;pwned\\007\\033[31mRED\\n'",
            bin().display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .expect("script");
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let safe = on_tty("");
    assert!(!safe.contains(&0x1b) && !safe.contains(&0x07), "{safe:?}");
    assert!(
        String::from_utf8_lossy(&safe).contains("\\x1b]0;pwned\\x07\\x1b[31mRED"),
        "{}",
        String::from_utf8_lossy(&safe)
    );
    let raw = on_tty("--raw");
    assert!(raw.contains(&0x1b), "--raw passes them: {raw:?}");
    // Into a pipe (a script reading the output): as it is.
    let piped = ts_env(&["exec", "appvm", "--", "printf", "\\033[31mRED"], &env);
    assert_eq!(piped.stdout.as_bytes(), b"\x1b[31mRED");
    // umask 077: what the CLI and the daemon made is root's only.
    for f in [
        "daemon.log",
        "appvm.console.log",
        "torvm.console.log",
        "vhost-device-vsock.appvm.log",
    ] {
        let p = Path::new(logs).join(f);
        let mode = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", p.display(), mode & 0o777);
    }
    let r = ts_env(&["down"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    let _ = std::fs::remove_dir_all(logs);
}
