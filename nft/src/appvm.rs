//! The App VM's ruleset: table `inet tails_appvm`.
//!
//! What it enforces (DESIGN.md, "App VM"): the App VM talks only through the
//! Tor VM. Out: DNS to the gateway (10.1.2.1), and TCP to addresses beyond
//! the internal link, which are routed through the gateway and turned into
//! tor connections there; nothing else (no UDP elsewhere, no ICMP, no
//! broadcast or multicast, nothing to other hosts on the link). In: only
//! replies, and new TCP connections from the gateway to the published
//! services' ports. No IPv6.
//!
//! This is defence in depth: a root-compromised App VM can drop the table.
//! The Tor VM's and the host's rulesets are what hold then.

use std::net::Ipv4Addr;

use nftables::schema::Nftables;
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::dsl::*;

/// The table's family.
pub const FAMILY: &str = "inet";
/// The table's name: the only table the App VM agent owns.
pub const TABLE: &str = "tails_appvm";

/// What the ruleset depends on.
#[derive(Debug, Clone)]
pub struct Params<'a> {
    /// The only NIC (e.g. "eth0").
    pub iface: &'a str,
    /// The App VM's address (10.1.2.3).
    pub addr: Ipv4Addr,
    /// Prefix length of the internal link (24).
    pub prefix: u8,
    /// The gateway: the Tor VM (10.1.2.1).
    pub gateway: Ipv4Addr,
    /// TCP ports the gateway (tor, for the onion services) may connect to.
    pub service_ports: Vec<u16>,
}

/// The whole table as one batch of `add` commands.
///
/// In nft's text form (service ports 80 and 5222):
/// ```text
/// table inet tails_appvm {
///   chain input { type filter hook input priority filter; policy drop;
///     meta nfproto ipv6 drop
///     iif "lo" accept
///     ct state invalid drop
///     ct state established,related accept
///     iifname "eth0" ip saddr 10.1.2.1 ip daddr 10.1.2.3 tcp dport { 80, 5222 } accept }
///   chain forward { type filter hook forward priority filter; policy drop; }
///   chain output { type filter hook output priority filter; policy drop;
///     meta nfproto ipv6 drop
///     oif "lo" accept
///     ct state invalid drop
///     ct state established,related accept
///     oifname "eth0" ip saddr 10.1.2.3 ip daddr 10.1.2.1 udp dport 53 accept
///     oifname "eth0" ip saddr 10.1.2.3 ip daddr != 10.1.2.0/24 meta l4proto tcp accept }
/// }
/// ```
pub fn ruleset(p: &Params) -> Nftables<'static> {
    let mut t = TableBuilder::new(NfFamily::INet, TABLE);
    for (name, hook) in [
        ("input", NfHook::Input),
        ("forward", NfHook::Forward),
        ("output", NfHook::Output),
    ] {
        t.chain(
            name,
            Some(Base {
                ty: NfChainType::Filter,
                hook,
                prio: PRIO_FILTER,
                policy: NfChainPolicy::Drop,
            }),
        );
    }
    let with = |mut head: Vec<_>, tail: Vec<_>| {
        head.extend(tail);
        head
    };

    t.rule("input", vec![nfproto_ipv6(), drop()]);
    t.rule("input", vec![iif("lo"), accept()]);
    t.rule("input", vec![ct_state(&["invalid"]), drop()]);
    t.rule(
        "input",
        vec![ct_state(&["established", "related"]), accept()],
    );
    if !p.service_ports.is_empty() {
        let ports = p.service_ports.iter().map(|n| port(*n)).collect();
        t.rule(
            "input",
            vec![
                iifname(p.iface),
                ip_saddr(p.gateway),
                ip_daddr(p.addr),
                tcp_dport_in(set(ports)),
                accept(),
            ],
        );
    }

    let out = || vec![oifname(p.iface), ip_saddr(p.addr)];
    t.rule("output", vec![nfproto_ipv6(), drop()]);
    t.rule("output", vec![oif("lo"), accept()]);
    t.rule("output", vec![ct_state(&["invalid"]), drop()]);
    t.rule(
        "output",
        vec![ct_state(&["established", "related"]), accept()],
    );
    t.rule(
        "output",
        with(out(), vec![ip_daddr(p.gateway), udp_dport(53), accept()]),
    );
    let link = crate::host::Net {
        addr: p.addr.into(),
        len: p.prefix,
    };
    t.rule(
        "output",
        with(
            out(),
            vec![
                ip_daddr_not(net(link.network(), p.prefix)),
                l4proto("tcp"),
                accept(),
            ],
        ),
    );
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{m, meta, payload};
    use serde_json::{json, Value};

    fn rules(v: &Value, chain: &str) -> Vec<Vec<Value>> {
        crate::testutil::rules(v, TABLE, chain)
    }

    fn params(ports: &[u16]) -> Params<'static> {
        Params {
            iface: "eth0",
            addr: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 1, 2, 1),
            service_ports: ports.to_vec(),
        }
    }

    #[test]
    fn policies_drop_everywhere() {
        let v = serde_json::to_value(ruleset(&params(&[]))).unwrap();
        let chains = crate::testutil::chains(&v);
        assert_eq!(chains.len(), 3);
        for c in chains {
            assert_eq!(c["policy"], "drop", "{c}");
            assert_eq!(c["type"], "filter");
        }
        assert!(rules(&v, "forward").is_empty());
    }

    #[test]
    fn out_only_dns_to_gateway_and_tcp_beyond_the_link() {
        let v = serde_json::to_value(ruleset(&params(&[80]))).unwrap();
        let out = rules(&v, "output");
        assert_eq!(
            out[0],
            vec![meta("nfproto", json!("ipv6")), json!({"drop": null})]
        );
        let accepts: Vec<_> = out
            .iter()
            .filter(|r| r.last() == Some(&json!({"accept": null})))
            .collect();
        assert_eq!(accepts.len(), 4, "lo, established, DNS, TCP");
        assert_eq!(
            accepts[2],
            &vec![
                meta("oifname", json!("eth0")),
                payload("ip", "saddr", json!("10.1.2.3")),
                payload("ip", "daddr", json!("10.1.2.1")),
                payload("udp", "dport", json!(53)),
                json!({"accept": null}),
            ]
        );
        assert_eq!(
            accepts[3],
            &vec![
                meta("oifname", json!("eth0")),
                payload("ip", "saddr", json!("10.1.2.3")),
                m(
                    json!({"payload": {"protocol": "ip", "field": "daddr"}}),
                    "!=",
                    json!({"prefix": {"addr": "10.1.2.0", "len": 24}})
                ),
                meta("l4proto", json!("tcp")),
                json!({"accept": null}),
            ]
        );
        assert!(!v.to_string().contains("icmp"));
    }

    #[test]
    fn in_only_replies_and_service_ports_from_the_gateway() {
        let v = serde_json::to_value(ruleset(&params(&[80, 5222]))).unwrap();
        let input = rules(&v, "input");
        assert_eq!(input.len(), 5);
        assert_eq!(
            input[4],
            vec![
                meta("iifname", json!("eth0")),
                payload("ip", "saddr", json!("10.1.2.1")),
                payload("ip", "daddr", json!("10.1.2.3")),
                payload("tcp", "dport", json!({"set": [80, 5222]})),
                json!({"accept": null}),
            ]
        );
        let none = serde_json::to_value(ruleset(&params(&[]))).unwrap();
        assert_eq!(rules(&none, "input").len(), 4, "no service, no new inbound");
    }
}
