//! Issue 9, point 7: the stack heals itself, and nothing leaks meanwhile.
//!
//! The stack runs on the testnet inside namespace `ts-stack` (as in the
//! leak suite), with a capture on its only way out. nginx is published with
//! client authorization, and a tor client of the testnet holding the key
//! fetches the page in a loop. Then, in turn, SIGKILL: the Tor VM's QEMU, the
//! App VM's QEMU, the App VM's vsock backend, and the daemon (the next one started
//! by `up`). Each time: 0 packets leaked on the capture, the service is
//! published again by itself with the same address, the client's fetches are
//! answered again, and `status` says what happened. (A client left without
//! an answer for a minute is told NEWNYM, as a person would choose "New
//! Identity": tor's client-side failure caches would otherwise keep it away
//! from the service for 2–3 minutes more.)
//!
//! This stack has no persistent store, so the App VM is amnesic: after it
//! restarts, nginx answers with its own 404 for the page written into the
//! old one. An answer from the service is what counts here
//! (tests/tests/persistent_stack.rs checks that data on the persistent disk
//! survives such a restart).

use std::path::Path;
use std::time::{Duration, Instant};

use tails_tests::faults::{kill, FetchLoop, Part};
use tails_tests::leak::*;
use tails_tests::torclient::{with_newnym_after, FreshClient};
use tails_tests::{page_script, pids_named, wait_until, yaml_field};

const STATE: &str = "/run/ts-faults-test-state";
const RUNTIME: &str = "/run/tails-server";
const PAGE: &str = "tails-server faults test page";

#[test]
fn the_stack_heals_itself_and_nothing_leaks_meanwhile() {
    let ns = StackNs::new();
    let t = |args: &[&str]| ns.ts_env(args, &[("TAILS_SERVER_STATE_DIR", STATE)]);
    let _ = std::fs::remove_dir_all(STATE);
    let r = ns.ts(&["testnet", "up"]);
    assert_eq!(r.code, 0, "testnet up in {STACK_NS}: {r:?}");
    ns.pin_neighbours();
    let relays: std::collections::BTreeSet<u16> = {
        let p = tails_testnet::relay_ports(&tails_testnet::Config::default()).expect("relays");
        p.or.iter().chain(&p.dir).copied().collect()
    };
    let r = t(&["up", "--network", "local"]);
    assert_eq!(r.code, 0, "up: {r:?}");
    let r = t(&["exec", "appvm", "--", "sh", "-c", &page_script(PAGE)]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = t(&["nginx", "enable"]);
    assert_eq!(r.code, 0, "enable: {r:?}");
    let address = yaml_field(&r.stdout, "address");
    let line = yaml_field(&r.stdout, "auth-private");
    let join = tails_testnet::join_options(&tails_testnet::Config::default()).expect("join");
    let client = FreshClient::with_keys(
        OUTSIDE_NS,
        &join,
        "10.100.0.2:9081".parse().expect("addr"),
        &[&line],
    );
    let fetching = FetchLoop::start(Some(STACK_NS), client.socks, &address, 80);
    assert!(
        fetching
            .first_answer_after(Instant::now(), Duration::from_secs(240))
            .is_some(),
        "the client never got the page: {:?}",
        fetching.attempts().last()
    );
    // The client's control port answers: it may be told NEWNYM below.
    client.new_identity();

    let mut report = Vec::new();
    for part in Part::ALL {
        let file = std::env::temp_dir().join(format!(
            "ts-faults-{}-{}.pcap",
            std::process::id(),
            format!("{part:?}").to_lowercase()
        ));
        let cap = Capture::start(STACK_NS, VETH, &file);
        let killed = kill(part, Path::new(RUNTIME));
        if part == Part::Daemon {
            // Without a daemon the VMs run on: the service keeps answering,
            // also to a fetch begun 5 s after the daemon died.
            let answered = fetching
                .first_answer_after(killed + Duration::from_secs(5), Duration::from_secs(30));
            assert!(
                answered.is_some(),
                "no answer while the daemon was dead: {:?}",
                fetching.between(killed, Instant::now())
            );
            let r = t(&["up", "--network", "local"]);
            assert_eq!(r.code, 0, "up after the daemon died: {r:?}");
            assert!(r.stdout.contains("took over its stack"), "{r:?}");
        }
        // A tor client that tried the service while it was down may keep
        // away from it (its failure caches): told "New Identity", as a
        // person would do in Tor Browser.
        let back = with_newnym_after(
            &format!("killed {}", part.name()),
            |limit| fetching.recovered(killed, Duration::from_secs(10), limit),
            || client.new_identity(),
            Duration::from_secs(360),
        );
        let Some(back) = back else {
            panic!(
                "after killing {}, the client got no answer: {:?}; status: {}",
                part.name(),
                fetching.attempts().iter().rev().take(5).collect::<Vec<_>>(),
                t(&["status"]).stdout
            );
        };
        let secs = back.duration_since(killed).as_secs_f64();
        // status says what happened, and the service is published again
        // with the same address.
        let r = t(&["status", "--json"]);
        let st: serde_json::Value = serde_json::from_str(&r.stdout).expect("status json");
        let told = st["supervisor"].to_string();
        let want = match part {
            Part::TorVm => "the Tor VM's QEMU died",
            Part::AppVm => "the App VM's QEMU died",
            Part::Vsock => "the App VM's vsock backend died",
            Part::Daemon => "took over its stack",
        };
        assert!(told.contains(want), "status must say {want:?}: {st}");
        let r = t(&["nginx", "info", "--json"]);
        let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("info json");
        assert_eq!(info["published"], true, "{info}");
        assert_eq!(info["address"], address.as_str(), "the same address");
        // Nothing but tor's own traffic to the relays left the host.
        let frames = cap.stop();
        // The test's own fetches reach its client's SOCKS port over the same
        // veth: harness traffic, not the stack's.
        let mut allowed = relays.clone();
        allowed.insert(client.socks.port());
        let leaked = leaks(&frames, &allowed);
        for f in leaked.iter().take(10) {
            println!("[{part:?}] leaked: {f}");
        }
        assert_eq!(
            leaked.len(),
            0,
            "packets leaked after killing {}",
            part.name()
        );
        println!(
            "killed {}: answered again after {secs:.1} s; {} frames captured, 0 leaked",
            part.name(),
            frames.len()
        );
        report.push((part, secs));
        let _ = std::fs::remove_file(&file);
    }
    drop(fetching);
    drop(client);
    let r = t(&["down"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        wait_until(10, || pids_named("qemu-system").is_empty()),
        "down stopped the VMs"
    );
    let _ = std::fs::remove_dir_all(STATE);
    println!(
        "self-healing: {}",
        report
            .iter()
            .map(|(p, s)| format!("{} {s:.1} s", p.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
