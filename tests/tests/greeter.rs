//! Issue 13, point 2, without VMs: the greeter's screen
//! (`tails-server-gui --greeter`), driven through its accessibility tree,
//! and the boot decision behind its "Isolate via virtualization" switch.
//!
//! Against a daemon of this test's own directories: with nothing chosen,
//! isolation is off; the greeter asks for the persistent store's
//! passphrase when there is a locked store; switched on with the
//! passphrase, it unlocks the store and saves the choice there too; the
//! settings file (`TAILS_SERVER_ISOLATE_FILE`, /etc/tails-server/isolate in
//! production) saying `off` wins over the saved choice, so nothing starts;
//! without the file the saved choice decides; on an amnesic host (the
//! settings gone) the choice comes back from the unlocked store; a bad
//! word in the file is named in one line; `daemon --boot` with isolation
//! off brings nothing up and stops by itself.

use std::path::Path;
use std::time::{Duration, Instant};

use tails_tests::gui::{artifacts_dir, env_pairs, own_daemon_env, processes_with_env, GuiSession};
use tails_tests::*;

const BASE: &str = "/run/ts-greeter-test";
const PASS: &str = "greeter test passphrase, long enough";

fn env(artifacts: &Path) -> Vec<(String, String)> {
    let mut env = own_daemon_env(BASE, artifacts);
    env.push((
        "TAILS_SERVER_ISOLATE_FILE".into(),
        format!("{BASE}/isolate"),
    ));
    env
}

fn ok(env: &[(String, String)], args: &[&str]) -> Run {
    let r = ts_env(args, &env_pairs(env));
    assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
    r
}

fn isolate(env: &[(String, String)]) -> serde_json::Value {
    let r = ok(env, &["isolate", "status", "--json"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn daemon_pid() -> Option<u32> {
    std::fs::read_to_string(format!("{BASE}/run/daemon.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
}

fn cleanup(env: &[(String, String)]) {
    if daemon_pid().is_some() {
        let _ = ts_env(&["down"], &env_pairs(env));
    }
    let _ = std::process::Command::new("umount")
        .arg(format!("{BASE}/state/amnesic"))
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(BASE);
}

#[test]
fn the_greeter_saves_the_choice_and_the_boot_follows_it() {
    let started = Instant::now();
    let artifacts = artifacts_dir().join("greeter");
    let env = env(&artifacts);
    // A daemon that starts while the host table is loaded takes it for a
    // dead daemon's and removes it: never while another stack runs.
    assert!(
        wait_until(600, || !host_table_loaded()),
        "a stack runs on this host: this test starts a daemon of its own only when none does"
    );
    cleanup(&env);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(BASE).expect("the test's directory");

    // Nothing chosen: off.
    let st = isolate(&env);
    assert_eq!(st["isolate"], "off", "{st}");
    assert_eq!(st["decided-by"], "nothing was chosen", "{st}");
    // A locked store, for the greeter to unlock; the file says off.
    let pass = format!("{BASE}/pass");
    std::fs::write(&pass, format!("{PASS}\n")).expect("pass");
    ok(
        &env,
        &[
            "persistence",
            "create",
            "--size-mib",
            "64",
            "--passphrase-file",
            &pass,
        ],
    );
    std::fs::write(format!("{BASE}/isolate"), "off\n").expect("isolate file");

    let gui = GuiSession::start_greeter(&artifacts, &env_pairs(&env));
    let display = gui.display().to_owned();
    let first = gui.drive(&["greeter-state"]);
    assert_eq!(first["isolate"], false, "{first}");
    if first["passphrase_asked"] != true
        || !first["status"]
            .as_str()
            .unwrap_or_default()
            .contains("The persistent store is locked")
    {
        let ps = ts_env(&["persistence", "status", "--json"], &env_pairs(&env));
        panic!("a locked store, the passphrase not asked: {first}; the daemon says {ps:?}");
    }
    gui.screenshot("greeter", "greeter.png");

    // Switched on, with the passphrase: the store is unlocked, the choice
    // saved (also in the store), and the file's off wins: nothing starts.
    let done = gui.drive(&["greeter-continue", "on", "--passphrase", PASS]);
    let said = done["status"].as_str().unwrap_or_default().to_owned();
    assert!(
        said.starts_with("Isolation is off (decided by the isolate file")
            && said.contains("kept in the persistent store"),
        "{done}"
    );
    let st = isolate(&env);
    assert_eq!(st["isolate"], "off", "{st}");
    assert_eq!(st["saved"], "on", "{st}");
    assert_eq!(st["in-persistent-store"], true, "{st}");
    let ps = ok(&env, &["persistence", "status", "--json"]);
    assert!(ps.stdout.contains("\"unlocked\": true"), "{ps:?}");
    let status = ok(&env, &["status", "--json"]);
    assert!(
        status.stdout.contains("\"up\": false"),
        "nothing started: {status:?}"
    );
    drop(gui);

    // Without the file, the saved choice decides.
    std::fs::remove_file(format!("{BASE}/isolate")).expect("rm isolate file");
    let st = isolate(&env);
    assert_eq!(st["isolate"], "on", "{st}");
    assert_eq!(st["decided-by"], "the saved choice", "{st}");
    // An amnesic host: the settings are gone, the unlocked store has it.
    std::fs::remove_file(format!("{BASE}/state/settings.json")).expect("rm settings");
    let st = isolate(&env);
    assert_eq!(st["saved"], "on", "back from the store: {st}");
    // A bad word in the file: named in the daemon's log, and ignored.
    std::fs::write(format!("{BASE}/isolate"), "maybe\n").expect("isolate file");
    let st = isolate(&env);
    assert_eq!(st["decided-by"], "the saved choice", "{st}");
    let log = std::fs::read_to_string(artifacts.join("daemon-log/daemon.log")).unwrap_or_default();
    assert!(
        log.contains("says \"maybe\": write on or off; ignoring it"),
        "{log}"
    );

    // At boot with the file saying off: nothing comes up, and the daemon
    // (nothing to supervise) stops by itself.
    ok(&env, &["down"]);
    assert!(wait_until(20, || daemon_pid().is_none()), "down");
    std::fs::write(format!("{BASE}/isolate"), "off\n").expect("isolate file");
    let mut boot = std::process::Command::new(bin());
    boot.args(["daemon", "--boot"]);
    for (k, v) in &env {
        boot.env(k, v);
    }
    let t0 = Instant::now();
    let out = boot.output().expect("daemon --boot");
    assert!(out.status.success(), "{out:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "it stopped by itself"
    );
    let log = std::fs::read_to_string(artifacts.join("daemon-log/daemon.log")).unwrap_or_default();
    let said = format!(
        "{}{}{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("at boot: isolation is off: nothing of Tails Server starts (decided by the isolate file"),
        "{said}"
    );
    let left = processes_with_env(&format!("DISPLAY={display}"));
    assert!(left.is_empty(), "left running: {left:?}");
    cleanup(&env);
    eprintln!(
        "greeter: {:.0} s; screenshot in {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
}
