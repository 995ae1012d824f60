//! The plan of the private Tor network (which nodes, on which ports) and the
//! torrc of each node, as pure functions of that plan: no I/O here.
//!
//! The options follow chutney's TestingTorNetwork templates (common.i,
//! authority.i, relay-non-exit, exit-v4.i), with the exit's policy narrowed
//! to the outside subnet and a private resolver for the exit's DNS.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::process::ProcId;

/// Number of directory authorities.
pub(crate) const AUTHORITIES: usize = 3;
/// Number of middle (non-exit) relays, besides the authorities.
pub(crate) const MIDDLES: usize = 2;
/// Number of exit relays.
pub(crate) const EXITS: usize = 1;
/// The client tor's SOCKS port.
pub(crate) const SOCKS_PORT: u16 = 9050;
/// The client tor's control port.
pub(crate) const CONTROL_PORT: u16 = 9051;
/// The outside web server's port.
pub(crate) const WEB_PORT: u16 = 8080;
/// The outside DNS server's port.
pub(crate) const DNS_PORT: u16 = 53;
/// The name the outside DNS server answers (with the outside address).
pub(crate) const OUTSIDE_NAME: &str = "outside.test";
const OR_PORT_BASE: u16 = 5000;
const DIR_PORT_BASE: u16 = 7000;

/// What a tor process is in the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// A v3 directory authority (and a non-exit relay).
    Authority,
    /// A non-exit relay.
    Relay,
    /// An exit relay, to the outside subnet only.
    Exit,
    /// The client with a SOCKS and a control port.
    Client,
}

/// One tor process: its place in the plan, its keys once made, its process once started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub nick: String,
    pub role: Role,
    pub or_port: Option<u16>,
    pub dir_port: Option<u16>,
    /// Relay identity fingerprint (40 hex digits), relays and authorities only.
    pub fingerprint: Option<String>,
    /// Authority v3 identity (from its certificate), authorities only.
    pub v3ident: Option<String>,
    #[serde(default)]
    pub proc: Option<ProcId>,
}

/// Everything about the network that the torrcs depend on.
#[derive(Clone, Debug)]
pub(crate) struct NetParams {
    /// The address every node listens on (10.100.0.2).
    pub outside: Ipv4Addr,
    /// The host's end of the veth (10.100.0.1): the machine a Tails Server
    /// stack runs on, which the exit must not connect back to.
    pub host: Ipv4Addr,
    /// The subnet the exit may connect to (10.100.0.0/24).
    pub subnet: String,
    /// The state directory: data dirs, torrcs and resolv.conf live there.
    pub state_dir: PathBuf,
}

impl NetParams {
    /// A node's DataDirectory.
    pub fn data_dir(&self, nick: &str) -> PathBuf {
        self.state_dir.join(nick)
    }
    /// A node's torrc.
    pub fn torrc_path(&self, nick: &str) -> PathBuf {
        self.state_dir.join(format!("{nick}.torrc"))
    }
    /// Where a node's stdout and stderr go (early errors before its log opens).
    pub fn out_path(&self, nick: &str) -> PathBuf {
        self.state_dir.join(format!("{nick}.out"))
    }
    /// A node's notice log.
    pub fn log_path(&self, nick: &str) -> PathBuf {
        self.data_dir(nick).join("notice.log")
    }
    /// The resolv.conf the relays resolve with (the outside DNS server).
    pub fn resolv_conf(&self) -> PathBuf {
        self.state_dir.join("resolv.conf")
    }
}

/// The nodes of the network, with their ports, in start order.
pub(crate) fn plan_nodes() -> Vec<Node> {
    let mut nodes = Vec::new();
    let relay = |nick: String, role: Role, i: usize| Node {
        nick,
        role,
        // i < AUTHORITIES + MIDDLES + EXITS, a handful: no overflow.
        or_port: Some(OR_PORT_BASE + i as u16),
        dir_port: Some(DIR_PORT_BASE + i as u16),
        fingerprint: None,
        v3ident: None,
        proc: None,
    };
    let mut i = 0;
    for a in 0..AUTHORITIES {
        nodes.push(relay(format!("tsauth{a}"), Role::Authority, i));
        i += 1;
    }
    for r in 0..MIDDLES {
        nodes.push(relay(format!("tsrelay{r}"), Role::Relay, i));
        i += 1;
    }
    for e in 0..EXITS {
        nodes.push(relay(format!("tsexit{e}"), Role::Exit, i));
        i += 1;
    }
    nodes.push(Node {
        nick: "tsclient".into(),
        role: Role::Client,
        or_port: None,
        dir_port: None,
        fingerprint: None,
        v3ident: None,
        proc: None,
    });
    nodes
}

/// The `DirAuthority` line (without the option name) for an authority, in
/// tor's format `nickname orport=N v3ident=HEX address:dirport FINGERPRINT`.
pub(crate) fn dir_authority(
    nick: &str,
    or_port: u16,
    dir_port: u16,
    v3ident: &str,
    fingerprint: &str,
    addr: Ipv4Addr,
) -> String {
    format!("{nick} orport={or_port} v3ident={v3ident} {addr}:{dir_port} {fingerprint}")
}

/// The `DirAuthority …` options for every authority of `nodes` (whose keys are made).
pub(crate) fn dir_authority_options(nodes: &[Node], addr: Ipv4Addr) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.role == Role::Authority)
        .filter_map(|n| {
            Some(format!(
                "DirAuthority {}",
                dir_authority(
                    &n.nick,
                    n.or_port?,
                    n.dir_port?,
                    n.v3ident.as_deref()?,
                    n.fingerprint.as_deref()?,
                    addr
                )
            ))
        })
        .collect()
}

/// The options a tor outside the namespace needs to join the network as a
/// client (or onion service): the test-network switch, the authorities, the
/// circuit threshold suited to a network of a few relays, and prompt
/// consensus fetches.
pub(crate) fn join_options(dir_authorities: &[String]) -> Vec<String> {
    let mut o = vec!["TestingTorNetwork 1".to_string()];
    o.extend(dir_authorities.iter().cloned());
    o.extend(CLIENT_OPTIONS.iter().map(|s| s.to_string()));
    o
}

/// Options for every client of the network (ours and those that join).
const CLIENT_OPTIONS: [&str; 3] = [
    // With six relays, insist on most of them before building circuits (as chutney does).
    "PathsNeededToBuildCircuits 0.67",
    // Fetch each consensus as soon as it is out, as directory caches do,
    // rather than minutes (here: seconds) later: the first consensus of a
    // new network often lists only the authorities (relays publish once
    // they have a consensus), and the next one, 10 s later, all relays.
    "FetchDirInfoEarly 1",
    "FetchDirInfoExtraEarly 1",
];

/// The contents of `join.torrc`.
pub(crate) fn join_torrc(options: &[String]) -> String {
    let mut s = String::from(
        "# Options for a tor to join the tails-server private test network (TestingTorNetwork).\n",
    );
    for o in options {
        s.push_str(o);
        s.push('\n');
    }
    s
}

/// The resolv.conf the exit resolves names with: only the outside DNS server.
pub(crate) fn resolv_conf(outside: Ipv4Addr) -> String {
    format!("nameserver {outside}\n")
}

fn line(s: &mut String, l: impl AsRef<str>) {
    s.push_str(l.as_ref());
    s.push('\n');
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The torrc of `node`, given the network, the `DirAuthority …` options and
/// the fingerprints of the exits (the only relays the authorities vote Exit for).
pub(crate) fn torrc(
    node: &Node,
    net: &NetParams,
    dir_authorities: &[String],
    exit_fingerprints: &[String],
) -> String {
    let o = net.outside;
    let dd = net.data_dir(&node.nick);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {} ({:?}) of the tails-server private test network: generated, do not edit.",
        node.nick, node.role
    );
    line(&mut s, "TestingTorNetwork 1");
    line(&mut s, format!("DataDirectory {}", path(&dd)));
    line(&mut s, format!("Nickname {}", node.nick));
    line(&mut s, format!("PidFile {}", path(&dd.join("pid"))));
    line(
        &mut s,
        format!("Log notice file {}", path(&net.log_path(&node.nick))),
    );
    line(&mut s, "RunAsDaemon 0");
    line(&mut s, "SafeLogging 0");
    line(&mut s, "LogTimeGranularity 1");
    line(&mut s, "ShutdownWaitLength 2");
    line(&mut s, "ClientUseIPv6 0");
    for d in dir_authorities {
        line(&mut s, d);
    }
    match node.role {
        Role::Client => {
            for o in CLIENT_OPTIONS {
                line(&mut s, o);
            }
            line(&mut s, format!("SocksPort {o}:{SOCKS_PORT}"));
            line(&mut s, format!("SocksPolicy accept {}", net.subnet));
            line(&mut s, "SocksPolicy reject *");
            line(&mut s, format!("ControlPort {o}:{CONTROL_PORT}"));
            line(&mut s, "CookieAuthentication 1");
        }
        Role::Authority | Role::Relay | Role::Exit => {
            line(&mut s, "SocksPort 0");
            line(&mut s, format!("Address {o}"));
            if let Some(p) = node.or_port {
                line(&mut s, format!("ORPort {o}:{p}"));
            }
            if let Some(p) = node.dir_port {
                line(&mut s, format!("DirPort {o}:{p}"));
            }
            line(&mut s, "AssumeReachable 1");
            line(&mut s, format!("ContactInfo {}@{OUTSIDE_NAME}", node.nick));
            line(&mut s, "AddressDisableIPv6 1");
            // Relays resolve (if ever) only through the outside DNS server.
            line(
                &mut s,
                format!("ServerDNSResolvConfFile {}", path(&net.resolv_conf())),
            );
            line(&mut s, "ServerDNSDetectHijacking 0");
            line(&mut s, "ServerDNSAllowNonRFC953Hostnames 1");
            if node.role == Role::Exit {
                line(&mut s, "ExitRelay 1");
                line(&mut s, "ExitPolicyRejectPrivate 0");
                line(&mut s, "ExitPolicyRejectLocalInterfaces 0");
                // The outside subnet first (it is private, so it must come
                // before the private reject). Then an accept for all the
                // rest, because clients judge exits by the policy summary in
                // the consensus and microdescriptors, which counts only
                // accept rules for every address ("accept 10.x/24:*, reject
                // *:*" sums up to "reject 1-65535": no exit at all). What
                // the exit can really reach is bounded by its namespace:
                // the only route there is the outside subnet.
                //
                // The host's own address is rejected first: an exit
                // connecting back to the machine would cross the veth, which
                // the leak tests watch for packets that are not the stack's
                // tor talking to relays.
                line(&mut s, format!("ExitPolicy reject {}:*", net.host));
                line(&mut s, format!("ExitPolicy accept {}:*", net.subnet));
                line(&mut s, "ExitPolicy reject private:*");
                line(&mut s, "ExitPolicy accept *:*");
                line(&mut s, "IPv6Exit 0");
            } else {
                line(&mut s, "ExitRelay 0");
                line(&mut s, "ExitPolicy reject *:*");
            }
        }
    }
    if node.role == Role::Authority {
        line(&mut s, "AuthoritativeDirectory 1");
        line(&mut s, "V3AuthoritativeDirectory 1");
        line(&mut s, "AuthDirMaxServersPerAddr 0");
        // A fast consensus cycle (chutney's authority.i allows intervals of
        // 10 s with vote + dist delays under half of it): a first consensus
        // 5 to 15 s after start, then one every 10 s, each valid for two
        // intervals (so one failed vote on a loaded machine goes unnoticed).
        line(&mut s, "TestingV3AuthInitialVotingInterval 10");
        line(&mut s, "TestingV3AuthInitialVoteDelay 2");
        line(&mut s, "TestingV3AuthInitialDistDelay 2");
        line(&mut s, "V3AuthVotingInterval 10");
        line(&mut s, "V3AuthVoteDelay 2");
        line(&mut s, "V3AuthDistDelay 2");
        line(&mut s, "V3AuthNIntervalsValid 2");
        // Flags without waiting for uptime or bandwidth measurements.
        if !exit_fingerprints.is_empty() {
            line(
                &mut s,
                format!("TestingDirAuthVoteExit {}", exit_fingerprints.join(",")),
            );
        }
        line(&mut s, "TestingDirAuthVoteHSDir *");
        line(&mut s, "TestingDirAuthVoteGuard *");
        line(&mut s, "TestingMinExitFlagThreshold 0");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetParams {
        NetParams {
            outside: Ipv4Addr::new(10, 100, 0, 2),
            host: Ipv4Addr::new(10, 100, 0, 1),
            subnet: "10.100.0.0/24".into(),
            state_dir: PathBuf::from("/run/tails-server-testnet"),
        }
    }

    fn keyed_nodes() -> Vec<Node> {
        let mut nodes = plan_nodes();
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.role != Role::Client {
                n.fingerprint = Some(format!("{:040X}", i + 1));
            }
            if n.role == Role::Authority {
                n.v3ident = Some(format!("{:040X}", 0xA0 + i));
            }
        }
        nodes
    }

    fn lines(s: &str) -> Vec<&str> {
        s.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn plan_has_three_authorities_three_relays_one_exit_one_client_on_distinct_ports() {
        let nodes = plan_nodes();
        let count = |r| nodes.iter().filter(|n| n.role == r).count();
        assert_eq!(count(Role::Authority), 3);
        assert_eq!(count(Role::Relay) + count(Role::Exit), 3);
        assert_eq!(count(Role::Exit), 1);
        assert_eq!(count(Role::Client), 1);
        let mut ports: Vec<u16> = nodes
            .iter()
            .flat_map(|n| [n.or_port, n.dir_port])
            .flatten()
            .chain([SOCKS_PORT, CONTROL_PORT, WEB_PORT, DNS_PORT])
            .collect();
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n, "ports collide");
        let mut nicks: Vec<_> = nodes.iter().map(|n| n.nick.as_str()).collect();
        nicks.sort();
        nicks.dedup();
        assert_eq!(nicks.len(), nodes.len());
        // Tor nicknames: 1 to 19 alphanumerics.
        assert!(nodes
            .iter()
            .all(|n| n.nick.len() <= 19 && n.nick.chars().all(|c| c.is_ascii_alphanumeric())));
    }

    #[test]
    fn dir_authority_line_format() {
        let l = dir_authority(
            "tsauth0",
            5000,
            7000,
            "E23E232B015903C9F314C9368D88F822229CF5EE",
            "D16EEBB76B6230F8986B806055CDE73983462A29",
            Ipv4Addr::new(10, 100, 0, 2),
        );
        assert_eq!(
            l,
            "tsauth0 orport=5000 v3ident=E23E232B015903C9F314C9368D88F822229CF5EE \
             10.100.0.2:7000 D16EEBB76B6230F8986B806055CDE73983462A29"
        );
        let opts = dir_authority_options(&keyed_nodes(), Ipv4Addr::new(10, 100, 0, 2));
        assert_eq!(opts.len(), 3);
        assert!(opts.iter().all(|o| o.starts_with("DirAuthority tsauth")));
        assert!(opts[1].contains(" 10.100.0.2:7001 "), "{}", opts[1]);
        assert!(opts[1].contains(" orport=5001 "), "{}", opts[1]);
    }

    #[test]
    fn dir_authority_options_skip_authorities_without_keys() {
        assert!(dir_authority_options(&plan_nodes(), Ipv4Addr::LOCALHOST).is_empty());
    }

    #[test]
    fn every_torrc_is_a_test_network_with_all_authorities() {
        let nodes = keyed_nodes();
        let auths = dir_authority_options(&nodes, net().outside);
        for n in &nodes {
            let t = torrc(n, &net(), &auths, &[]);
            let l = lines(&t);
            assert!(l.contains(&"TestingTorNetwork 1"), "{}", n.nick);
            assert!(l.contains(&"RunAsDaemon 0"), "{}", n.nick);
            let dd = format!("DataDirectory /run/tails-server-testnet/{}", n.nick);
            assert!(l.contains(&dd.as_str()), "{}", n.nick);
            assert_eq!(
                l.iter().filter(|x| x.starts_with("DirAuthority ")).count(),
                3
            );
            for a in &auths {
                assert!(l.contains(&a.as_str()));
            }
            // One option per line, no stray whitespace.
            assert!(l.iter().all(|x| !x.is_empty() && x.trim() == *x));
        }
    }

    #[test]
    fn relays_listen_on_the_outside_address_and_assume_reachable() {
        let nodes = keyed_nodes();
        for n in nodes.iter().filter(|n| n.role != Role::Client) {
            let t = torrc(n, &net(), &[], &[]);
            let l = lines(&t);
            assert!(l.contains(&"Address 10.100.0.2"));
            assert!(l.contains(&"AssumeReachable 1"));
            assert!(l.contains(&"SocksPort 0"));
            let or = format!("ORPort 10.100.0.2:{}", n.or_port.unwrap());
            assert!(l.contains(&or.as_str()), "{t}");
            assert!(l.contains(&"ServerDNSResolvConfFile /run/tails-server-testnet/resolv.conf"));
            assert!(!l.iter().any(|x| x.starts_with("ControlPort")));
        }
    }

    #[test]
    fn only_the_exit_exits_and_only_to_the_outside_subnet() {
        for n in keyed_nodes().iter().filter(|n| n.role != Role::Client) {
            let t = torrc(n, &net(), &[], &[]);
            let policy: Vec<&str> = lines(&t)
                .into_iter()
                .filter(|x| x.starts_with("ExitPolicy "))
                .collect();
            if n.role == Role::Exit {
                assert_eq!(
                    policy,
                    [
                        "ExitPolicy reject 10.100.0.1:*",
                        "ExitPolicy accept 10.100.0.0/24:*",
                        "ExitPolicy reject private:*",
                        "ExitPolicy accept *:*"
                    ]
                );
                assert!(t.contains("\nExitRelay 1\n"));
                assert!(t.contains("\nExitPolicyRejectPrivate 0\n"));
                assert!(t.contains("\nServerDNSDetectHijacking 0\n"));
            } else {
                assert_eq!(policy, ["ExitPolicy reject *:*"]);
                assert!(t.contains("\nExitRelay 0\n"));
                assert!(!t.contains("ExitPolicyRejectPrivate"));
            }
        }
    }

    #[test]
    fn authorities_vote_fast_and_flag_the_exit_hsdirs_and_guards() {
        let nodes = keyed_nodes();
        let exit_fp = nodes
            .iter()
            .find(|n| n.role == Role::Exit)
            .unwrap()
            .fingerprint
            .clone();
        for n in &nodes {
            let t = torrc(n, &net(), &[], &[exit_fp.clone().unwrap()]);
            let l = lines(&t);
            let is_auth = n.role == Role::Authority;
            for opt in [
                "AuthoritativeDirectory 1",
                "V3AuthoritativeDirectory 1",
                "AuthDirMaxServersPerAddr 0",
                "TestingV3AuthInitialVotingInterval 10",
                "V3AuthVotingInterval 10",
                "V3AuthNIntervalsValid 2",
                "TestingDirAuthVoteHSDir *",
                "TestingDirAuthVoteGuard *",
                "TestingMinExitFlagThreshold 0",
            ] {
                assert_eq!(l.contains(&opt), is_auth, "{} {opt}", n.nick);
            }
            let vote_exit = format!("TestingDirAuthVoteExit {}", exit_fp.as_deref().unwrap());
            assert_eq!(l.contains(&vote_exit.as_str()), is_auth);
        }
    }

    #[test]
    fn client_has_socks_and_cookie_control_port_for_the_subnet_only() {
        let nodes = keyed_nodes();
        let c = nodes.iter().find(|n| n.role == Role::Client).unwrap();
        let t = torrc(c, &net(), &[], &[]);
        let l = lines(&t);
        for opt in [
            "SocksPort 10.100.0.2:9050",
            "SocksPolicy accept 10.100.0.0/24",
            "SocksPolicy reject *",
            "ControlPort 10.100.0.2:9051",
            "CookieAuthentication 1",
            "PathsNeededToBuildCircuits 0.67",
            "FetchDirInfoEarly 1",
            "FetchDirInfoExtraEarly 1",
        ] {
            assert!(l.contains(&opt), "{opt}");
        }
        assert!(!l
            .iter()
            .any(|x| x.starts_with("ORPort") || x.starts_with("ExitRelay")));
    }

    #[test]
    fn join_options_are_client_options_only() {
        let auths = dir_authority_options(&keyed_nodes(), net().outside);
        let j = join_options(&auths);
        assert_eq!(j[0], "TestingTorNetwork 1");
        assert_eq!(
            j.iter().filter(|o| o.starts_with("DirAuthority ")).count(),
            3
        );
        for relay_only in [
            "ORPort",
            "AssumeReachable",
            "Address ",
            "ExitPolicy",
            "DataDirectory",
        ] {
            assert!(!j.iter().any(|o| o.starts_with(relay_only)), "{relay_only}");
        }
        let t = join_torrc(&j);
        assert!(t.starts_with('#'));
        assert_eq!(t.lines().filter(|l| !l.starts_with('#')).count(), j.len());
        assert_eq!(resolv_conf(net().outside), "nameserver 10.100.0.2\n");
    }
}
