//! Issue 11: the catalog's services, all enabled at once in one App VM, each
//! used end to end by a real client of its protocol through the testnet's Tor
//! with the service's client-authorization key, as a person would use them. A
//! wrong password and a missing key fail, and the test checks that they do.
//! The same stack also answers the bad inputs (a port another enabled service
//! holds, an option out of range) with one line, changing nothing.
//!
//! One stack for the whole file (booting one costs minutes under TCG): one
//! test, whose client checks run side by side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tails_tests::clients::{self, SERVICES};
use tails_tests::torclient::FreshClient;
use tails_tests::*;

const RUNTIME: &str = "/run/tails-server";
const STATE: &str = "/run/ts-services-test-state";
/// A copy of the installed catalog, plus `web2`: nginx under another name,
/// on nginx's port (the same packages, so the same images).
const LIB: &str = "/run/ts-services-test-lib";
const INSTALLED_LIB: &str = "/usr/local/lib/tails-server";

fn t(args: &[&str]) -> Run {
    ts_env(
        args,
        &[
            ("TAILS_SERVER_STATE_DIR", STATE),
            ("TAILS_SERVER_LIB_DIR", LIB),
        ],
    )
}

fn t_ok(args: &[&str]) -> Run {
    let r = t(args);
    assert_eq!(r.code, 0, "tails-server {args:?}: {r:?}");
    r
}

fn one_line_error(r: &Run) -> &str {
    assert_ne!(r.code, 0, "should fail: {r:?}");
    let msg = r.stderr.trim();
    assert!(!msg.is_empty() && !msg.contains('\n'), "one line: {r:?}");
    msg
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

/// The test's catalog: the installed one and `web2`.
fn make_lib() {
    let _ = std::fs::remove_dir_all(LIB);
    let services = Path::new(LIB).join("services");
    std::fs::create_dir_all(&services).expect("lib dir");
    for f in ["tails-appvm-agent", "tails-torvm-agent", "tails-jailer"] {
        std::os::unix::fs::symlink(Path::new(INSTALLED_LIB).join(f), Path::new(LIB).join(f))
            .expect("symlink");
    }
    let installed = Path::new(INSTALLED_LIB).join("services");
    for e in std::fs::read_dir(&installed).expect("installed services") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), services.join(e.file_name())).expect("copy");
    }
    let nginx = std::fs::read_to_string(installed.join("nginx.yaml")).expect("nginx.yaml");
    let web2 = nginx.replacen("name: nginx", "name: web2", 1);
    assert_ne!(web2, nginx);
    std::fs::write(services.join("web2.yaml"), web2).expect("web2.yaml");
}

/// What one client run reported.
struct Outcome {
    code: i32,
    report: serde_json::Value,
}

impl Outcome {
    fn detail(&self) -> &str {
        self.report["detail"].as_str().unwrap_or("")
    }
}

/// Run a client script of `tests/clients/` with `python`.
fn client(python: &str, script: &str, args: &[String]) -> Outcome {
    let out = Command::new(python)
        .arg(clients::script(script))
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
    Outcome {
        code: out.status.code().unwrap_or(-1),
        report,
    }
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

/// What every check gets: where each service is, and two tor clients (one
/// with every service's key, one with none).
struct Ctx {
    address: BTreeMap<String, String>,
    port: BTreeMap<String, u16>,
    with_key: String,
    without_key: String,
}

impl Ctx {
    /// The common arguments of a client script for `service` through `socks`.
    fn args(&self, service: &str, socks: &str, timeout: u32, more: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--socks".into(),
            socks.into(),
            "--host".into(),
            self.address[service].clone(),
            "--port".into(),
            self.port[service].to_string(),
            "--timeout".into(),
            timeout.to_string(),
        ];
        a.extend(more.iter().map(|s| s.to_string()));
        a
    }

    /// Run `service`'s client script three ways: with the key and the right
    /// credentials (must succeed, and pass `check`), with the key and wrong
    /// credentials (must fail for them), and without the key (must fail:
    /// nothing reached). What happened, in one line.
    fn three_ways(&self, service: &str, check: impl Fn(&serde_json::Value)) -> String {
        let c = clients::client_script(service, |o| option(service, o))
            .unwrap_or_else(|| panic!("{service} has no client script"));
        let (python, script, refusal) = (c.python, c.script, c.refusal);
        let right: Vec<&str> = c.right.iter().map(String::as_str).collect();
        let wrong: Vec<&str> = c.wrong.iter().map(String::as_str).collect();
        let (right, wrong) = (&right[..], &wrong[..]);
        let run = || {
            client(
                python,
                script,
                &self.args(service, &self.with_key, 240, right),
            )
        };
        // Once more if the first try lost its connection on the way (a tor
        // stream cut, as a person would retry); the retry is reported.
        let mut ok = run();
        let mut retried = String::new();
        if ok.code != 0 && !ok.detail().to_lowercase().contains("auth") {
            retried = format!(" (retried once after: {})", ok.detail());
            ok = run();
        }
        assert_eq!(ok.code, 0, "{service}: {}{retried}", ok.report);
        check(&ok.report);
        let bad = client(
            python,
            script,
            &self.args(service, &self.with_key, 120, wrong),
        );
        assert_ne!(bad.code, 0, "{service}: wrong credentials: {}", bad.report);
        let why = bad.detail().to_lowercase();
        assert!(
            refusal.iter().any(|r| why.contains(r)),
            "{service}: refused for its credentials: {}",
            bad.report
        );
        let nokey = client(
            python,
            script,
            &self.args(service, &self.without_key, 90, right),
        );
        assert_ne!(
            nokey.code, 0,
            "{service}: without the key: {}",
            nokey.report
        );
        assert!(
            nokey.detail().contains("cannot connect"),
            "{service}: without the key nothing is reached: {}",
            nokey.report
        );
        format!(
            "{}{retried}; wrong credentials: {}; no key: {}",
            ok.detail(),
            bad.detail(),
            nokey.detail()
        )
    }
}

fn check_nginx(c: &Ctx) -> String {
    let page = format!("Hello from the group, {}", std::process::id());
    t_ok(&["exec", "appvm", "--", "sh", "-c", &page_script(&page)]);
    let url = format!("http://{}/", c.address["nginx"]);
    let mut last = String::new();
    let fetched = wait_until(240, || {
        let (_, out) = curl(&c.with_key, &[&url]);
        last = out;
        status_code(&last) == "200"
    });
    assert!(fetched && last.contains(&page), "nginx: the page: {last}");
    let (code, out) = curl(&c.without_key, &[&url]);
    assert_ne!(code, 0, "nginx: without the key: {out}");
    format!("page fetched (200); without the key curl exit {code}")
}

fn check_filedrop(c: &Ctx) -> String {
    let address = &c.address["filedrop"];
    let file = std::env::temp_dir().join(format!("ts-filedrop-{}", std::process::id()));
    let secret = format!("the documents, {}\n", std::process::id());
    std::fs::write(&file, &secret).expect("write");
    let file_arg = file.to_str().expect("utf-8");
    let url = format!("http://{address}/drop/report.txt");
    // The upload (retried while the descriptor reaches the client's tor).
    let mut last = String::new();
    let uploaded = wait_until(240, || {
        let (_, out) = curl(&c.with_key, &["-T", file_arg, &url]);
        last = out;
        status_code(&last) == "201"
    });
    assert!(uploaded, "filedrop: the upload: {last}");
    // Nobody can list the folder, read the file back, or overwrite it.
    let (_, out) = curl(&c.with_key, &[&format!("http://{address}/drop/")]);
    assert_eq!(status_code(&out), "403", "filedrop: listing: {out}");
    let (_, out) = curl(&c.with_key, &[&url]);
    assert_eq!(status_code(&out), "403", "filedrop: reading it back: {out}");
    assert!(!out.contains("the documents"), "{out}");
    let (_, out) = curl(&c.with_key, &["-T", file_arg, &url]);
    assert_eq!(status_code(&out), "409", "filedrop: overwriting: {out}");
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
    let (code, out) = curl(&c.without_key, &["-T", file_arg, &url]);
    assert_ne!(code, 0, "filedrop: without the key: {out}");
    let _ = std::fs::remove_file(&file);
    format!("uploaded (201), listing 403, reading 403, overwriting 409; without the key curl exit {code}")
}

fn check_irc(c: &Ctx) -> String {
    assert_eq!(
        option("ngircd", "server-password").len(),
        20,
        "a generated password"
    );
    c.three_ways("ngircd", |r| {
        let motd = r["motd"].as_str().unwrap_or("");
        assert!(motd.contains("through Tor"), "the welcome message: {r}");
    })
}

fn check_xmpp(c: &Ctx) -> String {
    c.three_ways("prosody", |r| {
        assert_eq!(r["received"]["bob"], true, "bob heard alice: {r}")
    })
}

fn check_mumble(c: &Ctx) -> String {
    let welcome = option("mumble-server", "welcome");
    c.three_ways("mumble-server", |r| {
        assert_eq!(r["root_channel"], "Root", "the root channel: {r}");
        let got = r["welcome"].as_str().unwrap_or("");
        assert!(got.contains(&welcome), "the welcome text: {r}");
    })
}

fn check_gobby(c: &Ctx) -> String {
    c.three_ways("infinoted", |r| {
        assert!(r["read_back"].is_string(), "a second session read it: {r}")
    })
}

fn check_sftp(c: &Ctx) -> String {
    c.three_ways("sftp", |r| {
        assert_eq!(r["shell_refused"], true, "{r}");
        assert_eq!(r["forward_refused"], true, "{r}");
    })
}

fn check_icecast(c: &Ctx) -> String {
    c.three_ways("icecast", |r| {
        assert!(r["received_bytes"].as_u64().unwrap_or(0) > 0, "{r}")
    })
}

/// `(comm, user)` of every process of the App VM (kernel threads left out).
fn appvm_processes() -> Vec<(String, String)> {
    // Shell built-ins only, so the listing does not list itself; kernel threads
    // have no executable.
    let r = t_ok(&[
        "exec",
        "appvm",
        "--",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do [ -e $p/exe ] || continue; read -r c < $p/comm; \
         while read -r k v _; do [ \"$k\" = Uid: ] && echo \"$c $v\"; done < $p/status; done; true",
    ]);
    let passwd = t_ok(&["exec", "appvm", "--", "cat", "/etc/passwd"]).stdout;
    let users: BTreeMap<&str, &str> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3).then(|| (f[2], f[0]))
        })
        .collect();
    r.stdout
        .lines()
        .filter_map(|l| {
            let (comm, uid) = l.rsplit_once(' ')?;
            Some((
                comm.to_owned(),
                users.get(uid).map_or(uid.to_owned(), |u| u.to_string()),
            ))
        })
        .collect()
}

#[test]
fn every_service_at_once_each_used_by_its_client_through_tor() {
    clean_start(Path::new(RUNTIME));
    let _ = std::fs::remove_dir_all(STATE);
    make_lib();
    // The suite's testnet if one runs (see daemon.rs), else a new one.
    let _testnet = TestnetGuard::join();
    t_ok(&["up", "--network", "local"]);

    // The catalog: every service listed, each with what a person needs.
    let list = t_ok(&["list"]).stdout;
    for name in SERVICES {
        assert!(list.contains(name), "list lacks {name}: {list}");
        let info: serde_json::Value =
            serde_json::from_str(&t_ok(&[name, "info", "--details", "--json"]).stdout)
                .expect("info json");
        for field in [
            "description",
            "client-application",
            "documentation",
            "icon-name",
        ] {
            let v = info[field].as_str().unwrap_or("");
            assert!(!v.is_empty(), "{name}: info lacks {field}: {info}");
        }
    }

    // Nothing runs that is not enabled: before any enable, the agent alone.
    let agent = t_ok(&["exec", "appvm", "--", "cat", "/proc/1/comm"]).stdout;
    let idle: Vec<(String, String)> = appvm_processes()
        .into_iter()
        .filter(|(c, _)| c != agent.trim() && c != "sh")
        .collect();
    assert!(idle.is_empty(), "running before any enable: {idle:?}");

    // All of them enabled together.
    let mut address = BTreeMap::new();
    let mut port = BTreeMap::new();
    let mut keys = Vec::new();
    let mut enable_secs = Vec::new();
    for name in SERVICES {
        let started = Instant::now();
        let r = t_ok(&[name, "enable"]);
        enable_secs.push(format!("{name} {:.1} s", started.elapsed().as_secs_f64()));
        address.insert(name.to_owned(), yaml_field(&r.stdout, "address"));
        port.insert(
            name.to_owned(),
            option(name, "virtual-port").parse::<u16>().expect("a port"),
        );
        let creds = credentials(name);
        let info = creds["connection-info"].as_str().unwrap_or("").to_owned();
        assert!(info.contains(&address[name]), "{name}: {info}");
        keys.push(
            creds["auth-private"]
                .as_str()
                .expect("auth-private")
                .to_owned(),
        );
    }
    println!("enable: {}", enable_secs.join(", "));

    // Bad input, with all of them running: one line, nothing changed.
    let r = t(&["web2", "enable"]);
    let msg = one_line_error(&r);
    assert!(
        msg.contains("8080") && msg.contains("nginx") && msg.contains("disable"),
        "{msg}"
    );
    let st = status_json();
    let services = st["services"].as_array().expect("services").clone();
    assert!(
        !services.iter().any(|s| s["name"] == "web2"),
        "web2 was not started: {st}"
    );
    let web2: serde_json::Value =
        serde_json::from_str(&t_ok(&["web2", "info", "--json"]).stdout).expect("json");
    assert!(web2["address"].is_null(), "web2 got no key: {web2}");
    println!("web2 on nginx's port: {msg}");
    let r = t(&["icecast", "set-option", "max-clients", "0"]);
    let msg = one_line_error(&r);
    assert!(msg.contains("max-clients") && msg.contains("5"), "{msg}");
    assert_eq!(option("icecast", "max-clients"), "100");
    println!("max-clients 0: {msg}");

    // status shows each one published.
    for name in SERVICES {
        let s = services
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("status lacks {name}: {st}"));
        assert_eq!(s["published"], true, "{name}: {s}");
        assert_eq!(s["running"], true, "{name}: {s}");
    }

    // Each runs as its own user; nothing but the agent and sshd's listener
    // (OpenSSH's privilege separation) is root.
    let procs = appvm_processes();
    let user_of = |comm: &str| -> Vec<&str> {
        procs
            .iter()
            .filter(|(c, _)| c.starts_with(comm))
            .map(|(_, u)| u.as_str())
            .collect()
    };
    for (comm, user) in [
        ("nginx", "www-data"),
        ("ngircd", "irc"),
        ("lua", "prosody"),
        ("murmurd", "mumble-server"),
        ("infinoted", "infinoted"),
        ("icecast2", "icecast2"),
    ] {
        let users = user_of(comm);
        assert!(
            !users.is_empty() && users.iter().all(|u| *u == user),
            "{comm} runs as {users:?}, not {user}: {procs:?}"
        );
    }
    let root: Vec<&str> = procs
        .iter()
        .filter(|(c, u)| u == "root" && c != agent.trim() && c != "sshd" && c != "sh")
        .map(|(c, _)| c.as_str())
        .collect();
    assert!(root.is_empty(), "root processes in the App VM: {root:?}");

    // The App VM's memory with all of them running.
    let meminfo = t_ok(&["exec", "appvm", "--", "cat", "/proc/meminfo"]).stdout;
    let kib = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {meminfo}"))
    };
    let (total, available) = (kib("MemTotal:"), kib("MemAvailable:"));
    println!(
        "App VM memory with {} services running: {} MiB used of {} MiB (guest RAM 512 MiB)",
        SERVICES.len(),
        (total - available) / 1024,
        total / 1024
    );

    // The clients, side by side, through one tor client with every key and
    // one with none.
    let join = tails_testnet::join_options(&tails_testnet::Config::default()).expect("join");
    let sock = |p: u16| -> SocketAddr { format!("10.100.0.2:{p}").parse().expect("addr") };
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let with_key = FreshClient::with_keys("ts-outside", &join, sock(9171), &key_refs);
    let without_key = FreshClient::with_keys("ts-outside", &join, sock(9172), &[]);
    let ctx = Ctx {
        address,
        port,
        with_key: with_key.socks.to_string(),
        without_key: without_key.socks.to_string(),
    };
    type Check = fn(&Ctx) -> String;
    let checks: [(&str, Check); 8] = [
        ("nginx", check_nginx),
        ("filedrop", check_filedrop),
        ("ngircd", check_irc),
        ("prosody", check_xmpp),
        ("mumble-server", check_mumble),
        ("infinoted", check_gobby),
        ("sftp", check_sftp),
        ("icecast", check_icecast),
    ];
    let results: Vec<(&str, f64, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .iter()
            .map(|(name, check)| {
                let ctx = &ctx;
                let h = s.spawn(move || {
                    let started = Instant::now();
                    let r = check(ctx);
                    (started.elapsed().as_secs_f64(), r)
                });
                (*name, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| match h.join() {
                Ok((secs, line)) => (name, secs, Ok(line)),
                Err(p) => {
                    let why = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    (name, 0.0, Err(why))
                }
            })
            .collect()
    });
    let mut failed = Vec::new();
    for (name, secs, r) in &results {
        match r {
            Ok(line) => println!("{name} ({secs:.0} s): {line}"),
            Err(why) => failed.push(format!("{name}: {why}")),
        }
    }
    drop(with_key);
    drop(without_key);
    let st = status_json();
    t_ok(&["down"]);
    let _ = std::fs::remove_dir_all(STATE);
    let _ = std::fs::remove_dir_all(LIB);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // Still all published after every client ran.
    for name in SERVICES {
        let s = st["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("status lacks {name}: {st}"));
        assert_eq!(s["published"], true, "{name} after the clients: {s}");
    }
}
