//! The leak-test harness: a network namespace that plays the host, a packet
//! capture on its only way out, the leak probe uploaded into the App VM, and
//! the judge that says which captured packets are leaks.
//!
//! The whole stack (the daemon, both QEMUs, vhost-device-vsock) and the
//! testnet's host side run inside namespace [`STACK_NS`], whose only
//! interfaces are lo and the testnet's veth. So the capture on that veth sees
//! every packet that leaves "the host", whatever our own rulesets do, and the
//! machine's real network is out of reach.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, Run};

/// The namespace the stack runs in for the leak tests.
pub const STACK_NS: &str = "ts-stack";
/// The testnet's veth, host side (inside [`STACK_NS`]).
pub const VETH: &str = "ts-out0";
/// Its peer, in the outside namespace.
pub const VETH_PEER: &str = "ts-out1";
/// The outside namespace (the testnet's).
pub const OUTSIDE_NS: &str = "ts-outside";
/// The host's address on the veth, and the outside's.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
pub const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);

/// A command run in network namespace `ns` (nsenter: unlike `ip netns exec`
/// it keeps the caller's mount namespace, so the namespaces the testnet
/// creates from inside are visible to everyone).
pub fn in_netns(ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg("--");
    c
}

fn run(cmd: &mut Command) -> Run {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
        .into()
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) -> Run {
    let r = run(Command::new("ip").args(args));
    assert_eq!(r.code, 0, "ip {args:?}: {r:?}");
    r
}

/// The namespace the stack runs in; dropping it stops the stack and the
/// testnet and deletes it.
pub struct StackNs {
    _private: (),
}

impl StackNs {
    /// Create it afresh (removing what a crashed run left), lo up.
    pub fn new() -> StackNs {
        cleanup();
        ip(&["netns", "add", STACK_NS]);
        let ns = StackNs { _private: () };
        ip(&["-n", STACK_NS, "link", "set", "lo", "up"]);
        ns
    }

    /// `tails-server ARGS` inside the namespace.
    pub fn ts(&self, args: &[&str]) -> Run {
        self.ts_env(args, &[])
    }

    /// `tails-server ARGS` inside the namespace, with extra environment.
    pub fn ts_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = in_netns(STACK_NS);
        c.arg(bin()).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// `tails-server ARGS` inside the namespace, which must succeed.
    pub fn ts_ok(&self, args: &[&str]) -> Run {
        let r = self.ts(args);
        assert_eq!(r.code, 0, "tails-server {args:?} failed: {r:?}");
        r
    }

    /// `exec appvm` with stdin.
    pub fn exec_stdin(&self, vm: &str, script: &str, stdin: &[u8], timeout: u64) -> Run {
        use std::io::Write;
        let mut child = in_netns(STACK_NS)
            .arg(bin())
            .args(["exec", vm, "--stdin", "--timeout", &timeout.to_string()])
            .args(["--", "sh", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn exec");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin).expect("write stdin");
        drop(pipe);
        child.wait_with_output().expect("wait exec").into()
    }

    /// The stack's `status --json`.
    pub fn status(&self) -> serde_json::Value {
        let r = self.ts_ok(&["status", "--json"]);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:?}"))
    }

    /// Pin the veth neighbours on both sides, so that no ARP crosses it: then
    /// every captured frame is IP, sent by someone on purpose.
    pub fn pin_neighbours(&self) {
        let mac = |ns: &str, dev: &str| -> String {
            let r = ip(&["-n", ns, "-j", "link", "show", dev]);
            let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("ip -j");
            v[0]["address"].as_str().expect("mac").to_string()
        };
        let (host_mac, out_mac) = (mac(STACK_NS, VETH), mac(OUTSIDE_NS, VETH_PEER));
        ip(&[
            "-n",
            STACK_NS,
            "neigh",
            "replace",
            &OUTSIDE_ADDR.to_string(),
            "lladdr",
            &out_mac,
            "nud",
            "permanent",
            "dev",
            VETH,
        ]);
        ip(&[
            "-n",
            OUTSIDE_NS,
            "neigh",
            "replace",
            &HOST_ADDR.to_string(),
            "lladdr",
            &host_mac,
            "nud",
            "permanent",
            "dev",
            VETH_PEER,
        ]);
    }

    /// The namespace's interfaces (names).
    pub fn interfaces(&self) -> Vec<String> {
        let r = ip(&["-n", STACK_NS, "-j", "link", "show"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("ip -j");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Default for StackNs {
    fn default() -> Self {
        StackNs::new()
    }
}

/// Stop whatever runs in the namespace and delete it.
fn cleanup() {
    let exists = Path::new("/run/netns").join(STACK_NS).exists();
    if exists {
        let in_ns = |args: &[&str]| {
            let _ = in_netns(STACK_NS).arg(bin()).args(args).output();
        };
        in_ns(&["down"]);
        in_ns(&["testnet", "down"]);
        let _ = Command::new("ip").args(["netns", "del", STACK_NS]).output();
    }
    // A testnet of the root namespace (the one the other tests share, left
    // up) holds the names and state this one needs: ended too (a no-op
    // when none runs).
    let _ = Command::new(bin()).args(["testnet", "down"]).output();
}

impl Drop for StackNs {
    fn drop(&mut self) {
        cleanup();
    }
}

/// A tcpdump writing every frame of an interface to a pcap file.
pub struct Capture {
    child: Child,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Start capturing on `iface` in namespace `ns`; returns once tcpdump
    /// listens.
    pub fn start(ns: &str, iface: &str, file: &Path) -> Capture {
        let log = file.with_extension("log");
        let _ = std::fs::remove_file(file);
        let err = std::fs::File::create(&log).expect("capture log");
        let child = in_netns(ns)
            .args([
                "tcpdump",
                "--immediate-mode",
                "-i",
                iface,
                "-n",
                "-U",
                "-s",
                "256",
            ])
            .arg("-w")
            .arg(file)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start tcpdump (is it installed? ./setup.sh installs it)");
        let cap = Capture {
            child,
            file: file.to_path_buf(),
            log,
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let l = std::fs::read_to_string(&cap.log).unwrap_or_default();
            if l.contains("listening on") {
                return cap;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "tcpdump did not start: {}",
            std::fs::read_to_string(&cap.log).unwrap_or_default()
        );
    }

    /// Stop (SIGINT, so the file is complete) and parse what was captured.
    pub fn stop(mut self) -> Vec<Frame> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        let bytes = std::fs::read(&self.file).expect("read pcap");
        parse_pcap(&bytes).unwrap_or_else(|e| panic!("{}: {e}", self.file.display()))
    }

    /// The pcap file (kept for a failed run to be looked at).
    pub fn file(&self) -> &Path {
        &self.file
    }
}

/// One captured frame, decoded as far as the judge needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Ethernet type (0x0800 IPv4, 0x0806 ARP, 0x86dd IPv6…).
    pub ethertype: u16,
    /// IPv4 source, destination and protocol, if IPv4.
    pub ip: Option<(Ipv4Addr, Ipv4Addr, u8)>,
    /// TCP or UDP ports, if any.
    pub ports: Option<(u16, u16)>,
    /// Bytes on the wire.
    pub len: usize,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.ip, self.ports) {
            (Some((s, d, p)), Some((sp, dp))) => {
                write!(f, "IPv4 proto {p} {s}:{sp} > {d}:{dp} ({} bytes)", self.len)
            }
            (Some((s, d, p)), None) => write!(f, "IPv4 proto {p} {s} > {d} ({} bytes)", self.len),
            _ => write!(f, "ethertype {:#06x} ({} bytes)", self.ethertype, self.len),
        }
    }
}

/// Parse a classic pcap file of Ethernet frames.
pub fn parse_pcap(b: &[u8]) -> Result<Vec<Frame>, String> {
    let u32_at = |le: bool, at: usize| -> Result<u32, String> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or("truncated pcap")?;
        Ok(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    if b.len() < 24 {
        return Err("no pcap header".into());
    }
    let le = match b[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err("not a pcap file".into()),
    };
    if u32_at(le, 20)? != 1 {
        return Err("not an Ethernet capture".into());
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let caplen = u32_at(le, at + 8)? as usize;
        let len = u32_at(le, at + 12)? as usize;
        let data = b
            .get(at + 16..at + 16 + caplen)
            .ok_or("truncated pcap record")?;
        at += 16 + caplen;
        frames.push(decode(data, len));
    }
    Ok(frames)
}

fn decode(d: &[u8], len: usize) -> Frame {
    let ethertype = d
        .get(12..14)
        .map(|t| u16::from_be_bytes([t[0], t[1]]))
        .unwrap_or(0);
    let mut f = Frame {
        ethertype,
        ip: None,
        ports: None,
        len,
    };
    if ethertype != 0x0800 || d.len() < 14 + 20 {
        return f;
    }
    let ipd = &d[14..];
    let ihl = usize::from(ipd[0] & 0x0f) * 4;
    let addr = |o: usize| Ipv4Addr::new(ipd[o], ipd[o + 1], ipd[o + 2], ipd[o + 3]);
    let proto = ipd[9];
    f.ip = Some((addr(12), addr(16), proto));
    let frag_offset = u16::from_be_bytes([ipd[6], ipd[7]]) & 0x1fff;
    if (proto == 6 || proto == 17) && frag_offset == 0 && ipd.len() >= ihl + 4 {
        let l4 = &ipd[ihl..];
        f.ports = Some((
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ));
    }
    f
}

/// The judge: every frame that is not TCP between the host and a relay's OR
/// or Dir port (either direction) is a leak.
pub fn leaks<'a>(frames: &'a [Frame], relay_ports: &BTreeSet<u16>) -> Vec<&'a Frame> {
    frames
        .iter()
        .filter(|f| {
            let ok = match (f.ip, f.ports) {
                (Some((s, d, 6)), Some((sp, dp))) => {
                    (s == HOST_ADDR && d == OUTSIDE_ADDR && relay_ports.contains(&dp))
                        || (s == OUTSIDE_ADDR && d == HOST_ADDR && relay_ports.contains(&sp))
                }
                _ => false,
            };
            !ok
        })
        .collect()
}

/// One vector's result, as the probe prints it.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    pub outcome: String,
    pub detail: String,
}

/// Parse the probe's JSON lines (the summary line is skipped).
pub fn parse_probe(out: &str) -> Vec<Vector> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(Vector {
                name: v["vector"].as_str()?.to_string(),
                outcome: v["outcome"].as_str()?.to_string(),
                detail: v["detail"].as_str().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The statically linked probe, as run-tests.sh builds it.
pub fn probe_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("target/x86_64-unknown-linux-gnu/release/ts-leakprobe")
}

/// Where the probe lives in the App VM.
pub const PROBE_IN_VM: &str = "/root/ts-leakprobe";

/// Copy the probe into the App VM (in parts: one exec carries at most
/// 160 KiB) and check it arrived whole.
pub fn upload_probe(ns: &StackNs) {
    let path = probe_binary();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run-tests.sh builds it; by hand: RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p tails-tests --bin ts-leakprobe)",
            path.display()
        )
    });
    let r = ns.exec_stdin("appvm", &format!("rm -f {PROBE_IN_VM}"), b"", 30);
    assert_eq!(r.code, 0, "{r:?}");
    for part in bytes.chunks(150 << 10) {
        let r = ns.exec_stdin("appvm", &format!("cat >> {PROBE_IN_VM}"), part, 60);
        assert_eq!(r.code, 0, "upload: {r:?}");
    }
    let r = ns.exec_stdin(
        "appvm",
        &format!("chmod 0700 {PROBE_IN_VM} && wc -c < {PROBE_IN_VM}"),
        b"",
        30,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout.trim(),
        bytes.len().to_string(),
        "probe size in the VM"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        b.extend([0u8; 8]);
        b.extend(65535u32.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        for f in frames {
            b.extend([0u8; 8]);
            b.extend((f.len() as u32).to_le_bytes());
            b.extend((f.len() as u32).to_le_bytes());
            b.extend(f);
        }
        b
    }

    fn ipv4(proto: u8, s: Ipv4Addr, d: Ipv4Addr, sp: u16, dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, proto, 0, 0];
        ip.extend(s.octets());
        ip.extend(d.octets());
        ip.extend(sp.to_be_bytes());
        ip.extend(dp.to_be_bytes());
        ip.extend([0u8; 16]);
        f.extend(ip);
        f
    }

    #[test]
    fn judge_allows_only_tcp_between_host_and_relay_ports() {
        let relays: BTreeSet<u16> = [5000, 7000].into();
        let (h, o) = (HOST_ADDR, OUTSIDE_ADDR);
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06]);
        arp.extend([0u8; 28]);
        let frames = parse_pcap(&pcap(&[
            ipv4(6, h, o, 40000, 5000),  // tor to a relay: fine
            ipv4(6, o, h, 7000, 40001),  // a relay's reply: fine
            ipv4(6, h, o, 40002, 8080),  // TCP to the web server: leak
            ipv4(17, h, o, 40003, 5000), // UDP to a relay port: leak
            ipv4(6, o, h, 40004, 22),    // outside to the host: leak
            ipv4(1, h, o, 0, 0),         // ICMP: leak
            arp,                         // ARP: leak
        ]))
        .unwrap();
        assert_eq!(frames.len(), 7);
        let l = leaks(&frames, &relays);
        assert_eq!(l.len(), 5, "{l:?}");
        assert_eq!(l[0].ports, Some((40002, 8080)));
        assert_eq!(l[4].ethertype, 0x0806);
    }

    #[test]
    fn refuses_what_is_not_a_pcap() {
        assert!(parse_pcap(b"").is_err());
        assert!(parse_pcap(&[0u8; 24]).is_err());
        let mut p = pcap(&[ipv4(6, HOST_ADDR, OUTSIDE_ADDR, 1, 2)]);
        p.truncate(p.len() - 3);
        assert!(parse_pcap(&p).is_err());
    }
}
