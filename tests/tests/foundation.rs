//! Issue 2, end to end on real QEMU: both VMs up and ready, the App VM's
//! identity and internal link, exec in both guests, a QEMU killed from
//! outside and started again by the supervisor, a second `up`, bad input,
//! and a `down` that leaves nothing.

use std::path::Path;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";

/// A DNS datagram from the App VM to 10.1.2.1:53, across the internal link.
fn dns_to_gateway() -> Run {
    ts(&[
        "exec",
        "appvm",
        "--",
        "bash",
        "-c",
        "exec 3<>/dev/udp/10.1.2.1/53; echo x >&3; read -t 5 -u 3; echo \"rc=$?\"",
    ])
}

fn clean_start() {
    tails_tests::clean_start(Path::new(RUNTIME));
}

#[test]
fn foundation_end_to_end() {
    clean_start();

    // up → both ready.
    let r = ts(&["up", "--network", "none"]);
    assert_eq!(r.code, 0, "up failed: {r:?}");
    assert!(
        r.stderr.contains("torvm ready") && r.stderr.contains("appvm ready"),
        "{r:?}"
    );

    let st = status_json();
    for vm in ["torvm", "appvm"] {
        let v = vm_status(&st, vm);
        assert_eq!(v["state"], "running", "{vm}: {v}");
        assert!(
            v["agent"].as_str().unwrap_or("").starts_with("ready"),
            "{vm}: {v}"
        );
        assert!(v["memory_mib"].as_u64().unwrap_or(0) >= 128, "{vm}: {v}");
        assert!(v["pid"].as_u64().is_some(), "{vm}: {v}");
    }
    let accel = st["accel"].as_str().unwrap_or("").to_owned();
    assert!(accel == "tcg" || accel == "kvm", "{st}");
    assert_eq!(vm_status(&st, "torvm")["accel"], accel.as_str());

    // A second up is a no-op that says so.
    let r = ts(&["up", "--network", "none"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("already up"), "{r:?}");

    // The App VM's fixed identity on its only NIC.
    let r = ts_ok(&["exec", "appvm", "--", "ip", "-o", "link"]);
    assert!(r.stdout.contains("00:11:22:33:44:55"), "{r:?}");
    let links: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("link/ether"))
        .collect();
    assert_eq!(
        links.len(),
        1,
        "the App VM must have exactly one NIC: {r:?}"
    );
    let r = ts_ok(&["exec", "appvm", "--", "ip", "-o", "addr"]);
    assert!(r.stdout.contains("10.1.2.3/24"), "{r:?}");
    assert!(
        !r.stdout.contains("inet6"),
        "IPv6 must be off in the App VM: {r:?}"
    );

    // The internal link crosses to the Tor VM, whose MAC is the pinned
    // gateway: a DNS datagram to 10.1.2.1:53 is redirected to tor's DNSPort
    // there, where (no tor with --network none) the Tor VM's kernel answers
    // "port unreachable". That answer is the only thing the App VM gets back.
    let r = dns_to_gateway();
    assert!(
        r.stderr.contains("Connection refused"),
        "an answer from the Tor VM: {r:?}"
    );
    // ICMP to the gateway is not allowed (App VM and Tor VM firewalls).
    let r = ts(&["exec", "appvm", "--", "ping", "-c1", "-W2", "10.1.2.1"]);
    assert_ne!(r.code, 0, "ping to the gateway must fail: {r:?}");
    let r = ts_ok(&["exec", "appvm", "--", "ip", "neigh", "show", "10.1.2.1"]);
    assert!(r.stdout.contains("00:55:44:33:22:11"), "{r:?}");

    // exec in the Tor VM, and exit codes and stderr come back.
    let r = ts_ok(&["exec", "torvm", "--", "ip", "-o", "addr"]);
    assert!(r.stdout.contains("10.1.2.1/24"), "{r:?}");
    let r = ts(&["exec", "torvm", "--", "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.stderr.contains("oops"), "{r:?}");
    let r = ts(&["exec", "appvm", "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(r.code, 124, "a command past its timeout is killed: {r:?}");
    let r = ts(&["exec", "appvm", "--", "/nonexistent/program"]);
    assert_eq!(r.code, 127, "{r:?}");

    // Bad input: one clear line, non-zero exit.
    let r = ts(&["exec", "mailvm", "--", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("unknown VM `mailvm`"), "{r:?}");

    // Each layer's firewall is loaded: the host's table (read back by status),
    // the App VM's and the Tor VM's.
    let st = status_json();
    assert_eq!(st["host_firewall"]["present"], true, "{st}");
    assert!(
        st["host_firewall"]["rules"].as_u64().unwrap_or(0) >= 7,
        "{st}"
    );
    assert_eq!(
        st["path_out"], "none: the Tor VM has no uplink; the App VM reaches nothing",
        "{st}"
    );
    assert!(host_table_loaded(), "nft list table inet tails_server");
    let r = ts_ok(&[
        "exec",
        "appvm",
        "--",
        "nft",
        "list",
        "table",
        "inet",
        "tails_appvm",
    ]);
    assert!(r.stdout.contains("policy drop"), "{r:?}");
    let r = ts_ok(&[
        "exec",
        "torvm",
        "--",
        "nft",
        "list",
        "table",
        "inet",
        "tails_torvm",
    ]);
    assert!(r.stdout.contains("ct status dnat"), "{r:?}");

    // A QEMU killed from outside: the supervisor notices, says so, and
    // starts that VM again while the other one runs on.
    let st = status_json();
    let pid = vm_status(&st, "torvm")["pid"].as_u64().expect("torvm pid") as i32;
    let app_pid = vm_status(&st, "appvm")["pid"].as_u64().expect("appvm pid");
    ts_ok(&["exec", "appvm", "--", "sh", "-c", "echo kept > /root/kept"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill torvm");
    let back = |st: &serde_json::Value| {
        st["supervisor"]["incidents"]
            .to_string()
            .contains("the Tor VM is back")
            && st["vms"].as_array().is_some_and(|a| {
                a.iter().any(|v| {
                    v["name"] == "torvm"
                        && v["state"] == "running"
                        && v["pid"].as_u64().is_some_and(|p| p != pid as u64)
                })
            })
    };
    assert!(
        wait_until(120, || back(&status_json())),
        "the Tor VM did not come back: {}",
        status_json()
    );
    let st = status_json();
    let incidents = st["supervisor"]["incidents"].to_string();
    assert!(
        incidents.contains("the Tor VM's QEMU died (killed by signal SIGKILL)")
            && incidents.contains("the Tor VM is back"),
        "status must say what happened: {st}"
    );
    assert_eq!(
        vm_status(&st, "appvm")["pid"],
        app_pid,
        "the App VM ran on: {st}"
    );
    assert_eq!(vm_status(&st, "torvm")["restarts"], 1, "{st}");
    let r = ts_ok(&["exec", "appvm", "--", "cat", "/root/kept"]);
    assert_eq!(
        r.stdout.trim(),
        "kept",
        "the App VM's files are still there"
    );
    ts_ok(&["exec", "torvm", "--", "true"]);
    // The internal link came back too: the new Tor VM answers the App VM.
    let r = dns_to_gateway();
    assert!(
        r.stderr.contains("Connection refused"),
        "the link to the restarted Tor VM: {r:?}"
    );
    assert!(host_table_loaded(), "the host table stayed loaded");

    // down leaves no process, socket or runtime file.
    let r = ts(&["down"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        wait_until(5, || leftovers(Path::new(RUNTIME)).is_empty()),
        "left behind: {:?}",
        leftovers(Path::new(RUNTIME))
    );
    let st = ts_ok(&["status"]);
    assert!(st.stdout.contains("is down"), "{st:?}");
    assert!(!host_table_loaded(), "down removes the host table");
    let r = ts(&["exec", "appvm", "--", "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not up"), "{r:?}");
}

#[test]
fn up_without_images_fails_cleanly() {
    clean_start();
    let empty = std::env::temp_dir().join(format!("ts-no-images-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("mkdir");
    let r = ts_env(
        &["up"],
        &[("TAILS_SERVER_IMAGE_DIR", empty.to_str().expect("utf-8"))],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("tails-server image build"),
        "the error must say what to do: {r:?}"
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {r:?}");
    assert!(
        wait_until(5, || leftovers(Path::new(RUNTIME)).is_empty()),
        "left behind: {:?}",
        leftovers(Path::new(RUNTIME))
    );
    let _ = std::fs::remove_dir_all(&empty);
}
