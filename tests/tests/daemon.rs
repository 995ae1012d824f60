//! Issue 9 end to end: the daemon is the one owner of the state and applies
//! changes at once, on the testnet with real tor clients.
//!
//! Without a stack: a key tor made itself is imported and gives the address
//! tor computed, and is exported back byte for byte (0600); bad key files,
//! bad public keys and a damaged state file each give one line naming what
//! is wrong and change nothing. With the stack: 20 `add-client` calls during
//! an `enable` leave all 20 authorized; a client given by its public key
//! fetches, and after `remove-client` gets SOCKS 0xF4 while another still
//! fetches; a client added to the running service fetches; a new
//! `virtual-port` is served at once; a service with `autostart` on is
//! published after `down` + `up` without `enable`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tails_tests::torclient::{http_get, with_newnym_after, Fetch, FreshClient};
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-daemon-test-state";
const PAGE: &str = "tails-server daemon test page";

fn t(args: &[&str]) -> Run {
    ts_env(args, &[("TAILS_SERVER_STATE_DIR", STATE)])
}

fn t_ok(args: &[&str]) -> Run {
    let r = t(args);
    assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
    r
}

/// A failure with one line on stderr that contains `want`.
fn refused(args: &[&str], want: &str) -> Run {
    let r = t(args);
    assert_ne!(r.code, 0, "{args:?} must fail: {r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {r:?}");
    assert!(r.stderr.contains(want), "{args:?}: want {want:?}: {r:?}");
    r
}

fn json(args: &[&str]) -> serde_json::Value {
    let r = t_ok(args);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

fn nginx_address() -> String {
    json(&["nginx", "info", "--json"])["address"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A service key made by tor itself (HiddenServiceDir, DisableNetwork 1):
/// its `hs_ed25519_secret_key` file and the address tor wrote.
fn tor_made_key(dir: &Path) -> (PathBuf, String) {
    let _ = std::fs::remove_dir_all(dir);
    let hs = dir.join("hs");
    std::fs::create_dir_all(&hs).expect("mkdir");
    for d in [dir, &hs] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod");
    }
    let torrc = dir.join("torrc");
    std::fs::write(
        &torrc,
        format!(
            "DataDirectory {}\nDisableNetwork 1\nSocksPort 0\nHiddenServiceDir {}\nHiddenServicePort 80 127.0.0.1:1\nLog notice file {}\n",
            dir.join("data").display(),
            hs.display(),
            dir.join("tor.log").display()
        ),
    )
    .expect("torrc");
    let mut tor = Command::new("/usr/sbin/tor")
        .arg("-f")
        .arg(&torrc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tor");
    let ok = wait_until(60, || hs.join("hostname").exists());
    let _ = tor.kill();
    let _ = tor.wait();
    assert!(
        ok,
        "tor wrote no hostname: {:?}",
        std::fs::read_to_string(dir.join("tor.log"))
    );
    let host = std::fs::read_to_string(hs.join("hostname")).expect("hostname");
    (hs.join("hs_ed25519_secret_key"), host.trim().to_owned())
}

fn page_via(client: &FreshClient, address: &str, port: u16) -> Fetch {
    http_get(client.socks, address, port, Duration::from_secs(60))
}

/// Poll until `client` (`who`) gets the page (true) or `secs` pass; says
/// how long it took (CI's log shows where the test's time goes).
fn fetches(who: &str, client: &FreshClient, address: &str, port: u16, secs: u64) -> bool {
    let t0 = Instant::now();
    let got = poll(secs, || match page_via(client, address, port) {
        Fetch::Ok { body, .. } if body.contains(PAGE) => Some(()),
        _ => None,
    })
    .is_some();
    let took = t0.elapsed().as_secs_f64();
    if got {
        println!("{who}: the page on port {port} after {took:.1} s");
    } else {
        println!("{who}: no page on port {port} in {took:.1} s");
    }
    got
}

fn auth_line(client: &str) -> String {
    let r = t_ok(&["nginx", "credentials", client, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    v["auth-private"].as_str().expect("auth-private").to_owned()
}

#[test]
fn the_daemon_owns_the_state_and_applies_changes_at_once() {
    clean_start(Path::new(RUNTIME));
    let _ = std::fs::remove_dir_all(STATE);
    let scratch = std::env::temp_dir().join(format!("ts-daemon-test-{}", std::process::id()));

    // --- Without a stack: keys and bad input. ---
    let (secret, tor_address) = tor_made_key(&scratch.join("tor1"));
    let r = t_ok(&["nginx", "import-key", secret.to_str().expect("utf-8")]);
    assert!(r.stdout.contains(&tor_address), "{r:?}");
    assert_eq!(nginx_address(), tor_address, "the address tor computed");
    let exported = scratch.join("exported_key");
    t_ok(&["nginx", "export-key", exported.to_str().expect("utf-8")]);
    assert_eq!(
        std::fs::read(&exported).expect("exported"),
        std::fs::read(&secret).expect("tor's"),
        "exported in tor's format, byte for byte"
    );
    let mode = std::fs::metadata(&exported).expect("meta").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let public = secret.with_file_name("hs_ed25519_public_key");
    refused(
        &["nginx", "import-key", public.to_str().expect("utf-8")],
        "not a tor v3 onion service secret key",
    );
    let (other, other_address) = tor_made_key(&scratch.join("tor2"));
    refused(
        &["nginx", "import-key", other.to_str().expect("utf-8")],
        "import-key --replace",
    );
    assert_eq!(nginx_address(), tor_address, "nothing changed");
    t_ok(&[
        "nginx",
        "import-key",
        "--replace",
        other.to_str().expect("utf-8"),
    ]);
    assert_eq!(nginx_address(), other_address);
    refused(
        &["nginx", "add-client", "eve", "--public-key", "not-a-key"],
        "52 base32 characters",
    );
    let clients = json(&["nginx", "info", "--details", "--json"])["clients"].clone();
    assert!(!clients.to_string().contains("eve"), "{clients}");
    // A damaged state file: one line naming it, and it is left as it was.
    let file = Path::new(STATE).join("amnesic/services/nginx/state.json");
    let good = std::fs::read(&file).expect("state file");
    let bad = &good[..good.len() / 2];
    std::fs::write(&file, bad).expect("damage");
    for args in [
        &["nginx", "info"][..],
        &["nginx", "set-option", "directory-listing", "on"][..],
        &["nginx", "add-client", "zed"][..],
    ] {
        refused(args, file.to_str().expect("utf-8"));
        assert_eq!(
            std::fs::read(&file).expect("read"),
            bad,
            "{args:?} changed it"
        );
    }
    std::fs::write(&file, &good).expect("restore");
    assert_eq!(nginx_address(), other_address);

    // Autostart at boot: the systemd unit is enabled and disabled.
    let enabled = || {
        std::process::Command::new("systemctl")
            .args(["is-enabled", "--quiet", "tails-server.service"])
            .status()
            .is_ok_and(|s| s.success())
    };
    let r = t_ok(&["autostart", "on", "--network", "local"]);
    assert!(r.stdout.contains("at boot"), "{r:?}");
    assert!(enabled(), "autostart on enables tails-server.service");
    let settings =
        std::fs::read_to_string(Path::new(STATE).join("settings.json")).expect("settings");
    assert!(settings.contains("\"local\""), "{settings}");
    refused(
        &[
            "autostart",
            "on",
            "--network",
            "none",
            "--bridge",
            "192.0.2.7:443 AAAA",
        ],
        "bridges need an uplink",
    );
    t_ok(&["autostart", "off"]);
    assert!(!enabled(), "autostart off disables it");

    // --- The stack on the testnet (a fresh one: the suite's first user). ---
    let testnet = TestnetGuard::fresh();
    t_ok(&["up", "--network", "local"]);
    t_ok(&["exec", "appvm", "--", "sh", "-c", &page_script(PAGE)]);

    // 20 add-client calls while `enable` runs: all 20 are authorized.
    let t0 = Instant::now();
    let enable = std::thread::spawn(|| t(&["nginx", "enable"]));
    std::thread::sleep(Duration::from_millis(300));
    let adds: Vec<_> = (1..=20)
        .map(|i| std::thread::spawn(move || (i, t(&["nginx", "add-client", &format!("c{i:02}")]))))
        .collect();
    let r = enable.join().expect("enable thread");
    assert_eq!(r.code, 0, "enable: {r:?}");
    for a in adds {
        let (i, r) = a.join().expect("add-client thread");
        assert_eq!(r.code, 0, "add-client c{i:02}: {r:?}");
    }
    println!(
        "enable + 20 concurrent add-client: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let st = json(&["nginx", "status", "--json"]);
    assert_eq!(st["published"], true, "{st}");
    assert_eq!(st["authorized-clients"], 21, "default and c01..c20: {st}");
    let details = json(&["nginx", "info", "--details", "--json"]);
    for i in 1..=20 {
        assert!(
            details["clients"]
                .to_string()
                .contains(&format!("\"c{i:02}\"")),
            "c{i:02}: {details}"
        );
    }

    // Alice (the first client) and Bob, who gave only his public key.
    let address = nginx_address();
    let bob = tails_onion::ClientKey::generate().expect("bob's key");
    let r = t_ok(&[
        "nginx",
        "add-client",
        "bob",
        "--public-key",
        &bob.auth_public_line(),
    ]);
    assert!(!r.stdout.contains("auth-private"), "{r:?}");
    let onion = tails_onion::OnionAddress::parse(&address).expect("address");
    let bob_line = bob.auth_private_line(&onion).to_string();
    let join = tails_testnet::join_options(&tails_testnet::Config::default()).expect("join");
    let sock = |p: u16| -> SocketAddr { format!("10.100.0.2:{p}").parse().expect("addr") };
    let alice = FreshClient::with_keys("ts-outside", &join, sock(9071), &[&auth_line("default")]);
    let bobc = FreshClient::with_keys("ts-outside", &join, sock(9072), &[&bob_line]);
    assert!(
        fetches("alice", &alice, &address, 80, 240),
        "alice never got the page"
    );
    assert!(
        fetches("bob", &bobc, &address, 80, 240),
        "bob never got the page"
    );
    // Bob revoked: his tor can no longer decrypt the descriptor. Tor says
    // so with SOCKS extended error 0xF5 ("invalid client authorization":
    // it holds a key, which is no longer one of the service's); a client
    // without any key gets 0xF4 ("missing"), as the onion test shows.
    let t1 = Instant::now();
    t_ok(&["nginx", "remove-client", "bob"]);
    let mut last = Fetch::Failed("not tried".into());
    let revoked = poll(240, || {
        last = page_via(&bobc, &address, 80);
        matches!(last, Fetch::Refused(0xF4 | 0xF5)).then_some(())
    });
    assert!(
        revoked.is_some(),
        "bob must be refused after remove-client, got {last:?}"
    );
    println!("bob is refused with SOCKS error {last:?}");
    println!(
        "bob refused {:.1} s after remove-client",
        t1.elapsed().as_secs_f64()
    );
    assert!(
        fetches("alice after bob's revoke", &alice, &address, 80, 240),
        "alice lost the page"
    );
    drop(bobc);

    // A client added to the running service fetches, no disable/enable.
    let r = t_ok(&["nginx", "add-client", "carol"]);
    let carol_line = yaml_field(&r.stdout, "auth-private");
    let carol = FreshClient::with_keys("ts-outside", &join, sock(9073), &[&carol_line]);
    assert!(
        fetches("carol", &carol, &address, 80, 240),
        "carol never got the page"
    );
    drop(carol);

    // A new virtual port is served at once.
    t_ok(&["nginx", "set-option", "virtual-port", "8080"]);
    assert!(
        fetches("alice on the new port", &alice, &address, 8080, 240),
        "not served on 8080"
    );

    // Autostart: published after down + up, without enable.
    t_ok(&["nginx", "set-option", "autostart", "true"]);
    t_ok(&["down"]);
    t_ok(&["up", "--network", "local"]);
    assert!(
        wait_until(120, || json(&["nginx", "status", "--json"])["published"]
            == true),
        "autostart: {}",
        json(&["nginx", "status", "--json"])
    );
    assert_eq!(nginx_address(), address);
    t_ok(&["exec", "appvm", "--", "sh", "-c", &page_script(PAGE)]);
    // Alice's tor still holds the descriptor of before the restart, whose
    // introduction points are gone: told NEWNYM after NEWNYM_AFTER without
    // the page, as Tor Browser's New Identity does, it forgets them (tor's
    // failure caches would keep it away 2-3 minutes more; tor's client,
    // not the stack).
    let who = "alice after the restart";
    let back = with_newnym_after(
        who,
        |limit| fetches(who, &alice, &address, 8080, limit.as_secs()).then_some(()),
        || alice.new_identity(),
        Duration::from_secs(180),
    );
    assert!(back.is_some(), "autostarted service not reached");
    drop(alice);

    t_ok(&["down"]);
    // In the suite (run-tests.sh) the testnet stays up: the next tests that
    // use it (gui, onion, persistent_stack, services) join it as it is
    // (`testnet up` reuses a running one); tor_network ends it, and the
    // fault and leak tests end any other before they start their own. Run
    // on its own, this test ends it.
    drop(testnet);
    let _ = std::fs::remove_dir_all(STATE);
    let _ = std::fs::remove_dir_all(&scratch);
}
