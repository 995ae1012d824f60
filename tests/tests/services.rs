//! Issue 11: the catalog's services used end to end, each by a real client
//! of its protocol, through the testnet's Tor with the service's
//! client-authorization key, as a person would use them; a wrong password
//! and a missing key fail, and the test checks that they do.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use tails_tests::torclient::FreshClient;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-services-test-state";
/// Debian's python, with Debian's client libraries (not a pyenv on PATH).
const PYTHON: &str = "/usr/bin/python3";

fn t(args: &[&str]) -> Run {
    ts_env(args, &[("TAILS_SERVER_STATE_DIR", STATE)])
}

fn t_ok(args: &[&str]) -> Run {
    let r = t(args);
    assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
    r
}

fn credentials(service: &str) -> serde_json::Value {
    let r = t_ok(&[service, "credentials", "--json"]);
    serde_json::from_str(&r.stdout).expect("credentials json")
}

fn option(service: &str, name: &str) -> String {
    t_ok(&[service, "get-option", name])
        .stdout
        .trim()
        .to_owned()
}

/// Run a client script of `tests/clients/` with `args`; its exit code and
/// its JSON report.
fn client(script: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(script);
    let out = Command::new(PYTHON)
        .arg(&path)
        .args(args)
        .output()
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{script} gave no report: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn irc_two_people_chat_in_the_channel_through_tor() {
    clean_start(Path::new(RUNTIME));
    let _ = std::fs::remove_dir_all(STATE);
    let r = ts(&["testnet", "up"]);
    assert_eq!(r.code, 0, "testnet up: {r:?}");
    t_ok(&["up", "--network", "local"]);
    let r = t_ok(&["ngircd", "enable"]);
    let address = yaml_field(&r.stdout, "address");
    let creds = credentials("ngircd");
    let line = creds["auth-private"]
        .as_str()
        .expect("auth-private")
        .to_owned();
    let password = option("ngircd", "server-password");
    let channel = format!("#{}", option("ngircd", "channel"));
    assert_eq!(password.len(), 20, "a generated password");
    // What a person is told holds all they need.
    let info = creds.to_string();
    for want in [
        address.as_str(),
        password.as_str(),
        channel.as_str(),
        "SOCKS5",
    ] {
        assert!(info.contains(want), "connection info lacks {want}: {info}");
    }
    let st = status_json();
    assert_eq!(st["services"][0]["name"], "ngircd", "{st}");
    assert_eq!(st["services"][0]["published"], true, "{st}");
    // It runs as its own user, never root.
    let r = t_ok(&[
        "exec",
        "appvm",
        "--",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = ngircd ] && stat -c %U $p; done; true",
    ]);
    assert_eq!(r.stdout.trim(), "irc", "ngircd's user: {r:?}");

    let join = tails_testnet::join_options(&tails_testnet::Config::default()).expect("join");
    let sock = |p: u16| -> SocketAddr { format!("10.100.0.2:{p}").parse().expect("addr") };
    let with_key = FreshClient::with_keys("ts-outside", &join, sock(9171), &[&line]);
    let socks = with_key.socks.to_string();
    let args = |pw: &str| -> Vec<String> {
        [
            "--socks",
            &socks,
            "--host",
            &address,
            "--port",
            "6667",
            "--password",
            pw,
            "--channel",
            &channel,
            "--timeout",
            "240",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args(&password);
    let (code, report) = client(
        "irc_chat.py",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "two people chat: {report}");
    assert!(
        report["motd"]
            .as_str()
            .unwrap_or("")
            .contains("through Tor"),
        "the welcome message: {report}"
    );
    println!("irc: {}", report["detail"]);

    // A wrong password: refused by the server.
    let bad = args("not-the-password");
    let (code, report) = client(
        "irc_chat.py",
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_ne!(code, 0, "a wrong password must be refused: {report}");
    let detail = report["detail"].as_str().unwrap_or("");
    assert!(
        (detail.contains("passwdmismatch") || detail.contains("Bad password"))
            && detail.contains("joined []"),
        "refused by the server for its password: {report}"
    );
    println!("irc, wrong password: {detail}");

    // No client-authorization key: tor cannot even reach the service.
    let without = FreshClient::with_keys("ts-outside", &join, sock(9172), &[]);
    let socks2 = without.socks.to_string();
    let mut nokey = args(&password);
    nokey[1] = socks2;
    nokey[11] = "60".into();
    let (code, report) = client(
        "irc_chat.py",
        &nokey.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_ne!(code, 0, "without the key nothing is reached: {report}");
    let detail = report["detail"].as_str().unwrap_or("");
    assert!(detail.contains("cannot connect"), "{report}");
    println!("irc, no client-auth key: {detail}");
    drop(with_key);
    drop(without);
    t_ok(&["down"]);
    let _ = std::fs::remove_dir_all(STATE);
}

/// `curl` through the tor client at `socks` (names resolved by tor); its exit
/// code and what it printed (`-w` adds the HTTP status last).
fn curl(socks: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "--socks5-hostname",
            socks,
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn status_code(out: &str) -> &str {
    out.lines().last().unwrap_or("").trim()
}

#[test]
fn filedrop_takes_uploads_that_nobody_can_list_or_read() {
    clean_start(Path::new(RUNTIME));
    let _ = std::fs::remove_dir_all(STATE);
    let r = ts(&["testnet", "up"]);
    assert_eq!(r.code, 0, "testnet up: {r:?}");
    t_ok(&["up", "--network", "local"]);
    let r = t_ok(&["filedrop", "enable"]);
    let address = yaml_field(&r.stdout, "address");
    let line = credentials("filedrop")["auth-private"]
        .as_str()
        .expect("auth-private")
        .to_owned();
    let join = tails_testnet::join_options(&tails_testnet::Config::default()).expect("join");
    let sock = |p: u16| -> SocketAddr { format!("10.100.0.2:{p}").parse().expect("addr") };
    let source = FreshClient::with_keys("ts-outside", &join, sock(9181), &[&line]);
    let socks = source.socks.to_string();
    let file = std::env::temp_dir().join(format!("ts-filedrop-{}", std::process::id()));
    let secret = format!("the documents, {}\n", std::process::id());
    std::fs::write(&file, &secret).expect("write");
    let url = format!("http://{address}/drop/report.txt");
    // The upload (retried while the descriptor reaches the client's tor).
    let mut last = String::new();
    let uploaded = wait_until(240, || {
        let (_, out) = curl(&socks, &["-T", file.to_str().expect("utf-8"), &url]);
        last = out;
        status_code(&last) == "201"
    });
    assert!(uploaded, "the upload: {last}");
    // Nobody can list the folder, read the file back, or overwrite it.
    let (_, out) = curl(&socks, &[&format!("http://{address}/drop/")]);
    assert_eq!(status_code(&out), "403", "listing: {out}");
    let (_, out) = curl(&socks, &[&url]);
    assert_eq!(status_code(&out), "403", "reading it back: {out}");
    assert!(!out.contains("the documents"), "{out}");
    let (_, out) = curl(&socks, &["-T", file.to_str().expect("utf-8"), &url]);
    assert_eq!(status_code(&out), "409", "overwriting: {out}");
    // The operator reads it, on the server.
    let r = t_ok(&[
        "exec",
        "appvm",
        "--",
        "cat",
        "/var/lib/tails-server-filedrop/drop/report.txt",
    ]);
    assert_eq!(r.stdout, secret);
    let r = t_ok(&[
        "exec",
        "appvm",
        "--",
        "stat",
        "-c",
        "%U %a",
        "/var/lib/tails-server-filedrop/drop",
        "/var/lib/tails-server-filedrop/drop/report.txt",
    ]);
    assert_eq!(r.stdout, "www-data 700\nwww-data 600\n", "{r:?}");
    // Without the client's key, tor reaches nothing.
    let other = FreshClient::with_keys("ts-outside", &join, sock(9182), &[]);
    let (code, out) = curl(
        &other.socks.to_string(),
        &["-T", file.to_str().expect("utf-8"), &url],
    );
    assert_ne!(code, 0, "without the key: {out}");
    println!("filedrop: uploaded (201), listing 403, reading 403, overwriting 409; without the key curl exit {code}");
    drop(source);
    drop(other);
    let _ = std::fs::remove_file(&file);
    t_ok(&["down"]);
    let _ = std::fs::remove_dir_all(STATE);
}
