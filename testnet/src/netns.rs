//! The "outside" network namespace and the veth pair that is its only link:
//! host side `<netns[..6]>0` with `<prefix>.1/24` in the root namespace,
//! namespace side `<netns[..6]>1` with `<prefix>.2/24`, and no default route
//! in the namespace (so nothing in it reaches the machine's real network).
//! IPv6 is off on both ends so that a capture on the veth sees only what the
//! tests send.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::TestnetError;
use crate::process::{run, ProcId};

/// The namespace, its veth pair and addresses.
#[derive(Clone, Debug)]
pub(crate) struct Net {
    pub netns: String,
    pub veth_host: String,
    pub veth_ns: String,
    pub host: Ipv4Addr,
    pub outside: Ipv4Addr,
    pub prefix: [u8; 3],
    pub ip: PathBuf,
}

/// Parses "10.100.0" into its three octets.
pub(crate) fn parse_prefix(prefix: &str) -> Result<[u8; 3], TestnetError> {
    let bad = || {
        TestnetError::Config(format!(
            "subnet_prefix {prefix:?} is not three octets like \"10.100.0\""
        ))
    };
    let parts: Vec<&str> = prefix.split('.').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let mut o = [0u8; 3];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        o[i] = p.parse().map_err(|_| bad())?;
    }
    Ok(o)
}

/// The veth names for a namespace: its first 6 characters, then 0 (host side) and 1.
pub(crate) fn veth_names(netns: &str) -> (String, String) {
    let stem: String = netns.chars().take(6).collect();
    (format!("{stem}0"), format!("{stem}1"))
}

impl Net {
    pub fn new(netns: &str, subnet_prefix: &str, ip: PathBuf) -> Result<Net, TestnetError> {
        let valid = !netns.is_empty()
            && netns.len() <= 32
            && !netns.starts_with(['.', '-'])
            && netns
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(TestnetError::Config(format!(
                "netns {netns:?} must be 1 to 32 letters, digits, '-', '_' or '.'"
            )));
        }
        let prefix = parse_prefix(subnet_prefix)?;
        let [a, b, c] = prefix;
        let (veth_host, veth_ns) = veth_names(netns);
        Ok(Net {
            netns: netns.to_string(),
            veth_host,
            veth_ns,
            host: Ipv4Addr::new(a, b, c, 1),
            outside: Ipv4Addr::new(a, b, c, 2),
            prefix,
            ip,
        })
    }

    /// The subnet in CIDR notation, "10.100.0.0/24".
    pub fn subnet(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    /// The namespace's bind mount, which `ip netns add` creates.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    pub fn veth_exists(&self) -> bool {
        // /proc/sys/net shows the caller's network namespace (/sys may not).
        Path::new("/proc/sys/net/ipv4/conf")
            .join(&self.veth_host)
            .exists()
    }

    fn ip(&self, args: &[&str]) -> Result<String, TestnetError> {
        run(&self.ip, args)
    }

    /// Refuses a subnet that an interface of this machine already uses.
    pub fn check_subnet_free(&self) -> Result<(), TestnetError> {
        let out = self.ip(&["-o", "-4", "addr", "show"])?;
        for l in out.lines() {
            let mut w = l.split_whitespace();
            let dev = w.nth(1).unwrap_or("?").to_string();
            while let Some(x) = w.next() {
                if x != "inet" {
                    continue;
                }
                let Some(cidr) = w.next() else { break };
                let (addr, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
                let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
                    continue;
                };
                let len = len.min(32).min(24);
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                if u32::from(addr) & mask == u32::from(self.host) & mask {
                    return Err(TestnetError::Config(format!(
                        "subnet {} overlaps {cidr} on {dev}: choose another subnet_prefix",
                        self.subnet()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates the namespace and the veth pair, addresses up, no default route.
    pub fn create(&self) -> Result<(), TestnetError> {
        let (ns, vh, vn) = (
            self.netns.as_str(),
            self.veth_host.as_str(),
            self.veth_ns.as_str(),
        );
        let host = format!("{}/24", self.host);
        let outside = format!("{}/24", self.outside);
        self.ip(&["netns", "add", ns])?;
        self.ip(&[
            "link", "add", vh, "type", "veth", "peer", "name", vn, "netns", ns,
        ])?;
        // No IPv6 (no router solicitations or MLD reports on the capture).
        let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{vh}/disable_ipv6"), "1");
        let _ = run(
            &self.ip,
            &["netns", "exec", ns, "sh", "-c", &format!(
                "[ ! -e /proc/sys/net/ipv6/conf/{vn}/disable_ipv6 ] || echo 1 > /proc/sys/net/ipv6/conf/{vn}/disable_ipv6"
            )],
        );
        self.ip(&["addr", "add", &host, "dev", vh])?;
        self.ip(&["link", "set", vh, "up"])?;
        self.ip(&["-n", ns, "addr", "add", &outside, "dev", vn])?;
        self.ip(&["-n", ns, "link", "set", vn, "up"])?;
        self.ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Deletes the veth pair and the namespace, whichever exists.
    pub fn destroy(&self) -> Result<(), TestnetError> {
        if self.veth_exists() {
            // Deleting one end deletes the pair.
            if let Err(e) = self.ip(&["link", "del", &self.veth_host]) {
                if self.veth_exists() {
                    return Err(e);
                }
            }
        }
        if self.exists() {
            self.ip(&["netns", "del", &self.netns])?;
        }
        Ok(())
    }

    /// Every process whose network namespace is this one.
    pub fn member_procs(&self) -> Vec<ProcId> {
        let Ok(ns) = fs::metadata(self.path()) else {
            return Vec::new();
        };
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut procs = Vec::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(m) = fs::metadata(e.path().join("ns/net")) else {
                continue;
            };
            if m.dev() == ns.dev() && m.ino() == ns.ino() {
                if let Some(p) = ProcId::of(pid) {
                    procs.push(p);
                }
            }
        }
        procs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_and_addresses() {
        let n = Net::new("ts-outside", "10.100.0", "ip".into()).unwrap();
        assert_eq!(n.veth_host, "ts-out0");
        assert_eq!(n.veth_ns, "ts-out1");
        assert_eq!(n.host, Ipv4Addr::new(10, 100, 0, 1));
        assert_eq!(n.outside, Ipv4Addr::new(10, 100, 0, 2));
        assert_eq!(n.subnet(), "10.100.0.0/24");
        assert_eq!(n.path(), Path::new("/run/netns/ts-outside"));
    }

    #[test]
    fn bad_configs_are_refused() {
        for p in ["10.200", "10.100.0.0", "10.300.0", "a.b.c", "10..0", ""] {
            assert!(Net::new("ts", p, "ip".into()).is_err(), "{p}");
        }
        for ns in ["", "a/b", "-x", "a b", &"x".repeat(33)] {
            assert!(Net::new(ns, "10.100.0", "ip".into()).is_err(), "{ns}");
        }
    }
}
