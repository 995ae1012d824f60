//! Issue 13 point 1: who may use the daemon's API, and the events it
//! pushes. No VM: the daemon alone, kept up by a `tails-server watch`.
//!
//! A member of the group `tails-server` who is not root lists the catalog
//! and changes an option through the daemon, and the watcher is told;
//! `exec` (root in the VMs) is refused to the member; a user outside the
//! group is refused by the socket's mode, and, with the mode opened up, by
//! the daemon's own check of the peer's groups; when the watcher goes, the
//! daemon (with nothing to run) stops by itself.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-access-test-state";
const MEMBER: &str = "ts-member";
const OUTSIDER: &str = "ts-outsider";

fn sh(cmd: &str) -> (i32, String) {
    let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn user(name: &str, member: bool) {
    let (c, out) = sh(&format!(
        "getent passwd {name} >/dev/null || adduser --system --no-create-home --home /nonexistent --shell /usr/sbin/nologin {name}"
    ));
    assert_eq!(c, 0, "adduser {name}: {out}");
    let (c, out) = sh(&if member {
        format!("adduser {name} tails-server")
    } else {
        format!("deluser {name} tails-server 2>/dev/null; true")
    });
    assert_eq!(c, 0, "group of {name}: {out}");
}

/// `tails-server ARGS` as `who` (not root).
fn as_user(who: &str, args: &[&str]) -> Run {
    Command::new("runuser")
        .args([
            "-u",
            who,
            "--",
            "env",
            &format!("TAILS_SERVER_STATE_DIR={STATE}"),
        ])
        .arg(bin())
        .args(args)
        .output()
        .expect("runuser")
        .into()
}

/// The watcher's lines, as they come.
fn next_state(lines: &mpsc::Receiver<String>, secs: u64, what: &str) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no event within {secs} s: {what}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if let Some(s) = v.get("state") {
            return s.clone();
        }
    }
}

fn option_in(info: &serde_json::Value, name: &str) -> String {
    match &info["options"][name] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[test]
fn members_of_the_group_use_the_api_others_are_refused_and_watchers_are_told() {
    clean_start(std::path::Path::new(RUNTIME));
    let _ = sh(&format!("umount {STATE}/amnesic"));
    let _ = std::fs::remove_dir_all(STATE);
    let (c, out) = sh("getent group tails-server >/dev/null || addgroup --system tails-server");
    assert_eq!(c, 0, "{out}");
    user(MEMBER, true);
    user(OUTSIDER, false);

    // Root's watcher starts the daemon and keeps it up.
    let store = format!("{STATE}/store.luks");
    let mut watch = Command::new(bin())
        .arg("watch")
        .env("TAILS_SERVER_STATE_DIR", STATE)
        .env("TAILS_SERVER_STORE", &store)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tails-server watch");
    let (tx, lines) = mpsc::channel();
    let out = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let first = next_state(&lines, 30, "the first snapshot");
    let names: Vec<&str> = first["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"nginx"), "{first}");
    assert_eq!(first["status"]["desired"]["up"], false, "{first}");
    let sock = format!("{RUNTIME}/control.sock");
    let (_, mode) = sh(&format!("stat -c '%a %U %G' {sock}"));
    assert_eq!(mode.trim(), "660 root tails-server", "the socket");

    // A member lists and changes an option; the daemon's value changes.
    let r = as_user(MEMBER, &["list", "--json"]);
    assert_eq!(r.code, 0, "member list: {r:?}");
    assert!(r.stdout.contains("\"nginx\""), "{r:?}");
    let r = as_user(MEMBER, &["nginx", "set-option", "virtual-port", "8081"]);
    assert_eq!(r.code, 0, "member set-option: {r:?}");
    let r = ts_env(
        &["nginx", "info", "--json"],
        &[("TAILS_SERVER_STATE_DIR", STATE)],
    );
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("info json");
    assert_eq!(option_in(&info, "virtual-port"), "8081", "{r:?}");

    // Root only: commands in a VM.
    let r = as_user(MEMBER, &["exec", "appvm", "--", "true"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("only root may run commands in a VM"),
        "{r:?}"
    );

    // Outside the group: the socket's mode refuses it…
    let r = as_user(OUTSIDER, &["list"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {r:?}");
    assert!(r.stderr.contains("adduser <user> tails-server"), "{r:?}");
    // …and so does the daemon when the mode would let it in.
    let (c, out) = sh(&format!("chmod 0666 {sock}"));
    assert_eq!(c, 0, "{out}");
    let r = as_user(OUTSIDER, &["nginx", "set-option", "virtual-port", "8082"]);
    let (_, _) = sh(&format!("chmod 0660 {sock}"));
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("only root and the members of the group tails-server"),
        "{r:?}"
    );
    let r = ts_env(
        &["nginx", "info", "--json"],
        &[("TAILS_SERVER_STATE_DIR", STATE)],
    );
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("info json");
    assert_eq!(option_in(&info, "virtual-port"), "8081", "nothing changed");

    // A change reaches the watcher: the member makes the persistent store
    // (64 MiB, a few seconds of key derivation), and the watcher is told.
    let pass = "/run/ts-access-test-pass".to_owned();
    std::fs::write(&pass, "correct horse battery staple\n").expect("pass");
    let (c, out) = sh(&format!("chown {MEMBER} {pass} && chmod 0600 {pass}"));
    assert_eq!(c, 0, "{out}");
    let r = as_user(
        MEMBER,
        &[
            "persistence",
            "create",
            "--size-mib",
            "64",
            "--passphrase-file",
            &pass,
        ],
    );
    assert_eq!(r.code, 0, "member persistence create: {r:?}");
    let mut seen = next_state(&lines, 60, "the store made");
    while seen["persistence"]["exists"] != true {
        seen = next_state(&lines, 60, "the store made");
    }
    assert_eq!(seen["persistence"]["unlocked"], false, "{seen}");

    // The daemon stops once the watcher goes (nothing runs).
    let pid = first["status"]["daemon_pid"].as_u64().expect("pid") as u32;
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        wait_until(15, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists()),
        "the daemon stops once its last watcher is gone"
    );
    let r = ts_env(
        &["nginx", "set-option", "virtual-port", "80"],
        &[("TAILS_SERVER_STATE_DIR", STATE)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let _ = ts_env(&["down"], &[("TAILS_SERVER_STATE_DIR", STATE)]);
    let _ = sh(&format!("umount {STATE}/amnesic"));
    let _ = std::fs::remove_dir_all(STATE);
    let _ = std::fs::remove_file(&pass);
}

/// Socket activation as systemd does it (`systemd-socket-activate` passes
/// the listening socket the same way): the daemon serves on the socket it
/// is given, and leaves it for the next start when it stops; a socket that
/// is not the control socket is refused in one line.
#[test]
fn a_socket_activated_daemon_serves_and_leaves_systemds_socket() {
    clean_start(std::path::Path::new(RUNTIME));
    let _ = sh(&format!("umount {STATE}/amnesic"));
    let _ = std::fs::remove_dir_all(STATE);
    std::fs::create_dir_all(RUNTIME).expect("runtime dir");
    let sock = format!("{RUNTIME}/control.sock");
    let log = "/run/ts-activation.log";
    let activate = |listen: &str| {
        Command::new("systemd-socket-activate")
            .args([
                "-l",
                listen,
                "-E",
                &format!("TAILS_SERVER_STATE_DIR={STATE}"),
            ])
            .arg(bin())
            .arg("daemon")
            .stdout(std::fs::File::create(log).expect("log"))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(log)
                    .expect("log"),
            ))
            .spawn()
            .expect("systemd-socket-activate")
    };
    let mut act = activate(&sock);
    assert!(
        wait_until(10, || std::path::Path::new(&sock).exists()),
        "systemd-socket-activate listens"
    );
    let r = ts_env(&["list", "--json"], &[("TAILS_SERVER_STATE_DIR", STATE)]);
    assert_eq!(r.code, 0, "list through the activated daemon: {r:?}");
    assert!(r.stdout.contains("\"nginx\""), "{r:?}");
    let pid: u32 = std::fs::read_to_string(format!("{RUNTIME}/daemon.pid"))
        .expect("daemon.pid")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(pid, act.id(), "the daemon is the activated program");
    // Nothing to do: it stops by itself, and the socket stays systemd's.
    let ended = poll(20, || act.try_wait().ok().flatten());
    let status = ended.expect("the activated daemon stops by itself");
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    assert!(
        std::path::Path::new(&sock).exists(),
        "the socket is left for the next start"
    );
    let said = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !said.contains("at start:"),
        "no leftover was taken over: {said}"
    );
    let _ = std::fs::remove_file(&sock);

    // Given another socket: refused, in one line.
    let other = "/run/ts-activation-other.sock";
    let _ = std::fs::remove_file(other);
    let mut act = activate(other);
    assert!(
        wait_until(10, || std::path::Path::new(other).exists()),
        "systemd-socket-activate listens"
    );
    let _ = std::os::unix::net::UnixStream::connect(other);
    let status = poll(20, || act.try_wait().ok().flatten()).expect("it stops");
    assert!(!status.success(), "refused");
    let said = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        said.contains("socket activation: the socket systemd passed is")
            && said.contains("not /run/tails-server/control.sock"),
        "{said}"
    );
    let _ = std::fs::remove_file(other);
    let _ = std::fs::remove_file(log);
    // What systemd would remove with the socket (RemoveOnStop).
    let _ = std::fs::remove_dir_all(RUNTIME);
    let _ = sh(&format!("umount {STATE}/amnesic"));
    let _ = std::fs::remove_dir_all(STATE);
}
