//! Issue 5 end to end on the testnet: `nginx enable` publishes the App VM's
//! web server as an onion service with client authorization; a tor client in
//! the outside namespace holding the key fetches the page; a fresh client
//! without the key gets tor's "missing client authorization" (SOCKS 0xF4);
//! after `disable` the address no longer answers; after `enable` again the
//! same address comes back. Bad option values are refused and change nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tails_tests::torclient::{control, http_get, with_newnym_after, Fetch, FreshClient};
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-onion-test-state";
const PAGE: &str = "tails-server onion test page";

fn env() -> [(&'static str, &'static str); 1] {
    [("TAILS_SERVER_STATE_DIR", STATE)]
}

#[test]
fn nginx_onion_service_with_client_authorization() {
    clean_start(Path::new(RUNTIME));
    let _ = std::fs::remove_dir_all(STATE);
    // The suite's testnet if one runs (see daemon.rs), else a new one.
    let _testnet = TestnetGuard::join();
    // A daemon started in another network namespace could not reach the
    // testnet's relays: `up --network local` there is refused in one line,
    // before anything starts; `down` then ends that daemon.
    let other = "ts-onion-other";
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run ip")
    };
    let _ = ip(&["netns", "del", other]);
    assert!(ip(&["netns", "add", other]).success());
    let there: Run = Command::new("ip")
        .args(["netns", "exec", other])
        .arg(bin())
        .args(["up", "--network", "local"])
        .envs(env())
        .output()
        .expect("run tails-server in the other namespace")
        .into();
    let down = ts_env(&["down"], &env());
    let _ = ip(&["netns", "del", other]);
    assert_ne!(there.code, 0, "{there:?}");
    assert!(
        there
            .stderr
            .contains("started in another network namespace")
            && there.stderr.trim().lines().count() == 1,
        "{there:?}"
    );
    assert_eq!(down.code, 0, "{down:?}");
    assert!(pids_named("qemu-system").is_empty(), "a VM was started");
    let r = ts_env(&["up", "--network", "local"], &env());
    assert_eq!(r.code, 0, "up: {r:?}");
    ts_ok(&["exec", "appvm", "--", "sh", "-c", &page_script(PAGE)]);

    // The catalog and bad input first: nothing changes on error.
    let r = ts_env(&["list"], &env());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("name: nginx"), "{r:?}");
    let r = ts_env(&["nginx", "set-option", "allow-lan", "yes"], &env());
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("allow-lan takes true or false"), "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    let r = ts_env(&["nginx", "get-option", "allow-lan"], &env());
    assert_eq!(r.stdout.trim(), "false", "{r:?}");
    let r = ts_env(&["nosuch", "info"], &env());
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("tails-server list"), "{r:?}");

    // Enable: published, with client authorization.
    let t0 = Instant::now();
    let r = ts_env(&["nginx", "enable"], &env());
    assert_eq!(r.code, 0, "enable: {r:?}");
    let address = yaml_field(&r.stdout, "address");
    // The address only: the key and its QR code stay out of the test log
    // (run-tests.sh shows the tests' lines), throwaway as they are.
    println!("enable took {:.1} s: {address}", t0.elapsed().as_secs_f64());
    let auth = yaml_field(&r.stdout, "auth-private");
    assert!(
        address.ends_with(".onion") && address.len() == 62,
        "{address}"
    );
    let id = address.trim_end_matches(".onion");
    assert!(
        auth.starts_with(&format!("{id}:descriptor:x25519:")),
        "{auth}"
    );
    let st = ts_env(&["nginx", "status", "--json"], &env());
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("json");
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(v["published"], true, "{v}");
    // The state file (options, onion key, client keys) is 0600.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(Path::new(STATE).join("amnesic/services/nginx/state.json"))
            .expect("state file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "state.json");

    // The testnet's client, given the key, fetches the page.
    let tn = tails_testnet::Config::default();
    let cookie = tn.state_dir.join("tsclient/control_auth_cookie");
    let ctl: SocketAddr = "10.100.0.2:9051".parse().expect("addr");
    let socks: SocketAddr = "10.100.0.2:9050".parse().expect("addr");
    // The control port takes the key in base64; the .auth_private line has it
    // in base32.
    let key32 = auth.rsplit(':').next().expect("key");
    let raw = data_encoding::BASE32_NOPAD
        .decode(key32.to_ascii_uppercase().as_bytes())
        .expect("base32 key");
    let key64 = data_encoding::BASE64.encode(&raw);
    let add = format!("ONION_CLIENT_AUTH_ADD {id} x25519:{key64}");
    let reply = control(ctl, &cookie, &add).expect("control");
    assert_eq!(
        reply.first().map(String::as_str),
        Some("250 OK"),
        "{reply:?}"
    );
    assert!(
        reply
            .get(1)
            .is_some_and(|l| l.starts_with("250 ") || l.starts_with("252 ")),
        "the key must be taken: {reply:?}"
    );
    let view = control(ctl, &cookie, &format!("ONION_CLIENT_AUTH_VIEW {id}")).expect("control");
    assert!(
        view.iter()
            .any(|l| l.starts_with(&format!("250-CLIENT {id} x25519:"))),
        "the client holds the key: {view:?}"
    );
    let t1 = Instant::now();
    let got = poll(180, || {
        match http_get(socks, &address, 80, Duration::from_secs(60)) {
            Fetch::Ok { body, .. } if body.contains(PAGE) => Some(()),
            _ => None,
        }
    });
    assert!(
        got.is_some(),
        "the authorized client never got the page: {:?}",
        http_get(socks, &address, 80, Duration::from_secs(60))
    );
    println!("authorized fetch after {:.1} s", t1.elapsed().as_secs_f64());

    // A fresh client without the key: tor says "missing client authorization".
    let join = tails_testnet::join_options(&tn).expect("join options");
    let fresh = FreshClient::start(
        "ts-outside",
        &join,
        "10.100.0.2:9070".parse().expect("addr"),
    );
    let mut last = Fetch::Failed("not tried".into());
    let refused = poll(180, || {
        last = http_get(fresh.socks, &address, 80, Duration::from_secs(60));
        (last == Fetch::Refused(0xF4)).then_some(())
    });
    assert!(
        refused.is_some(),
        "a client without the key must get 0xF4, got {last:?}"
    );
    drop(fresh);

    // Disable: the address stops answering.
    let r = ts_env(&["nginx", "disable"], &env());
    assert_eq!(r.code, 0, "disable: {r:?}");
    let st = ts_env(&["nginx", "status", "--json"], &env());
    let v: serde_json::Value = serde_json::from_str(&st.stdout).expect("json");
    assert_eq!(v["published"], false, "{v}");
    assert_eq!(v["running"], false, "{v}");
    let after = http_get(socks, &address, 80, Duration::from_secs(90));
    assert!(
        !matches!(after, Fetch::Ok { .. }),
        "still answering after disable: {after:?}"
    );

    // Enable again: the same address, and the page again.
    let r = ts_env(&["nginx", "enable"], &env());
    assert_eq!(r.code, 0, "enable again: {r:?}");
    assert_eq!(
        yaml_field(&r.stdout, "address"),
        address,
        "the address must not change"
    );
    let page = || match http_get(socks, &address, 80, Duration::from_secs(60)) {
        Fetch::Ok { body, .. } if body.contains(PAGE) => Some(()),
        _ => None,
    };
    // The client tried the address while it was down: "New Identity" makes
    // it forget tor's failure caches, and the key it was given over the
    // control port with them: it is given again.
    let again = with_newnym_after(
        "enable again",
        |limit| poll(limit.as_secs(), page),
        || {
            let r = control(ctl, &cookie, "SIGNAL NEWNYM").expect("control");
            assert_eq!(r.get(1).map(String::as_str), Some("250 OK"), "{r:?}");
            let r = control(ctl, &cookie, &add).expect("control");
            assert_eq!(r.get(1).map(|l| l.starts_with("25")), Some(true), "{r:?}");
        },
        Duration::from_secs(180),
    );
    assert!(again.is_some(), "the page did not come back after enable");

    // Clients by name, and their credentials.
    let creds = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["nginx", "credentials"];
        a.extend(args);
        a.push("--json");
        let r = ts_env(&a, &env());
        assert_eq!(r.code, 0, "{a:?}: {r:?}");
        serde_json::from_str(&r.stdout).expect("json")
    };
    let r = ts_env(&["nginx", "add-client", "alice"], &env());
    assert_eq!(r.code, 0, "{r:?}");
    let alice = creds(&["alice"]);
    let default = creds(&["default"]);
    assert_eq!(alice["address"], address.as_str());
    assert_ne!(alice["auth-private"], default["auth-private"]);
    assert_eq!(default["auth-private"], auth.as_str());
    let svg = Path::new(STATE).join("qr.svg");
    let r = ts_env(
        &[
            "nginx",
            "credentials",
            "--svg",
            svg.to_str().expect("utf-8"),
        ],
        &env(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let text = std::fs::read_to_string(&svg).expect("svg");
    assert!(text.contains("<svg"), "{text:.100}");
    for bad in [
        &["nginx", "add-client", "bad name"][..],
        &["nginx", "add-client", "alice"][..],
    ] {
        let r = ts_env(bad, &env());
        assert_ne!(r.code, 0, "{bad:?}: {r:?}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    }
    let r = ts_env(&["nginx", "remove-client", "alice"], &env());
    assert_eq!(r.code, 0, "{r:?}");
    let r = ts_env(&["nginx", "credentials", "alice"], &env());
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no client named alice"), "{r:?}");
    // Client authorization off: a deliberate option, with a warning.
    let r = ts_env(&["nginx", "set-option", "client-auth", "false"], &env());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("WARNING"), "{r:?}");
    let open = creds(&[]);
    assert_eq!(open["client-auth"], false, "{open}");
    assert!(open.get("auth-private").is_none(), "{open}");

    let r = ts_env(&["down"], &env());
    assert_eq!(r.code, 0, "{r:?}");
    let _ = std::fs::remove_dir_all(STATE);
}
