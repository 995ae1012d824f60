//! Issue 3 on the real thing: the embedded private Tor network in its own
//! namespace, the Tor VM's tor bootstrapping on it, and the App VM reaching
//! the outside only through Tor (transparent TransPort and DNSPort).

use std::path::Path;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const OUTSIDE: &str = "10.100.0.2";
const HOST_SIDE: &str = "10.100.0.1";

fn testnet_json() -> serde_json::Value {
    let r = ts_ok(&["testnet", "status", "--json"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("testnet status --json ({e}): {r:?}"))
}

/// `curl ARGS` in the App VM, killed after `secs`.
fn appvm_curl(secs: u32, args: &[&str]) -> Run {
    let t = secs.to_string();
    let mut argv = vec!["exec", "appvm", "--timeout", &t, "--", "curl"];
    argv.extend_from_slice(args);
    ts(&argv)
}

fn netns_exists() -> bool {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("ts-outside"))
        .unwrap_or(false)
}

#[test]
fn app_vm_reaches_the_outside_only_through_tor() {
    let _ = ts(&["down"]);
    let _ = ts(&["testnet", "down"]);

    // The private network, polled until usable.
    let r = ts(&["testnet", "up"]);
    assert_eq!(r.code, 0, "testnet up: {r:?}");
    let tn = testnet_json();
    assert_eq!(tn["up"], true, "{tn}");
    assert!(tn["relays"].as_u64().unwrap_or(0) >= 3, "{tn}");
    assert!(tn["exits"].as_u64().unwrap_or(0) >= 1, "{tn}");
    assert!(tn["hsdirs"].as_u64().unwrap_or(0) >= 1, "{tn}");
    let join = tn["join_torrc"]
        .as_str()
        .expect("join torrc path")
        .to_owned();
    let join_text = std::fs::read_to_string(&join).expect("read join torrc");
    assert!(
        join_text.matches("DirAuthority").count() >= 3,
        "{join_text}"
    );
    let web_log = tn["web_log"].as_str().expect("web log path").to_owned();

    // The stack on it; up returns once tor has bootstrapped.
    let r = ts(&["up", "--network", "local"]);
    assert_eq!(r.code, 0, "up --network local: {r:?}");
    assert!(r.stdout.contains("bootstrapped"), "{r:?}");
    let st = status_json();
    assert_eq!(st["network"], "local", "{st}");
    assert_eq!(vm_status(&st, "torvm")["tor"]["progress"], 100, "{st}");
    // With an uplink, only the Tor VM's QEMU shares the host's network
    // namespace (its user-mode network makes tor's connections, under the
    // host table); the App VM's QEMU and both vsock backends have none.
    let net_ns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns");
    let mine = std::fs::read_link("/proc/self/ns/net").expect("ns");
    let rt = std::path::Path::new("/run/tails-server");
    use tails_tests::faults::{pid_of, Part};
    assert_eq!(net_ns(pid_of(Part::TorVm, rt).expect("torvm qemu")), mine);
    assert_ne!(net_ns(pid_of(Part::AppVm, rt).expect("appvm qemu")), mine);
    for p in pids_named("vhost-device") {
        assert_ne!(net_ns(p), mine, "a vsock backend has no network");
    }

    // The App VM fetches the outside page through Tor…
    let before = std::fs::read_to_string(&web_log).unwrap_or_default();
    let r = appvm_curl(
        90,
        &[
            "-sS",
            "--max-time",
            "80",
            &format!("http://{OUTSIDE}:8080/"),
        ],
    );
    assert_eq!(r.code, 0, "fetch through Tor: {r:?}");
    assert!(
        r.stdout.contains("tails-server testnet outside page"),
        "{r:?}"
    );
    // …and the server saw a relay of the testnet as the client, never the host.
    let log = std::fs::read_to_string(&web_log).expect("web log");
    let new: String = log.get(before.len()..).unwrap_or("").to_owned();
    assert!(
        new.contains(OUTSIDE),
        "the exit relay must be the client: {new}"
    );
    assert!(
        !log.contains(HOST_SIDE),
        "the host's address reached the outside server: {log}"
    );

    // Names resolve through tor's DNSPort (the App VM's resolver is 10.1.2.1:53).
    let r = ts(&[
        "exec",
        "appvm",
        "--timeout",
        "90",
        "--",
        "getent",
        "hosts",
        "outside.test",
    ]);
    assert_eq!(r.code, 0, "name lookup through Tor: {r:?}");
    assert!(r.stdout.contains(OUTSIDE), "{r:?}");
    let r = appvm_curl(
        90,
        &["-sS", "--max-time", "80", "http://outside.test:8080/"],
    );
    assert_eq!(r.code, 0, "fetch by name through Tor: {r:?}");

    // Nothing but the redirected ports: tor's control socket has no TCP port
    // and there is no SOCKS port on 10.1.2.1.
    let r = appvm_curl(
        30,
        &[
            "-sS",
            "--max-time",
            "5",
            "--socks5",
            "10.1.2.1:9050",
            "http://10.100.0.2:8080/",
        ],
    );
    assert_ne!(r.code, 0, "a SOCKS port answered: {r:?}");

    // The Tor VM's QEMU killed: the supervisor starts it again (the App VM
    // runs on), and the way out through tor comes back by itself. (That the
    // App VM reaches nothing while the Tor VM is down is the leak suite's
    // part, with no daemon to bring it back.)
    let pid = vm_status(&status_json(), "torvm")["pid"]
        .as_u64()
        .expect("torvm pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    assert!(
        wait_until(180, || status_json()["supervisor"]["incidents"]
            .to_string()
            .contains("the Tor VM is back")),
        "the Tor VM did not come back: {}",
        status_json()
    );
    let again = poll(180, || {
        let r = appvm_curl(
            130,
            &[
                "-sS",
                "--max-time",
                "120",
                &format!("http://{OUTSIDE}:8080/"),
            ],
        );
        (r.code == 0).then_some(r)
    });
    assert!(
        again.is_some(),
        "the App VM's way out through the restarted Tor VM did not come back"
    );

    // Teardown leaves nothing.
    ts_ok(&["down"]);
    let r = ts_ok(&["testnet", "down"]);
    assert!(r.stdout.contains("down"), "{r:?}");
    assert!(!netns_exists(), "namespace left behind");
    assert!(
        pids_exact("tor").is_empty(),
        "tor processes left: {:?}",
        pids_exact("tor")
    );
    assert!(
        pids_exact("dnsmasq").is_empty(),
        "dnsmasq left: {:?}",
        pids_exact("dnsmasq")
    );
    assert!(
        wait_until(5, || leftovers(Path::new(RUNTIME)).is_empty()),
        "{:?}",
        leftovers(Path::new(RUNTIME))
    );
    assert!(!Path::new(&join).exists(), "testnet state left behind");
}

#[test]
fn local_network_needs_the_testnet() {
    let _ = ts(&["down"]);
    let _ = ts(&["testnet", "down"]);
    let r = ts(&["up", "--network", "local"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("tails-server testnet up"), "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {r:?}");
    assert!(
        wait_until(5, || leftovers(Path::new(RUNTIME)).is_empty()),
        "{:?}",
        leftovers(Path::new(RUNTIME))
    );
}
