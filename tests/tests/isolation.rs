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

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The App VM's clock minus the host's, in seconds, from the tightest of a
/// few readings bracketed by the host's clock; with its uncertainty.
fn clock_offset(env: &[(&str, &str)]) -> (f64, f64) {
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..5 {
        let t0 = now();
        let r = ts_env(&["exec", "appvm", "--", "date", "+%s.%N"], env);
        let t1 = now();
        assert_eq!(r.code, 0, "date in the App VM: {r:?}");
        let guest: f64 = r.stdout.trim().parse().expect("a time");
        let (off, err) = (guest - (t0 + t1) / 2.0, (t1 - t0) / 2.0);
        if best.is_none_or(|(_, e)| err < e) {
            best = Some((off, err));
        }
    }
    best.expect("readings")
}

/// Within the documented window, and certainly not zero.
fn check_offset((off, err): (f64, f64)) {
    let (min, max) = (WINDOW.0 - err, WINDOW.1 + err);
    assert!(err < 0.25, "readings too loose to judge ({err:.3} s)");
    assert!(
        off.abs() > min && off.abs() < max,
        "the App VM's clock is {off:.3} s (±{err:.3}) from the host's: outside {min:.2}..{max:.2}"
    );
}

/// The window of the App VM's boot clock randomization, in seconds (what
/// the README documents).
const WINDOW: (f64, f64) = (0.5, 180.0);

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
    let mut offsets = vec![clock_offset(&[])];
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
    offsets.push(clock_offset(&env));
    // A third boot: the App VM alone, started again by the daemon.
    let qemu =
        tails_tests::faults::pid_of(tails_tests::faults::Part::AppVm, Path::new(other_runtime))
            .expect("the App VM's QEMU");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    assert!(
        wait_until(120, || {
            let r = ts_env(&["exec", "appvm", "--", "true"], &env);
            r.code == 0
        }),
        "the App VM came back"
    );
    offsets.push(clock_offset(&env));
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

    // The clock: moved at every boot, within the window, never the same.
    for o in &offsets {
        check_offset(*o);
    }
    let apart = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() > a.1 + b.1;
    assert!(
        apart(offsets[0], offsets[1]) || apart(offsets[1], offsets[2]),
        "the offset must change from boot to boot: {offsets:?}"
    );
    println!(
        "App VM clock offsets over three boots: {}",
        offsets
            .iter()
            .map(|(o, e)| format!("{o:+.2} s (±{e:.2})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let clock = first["clock"].as_str().unwrap_or_default();
    assert!(
        clock.contains("0.5 to 180 s"),
        "identity states the window: {clock}"
    );
    assert!(
        first["unpinned"].as_array().is_some_and(|a| !a.is_empty()),
        "identity says what cannot be pinned"
    );
    // Nothing the image builder took from this machine's apt setup.
    assert_eq!(
        facts["apt.sources"],
        "deb http://deb.debian.org/debian bookworm main|deb http://deb.debian.org/debian bookworm-updates main|deb http://deb.debian.org/debian-security bookworm-security main|"
    );
    assert_eq!(facts["apt.sources_d"], "");
    assert!(
        !facts["apt.conf_d"]
            .as_str()
            .unwrap_or("")
            .contains("mmdebstrap"),
        "{}",
        facts["apt.conf_d"]
    );

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
    // qemu64's own flags: what the Tor VM gets beyond them under TCG
    // (AES-NI and the like) is never the App VM's.
    let flags: Vec<&str> = facts["cpu.flags"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .collect();
    assert!(flags.contains(&"sse2"), "{flags:?}");
    for f in ["aes", "pclmulqdq", "ssse3", "sse4_1", "sse4_2"] {
        assert!(!flags.contains(&f), "the App VM has {f}: {flags:?}");
    }
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
