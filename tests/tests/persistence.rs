//! Issue 12, point 1: `tails-server persistence …` through the daemon, with
//! the real store (a LUKS container opened by qemu-storage-daemon): made,
//! refused with a wrong passphrase (one line, nothing changed), unlocked,
//! locked, its passphrase changed, and locked by `down`. No VM is started.

use std::path::Path;

use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const DIR: &str = "/run/ts-persistence-test";

fn p(args: &[&str]) -> Run {
    let store = format!("{DIR}/store.luks");
    let mut all = vec!["persistence"];
    all.extend_from_slice(args);
    ts_env(&all, &[("TAILS_SERVER_STORE", store.as_str())])
}

fn status() -> serde_json::Value {
    let r = p(&["status", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    serde_json::from_str(&r.stdout).expect("json")
}

fn pass_file(name: &str, text: &str) -> String {
    let path = format!("{DIR}/{name}");
    std::fs::write(&path, format!("{text}\n")).expect("write");
    path
}

#[test]
fn the_store_is_made_opened_closed_and_locked_by_down() {
    clean_start(Path::new(RUNTIME));
    let _ = std::fs::remove_dir_all(DIR);
    std::fs::create_dir_all(DIR).expect("dir");
    let good = pass_file("good", "correct horse battery staple");
    let bad = pass_file("bad", "not the passphrase at all");
    let new = pass_file("new", "a new passphrase, longer still");
    let short = pass_file("short", "short");

    let st = status();
    assert_eq!(
        (st["exists"].as_bool(), st["unlocked"].as_bool()),
        (Some(false), Some(false)),
        "{st}"
    );
    let r = p(&["unlock", "--passphrase-file", &good]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("persistence create"), "{r:?}");

    let r = p(&["create", "--size-mib", "64", "--passphrase-file", &short]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert!(!Path::new(DIR).join("store.luks").exists(), "nothing made");
    let r = p(&["create", "--size-mib", "64", "--passphrase-file", &good]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(status()["exists"], true);

    // A wrong passphrase: one line, still locked.
    let r = p(&["unlock", "--passphrase-file", &bad]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("does not open"), "{r:?}");
    assert_eq!(status()["unlocked"], false);

    let r = p(&["unlock", "--passphrase-file", &good]);
    assert_eq!(r.code, 0, "{r:?}");
    let st = status();
    assert_eq!(st["unlocked"], true, "{st}");
    let mnt = st["mountpoint"].as_str().expect("mountpoint").to_owned();
    std::fs::write(Path::new(&mnt).join("kept"), "kept across a lock").expect("write");
    // The daemon stays while the store is open (it locks it at `down`).
    let r = p(&["lock"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(status()["unlocked"], false);
    assert!(!Path::new(&mnt).join("kept").exists());

    let r = p(&[
        "change-passphrase",
        "--passphrase-file",
        &good,
        "--new-passphrase-file",
        &new,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = p(&["unlock", "--passphrase-file", &good]);
    assert!(r.code != 0 && r.stderr.contains("does not open"), "{r:?}");
    let r = p(&["unlock", "--passphrase-file", &new]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(Path::new(&mnt).join("kept")).expect("read"),
        "kept across a lock"
    );

    // `down` locks it.
    let r = ts(&["down"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(status()["unlocked"], false);
    let _ = ts(&["down"]);
    let _ = std::fs::remove_dir_all(DIR);
}
