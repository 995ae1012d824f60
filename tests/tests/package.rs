//! Issue 13, point 4: the Debian package. `package/build-deb.sh` builds
//! `target/debian/tails-server_*.deb` (reusing setup.sh's release builds)
//! and lintian finds no error in it; apt installs it; what it installed
//! works (the CLI, its man pages and completions, the GUI's libraries, the
//! catalog, the users and the group, units that systemd-analyze accepts,
//! a library directory that follows the executable); purging it leaves
//! nothing in /usr/lib/tails-server. setup.sh's installation under
//! /usr/local, which the other tests use, is the same byte for byte before
//! and after. No daemon is started (it would share /run/tails-server with
//! setup.sh's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// `program args…`: (exit code, stdout + stderr).
fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn ok(program: &str, args: &[&str]) -> String {
    let (code, text) = run(program, args);
    assert_eq!(code, 0, "{program} {args:?}:\n{text}");
    text
}

/// apt-get, tried again: apt on these machines may lose downloaded .debs
/// between dpkg runs (as setup.sh's apt_install says).
fn apt_get(args: &[&str]) {
    let mut last = String::new();
    for attempt in 1..=5 {
        let (code, text) = run("apt-get", args);
        if code == 0 {
            return;
        }
        eprintln!("apt-get {args:?} failed (attempt {attempt}):\n{text}");
        last = text;
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    panic!("apt-get {args:?} failed 5 times:\n{last}");
}

fn installed(package: &str) -> bool {
    let (code, text) = run("dpkg-query", &["-W", "-f=${Status}", package]);
    code == 0 && text.starts_with("install ok installed")
}

/// Every file of setup.sh's installation, with its bytes.
fn usr_local() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![PathBuf::from("/usr/local/lib/tails-server")];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    for f in [
        "/usr/local/bin/tails-server",
        "/usr/local/bin/vhost-device-vsock",
        "/etc/systemd/system/tails-server.service",
    ] {
        files.insert(
            f.into(),
            std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")),
        );
    }
    files
}

fn purge() {
    apt_get(&["purge", "-y", "-q", "tails-server"]);
}

#[test]
fn the_deb_builds_lint_clean_installs_works_and_purges_clean() {
    let start = Instant::now();
    assert!(
        Path::new("/usr/local/bin/tails-server").exists(),
        "run ./setup.sh first: its installation must be there, and stay"
    );
    let before = usr_local();
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/tails-server.service");
    let enabled = wants.is_symlink();
    if installed("tails-server") {
        eprintln!("tails-server was installed (an earlier run?): purging it first");
        purge();
    }

    // Built, and lintian (run by build-deb.sh) reports no error.
    let script = root().join("package/build-deb.sh");
    let (code, log) = run(script.to_str().expect("path"), &[]);
    let lintian: Vec<&str> = log
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && b"EWIPXO".contains(&l.as_bytes()[0]))
        .collect();
    eprintln!(
        "lintian: {}",
        if lintian.is_empty() {
            "clean".to_owned()
        } else {
            lintian.join("\n")
        }
    );
    assert_eq!(code, 0, "build-deb.sh failed:\n{log}");
    assert!(
        !lintian.iter().any(|l| l.starts_with("E:")),
        "lintian errors:\n{log}"
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(root().join("target/debian"))
        .expect("target/debian")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("tails-server_") && n.ends_with(".deb")
        })
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = debs[0].to_str().expect("path").to_owned();
    eprintln!(
        "[{:5.1}s] built {deb} ({} KiB)",
        start.elapsed().as_secs_f64(),
        std::fs::metadata(&deb).expect("deb").len() / 1024
    );

    apt_get(&["install", "-y", "-q", "--no-install-recommends", &deb]);
    eprintln!("[{:5.1}s] installed", start.elapsed().as_secs_f64());
    check_installed();
    assert_eq!(
        wants.is_symlink(),
        enabled,
        "the install enabled or disabled the service"
    );
    assert!(
        before == usr_local(),
        "the install changed setup.sh's files under /usr/local"
    );

    purge();
    eprintln!("[{:5.1}s] purged", start.elapsed().as_secs_f64());
    assert!(!installed("tails-server"));
    for gone in [
        "/usr/lib/tails-server",
        "/usr/bin/tails-server",
        "/usr/bin/tails-server-gui",
        "/usr/share/man/man1/tails-server.1.gz",
        "/usr/lib/systemd/system/tails-server.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} is left after purge");
    }
    assert!(
        before == usr_local(),
        "the purge changed setup.sh's files under /usr/local"
    );
    eprintln!("[{:5.1}s] done", start.elapsed().as_secs_f64());
}

/// What the package put in place works.
fn check_installed() {
    let help = ok("/usr/bin/tails-server", &["--help"]);
    assert!(
        help.contains("persistence") && help.contains("SERVICE ACTION"),
        "{help}"
    );
    ok("/usr/bin/tails-server-gui", &["--version"]);

    // Man pages, found by man; completions, which their shells load.
    for page in [
        "tails-server",
        "tails-server-gui",
        "tails-server-service",
        "tails-server-persistence-create",
    ] {
        let path = ok("man", &["-w", page]);
        assert_eq!(
            path.trim(),
            format!("/usr/share/man/man1/{page}.1.gz"),
            "{page}"
        );
    }
    let complete = ok(
        "bash",
        &[
            "-c",
            ". /usr/share/bash-completion/completions/tails-server && complete -p tails-server",
        ],
    );
    assert!(complete.contains("tails-server"), "{complete}");
    for f in [
        "/usr/share/zsh/vendor-completions/_tails-server",
        "/usr/share/fish/vendor_completions.d/tails-server.fish",
    ] {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(text.contains("change-passphrase"), "{f}");
    }

    // Every binary finds its libraries.
    for bin in [
        "/usr/bin/tails-server",
        "/usr/bin/tails-server-gui",
        "/usr/lib/tails-server/tails-jailer",
        "/usr/lib/tails-server/vhost-device-vsock",
    ] {
        let ldd = ok("ldd", &[bin]);
        assert!(!ldd.contains("not found"), "{bin}:\n{ldd}");
    }
    ok("/usr/lib/tails-server/vhost-device-vsock", &["--version"]);

    // The package holds the very binaries setup.sh installed, those the
    // rest of the suite ran: build-deb.sh built nothing again (built apart,
    // with other dependency features, they would differ).
    for (packaged, installed) in [
        ("/usr/bin/tails-server", "/usr/local/bin/tails-server"),
        (
            "/usr/bin/tails-server-gui",
            "/usr/local/bin/tails-server-gui",
        ),
        (
            "/usr/lib/tails-server/tails-jailer",
            "/usr/local/lib/tails-server/tails-jailer",
        ),
        (
            "/usr/lib/tails-server/tails-torvm-agent",
            "/usr/local/lib/tails-server/tails-torvm-agent",
        ),
        (
            "/usr/lib/tails-server/tails-appvm-agent",
            "/usr/local/lib/tails-server/tails-appvm-agent",
        ),
    ] {
        let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(
            read(packaged) == read(installed),
            "{packaged} is not the {installed} setup.sh installed"
        );
    }

    // The catalog, as in the source tree.
    let names = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .map(|p| {
                let n = p.file_name().expect("name").to_string_lossy().into_owned();
                (n, std::fs::read(&p).expect("read"))
            })
            .collect();
        v.sort();
        v
    };
    let catalog = names(Path::new("/usr/lib/tails-server/services"));
    assert_eq!(
        catalog.len(),
        8,
        "{:?}",
        catalog.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    assert!(
        catalog == names(&root().join("services")),
        "the packaged catalog differs"
    );

    // The library directory follows the executable: without its Tor VM
    // agent, /usr/bin/tails-server names /usr/lib's, not /usr/local's.
    let agent = "/usr/lib/tails-server/tails-torvm-agent";
    let aside = "/usr/lib/tails-server/tails-torvm-agent.aside";
    std::fs::rename(agent, aside).expect("move the agent aside");
    let r = Command::new("/usr/bin/tails-server")
        .args(["image", "show"])
        .env_remove("TAILS_SERVER_LIB_DIR")
        .output()
        .expect("run");
    std::fs::rename(aside, agent).expect("put the agent back");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains(agent), "{err}");

    // The users and the group.
    for u in [
        "tails-torvm",
        "tails-appvm",
        "tails-vsock-torvm",
        "tails-vsock-appvm",
    ] {
        let line = ok("getent", &["passwd", u]);
        assert!(line.contains(":/nonexistent:/usr/sbin/nologin"), "{line}");
    }
    ok("getent", &["group", "tails-server"]);
    if run("getent", &["group", "kvm"]).0 == 0 {
        for u in ["tails-torvm", "tails-appvm"] {
            assert!(
                ok("id", &["-nG", u]).split_whitespace().any(|g| g == "kvm"),
                "{u}"
            );
        }
    }

    // The units, for /usr/bin, accepted by systemd.
    let unit = "/usr/lib/systemd/system/tails-server.service";
    let text = std::fs::read_to_string(unit).expect("unit");
    assert!(
        text.contains("ExecStart=/usr/bin/tails-server daemon --boot"),
        "{text}"
    );
    assert!(!text.contains("/usr/local"), "{text}");
    let socket = "/usr/lib/systemd/system/tails-server.socket";
    let mut units = vec![unit];
    if Path::new(socket).exists() {
        units.push(socket);
    }
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let mut args = vec!["verify"];
        args.extend(&units);
        ok("systemd-analyze", &args);
    }

    // The desktop file names the GUI and an icon that is there.
    let desktop = std::fs::read_to_string("/usr/share/applications/org.boum.tails.Server.desktop")
        .expect("desktop file");
    assert!(desktop.contains("\nExec=tails-server-gui\n"), "{desktop}");
    assert!(
        desktop.contains("\nIcon=org.boum.tails.Server\n"),
        "{desktop}"
    );
    let icon =
        std::fs::read_to_string("/usr/share/icons/hicolor/scalable/apps/org.boum.tails.Server.svg")
            .expect("icon");
    assert!(icon.contains("<svg"), "{icon}");
    assert!(
        std::fs::read_to_string("/usr/share/doc/tails-server/copyright")
            .expect("copyright")
            .contains("License: GPL-3.0+")
    );
}
