//! Issue 13, point 3, without VMs: the real `tails-server-gui`, driven
//! through its accessibility tree under Xvfb (tests/src/gui.rs and
//! tests/clients/gui_driver.py), shows and changes what the daemon holds,
//! and says the daemon's words when it refuses.
//!
//! The daemon here is one of its own (runtime, state, store and log
//! directories of this test, passed to the GUI, which starts it as any
//! client does): nothing of another test's state is read or changed, and
//! no stack is started. Checked against the CLI on the same daemon: the
//! list shows every service of the catalog, Off; a refused value (a bool
//! the daemon refuses, a string with forbidden characters) shows the same
//! reason as `set-option` prints; valid values of a port, an enum and a
//! string are what `get-option` then gives; the address and key line the
//! page shows are the CLI's; a client added from the GUI is there for the
//! CLI, and gone once revoked from the GUI; switching nginx on with the
//! stack down shows the daemon's refusal and the row stays Off. The
//! screenshots of the three main screens are left in
//! target/test-artifacts/gui/. At the end nothing of the session runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tails_tests::gui::{artifacts_dir, env_pairs, own_daemon_env, processes_with_env, GuiSession};
use tails_tests::*;

const BASE: &str = "/run/ts-gui-test";

fn env(artifacts: &Path) -> Vec<(String, String)> {
    own_daemon_env(BASE, artifacts)
}

/// `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
}

/// The CLI on this test's daemon.
struct Cli(Vec<(String, String)>);

impl Cli {
    fn run(&self, args: &[&str]) -> Run {
        ts_env(args, &env_pairs(&self.0))
    }

    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
        r
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let r = self.ok(args);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    }

    /// The one line of a refusal, without the `tails-server: ` prefix.
    fn refusal(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_ne!(r.code, 0, "{args:?} must be refused: {r:?}");
        let line = r.stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {r:?}");
        line.strip_prefix("tails-server: ")
            .unwrap_or_else(|| panic!("no `tails-server: ` prefix: {r:?}"))
            .to_owned()
    }

    fn option(&self, service: &str, option: &str) -> String {
        self.ok(&[service, "get-option", option])
            .stdout
            .trim()
            .to_owned()
    }

    fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(format!("{BASE}/run/daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| alive(*p))
    }

    /// The daemon ends on its own once no client is left; `down` if it
    /// does not (never when it has ended: that would start another).
    fn stop_daemon(&self) -> bool {
        if wait_until(10, || self.daemon_pid().is_none()) {
            return true;
        }
        let _ = self.run(&["down"]);
        wait_until(20, || self.daemon_pid().is_none())
    }
}

/// Stops this test's daemon and removes its directories, also after a
/// failure (declared before the session, so dropped after it).
struct Cleanup<'a>(&'a Cli);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.stop_daemon();
        // The services' amnesic state is a tmpfs the daemon leaves mounted
        // (it outlives a daemon's restart).
        let _ = std::process::Command::new("umount")
            .arg(format!("{BASE}/state/amnesic"))
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(BASE);
    }
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {v}"))
        .to_owned()
}

/// A PNG of at least `w`x`h` that is not one flat colour (which would
/// compress to a few kB).
fn assert_screenshot(path: &PathBuf, w: u32, h: u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        b.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let be = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let (width, height) = (be(16), be(20));
    assert!(
        width >= w && height >= h,
        "{}: {width}x{height}",
        path.display()
    );
    assert!(
        b.len() > 20_000,
        "{}: {} bytes: blank?",
        path.display(),
        b.len()
    );
}

#[test]
fn the_gui_shows_and_changes_what_the_daemon_holds() {
    let started = Instant::now();
    let artifacts = artifacts_dir();
    let env = env(&artifacts);
    let cli = Cli(env.clone());
    // A daemon that starts while the host table is loaded takes it for a
    // dead daemon's and removes it: never while another stack runs.
    assert!(
        wait_until(600, || !host_table_loaded()),
        "a stack runs on this host (table inet tails_server is loaded): this test starts a daemon of its own only when none does"
    );
    let cleanup = Cleanup(&cli);
    drop(Cleanup(&cli)); // what a failed run left
    let _ = std::fs::remove_dir_all(artifacts.join("daemon-log"));
    std::fs::create_dir_all(BASE).expect("make the test's directory");

    // The GUI starts the daemon (root, none running).
    let gui = GuiSession::start_with_env(&artifacts, &env_pairs(&env));
    let display = gui.display().to_owned();
    let ready = gui.drive(&["wait-ready"]);
    assert!(
        cli.daemon_pid().is_some(),
        "the GUI started no daemon: {ready}"
    );

    // Every service of the catalog, Off.
    let catalog: Vec<String> = cli
        .json(&["list", "--json"])
        .as_array()
        .expect("list --json is an array")
        .iter()
        .map(|s| text(s, "name"))
        .collect();
    assert!(catalog.contains(&"nginx".to_owned()), "{catalog:?}");
    let listed = gui.drive(&["list"]);
    let shown = listed["services"].as_object().expect("services");
    let mut names: Vec<&String> = shown.keys().collect();
    names.sort();
    let mut want: Vec<&String> = catalog.iter().collect();
    want.sort();
    assert_eq!(names, want, "the GUI's list against `list`: {listed}");
    for (name, state) in shown {
        assert_eq!(state, "Off", "{name}: {listed}");
    }
    assert_screenshot(&gui.screenshot("services", "services.png"), 600, 600);

    // The server page says what status says: down, no store.
    let server = gui.drive(&["server"]);
    assert_eq!(text(&server, "state"), "Down", "{server}");
    assert_eq!(text(&server, "torvm"), "down", "{server}");
    assert_eq!(text(&server, "appvm"), "down", "{server}");
    assert!(
        text(&server, "store").starts_with("Not created"),
        "{server}"
    );

    // Refused: a bool (nginx kept in a store that is not made) and a
    // string with forbidden characters; the GUI shows the daemon's reason.
    let reason = cli.refusal(&["nginx", "set-option", "persistence", "true"]);
    let r = gui.drive(&["set-option", "nginx", "persistence", "true"]);
    assert_eq!(text(&r, "shown"), format!("Refused: {reason}"), "{r}");
    assert_eq!(cli.option("nginx", "persistence"), "false");
    let channel = cli.option("ngircd", "channel");
    let reason = cli.refusal(&["ngircd", "set-option", "channel", "bad channel!"]);
    let r = gui.drive(&["set-option", "ngircd", "channel", "bad channel!"]);
    assert_eq!(text(&r, "shown"), format!("Refused: {reason}"), "{r}");
    assert_eq!(cli.option("ngircd", "channel"), channel);

    // Taken: a port, an enum, a string.
    for (service, option, value) in [
        ("nginx", "virtual-port", "8081"),
        ("nginx", "directory-listing", "on"),
        ("ngircd", "channel", "gui-test"),
    ] {
        assert_ne!(cli.option(service, option), value, "{service} {option}");
        let r = gui.drive(&["set-option", service, option, value]);
        assert_eq!(r["toast"], format!("{option} is changed"), "{r}");
        assert_eq!(
            cli.option(service, option),
            value,
            "{service} {option}: {r}"
        );
    }

    // A client added from the GUI beside one the CLI made: the CLI has
    // it, and the page shows the CLI's address and the key line of the
    // first client (alice).
    cli.ok(&["nginx", "add-client", "alice"]);
    let r = gui.drive(&["add-client", "nginx", "bob"]);
    assert_eq!(r["added"], "bob", "{r}");
    cli.json(&["nginx", "credentials", "bob", "--json"]);
    let creds = cli.json(&["nginx", "credentials", "alice", "--json"]);
    let address = text(&cli.json(&["nginx", "info", "--json"]), "address");
    assert!(address.ends_with(".onion"), "{address}");
    let page = gui.drive(&["credentials", "nginx"]);
    assert_eq!(text(&page, "address"), address, "{page}");
    assert_eq!(text(&page, "key"), text(&creds, "auth-private"), "{page}");
    assert_eq!(page["warning"], false, "client-auth is on: {page}");
    assert_screenshot(
        &gui.screenshot("service:nginx", "service-nginx.png"),
        600,
        600,
    );

    // Revoked from the GUI: gone for the CLI. The last client cannot be
    // revoked (the service would be open to all): the daemon's reason.
    let r = gui.drive(&["revoke", "nginx", "bob"]);
    assert_eq!(r["clients"], serde_json::json!(["alice"]), "{r}");
    let last = cli.refusal(&["nginx", "remove-client", "alice"]);
    assert!(last.contains("last authorized client"), "{last}");
    let gone = cli.refusal(&["nginx", "credentials", "bob"]);
    assert!(gone.contains("no client named bob"), "{gone}");

    // Switched on with the stack down: the daemon's refusal, and Off.
    let reason = cli.refusal(&["nginx", "enable"]);
    let r = gui.drive(&["toggle", "nginx", "on"]);
    assert_eq!(r["changed"], true, "{r}");
    let toast = gui.drive(&["toasts", "--containing", &reason]);
    assert_eq!(toast["toasts"][0], format!("nginx: {reason}"), "{toast}");
    let r = gui.drive(&["wait-state", "nginx", "Off", "--timeout", "20"]);
    assert_eq!(r["state"], "Off", "{r}");
    assert_eq!(cli.json(&["nginx", "info", "--json"])["enabled"], false);

    assert_screenshot(&gui.screenshot("server", "server.png"), 600, 600);

    // Nothing of the session is left, nor the daemon once alone.
    drop(gui);
    assert!(cli.stop_daemon(), "the test's daemon does not stop");
    let left = processes_with_env(&format!("DISPLAY={display}"));
    assert!(left.is_empty(), "left running: {left:?}");
    drop(cleanup);
    eprintln!(
        "gui_offline: {:.0} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        artifacts.display()
    );
}
