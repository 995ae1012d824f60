//! Loading a ruleset over netlink, without nft: the guests' boot firewall.
//!
//! Under TCG the first `nft` run in a guest costs 0.2–0.4 s (a dozen
//! libraries linked and nft's parser translated on first execution); the
//! same table sent by the agent over a `NETLINK_NETFILTER` socket costs a few
//! milliseconds. This module compiles the small subset of nft's JSON that
//! the Tor VM's and the App VM's boot rulesets use into the very bytecode
//! nft makes of it (the same expressions, registers, lengths and implicit
//! dependencies: `tests/netns.rs` loads each boot ruleset both ways and
//! compares the kernel's listings, bytecode included), and sends it as one
//! batch: one transaction, applied whole or not at all.
//!
//! Only what the equivalence test covers is compiled: inet tables; base
//! chains on prerouting, input, forward and output; meta nfproto, l4proto,
//! iif/oif, iifname/oifname and skuid; `ip saddr|daddr` (an address or a
//! byte-aligned prefix); `tcp|udp dport`; `ct state|status` flags; accept,
//! drop; `redirect to :<port>`. Anything else (sets, maps, counters, jumps,
//! other keys) is refused with [`NftError::Unsupported`] before anything is
//! sent: the caller then uses nft, which handles everything.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nftables::expr::{Expression, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::NftError;

// netlink (linux/netlink.h)
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
// nfnetlink (linux/netfilter/nfnetlink.h)
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
// nf_tables messages and attributes (linux/netfilter/nf_tables.h)
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
/// Register 1 (of the four 16-byte registers), where nft loads every value;
/// register 0 is the verdict.
const REG_1: u32 = 1;
const REG_VERDICT: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_SKUID: u32 = 10;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NF_NAT_RANGE_PROTO_SPECIFIED`: the redirect names a port.
const NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IFNAMSIZ: usize = 16;

/// How long the kernel may take to answer the batch.
const ACK_TIMEOUT_SECS: libc::time_t = 10;

/// One expression of a rule, as the kernel stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Meta { key: u32 },
    Payload { base: u32, offset: u32, len: u32 },
    Ct { key: u32 },
    Cmp { op: u32, data: Vec<u8> },
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    Value { data: Vec<u8> },
    Verdict { code: u32 },
    Redir { flags: u32 },
}

/// What the statements before have established about the packet, as nft
/// tracks it to add each implicit dependency once.
#[derive(Default)]
struct Context {
    nfproto: Option<u8>,
    l4proto: Option<u8>,
}

fn unsupported(what: impl Into<String>) -> NftError {
    NftError::Unsupported(what.into())
}

fn string<'a>(e: &'a Expression) -> Result<&'a str, NftError> {
    match e {
        Expression::String(s) => Ok(s),
        other => Err(unsupported(format!("value {other:?}"))),
    }
}

fn cmp_op(op: Operator) -> Result<u32, NftError> {
    match op {
        Operator::EQ => Ok(NFT_CMP_EQ),
        Operator::NEQ => Ok(NFT_CMP_NEQ),
        other => Err(unsupported(format!("operator {other:?}"))),
    }
}

fn nfproto(name: &str) -> Result<u8, NftError> {
    match name {
        "ipv4" => Ok(NFPROTO_IPV4),
        "ipv6" => Ok(NFPROTO_IPV6),
        other => Err(unsupported(format!("nfproto {other}"))),
    }
}

fn l4proto(name: &str) -> Result<u8, NftError> {
    match name {
        "tcp" => Ok(libc::IPPROTO_TCP as u8),
        "udp" => Ok(libc::IPPROTO_UDP as u8),
        other => Err(unsupported(format!("l4proto {other}"))),
    }
}

fn ct_bits(key: &str, name: &str) -> Result<u32, NftError> {
    match (key, name) {
        ("state", "invalid") => Ok(1),
        ("state", "established") => Ok(2),
        ("state", "related") => Ok(4),
        ("state", "new") => Ok(8),
        ("status", "dnat") => Ok(0x20),
        _ => Err(unsupported(format!("ct {key} {name}"))),
    }
}

/// The index of interface `name` now (nft resolves `iif`/`oif` the same way,
/// when it evaluates the rule).
fn if_index(name: &str) -> Result<u32, NftError> {
    let c = std::ffi::CString::new(name).map_err(|_| unsupported("an interface name with NUL"))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(NftError::Netlink {
            what: "find the interface of iif/oif",
            source: std::io::Error::other(format!("no interface {name:?}")),
        });
    }
    Ok(i)
}

/// `meta <key> == <data>`: the load into register 1 and the comparison (also
/// each implicit dependency nft adds).
fn meta_eq(key: u32, data: Vec<u8>) -> [Expr; 2] {
    [
        Expr::Meta { key },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            data,
        },
    ]
}

/// A meta key match (`op` is `==` or `!=`). An equality on nfproto or
/// l4proto establishes it for the rest of the rule, as nft records it.
fn meta_match(
    key: MetaKey,
    op: u32,
    right: &Expression,
    cx: &mut Context,
) -> Result<Vec<Expr>, NftError> {
    let (k, data) = match key {
        MetaKey::Nfproto => (NFT_META_NFPROTO, vec![nfproto(string(right)?)?]),
        MetaKey::L4proto => (NFT_META_L4PROTO, vec![l4proto(string(right)?)?]),
        MetaKey::Iif => (
            NFT_META_IIF,
            if_index(string(right)?)?.to_ne_bytes().to_vec(),
        ),
        MetaKey::Oif => (
            NFT_META_OIF,
            if_index(string(right)?)?.to_ne_bytes().to_vec(),
        ),
        MetaKey::Iifname | MetaKey::Oifname => {
            let name = string(right)?;
            if name.len() >= IFNAMSIZ || name.contains('*') || name.contains('\0') {
                return Err(unsupported(format!("interface name {name:?}")));
            }
            let mut d = name.as_bytes().to_vec();
            d.resize(IFNAMSIZ, 0);
            let k = if key == MetaKey::Iifname {
                NFT_META_IIFNAME
            } else {
                NFT_META_OIFNAME
            };
            (k, d)
        }
        MetaKey::Skuid => match right {
            Expression::Number(n) => (NFT_META_SKUID, n.to_ne_bytes().to_vec()),
            other => return Err(unsupported(format!("skuid {other:?}"))),
        },
        other => return Err(unsupported(format!("meta {other:?}"))),
    };
    if op == NFT_CMP_EQ {
        match key {
            MetaKey::Nfproto => cx.nfproto = data.first().copied(),
            MetaKey::L4proto => cx.l4proto = data.first().copied(),
            _ => {}
        }
    }
    Ok(vec![Expr::Meta { key: k }, Expr::Cmp { op, data }])
}

/// `ip saddr|daddr` and `tcp|udp dport` matches, with the dependency
/// nft adds first (`meta nfproto ipv4`, `meta l4proto <proto>`) unless an
/// earlier statement of the rule established it.
fn payload_match(
    f: &PayloadField,
    op: u32,
    right: &Expression,
    cx: &mut Context,
) -> Result<Vec<Expr>, NftError> {
    let mut out = Vec::new();
    match (&*f.protocol, &*f.field) {
        ("ip", field @ ("saddr" | "daddr")) => {
            match cx.nfproto {
                Some(NFPROTO_IPV4) => {}
                None => {
                    out.extend(meta_eq(NFT_META_NFPROTO, vec![NFPROTO_IPV4]));
                    cx.nfproto = Some(NFPROTO_IPV4);
                }
                Some(_) => return Err(unsupported("ip after another protocol family")),
            }
            let offset = if field == "saddr" { 12 } else { 16 };
            let (addr, bytes) = match right {
                Expression::String(s) => (s.as_ref(), 4),
                Expression::Named(NamedExpression::Prefix(p)) => {
                    if p.len == 0 || p.len > 32 || p.len % 8 != 0 {
                        return Err(unsupported(format!("prefix length {}", p.len)));
                    }
                    (string(&p.addr)?, p.len / 8)
                }
                other => return Err(unsupported(format!("ip {field} {other:?}"))),
            };
            let a: Ipv4Addr = addr
                .parse()
                .map_err(|_| unsupported(format!("address {addr:?}")))?;
            out.push(Expr::Payload {
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset,
                len: bytes,
            });
            out.push(Expr::Cmp {
                op,
                data: a.octets()[..bytes as usize].to_vec(),
            });
        }
        (proto @ ("tcp" | "udp"), field @ "dport") => {
            let p = l4proto(proto)?;
            match cx.l4proto {
                Some(have) if have == p => {}
                Some(_) => return Err(unsupported("two transport protocols in one rule")),
                None => {
                    out.extend(meta_eq(NFT_META_L4PROTO, vec![p]));
                    cx.l4proto = Some(p);
                }
            }
            let port = match right {
                Expression::Number(n) => {
                    u16::try_from(*n).map_err(|_| unsupported(format!("port {n}")))?
                }
                other => return Err(unsupported(format!("{proto} {field} {other:?}"))),
            };
            out.push(Expr::Payload {
                base: NFT_PAYLOAD_TRANSPORT_HEADER,
                offset: 2,
                len: 2,
            });
            out.push(Expr::Cmp {
                op,
                data: port.to_be_bytes().to_vec(),
            });
        }
        (p, field) => return Err(unsupported(format!("payload {p} {field}"))),
    }
    Ok(out)
}

/// One statement's expressions.
fn statement(st: &Statement, cx: &mut Context) -> Result<Vec<Expr>, NftError> {
    match st {
        Statement::Match(m) => match &m.left {
            Expression::Named(NamedExpression::Meta(meta)) => {
                meta_match(meta.key, cmp_op(m.op)?, &m.right, cx)
            }
            Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
                payload_match(f, cmp_op(m.op)?, &m.right, cx)
            }
            Expression::Named(NamedExpression::CT(ct)) => {
                if ct.family.is_some() || ct.dir.is_some() || m.op != Operator::IN {
                    return Err(unsupported(format!("ct {} {:?}", ct.key, m.op)));
                }
                let key = match &*ct.key {
                    "state" => NFT_CT_STATE,
                    "status" => NFT_CT_STATUS,
                    other => return Err(unsupported(format!("ct {other}"))),
                };
                let names: Vec<&str> = match &m.right {
                    Expression::String(s) => vec![s],
                    Expression::List(l) => l.iter().map(string).collect::<Result<_, _>>()?,
                    other => return Err(unsupported(format!("ct {} {other:?}", ct.key))),
                };
                let mut mask = 0u32;
                for n in names {
                    mask |= ct_bits(&ct.key, n)?;
                }
                Ok(vec![
                    Expr::Ct { key },
                    Expr::Bitwise {
                        mask: mask.to_ne_bytes().to_vec(),
                        xor: vec![0; 4],
                    },
                    Expr::Cmp {
                        op: NFT_CMP_NEQ,
                        data: vec![0; 4],
                    },
                ])
            }
            other => Err(unsupported(format!("match on {other:?}"))),
        },
        Statement::Accept(None) => Ok(vec![Expr::Verdict { code: NF_ACCEPT }]),
        Statement::Drop(None) => Ok(vec![Expr::Verdict { code: NF_DROP }]),
        Statement::Redirect(Some(NAT {
            addr: None,
            family: None,
            port: Some(Expression::Number(port)),
            flags: None,
        })) => {
            if cx.l4proto.is_none() {
                return Err(unsupported(
                    "a redirect to a port without a transport protocol",
                ));
            }
            let port = u16::try_from(*port).map_err(|_| unsupported(format!("port {port}")))?;
            Ok(vec![
                Expr::Value {
                    data: port.to_be_bytes().to_vec(),
                },
                Expr::Redir {
                    flags: NAT_RANGE_PROTO_SPECIFIED,
                },
            ])
        }
        other => Err(unsupported(format!("statement {other:?}"))),
    }
}

/// A rule's expressions, in order, dependencies included.
fn rule_exprs(stmts: &[Statement]) -> Result<Vec<Expr>, NftError> {
    let mut cx = Context::default();
    let mut out = Vec::new();
    for st in stmts {
        out.extend(statement(st, &mut cx)?);
    }
    Ok(out)
}

/// One netlink message being built: header, nfgenmsg, attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
    /// An attribute longer than its 16-bit length field can say.
    too_long: bool,
}

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
            too_long: false,
        }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = self.len16(4 + data.len());
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d);
    }

    fn begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = self.len16(self.buf.len() - start);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    fn data(&mut self, ty: u16, value: &[u8]) {
        self.begin(ty);
        self.attr(NFTA_DATA_VALUE, value);
        self.end();
    }

    /// `n` as an attribute length; one that does not fit marks the message
    /// [`Msg::too_long`] (refused by [`Msg::finish`]).
    fn len16(&mut self, n: usize) -> u16 {
        u16::try_from(n).unwrap_or_else(|_| {
            self.too_long = true;
            0
        })
    }

    fn finish(mut self) -> Result<Vec<u8>, NftError> {
        if self.too_long {
            return Err(unsupported("an attribute over 64 KiB (a very long rule)"));
        }
        let len = u32::try_from(self.buf.len()).map_err(|_| unsupported("a message over 4 GiB"))?;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.buf)
    }
}

impl Expr {
    /// The kernel's name of the expression.
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Ct { .. } => "ct",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Value { .. } | Expr::Verdict { .. } => "immediate",
            Expr::Redir { .. } => "redir",
        }
    }

    /// Appends the expression as one element of a rule's expression list.
    /// The numbers are each expression's attributes (`NFTA_META_KEY`, …).
    fn write(&self, m: &mut Msg) {
        m.begin(NFTA_LIST_ELEM);
        m.str(NFTA_EXPR_NAME, self.name());
        m.begin(NFTA_EXPR_DATA);
        match self {
            Expr::Meta { key } => {
                m.u32(2, *key); // NFTA_META_KEY
                m.u32(1, REG_1); // NFTA_META_DREG
            }
            Expr::Payload { base, offset, len } => {
                m.u32(1, REG_1); // NFTA_PAYLOAD_DREG
                m.u32(2, *base);
                m.u32(3, *offset);
                m.u32(4, *len);
            }
            Expr::Ct { key } => {
                m.u32(1, REG_1); // NFTA_CT_DREG
                m.u32(2, *key); // NFTA_CT_KEY
            }
            Expr::Cmp { op, data } => {
                m.u32(1, REG_1); // NFTA_CMP_SREG
                m.u32(2, *op);
                m.data(3, data); // NFTA_CMP_DATA
            }
            Expr::Bitwise { mask, xor } => {
                m.u32(1, REG_1); // NFTA_BITWISE_SREG
                m.u32(2, REG_1); // NFTA_BITWISE_DREG
                m.u32(3, mask.len() as u32); // NFTA_BITWISE_LEN: 4
                m.data(4, mask);
                m.data(5, xor);
            }
            Expr::Value { data } => {
                m.u32(1, REG_1); // NFTA_IMMEDIATE_DREG
                m.data(2, data);
            }
            Expr::Verdict { code } => {
                m.u32(1, REG_VERDICT);
                m.begin(2); // NFTA_IMMEDIATE_DATA
                m.begin(NFTA_DATA_VERDICT);
                m.u32(NFTA_VERDICT_CODE, *code);
                m.end();
                m.end();
            }
            Expr::Redir { flags } => {
                m.u32(1, REG_1); // NFTA_REDIR_REG_PROTO_MIN
                m.u32(3, *flags); // NFTA_REDIR_FLAGS
            }
        }
        m.end();
        m.end();
    }
}

fn family(f: NfFamily) -> Result<u8, NftError> {
    match f {
        NfFamily::INet => Ok(NFPROTO_INET),
        other => Err(unsupported(format!("family {other:?}"))),
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

const ADD: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;

fn table_msg(t: &Table, msg: u16, seq: u32) -> Result<Vec<u8>, NftError> {
    let flags = if msg == NFT_MSG_DELTABLE {
        NLM_F_REQUEST | NLM_F_ACK
    } else {
        ADD
    };
    let mut m = Msg::new(nft_type(msg), flags, seq, family(t.family)?, 0);
    m.str(NFTA_TABLE_NAME, &t.name);
    m.finish()
}

fn chain_msg(c: &Chain, seq: u32) -> Result<Vec<u8>, NftError> {
    let mut m = Msg::new(nft_type(NFT_MSG_NEWCHAIN), ADD, seq, family(c.family)?, 0);
    m.str(NFTA_CHAIN_TABLE, &c.table);
    m.str(NFTA_CHAIN_NAME, &c.name);
    match (c._type, c.hook, c.prio, c.policy) {
        (Some(ty), Some(hook), Some(prio), policy) => {
            let hooknum = match hook {
                NfHook::Prerouting => 0,
                NfHook::Input => 1,
                NfHook::Forward => 2,
                NfHook::Output => 3,
                other => return Err(unsupported(format!("hook {other:?}"))),
            };
            m.begin(NFTA_CHAIN_HOOK);
            m.u32(NFTA_HOOK_HOOKNUM, hooknum);
            m.u32(NFTA_HOOK_PRIORITY, prio as u32);
            m.end();
            if let Some(p) = policy {
                m.u32(
                    NFTA_CHAIN_POLICY,
                    match p {
                        NfChainPolicy::Accept => NF_ACCEPT,
                        NfChainPolicy::Drop => NF_DROP,
                    },
                );
            }
            m.str(
                NFTA_CHAIN_TYPE,
                match ty {
                    NfChainType::Filter => "filter",
                    NfChainType::NAT => "nat",
                    NfChainType::Route => return Err(unsupported("a route chain")),
                },
            );
        }
        _ => return Err(unsupported(format!("chain {}: not a base chain", c.name))),
    }
    if c.newname.is_some() || c.handle.is_some() || c.dev.is_some() {
        return Err(unsupported(format!("chain {} options", c.name)));
    }
    m.finish()
}

fn rule_msg(r: &Rule, seq: u32) -> Result<Vec<u8>, NftError> {
    if r.handle.is_some() || r.index.is_some() || r.comment.is_some() {
        return Err(unsupported("rule handle, index or comment"));
    }
    let exprs = rule_exprs(&r.expr)?;
    let mut m = Msg::new(
        nft_type(NFT_MSG_NEWRULE),
        ADD | NLM_F_APPEND,
        seq,
        family(r.family)?,
        0,
    );
    m.str(NFTA_RULE_TABLE, &r.table);
    m.str(NFTA_RULE_CHAIN, &r.chain);
    m.begin(NFTA_RULE_EXPRESSIONS);
    for e in &exprs {
        e.write(&mut m);
    }
    m.end();
    m.finish()
}

/// A batch's bytes, and what each command's sequence number names (for the
/// kernel's errors).
#[derive(Debug)]
struct Encoded {
    bytes: Vec<u8>,
    names: Vec<(u32, String)>,
}

/// The whole batch: begin, one message per command, end.
fn encode(batch: &Nftables) -> Result<Encoded, NftError> {
    let mut out = Msg::new(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        0,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish()?;
    let mut names = Vec::new();
    let mut seq = 1u32;
    for obj in batch.objects.iter() {
        let (bytes, name) = match obj {
            NfObject::CmdObject(NfCmd::Add(NfListObject::Table(t))) => (
                table_msg(t, NFT_MSG_NEWTABLE, seq)?,
                format!("add table {}", t.name),
            ),
            NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(t))) => (
                table_msg(t, NFT_MSG_DELTABLE, seq)?,
                format!("delete table {}", t.name),
            ),
            NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c))) => {
                (chain_msg(c, seq)?, format!("add chain {}", c.name))
            }
            NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(r))) => {
                (rule_msg(r, seq)?, format!("add rule {} #{}", r.chain, seq))
            }
            _ => return Err(unsupported("a command other than add table/chain/rule")),
        };
        out.extend_from_slice(&bytes);
        names.push((seq, name));
        seq += 1;
    }
    out.extend_from_slice(
        &Msg::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish()?,
    );
    Ok(Encoded { bytes: out, names })
}

/// Sends `batch` (already checked to touch only its own tables) in one
/// transaction and waits for the kernel's answer to each command.
pub(crate) fn send(batch: &Nftables) -> Result<(), NftError> {
    let Encoded { bytes, names } = encode(batch)?;
    let io = |what: &'static str| move |source| NftError::Netlink { what, source };
    // SAFETY: socket() has no memory arguments; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io("open a netfilter netlink socket")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: ACK_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: tv lives across the call; its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io("set the socket's timeout")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: an all-zero sockaddr_nl is the kernel (pid 0, no groups).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: bytes and kernel live across the call; their sizes are passed.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            std::ptr::addr_of!(kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io("send the batch")(std::io::Error::last_os_error()));
    }
    if sent as usize != bytes.len() {
        return Err(io("send the batch")(std::io::Error::other("short send")));
    }
    let mut waiting: Vec<u32> = names.iter().map(|(s, _)| *s).collect();
    let mut first_error: Option<(u32, i32)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while !waiting.is_empty() {
        // SAFETY: an all-zero sockaddr_nl is a valid value to overwrite.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: buf and from are ours and their lengths are passed.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                std::ptr::addr_of_mut!(from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io("read the kernel's answer")(
                std::io::Error::last_os_error(),
            ));
        }
        // Only the kernel's answers count (port 0); anything else is dropped.
        if from.nl_pid != 0 {
            continue;
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + 16 <= n {
            let word = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
            let len = word(at) as usize;
            let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            let seq = word(at + 8);
            if len < 16 || at + len > n {
                return Err(io("read the kernel's answer")(std::io::Error::other(
                    "a malformed netlink message",
                )));
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let errno = (word(at + 16) as i32).wrapping_neg();
                waiting.retain(|s| *s != seq);
                if errno != 0 && first_error.is_none() {
                    first_error = Some((seq, errno));
                }
            }
            at += (len + 3) & !3;
        }
        if first_error.is_some() {
            break;
        }
    }
    match first_error {
        None => Ok(()),
        Some((seq, errno)) => Err(NftError::KernelRefused {
            what: names
                .iter()
                .find(|(s, _)| *s == seq)
                .map_or_else(|| format!("message {seq}"), |(_, n)| n.clone()),
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_does_not_compile() {
        let ports = crate::appvm::ruleset(&crate::appvm::Params {
            iface: "eth0",
            addr: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 1, 2, 1),
            service_ports: vec![80, 5222],
        });
        // A set of ports: nft's job.
        let err = encode(&ports).unwrap_err();
        assert!(matches!(err, NftError::Unsupported(_)), "{err}");
        let none = crate::appvm::ruleset(&crate::appvm::Params {
            iface: "eth0",
            addr: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 1, 2, 1),
            service_ports: vec![],
        });
        assert!(encode(&none).is_ok());
        // The host's table (jumps, counters, sets): nft's too.
        let host = crate::host::ruleset(&crate::host::Params {
            torvm_uid: 64990,
            no_inet_uids: vec![64991],
            upstreams: Vec::new(),
            relay_localhost: Vec::new(),
            relay_lan: Vec::new(),
        });
        let err = encode(&host).unwrap_err();
        assert!(matches!(err, NftError::Unsupported(_)), "{err}");
    }
}
