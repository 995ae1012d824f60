//! The Tor VM's ruleset: table `inet tails_torvm`.
//!
//! What it enforces (DESIGN.md, "Tor VM"): nothing is forwarded; the App VM
//! reaches only tor's TransPort and DNSPort on the Tor VM's internal address,
//! all its TCP and its DNS being transparently redirected there; only the tor
//! user may open connections, TCP only, out of the uplink (and to the App VM's
//! services, for the onion services); nothing new is accepted from the uplink;
//! no IPv6 at all.
//!
//! Interfaces other than lo are matched by name (`iifname`/`oifname`), so the
//! ruleset loads whether or not the NICs are up yet and whatever their index.

use std::net::Ipv4Addr;

use nftables::schema::Nftables;
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::dsl::*;

/// The table's family.
pub const FAMILY: &str = "inet";
/// The table's name: the only table the Tor VM agent owns.
pub const TABLE: &str = "tails_torvm";

/// What the ruleset depends on.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// NIC on the internal link to the App VM (e.g. "eth0").
    pub internal_if: &'a str,
    /// NIC to the outside (QEMU user-mode net); None when the VM has no uplink.
    pub uplink_if: Option<&'a str>,
    /// The Tor VM's address on the internal link (10.1.2.1).
    pub torvm_addr: Ipv4Addr,
    /// The App VM's address (10.1.2.3).
    pub appvm_addr: Ipv4Addr,
    /// tor's TransPort (9040), bound on `torvm_addr`.
    pub trans_port: u16,
    /// tor's DNSPort (5353), bound on `torvm_addr`.
    pub dns_port: u16,
    /// uid of the debian-tor user: the only one that may open connections.
    pub tor_uid: u32,
}

/// The whole table as one batch of `add` commands (table, chains, rules).
///
/// Give it to [`crate::apply`], which replaces any previous version of the
/// table atomically, or to [`crate::check`].
///
/// In nft's text form (uplink "eth1"):
/// ```text
/// table inet tails_torvm {
///   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
///     iifname "eth0" ip saddr 10.1.2.3 ip daddr != 10.1.2.1 meta l4proto tcp redirect to :9040
///     iifname "eth0" ip saddr 10.1.2.3 udp dport 53 redirect to :5353 }
///   chain input { type filter hook input priority filter; policy drop;
///     meta nfproto ipv6 drop
///     iif "lo" accept
///     ct state invalid drop
///     ct state established,related accept
///     iifname "eth0" ip saddr 10.1.2.3 ip daddr 10.1.2.1 ct status dnat tcp dport 9040 accept
///     iifname "eth0" ip saddr 10.1.2.3 ip daddr 10.1.2.1 ct status dnat udp dport 5353 accept }
///   chain forward { type filter hook forward priority filter; policy drop;
///     meta nfproto ipv6 drop }
///   chain output { type filter hook output priority filter; policy drop;
///     meta nfproto ipv6 drop
///     oif "lo" accept
///     ct state invalid drop
///     ct state established,related accept
///     oifname "eth0" ip saddr 10.1.2.1 ip daddr 10.1.2.3 meta skuid 101 meta l4proto tcp ct state new accept
///     oifname "eth1" meta skuid 101 meta l4proto tcp ct state new accept }
/// }
/// ```
///
/// The App VM reaches nothing of the Tor VM's own: not tor's TransPort or
/// DNSPort addressed directly (only `ct status dnat`, i.e. what the
/// redirects made), not its control socket, not ICMP. Its TCP to any other
/// address goes into tor; its DNS, to whatever resolver, into the DNSPort.
pub fn ruleset(p: &Params) -> Nftables<'static> {
    let mut t = TableBuilder::new(NfFamily::INet, TABLE);
    let filter = |hook| {
        Some(Base {
            ty: NfChainType::Filter,
            hook,
            prio: PRIO_FILTER,
            policy: NfChainPolicy::Drop,
        })
    };
    t.chain(
        "prerouting",
        Some(Base {
            ty: NfChainType::NAT,
            hook: NfHook::Prerouting,
            prio: PRIO_DSTNAT,
            policy: NfChainPolicy::Accept,
        }),
    );
    t.chain("input", filter(NfHook::Input));
    t.chain("forward", filter(NfHook::Forward));
    t.chain("output", filter(NfHook::Output));

    // The App VM, as seen arriving on the internal link.
    let from_appvm = || vec![iifname(p.internal_if), ip_saddr(p.appvm_addr)];
    let with = |mut head: Vec<_>, tail: Vec<_>| {
        head.extend(tail);
        head
    };

    // prerouting: the transparent proxy. NAT chains see only a connection's
    // first packet, so replies to tor's own connections to the App VM (the
    // onion services) are never redirected.
    t.rule(
        "prerouting",
        with(
            from_appvm(),
            vec![
                ip_daddr_not(net(p.torvm_addr.into(), 32)),
                l4proto("tcp"),
                redirect_to(p.trans_port),
            ],
        ),
    );
    t.rule(
        "prerouting",
        with(from_appvm(), vec![udp_dport(53), redirect_to(p.dns_port)]),
    );

    // Belt and braces: IPv6 is off by sysctl as well.
    for chain in ["input", "forward", "output"] {
        t.rule(chain, vec![nfproto_ipv6(), drop()]);
    }

    // input: after the redirect, the App VM's packets are addressed to
    // torvm_addr:trans_port / dns_port. Nothing new from the uplink.
    t.rule("input", vec![iif("lo"), accept()]);
    t.rule("input", vec![ct_state(&["invalid"]), drop()]);
    t.rule(
        "input",
        vec![ct_state(&["established", "related"]), accept()],
    );
    let redirected = || with(from_appvm(), vec![ip_daddr(p.torvm_addr), ct_status_dnat()]);
    t.rule(
        "input",
        with(redirected(), vec![tcp_dport(p.trans_port), accept()]),
    );
    t.rule(
        "input",
        with(redirected(), vec![udp_dport(p.dns_port), accept()]),
    );

    // forward: nothing (policy drop, and the IPv6 rule above).

    // output: replies (to the App VM's redirected connections)
    // are established; new connections only from tor, TCP only.
    t.rule("output", vec![oif("lo"), accept()]);
    t.rule("output", vec![ct_state(&["invalid"]), drop()]);
    t.rule(
        "output",
        vec![ct_state(&["established", "related"]), accept()],
    );
    let tor_opens_tcp = || vec![skuid(p.tor_uid), l4proto("tcp"), ct_state(&["new"])];
    // The onion services: tor connects to the App VM's services over the
    // internal link (DESIGN.md, "Control and data paths").
    t.rule(
        "output",
        with(
            vec![
                oifname(p.internal_if),
                ip_saddr(p.torvm_addr),
                ip_daddr(p.appvm_addr),
            ],
            with(tor_opens_tcp(), vec![accept()]),
        ),
    );
    if let Some(uplink) = p.uplink_if {
        t.rule(
            "output",
            with(vec![oifname(uplink)], with(tor_opens_tcp(), vec![accept()])),
        );
    }

    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const UPLINK: &str = "uplink7";

    fn params(uplink: Option<&str>) -> Params<'_> {
        Params {
            internal_if: "eth0",
            uplink_if: uplink,
            torvm_addr: Ipv4Addr::new(10, 1, 2, 1),
            appvm_addr: Ipv4Addr::new(10, 1, 2, 3),
            trans_port: 9040,
            dns_port: 5353,
            tor_uid: 101,
        }
    }

    fn json_of(p: &Params) -> Value {
        serde_json::to_value(ruleset(p)).expect("serialises")
    }

    /// Every object must be an `add` command; returns what it adds.
    fn added(v: &Value) -> Vec<&Value> {
        v["nftables"]
            .as_array()
            .expect("nftables array")
            .iter()
            .map(|o| &o["add"])
            .inspect(|a| assert!(a.is_object(), "not an add command"))
            .collect()
    }

    fn chain<'v>(v: &'v Value, name: &str) -> &'v Value {
        let found: Vec<_> = added(v)
            .into_iter()
            .filter_map(|a| a.get("chain"))
            .filter(|c| c["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "chain {name}");
        found[0]
    }

    /// The statement lists of the rules of `chain`, in order.
    fn rules<'v>(v: &'v Value, chain: &str) -> Vec<&'v Vec<Value>> {
        added(v)
            .into_iter()
            .filter_map(|a| a.get("rule"))
            .filter(|r| r["chain"] == chain)
            .map(|r| {
                assert_eq!(r["family"], "inet");
                assert_eq!(r["table"], TABLE);
                r["expr"].as_array().expect("expr array")
            })
            .collect()
    }

    fn all_rules(v: &Value) -> Vec<&Vec<Value>> {
        ["prerouting", "input", "forward", "output"]
            .into_iter()
            .flat_map(|c| rules(v, c))
            .collect()
    }

    fn matches(left: Value, right: Value) -> Value {
        json!({"match": {"left": left, "right": right, "op": "=="}})
    }
    fn meta(key: &str, right: Value) -> Value {
        matches(json!({"meta": {"key": key}}), right)
    }
    fn payload(proto: &str, field: &str, right: Value) -> Value {
        matches(
            json!({"payload": {"protocol": proto, "field": field}}),
            right,
        )
    }
    fn ct_state(right: Value) -> Value {
        json!({"match": {"left": {"ct": {"key": "state"}}, "right": right, "op": "in"}})
    }
    fn has(rule: &[Value], stmt: &Value) -> bool {
        rule.contains(stmt)
    }
    fn has_key(rule: &[Value], key: &str) -> bool {
        rule.iter().any(|s| s.get(key).is_some())
    }
    fn matches_meta_key(rule: &[Value], key: &str) -> bool {
        rule.iter()
            .any(|s| s["match"]["left"]["meta"]["key"] == key)
    }
    fn verdict(rule: &[Value]) -> &str {
        let last = rule.last().expect("empty rule");
        ["accept", "drop"]
            .into_iter()
            .find(|k| last.get(*k).is_some())
            .unwrap_or("other")
    }

    #[test]
    fn one_table_ours_and_base_chains() {
        for up in [Some(UPLINK), None] {
            let v = json_of(&params(up));
            let tables: Vec<_> = added(&v)
                .into_iter()
                .filter_map(|a| a.get("table"))
                .collect();
            assert_eq!(tables, vec![&json!({"family": "inet", "name": TABLE})]);
            for (name, hook) in [
                ("input", "input"),
                ("forward", "forward"),
                ("output", "output"),
            ] {
                let c = chain(&v, name);
                assert_eq!(c["type"], "filter", "{name}");
                assert_eq!(c["hook"], hook, "{name}");
                assert_eq!(c["prio"], 0, "{name}");
                assert_eq!(c["policy"], "drop", "{name} must have policy drop");
            }
            let pre = chain(&v, "prerouting");
            assert_eq!(pre["type"], "nat");
            assert_eq!(pre["hook"], "prerouting");
            assert_eq!(pre["prio"], -100);
        }
    }

    #[test]
    fn ipv6_dropped_first_and_forward_empty_otherwise() {
        let v = json_of(&params(Some(UPLINK)));
        let drop6 = vec![meta("nfproto", json!("ipv6")), json!({"drop": null})];
        for c in ["input", "forward", "output"] {
            assert_eq!(rules(&v, c)[0], &drop6, "{c}");
        }
        assert_eq!(rules(&v, "forward").len(), 1);
    }

    #[test]
    fn redirects_only_from_internal_if_and_appvm() {
        let v = json_of(&params(Some(UPLINK)));
        let redirects: Vec<_> = all_rules(&v)
            .into_iter()
            .filter(|r| has_key(r, "redirect"))
            .collect();
        assert_eq!(redirects, rules(&v, "prerouting"));
        assert_eq!(
            redirects,
            vec![
                &vec![
                    meta("iifname", json!("eth0")),
                    payload("ip", "saddr", json!("10.1.2.3")),
                    json!({"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}},
                                     "right": "10.1.2.1", "op": "!="}}),
                    meta("l4proto", json!("tcp")),
                    json!({"redirect": {"port": 9040}}),
                ],
                &vec![
                    meta("iifname", json!("eth0")),
                    payload("ip", "saddr", json!("10.1.2.3")),
                    payload("udp", "dport", json!(53)),
                    json!({"redirect": {"port": 5353}}),
                ],
            ]
        );
    }

    #[test]
    fn input_accepts_only_lo_established_and_the_appvm_to_tor_ports() {
        let v = json_of(&params(Some(UPLINK)));
        let input = rules(&v, "input");
        let invalid = input
            .iter()
            .position(|r| has(r, &ct_state(json!("invalid"))))
            .expect("ct state invalid drop");
        assert_eq!(verdict(input[invalid]), "drop");
        let established = ct_state(json!(["established", "related"]));
        let mut appvm_accepts = Vec::new();
        for (i, r) in input.iter().enumerate() {
            if verdict(r) != "accept" {
                continue;
            }
            if has(r, &meta("iif", json!("lo"))) {
                assert_eq!(r.len(), 2);
            } else if has(r, &established) {
                assert_eq!(r.len(), 2);
                assert!(i > invalid, "invalid dropped before established accepted");
            } else {
                // Everything else: only from the App VM on the internal link,
                // only to the Tor VM's address. So nothing new from the uplink.
                assert!(i > invalid);
                assert_eq!(r[0], meta("iifname", json!("eth0")));
                assert_eq!(r[1], payload("ip", "saddr", json!("10.1.2.3")));
                assert_eq!(r[2], payload("ip", "daddr", json!("10.1.2.1")));
                // …and only what a redirect made, never a direct packet
                // to tor's ports.
                assert_eq!(
                    r[3],
                    json!({"match": {"left": {"ct": {"key": "status"}}, "right": "dnat", "op": "in"}})
                );
                appvm_accepts.push(r[4..].to_vec());
            }
        }
        assert_eq!(
            appvm_accepts,
            vec![
                vec![
                    payload("tcp", "dport", json!(9040)),
                    json!({"accept": null})
                ],
                vec![
                    payload("udp", "dport", json!(5353)),
                    json!({"accept": null})
                ],
            ]
        );
        assert!(!serde_json::to_string(&rules(&v, "input"))
            .unwrap()
            .contains(UPLINK));
    }

    #[test]
    fn no_icmp_accepted_from_the_appvm() {
        let v = json_of(&params(Some(UPLINK)));
        assert!(!v.to_string().contains("icmp"));
    }

    #[test]
    fn only_tor_opens_connections_tcp_only() {
        let v = json_of(&params(Some(UPLINK)));
        let output = rules(&v, "output");
        let tor_new = [
            meta("skuid", json!(101)),
            meta("l4proto", json!("tcp")),
            ct_state(json!("new")),
            json!({"accept": null}),
        ];
        let established = ct_state(json!(["established", "related"]));
        let mut saw_uplink = false;
        for r in &output {
            match verdict(r) {
                "drop" => continue,
                "accept" => {}
                other => panic!("unexpected verdict {other}"),
            }
            if has(r, &meta("oif", json!("lo"))) || has(r, &established) {
                assert_eq!(r.len(), 2);
                continue;
            }
            // Any other accept is a new connection by tor, TCP only.
            assert!(r.ends_with(&tor_new), "{r:?}");
            let head = &r[..r.len() - tor_new.len()];
            if head == [meta("oifname", json!(UPLINK))] {
                assert!(!saw_uplink);
                saw_uplink = true;
            } else {
                assert_eq!(
                    head,
                    [
                        meta("oifname", json!("eth0")),
                        payload("ip", "saddr", json!("10.1.2.1")),
                        payload("ip", "daddr", json!("10.1.2.3")),
                    ],
                    "the only other: tor to the App VM's services"
                );
            }
        }
        assert!(saw_uplink, "the uplink rule");
        // skuid appears nowhere else.
        for c in ["prerouting", "input", "forward"] {
            assert!(!rules(&v, c).iter().any(|r| matches_meta_key(r, "skuid")));
        }
    }

    #[test]
    fn no_uplink_means_no_uplink_rule() {
        let with = json_of(&params(Some(UPLINK)));
        let without = json_of(&params(None));
        assert!(with.to_string().contains(UPLINK));
        let out_with = rules(&with, "output");
        let out_without = rules(&without, "output");
        assert_eq!(out_without.len() + 1, out_with.len());
        assert_eq!(out_without[..], out_with[..out_without.len()]);
        for r in all_rules(&without) {
            for s in r.iter() {
                let key = &s["match"]["left"]["meta"]["key"];
                if key == "oifname" || key == "iifname" {
                    assert_eq!(s["match"]["right"], "eth0");
                }
            }
        }
        // Everything else is the same.
        for c in ["prerouting", "input", "forward"] {
            assert_eq!(rules(&with, c), rules(&without, c));
        }
    }
}
