//! Issue 4, points 1 and 2 on the real stack: `up` fails closed when the
//! host table cannot be loaded, and the App VM's identity is the same across
//! two runs whose host side differs (host name, time zone, runtime
//! directory), with nothing of the host in it.

use std::path::Path;
use std::process::Command;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";

fn clean_start() {
    tails_tests::clean_start(Path::new(RUNTIME));
}

/// Run a shell script with the binary under test as `$TS`.
fn sh(script: &str, env: &[(&str, &str)]) -> Run {
    let mut c = Command::new("sh");
    c.args(["-c", script]).env("TS", bin());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run sh").into()
}

#[test]
fn up_fails_closed_without_the_host_firewall() {
    clean_start();
    // In a mount namespace of its own, nft is /bin/false: the table cannot
    // be loaded, so no VM may start.
    let r = sh(
        "unshare --mount --propagation private sh -c 'mount --bind /bin/false /usr/sbin/nft && exec \"$TS\" up --network none'",
        &[],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(
            "cannot load the host firewall (table inet tails_server), so no VM was started"
        ),
        "{r:?}"
    );
    assert!(
        !r.stderr.contains("starting torvm"),
        "no VM may be started: {r:?}"
    );
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains("tails-server:"))
            .count(),
        1,
        "one error line: {r:?}"
    );
    assert!(
        wait_until(5, || leftovers(Path::new(RUNTIME)).is_empty()),
        "left behind: {:?}",
        leftovers(Path::new(RUNTIME))
    );
    assert!(!host_table_loaded());
}

fn identity(env: &[(&str, &str)]) -> serde_json::Value {
    let r = ts_env(&["identity", "--json"], env);
    assert_eq!(r.code, 0, "identity: {r:?}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
}

#[test]
fn identity_is_fixed_whatever_the_host_side() {
    clean_start();
    // Run 1: as installed, under a host name of its own (the machine's may
    // be as short as "vm", which the App VM's facts contain anyway).
    let r = sh(
        "unshare --uts sh -c 'hostname ts-identity-first-host && exec \"$TS\" up --network none'",
        &[],
    );
    assert_eq!(r.code, 0, "up: {r:?}");
    let first = identity(&[]);
    ts_ok(&["down"]);

    // Run 2: another host name (a UTS namespace), another time zone, another
    // runtime directory.
    let other_runtime = "/run/ts-identity-test";
    let env = [
        ("TZ", "America/New_York"),
        ("TAILS_SERVER_RUNTIME_DIR", other_runtime),
    ];
    let r = sh(
        "unshare --uts sh -c 'hostname ts-identity-other-host && exec \"$TS\" up --network none'",
        &env,
    );
    assert_eq!(r.code, 0, "up in the other setting: {r:?}");
    let second = identity(&env);
    let r = ts_env(&["down"], &env);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!Path::new(other_runtime).exists());

    let facts = &first["facts"];
    println!(
        "{}",
        serde_json::to_string_pretty(facts).unwrap_or_default()
    );
    assert_eq!(
        first["fingerprint"], second["fingerprint"],
        "the App VM must see the same machine:\n{first}\n{second}"
    );
    assert_eq!(first["facts"], second["facts"]);
    assert_eq!(first["fingerprint"].as_str().map(str::len), Some(64));

    // What the fixed identity is made of.
    assert_eq!(facts["net.eth0.mac"], "00:11:22:33:44:55");
    assert_eq!(facts["host.name"], "localhost");
    assert_eq!(facts["time.zone"], "UTC+0000");
    assert_eq!(facts["dmi.sys_vendor"], "Tails Server");
    assert_eq!(facts["dmi.product_name"], "Tails Server appvm");
    assert_eq!(
        facts["dmi.product_uuid"],
        "5c1d2c2a-6f1e-4d39-9a7c-0d0000000002"
    );
    assert_eq!(facts["disk.vda.serial"], "tails-appvm-root");
    assert_eq!(facts["cpu.model_name"], "QEMU Virtual CPU version 2.5+");
    assert_eq!(
        facts["kernel.cmdline"],
        "console=ttyS0 quiet panic=-1 oops=panic i8042.noaux i8042.nokbd i8042.nopnp"
    );
    // Exactly one NIC.
    let nics: Vec<_> = facts
        .as_object()
        .expect("facts object")
        .keys()
        .filter(|k| k.starts_with("net."))
        .collect();
    assert_eq!(nics, ["net.eth0.mac"]);
    // Nothing of the host: not its name, not its runtime directory, not the
    // versions of its QEMU or firmware packages in the DMI strings.
    let all = facts.to_string();
    assert!(!all.contains("ts-identity-first-host"));
    assert!(!all.contains("ts-identity-other-host"));
    assert!(!all.contains("/run/"));
    for (k, v) in facts.as_object().expect("facts object") {
        if k.starts_with("dmi.") {
            let v = v.as_str().unwrap_or("");
            for bad in ["debian", "bpo", "QEMU", "pc-q35", "SeaBIOS", "Bochs"] {
                assert!(!v.contains(bad), "{k} = {v} shows the host's {bad}");
            }
        }
    }
}
