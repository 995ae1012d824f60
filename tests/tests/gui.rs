//! Issue 13, point 3, on the testnet: the real `tails-server-gui`, driven
//! through its accessibility tree under Xvfb, publishes a service and hands
//! out what a person passes on, and the testnet's Tor clients use exactly
//! what the GUI showed.
//!
//! With the stack up on the local network: nginx switched on in the GUI is
//! shown Published (the GUI follows the daemon's pushed events); a Tor
//! client given the address and key line read from the GUI's widgets
//! fetches the page; an option changed in the GUI is the daemon's value; a
//! refused value shows the daemon's reason; a client revoked in the GUI is
//! refused by tor (SOCKS 0xF5 or 0xF4) while the GUI's key still fetches;
//! client authorization turned off shows the warning; the server stopped
//! from the GUI is down. The screenshots of the published service's page and of the server page are
//! left in target/test-artifacts/gui/stack/.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tails_tests::gui::{artifacts_dir, processes_with_env, qr_codes_in, GuiSession};
use tails_tests::torclient::{http_get, Fetch, FreshClient};
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-gui-stack-state";
const PAGE: &str = "tails-server gui test page";

fn env() -> [(&'static str, &'static str); 1] {
    [("TAILS_SERVER_STATE_DIR", STATE)]
}

fn t_ok(args: &[&str]) -> Run {
    let r = ts_env(args, &env());
    assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
    r
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {v}"))
        .to_owned()
}

/// A fresh Tor client in the outside namespace holding `keys`: what it got
/// from `address` once it got the page (`want_page`) or tor's refusal of
/// its client authorization (0xF5: its key is not one of the service's;
/// 0xF4: it has none that fits), or at the end of `secs`.
fn fetch_with(keys: &[&str], port: u16, address: &str, secs: u64, want_page: bool) -> Fetch {
    let tn = tails_testnet::Config::default();
    let join = tails_testnet::join_options(&tn).expect("join options");
    let socks: SocketAddr = format!("10.100.0.2:{port}").parse().expect("addr");
    let client = FreshClient::with_keys("ts-outside", &join, socks, keys);
    let mut last = Fetch::Failed("not tried".into());
    let _ = poll(secs, || {
        last = http_get(client.socks, address, 80, Duration::from_secs(60));
        let done = match &last {
            Fetch::Ok { body, .. } => want_page && body.contains(PAGE),
            Fetch::Refused(0xF4 | 0xF5) => !want_page,
            _ => false,
        };
        done.then_some(())
    });
    last
}

fn cleanup() {
    let _ = ts_env(&["down"], &env());
    let _ = std::process::Command::new("umount")
        .arg(format!("{STATE}/amnesic"))
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(STATE);
}

#[test]
fn the_gui_publishes_a_service_and_its_key_is_what_tor_takes() {
    let started = Instant::now();
    clean_start(Path::new(RUNTIME));
    cleanup();
    // The suite's testnet if one runs (see daemon.rs), else a new one.
    let _testnet = TestnetGuard::join();
    t_ok(&["up", "--network", "local"]);
    t_ok(&["exec", "appvm", "--", "sh", "-c", &page_script(PAGE)]);

    let artifacts = artifacts_dir().join("stack");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).expect("artifacts");
    let gui = GuiSession::start_with_env(&artifacts, &env());
    let display = gui.display().to_owned();
    gui.drive(&["wait-ready"]);

    // Switched on in the GUI; shown published, from the daemon's events.
    let t0 = Instant::now();
    let r = gui.drive(&["toggle", "nginx", "on"]);
    assert_eq!(r["changed"], true, "{r}");
    let r = gui.drive(&["wait-state", "nginx", "Published", "--timeout", "300"]);
    assert_eq!(r["state"], "Published", "{r}");
    println!(
        "switched on -> shown published: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let st: serde_json::Value =
        serde_json::from_str(&t_ok(&["nginx", "status", "--json"]).stdout).expect("json");
    assert_eq!(st["published"], true, "the daemon agrees: {st}");
    // bob is the client the GUI will revoke; its key comes from the CLI.
    let bob = t_ok(&["nginx", "add-client", "bob"]);
    let bob_key = yaml_field(&bob.stdout, "auth-private");
    assert!(bob_key.contains(":descriptor:x25519:"), "{bob:?}");

    // What the GUI shows is what a person passes on (the key line of the
    // first client, `default`): a client holding exactly that fetches the
    // page.
    let shown = gui.drive(&["credentials", "nginx"]);
    let address = text(&shown, "address");
    let key = text(&shown, "key");
    assert!(
        address.ends_with(".onion") && address.len() == 62,
        "{shown}"
    );
    assert!(
        key.starts_with(&format!(
            "{}:descriptor:x25519:",
            address.trim_end_matches(".onion")
        )),
        "{shown}"
    );
    assert_eq!(shown["warning"], false, "client-auth is on: {shown}");
    let got = fetch_with(&[&key], 9071, &address, 240, true);
    assert!(
        matches!(&got, Fetch::Ok { body, .. } if body.contains(PAGE)),
        "the GUI's key did not fetch the page: {got:?}"
    );
    // The QR code beside the address is the address (the key line's, below
    // it, may be cut off by the window's edge).
    let shot = gui.screenshot("service:nginx", "service-nginx-published.png");
    let codes = qr_codes_in(&shot);
    assert!(
        codes.contains(&address),
        "the page's QR codes read {codes:?}, not the address {address}"
    );
    if codes.len() > 1 {
        assert!(
            codes.contains(&key),
            "the QR codes besides the address: not the key line"
        );
    }

    // An option changed in the GUI is the daemon's value, applied to the
    // running service; a refused one shows the daemon's reason.
    let r = gui.drive(&["set-option", "nginx", "directory-listing", "on"]);
    assert_eq!(r["toast"], "directory-listing is changed", "{r}");
    assert_eq!(
        t_ok(&["nginx", "get-option", "directory-listing"])
            .stdout
            .trim(),
        "on"
    );
    let refused = ts_env(&["nginx", "set-option", "persistence", "true"], &env());
    assert_ne!(refused.code, 0, "{refused:?}");
    let reason = refused
        .stderr
        .trim()
        .strip_prefix("tails-server: ")
        .unwrap_or_default()
        .to_owned();
    let r = gui.drive(&["set-option", "nginx", "persistence", "true"]);
    assert_eq!(text(&r, "shown"), format!("Refused: {reason}"), "{r}");

    // bob revoked in the GUI: tor refuses its key; the GUI's still works.
    let r = gui.drive(&["revoke", "nginx", "bob"]);
    assert!(
        !r["clients"]
            .as_array()
            .is_some_and(|c| c.iter().any(|n| n == "bob")),
        "{r}"
    );
    let got = fetch_with(&[&bob_key], 9072, &address, 240, false);
    assert!(
        matches!(got, Fetch::Refused(0xF4 | 0xF5)),
        "bob's key after the revoke: {got:?}"
    );
    let got = fetch_with(&[&key], 9073, &address, 240, true);
    assert!(
        matches!(&got, Fetch::Ok { body, .. } if body.contains(PAGE)),
        "the GUI's key after bob's revoke: {got:?}"
    );

    // The server page: up on the local network, tor bootstrapped.
    let server = gui.drive(&["server"]);
    assert!(text(&server, "state").starts_with("Up on"), "{server}");
    assert!(
        text(&server["tor_bootstrap"], "text").starts_with("Tor: 100%"),
        "{server}"
    );
    gui.screenshot("server", "server-up.png");

    // Client authorization turned off in the GUI: the warning shows.
    let r = gui.drive(&["set-option", "nginx", "client-auth", "false"]);
    assert_eq!(r["toast"], "client-auth is changed", "{r}");
    let shown = gui.drive(&["credentials", "nginx"]);
    assert_eq!(shown["warning"], true, "{shown}");
    assert_eq!(text(&shown, "key"), "", "no key line without it: {shown}");

    // Stopped from the GUI (asked first): the stack is down.
    let r = gui.drive(&["stop-server"]);
    assert!(
        r["state"] == "Down" || text(&r, "state").starts_with("Not connected"),
        "{r}"
    );
    assert!(
        wait_until(60, || !host_table_loaded()),
        "the stack is down: no host table"
    );

    drop(gui);
    let left = processes_with_env(&format!("DISPLAY={display}"));
    assert!(left.is_empty(), "left running: {left:?}");
    cleanup();
    println!("gui (stack): {:.0} s", started.elapsed().as_secs_f64());
}
