//! tails-testnet: an embedded private Tor network, the "outside" of the
//! isolation tests (see DESIGN.md, "Testing the isolation").
//!
//! [`up`] creates a network namespace (default `ts-outside`) whose only link
//! is a veth pair (`ts-out0` 10.100.0.1/24 in the root namespace, `ts-out1`
//! 10.100.0.2/24 inside, no default route), and starts in it, detached and
//! as debian-tor: three directory authorities, two relays and one exit
//! (Debian's tor with TestingTorNetwork, keys from tor-gencert), one client
//! tor with a SOCKS and a control port, dnsmasq answering `outside.test` and
//! a web server on 10.100.0.2:8080 logging each client's address. It
//! returns once the client has bootstrapped, the consensus lists an exit
//! and HSDirs, a circuit is built and a page was fetched through the exit.
//! [`status`] and [`down`] work from any process, through
//! `<state_dir>/testnet.json`. A tor elsewhere joins with [`join_options`]
//! (also written to `<state_dir>/join.torrc`).
//!
//! The exit's policy is `accept <subnet>:*`, `reject private:*`, `accept *:*`.
//! What it can reach is bounded by its namespace, whose only route is the
//! subnet. A policy ending in `reject *:*` would not do: clients judge exits
//! by the policy summary in the consensus and microdescriptors, which counts
//! only accept rules for every address, so it would sum up to "no exit".

mod control;
mod dns;
mod error;
mod netns;
mod process;
mod socks;
mod state;
mod torrc;
mod web;

pub use web::utc;

use std::ffi::CString;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{chown, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use error::TestnetError;

use control::{parse_bootstrap, parse_ns_all, Consensus, ControlConn};
use netns::Net;
use process::{check_output, last_problem, spawn_detached, stop_all, ProcId};
use state::State;
use torrc::{NetParams, Node, Role};

/// The name the outside DNS server resolves to the outside address.
pub const OUTSIDE_NAME: &str = torrc::OUTSIDE_NAME;
/// The page the outside web server serves for every request.
pub const OUTSIDE_PAGE: &str = web::PAGE;

/// How long `up` waits for the network to be usable.
const READY_DEADLINE: Duration = Duration::from_secs(120);
/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long stopped processes get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Relays the consensus must list before the network counts as up.
const MIN_RELAYS: usize = 3;
/// The user every tor runs as.
const TOR_USER: &str = "debian-tor";
/// The file that marks a directory as a testnet state directory.
const MARKER: &str = ".tails-testnet";
/// A dummy authority, so that `tor --list-fingerprint` accepts a relay configuration.
const DUMMY_AUTHORITY: &str = "xyzzy 127.0.0.1:1 ffffffffffffffffffffffffffffffffffffffff";

/// Where and how the testnet runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// State directory: data dirs, torrcs, logs, testnet.json, join.torrc.
    pub state_dir: PathBuf,
    /// The network namespace; the veth pair is named after its first 6
    /// characters (`ts-outside` gives `ts-out0`/`ts-out1`).
    pub netns: String,
    /// The first three octets of the /24 between the host (.1) and the outside (.2).
    pub subnet_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/run/tails-server-testnet"),
            netns: "ts-outside".into(),
            // Outside tor's VirtualAddrNetworkIPv4 (10.192.0.0/10, as in Tails):
            // a destination there would be taken for a mapped address.
            subnet_prefix: "10.100.0".into(),
        }
    }
}

/// What the testnet looks like now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Every process of the testnet runs and the namespace exists.
    pub up: bool,
    /// Relays in the client's consensus (authorities included).
    pub relays: usize,
    /// Of those, with the Exit flag.
    pub exits: usize,
    /// Of those, with the HSDir flag.
    pub hsdirs: usize,
    /// The client's bootstrap percentage.
    pub bootstrap: u8,
    /// The client's SOCKS port (reachable from the root namespace).
    pub socks: Option<SocketAddr>,
    /// The client's control port (cookie in the client's data directory).
    pub control: Option<SocketAddr>,
    /// The torrc fragment another tor includes to join.
    pub join_torrc: Option<PathBuf>,
    /// The outside web server.
    pub web: Option<SocketAddr>,
    /// Its log: one line per request, with the client's address.
    pub web_log: Option<PathBuf>,
    /// The root namespace's end of the veth pair (10.100.0.1).
    pub host_addr: Ipv4Addr,
    /// The namespace's end, where everything listens (10.100.0.2).
    pub outside_addr: Ipv4Addr,
    /// The subnet between them ("10.100.0.0/24").
    pub subnet: String,
}

/// What [`up`] tells its `progress` when the testnet is already up (and the
/// CLI prints): the harness tells so a testnet it joined from one it started.
pub const ALREADY_UP: &str = "testnet already up";

/// Starts the testnet and returns once it is usable (at most 120 s), telling
/// `progress` what it does. A no-op (said through `progress`) if it is
/// already up, and an error if it is up but was started in another network
/// namespace; a stale half-started testnet is cleaned up first.
pub fn up(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Status, TestnetError> {
    let net = net_of(cfg)?;
    check_state_dir(cfg)?;
    require_root()?;
    let tools = Tools::find()?;
    let ids = user_ids(TOR_USER).ok_or(TestnetError::MissingUser {
        user: TOR_USER,
        package: "tor",
    })?;
    if let Ok(Some(st)) = State::load(&cfg.state_dir) {
        if is_running(&st) {
            reachable_here(&st)?;
            progress(ALREADY_UP);
            let now = Instant::now();
            return wait_ready(cfg, &st, now, now + READY_DEADLINE, false, progress);
        }
    }
    if leftovers(cfg, &net) {
        progress("cleaning up a stale testnet");
        teardown(cfg, &net, true)?;
    }
    let t0 = Instant::now();
    let result = start(cfg, &net, &tools, ids, progress, t0);
    if result.is_err() {
        // Stop what was started; keep the state directory with the logs.
        let _ = teardown(cfg, &net, false);
    }
    result
}

/// Stops every process of the testnet and removes the namespace, the veth
/// pair and the state directory. Returns whether there was anything to remove.
pub fn down(cfg: &Config) -> Result<bool, TestnetError> {
    let net = net_of(cfg)?;
    check_state_dir(cfg)?;
    if !leftovers(cfg, &net) {
        return Ok(false);
    }
    require_root()?;
    teardown(cfg, &net, true)
}

/// The testnet's status, from the state file and the client's control port.
pub fn status(cfg: &Config) -> Result<Status, TestnetError> {
    let net = net_of(cfg)?;
    match State::load(&cfg.state_dir)? {
        Some(st) if is_running(&st) => Ok(running_status(cfg, &st)),
        _ => Ok(down_status(&net)),
    }
}

/// The DirAuthority lines (and other options) a tor outside the namespace needs to join.
/// An error if the testnet is not running. Not checked against the caller's
/// network namespace: the options are data, and the tor that uses them may
/// run elsewhere (the fault test's client runs in the testnet's own).
pub fn join_options(cfg: &Config) -> Result<Vec<String>, TestnetError> {
    Ok(running(cfg)?.join_options)
}

/// [`join_options`] for a tor that runs in the calling thread's network
/// namespace (the daemon's, whose Tor VM's uplink is there): an error if the
/// testnet was started in another one, whose relays are out of reach here.
pub fn join_options_here(cfg: &Config) -> Result<Vec<String>, TestnetError> {
    let st = running(cfg)?;
    reachable_here(&st)?;
    Ok(st.join_options)
}

/// The state of the testnet that runs, or [`TestnetError::NotUp`].
fn running(cfg: &Config) -> Result<State, TestnetError> {
    match State::load(&cfg.state_dir)? {
        Some(st) if is_running(&st) => Ok(st),
        _ => Err(TestnetError::NotUp),
    }
}

/// An error if `st`'s testnet was started in another network namespace
/// than the calling thread's: its veth's host end is there, so the relays
/// are out of reach from here. (A state file that does not say: no check.)
fn reachable_here(st: &State) -> Result<(), TestnetError> {
    match (&st.started_in, state::own_netns()) {
        (Some(theirs), Some(ours)) if *theirs != ours => Err(TestnetError::OtherNamespace {
            theirs: theirs.clone(),
            ours,
        }),
        _ => Ok(()),
    }
}

/// Fetch `http://<host>:<port>/` as the testnet's client (in the outside
/// namespace) through its SOCKS port. With `auth_private` (a client's
/// `<address>:descriptor:x25519:<base32 key>` line), the client first learns
/// that onion service's client-authorization key over its control port.
/// Returns the page; waits up to `timeout` for it.
pub fn fetch(
    cfg: &Config,
    host: &str,
    port: u16,
    auth_private: Option<&str>,
    timeout: Duration,
) -> Result<String, TestnetError> {
    let st = running(cfg)?;
    if let Some(line) = auth_private {
        let parts: Vec<&str> = line.trim().split(':').collect();
        let [addr, "descriptor", "x25519", key] = parts[..] else {
            return Err(TestnetError::Config(
                "the key line must look like <address>:descriptor:x25519:<key>".into(),
            ));
        };
        let raw = data_encoding::BASE32_NOPAD
            .decode(key.to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                TestnetError::Config("the client key is not 52 base32 characters".into())
            })?;
        let addr = addr.trim_end_matches(".onion");
        if addr.len() != 56 || !addr.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TestnetError::Config(
                "the key line's address is not a v3 onion address".into(),
            ));
        }
        let mut c = ControlConn::connect(
            control_addr(&st),
            &cookie_path(cfg),
            Duration::from_secs(10),
        )
        .map_err(TestnetError::Client)?;
        // The control port takes the key in base64 (the line has base32).
        c.onion_client_auth_add(addr, &data_encoding::BASE64.encode(&raw))
            .map_err(TestnetError::Client)?;
    }
    let socks = SocketAddr::from((st.outside_addr, st.socks_port));
    let start = std::time::Instant::now();
    loop {
        match socks::http_get(socks, host, port, "/", Duration::from_secs(60)) {
            Ok(body) => return Ok(body),
            Err(e) if start.elapsed() >= timeout => {
                return Err(TestnetError::Client(format!(
                    "no page from {host} after {} s: {e}",
                    timeout.as_secs()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// The ports relays listen on, on the outside address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPorts {
    /// ORPorts of every relay (authorities included), sorted.
    pub or: Vec<u16>,
    /// DirPorts, sorted.
    pub dir: Vec<u16>,
}

/// The OR and Dir ports of the running testnet: the only ports a tor
/// joining it talks to.
pub fn relay_ports(cfg: &Config) -> Result<RelayPorts, TestnetError> {
    let st = running(cfg)?;
    let mut or: Vec<u16> = st.nodes.iter().filter_map(|n| n.or_port).collect();
    let mut dir: Vec<u16> = st.nodes.iter().filter_map(|n| n.dir_port).collect();
    or.sort_unstable();
    dir.sort_unstable();
    Ok(RelayPorts { or, dir })
}

/// The subnet between the host and the outside namespace (`10.100.0.0/24`):
/// the upstream a Tor VM joining the testnet must be allowed to reach.
pub fn subnet(cfg: &Config) -> Result<String, TestnetError> {
    Ok(net_of(cfg)?.subnet())
}

fn net_of(cfg: &Config) -> Result<Net, TestnetError> {
    let ip = find_tool("ip").unwrap_or_else(|| PathBuf::from("ip"));
    Net::new(&cfg.netns, &cfg.subnet_prefix, ip)
}

fn check_state_dir(cfg: &Config) -> Result<(), TestnetError> {
    let d = &cfg.state_dir;
    if !d.is_absolute() || d.parent().is_none() || d.file_name().is_none() {
        return Err(TestnetError::Config(format!(
            "state_dir {} must be an absolute path below /",
            d.display()
        )));
    }
    Ok(())
}

fn require_root() -> Result<(), TestnetError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(TestnetError::NotRoot);
    }
    Ok(())
}

/// The programs the testnet runs, by absolute path.
struct Tools {
    ip: PathBuf,
    tor: PathBuf,
    tor_gencert: PathBuf,
    dnsmasq: PathBuf,
    setpriv: PathBuf,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

impl Tools {
    fn find() -> Result<Tools, TestnetError> {
        let need = |tool: &'static str, package: &'static str| {
            find_tool(tool).ok_or(TestnetError::MissingTool { tool, package })
        };
        Ok(Tools {
            ip: need("ip", "iproute2")?,
            tor: need("tor", "tor")?,
            tor_gencert: need("tor-gencert", "tor")?,
            dnsmasq: need("dnsmasq", "dnsmasq-base")?,
            setpriv: need("setpriv", "util-linux")?,
        })
    }
}

/// uid and gid of a user.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    // SAFETY: getpwnam_r with valid buffers; pwd is read only when it succeeded.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some((pwd.pw_uid, pwd.pw_gid))
    }
}

fn is_running(st: &State) -> bool {
    let procs = st.procs();
    Path::new("/run/netns").join(&st.netns).exists()
        && st.nodes.iter().all(|n| n.proc.is_some())
        && st.dnsmasq.is_some()
        && st.web.is_some()
        && procs.iter().all(|(_, p)| p.alive())
}

/// Whether anything of a testnet exists: state directory, namespace, veth.
fn leftovers(cfg: &Config, net: &Net) -> bool {
    cfg.state_dir.exists() || net.exists() || net.veth_exists()
}

/// Stops every process (recorded ones, and any other in the namespace),
/// removes the veth pair and the namespace, and the state directory if
/// `remove_state` (else keeps it, with the logs).
fn teardown(cfg: &Config, net: &Net, remove_state: bool) -> Result<bool, TestnetError> {
    let mut was = false;
    let mut nets = vec![net.clone()];
    let mut procs = Vec::new();
    match State::load(&cfg.state_dir) {
        Ok(Some(st)) => {
            procs.extend(st.procs());
            if st.netns != net.netns {
                let prefix = st.subnet.trim_end_matches(".0/24");
                if let Ok(other) = Net::new(&st.netns, prefix, net.ip.clone()) {
                    nets.push(other);
                }
            }
        }
        Ok(None) => {}
        Err(_) => was = true,
    }
    for n in &nets {
        for p in n.member_procs() {
            if !procs.iter().any(|(_, q)| *q == p) {
                procs.push((format!("process {} in netns {}", p.pid, n.netns), p));
            }
        }
    }
    was |= stop_all(&procs, STOP_GRACE)?;
    for n in &nets {
        if n.exists() || n.veth_exists() {
            was = true;
            n.destroy()?;
        }
    }
    let dir = &cfg.state_dir;
    if remove_state && dir.exists() {
        let empty = fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !dir.join(MARKER).exists() {
            return Err(TestnetError::ForeignStateDir(dir.clone()));
        }
        was = true;
        fs::remove_dir_all(dir)
            .map_err(|e| TestnetError::io(format!("remove {}", dir.display()), e))?;
    }
    Ok(was)
}

fn mkdir(path: &Path, mode: u32, owner: (u32, u32)) -> Result<(), TestnetError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .and_then(|_| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .and_then(|_| chown(path, Some(owner.0), Some(owner.1)))
        .map_err(|e| TestnetError::io(format!("create {}", path.display()), e))
}

/// Write `path` with exactly `mode`, whatever the caller's umask (the CLI
/// runs with 077; tor, as debian-tor, must read these files).
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), TestnetError> {
    use std::io::Write;
    fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(contents.as_bytes())
        })
        .map_err(|e| TestnetError::io(format!("write {}", path.display()), e))
}

fn empty_torrc(state_dir: &Path) -> PathBuf {
    state_dir.join("empty.torrc")
}

fn start(
    cfg: &Config,
    net: &Net,
    tools: &Tools,
    ids: (u32, u32),
    progress: &dyn Fn(&str),
    t0: Instant,
) -> Result<Status, TestnetError> {
    let dir = &cfg.state_dir;
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| TestnetError::io(format!("create {}", parent.display()), e))?;
    }
    // Root's, traversable by debian-tor (the data directories below are its own, 0700).
    mkdir(dir, 0o750, (0, ids.1))?;
    write_file(
        &dir.join(MARKER),
        "tails-server testnet state directory\n",
        0o644,
    )?;
    net.check_subnet_free()?;
    progress(&format!(
        "creating network namespace {} ({} {}/24 <-> {} {}/24, no default route)",
        net.netns, net.veth_host, net.host, net.veth_ns, net.outside
    ));
    net.create()?;

    let params = NetParams {
        outside: net.outside,
        host: net.host,
        subnet: net.subnet(),
        state_dir: dir.clone(),
    };
    write_file(
        &params.resolv_conf(),
        &torrc::resolv_conf(net.outside),
        0o644,
    )?;
    write_file(&empty_torrc(dir), "", 0o644)?;
    let mut nodes = torrc::plan_nodes();
    for n in &nodes {
        let dd = params.data_dir(&n.nick);
        mkdir(&dd, 0o700, ids)?;
        if n.role == Role::Authority {
            mkdir(&dd.join("keys"), 0o700, ids)?;
        }
    }
    progress(
        "generating keys (tor-gencert for the authorities, tor --list-fingerprint for the relays)",
    );
    make_keys(tools, ids, &params, &mut nodes)?;
    let auths = torrc::dir_authority_options(&nodes, net.outside);
    let exits: Vec<String> = nodes
        .iter()
        .filter(|n| n.role == Role::Exit)
        .filter_map(|n| n.fingerprint.clone())
        .collect();
    for n in &nodes {
        write_file(
            &params.torrc_path(&n.nick),
            &torrc::torrc(n, &params, &auths, &exits),
            0o644,
        )?;
    }
    let join = torrc::join_options(&auths);
    write_file(&dir.join("join.torrc"), &torrc::join_torrc(&join), 0o644)?;

    let mut st = State {
        version: state::VERSION,
        netns: net.netns.clone(),
        veth_host: net.veth_host.clone(),
        veth_ns: net.veth_ns.clone(),
        subnet: net.subnet(),
        host_addr: net.host,
        outside_addr: net.outside,
        socks_port: torrc::SOCKS_PORT,
        control_port: torrc::CONTROL_PORT,
        web_port: torrc::WEB_PORT,
        dns_port: torrc::DNS_PORT,
        nodes,
        dnsmasq: None,
        web: None,
        join_options: join,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        started_in: state::own_netns(),
    };
    st.save(dir)?;

    progress(&format!(
        "starting dnsmasq ({OUTSIDE_NAME} -> {}) and the outside web server on {}:{}",
        net.outside,
        net.outside,
        torrc::WEB_PORT
    ));
    st.dnsmasq = Some(start_dnsmasq(tools, net, dir)?);
    st.save(dir)?;
    st.web = Some(web::spawn(
        &net.path(),
        SocketAddr::new(net.outside.into(), torrc::WEB_PORT),
        &dir.join("web.log"),
    )?);
    st.save(dir)?;
    progress(&format!("starting {} tor processes", st.nodes.len()));
    for i in 0..st.nodes.len() {
        let p = start_tor(tools, ids, net, &params, &st.nodes[i].nick)?;
        st.nodes[i].proc = Some(p);
        st.save(dir)?;
    }
    progress(&format!(
        "waiting for the network (at most {} s; logs in {})",
        READY_DEADLINE.as_secs(),
        dir.display()
    ));
    wait_ready(cfg, &st, t0, t0 + READY_DEADLINE, true, progress)
}

/// `setpriv` arguments that run the rest as `ids`, without supplementary groups.
fn as_user(tools: &Tools, ids: (u32, u32)) -> Vec<String> {
    vec![
        tools.setpriv.display().to_string(),
        format!("--reuid={}", ids.0),
        format!("--regid={}", ids.1),
        "--clear-groups".into(),
        "--".into(),
    ]
}

/// Makes every relay's identity (tor --list-fingerprint) and every
/// authority's v3 keys and certificate (tor-gencert), all at once, as
/// debian-tor; then reads the fingerprints and v3 identities.
fn make_keys(
    tools: &Tools,
    ids: (u32, u32),
    p: &NetParams,
    nodes: &mut [Node],
) -> Result<(), TestnetError> {
    let empty = empty_torrc(&p.state_dir).display().to_string();
    let mut jobs: Vec<(Vec<String>, Child)> = Vec::new();
    for n in nodes.iter().filter(|n| n.role != Role::Client) {
        let dd = p.data_dir(&n.nick);
        let (Some(or_port), Some(dir_port)) = (n.or_port, n.dir_port) else {
            continue;
        };
        let mut cmds = vec![vec![
            tools.tor.display().to_string(),
            "--list-fingerprint".into(),
            "--defaults-torrc".into(),
            empty.clone(),
            "-f".into(),
            empty.clone(),
            "--DataDirectory".into(),
            dd.display().to_string(),
            "--Nickname".into(),
            n.nick.clone(),
            "--ORPort".into(),
            or_port.to_string(),
            "--DirAuthority".into(),
            DUMMY_AUTHORITY.into(),
        ]];
        if n.role == Role::Authority {
            let k = dd.join("keys");
            let key = |f: &str| k.join(f).display().to_string();
            cmds.push(vec![
                tools.tor_gencert.display().to_string(),
                "--create-identity-key".into(),
                "--passphrase-fd".into(),
                "0".into(),
                "-i".into(),
                key("authority_identity_key"),
                "-s".into(),
                key("authority_signing_key"),
                "-c".into(),
                key("authority_certificate"),
                "-m".into(),
                "12".into(),
                "-a".into(),
                format!("{}:{dir_port}", p.outside),
            ]);
        }
        for cmd in cmds {
            let mut full = as_user(tools, ids);
            full.extend(cmd);
            // stdin /dev/null: tor-gencert reads an empty passphrase.
            let child = Command::new(&full[0])
                .args(&full[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| TestnetError::io(format!("run {}", full[5]), e))?;
            jobs.push((full, child));
        }
    }
    for (cmd, child) in jobs {
        let out = child
            .wait_with_output()
            .map_err(|e| TestnetError::io(format!("wait for {}", cmd[5]), e))?;
        let args: Vec<&str> = cmd[1..].iter().map(String::as_str).collect();
        check_output(Path::new(&cmd[0]), &args, out)?;
    }
    for n in nodes.iter_mut().filter(|n| n.role != Role::Client) {
        let dd = p.data_dir(&n.nick);
        let f = dd.join("fingerprint");
        let text = fs::read_to_string(&f)
            .map_err(|e| TestnetError::io(format!("read {}", f.display()), e))?;
        n.fingerprint =
            Some(
                parse_fingerprint_file(&text).ok_or_else(|| TestnetError::Command {
                    command: "tor --list-fingerprint".into(),
                    detail: format!("no fingerprint in {}", f.display()),
                })?,
            );
        if n.role == Role::Authority {
            let c = dd.join("keys/authority_certificate");
            let text = fs::read_to_string(&c)
                .map_err(|e| TestnetError::io(format!("read {}", c.display()), e))?;
            n.v3ident = Some(parse_certificate_fingerprint(&text).ok_or_else(|| {
                TestnetError::Command {
                    command: "tor-gencert".into(),
                    detail: format!("no fingerprint line in {}", c.display()),
                }
            })?);
        }
    }
    Ok(())
}

fn is_fingerprint(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The fingerprint in a relay's `fingerprint` file ("nickname HEX").
fn parse_fingerprint_file(text: &str) -> Option<String> {
    let fp = text.split_whitespace().nth(1)?;
    is_fingerprint(fp).then(|| fp.to_ascii_uppercase())
}

/// The v3 identity in an authority certificate (its "fingerprint HEX" line).
fn parse_certificate_fingerprint(text: &str) -> Option<String> {
    let fp = text
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))?
        .trim();
    is_fingerprint(fp).then(|| fp.to_ascii_uppercase())
}

fn start_tor(
    tools: &Tools,
    ids: (u32, u32),
    net: &Net,
    p: &NetParams,
    nick: &str,
) -> Result<ProcId, TestnetError> {
    let mut args = vec!["netns".to_string(), "exec".into(), net.netns.clone()];
    args.extend(as_user(tools, ids));
    args.extend([
        tools.tor.display().to_string(),
        "--defaults-torrc".into(),
        empty_torrc(&p.state_dir).display().to_string(),
        "-f".into(),
        p.torrc_path(nick).display().to_string(),
    ]);
    spawn_detached(&tools.ip, &args, &p.out_path(nick))
}

fn start_dnsmasq(tools: &Tools, net: &Net, dir: &Path) -> Result<ProcId, TestnetError> {
    let user = if user_ids("dnsmasq").is_some() {
        "dnsmasq"
    } else {
        "nobody"
    };
    let o = net.outside;
    let args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        net.netns.clone(),
        tools.dnsmasq.display().to_string(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-poll".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={o}"),
        format!("--port={}", torrc::DNS_PORT),
        format!("--address=/{OUTSIDE_NAME}/{o}"),
        "--log-facility=-".into(),
        "--log-queries".into(),
        "--pid-file=".into(),
        format!("--user={user}"),
    ];
    spawn_detached(&tools.ip, &args, &dir.join("dnsmasq.log"))
}

/// Where a process's problems are logged.
fn log_of(cfg: &Config, name: &str) -> PathBuf {
    let dir = &cfg.state_dir;
    match name {
        "dnsmasq" => dir.join("dnsmasq.log"),
        "web server" => dir.join("web.log"),
        nick => {
            let notice = dir.join(nick).join("notice.log");
            if notice.exists() {
                notice
            } else {
                dir.join(format!("{nick}.out"))
            }
        }
    }
}

/// The first recorded process that is no longer running, as an error.
fn first_dead(cfg: &Config, st: &State) -> Option<TestnetError> {
    let (name, _) = st.procs().into_iter().find(|(_, p)| !p.alive())?;
    let log = log_of(cfg, &name);
    let last = last_problem(&log)
        .or_else(|| last_problem(&cfg.state_dir.join(format!("{name}.out"))))
        .unwrap_or_else(|| "no error logged".into());
    Some(TestnetError::ProcessDied { name, last, log })
}

/// What the client's control port says.
struct ClientView {
    bootstrap: (u8, String),
    consensus: Consensus,
    circuit: bool,
}

fn control_addr(st: &State) -> SocketAddr {
    SocketAddr::new(st.outside_addr.into(), st.control_port)
}

fn cookie_path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("tsclient").join("control_auth_cookie")
}

fn query_client(c: &mut ControlConn) -> Result<ClientView, String> {
    let b = c.getinfo("status/bootstrap-phase")?;
    let bootstrap =
        parse_bootstrap(&b).ok_or_else(|| format!("unparsable bootstrap phase {b:?}"))?;
    let consensus = parse_ns_all(&c.getinfo("ns/all")?);
    let circuit = c.getinfo("status/circuit-established")?.trim() == "1";
    Ok(ClientView {
        bootstrap,
        consensus,
        circuit,
    })
}

/// Checks every readiness condition in order; the first unmet one is the error.
fn check_ready(
    cfg: &Config,
    st: &State,
    ctl: &mut Option<ControlConn>,
    remaining: Duration,
) -> Result<(), String> {
    let addr = control_addr(st);
    if ctl.is_none() {
        let c = ControlConn::connect(addr, &cookie_path(cfg), Duration::from_secs(5))
            .map_err(|e| format!("client tor control port {addr} not usable yet: {e}"))?;
        *ctl = Some(c);
    }
    let view = match ctl.as_mut().map(query_client) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            *ctl = None;
            return Err(format!("client tor control port {addr}: {e}"));
        }
        None => return Err(format!("client tor control port {addr} not connected")),
    };
    let (p, summary) = &view.bootstrap;
    if *p < 100 {
        return Err(format!("client bootstrap at {p}% ({summary})"));
    }
    let c = view.consensus;
    if c.relays < MIN_RELAYS || c.exits < 1 || c.hsdirs < 1 {
        return Err(format!(
            "consensus lists {} relays, {} exits, {} HSDirs (need at least {MIN_RELAYS}, 1, 1)",
            c.relays, c.exits, c.hsdirs
        ));
    }
    if !view.circuit {
        return Err("client has built no circuit yet (status/circuit-established=0)".into());
    }
    let dns = SocketAddr::new(st.outside_addr.into(), st.dns_port);
    match dns::query_a(dns, OUTSIDE_NAME, Duration::from_secs(3)) {
        Ok(a) if a.contains(&st.outside_addr) => {}
        Ok(a) => {
            return Err(format!(
                "outside DNS server {dns} answers {OUTSIDE_NAME} with {a:?}"
            ))
        }
        Err(e) => return Err(format!("outside DNS server {dns} on {OUTSIDE_NAME}: {e}")),
    }
    let socks = SocketAddr::new(st.outside_addr.into(), st.socks_port);
    let timeout = remaining.clamp(Duration::from_secs(1), Duration::from_secs(20));
    match socks::http_get(
        socks,
        OUTSIDE_NAME,
        st.web_port,
        "/tails-testnet-readiness",
        timeout,
    ) {
        Ok(body) if body == OUTSIDE_PAGE => Ok(()),
        Ok(body) => Err(format!("the outside web page through the exit is {body:?}")),
        Err(e) => Err(format!(
            "fetch of http://{OUTSIDE_NAME}:{}/ through SOCKS {socks} failed: {e}",
            st.web_port
        )),
    }
}

/// Whether a directory authority serves a consensus yet (HTTP 200 on its DirPort).
fn consensus_published(st: &State) -> bool {
    st.nodes
        .iter()
        .filter(|n| n.role == Role::Authority)
        .filter_map(|n| n.dir_port)
        .any(|port| {
            let addr = SocketAddr::new(st.outside_addr.into(), port);
            socks::http_status(
                addr,
                "/tor/status-vote/current/consensus-microdesc",
                Duration::from_secs(2),
            )
            .map(|code| code == 200)
            .unwrap_or(false)
        })
}

/// Polls until the network is usable (see [`check_ready`]) or `deadline`.
///
/// With `nudge` (a network just started), once the authorities publish
/// their first consensus, the relays and the client get a SIGHUP, which
/// makes tor forget its failed consensus downloads and fetch at once:
/// before the first consensus each attempt fails (404) and tor's
/// exponential backoff could otherwise keep an exit without a consensus,
/// hence refusing streams, for 20 s or more.
fn wait_ready(
    cfg: &Config,
    st: &State,
    t0: Instant,
    deadline: Instant,
    nudge: bool,
    progress: &dyn Fn(&str),
) -> Result<Status, TestnetError> {
    let mut ctl = None;
    let mut last = String::new();
    let mut nudged = !nudge;
    loop {
        if let Some(e) = first_dead(cfg, st) {
            return Err(e);
        }
        if !nudged && consensus_published(st) {
            nudged = true;
            progress("first consensus published: asking the relays and the client to fetch it");
            for n in st.nodes.iter().filter(|n| n.role != Role::Authority) {
                if let Some(p) = n.proc {
                    p.signal(libc::SIGHUP);
                }
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match check_ready(cfg, st, &mut ctl, remaining) {
            Ok(()) => break,
            Err(unmet) => {
                if unmet != last {
                    progress(&format!("waiting: {unmet}"));
                    last = unmet;
                }
                if Instant::now() >= deadline {
                    return Err(TestnetError::NotReady {
                        secs: deadline.saturating_duration_since(t0).as_secs(),
                        condition: last,
                        logs: cfg.state_dir.clone(),
                    });
                }
            }
        }
        thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
    }
    progress(&format!(
        "testnet ready after {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    drop(ctl);
    Ok(running_status(cfg, st))
}

fn running_status(cfg: &Config, st: &State) -> Status {
    let view = ControlConn::connect(control_addr(st), &cookie_path(cfg), Duration::from_secs(3))
        .and_then(|mut c| query_client(&mut c))
        .ok();
    let (bootstrap, consensus) = view
        .map(|v| (v.bootstrap.0, v.consensus))
        .unwrap_or_default();
    let outside = st.outside_addr.into();
    Status {
        up: true,
        relays: consensus.relays,
        exits: consensus.exits,
        hsdirs: consensus.hsdirs,
        bootstrap,
        socks: Some(SocketAddr::new(outside, st.socks_port)),
        control: Some(control_addr(st)),
        join_torrc: Some(cfg.state_dir.join("join.torrc")),
        web: Some(SocketAddr::new(outside, st.web_port)),
        web_log: Some(cfg.state_dir.join("web.log")),
        host_addr: st.host_addr,
        outside_addr: st.outside_addr,
        subnet: st.subnet.clone(),
    }
}

fn down_status(net: &Net) -> Status {
    Status {
        up: false,
        relays: 0,
        exits: 0,
        hsdirs: 0,
        bootstrap: 0,
        socks: None,
        control: None,
        join_torrc: None,
        web: None,
        web_log: None,
        host_addr: net.host,
        outside_addr: net.outside,
        subnet: net.subnet(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.state_dir, Path::new("/run/tails-server-testnet"));
        assert_eq!(c.netns, "ts-outside");
        assert_eq!(c.subnet_prefix, "10.100.0");
        let s = down_status(&net_of(&c).unwrap());
        assert!(!s.up);
        assert_eq!(s.host_addr, Ipv4Addr::new(10, 100, 0, 1));
        assert_eq!(s.outside_addr, Ipv4Addr::new(10, 100, 0, 2));
        assert_eq!(s.subnet, "10.100.0.0/24");
    }

    #[test]
    fn key_files_are_parsed() {
        assert_eq!(
            parse_fingerprint_file("tsauth0 D16EEBB76B6230F8986B806055CDE73983462A29\n").as_deref(),
            Some("D16EEBB76B6230F8986B806055CDE73983462A29")
        );
        assert_eq!(parse_fingerprint_file("tsauth0 XYZ\n"), None);
        assert_eq!(parse_fingerprint_file(""), None);
        let cert = "dir-key-certificate-version 3\ndir-address 10.100.0.2:7000\nfingerprint E23E232B015903C9F314C9368D88F822229CF5EE\ndir-key-published 2024-01-01 00:00:00\n";
        assert_eq!(
            parse_certificate_fingerprint(cert).as_deref(),
            Some("E23E232B015903C9F314C9368D88F822229CF5EE")
        );
        assert_eq!(parse_certificate_fingerprint("fingerprint 12\n"), None);
    }

    #[test]
    fn relative_or_root_state_dirs_are_refused() {
        for d in ["run/x", "/", ""] {
            let c = Config {
                state_dir: d.into(),
                ..Config::default()
            };
            assert!(
                matches!(check_state_dir(&c), Err(TestnetError::Config(_))),
                "{d}"
            );
        }
    }

    #[test]
    fn down_of_nothing_is_false_and_needs_no_root() {
        let c = Config {
            state_dir: std::env::temp_dir().join("tails-testnet-never-created"),
            netns: "tsnever".into(),
            subnet_prefix: "10.254.254".into(),
        };
        assert!(!down(&c).unwrap());
        assert!(!status(&c).unwrap().up);
        assert!(matches!(join_options(&c), Err(TestnetError::NotUp)));
    }
}
