//! Packet builders and parsers for `ts-leakprobe`: the bytes the probe puts on
//! the wire itself (IPv4 headers with options, UDP/TCP with pseudo-header
//! checksums, ICMP and ICMPv6 messages, Ethernet/ARP frames, DHCP and DHCPv6,
//! DNS queries, NTP requests) and the few parsers needed to recognise answers.
//!
//! Everything here is pure (no I/O) so it is covered by known-answer tests.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Internet checksum (RFC 1071): one's complement of the one's complement sum
/// of the 16-bit big-endian words of `data` (odd length padded with a zero).
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        // Fold early so that even a 64 KiB buffer cannot overflow u32.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checksum of an IPv4 transport segment (UDP or TCP) with its pseudo-header.
fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&(segment.len() as u16).to_be_bytes());
    fold(sum16(segment, sum16(&pseudo, 0)))
}

/// IP protocol numbers used by the probe.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A whole IPv4 packet: 20-byte header plus `options` (padded with End of
/// Options List bytes to a multiple of 4), header checksum filled in.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    id: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let hlen = 20 + opt_len.min(40);
    let total = hlen + payload.len();
    let mut p = Vec::with_capacity(total);
    p.push(0x40 | (hlen / 4) as u8);
    p.push(0); // DSCP/ECN
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0]); // DF, fragment offset 0
    p.push(ttl);
    p.push(proto);
    p.extend_from_slice(&[0, 0]); // checksum, below
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&options[..options.len().min(40)]);
    p.resize(hlen, 0);
    let c = checksum(&p[..hlen]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Loose Source and Record Route option (RFC 791, type 131) listing `route`
/// (the hops still to visit after the packet's destination field).
pub fn lsrr_option(route: &[Ipv4Addr]) -> Vec<u8> {
    let route = &route[..route.len().min(9)];
    let mut o = vec![0x83, (3 + 4 * route.len()) as u8, 4];
    for a in route {
        o.extend_from_slice(&a.octets());
    }
    o
}

/// A UDP datagram over IPv4 with its checksum (`src`/`dst` for the
/// pseudo-header: with source routing, `dst` is the final destination).
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut c = transport_checksum(src, dst, PROTO_UDP, &u);
    if c == 0 {
        c = 0xffff; // 0 means "no checksum" in UDP over IPv4
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// A TCP SYN (data offset 6: one MSS option of 1460) with its checksum.
pub fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(24);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes()); // ack
    t.push(6 << 4); // data offset 6 words
    t.push(0x02); // SYN
    t.extend_from_slice(&64240u16.to_be_bytes()); // window
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t.extend_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    let c = transport_checksum(src, dst, PROTO_TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// ICMP echo request (type 8) with its checksum.
pub fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// ICMPv6 echo request (type 128). The checksum is left 0: the kernel
/// computes it for raw ICMPv6 sockets (it needs the pseudo-header).
pub fn icmpv6_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// ICMPv6 router solicitation (type 133) with a source link-layer address
/// option; checksum left to the kernel.
pub fn icmpv6_router_solicit(mac: [u8; 6]) -> Vec<u8> {
    let mut m = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    m.extend_from_slice(&mac);
    m
}

/// Ethernet II frame (no FCS), padded to the 60-byte minimum.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// ARP payload (Ethernet/IPv4, 28 bytes).
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    a.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a.push(6);
    a.push(4);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

/// A parsed ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: Ipv4Addr,
    pub tha: [u8; 6],
    pub tpa: Ipv4Addr,
}

/// Parses an Ethernet frame holding an Ethernet/IPv4 ARP message.
pub fn parse_arp_frame(f: &[u8]) -> Option<Arp> {
    if f.len() < 42 || u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_ARP {
        return None;
    }
    let a = &f[14..42];
    if a[0..6] != [0, 1, 0x08, 0, 6, 4] {
        return None;
    }
    Some(Arp {
        op: u16::from_be_bytes([a[6], a[7]]),
        sha: mac_at(a, 8),
        spa: ip4_at(a, 14),
        tha: mac_at(a, 18),
        tpa: ip4_at(a, 24),
    })
}

fn mac_at(b: &[u8], i: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[i..i + 6]);
    m
}

fn ip4_at(b: &[u8], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3])
}

/// A parsed IPv4 packet (header fields the probe looks at).
#[derive(Debug, Clone, Copy)]
pub struct Ip4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub payload: &'a [u8],
}

/// Parses an IPv4 packet; the payload is cut to the header's total length
/// (but tolerates truncation, as in the quote inside ICMP errors).
pub fn parse_ipv4(b: &[u8]) -> Option<Ip4<'_>> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(b[0] & 0x0f) * 4;
    if hlen < 20 || b.len() < hlen {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let end = total.clamp(hlen, b.len());
    Some(Ip4 {
        src: ip4_at(b, 12),
        dst: ip4_at(b, 16),
        proto: b[9],
        payload: &b[hlen..end],
    })
}

/// Source and destination ports of a UDP or TCP header.
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    if l4.len() < 4 {
        return None;
    }
    Some((
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

/// An ICMP (v4) error: its type and code and the quoted original packet.
pub struct IcmpError<'a> {
    pub typ: u8,
    pub code: u8,
    pub quoted: Ip4<'a>,
}

/// Parses an ICMPv4 message that quotes an original packet (destination
/// unreachable, source quench, redirect, time exceeded, parameter problem).
pub fn parse_icmp_error(icmp: &[u8]) -> Option<IcmpError<'_>> {
    if icmp.len() < 8 + 20 || !matches!(icmp[0], 3 | 4 | 5 | 11 | 12) {
        return None;
    }
    Some(IcmpError {
        typ: icmp[0],
        code: icmp[1],
        quoted: parse_ipv4(&icmp[8..])?,
    })
}

/// Human name of an ICMPv4 type/code.
pub fn icmp_name(typ: u8, code: u8) -> String {
    let s = match (typ, code) {
        (0, _) => "echo reply",
        (3, 0) => "net unreachable",
        (3, 1) => "host unreachable",
        (3, 2) => "protocol unreachable",
        (3, 3) => "port unreachable",
        (3, 4) => "fragmentation needed",
        (3, 5) => "source route failed",
        (3, 9) | (3, 10) | (3, 13) => "administratively prohibited",
        (3, _) => "destination unreachable",
        (4, _) => "source quench",
        (5, _) => "redirect",
        (11, 0) => "TTL exceeded in transit",
        (11, _) => "time exceeded",
        (12, _) => "parameter problem",
        _ => "",
    };
    format!("ICMP {typ}/{code} {s}").trim_end().to_string()
}

/// Human name of an ICMPv6 type/code.
pub fn icmp6_name(typ: u8, code: u8) -> String {
    let s = match (typ, code) {
        (1, 0) => "no route",
        (1, 1) => "administratively prohibited",
        (1, 3) => "address unreachable",
        (1, 4) => "port unreachable",
        (1, _) => "destination unreachable",
        (2, _) => "packet too big",
        (3, _) => "time exceeded",
        (4, _) => "parameter problem",
        (129, _) => "echo reply",
        (134, _) => "router advertisement",
        (136, _) => "neighbour advertisement",
        _ => "",
    };
    format!("ICMPv6 {typ}/{code} {s}").trim_end().to_string()
}

/// A DNS query for `name` (one question, recursion desired).
pub fn dns_query(id: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(17 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD=1 AN=NS=AR=0
    for label in name.trim_end_matches('.').split('.') {
        let l = &label.as_bytes()[..label.len().min(63)];
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

pub const DNS_A: u16 = 1;
pub const DNS_PTR: u16 = 12;
pub const DNS_IN: u16 = 1;

/// The parts of a DNS message the probe reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    pub qname: String,
    pub qtype: u16,
    pub ancount: u16,
    /// A records found among the answers.
    pub a: Vec<Ipv4Addr>,
}

/// Reads a (possibly compressed) name at `*i`, advancing `*i` past it.
fn dns_name(m: &[u8], i: &mut usize) -> Option<String> {
    let mut out = String::new();
    let mut pos = *i;
    let mut jumped = false;
    for _ in 0..128 {
        let len = *m.get(pos)?;
        if len & 0xc0 == 0xc0 {
            let ptr = usize::from(u16::from_be_bytes([len & 0x3f, *m.get(pos + 1)?]));
            if !jumped {
                *i = pos + 2;
                jumped = true;
            }
            pos = ptr;
            continue;
        }
        if len == 0 {
            if !jumped {
                *i = pos + 1;
            }
            return Some(out);
        }
        let label = m.get(pos + 1..pos + 1 + usize::from(len))?;
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&String::from_utf8_lossy(label));
        pos += 1 + usize::from(len);
    }
    None
}

/// Parses a DNS message (header, first question, A answers).
pub fn parse_dns(m: &[u8]) -> Option<Dns> {
    if m.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([m[0], m[1]]);
    let flags = u16::from_be_bytes([m[2], m[3]]);
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut i = 12;
    let (mut qname, mut qtype) = (String::new(), 0);
    for n in 0..qd {
        let name = dns_name(m, &mut i)?;
        let t = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
        i += 4;
        if n == 0 {
            qname = name;
            qtype = t;
        }
    }
    let mut a = Vec::new();
    for _ in 0..an {
        dns_name(m, &mut i)?;
        let rr = m.get(i..i + 10)?;
        let t = u16::from_be_bytes([rr[0], rr[1]]);
        let rdlen = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
        let rdata = m.get(i + 10..i + 10 + rdlen)?;
        if t == DNS_A && rdlen == 4 {
            a.push(ip4_at(rdata, 0));
        }
        i += 10 + rdlen;
    }
    Some(Dns {
        id,
        response: flags & 0x8000 != 0,
        rcode: (flags & 0x000f) as u8,
        qname,
        qtype,
        ancount: an,
        a,
    })
}

/// Name of a DNS response code.
pub fn rcode_name(r: u8) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

/// An NTPv4 client request (48 bytes, LI 0, VN 4, mode 3) carrying
/// `transmit` as its transmit timestamp (echoed back as "originate").
pub fn ntp_request(transmit: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23;
    p[40..48].copy_from_slice(&transmit.to_be_bytes());
    p
}

/// (mode, stratum) of an NTP packet.
pub fn parse_ntp(p: &[u8]) -> Option<(u8, u8)> {
    if p.len() < 48 {
        return None;
    }
    Some((p[0] & 7, p[1]))
}

pub const DHCP_DISCOVER: u8 = 1;
pub const DHCP_OFFER: u8 = 2;

/// A DHCPDISCOVER (BOOTP request, broadcast flag set), padded to 300 bytes.
pub fn dhcp_discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    p.extend_from_slice(&[53, 1, DHCP_DISCOVER]);
    p.extend_from_slice(&[61, 7, 1]);
    p.extend_from_slice(&mac);
    p.extend_from_slice(&[55, 4, 1, 3, 6, 15]);
    p.push(255);
    if p.len() < 300 {
        p.resize(300, 0);
    }
    p
}

/// Name of a DHCP message type.
pub fn dhcp_type_name(t: u8) -> &'static str {
    match t {
        DHCP_DISCOVER => "DHCPDISCOVER",
        DHCP_OFFER => "DHCPOFFER",
        3 => "DHCPREQUEST",
        5 => "DHCPACK",
        6 => "DHCPNAK",
        _ => "DHCP message",
    }
}

/// A DHCP answer: message type, offered address, server identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReply {
    pub msg_type: u8,
    pub yiaddr: Ipv4Addr,
    pub server: Option<Ipv4Addr>,
}

/// Parses a BOOTREPLY for transaction `xid`.
pub fn parse_dhcp_reply(p: &[u8], xid: u32) -> Option<DhcpReply> {
    if p.len() < 240
        || p[0] != 2
        || p[4..8] != xid.to_be_bytes()
        || p[236..240] != [99, 130, 83, 99]
    {
        return None;
    }
    let mut r = DhcpReply {
        msg_type: 0,
        yiaddr: ip4_at(p, 16),
        server: None,
    };
    let mut i = 240;
    while i < p.len() {
        match p[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*p.get(i + 1)?);
                let v = p.get(i + 2..i + 2 + len)?;
                match (code, len) {
                    (53, 1) => r.msg_type = v[0],
                    (54, 4) => r.server = Some(ip4_at(v, 0)),
                    _ => {}
                }
                i += 2 + len;
            }
        }
    }
    Some(r)
}

/// A DHCPv6 SOLICIT (client id DUID-LL from `mac`, elapsed time, an IA_NA).
pub fn dhcpv6_solicit(txid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![1u8]; // SOLICIT
    p.extend_from_slice(&txid.to_be_bytes()[1..4]);
    // Client Identifier: DUID-LL (type 3), hardware type 1.
    p.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1]);
    p.extend_from_slice(&mac);
    // Elapsed Time 0.
    p.extend_from_slice(&[0, 8, 0, 2, 0, 0]);
    // IA_NA: IAID 1, T1 0, T2 0.
    p.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    p
}

/// The EUI-64 link-local address of a MAC (RFC 4291 appendix A).
pub fn eui64_link_local(mac: [u8; 6]) -> Ipv6Addr {
    let b = [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    Ipv6Addr::from(b)
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut n = 0;
    for part in s.split(':') {
        if n == 6 || part.len() != 2 {
            return None;
        }
        m[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(m)
}

/// Formats a MAC as "aa:bb:cc:dd:ee:ff".
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn checksum_known_ipv4_header() {
        // The classic example header (192.168.0.1 -> 192.168.0.199, UDP,
        // TTL 64, id 0, DF), whose checksum is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(checksum(&h), 0, "a header with its checksum sums to 0");
        let built = ipv4(
            ip("192.168.0.1"),
            ip("192.168.0.199"),
            17,
            64,
            0,
            &[],
            &[0; 95],
        );
        assert_eq!(&built[..20], &h[..]);
    }

    #[test]
    fn checksum_odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[0x01, 0x02, 0x03]), !(0x0102u16 + 0x0300));
    }

    #[test]
    fn udp_checksum_known_answer() {
        // Pseudo-header 0a01+0203+0a64+0002+0011+000a = 0x1685;
        // header 03e8+270f+000a+0000 = 0x2b01; "hi" = 0x6869.
        // 0x1685+0x2b01+0x6869 = 0xa9ef, complement 0x5610.
        let u = udp(ip("10.1.2.3"), ip("10.100.0.2"), 1000, 9999, b"hi");
        assert_eq!(
            u,
            [0x03, 0xe8, 0x27, 0x0f, 0x00, 0x0a, 0x56, 0x10, b'h', b'i']
        );
    }

    #[test]
    fn tcp_syn_checksum_known_answer() {
        let t = tcp_syn(ip("10.1.2.1"), ip("10.100.0.2"), 40000, 8080, 0x0102_0304);
        assert_eq!(t.len(), 24);
        assert_eq!(t[12], 0x60);
        assert_eq!(t[13], 0x02);
        assert_eq!(u16::from_be_bytes([t[16], t[17]]), 0xc6f7);
    }

    #[test]
    fn icmp_echo_checksum_known_answer() {
        // ~(0x0800 + 0x1234 + 0x0001) = ~0x1a35 = 0xe5ca
        assert_eq!(
            icmp_echo(0x1234, 1, &[]),
            [8, 0, 0xe5, 0xca, 0x12, 0x34, 0, 1]
        );
        let e = icmp_echo(0x1234, 1, b"abc");
        assert_eq!(u16::from_be_bytes([e[2], e[3]]), 0x2168);
        assert_eq!(checksum(&e), 0);
    }

    #[test]
    fn ipv4_with_lsrr_option() {
        let opt = lsrr_option(&[ip("10.100.0.2")]);
        assert_eq!(opt, [0x83, 7, 4, 10, 100, 0, 2]);
        let p = ipv4(ip("10.1.2.3"), ip("10.1.2.1"), 17, 64, 7, &opt, b"xy");
        assert_eq!(p[0], 0x47, "IHL 7 words: 20 + 7 option bytes padded to 8");
        assert_eq!(&p[20..27], &opt[..]);
        assert_eq!(p[27], 0, "padding is End of Options List");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 30);
        assert_eq!(checksum(&p[..28]), 0);
        let v = parse_ipv4(&p).unwrap();
        assert_eq!(v.payload, b"xy");
        assert_eq!(v.dst, ip("10.1.2.1"));
    }

    #[test]
    fn icmp_error_quote_parses() {
        let inner = ipv4(
            ip("10.1.2.3"),
            ip("10.100.0.2"),
            17,
            1,
            0,
            &[],
            &udp(ip("10.1.2.3"), ip("10.100.0.2"), 1234, 9999, b"payload"),
        );
        let mut icmp = vec![11, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&inner[..28]);
        let e = parse_icmp_error(&icmp).unwrap();
        assert_eq!((e.typ, e.code), (11, 0));
        assert_eq!(e.quoted.proto, 17);
        assert_eq!(ports(e.quoted.payload), Some((1234, 9999)));
        assert_eq!(icmp_name(11, 0), "ICMP 11/0 TTL exceeded in transit");
    }

    #[test]
    fn dns_query_parses_back() {
        let q = dns_query(0xbeef, "outside.test", DNS_A, DNS_IN);
        assert_eq!(
            q,
            [
                0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'o', b'u', b't', b's', b'i',
                b'd', b'e', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1
            ]
        );
        let d = parse_dns(&q).unwrap();
        assert_eq!(d.id, 0xbeef);
        assert!(!d.response);
        assert_eq!(d.qname, "outside.test");
        assert_eq!(d.qtype, DNS_A);
        assert_eq!(d.ancount, 0);
    }

    #[test]
    fn dns_answer_with_compression_parses() {
        let mut r = dns_query(7, "outside.test", DNS_A, DNS_IN);
        r[2] = 0x81; // QR, RD
        r[3] = 0x80; // RA, NOERROR
        r[7] = 1; // ANCOUNT 1
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 100, 0, 2]);
        let d = parse_dns(&r).unwrap();
        assert!(d.response);
        assert_eq!(d.rcode, 0);
        assert_eq!(d.a, vec![ip("10.100.0.2")]);
        r[3] = 0x83;
        assert_eq!(rcode_name(parse_dns(&r).unwrap().rcode), "NXDOMAIN");
        assert!(parse_dns(&r[..r.len() - 1]).is_none(), "truncated answer");
    }

    #[test]
    fn dns_pointer_loop_is_rejected() {
        let mut r = dns_query(7, "a", DNS_A, DNS_IN);
        r[12] = 0xc0;
        r[13] = 12; // points at itself
        assert!(parse_dns(&r).is_none());
    }

    #[test]
    fn ntp_request_layout() {
        let p = ntp_request(0x0102_0304_0506_0708);
        assert_eq!(p.len(), 48);
        assert_eq!(p[0], 0x23, "LI 0, version 4, mode 3 (client)");
        assert_eq!(&p[40..48], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parse_ntp(&p), Some((3, 0)));
    }

    #[test]
    fn arp_frame_round_trip() {
        let me = [0, 0x11, 0x22, 0x33, 0x44, 0x55];
        let a = arp(ARP_REPLY, me, ip("10.1.2.1"), BROADCAST_MAC, ip("10.1.2.1"));
        assert_eq!(a.len(), 28);
        let f = ethernet(BROADCAST_MAC, me, ETHERTYPE_ARP, &a);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        let p = parse_arp_frame(&f).unwrap();
        assert_eq!(p.op, ARP_REPLY);
        assert_eq!(p.sha, me);
        assert_eq!(p.spa, ip("10.1.2.1"));
        assert_eq!(p.tpa, ip("10.1.2.1"));
    }

    #[test]
    fn dhcp_discover_and_offer() {
        let mac = [0, 0x11, 0x22, 0x33, 0x44, 0x55];
        let d = dhcp_discover(0xdead_beef, mac);
        assert_eq!(d.len(), 300);
        assert_eq!(&d[..4], &[1, 1, 6, 0]);
        assert_eq!(&d[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&d[28..34], &mac);
        assert_eq!(&d[236..243], &[99, 130, 83, 99, 53, 1, 1]);
        assert!(
            parse_dhcp_reply(&d, 0xdead_beef).is_none(),
            "a request is no reply"
        );
        let mut o = d.clone();
        o[0] = 2;
        o[16..20].copy_from_slice(&[10, 1, 2, 50]);
        o[242] = DHCP_OFFER;
        o[243..249].copy_from_slice(&[54, 4, 10, 1, 2, 1]);
        o[249] = 255;
        let r = parse_dhcp_reply(&o, 0xdead_beef).unwrap();
        assert_eq!(r.msg_type, DHCP_OFFER);
        assert_eq!(r.yiaddr, ip("10.1.2.50"));
        assert_eq!(r.server, Some(ip("10.1.2.1")));
        assert!(parse_dhcp_reply(&o, 1).is_none(), "other transaction");
    }

    #[test]
    fn dhcpv6_solicit_layout() {
        let p = dhcpv6_solicit(0x00ab_cdef, [0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(&p[..4], &[1, 0xab, 0xcd, 0xef]);
        assert_eq!(&p[4..8], &[0, 1, 0, 10], "client id option, 10 bytes");
        assert_eq!(p.len(), 4 + 14 + 6 + 16);
    }

    #[test]
    fn eui64_of_gateway_mac() {
        let m = parse_mac("00:55:44:33:22:11").unwrap();
        assert_eq!(
            eui64_link_local(m),
            "fe80::255:44ff:fe33:2211".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(fmt_mac(&m), "00:55:44:33:22:11");
        assert!(parse_mac("00:55:44:33:22").is_none());
        assert!(parse_mac("00:55:44:33:22:11:00").is_none());
        assert!(parse_mac("00:55:44:33:22:zz").is_none());
    }

    #[test]
    fn router_solicit_layout() {
        let m = icmpv6_router_solicit([2, 0, 0, 0, 0, 0x99]);
        assert_eq!(m.len(), 16);
        assert_eq!(m[0], 133);
        assert_eq!(&m[8..10], &[1, 1]);
    }
}
