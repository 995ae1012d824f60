//! The leak vectors of `ts-leakprobe`: every way out of the App VM that does
//! not go through Tor that the probe tries, each a named function made of
//! the attempts in `probes`.
//!
//! Most vectors only send and listen and run in parallel. The ones that
//! change the interface (IPv6 on, MAC, address, routes) run one after the
//! other at the end, each restoring the state snapshotted at start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::iface::{self, Snapshot};
use crate::packets as pk;
use crate::probes::{
    combine, icmp6, icmp_echo, job, judge_hits, match_echo, packet_socket, par, rand_port,
    send_frame, send_hdrincl, tcp, udp, v4, v6, watch_frames, Attempt, Ctx, Icmp6Kind, Outcome,
    Sniffer, TcpThen, UdpOpts,
};
use crate::sys;

/// Every vector: (name, changes the interface).
pub const VECTORS: &[(&str, bool)] = &[
    ("tcp-outside-web", false),
    ("tcp-relay-or", false),
    ("tcp-relay-dir", false),
    ("udp-outside", false),
    ("udp-relay", false),
    ("dns-udp-outside", false),
    ("dns-tcp-outside", false),
    ("dns-public", false),
    ("icmp-outside", false),
    ("icmp-gateway", false),
    ("raw-ip-protocols", false),
    ("spoofed-source-udp", false),
    ("spoofed-source-tcp", false),
    ("ttl-expiry", false),
    ("ip-options-source-route", false),
    ("arp-spoof-gateway", false),
    ("dhcp", false),
    ("broadcast", false),
    ("multicast", false),
    ("mdns", false),
    ("ntp", false),
    ("gateway-tcp-scan", false),
    ("gateway-udp-scan", false),
    ("tor-ports", false),
    ("slirp-gateway", false),
    ("slirp-dns", false),
    ("host-addresses", false),
    ("vsock", false),
    ("vsock-other-vm", false),
    ("clock-skew", false),
    ("tor-virtual-addr", false),
    ("gateway-as-router", false),
    // Sequential, at the end: they change the interface.
    ("ipv6-link-local", true),
    ("ipv6-multicast", true),
    ("ipv6-global", true),
    ("changed-mac", true),
    ("changed-ip", true),
    ("on-link-route", true),
];

const PAYLOAD: &[u8] = b"ts-leakprobe\n";

/// TCP "then" for a port: HTTP on web ports, else wait for the peer.
fn then_for(ctx: &Ctx, port: u16) -> TcpThen {
    if port == ctx.cfg.web_port || port == 80 {
        TcpThen::Http
    } else {
        TcpThen::Peek
    }
}

fn tcp_ports(ctx: &Ctx, dst: Ipv4Addr, ports: &[u16]) -> Vec<Attempt> {
    par(ports
        .iter()
        .map(|&p| job(move || tcp(ctx, v4(dst, p), then_for(ctx, p))))
        .collect())
}

fn udp_ports(ctx: &Ctx, dst: Ipv4Addr, ports: &[u16]) -> Vec<Attempt> {
    par(ports
        .iter()
        .map(|&p| job(move || udp(ctx, v4(dst, p), PAYLOAD, &UdpOpts::default())))
        .collect())
}

fn dns_udp(ctx: &Ctx, dst: IpAddr, name: &str) -> Attempt {
    let id = crate::probes::new_id();
    let q = pk::dns_query(id, name, pk::DNS_A, pk::DNS_IN);
    let to = match dst {
        IpAddr::V4(a) => v4(a, 53),
        IpAddr::V6(a) => v6(a, 53, 0),
    };
    udp(
        ctx,
        to,
        &q,
        &UdpOpts {
            dns_id: Some(id),
            label: Some("dns/udp"),
            ..Default::default()
        },
    )
}

fn dns_tcp(ctx: &Ctx, dst: Ipv4Addr, name: &str) -> Attempt {
    let id = crate::probes::new_id();
    let q = pk::dns_query(id, name, pk::DNS_A, pk::DNS_IN);
    let mut a = tcp(ctx, v4(dst, 53), TcpThen::Dns(q, id));
    a.text = format!("dns/{}", a.text);
    a
}

/// Runs one parallel (non-interface-changing) vector.
pub fn run(name: &str, ctx: &Ctx) -> Outcome {
    let c = &ctx.cfg;
    match name {
        "tcp-outside-web" => combine(vec![tcp(ctx, v4(c.outside, c.web_port), TcpThen::Http)]),
        "tcp-relay-or" => combine(tcp_ports(ctx, c.outside, &c.or_ports)),
        "tcp-relay-dir" => combine(tcp_ports(ctx, c.outside, &c.dir_ports)),
        "udp-outside" => {
            let mut ports = vec![c.web_port];
            ports.extend(&c.or_ports);
            ports.push(9999);
            ports.dedup();
            combine(udp_ports(ctx, c.outside, &ports))
        }
        "udp-relay" => {
            let ports: Vec<u16> = c.or_ports.iter().chain(&c.dir_ports).copied().collect();
            combine(udp_ports(ctx, c.outside, &ports))
        }
        "dns-udp-outside" => combine(vec![dns_udp(ctx, c.outside.into(), "outside.test")]),
        "dns-tcp-outside" => combine(vec![dns_tcp(ctx, c.outside, "outside.test")]),
        "dns-public" => combine(par(["8.8.8.8", "1.1.1.1", "9.9.9.9"]
            .iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|a| job(move || dns_udp(ctx, a, "example.com")))
            .collect())),
        "icmp-outside" => combine(par([c.outside, Ipv4Addr::new(8, 8, 8, 8)]
            .into_iter()
            .map(|a| job(move || icmp_echo(ctx, a, None)))
            .collect())),
        "icmp-gateway" => combine(vec![icmp_echo(ctx, c.gateway, None)]),
        "raw-ip-protocols" => {
            let mut jobs = Vec::new();
            for proto in [47u8, 132, 253] {
                for dst in [c.outside, c.gateway] {
                    jobs.push(job(move || crate::probes::raw_proto(ctx, dst, proto)));
                }
            }
            combine(par(jobs))
        }
        "spoofed-source-udp" => spoofed(ctx, false),
        "spoofed-source-tcp" => spoofed(ctx, true),
        "ttl-expiry" => ttl_expiry(ctx),
        "ip-options-source-route" => source_route(ctx),
        "arp-spoof-gateway" => arp_spoof(ctx),
        "dhcp" => dhcp(ctx),
        "broadcast" => {
            let net = u32::from(ctx.my_ip) & prefix_mask(ctx.prefix);
            let bcast = Ipv4Addr::from(net | !prefix_mask(ctx.prefix));
            let o = UdpOpts {
                unconnected: true,
                broadcast: true,
                bind_dev: true,
                ..Default::default()
            };
            combine(par(vec![
                job(|| udp(ctx, v4(Ipv4Addr::BROADCAST, 9999), PAYLOAD, &o)),
                job(|| udp(ctx, v4(bcast, 9999), PAYLOAD, &o)),
            ]))
        }
        "multicast" => {
            let o = UdpOpts {
                unconnected: true,
                multicast: true,
                ..Default::default()
            };
            let ssdp = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
                MAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";
            combine(par(vec![
                job(|| udp(ctx, v4(Ipv4Addr::new(224, 0, 0, 1), 9999), PAYLOAD, &o)),
                job(|| udp(ctx, v4(Ipv4Addr::new(239, 255, 255, 250), 1900), ssdp, &o)),
                job(|| icmp_echo(ctx, Ipv4Addr::new(224, 0, 0, 1), None)),
            ]))
        }
        "mdns" => {
            // Legacy unicast query (from an ephemeral port, id 0, QU bit):
            // responders answer straight to us.
            let q = pk::dns_query(0, "_services._dns-sd._udp.local", pk::DNS_PTR, 0x8001);
            let o = UdpOpts {
                unconnected: true,
                multicast: true,
                dns_id: Some(0),
                label: Some("mdns"),
                ..Default::default()
            };
            combine(vec![udp(
                ctx,
                v4(Ipv4Addr::new(224, 0, 0, 251), 5353),
                &q,
                &o,
            )])
        }
        "ntp" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| (d.as_secs() + 2_208_988_800) << 32)
                .unwrap_or(0);
            let req = pk::ntp_request(now);
            let o = UdpOpts {
                ntp: true,
                label: Some("ntp"),
                ..Default::default()
            };
            let dsts = [
                c.outside,
                c.gateway,
                c.slirp_gw,
                Ipv4Addr::new(162, 159, 200, 1),
            ];
            combine(par(dsts
                .into_iter()
                .map(|d| {
                    let (req, o) = (&req, &o);
                    job(move || udp(ctx, v4(d, 123), req, o))
                })
                .collect()))
        }
        "gateway-tcp-scan" => combine(vec![crate::probes::tcp_scan(ctx, c.gateway)]),
        "gateway-udp-scan" => combine(vec![crate::probes::udp_scan(ctx, c.gateway)]),
        "tor-ports" => {
            let mut jobs = Vec::new();
            for p in [9050u16, 9051, 9040, 5353, 9150] {
                jobs.push(job(move || tcp(ctx, v4(c.gateway, p), TcpThen::Peek)));
            }
            for p in [9050u16, 9051] {
                jobs.push(job(move || {
                    tcp(ctx, v4(Ipv4Addr::LOCALHOST, p), TcpThen::Peek)
                }));
            }
            combine(par(jobs))
        }
        "slirp-gateway" => {
            let mut jobs = Vec::new();
            for p in [22u16, 80, 445] {
                jobs.push(job(move || tcp(ctx, v4(c.slirp_gw, p), then_for(ctx, p))));
            }
            jobs.push(job(|| {
                udp(ctx, v4(c.slirp_gw, 9999), PAYLOAD, &UdpOpts::default())
            }));
            combine(par(jobs))
        }
        "slirp-dns" => combine(par(vec![
            job(|| dns_udp(ctx, c.slirp_dns.into(), "outside.test")),
            job(|| dns_tcp(ctx, c.slirp_dns, "outside.test")),
        ])),
        "host-addresses" => {
            let mut jobs = Vec::new();
            for &h in &c.host_addrs {
                for p in [22u16, 80, 443, 8080, 9050] {
                    jobs.push(job(move || tcp(ctx, v4(h, p), then_for(ctx, p))));
                }
                jobs.push(job(move || {
                    udp(ctx, v4(h, 9999), PAYLOAD, &UdpOpts::default())
                }));
                jobs.push(job(move || dns_udp(ctx, h.into(), "outside.test")));
                jobs.push(job(move || icmp_echo(ctx, h, None)));
            }
            combine(par(jobs))
        }
        "vsock" => {
            let mut jobs = Vec::new();
            // The host on its agent port, the relay's port (the host dials
            // the App VM there, never the other way), common ones.
            let streams: [(u32, u32); 10] = [
                (2, 1024),
                (2, 1025),
                (2, 22),
                (2, 80),
                (2, 9999),
                (2, 1),
                (1, 1024),
                (3, 1024),
                (0, 1024),
                (libc::VMADDR_CID_ANY, 1024),
            ];
            for (cid, port) in streams {
                jobs.push(job(move || crate::probes::vsock_stream(ctx, cid, port)));
            }
            for (cid, port) in [(2u32, 1024u32), (3, 1024)] {
                jobs.push(job(move || crate::probes::vsock_dgram(ctx, cid, port)));
            }
            combine(par(jobs))
        }
        // The Tor VM over vsock, on any port, and every other CID: the App
        // VM's backend serves the App VM alone and knows no other VM.
        "vsock-other-vm" => {
            let mut jobs = Vec::new();
            for cid in [3u32, 5, 16, 100, 0xffff_fffe] {
                for port in [1024u32, 1025, 1, 22, 80, 9050, 9051] {
                    jobs.push(job(move || crate::probes::vsock_stream(ctx, cid, port)));
                }
                jobs.push(job(move || crate::probes::vsock_dgram(ctx, cid, 1024)));
            }
            combine(par(jobs))
        }
        "clock-skew" => clock_skew(),
        "tor-virtual-addr" => combine(vec![tcp(
            ctx,
            v4(Ipv4Addr::new(10, 192, 0, 1), 80),
            TcpThen::Http,
        )]),
        "gateway-as-router" => gateway_as_router(ctx),
        other => Outcome {
            res: crate::probes::Res::Error,
            detail: format!("{other} is not a parallel vector"),
        },
    }
}

/// Is the clock the services stamp their answers with the host's? The
/// emulated RTC runs on the host's time (a root guest can read it: that is
/// said in the README); the system clock must be away from it by the boot
/// clock randomization's half second at least. The RTC counts whole
/// seconds: the offset is read at the instant its second changes.
fn clock_skew() -> Outcome {
    let rtc = || {
        std::fs::read_to_string("/sys/class/rtc/rtc0/since_epoch")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    let Some(first) = rtc() else {
        return Outcome {
            res: crate::probes::Res::Error,
            detail: "no RTC to compare with".into(),
        };
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        match rtc() {
            Some(now) if now != first => {
                let sys = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let off = sys - now as f64;
                let res = if off.abs() >= 0.4 {
                    crate::probes::Res::Blocked
                } else {
                    crate::probes::Res::Reached
                };
                return Outcome {
                    res,
                    detail: format!(
                        "the system clock is {off:+.2} s from the host's (RTC){}",
                        if off.abs() >= 0.4 {
                            ""
                        } else {
                            ": the services show the host's time"
                        }
                    ),
                };
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    Outcome {
        res: crate::probes::Res::Error,
        detail: "the RTC did not tick".into(),
    }
}

fn prefix_mask(p: u8) -> u32 {
    if p == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(p.min(32)))
    }
}

/// Hand-built packets to outside with forged source addresses (sent with
/// IP_HDRINCL). An answer would go to the forged address, so it can only
/// be seen if it is routed back here: a sniffer watches for it anyway.
fn spoofed(ctx: &Ctx, syn: bool) -> Outcome {
    let c = &ctx.cfg;
    let what = if syn {
        "spoofed tcp syn"
    } else {
        "spoofed udp"
    };
    let mut srcs = vec![c.gateway];
    srcs.extend(&c.host_addrs);
    srcs.push(c.torvm_uplink);
    srcs.push(Ipv4Addr::new(8, 8, 8, 8));
    let mut seen = std::collections::HashSet::new();
    srcs.retain(|a| seen.insert(*a));
    let proto = if syn {
        libc::IPPROTO_TCP
    } else {
        libc::IPPROTO_UDP
    };
    let sn = match Sniffer::open(what, &[proto, libc::IPPROTO_ICMP]) {
        Ok(s) => s,
        Err(a) => return combine(vec![a]),
    };
    let dport = if syn { c.web_port } else { 9999 };
    let deadline = ctx.deadline();
    // (source, our source port, send result)
    let mut sent: Vec<(Ipv4Addr, u16, Option<Attempt>)> = Vec::new();
    for &src in &srcs {
        let sport = rand_port();
        let l4 = if syn {
            pk::tcp_syn(src, c.outside, sport, dport, crate::probes::rand32())
        } else {
            pk::udp(src, c.outside, sport, dport, PAYLOAD)
        };
        let p = if syn { pk::PROTO_TCP } else { pk::PROTO_UDP };
        let pkt = pk::ipv4(src, c.outside, p, 64, crate::probes::new_id(), &[], &l4);
        let lbl = format!("{what} from {src} to {}:{dport}", c.outside);
        let r = send_hdrincl(&lbl, &pkt, c.outside, deadline).err();
        sent.push((src, sport, r));
    }
    let sports: Vec<u16> = sent.iter().map(|s| s.1).collect();
    let hits = sn.watch(deadline, false, |p| {
        let l4proto = if syn { pk::PROTO_TCP } else { pk::PROTO_UDP };
        if p.proto == l4proto && p.src == c.outside {
            let (sp, dp) = pk::ports(p.payload)?;
            if sp == dport && sports.contains(&dp) {
                let flags = if syn && p.payload.len() > 13 {
                    format!(" flags {:#04x}", p.payload[13])
                } else {
                    String::new()
                };
                return Some(format!("[{dp}] answer from {}{flags} to {}", p.src, p.dst));
            }
        }
        if p.proto == pk::PROTO_ICMP {
            let e = pk::parse_icmp_error(p.payload)?;
            let (sp, dp) = pk::ports(e.quoted.payload)?;
            if e.quoted.proto == l4proto && dp == dport && sports.contains(&sp) {
                return Some(format!(
                    "[{sp}] {} from {}",
                    pk::icmp_name(e.typ, e.code),
                    p.src
                ));
            }
        }
        None
    });
    let attempts = sent
        .into_iter()
        .map(|(src, sport, r)| {
            if let Some(a) = r {
                return a;
            }
            let lbl = format!("{what} from {src} to {}:{dport}", c.outside);
            let tag = format!("[{sport}]");
            let mine: Vec<(IpAddr, String)> = hits
                .iter()
                .filter(|(_, t)| t.starts_with(&tag))
                .cloned()
                .collect();
            let mut a = judge_hits(&lbl, mine, ctx);
            a.text = format!("{} (sent)", a.text);
            a
        })
        .collect();
    combine(attempts)
}

/// UDP and ICMP with TTL 1 and 2: any time-exceeded (or other answer)
/// from a non-local address is reached.
fn ttl_expiry(ctx: &Ctx) -> Outcome {
    let out = ctx.cfg.outside;
    let mut jobs = Vec::new();
    for ttl in [1, 2] {
        jobs.push(job(move || {
            let o = UdpOpts {
                ttl: Some(ttl),
                ..Default::default()
            };
            let mut a = udp(ctx, v4(out, 9999), PAYLOAD, &o);
            a.text = format!("ttl {ttl} {}", a.text);
            a
        }));
        jobs.push(job(move || {
            let mut a = icmp_echo(ctx, out, Some(ttl));
            a.text = format!("ttl {ttl} {}", a.text);
            a
        }));
    }
    combine(par(jobs))
}

/// Raw packets whose IP destination is the gateway, carrying a loose
/// source route option naming outside as the next hop.
fn source_route(ctx: &Ctx) -> Outcome {
    let c = &ctx.cfg;
    let what = format!("lsrr via {} to {}", c.gateway, c.outside);
    let sn = match Sniffer::open(&what, &[libc::IPPROTO_UDP, libc::IPPROTO_ICMP]) {
        Ok(s) => s,
        Err(a) => return combine(vec![a]),
    };
    let opt = pk::lsrr_option(&[c.outside]);
    let sport = rand_port();
    let eid = crate::probes::new_id();
    // With source routing the pseudo-header uses the final destination.
    let u = pk::udp(ctx.my_ip, c.outside, sport, 9999, PAYLOAD);
    let p_udp = pk::ipv4(
        ctx.my_ip,
        c.gateway,
        pk::PROTO_UDP,
        64,
        crate::probes::new_id(),
        &opt,
        &u,
    );
    let e = pk::icmp_echo(eid, 1, PAYLOAD);
    let p_icmp = pk::ipv4(
        ctx.my_ip,
        c.gateway,
        pk::PROTO_ICMP,
        64,
        crate::probes::new_id(),
        &opt,
        &e,
    );
    let deadline = ctx.deadline();
    let lu = format!("{what} udp :9999");
    let li = format!("{what} icmp echo");
    let su = send_hdrincl(&lu, &p_udp, c.gateway, deadline).err();
    let si = send_hdrincl(&li, &p_icmp, c.gateway, deadline).err();
    combine(judge_udp_and_echo(
        ctx,
        &sn,
        deadline,
        sport,
        eid,
        (&lu, su),
        (&li, si),
    ))
}

/// Gratuitous ARP replies claiming the gateway's IP for our MAC (broadcast
/// and unicast to the gateway), then ARP requests for the gateway,
/// outside, slirp-gw and torvm-uplink.
///
/// The rule: the gateway answering for its own IP from its own MAC is
/// expected (that is how the App VM reaches the Tor VM at all) and is only
/// mentioned. Reached is: any ARP reply for any other IP (someone on the
/// link — proxy ARP, or the Tor VM answering for an address of its uplink
/// — offers to take packets for a non-gateway address), a reply for the
/// gateway's IP from another MAC, or any ARP from a third MAC (another
/// host on a link that should hold only the two VMs).
fn arp_spoof(ctx: &Ctx) -> Outcome {
    let c = &ctx.cfg;
    let what = "arp";
    let fd = match packet_socket(what, ctx, pk::ETHERTYPE_ARP) {
        Ok(f) => f,
        Err(a) => return combine(vec![a]),
    };
    let deadline = ctx.deadline();
    let gw_mac = c.gateway_mac;
    let mut attempts = Vec::new();
    let grat = [
        (pk::BROADCAST_MAC, pk::BROADCAST_MAC, "broadcast"),
        (gw_mac, gw_mac, "unicast to the gateway"),
    ];
    for (eth_dst, tha, how) in grat {
        let a = pk::arp(pk::ARP_REPLY, ctx.mac, c.gateway, tha, c.gateway);
        let f = pk::ethernet(eth_dst, ctx.mac, pk::ETHERTYPE_ARP, &a);
        let lbl = format!(
            "gratuitous arp {} is-at {} ({how})",
            c.gateway,
            pk::fmt_mac(&ctx.mac)
        );
        match send_frame(&lbl, &fd, &f, deadline) {
            Ok(()) => attempts.push(Attempt::blocked(&lbl, "sent")),
            Err(a) => attempts.push(a),
        }
    }
    let mut targets = vec![c.gateway, c.outside, c.slirp_gw, c.torvm_uplink];
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(*t));
    for &t in &targets {
        let a = pk::arp(pk::ARP_REQUEST, ctx.mac, ctx.my_ip, [0; 6], t);
        let f = pk::ethernet(pk::BROADCAST_MAC, ctx.mac, pk::ETHERTYPE_ARP, &a);
        if let Err(a) = send_frame(&format!("arp who-has {t}"), &fd, &f, deadline) {
            attempts.push(a);
        }
    }
    let mut replies: Vec<(Ipv4Addr, [u8; 6])> = Vec::new();
    let mut strangers: Vec<(Ipv4Addr, [u8; 6])> = Vec::new();
    watch_frames(&fd, deadline, |f| {
        if let Some(a) = pk::parse_arp_frame(f) {
            if a.sha == ctx.mac {
                return true;
            }
            if a.op == pk::ARP_REPLY && a.tpa == ctx.my_ip && !replies.contains(&(a.spa, a.sha)) {
                replies.push((a.spa, a.sha));
            } else if a.sha != gw_mac && !strangers.contains(&(a.spa, a.sha)) {
                strangers.push((a.spa, a.sha));
            }
        }
        true
    });
    for &t in &targets {
        let lbl = format!("arp who-has {t}");
        let from: Vec<&[u8; 6]> = replies.iter().filter(|r| r.0 == t).map(|r| &r.1).collect();
        let macs: Vec<String> = from.iter().map(|m| pk::fmt_mac(m)).collect();
        let a = if t == c.gateway {
            if from.iter().all(|m| **m == gw_mac) {
                let d = if from.is_empty() {
                    "no reply (not even from the gateway)".to_string()
                } else {
                    format!(
                        "answered by the gateway's own MAC {} (expected)",
                        pk::fmt_mac(&gw_mac)
                    )
                };
                Attempt::blocked(&lbl, d)
            } else {
                Attempt::reached(&lbl, format!("answered by another MAC: {}", macs.join(" ")))
            }
        } else if from.is_empty() {
            Attempt::blocked(
                &lbl,
                format!("no reply in {} ms", ctx.timeout().as_millis()),
            )
        } else {
            Attempt::reached(&lbl, format!("{t} is-at {}", macs.join(" ")))
        };
        attempts.push(a);
    }
    for (ip, mac) in strangers {
        attempts.push(Attempt::reached(
            "third host on the link",
            format!("ARP from {} ({ip})", pk::fmt_mac(&mac)),
        ));
    }
    combine(attempts)
}

/// DHCPDISCOVER through a UDP socket (SO_BROADCAST, SO_BINDTODEVICE, port
/// 68) and as a raw Ethernet frame; reached on any DHCP answer.
fn dhcp(ctx: &Ctx) -> Outcome {
    let what = "dhcp";
    let lsock = match packet_socket(what, ctx, pk::ETHERTYPE_IPV4) {
        Ok(f) => f,
        Err(a) => return combine(vec![a]),
    };
    let deadline = ctx.deadline();
    let (xid_udp, xid_raw) = (crate::probes::rand32(), crate::probes::rand32());
    let mut attempts = Vec::new();
    // 1. UDP socket.
    let lbl_udp = "dhcpdiscover udp 0.0.0.0:68 -> 255.255.255.255:67".to_string();
    let udp_sock = (|| -> Result<sys::Fd, Attempt> {
        let fd = crate::probes::open(&lbl_udp, libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let f = |e: std::io::Error| crate::probes::failed(&lbl_udp, "setup", &e);
        sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(f)?;
        sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1).map_err(f)?;
        sys::bind_device(&fd, &ctx.cfg.iface).map_err(f)?;
        sys::bind(&fd, &sys::Addr::Ip(v4(Ipv4Addr::UNSPECIFIED, 68))).map_err(f)?;
        let d = pk::dhcp_discover(xid_udp, ctx.mac);
        sys::send(
            &fd,
            &d,
            Some(&sys::Addr::Ip(v4(Ipv4Addr::BROADCAST, 67))),
            deadline,
        )
        .map_err(|e| crate::probes::failed(&lbl_udp, "send", &e))?;
        Ok(fd)
    })();
    let udp_sock = match udp_sock {
        Ok(f) => Some(f),
        Err(a) => {
            attempts.push(a);
            None
        }
    };
    // 2. Raw frame from 0.0.0.0.
    let lbl_raw = "dhcpdiscover raw frame".to_string();
    let sender = packet_socket(&lbl_raw, ctx, 0);
    let raw_sent = match sender {
        Ok(fd) => {
            let d = pk::dhcp_discover(xid_raw, ctx.mac);
            let u = pk::udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &d);
            let ip = pk::ipv4(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                pk::PROTO_UDP,
                64,
                0,
                &[],
                &u,
            );
            let f = pk::ethernet(pk::BROADCAST_MAC, ctx.mac, pk::ETHERTYPE_IPV4, &ip);
            match send_frame(&lbl_raw, &fd, &f, deadline) {
                Ok(()) => true,
                Err(a) => {
                    attempts.push(a);
                    false
                }
            }
        }
        Err(a) => {
            attempts.push(a);
            false
        }
    };
    // Listen on the packet socket (sees every incoming IPv4 frame).
    let mut offers: Vec<(u32, String)> = Vec::new();
    watch_frames(&lsock, deadline, |f| {
        if f.len() < 14 || f[12..14] != [0x08, 0] {
            return true;
        }
        let Some(ip) = pk::parse_ipv4(&f[14..]) else {
            return true;
        };
        if ip.proto != pk::PROTO_UDP {
            return true;
        }
        if let Some((_, 68)) = pk::ports(ip.payload) {
            for xid in [xid_udp, xid_raw] {
                if let Some(r) = ip
                    .payload
                    .get(8..)
                    .and_then(|d| pk::parse_dhcp_reply(d, xid))
                {
                    let t = format!(
                        "{} from {} offering {}",
                        pk::dhcp_type_name(r.msg_type),
                        ip.src,
                        r.yiaddr
                    );
                    if !offers.iter().any(|o| o.1 == t) {
                        offers.push((xid, t));
                    }
                }
            }
        }
        true
    });
    if let Some(fd) = &udp_sock {
        let mut buf = [0u8; 1500];
        while let Ok(Some((n, src))) = sys::recv(fd, &mut buf) {
            if let Some(r) = pk::parse_dhcp_reply(&buf[..n], xid_udp) {
                let from = src.ip.map(|a| a.to_string()).unwrap_or_default();
                offers.push((
                    xid_udp,
                    format!(
                        "{} from {from} (udp socket)",
                        pk::dhcp_type_name(r.msg_type)
                    ),
                ));
            }
        }
    }
    for (lbl, xid, ran) in [
        (&lbl_udp, xid_udp, udp_sock.is_some()),
        (&lbl_raw, xid_raw, raw_sent),
    ] {
        if !ran {
            continue;
        }
        let mine: Vec<String> = offers
            .iter()
            .filter(|o| o.0 == xid)
            .map(|o| o.1.clone())
            .collect();
        attempts.push(if mine.is_empty() {
            Attempt::blocked(
                lbl,
                format!("no DHCP answer in {} ms", ctx.timeout().as_millis()),
            )
        } else {
            Attempt::reached(lbl, mine.join(", "))
        });
    }
    combine(attempts)
}

/// IPv4 packets to outside in Ethernet frames addressed straight to the
/// gateway's MAC (as if it were a router); anything back is reached.
fn gateway_as_router(ctx: &Ctx) -> Outcome {
    let c = &ctx.cfg;
    let what = format!(
        "frame to gateway MAC {} for {}",
        pk::fmt_mac(&c.gateway_mac),
        c.outside
    );
    let sn = match Sniffer::open(&what, &[libc::IPPROTO_UDP, libc::IPPROTO_ICMP]) {
        Ok(s) => s,
        Err(a) => return combine(vec![a]),
    };
    let fd = match packet_socket(&what, ctx, 0) {
        Ok(f) => f,
        Err(a) => return combine(vec![a]),
    };
    let deadline = ctx.deadline();
    let sport = rand_port();
    let eid = crate::probes::new_id();
    let u = pk::udp(ctx.my_ip, c.outside, sport, 9999, PAYLOAD);
    let p_udp = pk::ipv4(
        ctx.my_ip,
        c.outside,
        pk::PROTO_UDP,
        64,
        crate::probes::new_id(),
        &[],
        &u,
    );
    let p_icmp = pk::ipv4(
        ctx.my_ip,
        c.outside,
        pk::PROTO_ICMP,
        64,
        crate::probes::new_id(),
        &[],
        &pk::icmp_echo(eid, 1, PAYLOAD),
    );
    let lu = format!("{what}: udp :9999");
    let li = format!("{what}: icmp echo");
    let su = send_frame(
        &lu,
        &fd,
        &pk::ethernet(c.gateway_mac, ctx.mac, pk::ETHERTYPE_IPV4, &p_udp),
        deadline,
    )
    .err();
    let si = send_frame(
        &li,
        &fd,
        &pk::ethernet(c.gateway_mac, ctx.mac, pk::ETHERTYPE_IPV4, &p_icmp),
        deadline,
    )
    .err();
    combine(judge_udp_and_echo(
        ctx,
        &sn,
        deadline,
        sport,
        eid,
        (&lu, su),
        (&li, si),
    ))
}

/// Watches `sn` until `deadline` for what answers the caller's two sends, a
/// UDP datagram from `sport` to port 9999 and an ICMP echo with id `eid`, and
/// judges each: its send error if it had one, else what came back.
fn judge_udp_and_echo(
    ctx: &Ctx,
    sn: &Sniffer,
    deadline: Instant,
    sport: u16,
    eid: u16,
    udp: (&str, Option<Attempt>),
    icmp: (&str, Option<Attempt>),
) -> Vec<Attempt> {
    let hits = sn.watch(deadline, false, |p| {
        if let Some(t) = match_echo(p, eid) {
            return Some(format!("[icmp] {t}"));
        }
        if p.proto == pk::PROTO_UDP {
            let (sp, dp) = pk::ports(p.payload)?;
            if dp == sport && sp == 9999 {
                return Some(format!("[udp] reply from {}", p.src));
            }
        }
        if p.proto == pk::PROTO_ICMP {
            let e = pk::parse_icmp_error(p.payload)?;
            let (sp, _) = pk::ports(e.quoted.payload)?;
            if e.quoted.proto == pk::PROTO_UDP && sp == sport {
                return Some(format!(
                    "[udp] {} from {}",
                    pk::icmp_name(e.typ, e.code),
                    p.src
                ));
            }
        }
        None
    });
    let mut attempts = Vec::new();
    for ((lbl, err), tag) in [(udp, "[udp]"), (icmp, "[icmp]")] {
        match err {
            Some(a) => attempts.push(a),
            None => {
                let mine = hits
                    .iter()
                    .filter(|(_, t)| t.starts_with(tag))
                    .cloned()
                    .collect();
                attempts.push(judge_hits(lbl, mine, ctx));
            }
        }
    }
    attempts
}

// ------------------------------------------------ interface-changing vectors

/// Prefixes every attempt's text.
fn label(mut v: Vec<Attempt>, prefix: &str) -> Vec<Attempt> {
    for a in &mut v {
        a.text = format!("{prefix}{}", a.text);
    }
    v
}

/// Appends notes (setup, restore) to an outcome's detail.
fn with_notes(mut o: Outcome, notes: &[String]) -> Outcome {
    if !notes.is_empty() {
        o.detail = format!("{} | {}", o.detail, notes.join("; "));
    }
    o
}

/// The three IPv6 vectors, in one window with IPv6 enabled on the
/// interface (a root attacker would enable it; the previous sysctl values
/// are written back afterwards). Returns (name, outcome) for those of
/// `names` that are IPv6 vectors.
pub fn ipv6_group(ctx: &Ctx, names: &[&'static str]) -> Vec<(&'static str, Outcome, Duration)> {
    let started = Instant::now();
    let c = &ctx.cfg;
    let iface = c.iface.as_str();
    let mut notes: Vec<String> = Vec::new();
    let saved = match iface::Ipv6Saved::save(iface) {
        Ok(s) => Some(s),
        Err(e) => {
            notes.push(format!(
                "IPv6 sysctls unavailable (no IPv6 in the kernel?): {e}"
            ));
            None
        }
    };
    // Whether a link-local address may appear (worth waiting for).
    let mut may_appear = saved.is_some();
    if let Some(s) = &saved {
        notes.push(format!(
            "disable_ipv6 was {} on {iface}",
            s.disabled(iface).unwrap_or("?")
        ));
        match iface::enable_ipv6(iface, true) {
            Ok(()) => notes.push("enabled IPv6 (DAD off)".into()),
            Err(e) => {
                may_appear = s.disabled(iface) == Some("0");
                notes.push(format!("enabling IPv6 failed: {e}"));
            }
        }
    }
    // Wait for a usable link-local address: at once when we enabled IPv6
    // with DAD off, up to ~2 s when it was enabled before (still in DAD).
    let wait_until = Instant::now() + Duration::from_secs(4);
    let ll = loop {
        let found = iface::link_local_ready(ctx.tools.ip.as_deref(), iface);
        if found.is_some() || !may_appear || Instant::now() >= wait_until {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match ll {
        Some(a) => notes.push(format!("own link-local {a}")),
        None => notes.push("no usable link-local address appeared".into()),
    }
    let gw_ll = pk::eui64_link_local(c.gateway_mac);
    let want_global = names.contains(&"ipv6-global");
    let mut global_notes = Vec::new();
    let gw_route = format!("{gw_ll}");
    if want_global {
        match &ctx.tools.ip {
            Some(ip) => {
                for args in [
                    vec![
                        "-6",
                        "addr",
                        "add",
                        "2001:db8:1::3/64",
                        "dev",
                        iface,
                        "nodad",
                    ],
                    vec![
                        "-6", "route", "replace", "default", "via", &gw_route, "dev", iface,
                    ],
                ] {
                    match iface::run(ip, &args) {
                        Ok(_) => global_notes.push(format!("ip {}: ok", args.join(" "))),
                        Err(e) => global_notes.push(e),
                    }
                }
            }
            None => global_notes.push("ip not found: no global address".into()),
        }
    }
    let scope = ctx.ifindex;
    let web = c.web_port;
    let global_notes = &global_notes;
    let results: Vec<(&'static str, Outcome)> = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for &n in names {
            let h = s.spawn(move || {
                let o = match n {
                    "ipv6-link-local" => combine(par(vec![
                        job(move || udp(ctx, v6(gw_ll, 9999, scope), PAYLOAD, &UdpOpts::default())),
                        job(move || icmp6(ctx, gw_ll, scope, Icmp6Kind::Echo)),
                        job(move || tcp(ctx, v6(gw_ll, 9040, scope), TcpThen::Peek)),
                    ])),
                    "ipv6-multicast" => {
                        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
                        let dhcp_agents = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
                        combine(par(vec![
                            job(move || icmp6(ctx, all_nodes, scope, Icmp6Kind::Echo)),
                            job(move || icmp6(ctx, all_routers, scope, Icmp6Kind::RouterSolicit)),
                            job(move || {
                                let sol = pk::dhcpv6_solicit(crate::probes::rand32(), ctx.mac);
                                let o = UdpOpts {
                                    unconnected: true,
                                    multicast: true,
                                    bind: Some(v6(Ipv6Addr::UNSPECIFIED, 546, 0)),
                                    label: Some("dhcpv6 solicit"),
                                    ..Default::default()
                                };
                                udp(ctx, v6(dhcp_agents, 547, scope), &sol, &o)
                            }),
                        ]))
                    }
                    "ipv6-global" => {
                        let doc = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
                        let cf = Ipv6Addr::new(0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111);
                        let mut jobs = Vec::new();
                        for d in [doc, cf] {
                            jobs.push(job(move || {
                                udp(ctx, v6(d, 9999, 0), PAYLOAD, &UdpOpts::default())
                            }));
                            jobs.push(job(move || dns_udp(ctx, d.into(), "example.com")));
                            jobs.push(job(move || tcp(ctx, v6(d, web, 0), TcpThen::Http)));
                            jobs.push(job(move || tcp(ctx, v6(d, 443, 0), TcpThen::Peek)));
                            jobs.push(job(move || icmp6(ctx, d, 0, Icmp6Kind::Echo)));
                        }
                        let o = combine(par(jobs));
                        with_notes(o, global_notes)
                    }
                    _ => return None,
                };
                Some(o)
            });
            hs.push((n, h));
        }
        hs.into_iter()
            .filter_map(|(n, h)| match h.join() {
                Ok(o) => o.map(|o| (n, o)),
                Err(_) => Some((
                    n,
                    Outcome {
                        res: crate::probes::Res::Error,
                        detail: "the probe panicked (a bug in ts-leakprobe; see stderr)".into(),
                    },
                )),
            })
            .collect()
    });
    // Undo.
    if want_global {
        if let Some(ip) = &ctx.tools.ip {
            let _ = iface::run(
                ip,
                &[
                    "-6", "route", "del", "default", "via", &gw_route, "dev", iface,
                ],
            );
            let _ = iface::run(ip, &["-6", "addr", "del", "2001:db8:1::3/64", "dev", iface]);
        }
    }
    if let Some(s) = &saved {
        match s.restore() {
            Ok(()) => notes.push("IPv6 sysctls restored".into()),
            Err(e) => notes.push(format!("RESTORE FAILED: {e}")),
        }
    }
    let took = started.elapsed();
    results
        .into_iter()
        .map(|(n, o)| (n, with_notes(o, &notes), took))
        .collect()
}

/// The attempts repeated under a changed identity: TCP and UDP to
/// outside, ICMP echo to the gateway.
fn identity_attempts(ctx: &Ctx, extra_slirp: bool) -> Vec<Attempt> {
    let c = &ctx.cfg;
    let mut jobs = vec![
        job(move || tcp(ctx, v4(c.outside, c.web_port), TcpThen::Http)),
        job(move || udp(ctx, v4(c.outside, 9999), PAYLOAD, &UdpOpts::default())),
        job(move || icmp_echo(ctx, c.gateway, None)),
    ];
    if extra_slirp {
        jobs.push(job(move || {
            udp(ctx, v4(c.slirp_gw, 9999), PAYLOAD, &UdpOpts::default())
        }));
        jobs.push(job(move || tcp(ctx, v4(c.slirp_gw, 80), TcpThen::Http)));
    }
    par(jobs)
}

fn restore_note(ctx: &Ctx, snap: &Snapshot) -> String {
    match &ctx.tools.ip {
        Some(ip) => match iface::restore(ip, &ctx.cfg.iface, snap) {
            Ok(()) => "interface restored".into(),
            Err(e) => format!("RESTORE FAILED: {e}"),
        },
        None => "RESTORE FAILED: ip not found".into(),
    }
}

fn need_ip(ctx: &Ctx) -> Result<&std::path::Path, Outcome> {
    ctx.tools.ip.as_deref().ok_or(Outcome {
        res: crate::probes::Res::Error,
        detail: "ip (iproute2) not found".into(),
    })
}

/// MAC changed to 02:00:00:00:00:99, then the identity attempts.
pub fn changed_mac(ctx: &Ctx, snap: &Snapshot) -> Outcome {
    let ip = match need_ip(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let iface = ctx.cfg.iface.as_str();
    let new_mac = "02:00:00:00:00:99";
    let mut notes = Vec::new();
    let o = match iface::set_mac(ip, iface, new_mac) {
        Err(e) => Outcome {
            res: crate::probes::Res::Error,
            detail: format!("cannot change the MAC: {e}"),
        },
        Ok(()) => {
            notes.extend(iface::restore_l3(ip, iface, snap));
            combine(label(
                identity_attempts(ctx, false),
                &format!("as {new_mac}: "),
            ))
        }
    };
    notes.push(restore_note(ctx, snap));
    with_notes(o, &notes)
}

/// Address replaced by 10.1.2.77/24, then by torvm-uplink/24 (default
/// route via the gateway, on-link), with the identity attempts each time.
pub fn changed_ip(ctx: &Ctx, snap: &Snapshot) -> Outcome {
    let ip = match need_ip(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let c = &ctx.cfg;
    let iface = c.iface.as_str();
    let gw = c.gateway.to_string();
    let mut attempts = Vec::new();
    let mut notes = Vec::new();
    for (addr, extra) in [(Ipv4Addr::new(10, 1, 2, 77), false), (c.torvm_uplink, true)] {
        let cidr = format!("{addr}/24");
        let steps: [Vec<&str>; 3] = [
            vec!["-4", "addr", "flush", "dev", iface],
            vec!["addr", "add", &cidr, "dev", iface],
            vec![
                "route", "replace", "default", "via", &gw, "dev", iface, "onlink",
            ],
        ];
        let mut ok = true;
        for s in &steps {
            if let Err(e) = iface::run(ip, s) {
                notes.push(e);
                ok = false;
            }
        }
        if ok {
            attempts.extend(label(
                identity_attempts(ctx, extra),
                &format!("as {cidr}: "),
            ));
        } else {
            attempts.push(Attempt::error(
                &format!("as {cidr}"),
                "could not configure the address",
            ));
        }
    }
    notes.push(restore_note(ctx, snap));
    with_notes(combine(attempts), &notes)
}

/// A host route to outside straight on the link (no gateway), then a
/// default route on the link; TCP and UDP to outside each time.
pub fn on_link_route(ctx: &Ctx, snap: &Snapshot) -> Outcome {
    let ip = match need_ip(ctx) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let c = &ctx.cfg;
    let iface = c.iface.as_str();
    let host = format!("{}/32", c.outside);
    let mut attempts = Vec::new();
    let mut notes = Vec::new();
    let tries = |prefix: &str| {
        let jobs = vec![
            job(move || tcp(ctx, v4(c.outside, c.web_port), TcpThen::Http)),
            job(move || udp(ctx, v4(c.outside, 9999), PAYLOAD, &UdpOpts::default())),
        ];
        label(par(jobs), prefix)
    };
    match iface::run(ip, &["route", "add", &host, "dev", iface]) {
        Ok(_) => {
            attempts.extend(tries(&format!("route {host} dev {iface}: ")));
            if let Err(e) = iface::run(ip, &["route", "del", &host, "dev", iface]) {
                notes.push(e);
            }
        }
        Err(e) => attempts.push(Attempt::error(&format!("route {host} dev {iface}"), e)),
    }
    match iface::run(ip, &["route", "replace", "default", "dev", iface]) {
        Ok(_) => attempts.extend(tries(&format!("route default dev {iface}: "))),
        Err(e) => attempts.push(Attempt::error(&format!("route default dev {iface}"), e)),
    }
    notes.push(restore_note(ctx, snap));
    with_notes(combine(attempts), &notes)
}
