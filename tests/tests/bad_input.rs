//! Bad input and leftovers: each gets one clear line and leaves nothing behind.
//! These do not boot VMs.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";

fn one_line(r: &Run) {
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "one line expected: {r:?}"
    );
}

#[test]
fn image_build_names_the_missing_agent() {
    let r = ts_env(
        &["image", "build"],
        &[("TAILS_SERVER_LIB_DIR", "/nonexistent/lib")],
    );
    assert_ne!(r.code, 0);
    one_line(&r);
    assert!(
        r.stderr
            .contains("agent is not installed at /nonexistent/lib")
            && r.stderr.contains("./setup.sh"),
        "{r:?}"
    );
}

/// A service file naming a package Debian does not have: the build stops at
/// apt's first refusal (no retries) with one line naming the package and the
/// file, and the image cache holds nothing new.
#[test]
fn image_build_names_a_package_debian_does_not_have() {
    let lib = Path::new("/run/ts-bad-package-lib");
    let cache = Path::new("/run/ts-bad-package-images");
    let _ = std::fs::remove_dir_all(lib);
    let _ = std::fs::remove_dir_all(cache);
    std::fs::create_dir_all(lib.join("services")).unwrap();
    for f in ["tails-appvm-agent", "tails-torvm-agent"] {
        std::os::unix::fs::symlink(
            Path::new("/usr/local/lib/tails-server").join(f),
            lib.join(f),
        )
        .unwrap();
    }
    let nginx = std::fs::read_to_string("/usr/local/lib/tails-server/services/nginx.yaml").unwrap();
    let bogus = nginx.replacen("name: nginx", "name: bogus", 1).replacen(
        "  - nginx-light",
        "  - nginx-light\n  - tails-no-such-package",
        1,
    );
    std::fs::write(lib.join("services/bogus.yaml"), bogus).unwrap();
    let started = std::time::Instant::now();
    let r = ts_env(
        &["image", "build"],
        &[
            ("TAILS_SERVER_LIB_DIR", lib.to_str().unwrap()),
            ("TAILS_SERVER_IMAGE_DIR", cache.to_str().unwrap()),
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    let last = r.stderr.trim().lines().last().unwrap_or("").to_owned();
    assert!(
        last.contains("no package \"tails-no-such-package\"")
            && last.contains("bogus.yaml")
            && last.contains("fix or remove"),
        "{r:?}"
    );
    assert!(
        !last.contains("retrying") && !r.stderr.contains("attempt 2"),
        "{r:?}"
    );
    let kept: Vec<_> = std::fs::read_dir(cache)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !kept.iter().any(|n| n == "current"),
        "nothing installed: {kept:?}"
    );
    println!(
        "unknown package refused in {:.0} s: {last}",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(lib);
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn unknown_commands_and_arguments_are_refused() {
    for args in [
        &["exec", "torvm"][..],                                 // no command
        &["exec", "torvm", "--timeout", "0", "--", "true"][..], // out of range
        &["launch"][..],
    ] {
        // (`launch` is neither a command nor a catalogued service.)
        let r = ts(args);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("error") || r.stderr.contains("unknown command or service"),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn bad_bridges_are_refused() {
    let _ = ts(&["down"]);
    let r = ts(&["up", "--bridge", "1.2.3.4:443 AAAA\nSocksPort 9050"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("a bridge is one line of text"), "{r:?}");
    let r = ts(&[
        "up",
        "--network",
        "none",
        "--bridge",
        "192.0.2.7:443 4352E58420E68F5E40BF7C74FADDCCD9D1349413",
    ]);
    assert_ne!(r.code, 0, "{r:?}");
    one_line(&r);
    assert!(r.stderr.contains("bridges need an uplink"), "{r:?}");
    assert!(
        wait_until(5, || leftovers(Path::new(RUNTIME)).is_empty()),
        "{:?}",
        leftovers(Path::new(RUNTIME))
    );
}

/// A user who is neither root nor in the group tails-server: the host's
/// own commands need root, and the daemon is not started for them (the
/// daemon's own refusal is in tests/tests/access.rs).
#[test]
fn non_root_is_refused() {
    let nobody = |args: &[&str]| -> Run {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(args)
            .output()
            .expect("setpriv")
            .into()
    };
    let r = nobody(&["image", "show"]);
    assert_ne!(r.code, 0);
    one_line(&r);
    assert!(r.stderr.contains("must run as root"), "{r:?}");
    let _ = ts(&["down"]);
    let r = nobody(&["list"]);
    assert_ne!(r.code, 0);
    one_line(&r);
    assert!(r.stderr.contains("only root may start it"), "{r:?}");
}

/// Runtime files left by a daemon that died: `status` says so, `down` cleans.
#[test]
fn stale_runtime_is_reported_and_cleaned() {
    let _ = ts(&["down"]);
    std::fs::create_dir_all(RUNTIME).expect("mkdir");
    // A PID that is surely dead: a child we already reaped.
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let dead = child.id();
    child.wait().expect("wait");
    std::fs::write(format!("{RUNTIME}/daemon.pid"), dead.to_string()).expect("pid");
    let sock = format!("{RUNTIME}/control.sock");
    let _ = std::fs::remove_file(&sock);
    drop(UnixListener::bind(&sock).expect("bind"));
    let r = ts_ok(&["status"]);
    assert!(
        r.stdout.contains(&format!("the daemon (pid {dead}) died"))
            && r.stdout.contains("run `tails-server down` to clean up"),
        "{r:?}"
    );
    let r = ts_ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["up"], false, "{v}");
    assert_eq!(v["left_behind"]["daemon_pid"], dead, "{v}");
    let r = ts_ok(&["down"]);
    assert!(r.stdout.contains("cleaned up after a dead daemon"), "{r:?}");
    assert!(
        leftovers(Path::new(RUNTIME)).is_empty(),
        "{:?}",
        leftovers(Path::new(RUNTIME))
    );
}

/// Something that is not our daemon answers on the control socket.
#[test]
fn impostor_on_the_control_socket_gets_a_clear_error() {
    let _ = ts(&["down"]);
    std::fs::create_dir_all(RUNTIME).expect("mkdir");
    let sock = format!("{RUNTIME}/control.sock");
    let _ = std::fs::remove_file(&sock);
    let l = UnixListener::bind(&sock).expect("bind");
    let t = std::thread::spawn(move || {
        for _ in 0..2 {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello");
            }
        }
    });
    for args in [&["status"][..], &["exec", "appvm", "--", "true"][..]] {
        let r = ts(args);
        assert_ne!(r.code, 0, "{args:?}: {r:?}");
        one_line(&r);
        assert!(
            r.stderr.contains("does not speak this protocol"),
            "{args:?}: {r:?}"
        );
    }
    t.join().expect("impostor thread");
    let _ = std::fs::remove_dir_all(RUNTIME);
}
