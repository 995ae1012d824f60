//! Small builders for the nft JSON objects our rulesets are made of, so that
//! each ruleset reads like the `nft` text it becomes.
//!
//! Every builder returns owned (`'static`) values: a ruleset never borrows
//! from the parameters it was generated from.

use std::borrow::Cow;
use std::net::Ipv4Addr;

use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, SetItem, CT,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, JumpTarget, Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// Priority `filter` (the number nft's JSON wants; the text form names it).
pub(crate) const PRIO_FILTER: i32 = 0;
/// Priority `dstnat` (-100).
pub(crate) const PRIO_DSTNAT: i32 = -100;

/// The base-chain part of a chain: `type <ty> hook <hook> priority <prio>`.
pub(crate) struct Base {
    pub ty: NfChainType,
    pub hook: NfHook,
    pub prio: i32,
    pub policy: NfChainPolicy,
}

/// One table and everything in it, as a list of `add` commands in the order
/// nft must see them (table, then chains, then rules).
pub(crate) struct TableBuilder {
    family: NfFamily,
    name: &'static str,
    objects: Vec<NfObject<'static>>,
}

impl TableBuilder {
    /// Starts with `add table <family> <name>`.
    pub fn new(family: NfFamily, name: &'static str) -> Self {
        let table = Table {
            family,
            name: Cow::Borrowed(name),
            handle: None,
        };
        TableBuilder {
            family,
            name,
            objects: vec![NfObject::CmdObject(NfCmd::Add(NfListObject::Table(table)))],
        }
    }

    /// `add chain`, a base chain when `base` is given.
    pub fn chain(&mut self, name: &'static str, base: Option<Base>) {
        let mut chain = Chain {
            family: self.family,
            table: Cow::Borrowed(self.name),
            name: Cow::Borrowed(name),
            ..Chain::default()
        };
        if let Some(b) = base {
            chain._type = Some(b.ty);
            chain.hook = Some(b.hook);
            chain.prio = Some(b.prio);
            chain.policy = Some(b.policy);
        }
        self.add(NfListObject::Chain(chain));
    }

    /// `add rule` to `chain` (appended: rules keep the order they are added in).
    pub fn rule(&mut self, chain: &'static str, expr: Vec<Statement<'static>>) {
        let rule = Rule {
            family: self.family,
            table: Cow::Borrowed(self.name),
            chain: Cow::Borrowed(chain),
            expr: Cow::Owned(expr),
            ..Rule::default()
        };
        self.add(NfListObject::Rule(rule));
    }

    fn add(&mut self, obj: NfListObject<'static>) {
        self.objects.push(NfObject::CmdObject(NfCmd::Add(obj)));
    }

    /// The finished batch.
    pub fn finish(self) -> Nftables<'static> {
        Nftables {
            objects: Cow::Owned(self.objects),
        }
    }
}

// ---- expressions ----

fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    matches(left, Operator::EQ, right)
}

// ---- match statements ----

/// `meta nfproto ipv6`
pub(crate) fn nfproto_ipv6() -> Statement<'static> {
    eq(meta(MetaKey::Nfproto), string("ipv6"))
}

/// `iif "<name>"` (by index: only for interfaces that always exist, i.e. lo).
pub(crate) fn iif(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Iif), string(name))
}

/// `oif "<name>"` (by index: only for interfaces that always exist, i.e. lo).
pub(crate) fn oif(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Oif), string(name))
}

/// `iifname "<name>"` (by name: the rule loads whether or not the NIC exists yet).
pub(crate) fn iifname(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Iifname), string(name))
}

/// `oifname "<name>"`
pub(crate) fn oifname(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Oifname), string(name))
}

/// `ip saddr <addr>`
pub(crate) fn ip_saddr(addr: Ipv4Addr) -> Statement<'static> {
    eq(payload("ip", "saddr"), string(addr.to_string()))
}

/// `ip daddr <addr>`
pub(crate) fn ip_daddr(addr: Ipv4Addr) -> Statement<'static> {
    eq(payload("ip", "daddr"), string(addr.to_string()))
}

/// `meta l4proto <proto>` (e.g. "tcp")
pub(crate) fn l4proto(proto: &'static str) -> Statement<'static> {
    eq(meta(MetaKey::L4proto), string(proto))
}

/// `tcp dport <port>`
pub(crate) fn tcp_dport(port: u16) -> Statement<'static> {
    eq(payload("tcp", "dport"), Expression::Number(port.into()))
}

/// `udp dport <port>`
pub(crate) fn udp_dport(port: u16) -> Statement<'static> {
    eq(payload("udp", "dport"), Expression::Number(port.into()))
}

/// `meta skuid <uid>`
pub(crate) fn skuid(uid: u32) -> Statement<'static> {
    eq(meta(MetaKey::Skuid), Expression::Number(uid))
}

/// `ct state <state>[,<state>…]` (e.g. ["established", "related"])
pub(crate) fn ct_state(states: &[&'static str]) -> Statement<'static> {
    let right = match states {
        [one] => string(*one),
        many => Expression::List(many.iter().map(|s| string(*s)).collect()),
    };
    matches(ct("state"), Operator::IN, right)
}

// ---- verdicts and actions ----

/// `accept`
pub(crate) fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

/// `drop`
pub(crate) fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

/// `redirect to :<port>`
pub(crate) fn redirect_to(port: u16) -> Statement<'static> {
    Statement::Redirect(Some(NAT {
        addr: None,
        family: None,
        port: Some(Expression::Number(port.into())),
        flags: None,
    }))
}

// ---- added for the host and App VM rulesets ----

/// An IPv4 or IPv6 network (`addr/len`) as an nft prefix expression; a
/// whole-address network (/32, /128) as the plain address.
pub(crate) fn net(addr: std::net::IpAddr, len: u8) -> Expression<'static> {
    let full = if addr.is_ipv4() { 32 } else { 128 };
    if len >= full {
        return string(addr.to_string());
    }
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(string(addr.to_string())),
        len: len.into(),
    }))
}

/// An anonymous set `{ a, b, … }` (a single element stays a plain value).
pub(crate) fn set(mut items: Vec<Expression<'static>>) -> Expression<'static> {
    if items.len() == 1 {
        if let Some(one) = items.pop() {
            return one;
        }
    }
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

/// `ip daddr <expr>` (a value, a prefix or a set).
pub(crate) fn ip_daddr_in(right: Expression<'static>) -> Statement<'static> {
    matches(payload("ip", "daddr"), Operator::EQ, right)
}

/// `ip daddr != <expr>`
pub(crate) fn ip_daddr_not(right: Expression<'static>) -> Statement<'static> {
    matches(payload("ip", "daddr"), Operator::NEQ, right)
}

/// `ip6 daddr <expr>`
pub(crate) fn ip6_daddr_in(right: Expression<'static>) -> Statement<'static> {
    matches(payload("ip6", "daddr"), Operator::EQ, right)
}

/// `meta l4proto != <proto>`
pub(crate) fn l4proto_not(proto: &'static str) -> Statement<'static> {
    matches(meta(MetaKey::L4proto), Operator::NEQ, string(proto))
}

/// `tcp dport <expr>` (a port or a set of ports).
pub(crate) fn tcp_dport_in(right: Expression<'static>) -> Statement<'static> {
    eq(payload("tcp", "dport"), right)
}

/// A port number as an expression (for sets of ports).
pub(crate) fn port(p: u16) -> Expression<'static> {
    Expression::Number(p.into())
}

/// `meta skuid <expr>` (a uid or a set of uids).
pub(crate) fn skuid_in(right: Expression<'static>) -> Statement<'static> {
    eq(meta(MetaKey::Skuid), right)
}

/// A uid as an expression (for sets of uids).
pub(crate) fn uid(u: u32) -> Expression<'static> {
    Expression::Number(u)
}

/// `ct status dnat`: the connection was destination-NATed (our redirects).
pub(crate) fn ct_status_dnat() -> Statement<'static> {
    matches(ct("status"), Operator::IN, string("dnat"))
}

/// `counter` (anonymous): lets `nft list` show how much a rule matched.
pub(crate) fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(None))
}

/// `jump <chain>`
pub(crate) fn jump(chain: &'static str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Borrowed(chain),
    })
}

// ---- added for the host's input chain (the relay's ports) ----

/// `iifname != "<name>"`
pub(crate) fn iifname_not(name: &str) -> Statement<'static> {
    matches(meta(MetaKey::Iifname), Operator::NEQ, string(name))
}

/// `ip saddr != <expr>` (a value, a prefix or a set).
pub(crate) fn ip_saddr_not(right: Expression<'static>) -> Statement<'static> {
    matches(payload("ip", "saddr"), Operator::NEQ, right)
}

/// `ip6 saddr != <expr>`
pub(crate) fn ip6_saddr_not(right: Expression<'static>) -> Statement<'static> {
    matches(payload("ip6", "saddr"), Operator::NEQ, right)
}
