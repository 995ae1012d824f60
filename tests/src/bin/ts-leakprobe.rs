//! `ts-leakprobe`: a static program copied into the App VM and run there as
//! root by the isolation tests. It tries every way out of the App VM that
//! does not go through Tor (direct TCP/UDP/ICMP, raw and spoofed packets,
//! ARP and DHCP, broadcast and multicast, IPv6, vsock, scans of the
//! gateway, changed MAC/IP/routes) and prints one JSON line per vector:
//!
//! ```text
//! {"vector":"udp-outside","outcome":"blocked","detail":"…","ms":1502}
//! …
//! {"summary":{"vectors":36,"reached":0,"blocked":36,"error":0,"elapsed_ms":31000}}
//! ```
//!
//! `reached` means something answered; `blocked`, that nothing did or the
//! kernel refused; `error`, that the probe could not try (see `probes` for
//! the exact rules). It exits 0 whenever it ran (the test judges), 2 on bad
//! arguments. Only `libc` and `serde_json`; it shells out to `ip` and `nft`
//! for configuration changes.

// The modules live beside this file, in ts-leakprobe/ (a crate root's
// submodules are otherwise looked up in src/bin/ itself).
#[path = "ts-leakprobe/iface.rs"]
mod iface;
#[path = "ts-leakprobe/packets.rs"]
mod packets;
#[path = "ts-leakprobe/probes.rs"]
mod probes;
#[path = "ts-leakprobe/sys.rs"]
mod sys;
#[path = "ts-leakprobe/vectors.rs"]
mod vectors;

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use probes::{Ctx, Outcome, Res};
use serde_json::json;

const USAGE: &str = "usage: ts-leakprobe --outside IP --web-port PORT --or-ports P,P \
--dir-ports P,P --host-addrs IP,IP [--iface eth0] [--gateway 10.1.2.1] \
[--gateway-mac 00:55:44:33:22:11] [--slirp-gw 10.0.2.2] [--slirp-dns 10.0.2.3] \
[--torvm-uplink 10.0.2.15] [--remove-own-firewall] [--only NAME,NAME] [--timeout-ms 1500] \
[--scan-window 4000]";

/// The flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--iface",
    "--outside",
    "--web-port",
    "--or-ports",
    "--dir-ports",
    "--host-addrs",
    "--gateway",
    "--gateway-mac",
    "--slirp-gw",
    "--slirp-dns",
    "--torvm-uplink",
    "--only",
    "--timeout-ms",
    "--scan-window",
];

/// The command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub iface: String,
    pub outside: Ipv4Addr,
    pub web_port: u16,
    pub or_ports: Vec<u16>,
    pub dir_ports: Vec<u16>,
    pub host_addrs: Vec<Ipv4Addr>,
    pub gateway: Ipv4Addr,
    pub gateway_mac: [u8; 6],
    pub slirp_gw: Ipv4Addr,
    pub slirp_dns: Ipv4Addr,
    pub torvm_uplink: Ipv4Addr,
    pub remove_own_firewall: bool,
    pub only: Option<Vec<String>>,
    pub timeout: Duration,
    /// TCP connects the gateway scan keeps in flight.
    pub scan_window: usize,
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("{flag}: bad item {s:?}")))
        .collect()
}

fn one<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{flag}: bad value {v:?}"))
}

/// Parses the arguments (`--flag value` or `--flag=value`).
fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut c = Config {
        iface: "eth0".into(),
        outside: Ipv4Addr::UNSPECIFIED,
        web_port: 0,
        or_ports: Vec::new(),
        dir_ports: Vec::new(),
        host_addrs: Vec::new(),
        gateway: Ipv4Addr::new(10, 1, 2, 1),
        gateway_mac: [0x00, 0x55, 0x44, 0x33, 0x22, 0x11],
        slirp_gw: Ipv4Addr::new(10, 0, 2, 2),
        slirp_dns: Ipv4Addr::new(10, 0, 2, 3),
        torvm_uplink: Ipv4Addr::new(10, 0, 2, 15),
        remove_own_firewall: false,
        only: None,
        timeout: Duration::from_millis(1500),
        scan_window: 4000,
    };
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if flag == "--remove-own-firewall" {
            if inline.is_some() {
                return Err(format!("{flag} takes no value"));
            }
            c.remove_own_firewall = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        if !VALUE_FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag:?}"));
        }
        let v = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("{flag} needs a value"))?
                    .clone();
                i += 1;
                v
            }
        };
        match flag.as_str() {
            "--iface" => {
                if v.is_empty() || v.len() > 15 || v.contains('/') {
                    return Err(format!("--iface: bad name {v:?}"));
                }
                c.iface = v;
            }
            "--outside" => c.outside = one(&flag, &v)?,
            "--web-port" => c.web_port = one(&flag, &v)?,
            "--or-ports" => c.or_ports = list(&flag, &v)?,
            "--dir-ports" => c.dir_ports = list(&flag, &v)?,
            "--host-addrs" => c.host_addrs = list(&flag, &v)?,
            "--gateway" => c.gateway = one(&flag, &v)?,
            "--gateway-mac" => {
                c.gateway_mac = packets::parse_mac(v.trim())
                    .ok_or_else(|| format!("--gateway-mac: bad MAC {v:?}"))?
            }
            "--slirp-gw" => c.slirp_gw = one(&flag, &v)?,
            "--slirp-dns" => c.slirp_dns = one(&flag, &v)?,
            "--torvm-uplink" => c.torvm_uplink = one(&flag, &v)?,
            "--only" => {
                let names: Vec<String> = list(&flag, &v)?;
                for n in &names {
                    if !vectors::VECTORS.iter().any(|(v, _)| v == n) {
                        return Err(format!("--only: unknown vector {n:?}"));
                    }
                }
                if names.is_empty() {
                    return Err("--only: empty list".into());
                }
                c.only = Some(names);
            }
            "--timeout-ms" => {
                let ms: u64 = one(&flag, &v)?;
                if !(1..=60_000).contains(&ms) {
                    return Err("--timeout-ms: must be 1..=60000".into());
                }
                c.timeout = Duration::from_millis(ms);
            }
            "--scan-window" => {
                let n: usize = one(&flag, &v)?;
                if !(16..=30_000).contains(&n) {
                    return Err("--scan-window: must be 16..=30000".into());
                }
                c.scan_window = n;
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
        seen.push(flag);
    }
    for req in [
        "--outside",
        "--web-port",
        "--or-ports",
        "--dir-ports",
        "--host-addrs",
    ] {
        if !seen.iter().any(|s| s == req) {
            return Err(format!("{req} is required"));
        }
    }
    if c.web_port == 0 || c.or_ports.contains(&0) || c.dir_ports.contains(&0) {
        return Err("ports must be 1..=65535".into());
    }
    Ok(c)
}

/// Writes the JSON lines (one writer at a time) and counts outcomes.
struct Out {
    counts: Mutex<[u32; 3]>,
}

impl Out {
    fn line(&self, v: serde_json::Value) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    }

    fn vector(&self, name: &str, o: &Outcome, took: Duration) {
        if let Ok(mut c) = self.counts.lock() {
            c[o.res as usize] += 1;
        }
        self.line(json!({
            "vector": name,
            "outcome": o.res.as_str(),
            "detail": o.detail,
            "ms": took.as_millis() as u64,
        }));
    }

    fn setup(&self, name: &str, ok: bool, detail: &str) {
        self.line(json!({
            "setup": name,
            "outcome": if ok { "ok" } else { "error" },
            "detail": detail,
        }));
    }
}

/// Runs a vector, turning a panic (a bug in the probe) into an error
/// outcome so that every other vector still reports.
fn guarded(f: impl FnOnce() -> Outcome) -> Outcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Outcome {
        res: Res::Error,
        detail: "the probe panicked (a bug in ts-leakprobe; see stderr)".into(),
    })
}

/// What a root attacker does first: flush nftables, enable IPv6.
fn remove_own_firewall(tools: &iface::Tools, ifname: &str) -> (bool, String) {
    let mut notes = Vec::new();
    let mut ok = true;
    match &tools.nft {
        Some(nft) => match iface::run(nft, &["flush", "ruleset"]) {
            Ok(_) => notes.push("nft flush ruleset: ok".to_string()),
            Err(e) => {
                ok = false;
                notes.push(e)
            }
        },
        None => {
            ok = false;
            notes.push("nft not found".into())
        }
    }
    for n in ["all", "default", ifname] {
        let p = format!("/proc/sys/net/ipv6/conf/{n}/disable_ipv6");
        match std::fs::write(&p, "0") {
            Ok(()) => notes.push(format!("{p}=0")),
            Err(e) => {
                ok = false;
                notes.push(format!("{p}: {e}"))
            }
        }
    }
    (ok, notes.join("; "))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("ts-leakprobe: {e} ({USAGE})");
            std::process::exit(2);
        }
    };
    let ifindex = match sys::if_index(&cfg.iface) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ts-leakprobe: --iface {}: {}", cfg.iface, sys::err_name(&e));
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let out = Out {
        counts: Mutex::new([0; 3]),
    };
    let tools = iface::find_tools();
    if cfg.remove_own_firewall {
        let (ok, d) = remove_own_firewall(&tools, &cfg.iface);
        out.setup("remove-own-firewall", ok, &d);
    }
    // Our MAC and IPv4 address on the interface.
    let addrs = sys::if_addrs();
    let mac = addrs
        .iter()
        .find(|a| a.name == cfg.iface && a.mac.is_some())
        .and_then(|a| a.mac)
        .unwrap_or([0; 6]);
    let (my_ip, prefix) = addrs
        .iter()
        .find_map(|a| match a.ip {
            Some(std::net::IpAddr::V4(ip)) if a.name == cfg.iface => Some((ip, a.prefix)),
            _ => None,
        })
        .unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
    let snap = match &tools.ip {
        Some(ip) => match iface::snapshot(ip, &cfg.iface) {
            Ok(s) => {
                out.setup("snapshot", true, &iface::describe(&s));
                Some(s)
            }
            Err(e) => {
                out.setup("snapshot", false, &e);
                None
            }
        },
        None => {
            out.setup("snapshot", false, "ip (iproute2) not found");
            None
        }
    };
    let selected = |n: &str| cfg.only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let ctx = Ctx {
        cfg: cfg.clone(),
        ifindex,
        mac,
        my_ip,
        prefix,
        tools,
    };
    // Enough descriptors for the TCP scan plus everything else at once.
    sys::raise_nofile(cfg.scan_window as u64 + 4096);

    // Phases:
    // 1. Every vector that leaves the interface alone, in parallel, with
    //    the TCP scan of the gateway (by far the longest) started first.
    // 2. Once those (but the scan) are done: the IPv6 vectors, in one
    //    window with IPv6 enabled, then the UDP scan. Both overlap the
    //    TCP scan's tail: it is IPv4 only and no IPv6 setting touches it.
    //    They wait for phase 1 because the answering side rate-limits ICMP
    //    errors (a burst of ~6 per peer, then ~1/s; and a global budget
    //    shared by ICMP and ICMPv6): a flood of probes would use up the
    //    port-unreachables the other vectors need in order to see answers.
    // 3. After the scan: the vectors that change the IPv4 side (MAC,
    //    address, routes), one at a time, each restoring the snapshot.
    std::thread::scope(|s| {
        let spawn = |name: &'static str| {
            let (ctx, out) = (&ctx, &out);
            let spawned = std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn_scoped(s, move || {
                    let t = Instant::now();
                    let o = guarded(|| vectors::run(name, ctx));
                    out.vector(name, &o, t.elapsed());
                });
            match spawned {
                Ok(h) => Some(h),
                Err(e) => {
                    let o = Outcome {
                        res: Res::Error,
                        detail: format!("cannot start thread: {e}"),
                    };
                    out.vector(name, &o, Duration::ZERO);
                    None
                }
            }
        };
        let (tcp_scan, udp_scan) = ("gateway-tcp-scan", "gateway-udp-scan");
        if selected(tcp_scan) {
            spawn(tcp_scan);
        }
        let mut first = Vec::new();
        for &(name, changes) in vectors::VECTORS {
            if changes || !selected(name) || name == tcp_scan || name == udp_scan {
                continue;
            }
            first.extend(spawn(name));
        }
        for h in first {
            let _ = h.join();
        }
        let v6: Vec<&'static str> = ["ipv6-link-local", "ipv6-multicast", "ipv6-global"]
            .into_iter()
            .filter(|n| selected(n))
            .collect();
        if !v6.is_empty() {
            for (n, o, took) in vectors::ipv6_group(&ctx, &v6) {
                out.vector(n, &o, took);
            }
        }
        if selected(udp_scan) {
            if let Some(h) = spawn(udp_scan) {
                let _ = h.join();
            }
        }
    });

    type Seq = fn(&Ctx, &iface::Snapshot) -> Outcome;
    let seq: [(&str, Seq); 3] = [
        ("changed-mac", vectors::changed_mac),
        ("changed-ip", vectors::changed_ip),
        ("on-link-route", vectors::on_link_route),
    ];
    for (name, f) in seq {
        if !selected(name) {
            continue;
        }
        let t = Instant::now();
        let o = match &snap {
            Some(sn) => guarded(|| f(&ctx, sn)),
            None => Outcome {
                res: Res::Error,
                detail: "the interface state could not be read, so it would not be restored: not changing it".into(),
            },
        };
        out.vector(name, &o, t.elapsed());
    }

    let c = out.counts.lock().map(|c| *c).unwrap_or([0; 3]);
    out.line(json!({"summary": {
        "vectors": c.iter().sum::<u32>(),
        "reached": c[Res::Reached as usize],
        "blocked": c[Res::Blocked as usize],
        "error": c[Res::Error as usize],
        "elapsed_ms": started.elapsed().as_millis() as u64,
    }}));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const MIN: &str = "--outside 10.100.0.2 --web-port 8080 --or-ports 5000,5001 \
        --dir-ports 7000,7001 --host-addrs 10.100.0.1,192.168.1.5";

    #[test]
    fn parses_the_documented_command_line() {
        let c = parse_args(&args(&format!(
            "--iface eth0 {MIN} --gateway 10.1.2.1 --gateway-mac 00:55:44:33:22:11 \
             --slirp-gw 10.0.2.2 --slirp-dns 10.0.2.3 --torvm-uplink 10.0.2.15 \
             --remove-own-firewall --only udp-outside,vsock --timeout-ms=900 --scan-window 100"
        )))
        .unwrap();
        assert_eq!(c.outside, Ipv4Addr::new(10, 100, 0, 2));
        assert_eq!(c.or_ports, vec![5000, 5001]);
        assert_eq!(c.host_addrs.len(), 2);
        assert!(c.remove_own_firewall);
        assert_eq!(c.only.unwrap(), vec!["udp-outside", "vsock"]);
        assert_eq!(c.timeout, Duration::from_millis(900));
        assert_eq!(c.scan_window, 100);
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            "--outside 10.100.0.2",
            &format!("{MIN} --web-port x"),
            &format!("{MIN} --only nope"),
            &format!("{MIN} --gateway-mac 00:55"),
            &format!("{MIN} --bogus 1"),
            &format!("{MIN} --timeout-ms 0"),
            &format!("{MIN} --iface"),
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
        assert!(parse_args(&args(MIN)).is_ok());
    }

    #[test]
    fn vector_names_are_unique() {
        let mut names: Vec<&str> = vectors::VECTORS.iter().map(|v| v.0).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(n >= 36);
    }
}
