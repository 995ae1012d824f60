//! The host's ruleset: table `inet tails_server`.
//!
//! What it enforces (DESIGN.md, "Host"): the Tor VM's QEMU (its user-mode
//! network, i.e. the sockets QEMU opens on the host for the guest) may open
//! TCP only, and never to the host itself, loopback, link-local, private,
//! shared, multicast or reserved ranges, except the upstreams configured for
//! this run (the testnet's subnet, a bridge on the LAN); the App VM's QEMU and
//! vhost-device-vsock may send no inet traffic at all. Everything else on the
//! host is left alone: the output chain has policy accept and only judges
//! packets of those users' sockets.
//!
//! The input chain (policy accept too) judges only the relay's ports
//! (allow-localhost, allow-lan: see the host's `relay` module): a
//! localhost-only port is reached only through lo, a LAN port only from
//! local ranges. The relay checks its peers itself; this is the second wall.
//!
//! The table lives as long as the stack (`up` applies it before the Tor VM
//! starts and refuses to go on if it cannot; `down` removes it). A daemon that
//! dies leaves it in place: the QEMUs it leaves behind stay fenced in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nftables::schema::Nftables;
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::dsl::*;

/// The table's family.
pub const FAMILY: &str = crate::HOST_FAMILY;
/// The table's name.
pub const TABLE: &str = crate::HOST_TABLE;

/// IPv4 destinations the Tor VM's QEMU never reaches (unless an upstream says
/// otherwise): "this network", RFC 1918, shared address space (CGNAT),
/// loopback, link-local, IETF protocol assignments, benchmarking, multicast,
/// reserved and broadcast.
pub const BLOCKED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 destinations never reached: unspecified, loopback, IPv4-mapped,
/// unique-local, link-local, site-local (deprecated, but slirp's fec0::) and
/// multicast.
pub const BLOCKED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// IPv4 sources a LAN relay port accepts: RFC 1918, link-local, loopback
/// (not the ISP's shared address space).
pub const LAN_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
];

/// IPv6 sources a LAN relay port accepts: unique-local, link-local, loopback.
pub const LAN_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    (Ipv6Addr::LOCALHOST, 128),
];

/// A network, `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl serde::Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Net {
    type Err = String;

    /// `10.100.0.0/24`, `192.0.2.7` (a /32), `2001:db8::/32`. Host bits must
    /// be zero, so that what is written is what is allowed.
    fn from_str(s: &str) -> Result<Net, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network like 10.100.0.0/24"))?;
        let full: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => full,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= full && !l.starts_with('+') => n,
                _ => return Err(format!("{s:?}: prefix length must be 0 to {full}")),
            },
        };
        let net = Net { addr, len };
        if net.network() != addr {
            return Err(format!(
                "{s:?} has host bits set: did you mean {}/{len}?",
                net.network()
            ));
        }
        Ok(net)
    }
}

impl Net {
    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

/// What the ruleset depends on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// uid of the Tor VM's QEMU (user tails-torvm).
    pub torvm_uid: u32,
    /// uids that may send no inet traffic at all: the App VM's QEMU,
    /// vhost-device-vsock.
    pub no_inet_uids: Vec<u32>,
    /// Networks the Tor VM's QEMU may reach although they are in a blocked
    /// range (the testnet's subnet, a LAN bridge). TCP only, like the rest.
    pub upstreams: Vec<Net>,
    /// TCP ports the host's relay listens on for this computer only
    /// (allow-localhost): reached only through lo.
    #[serde(default)]
    pub relay_localhost: Vec<u16>,
    /// TCP ports the host's relay listens on for the local network
    /// (allow-lan): reached only from [`LAN_V4`] / [`LAN_V6`]. A port in both
    /// lists follows this rule (loopback is in those ranges).
    #[serde(default)]
    pub relay_lan: Vec<u16>,
}

/// The whole table as one batch of `add` commands.
///
/// In nft's text form (tails-torvm 990, tails-appvm 991, tails-vsock 989,
/// upstream 10.100.0.0/24, relay ports 8080 for this computer, 5222 for the
/// LAN):
/// ```text
/// table inet tails_server {
///   chain input { type filter hook input priority filter; policy accept;
///     tcp dport 8080 iifname != "lo" counter drop
///     tcp dport 5222 ip saddr != { 10.0.0.0/8, …, 127.0.0.0/8 } counter drop
///     tcp dport 5222 ip6 saddr != { fc00::/7, fe80::/10, ::1 } counter drop }
///   chain output { type filter hook output priority filter; policy accept;
///     meta skuid { 991, 989 } counter drop
///     meta skuid 990 jump torvm }
///   chain torvm {
///     meta l4proto != tcp counter drop
///     oif "lo" counter drop
///     ip daddr 10.100.0.0/24 accept
///     ip daddr { 0.0.0.0/8, 10.0.0.0/8, … } counter drop
///     ip6 daddr { ::, ::1, … } counter drop
///     accept }
/// }
/// ```
/// `oif "lo"` catches every destination that is the host itself, whatever
/// its address (a LAN address of the host routes through lo too), so even an
/// upstream network that contains a host address does not open the host.
pub fn ruleset(p: &Params) -> Nftables<'static> {
    let mut t = TableBuilder::new(NfFamily::INet, TABLE);
    t.chain(
        "input",
        Some(Base {
            ty: NfChainType::Filter,
            hook: NfHook::Input,
            prio: PRIO_FILTER,
            policy: NfChainPolicy::Accept,
        }),
    );
    t.chain(
        "output",
        Some(Base {
            ty: NfChainType::Filter,
            hook: NfHook::Output,
            prio: PRIO_FILTER,
            policy: NfChainPolicy::Accept,
        }),
    );
    t.chain("torvm", None);

    if !p.no_inet_uids.is_empty() {
        let uids = p.no_inet_uids.iter().map(|u| uid(*u)).collect();
        t.rule("output", vec![skuid_in(set(uids)), counter(), drop()]);
    }
    t.rule("output", vec![skuid(p.torvm_uid), jump("torvm")]);

    t.rule("torvm", vec![l4proto_not("tcp"), counter(), drop()]);
    t.rule("torvm", vec![oif("lo"), counter(), drop()]);
    let (up4, up6): (Vec<&Net>, Vec<&Net>) = p.upstreams.iter().partition(|n| n.addr.is_ipv4());
    if !up4.is_empty() {
        let nets = up4.iter().map(|n| net(n.network(), n.len)).collect();
        t.rule("torvm", vec![ip_daddr_in(set(nets)), accept()]);
    }
    if !up6.is_empty() {
        let nets = up6.iter().map(|n| net(n.network(), n.len)).collect();
        t.rule("torvm", vec![ip6_daddr_in(set(nets)), accept()]);
    }
    let v4 = BLOCKED_V4
        .iter()
        .map(|(a, l)| net((*a).into(), *l))
        .collect();
    t.rule("torvm", vec![ip_daddr_in(set(v4)), counter(), drop()]);
    let v6 = BLOCKED_V6
        .iter()
        .map(|(a, l)| net((*a).into(), *l))
        .collect();
    t.rule("torvm", vec![ip6_daddr_in(set(v6)), counter(), drop()]);
    t.rule("torvm", vec![accept()]);
    relay_rules(&mut t, p);
    t.finish()
}

/// The input chain's rules for the relay's ports. Sorted and without
/// duplicates; a rule whose port list is empty is left out (nft refuses an
/// empty anonymous set).
fn relay_rules(t: &mut TableBuilder, p: &Params) {
    use std::collections::BTreeSet;
    let lan: BTreeSet<u16> = p.relay_lan.iter().copied().collect();
    let local_only: BTreeSet<u16> = p
        .relay_localhost
        .iter()
        .copied()
        .filter(|n| !lan.contains(n))
        .collect();
    let ports = |s: &BTreeSet<u16>| set(s.iter().map(|n| port(*n)).collect());
    if !local_only.is_empty() {
        t.rule(
            "input",
            vec![
                tcp_dport_in(ports(&local_only)),
                iifname_not("lo"),
                counter(),
                drop(),
            ],
        );
    }
    if !lan.is_empty() {
        let v4 = LAN_V4.iter().map(|(a, l)| net((*a).into(), *l)).collect();
        t.rule(
            "input",
            vec![
                tcp_dport_in(ports(&lan)),
                ip_saddr_not(set(v4)),
                counter(),
                drop(),
            ],
        );
        let v6 = LAN_V6.iter().map(|(a, l)| net((*a).into(), *l)).collect();
        t.rule(
            "input",
            vec![
                tcp_dport_in(ports(&lan)),
                ip6_saddr_not(set(v6)),
                counter(),
                drop(),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{m, payload};
    use serde_json::{json, Value};

    fn rules(v: &Value, chain: &str) -> Vec<Vec<Value>> {
        crate::testutil::rules(v, TABLE, chain)
    }

    fn params() -> Params {
        Params {
            torvm_uid: 990,
            no_inet_uids: vec![991, 989],
            upstreams: vec!["10.100.0.0/24".parse().unwrap()],
            relay_localhost: Vec::new(),
            relay_lan: Vec::new(),
        }
    }

    #[test]
    fn nets_parse_strictly() {
        let n: Net = "10.100.0.0/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.100.0.0/24");
        assert_eq!("192.0.2.7".parse::<Net>().unwrap().len, 32);
        assert_eq!("2001:db8::/32".parse::<Net>().unwrap().len, 32);
        assert_eq!("0.0.0.0/0".parse::<Net>().unwrap().len, 0);
        for bad in [
            "10.100.0.1/24",
            "10.100.0.0/33",
            "10.100.0.0/+8",
            "10.100.0/24",
            "x",
            "",
            "2001:db8::1/32",
        ] {
            assert!(bad.parse::<Net>().is_err(), "{bad}");
        }
        let e = "10.100.0.1/24".parse::<Net>().unwrap_err();
        assert!(e.contains("did you mean 10.100.0.0/24"), "{e}");
    }

    #[test]
    fn output_chain_accepts_by_default_and_judges_only_our_users() {
        let v = serde_json::to_value(ruleset(&params())).unwrap();
        let chains = crate::testutil::chains(&v);
        assert_eq!(chains.len(), 3);
        assert_eq!(chains[0]["name"], "input");
        assert_eq!(chains[0]["hook"], "input");
        assert_eq!(chains[0]["policy"], "accept");
        assert_eq!(chains[1]["name"], "output");
        assert_eq!(chains[1]["hook"], "output");
        assert_eq!(chains[1]["policy"], "accept");
        assert_eq!(chains[2]["name"], "torvm");
        assert!(chains[2].get("hook").is_none(), "torvm is a regular chain");

        let out = rules(&v, "output");
        assert_eq!(
            out,
            vec![
                vec![
                    m(
                        json!({"meta": {"key": "skuid"}}),
                        "==",
                        json!({"set": [991, 989]})
                    ),
                    json!({"counter": null}),
                    json!({"drop": null})
                ],
                vec![
                    m(json!({"meta": {"key": "skuid"}}), "==", json!(990)),
                    json!({"jump": {"target": "torvm"}})
                ],
            ]
        );
    }

    #[test]
    fn torvm_tcp_only_never_local_upstreams_before_blocks() {
        let v = serde_json::to_value(ruleset(&params())).unwrap();
        let r = rules(&v, "torvm");
        assert_eq!(
            r[0][0],
            m(json!({"meta": {"key": "l4proto"}}), "!=", json!("tcp"))
        );
        assert_eq!(r[0].last().unwrap(), &json!({"drop": null}));
        assert_eq!(
            r[1][0],
            m(json!({"meta": {"key": "oif"}}), "==", json!("lo"))
        );
        assert_eq!(r[1].last().unwrap(), &json!({"drop": null}));
        // The upstream is accepted after the TCP-only and host rules, before
        // the private ranges are dropped.
        assert_eq!(
            r[2],
            vec![
                m(
                    json!({"payload": {"protocol": "ip", "field": "daddr"}}),
                    "==",
                    json!({"prefix": {"addr": "10.100.0.0", "len": 24}})
                ),
                json!({"accept": null})
            ]
        );
        let blocked4 = r[3][0]["match"]["right"]["set"].as_array().unwrap();
        assert_eq!(blocked4.len(), BLOCKED_V4.len());
        for needed in [
            "127.0.0.0",
            "10.0.0.0",
            "192.168.0.0",
            "169.254.0.0",
            "172.16.0.0",
        ] {
            assert!(
                blocked4.iter().any(|p| p["prefix"]["addr"] == needed),
                "{needed}"
            );
        }
        assert_eq!(r[3].last().unwrap(), &json!({"drop": null}));
        let blocked6 = r[4][0]["match"]["right"]["set"].as_array().unwrap();
        assert!(blocked6.contains(&json!("::1")));
        assert!(blocked6.contains(&json!({"prefix": {"addr": "fe80::", "len": 10}})));
        assert_eq!(r[5], vec![json!({"accept": null})]);
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn no_upstream_no_exception() {
        let mut p = params();
        p.upstreams.clear();
        let v = serde_json::to_value(ruleset(&p)).unwrap();
        let r = rules(&v, "torvm");
        assert_eq!(r.len(), 5);
        assert!(!v.to_string().contains("10.100.0.0"));
        assert!(r
            .iter()
            .all(|rule| rule.last() != Some(&json!({"accept": null})) || rule.len() == 1));
    }

    #[test]
    fn no_relay_port_leaves_the_input_chain_empty() {
        let v = serde_json::to_value(ruleset(&params())).unwrap();
        assert!(rules(&v, "input").is_empty());
    }

    #[test]
    fn localhost_relay_ports_are_reached_only_through_lo() {
        let mut p = params();
        p.relay_localhost = vec![8080, 6667, 8080];
        let v = serde_json::to_value(ruleset(&p)).unwrap();
        assert_eq!(
            rules(&v, "input"),
            vec![vec![
                payload("tcp", "dport", json!({"set": [6667, 8080]})),
                m(json!({"meta": {"key": "iifname"}}), "!=", json!("lo")),
                json!({"counter": null}),
                json!({"drop": null}),
            ]]
        );
    }

    #[test]
    fn lan_relay_ports_are_reached_only_from_local_ranges() {
        let mut p = params();
        p.relay_lan = vec![5222];
        let v = serde_json::to_value(ruleset(&p)).unwrap();
        let r = rules(&v, "input");
        assert_eq!(r.len(), 2);
        for rule in &r {
            assert_eq!(rule[0], payload("tcp", "dport", json!(5222)));
            assert_eq!(rule[1]["match"]["op"], "!=");
            assert_eq!(rule[2..], [json!({"counter": null}), json!({"drop": null})]);
        }
        assert_eq!(r[0][1]["match"]["left"]["payload"]["protocol"], "ip");
        assert_eq!(r[0][1]["match"]["left"]["payload"]["field"], "saddr");
        let v4 = r[0][1]["match"]["right"]["set"].as_array().unwrap();
        let v4: Vec<String> = v4
            .iter()
            .map(|n| {
                format!(
                    "{}/{}",
                    n["prefix"]["addr"].as_str().unwrap(),
                    n["prefix"]["len"]
                )
            })
            .collect();
        assert_eq!(
            v4,
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "127.0.0.0/8"
            ]
        );
        assert!(
            !json!(r).to_string().contains("100.64.0.0"),
            "CGNAT is not the LAN"
        );
        assert_eq!(r[1][1]["match"]["left"]["payload"]["protocol"], "ip6");
        assert_eq!(
            r[1][1]["match"]["right"],
            json!({"set": [
                {"prefix": {"addr": "fc00::", "len": 7}},
                {"prefix": {"addr": "fe80::", "len": 10}},
                "::1"
            ]})
        );
    }

    #[test]
    fn a_port_in_both_lists_follows_the_lan_rule() {
        let mut p = params();
        p.relay_localhost = vec![8080, 5222];
        p.relay_lan = vec![5222, 64738];
        let v = serde_json::to_value(ruleset(&p)).unwrap();
        let r = rules(&v, "input");
        assert_eq!(r.len(), 3);
        assert_eq!(r[0][0], payload("tcp", "dport", json!(8080)));
        assert_eq!(
            r[0][1]["match"]["left"],
            json!({"meta": {"key": "iifname"}})
        );
        for rule in &r[1..] {
            assert_eq!(
                rule[0],
                payload("tcp", "dport", json!({"set": [5222, 64738]}))
            );
        }

        // Only LAN ports: no lo rule at all.
        p.relay_localhost = vec![5222];
        let v = serde_json::to_value(ruleset(&p)).unwrap();
        let r = rules(&v, "input");
        assert_eq!(r.len(), 2);
        assert!(!json!(r).to_string().contains("iifname"));
    }

    #[test]
    fn params_without_relay_ports_still_parse() {
        let old = json!({"torvm_uid": 990, "no_inet_uids": [991], "upstreams": []});
        let p: Params = serde_json::from_value(old).unwrap();
        assert!(p.relay_localhost.is_empty() && p.relay_lan.is_empty());
    }

    #[test]
    fn single_and_v6_upstreams() {
        let mut p = params();
        p.upstreams = vec![
            "192.168.1.20".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ];
        let v = serde_json::to_value(ruleset(&p)).unwrap();
        let r = rules(&v, "torvm");
        assert_eq!(r[2][0]["match"]["right"], json!("192.168.1.20"));
        assert_eq!(
            r[3][0]["match"]["right"],
            json!({"prefix": {"addr": "fd00:1::", "len": 64}})
        );
        assert_eq!(r[3][0]["match"]["left"]["payload"]["protocol"], "ip6");
    }
}
