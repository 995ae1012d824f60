//! The real testnet, end to end (needs root, Debian's tor, tor-gencert,
//! dnsmasq, curl): `up` until ready, the status, a fetch through the exit
//! seen from the outside web server, a namespace without a default route,
//! `up` again as a no-op, and `down` leaving nothing behind.
//!
//! It uses its own namespace, subnet and state directory so that it never
//! touches a testnet started with the defaults.

use std::cell::RefCell;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tails_testnet::{
    down, join_options, join_options_here, status, up, Config, OUTSIDE_NAME, OUTSIDE_PAGE,
};

fn cfg() -> Config {
    Config {
        state_dir: "/run/tails-server-testnet-it".into(),
        netns: "tstnet-it".into(),
        subnet_prefix: "10.201.0".into(),
    }
}

/// Takes the testnet down even when an assertion fails.
struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = down(&cfg()) {
            eprintln!("cleanup: testnet down failed: {e}");
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn sh(program: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// (pid, start time, state) of a process, from /proc.
fn proc_stat(pid: i64) -> Option<(u64, char)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    Some((f.nth(18)?.parse().ok()?, state))
}

/// Every process recorded in the state file: (name, pid, start time).
fn recorded(state_file: &Path) -> Vec<(String, i64, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(state_file).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut push = |name: String, p: &serde_json::Value| {
        if let (Some(pid), Some(start)) = (p["pid"].as_i64(), p["start"].as_u64()) {
            out.push((name, pid, start));
        }
    };
    for n in v["nodes"].as_array().unwrap() {
        push(n["nick"].as_str().unwrap().to_string(), &n["proc"]);
    }
    push("dnsmasq".into(), &v["dnsmasq"]);
    push("web".into(), &v["web"]);
    out
}

fn running(pid: i64, start: u64) -> bool {
    matches!(proc_stat(pid), Some((s, st)) if s == start && st != 'Z' && st != 'X')
}

fn curl_through(socks: &str, url: &str) -> String {
    let (ok, out, err) = sh(
        "curl",
        &["-sS", "--max-time", "60", "--socks5-hostname", socks, url],
    );
    assert!(ok, "curl {url} through {socks}: {err}");
    out
}

#[test]
fn testnet_up_fetch_through_exit_and_down() {
    if !is_root() {
        eprintln!("skipped: the testnet needs root");
        return;
    }
    let cfg = cfg();
    let _ = down(&cfg);
    let _guard = Down;

    let t = Instant::now();
    let st = up(&cfg, &|m| eprintln!("testnet: {m}")).expect("testnet up");
    let ready = t.elapsed();
    println!("testnet: time to ready {:.1} s", ready.as_secs_f64());
    eprintln!("testnet: time to ready {:.1} s", ready.as_secs_f64());
    assert!(st.up, "{st:?}");
    assert!(st.relays >= 3, "{st:?}");
    assert!(st.exits >= 1, "{st:?}");
    assert!(st.hsdirs >= 1, "{st:?}");
    assert_eq!(st.bootstrap, 100, "{st:?}");
    assert_eq!(st.host_addr.to_string(), "10.201.0.1");
    assert_eq!(st.outside_addr.to_string(), "10.201.0.2");
    assert_eq!(st.subnet, "10.201.0.0/24");

    // status, from the state file, agrees.
    let s2 = status(&cfg).unwrap();
    assert!(
        s2.up && s2.bootstrap == 100 && s2.exits >= 1 && s2.hsdirs >= 1,
        "{s2:?}"
    );
    assert_eq!(s2.socks, st.socks);

    // `up` again here: already up. From another network namespace, where
    // the veth's host end is not: refused in one line, the testnet untouched.
    let again = up(&cfg, &|m| eprintln!("testnet: {m}")).expect("up again, same namespace");
    assert_eq!(again.socks, st.socks);
    let other = format!("tstnet-other-{}", std::process::id());
    let (ok, _, err) = sh("ip", &["netns", "add", &other]);
    assert!(ok, "ip netns add {other}: {err}");
    let path = format!("/run/netns/{other}");
    let refused = std::thread::spawn(move || {
        let ns = fs::File::open(&path).expect("open the other namespace");
        // SAFETY: setns moves only this thread, which owns nothing else.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let up = up(&self::cfg(), &|m| {
            eprintln!("testnet (other namespace): {m}")
        });
        // What a daemon there asks before its Tor VM joins: refused too,
        // while the options themselves are still there to read.
        let here = join_options_here(&self::cfg());
        let anywhere = join_options(&self::cfg());
        (up, here, anywhere)
    })
    .join();
    let _ = sh("ip", &["netns", "del", &other]);
    let (up_there, here, anywhere) = refused.expect("thread");
    for r in [up_there.map(|_| ()), here.map(|_| ())] {
        let msg = r.expect_err("from another namespace").to_string();
        assert!(
            msg.contains("started in another network namespace") && !msg.contains('\n'),
            "{msg}"
        );
    }
    assert!(anywhere.is_ok(), "{anywhere:?}");
    assert_eq!(
        join_options_here(&cfg).unwrap(),
        join_options(&cfg).unwrap()
    );
    assert!(status(&cfg).unwrap().up, "the testnet is still up");

    // The join options, in the API and in join.torrc.
    let join = join_options(&cfg).unwrap();
    assert_eq!(join[0], "TestingTorNetwork 1");
    assert_eq!(
        join.iter()
            .filter(|o| o.starts_with("DirAuthority "))
            .count(),
        3,
        "{join:?}"
    );
    let join_text = fs::read_to_string(st.join_torrc.as_ref().unwrap()).unwrap();
    for o in &join {
        assert!(join_text.lines().any(|l| l == o), "{o} not in {join_text}");
    }

    // A fetch through the client's SOCKS port, by name (resolved by the exit
    // through the outside DNS server) and by address: the outside web server
    // sees the exit (10.201.0.2) as the client, never the host (10.201.0.1).
    let socks = st.socks.unwrap().to_string();
    let tag = format!("it-{}", std::process::id());
    let body = curl_through(&socks, &format!("http://{OUTSIDE_NAME}:8080/{tag}-name"));
    assert_eq!(body, OUTSIDE_PAGE);
    let body = curl_through(&socks, &format!("http://10.201.0.2:8080/{tag}-addr"));
    assert_eq!(body, OUTSIDE_PAGE);
    let log = fs::read_to_string(st.web_log.as_ref().unwrap()).unwrap();
    for path in [format!("/{tag}-name"), format!("/{tag}-addr")] {
        let line = log
            .lines()
            .find(|l| l.contains(&path))
            .unwrap_or_else(|| panic!("{path} not in the web log:\n{log}"));
        assert!(
            line.contains(" 10.201.0.2:"),
            "client is not the exit: {line}"
        );
    }
    assert!(
        !log.contains("10.201.0.1"),
        "the host reached the web server directly:\n{log}"
    );

    // The namespace has no route out.
    for family in ["-4", "-6"] {
        let (ok, routes, err) = sh("ip", &["netns", "exec", &cfg.netns, "ip", family, "route"]);
        assert!(ok, "ip route in the namespace: {err}");
        assert!(
            !routes.contains("default"),
            "default route in the namespace: {routes}"
        );
    }
    let (_, routes, _) = sh("ip", &["netns", "exec", &cfg.netns, "ip", "-4", "route"]);
    assert_eq!(routes.lines().count(), 1, "{routes}");

    // up again: a no-op that says so.
    let state_file = cfg.state_dir.join("testnet.json");
    let before = fs::read_to_string(&state_file).unwrap();
    let said = RefCell::new(Vec::new());
    let t = Instant::now();
    let again = up(&cfg, &|m| said.borrow_mut().push(m.to_string())).expect("second up");
    assert!(again.up);
    assert!(
        said.borrow().iter().any(|m| m.contains("already up")),
        "{:?}",
        said.borrow()
    );
    assert!(
        t.elapsed().as_secs() < 30,
        "second up took {:?}",
        t.elapsed()
    );
    assert_eq!(
        fs::read_to_string(&state_file).unwrap(),
        before,
        "second up changed the state"
    );

    // down: nothing left.
    let procs = recorded(&state_file);
    assert_eq!(procs.len(), 9, "{procs:?}");
    assert!(
        procs.iter().all(|(_, pid, start)| running(*pid, *start)),
        "{procs:?}"
    );
    assert!(down(&cfg).expect("testnet down"));
    for (name, pid, start) in &procs {
        assert!(!running(*pid, *start), "{name} (pid {pid}) still runs");
    }
    let mark = cfg.state_dir.display().to_string();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(!cmdline.contains(&mark), "left running: {cmdline}");
    }
    assert!(
        !Path::new("/run/netns").join(&cfg.netns).exists(),
        "namespace left"
    );
    let (_, list, _) = sh("ip", &["netns", "list"]);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(cfg.netns.as_str())),
        "{list}"
    );
    assert!(!Path::new("/sys/class/net/tstnet0").exists(), "veth left");
    assert!(!cfg.state_dir.exists(), "state directory left");
    assert!(!status(&cfg).unwrap().up);
    assert!(!down(&cfg).unwrap(), "second down found something");
}
