//! Interface configuration for `ts-leakprobe`'s vectors that change the
//! interface (MAC, addresses, routes, IPv6): finding `ip`/`nft`, running
//! them with a timeout, snapshotting the interface's IPv4 state with
//! `ip -j` before any change and putting it back afterwards, and toggling
//! the IPv6 sysctls (remembering and restoring their previous values).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The external programs the probe may use.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: Option<PathBuf>,
    pub nft: Option<PathBuf>,
}

fn first_existing(cands: &[&str]) -> Option<PathBuf> {
    cands.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Looks for `ip` and `nft` where Debian puts them.
pub fn find_tools() -> Tools {
    Tools {
        ip: first_existing(&["/usr/sbin/ip", "/sbin/ip", "/bin/ip", "/usr/bin/ip"]),
        nft: first_existing(&["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]),
    }
}

/// Time any one external command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `prog args…`, killing it after [`CMD_TIMEOUT`]. Ok(stdout) on exit
/// status 0, else Err("prog args: why").
pub fn run(prog: &Path, args: &[&str]) -> Result<String, String> {
    let shown = format!("{} {}", prog.display(), args.join(" "));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown}: cannot start: {e}"))?;
    // Read both pipes on helper threads so a chatty child cannot block.
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{shown}: timed out"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("{shown}: wait: {e}")),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    let status = status?;
    if status.success() {
        Ok(stdout)
    } else {
        let msg = stderr.lines().next().unwrap_or("").trim().to_string();
        Err(format!("{shown}: {status}: {msg}"))
    }
}

/// An IPv4 address on the interface, as `ip -j addr` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr4 {
    pub local: String,
    pub prefixlen: u64,
    pub broadcast: Option<String>,
}

/// An IPv4 route through the interface, as `ip -j route` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route4 {
    pub dst: String,
    pub gateway: Option<String>,
    pub metric: Option<u64>,
    pub protocol: Option<String>,
    pub scope: Option<String>,
    pub prefsrc: Option<String>,
    pub onlink: bool,
}

impl Route4 {
    /// What identifies a route for `ip route del` and comparisons.
    fn key(&self) -> (String, Option<String>, Option<u64>) {
        (self.dst.clone(), self.gateway.clone(), self.metric)
    }
}

/// The interface's state that the vectors change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub mac: String,
    pub up: bool,
    pub addrs: BTreeSet<Addr4>,
    pub routes: BTreeSet<Route4>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Reads MAC, admin state, IPv4 addresses and main-table IPv4 routes of
/// `iface` with `ip -j`.
pub fn snapshot(ip: &Path, iface: &str) -> Result<Snapshot, String> {
    let link: Value = serde_json::from_str(&run(ip, &["-j", "addr", "show", "dev", iface])?)
        .map_err(|e| format!("ip -j addr: bad JSON: {e}"))?;
    let link = link
        .get(0)
        .ok_or_else(|| format!("ip -j addr show dev {iface}: empty"))?;
    let mac = s(link, "address").unwrap_or_default();
    let up = link
        .get("flags")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP")));
    let mut addrs = BTreeSet::new();
    for a in link
        .get("addr_info")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if a.get("family").and_then(Value::as_str) != Some("inet") {
            continue;
        }
        if let (Some(local), Some(prefixlen)) =
            (s(a, "local"), a.get("prefixlen").and_then(Value::as_u64))
        {
            addrs.insert(Addr4 {
                local,
                prefixlen,
                broadcast: s(a, "broadcast"),
            });
        }
    }
    let routes: Value = serde_json::from_str(&run(
        ip,
        &["-j", "-4", "route", "show", "table", "main", "dev", iface],
    )?)
    .map_err(|e| format!("ip -j route: bad JSON: {e}"))?;
    let mut rs = BTreeSet::new();
    for r in routes.as_array().into_iter().flatten() {
        let Some(dst) = s(r, "dst") else { continue };
        let flags = r.get("flags").and_then(Value::as_array);
        rs.insert(Route4 {
            dst,
            gateway: s(r, "gateway"),
            metric: r.get("metric").and_then(Value::as_u64),
            protocol: s(r, "protocol"),
            scope: s(r, "scope"),
            prefsrc: s(r, "prefsrc"),
            onlink: flags.is_some_and(|f| f.iter().any(|x| x.as_str() == Some("onlink"))),
        });
    }
    Ok(Snapshot {
        mac,
        up,
        addrs,
        routes: rs,
    })
}

/// Sets the MAC; if the driver refuses a live change, takes the link down
/// for it (which drops routes: call [`restore_l3`] afterwards).
pub fn set_mac(ip: &Path, iface: &str, mac: &str) -> Result<(), String> {
    if run(ip, &["link", "set", "dev", iface, "address", mac]).is_ok() {
        return Ok(());
    }
    run(ip, &["link", "set", "dev", iface, "down"])?;
    let r = run(ip, &["link", "set", "dev", iface, "address", mac]);
    run(ip, &["link", "set", "dev", iface, "up"])?;
    r.map(drop)
}

/// Puts back the addresses and routes of `snap` (removing any others on
/// the interface); errors are collected, not fatal.
pub fn restore_l3(ip: &Path, iface: &str, snap: &Snapshot) -> Vec<String> {
    let mut errs = Vec::new();
    let now = match snapshot(ip, iface) {
        Ok(n) => n,
        Err(e) => return vec![e],
    };
    for a in now.addrs.difference(&snap.addrs) {
        let cidr = format!("{}/{}", a.local, a.prefixlen);
        if let Err(e) = run(ip, &["addr", "del", &cidr, "dev", iface]) {
            errs.push(e);
        }
    }
    for a in snap.addrs.difference(&now.addrs) {
        let cidr = format!("{}/{}", a.local, a.prefixlen);
        let mut args = vec!["addr", "add", &cidr];
        if let Some(b) = &a.broadcast {
            args.extend(["broadcast", b.as_str()]);
        }
        args.extend(["dev", iface]);
        if let Err(e) = run(ip, &args) {
            errs.push(e);
        }
    }
    // Routes: delete what was not there, then (re)place every original one.
    let now = match snapshot(ip, iface) {
        Ok(n) => n,
        Err(e) => {
            errs.push(e);
            return errs;
        }
    };
    let orig: BTreeSet<_> = snap.routes.iter().map(Route4::key).collect();
    for r in now.routes.iter().filter(|r| !orig.contains(&r.key())) {
        let metric = r.metric.map(|m| m.to_string());
        let mut args = vec!["route", "del", r.dst.as_str()];
        if let Some(g) = &r.gateway {
            args.extend(["via", g.as_str()]);
        }
        args.extend(["dev", iface]);
        if let Some(m) = &metric {
            args.extend(["metric", m.as_str()]);
        }
        if let Err(e) = run(ip, &args) {
            errs.push(e);
        }
    }
    // Link routes first, so that gateways are reachable when added.
    let mut rs: Vec<&Route4> = snap.routes.iter().collect();
    rs.sort_by_key(|r| r.gateway.is_some());
    for r in rs {
        let metric = r.metric.map(|m| m.to_string());
        let mut args = vec!["route", "replace", r.dst.as_str()];
        if let Some(g) = &r.gateway {
            args.extend(["via", g.as_str()]);
        }
        args.extend(["dev", iface]);
        if let Some(p) = &r.protocol {
            args.extend(["proto", p.as_str()]);
        }
        if let Some(sc) = &r.scope {
            args.extend(["scope", sc.as_str()]);
        }
        if let Some(src) = &r.prefsrc {
            args.extend(["src", src.as_str()]);
        }
        if let Some(m) = &metric {
            args.extend(["metric", m.as_str()]);
        }
        if r.onlink {
            args.push("onlink");
        }
        if let Err(e) = run(ip, &args) {
            errs.push(e);
        }
    }
    errs
}

/// Puts the whole interface back as in `snap` and checks the result.
/// Ok("restored") or Err(what differs / failed).
pub fn restore(ip: &Path, iface: &str, snap: &Snapshot) -> Result<(), String> {
    let mut errs = Vec::new();
    match snapshot(ip, iface) {
        Ok(now) => {
            if !now.mac.eq_ignore_ascii_case(&snap.mac) {
                if let Err(e) = set_mac(ip, iface, &snap.mac) {
                    errs.push(e);
                }
            }
            if snap.up && !now.up {
                if let Err(e) = run(ip, &["link", "set", "dev", iface, "up"]) {
                    errs.push(e);
                }
            }
        }
        Err(e) => errs.push(e),
    }
    errs.extend(restore_l3(ip, iface, snap));
    match snapshot(ip, iface) {
        Ok(now) if now == *snap => {}
        Ok(now) => errs.push(format!(
            "state differs after restore: now {}",
            describe(&now)
        )),
        Err(e) => errs.push(e),
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// One-line description of a snapshot.
pub fn describe(s: &Snapshot) -> String {
    let addrs: Vec<String> = s
        .addrs
        .iter()
        .map(|a| format!("{}/{}", a.local, a.prefixlen))
        .collect();
    let routes: Vec<String> = s
        .routes
        .iter()
        .map(|r| match &r.gateway {
            Some(g) => format!("{} via {g}", r.dst),
            None => r.dst.clone(),
        })
        .collect();
    format!(
        "mac {} {} addrs [{}] routes [{}]",
        s.mac,
        if s.up { "up" } else { "down" },
        addrs.join(", "),
        routes.join(", ")
    )
}

const V6CONF: &str = "/proc/sys/net/ipv6/conf";

fn write_sysctl(path: &Path, v: &str) -> Result<(), String> {
    std::fs::write(path, v).map_err(|e| format!("{}: {e}", path.display()))
}

/// Saved IPv6 sysctl values, written back by [`Ipv6Saved::restore`].
pub struct Ipv6Saved {
    /// (file, value) in the order they must be written back: "all" first
    /// (writing it overwrites every interface and "default"), then
    /// "default", then each interface.
    values: Vec<(PathBuf, String)>,
}

impl Ipv6Saved {
    /// Remembers disable_ipv6 of every interface and accept_dad of
    /// "all" and `iface`.
    pub fn save(iface: &str) -> Result<Ipv6Saved, String> {
        let dir = std::fs::read_dir(V6CONF).map_err(|e| format!("{V6CONF}: {e}"))?;
        let mut names: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort_by_key(|n| match n.as_str() {
            "all" => 0,
            "default" => 1,
            _ => 2,
        });
        let mut values = Vec::new();
        for n in &names {
            for key in ["disable_ipv6", "accept_dad"] {
                if key == "accept_dad" && n != "all" && n != iface {
                    continue;
                }
                let p = Path::new(V6CONF).join(n).join(key);
                if let Ok(v) = std::fs::read_to_string(&p) {
                    values.push((p, v.trim().to_string()));
                }
            }
        }
        Ok(Ipv6Saved { values })
    }

    /// The saved disable_ipv6 value of `name` ("all", "default", iface).
    pub fn disabled(&self, name: &str) -> Option<&str> {
        let p = Path::new(V6CONF).join(name).join("disable_ipv6");
        self.values
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, v)| v.as_str())
    }

    /// Writes every saved value back.
    pub fn restore(&self) -> Result<(), String> {
        let errs: Vec<String> = self
            .values
            .iter()
            .filter_map(|(p, v)| write_sysctl(p, v).err())
            .collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }
}

/// Enables IPv6 on `iface` (all, default, iface); with `no_dad`, also turns
/// duplicate address detection off so addresses are usable at once.
pub fn enable_ipv6(iface: &str, no_dad: bool) -> Result<(), String> {
    let mut errs = Vec::new();
    if no_dad {
        for n in ["all", iface] {
            if let Err(e) = write_sysctl(&Path::new(V6CONF).join(n).join("accept_dad"), "0") {
                errs.push(e);
            }
        }
    }
    for n in ["all", "default", iface] {
        if let Err(e) = write_sysctl(&Path::new(V6CONF).join(n).join("disable_ipv6"), "0") {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// A usable IPv6 link-local address of `iface`: present and, when `ip` is
/// there to tell, no longer tentative (duplicate address detection done).
pub fn link_local_ready(ip: Option<&Path>, iface: &str) -> Option<String> {
    let Some(ip) = ip else {
        return crate::sys::if_addrs().into_iter().find_map(|a| match a.ip {
            Some(std::net::IpAddr::V6(v6)) if a.name == iface && v6.segments()[0] == 0xfe80 => {
                Some(v6.to_string())
            }
            _ => None,
        });
    };
    let out = run(
        ip,
        &["-j", "-6", "addr", "show", "dev", iface, "scope", "link"],
    )
    .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    let infos = v.get(0)?.get("addr_info")?.as_array()?;
    infos.iter().find_map(|a| {
        let busy = ["tentative", "dadfailed"]
            .iter()
            .any(|k| a.get(*k).and_then(Value::as_bool) == Some(true));
        (a.get("family").and_then(Value::as_str) == Some("inet6") && !busy)
            .then(|| s(a, "local"))
            .flatten()
    })
}
