//! The Tor VM ruleset against the real nft and kernel, in throwaway network
//! namespaces (never the host's own ruleset): `check` with and without an
//! uplink, `apply` twice (idempotent replace), a failed apply leaves the table
//! as it was, and another table survives untouched.
//!
//! Needs root and nft, as in CI. Each test makes its own namespace, named
//! after the process and the test, and a guard deletes it even on failure.
//! `apply`/`check` get a wrapper script as their nft program, which runs the
//! real nft inside the namespace: the same code path as in the Tor VM, where
//! the agent passes nft's absolute path.

use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression};
use nftables::schema::{NfCmd, NfListObject, NfObject, Nftables, Rule};
use nftables::stmt::{JumpTarget, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfFamily};
use tails_nft::torvm::{self, Params};
use tails_nft::{apply, check, NftError};

fn find(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("none of {candidates:?} exists (these tests need nft and ip)"))
}

fn nft_path() -> PathBuf {
    find(&["/usr/sbin/nft", "/sbin/nft"])
}

fn ip_path() -> PathBuf {
    find(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"])
}

/// A network namespace of our own and a wrapper that runs nft in it; both
/// removed on drop.
struct Netns {
    name: String,
    dir: PathBuf,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("tails-nft-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let st = Command::new(ip_path())
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(st.success(), "ip netns add {name} (are we root?)");
        // From here on the guard cleans up.
        let ns = Netns { name, dir };
        std::fs::create_dir_all(&ns.dir).expect("temp dir");
        let script = format!(
            "#!/bin/sh\nexec {} netns exec {} {} \"$@\"\n",
            ip_path().display(),
            ns.name,
            nft_path().display()
        );
        let wrapper = ns.nft();
        std::fs::write(&wrapper, script).expect("write wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .expect("chmod wrapper");
        ns
    }

    /// The nft program to give to apply/check.
    fn nft(&self) -> PathBuf {
        self.dir.join("nft")
    }

    /// Runs nft in the namespace with `args` (and `stdin`); its stdout.
    fn run_nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new(self.nft())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.unwrap_or("").as_bytes())
            .expect("write nft stdin");
        drop(pipe);
        let out = child.wait_with_output().expect("wait nft");
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn list_ours(&self) -> String {
        self.run_nft(&["list", "table", "inet", torvm::TABLE], None)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_path())
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

fn count_rules(rs: &Nftables) -> usize {
    rs.objects
        .iter()
        .filter(|o| matches!(o, NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(_)))))
        .count()
}

#[test]
fn check_passes_with_and_without_uplink() {
    let ns = Netns::new("check");
    for up in [Some("eth1"), None] {
        let rs = torvm::ruleset(&params(up));
        check(&rs, &ns.nft()).unwrap_or_else(|e| panic!("check (uplink {up:?}): {e}"));
    }
    // Checking changed nothing.
    assert_eq!(ns.run_nft(&["list", "ruleset"], None), "");
}

#[test]
fn apply_replaces_atomically_and_leaves_other_tables_alone() {
    let ns = Netns::new("apply");
    ns.run_nft(
        &["-f", "-"],
        Some(
            "table ip other {\n\
               set s { type ipv4_addr; elements = { 192.0.2.7 }; }\n\
               chain c { type filter hook input priority 10; policy accept; tcp dport 22 accept; }\n\
             }\n",
        ),
    );
    let other_before = ns.run_nft(&["list", "table", "ip", "other"], None);

    let rs = torvm::ruleset(&params(Some("eth1")));
    apply(&rs, &ns.nft()).expect("first apply");
    let first = ns.list_ours();
    apply(&rs, &ns.nft()).expect("second apply");
    let second = ns.list_ours();
    assert_eq!(first, second, "applying twice is idempotent");
    println!("{second}");

    // Read it back as JSON: our four chains with their policies, and every
    // rule once (not twice).
    let json = ns.run_nft(&["-j", "list", "table", "inet", torvm::TABLE], None);
    let listed: Nftables = serde_json::from_str(&json).expect("parse nft -j output");
    let mut policies = Vec::new();
    let mut rules = 0;
    for obj in listed.objects.iter() {
        match obj {
            NfObject::ListObject(NfListObject::Chain(c)) => {
                assert_eq!(c.family, NfFamily::INet);
                assert_eq!(c.table, torvm::TABLE);
                policies.push((c.name.to_string(), c.policy));
            }
            NfObject::ListObject(NfListObject::Rule(_)) => rules += 1,
            _ => {}
        }
    }
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        policies,
        vec![
            ("forward".to_string(), Some(NfChainPolicy::Drop)),
            ("input".to_string(), Some(NfChainPolicy::Drop)),
            ("output".to_string(), Some(NfChainPolicy::Drop)),
            ("prerouting".to_string(), Some(NfChainPolicy::Accept)),
        ]
    );
    assert_eq!(rules, count_rules(&rs));
    assert!(second.contains("oifname \"eth1\" meta skuid 101 meta l4proto tcp ct state new accept"));

    // A new version replaces the old one (here: no uplink any more).
    apply(&torvm::ruleset(&params(None)), &ns.nft()).expect("apply without uplink");
    let without = ns.list_ours();
    assert!(!without.contains("eth1"), "{without}");
    apply(&rs, &ns.nft()).expect("apply with uplink again");
    assert_eq!(ns.list_ours(), first);

    // A batch the kernel refuses (a jump to a chain that does not exist)
    // changes nothing: the old table stays whole.
    let mut broken = rs.objects.to_vec();
    broken.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(torvm::TABLE),
        chain: Cow::Borrowed("input"),
        expr: Cow::Owned(vec![
            Statement::Match(Match {
                left: Expression::Named(NamedExpression::Meta(Meta {
                    key: MetaKey::L4proto,
                })),
                right: Expression::String("tcp".into()),
                op: Operator::EQ,
            }),
            Statement::Jump(JumpTarget {
                target: "no_such_chain".into(),
            }),
        ]),
        ..Rule::default()
    }))));
    let broken = Nftables {
        objects: Cow::Owned(broken),
    };
    let err = apply(&broken, &ns.nft()).expect_err("the kernel refuses a jump to nowhere");
    assert!(matches!(err, NftError::Refused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    println!("refused as expected: {msg}");
    assert_eq!(ns.list_ours(), first, "a refused apply changes nothing");

    let other_after = ns.run_nft(&["list", "table", "ip", "other"], None);
    assert_eq!(other_before, other_after, "the other table is untouched");
    assert!(other_after.contains("192.0.2.7"));
}

fn host_params(upstreams: &[&str]) -> tails_nft::host::Params {
    tails_nft::host::Params {
        torvm_uid: TORVM_UID,
        no_inet_uids: vec![APPVM_UID],
        upstreams: upstreams.iter().map(|s| s.parse().expect("net")).collect(),
        relay_localhost: Vec::new(),
        relay_lan: Vec::new(),
    }
}

fn appvm_params() -> tails_nft::appvm::Params<'static> {
    tails_nft::appvm::Params {
        iface: "eth0",
        addr: Ipv4Addr::new(10, 1, 2, 3),
        prefix: 24,
        gateway: Ipv4Addr::new(10, 1, 2, 1),
        service_ports: vec![80, 5222],
    }
}

/// Users the host-ruleset test acts as (no account needed: setpriv takes ids).
const TORVM_UID: u32 = 64990;
const APPVM_UID: u32 = 64991;
const OTHER_UID: u32 = 64992;

#[test]
fn host_and_appvm_rulesets_check_apply_read_back_and_remove() {
    use tails_nft::{appvm, host, list, remove};
    let ns = Netns::new("hostapp");
    let mut hp = host_params(&["10.100.0.0/24"]);
    hp.relay_localhost = vec![8080, 5222];
    hp.relay_lan = vec![5222, 64738];
    let hrs = host::ruleset(&hp);
    check(&host::ruleset(&host_params(&[])), &ns.nft()).expect("no relay port passes nft -c");
    let ars = appvm::ruleset(&appvm_params());
    check(&hrs, &ns.nft()).expect("host ruleset passes nft -c");
    check(&ars, &ns.nft()).expect("App VM ruleset passes nft -c");
    assert!(list(host::FAMILY, host::TABLE, &ns.nft())
        .unwrap()
        .is_none());

    ns.run_nft(
        &["-f", "-"],
        Some("table ip other {\n chain c { type filter hook output priority 5; policy accept; }\n}\n"),
    );
    apply(&hrs, &ns.nft()).expect("apply host");
    apply(&ars, &ns.nft()).expect("apply App VM");
    let h = list(host::FAMILY, host::TABLE, &ns.nft())
        .unwrap()
        .expect("host table");
    assert_eq!(h.rules, count_rules(&hrs));
    assert_eq!(h.dropped_packets, 0);
    let text = ns.run_nft(&["list", "table", "inet", host::TABLE], None);
    println!("{text}");
    assert!(text.contains("meta skuid 64990 jump torvm"), "{text}");
    assert!(text.contains("ip daddr 10.100.0.0/24 accept"), "{text}");
    assert!(
        text.contains("tcp dport 8080 iifname != \"lo\" counter packets 0 bytes 0 drop"),
        "{text}"
    );
    assert!(
        text.contains("tcp dport { 5222, 64738 } ip saddr != { 10.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16 } counter"),
        "{text}"
    );
    assert!(
        text.contains(
            "tcp dport { 5222, 64738 } ip6 saddr != { ::1, fc00::/7, fe80::/10 } counter"
        ),
        "{text}"
    );
    let a = list(appvm::FAMILY, appvm::TABLE, &ns.nft())
        .unwrap()
        .expect("App VM table");
    assert_eq!(a.rules, count_rules(&ars));
    let text = ns.run_nft(&["list", "table", "inet", appvm::TABLE], None);
    println!("{text}");
    assert!(text.contains("tcp dport { 80, 5222 } accept"), "{text}");
    assert!(
        text.contains("ip daddr != 10.1.2.0/24 meta l4proto tcp accept"),
        "{text}"
    );

    remove(NfFamily::INet, host::TABLE, &ns.nft()).expect("remove");
    assert!(list(host::FAMILY, host::TABLE, &ns.nft())
        .unwrap()
        .is_none());
    remove(NfFamily::INet, host::TABLE, &ns.nft()).expect("removing twice is fine");
    assert!(list(appvm::FAMILY, appvm::TABLE, &ns.nft())
        .unwrap()
        .is_some());
    assert!(ns
        .run_nft(&["list", "table", "ip", "other"], None)
        .contains("chain c"));
}

/// A TCP listener on `port` (all addresses) inside namespace `ns`; it lives
/// as long as the test process. The kernel completes handshakes without
/// accept(), which is all the test needs.
fn listen_in(ns: &str, port: u16) {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let l = std::net::TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).expect("send");
        std::thread::sleep(std::time::Duration::from_secs(3600));
        drop(l);
    });
    rx.recv().expect("listener ready");
}

/// Does `uid`, in namespace `ns`, get a TCP connection / send a UDP datagram
/// to `addr:port`? (bash's /dev/tcp and /dev/udp; a firewall drop in output
/// fails the connect or the send at once with EPERM.)
fn reaches(ns: &str, uid: u32, proto: &str, addr: &str, port: u16) -> bool {
    let script = format!("exec 3<>/dev/{proto}/{addr}/{port} && echo x >&3");
    Command::new(ip_path())
        .args(["netns", "exec", ns, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "timeout", "2", "bash", "-c", &script])
        .stderr(Stdio::null())
        .status()
        .expect("run bash")
        .success()
}

#[test]
fn host_ruleset_fences_the_qemu_users_for_real() {
    use tails_nft::{host, list};
    let a = Netns::new("fence-a");
    let b = Netns::new("fence-b");
    let ip = |args: &str| {
        let st = Command::new(ip_path())
            .args(args.split_whitespace())
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args}");
    };
    let (va, vb) = (
        format!("fa{}", std::process::id() % 100000),
        format!("fb{}", std::process::id() % 100000),
    );
    ip(&format!(
        "-n {} link add {va} type veth peer name {vb} netns {}",
        a.name, b.name
    ));
    ip(&format!("-n {} addr add 10.100.0.1/24 dev {va}", a.name));
    ip(&format!("-n {} addr add 10.100.0.2/24 dev {vb}", b.name));
    ip(&format!("-n {} addr add 192.168.77.2/24 dev {vb}", b.name));
    ip(&format!("-n {} link set {va} up", a.name));
    ip(&format!("-n {} link set {vb} up", b.name));
    ip(&format!("-n {} link set lo up", a.name));
    ip(&format!(
        "-n {} route add 192.168.77.0/24 via 10.100.0.2",
        a.name
    ));
    listen_in(&b.name, 7000);
    listen_in(&a.name, 7002);

    // Without our table everyone reaches everything: the probes work.
    for (addr, port) in [
        ("10.100.0.2", 7000),
        ("192.168.77.2", 7000),
        ("127.0.0.1", 7002),
    ] {
        assert!(
            reaches(&a.name, TORVM_UID, "tcp", addr, port),
            "{addr}:{port} before"
        );
    }
    assert!(reaches(&a.name, APPVM_UID, "udp", "10.100.0.2", 7001));

    apply(&host::ruleset(&host_params(&["10.100.0.0/24"])), &a.nft()).expect("apply");
    let t = TORVM_UID;
    assert!(
        reaches(&a.name, t, "tcp", "10.100.0.2", 7000),
        "upstream, TCP: allowed"
    );
    assert!(
        !reaches(&a.name, t, "tcp", "192.168.77.2", 7000),
        "private range"
    );
    assert!(!reaches(&a.name, t, "tcp", "127.0.0.1", 7002), "loopback");
    assert!(
        !reaches(&a.name, t, "tcp", "10.100.0.1", 7002),
        "the host's own address"
    );
    assert!(
        !reaches(&a.name, t, "udp", "10.100.0.2", 7001),
        "UDP, even upstream"
    );
    assert!(
        !reaches(&a.name, APPVM_UID, "tcp", "10.100.0.2", 7000),
        "App VM: nothing"
    );
    assert!(
        !reaches(&a.name, APPVM_UID, "udp", "10.100.0.2", 7001),
        "App VM: nothing"
    );
    // Other users are not the table's business.
    assert!(reaches(&a.name, OTHER_UID, "tcp", "192.168.77.2", 7000));
    assert!(reaches(&a.name, OTHER_UID, "udp", "10.100.0.2", 7001));

    let info = list(host::FAMILY, host::TABLE, &a.nft())
        .unwrap()
        .expect("table");
    assert!(
        info.dropped_packets >= 6,
        "counted drops: {}",
        info.dropped_packets
    );

    // Without the upstream, the testnet's subnet is a private range like any other.
    apply(&host::ruleset(&host_params(&[])), &a.nft()).expect("apply");
    assert!(!reaches(&a.name, t, "tcp", "10.100.0.2", 7000));
}

/// Like [`listen_in`], on `::` (IPv4 and IPv6).
fn listen_any_in(ns: &str, port: u16) {
    let path = format!("/run/netns/{ns}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let l = std::net::TcpListener::bind(("::", port)).expect("bind");
        tx.send(()).expect("send");
        std::thread::sleep(std::time::Duration::from_secs(3600));
        drop(l);
    });
    rx.recv().expect("listener ready");
}

#[test]
fn host_input_chain_fences_the_relay_ports_for_real() {
    use tails_nft::host;
    // Namespace `b` is the host with the relay's ports; `a` is a peer that
    // comes from a local range or, towards 192.168.77.2 and 2001:db8::2,
    // from a public one.
    let a = Netns::new("relay-a");
    let b = Netns::new("relay-b");
    let ip = |args: &str| {
        let st = Command::new(ip_path())
            .args(args.split_whitespace())
            .status()
            .expect("ip");
        assert!(st.success(), "ip {args}");
    };
    let (va, vb) = (
        format!("ra{}", std::process::id() % 100000),
        format!("rb{}", std::process::id() % 100000),
    );
    let (na, nb) = (&a.name, &b.name);
    ip(&format!(
        "-n {na} link add {va} type veth peer name {vb} netns {nb}"
    ));
    for (ns, dev, addr) in [
        (na, &va, "10.100.0.1/24"),
        (na, &va, "203.0.113.1/24"),
        (na, &va, "fd00:77::1/64 nodad"),
        (na, &va, "2001:db8::1/64 nodad"),
        (nb, &vb, "10.100.0.2/24"),
        (nb, &vb, "192.168.77.2/24"),
        (nb, &vb, "fd00:77::2/64 nodad"),
        (nb, &vb, "2001:db8::2/64 nodad"),
    ] {
        ip(&format!("-n {ns} addr add {addr} dev {dev}"));
    }
    for (ns, dev) in [
        (na, &va),
        (nb, &vb),
        (na, &"lo".to_string()),
        (nb, &"lo".to_string()),
    ] {
        ip(&format!("-n {ns} link set {dev} up"));
    }
    // From a, 192.168.77.2 is reached from the public 203.0.113.1.
    ip(&format!(
        "-n {na} route add 192.168.77.0/24 via 10.100.0.2 src 203.0.113.1"
    ));
    ip(&format!("-n {nb} route add 203.0.113.0/24 via 10.100.0.1"));
    let (lan, local_only, other) = (7010, 7011, 7012);
    for port in [lan, local_only, other] {
        listen_any_in(nb, port);
    }
    let u = OTHER_UID;
    assert!(
        reaches(na, u, "tcp", "192.168.77.2", lan),
        "before: public source"
    );
    assert!(
        reaches(na, u, "tcp", "10.100.0.2", local_only),
        "before: not lo"
    );

    let mut p = host_params(&[]);
    p.relay_localhost = vec![local_only, lan];
    p.relay_lan = vec![lan];
    apply(&host::ruleset(&p), &b.nft()).expect("apply");

    assert!(
        reaches(na, u, "tcp", "10.100.0.2", lan),
        "LAN port, private source"
    );
    assert!(
        reaches(na, u, "tcp", "fd00:77::2", lan),
        "LAN port, ULA source"
    );
    assert!(
        reaches(nb, u, "tcp", "127.0.0.1", lan),
        "LAN port, loopback"
    );
    assert!(
        !reaches(na, u, "tcp", "192.168.77.2", lan),
        "LAN port, public source"
    );
    assert!(
        !reaches(na, u, "tcp", "2001:db8::2", lan),
        "LAN port, public v6 source"
    );
    assert!(
        reaches(nb, u, "tcp", "127.0.0.1", local_only),
        "local port through lo"
    );
    assert!(
        reaches(nb, u, "tcp", "::1", local_only),
        "local port through lo, v6"
    );
    assert!(
        reaches(nb, u, "tcp", "10.100.0.2", local_only),
        "own address: through lo too"
    );
    assert!(
        !reaches(na, u, "tcp", "10.100.0.2", local_only),
        "local port from the LAN"
    );
    // Other ports are not the table's business.
    assert!(reaches(na, u, "tcp", "192.168.77.2", other));
    assert!(reaches(na, u, "tcp", "2001:db8::2", other));
}

/// Runs `f` on a thread of its own moved into namespace `ns` (setns moves
/// only the calling thread), so a netlink socket it opens is the namespace's.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// What the kernel holds of one table, as nft shows it: the rules in nft's
/// syntax and, under each, its bytecode (`--debug=netlink`: expressions,
/// registers, lengths, values).
fn bytecode(ns: &Netns, family: &str, table: &str) -> String {
    ns.run_nft(&["--debug=netlink", "list", "table", family, table], None)
}

/// The guests' boot rulesets, loaded over netlink by [`tails_nft::apply_netlink`]
/// in one namespace and by nft in another: the kernel holds the same table,
/// bytecode included, for every parameter the agents pass (interface names,
/// with and without an uplink, tor's uid). Loading it again over netlink
/// replaces it whole; what it does not compile (a set of service ports) is
/// refused before anything is sent (and `apply_netlink_or_nft`, the agents'
/// call, then loads it with nft), and a batch the kernel refuses changes
/// nothing and names the command it refused.
#[test]
fn netlink_loads_the_boot_rulesets_as_nft_does() {
    use tails_nft::{apply_netlink, appvm};
    let mut cases: Vec<(&str, &str, Nftables<'static>)> = Vec::new();
    for (internal, uplink, uid) in [
        ("eth0", None, 101),
        ("eth0", Some("eth1"), 101),
        ("eth1", Some("eth0"), 64990),
    ] {
        let mut p = params(uplink);
        p.internal_if = internal;
        p.tor_uid = uid;
        cases.push(("inet", torvm::TABLE, torvm::ruleset(&p)));
    }
    for iface in ["eth0", "eth1"] {
        let mut p = appvm_params();
        p.iface = iface;
        p.service_ports = Vec::new();
        cases.push(("inet", appvm::TABLE, appvm::ruleset(&p)));
    }
    for (i, (family, table, rs)) in cases.into_iter().enumerate() {
        let by_nft = Netns::new(&format!("nl-nft{i}"));
        let by_netlink = Netns::new(&format!("nl-own{i}"));
        apply(&rs, &by_nft.nft()).expect("apply with nft");
        let batch = rs.clone();
        in_netns(&by_netlink.name, move || apply_netlink(&batch)).expect("apply over netlink");
        let want = bytecode(&by_nft, family, table);
        let got = bytecode(&by_netlink, family, table);
        assert!(want.contains("[ cmp eq reg 1 0x0000000a ]"), "{want}");
        assert_eq!(got, want, "case {i}: over netlink vs nft");
        // Again over netlink: replaced whole, the same table.
        let batch = rs.clone();
        in_netns(&by_netlink.name, move || apply_netlink(&batch)).expect("apply again");
        assert_eq!(
            bytecode(&by_netlink, family, table).lines().count(),
            want.lines().count()
        );
    }

    let ns = Netns::new("nl-refused");
    let boot = appvm::ruleset(&tails_nft::appvm::Params {
        service_ports: Vec::new(),
        ..appvm_params()
    });
    let batch = boot.clone();
    in_netns(&ns.name, move || apply_netlink(&batch)).expect("boot table");
    let before = bytecode(&ns, "inet", appvm::TABLE);
    let with_ports = appvm::ruleset(&appvm_params());
    let err = in_netns(&ns.name, move || apply_netlink(&with_ports)).expect_err("a set");
    assert!(matches!(err, NftError::Unsupported(_)), "{err}");
    // A rule for a chain the batch never adds: the kernel refuses the batch
    // (after the table and its chains were accepted: none of it stays).
    let mut bad = boot.clone();
    let mut objects = bad.objects.to_vec();
    objects.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(appvm::TABLE),
        chain: Cow::Borrowed("nowhere"),
        expr: Cow::Owned(vec![Statement::Accept(None)]),
        ..Rule::default()
    }))));
    bad.objects = Cow::Owned(objects);
    let err = in_netns(&ns.name, move || apply_netlink(&bad)).expect_err("refused");
    assert!(matches!(err, NftError::KernelRefused { .. }), "{err}");
    assert!(err.to_string().contains("add rule nowhere"), "{err}");
    assert_eq!(
        bytecode(&ns, "inet", appvm::TABLE),
        before,
        "nothing changed"
    );

    // What the agents call: netlink when it can, else nft (here, the set of
    // ports), and the table is loaded either way.
    let nft = ns.nft();
    let (b, n) = (boot.clone(), nft.clone());
    let how = in_netns(&ns.name, move || tails_nft::apply_netlink_or_nft(&b, &n)).expect("boot");
    assert!(matches!(how, tails_nft::Loaded::Netlink), "{how}");
    let with_ports = appvm::ruleset(&appvm_params());
    let how = in_netns(&ns.name, move || {
        tails_nft::apply_netlink_or_nft(&with_ports, &nft)
    })
    .expect("with nft");
    assert!(
        matches!(how, tails_nft::Loaded::Nft(NftError::Unsupported(_))),
        "{how}"
    );
    assert!(how.to_string().starts_with("with nft ("), "{how}");
    let listed = ns.run_nft(&["list", "table", "inet", appvm::TABLE], None);
    assert!(listed.contains("tcp dport { 80, 5222 } accept"), "{listed}");
}
