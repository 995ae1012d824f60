//! Issue 12, points 2–7, on one stack on the testnet, three boots:
//!
//! - with the store locked, a service cannot be made persistent (one line,
//!   nothing changed);
//! - boot 1: nginx (a page) and prosody (a room line) with persistence on,
//!   the file drop with it off; allow-localhost and allow-lan on and off
//!   (from the host's loopback, a namespace acting as the LAN, one with a
//!   public address); the App VM's QEMU killed with -9 while its data disk
//!   is written: started again, what was synced is there, same address;
//! - a clean `down` (store locked), `e2fsck -fn` clean on both disks, tor's
//!   guards on its disk; a reboot (the amnesic tmpfs gone), unlock, `up`;
//! - boot 2: the page and the room's history are back under the same
//!   addresses, tor has the same guards, the file drop has a new address and
//!   no data; then the host's power is cut (everything killed, mounts and
//!   the runtime directory gone);
//! - boot 3: nothing without the passphrase; then nginx's address, page and
//!   synced file are there; persistence turned off (asked first) takes its
//!   keys out of the store and its data off the disk; after a clean `down`
//!   both disks are clean.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tails_tests::clients;
use tails_tests::torclient::{with_newnym_after, FreshClient};
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-pstack-state";
const DIR: &str = "/run/ts-pstack";
const PASS: &str = "a long passphrase for the test store";

fn store() -> String {
    format!("{DIR}/store.luks")
}

fn t(args: &[&str]) -> Run {
    let store = store();
    ts_env(
        args,
        &[
            ("TAILS_SERVER_STATE_DIR", STATE),
            ("TAILS_SERVER_STORE", store.as_str()),
        ],
    )
}

fn t_ok(args: &[&str]) -> Run {
    let r = t(args);
    assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
    r
}

fn refused(args: &[&str], needle: &str) -> String {
    let r = t(args);
    assert_ne!(r.code, 0, "should fail: {args:?}: {r:?}");
    let msg = r.stderr.trim().to_owned();
    assert!(!msg.is_empty() && !msg.contains('\n'), "one line: {r:?}");
    assert!(msg.contains(needle), "{args:?}: {msg}");
    msg
}

fn sh(cmd: &str) -> (i32, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn creds(service: &str) -> (String, String) {
    let r = t_ok(&[service, "credentials", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    (
        v["address"].as_str().expect("address").to_owned(),
        v["auth-private"].as_str().expect("key line").to_owned(),
    )
}

fn curl(socks: SocketAddr, url: &str) -> (i32, String) {
    sh(&format!(
        "curl -sS --max-time 90 --socks5-hostname {socks} '{url}'"
    ))
}

/// The page, fetched through Tor by `client` (retried while the descriptor
/// propagates). A client that tried the address while the service was down
/// may keep away from it (tor's failure caches): it is told NEWNYM, as a
/// person would choose "New Identity".
fn fetch(client: &FreshClient, address: &str) -> String {
    let url = format!("http://{address}/");
    let mut last = String::new();
    with_newnym_after(
        address,
        |limit| {
            wait_until(limit.as_secs(), || {
                let (code, out) = curl(client.socks, &url);
                last = out;
                code == 0
            })
            .then_some(())
        },
        || client.new_identity(),
        Duration::from_secs(180),
    );
    last
}

/// tor's state file on the Tor VM's disk in the unlocked store (read with
/// debugfs: the host never mounts a guest's file system).
fn torvm_state(mnt: &str) -> String {
    let (c, out) = sh(&format!(
        "debugfs -R 'cat /state' {mnt}/disks/torvm.img 2>/dev/null"
    ));
    assert_eq!(c, 0, "debugfs: {out}");
    out
}

/// tor's sampled guards in its state file: (identity, sampled_on), which a
/// fresh state would draw anew.
fn guards_in(state: &str) -> Vec<String> {
    let mut g: Vec<String> = state
        .lines()
        .filter(|l| l.starts_with("Guard "))
        .map(|l| {
            l.split(' ')
                .filter(|f| f.starts_with("rsa_id=") || f.starts_with("sampled_on="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    g.sort();
    g
}

fn xmpp(ctx_socks: SocketAddr, address: &str, password: &str, mode: &[&str]) -> (bool, String) {
    let script = clients::script("xmpp_chat.py");
    let socks = ctx_socks.to_string();
    let mut args: Vec<&str> = vec![
        script.to_str().expect("utf-8"),
        "--socks",
        &socks,
        "--host",
        address,
        "--port",
        "5222",
        "--users",
        "alice,bob",
        "--password",
        password,
        "--room",
        "tails",
        "--timeout",
        "180",
    ];
    args.extend_from_slice(mode);
    let out = Command::new(clients::PYTHON)
        .args(&args)
        .output()
        .expect("xmpp client");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The stdout of `argv` run in the App VM.
fn appvm(argv: &[&str]) -> String {
    let mut args = vec!["exec", "appvm", "--"];
    args.extend_from_slice(argv);
    t_ok(&args).stdout
}

/// The checksum of the file the test syncs on nginx's persistent path.
fn synced_sum() -> String {
    appvm(&["md5sum", "/var/www/tails-server/synced"])
}

fn enable(services: &[&str]) {
    for s in services {
        t_ok(&[s, "enable"]);
    }
}

/// A network namespace `name` joined to the host by a veth pair: the host
/// side `host_ip`, the namespace's `ns_ip` (both /24), its default route
/// through the host.
fn netns(name: &str, host_ip: &str, ns_ip: &str) {
    let veth = format!("v{name}");
    let _ = sh(&format!("ip netns del {name}; ip link del {veth}"));
    let (c, out) = sh(&format!(
        "set -e; ip netns add {name}; ip link add {veth} type veth peer name eth0 netns {name}; \
         ip addr add {host_ip}/24 dev {veth}; ip link set {veth} up; \
         ip -n {name} addr add {ns_ip}/24 dev eth0; ip -n {name} link set eth0 up; \
         ip -n {name} link set lo up; ip -n {name} route add default via {host_ip}"
    ));
    assert_eq!(c, 0, "netns {name}: {out}");
}

fn drop_netns(name: &str) {
    let _ = sh(&format!("ip netns del {name}; ip link del v{name}"));
}

/// An HTTP GET from namespace `ns` to `url` (no proxy), 5 s at most.
fn get_from(ns: &str, url: &str) -> (i32, String) {
    sh(&format!("ip netns exec {ns} curl -sS --max-time 5 '{url}'"))
}

/// The host's power cut: every process of the stack and the store killed
/// with -9, what the kernel held for them (mounts, the host table) gone as
/// at a reboot, the runtime directory and the amnesic tmpfs removed.
fn power_cut() {
    let mut pids = Vec::new();
    if let Ok(p) = std::fs::read_to_string(format!("{RUNTIME}/daemon.pid")) {
        pids.extend(p.trim().parse::<u32>().ok());
    }
    for name in [
        "qemu-system",
        "vhost-device",
        "tails-jailer",
        "qemu-storage",
    ] {
        pids.extend(pids_named(name));
    }
    for pid in pids {
        let _ = sh(&format!("kill -9 {pid}"));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = sh(&format!(
        "umount -l {RUNTIME}.store; for m in $(grep ' {RUNTIME}.vault' /proc/self/mounts | cut -d' ' -f2); do umount -l $m; done; \
         umount -l {STATE}/amnesic; rm -rf {RUNTIME} {RUNTIME}.store {RUNTIME}.vault {STATE}/amnesic; \
         nft delete table inet tails_server"
    ));
}

#[test]
fn persistent_services_survive_crashes_and_reboots_amnesic_ones_do_not() {
    clean_start(Path::new(RUNTIME));
    let _ = sh(&format!(
        "umount {STATE}/amnesic; rm -rf {STATE} {DIR}; mkdir -p {DIR}"
    ));
    let pass = format!("{DIR}/pass");
    std::fs::write(&pass, format!("{PASS}\n")).expect("passphrase file");
    // The suite's testnet if one runs (see daemon.rs), else a new one.
    let _testnet = TestnetGuard::join();

    // Point 2: no persistent service without the store.
    t_ok(&[
        "persistence",
        "create",
        "--size-mib",
        "640",
        "--passphrase-file",
        &pass,
    ]);
    refused(
        &["nginx", "set-option", "persistence", "true"],
        "persistence unlock",
    );
    t_ok(&["persistence", "unlock", "--passphrase-file", &pass]);
    for s in ["nginx", "prosody"] {
        t_ok(&[s, "set-option", "persistence", "true"]);
    }
    let mnt = format!("{RUNTIME}.store");
    assert!(
        Path::new(&mnt).join("services/nginx/state.json").is_file(),
        "nginx's keys are in the store"
    );
    t_ok(&["up", "--network", "local"]);
    enable(&["nginx", "prosody", "filedrop"]);
    let amnesic = Path::new(STATE).join("amnesic/services/filedrop/state.json");
    assert!(amnesic.is_file(), "the file drop's keys are in memory only");
    assert!(
        !Path::new(STATE).join("services").exists(),
        "nothing in plain files"
    );
    let (nginx, nginx_key) = creds("nginx");
    let (chat, chat_key) = creds("prosody");
    let (drop1, _) = creds("filedrop");
    let password = t_ok(&["prosody", "get-option", "initial-password"])
        .stdout
        .trim()
        .to_owned();

    // Data in each persistent path, and in the amnesic one.
    let page = format!("kept across reboots {}", std::process::id());
    appvm(&["sh", "-c", &format!("{} && sync", page_script(&page))]);
    appvm(&[
        "sh",
        "-c",
        "echo gone > /var/lib/tails-server-filedrop/forgotten && sync",
    ]);
    let join = tails_testnet::join_options(&tails_testnet::Config::default()).expect("join");
    let socks: SocketAddr = "10.100.0.2:9181".parse().expect("addr");
    let client = FreshClient::with_keys("ts-outside", &join, socks, &[&nginx_key, &chat_key]);
    assert!(client.wait_bootstrapped(120), "the test's tor client");
    let got = fetch(&client, &nginx);
    assert!(got.contains(&page), "the page through Tor: {got}");
    let line = format!("said before the reboot {}", std::process::id());
    let (ok, out) = xmpp(socks, &chat, &password, &["--say", &line]);
    assert!(ok, "the chat: {out}");

    // Point 5: allow-localhost.
    let local = "http://127.0.0.1:8080/";
    assert_ne!(
        sh(&format!("curl -sS --max-time 5 {local}")).0,
        0,
        "off by default"
    );
    t_ok(&["nginx", "set-option", "allow-localhost", "true"]);
    let (c, out) = sh(&format!("curl -sS --max-time 20 {local}"));
    assert!(c == 0 && out.contains(&page), "from this computer: {out}");
    // allow-lan: a LAN namespace, and one with a public address.
    netns("tslan", "192.168.231.1", "192.168.231.2");
    netns("tswan", "203.0.113.1", "203.0.113.2");
    let lan_url = "http://192.168.231.1:8080/";
    assert_ne!(get_from("tslan", lan_url).0, 0, "LAN off");
    t_ok(&["nginx", "set-option", "allow-lan", "true"]);
    let (c, out) = get_from("tslan", lan_url);
    assert!(c == 0 && out.contains(&page), "from the LAN: {out}");
    // curl's 28: no answer at all, the host table dropped it (the relay's
    // own check of the peer would have closed it: an empty reply).
    for url in [lan_url, "http://203.0.113.1:8080/"] {
        let (c, out) = get_from("tswan", url);
        assert_eq!(c, 28, "from a public address to {url}: {out}");
    }
    t_ok(&["nginx", "set-option", "allow-lan", "false"]);
    t_ok(&["nginx", "set-option", "allow-localhost", "false"]);
    assert_ne!(get_from("tslan", lan_url).0, 0, "LAN off again");
    assert_ne!(
        sh(&format!("curl -sS --max-time 5 {local}")).0,
        0,
        "localhost off again"
    );
    drop_netns("tslan");
    drop_netns("tswan");

    // Point 6: the App VM's QEMU killed while nginx's path is written.
    appvm(&["sh", "-c", "head -c 1048576 /dev/urandom > /var/www/tails-server/synced && sync && \
         (while :; do head -c 65536 /dev/urandom >> /var/www/tails-server/busy; done) >/dev/null 2>&1 &"]);
    let synced = synced_sum();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let st = status_json();
    let pid = vm_status(&st, "appvm")["pid"].as_u64().expect("appvm pid");
    let _ = sh(&format!("kill -9 {pid}"));
    let back = wait_until(300, || {
        let r = t(&["nginx", "status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        r.code == 0
            && v["published"] == true
            && v["running"] == true
            && {
                let st = status_json();
                vm_status(&st, "appvm")["pid"]
                    .as_u64()
                    .is_some_and(|p| p != pid)
            }
            && t(&["exec", "appvm", "--", "true"]).code == 0
    });
    assert!(back, "nginx is back after the App VM was killed");
    let again = synced_sum();
    assert_eq!(again, synced, "what was synced is there");
    assert_eq!(creds("nginx").0, nginx, "the same address");

    // A clean down: the store is locked, both disks are clean, and tor has
    // written its guards (at its exit) to its state disk.
    t_ok(&["down"]);
    let r = t_ok(&["persistence", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["unlocked"], false, "{r:?}");
    t_ok(&["persistence", "unlock", "--passphrase-file", &pass]);
    for vm in ["appvm", "torvm"] {
        let (c, out) = sh(&format!("e2fsck -fn {mnt}/disks/{vm}.img"));
        assert_eq!(c, 0, "{vm}'s disk: {out}");
    }
    let guards_before = guards_in(&torvm_state(&mnt));
    assert!(
        !guards_before.is_empty(),
        "tor wrote no guards to its state disk"
    );
    t_ok(&["persistence", "lock"]);

    // Point 7: a reboot (the amnesic tmpfs gone), unlock, up.
    let _ = sh(&format!("umount {STATE}/amnesic; rm -rf {STATE}/amnesic"));
    t_ok(&["persistence", "unlock", "--passphrase-file", &pass]);
    t_ok(&["up", "--network", "local"]);
    enable(&["nginx", "prosody", "filedrop"]);
    assert_eq!(creds("nginx").0, nginx, "nginx's address is kept");
    assert_eq!(creds("prosody").0, chat, "prosody's address is kept");
    let (drop2, _) = creds("filedrop");
    assert_ne!(drop2, drop1, "the amnesic file drop has a new address");
    let left = appvm(&["ls", "-A", "/var/lib/tails-server-filedrop"]);
    assert!(
        !left.contains("forgotten"),
        "the file drop's data is gone: {left}"
    );
    let got = fetch(&client, &nginx);
    assert!(got.contains(&page), "the page after the reboot: {got}");
    let (ok, out) = xmpp(socks, &chat, &password, &["--expect-history", &line]);
    assert!(ok, "the room's history after the reboot: {out}");
    let state = t_ok(&["exec", "torvm", "--", "cat", "/var/lib/tor/state"]).stdout;
    // tor may sample one more guard when the testnet's consensus changes,
    // but each one it had keeps its identity and its (randomised) date: a
    // fresh state would have drawn them all anew.
    let guards_after = guards_in(&state);
    let lost: Vec<&String> = guards_before
        .iter()
        .filter(|g| !guards_after.contains(g))
        .collect();
    assert!(
        lost.is_empty(),
        "tor kept its guards: lost {lost:?}, now {guards_after:?}"
    );

    // The host's power cut, then a boot: unlock, up.
    power_cut();
    assert!(
        leftovers(Path::new(RUNTIME)).is_empty(),
        "{:?}",
        leftovers(Path::new(RUNTIME))
    );
    let r = t(&["nginx", "info"]);
    assert!(
        r.code != 0 && r.stderr.contains("persistence unlock"),
        "locked: {r:?}"
    );
    t_ok(&["persistence", "unlock", "--passphrase-file", &pass]);
    t_ok(&["up", "--network", "local"]);
    // The autostart option is off: nginx is enabled again.
    enable(&["nginx"]);
    assert_eq!(
        creds("nginx").0,
        nginx,
        "nginx's address survives the power cut"
    );
    let again = synced_sum();
    assert_eq!(again, synced, "what was synced survived the power cut");
    let got = fetch(&client, &nginx);
    assert!(got.contains(&page), "the page after the power cut: {got}");
    // Point 3: persistence off for nginx is asked first (refused without
    // a terminal, nothing changed); with --yes its keys move into memory
    // (the address holds for this session) and its data leaves the disk.
    let kept = Path::new(&mnt).join("services/nginx/state.json");
    refused(
        &["nginx", "set-option", "persistence", "false"],
        "add --yes",
    );
    assert!(kept.is_file(), "nothing changed");
    t_ok(&["nginx", "set-option", "persistence", "false", "--yes"]);
    assert!(!kept.exists(), "out of the store");
    assert!(
        Path::new(STATE)
            .join("amnesic/services/nginx/state.json")
            .is_file(),
        "in memory"
    );
    assert_eq!(creds("nginx").0, nginx, "the same address for this session");
    let left = appvm(&["ls", "-A", "/persistent/services"]);
    assert!(!left.contains("nginx"), "its data left the disk: {left}");
    drop(client);
    t_ok(&["down"]);
    // After the power cut and a clean end of the next boot, both disks are
    // clean too.
    t_ok(&["persistence", "unlock", "--passphrase-file", &pass]);
    for vm in ["appvm", "torvm"] {
        let (c, out) = sh(&format!("e2fsck -fn {mnt}/disks/{vm}.img"));
        assert_eq!(c, 0, "{vm}'s disk after the power cut: {out}");
    }
    t_ok(&["down"]);
    let _ = sh(&format!("umount {STATE}/amnesic; rm -rf {STATE} {DIR}"));
}
