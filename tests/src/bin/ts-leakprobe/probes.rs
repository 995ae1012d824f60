//! The probing primitives `ts-leakprobe`'s vectors are made of: one
//! "attempt" each (a TCP connect, a UDP exchange, an ICMP echo, a raw or
//! link-layer send watched by a sniffer, a vsock connect, a port scan), each
//! bounded by the configured timeout and each judged as reached / blocked /
//! error with a one-line explanation.
//!
//! Judging rules (see also the vectors):
//! * reached: something answered from outside this machine — a TCP connect
//!   completed, a RST came back (ECONNREFUSED, not on loopback), a datagram
//!   came back, an ICMP/ICMPv6 reply or error came back from a non-local
//!   address (the error queue's offender address tells who sent it).
//! * blocked: no answer before the deadline, or the kernel refused locally
//!   (EPERM from a firewall, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, …),
//!   or an ICMP error that this machine generated itself (e.g. failed ARP).
//! * error: the probe could not do the attempt (unexpected errno, or a
//!   socket type denied to a non-root user).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::packets as pk;
use crate::sys::{self, Addr, Fd};
use crate::Config;

/// Everything the vectors need to know.
pub struct Ctx {
    pub cfg: Config,
    pub ifindex: u32,
    /// Our MAC and IPv4 address/prefix on the interface, read at start.
    pub mac: [u8; 6],
    pub my_ip: Ipv4Addr,
    pub prefix: u8,
    pub tools: crate::iface::Tools,
}

impl Ctx {
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.cfg.timeout
    }
}

/// How one attempt (or a whole vector) came out. Ordered so that the
/// "worst" (most interesting) result of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Res {
    Blocked,
    Error,
    Reached,
}

impl Res {
    pub fn as_str(self) -> &'static str {
        match self {
            Res::Blocked => "blocked",
            Res::Error => "error",
            Res::Reached => "reached",
        }
    }
}

/// One attempt's result: "what: how it went".
#[derive(Debug, Clone)]
pub struct Attempt {
    pub res: Res,
    pub text: String,
}

impl Attempt {
    pub fn new(res: Res, what: &str, detail: impl AsRef<str>) -> Attempt {
        Attempt {
            res,
            text: format!("{what}: {}", detail.as_ref()),
        }
    }
    pub fn reached(what: &str, d: impl AsRef<str>) -> Attempt {
        Attempt::new(Res::Reached, what, d)
    }
    pub fn blocked(what: &str, d: impl AsRef<str>) -> Attempt {
        Attempt::new(Res::Blocked, what, d)
    }
    pub fn error(what: &str, d: impl AsRef<str>) -> Attempt {
        Attempt::new(Res::Error, what, d)
    }
}

/// A vector's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub res: Res,
    pub detail: String,
}

/// Combines attempts: the vector is reached if any attempt was, else error
/// if any attempt could not run, else blocked.
pub fn combine(attempts: Vec<Attempt>) -> Outcome {
    if attempts.is_empty() {
        return Outcome {
            res: Res::Error,
            detail: "nothing to try (empty list in the arguments)".into(),
        };
    }
    let res = attempts.iter().map(|a| a.res).max().unwrap_or(Res::Error);
    let detail = attempts
        .iter()
        .map(|a| a.text.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Outcome { res, detail }
}

/// Runs `jobs` in parallel threads (scoped), returning their results in
/// order. A job whose thread cannot be started is reported as an error.
pub fn par<'a>(jobs: Vec<Box<dyn FnOnce() -> Attempt + Send + 'a>>) -> Vec<Attempt> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|j| {
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, j)
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Attempt::error("attempt", "thread panicked")),
                Err(e) => Attempt::error("attempt", format!("cannot start thread: {e}")),
            })
            .collect()
    })
}

/// Shorthand to box a job for [`par`].
pub fn job<'a>(
    f: impl FnOnce() -> Attempt + Send + 'a,
) -> Box<dyn FnOnce() -> Attempt + Send + 'a> {
    Box::new(f)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A cheap pseudo-random number (identifiers, ports, sequence numbers):
/// time, pid and a counter through a 32-bit mixer.
pub fn rand32() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    let mut x =
        t ^ std::process::id().rotate_left(16) ^ COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed);
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// A fresh 16-bit identifier (ICMP ids, DNS ids).
pub fn new_id() -> u16 {
    (rand32() >> 8) as u16
}

/// A source port for hand-built packets (49152–65535).
pub fn rand_port() -> u16 {
    49152 + (rand32() % 16384) as u16
}

/// Classifies an errno from connect/send as blocked or error.
pub fn errno_res(e: &io::Error) -> Res {
    if sys::is_timeout(e) {
        return Res::Blocked;
    }
    match e.raw_os_error() {
        Some(
            libc::EPERM
            | libc::EACCES
            | libc::ENETUNREACH
            | libc::EHOSTUNREACH
            | libc::ENETDOWN
            | libc::EHOSTDOWN
            | libc::ETIMEDOUT
            | libc::EADDRNOTAVAIL
            | libc::ENODEV
            | libc::ENXIO
            | libc::EAFNOSUPPORT
            | libc::EPROTONOSUPPORT
            | libc::ESOCKTNOSUPPORT
            | libc::EOPNOTSUPP
            | libc::ECONNRESET
            | libc::ECONNREFUSED
            | libc::ECONNABORTED
            | libc::EPIPE
            | libc::ENOBUFS
            | libc::EMSGSIZE,
        ) => Res::Blocked,
        _ => Res::Error,
    }
}

/// An attempt that failed with `e` at `step` ("connect", "send", …).
pub fn failed(what: &str, step: &str, e: &io::Error) -> Attempt {
    let why = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (refused by a local firewall or policy)",
        Some(libc::ENETUNREACH) => " (no route)",
        Some(libc::EHOSTUNREACH) => " (host unreachable)",
        _ => "",
    };
    Attempt::new(
        errno_res(e),
        what,
        format!("{step}: {}{why}", sys::err_name(e)),
    )
}

/// Opens a socket, judging a failure: an address family or protocol the
/// kernel lacks is "blocked" (nobody can use it), a permission error is
/// "blocked" for root (policy forbids it) but "error" otherwise (the probe
/// must run as root to mean anything).
pub fn open(what: &str, domain: i32, ty: i32, proto: i32) -> Result<Fd, Attempt> {
    sys::socket(domain, ty, proto).map_err(|e| match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT | libc::ENODEV) => {
            Attempt::blocked(
                what,
                format!("socket: {} (not in this kernel)", sys::err_name(&e)),
            )
        }
        Some(libc::EPERM | libc::EACCES) if sys::euid() == 0 => Attempt::blocked(
            what,
            format!("socket: {} (denied to root)", sys::err_name(&e)),
        ),
        _ => Attempt::error(what, format!("socket: {}", sys::err_name(&e))),
    })
}

fn domain(a: &SocketAddr) -> i32 {
    match a {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    }
}

/// Printable summary of some bytes received.
pub fn describe_bytes(b: &[u8]) -> String {
    let text: String = b
        .iter()
        .take(48)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{} bytes \"{text}\"", b.len())
}

/// Summary of a datagram that came back, recognising DNS and NTP.
pub fn describe_reply(b: &[u8], dns_id: Option<u16>, ntp: bool) -> String {
    if let Some(id) = dns_id {
        if let Some(d) = pk::parse_dns(b) {
            if d.id == id && d.response {
                let a: Vec<String> = d.a.iter().map(|x| x.to_string()).collect();
                return format!(
                    "DNS reply {} {} answers [{}]",
                    pk::rcode_name(d.rcode),
                    d.ancount,
                    a.join(" ")
                );
            }
        }
    }
    if ntp {
        if let Some((mode, stratum)) = pk::parse_ntp(b) {
            return format!("NTP reply mode {mode} stratum {stratum}");
        }
    }
    describe_bytes(b)
}

/// Describes an error-queue entry: (text, whether an ICMP came from a
/// non-local address).
fn describe_err(ei: &sys::ErrInfo) -> (String, bool) {
    let name = match ei.origin {
        2 => pk::icmp_name(ei.typ, ei.code),
        3 => pk::icmp6_name(ei.typ, ei.code),
        _ => format!("local error {}", sys::errno_name(ei.errno)),
    };
    match ei.offender {
        Some(o) if !sys::is_local(o) && (ei.origin == 2 || ei.origin == 3) => {
            (format!("{name} from {o}"), true)
        }
        Some(o) => (format!("{name} generated locally (by {o})"), false),
        None => (name, false),
    }
}

// ---------------------------------------------------------------- TCP

/// What to do once a TCP connection is up.
pub enum TcpThen {
    /// Send an HTTP/1.0 GET and report the reply's first line.
    Http,
    /// Wait for the peer to speak or close.
    Peek,
    /// Send this DNS query (length-prefixed) and parse the answer.
    Dns(Vec<u8>, u16),
}

/// A TCP connect to `dst`, then `then`.
pub fn tcp(ctx: &Ctx, dst: SocketAddr, then: TcpThen) -> Attempt {
    let what = format!("tcp {dst}");
    let fd = match open(&what, domain(&dst), libc::SOCK_STREAM, 0) {
        Ok(f) => f,
        Err(a) => return a,
    };
    match sys::connect(&fd, &Addr::Ip(dst), ctx.timeout()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            return if dst.ip().is_loopback() {
                Attempt::blocked(&what, "refused (nothing listening locally)")
            } else {
                Attempt::reached(&what, "refused: a RST came back")
            };
        }
        Err(e) if sys::is_timeout(&e) => {
            return Attempt::blocked(
                &what,
                format!("no answer in {} ms", ctx.timeout().as_millis()),
            )
        }
        Err(e) => return failed(&what, "connect", &e),
    }
    let after = match then {
        TcpThen::Http => {
            let req = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n";
            match sys::send(&fd, req, None, ctx.deadline()) {
                Err(e) => format!("GET not sent: {}", sys::err_name(&e)),
                Ok(_) => {
                    let (data, end) = read_until(&fd, ctx.deadline(), |b| b.contains(&b'\n'));
                    if data.is_empty() {
                        end
                    } else {
                        let line = data.split(|&c| c == b'\n').next().unwrap_or(&[]);
                        let line = String::from_utf8_lossy(line).trim_end().to_string();
                        format!("HTTP reply: {}", line.chars().take(100).collect::<String>())
                    }
                }
            }
        }
        TcpThen::Peek => {
            let (data, end) = read_until(&fd, ctx.deadline(), |b| !b.is_empty());
            if data.is_empty() {
                end
            } else {
                format!("peer sent {}", describe_bytes(&data))
            }
        }
        TcpThen::Dns(q, id) => {
            let mut msg = (q.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(&q);
            match sys::send(&fd, &msg, None, ctx.deadline()) {
                Err(e) => format!("query not sent: {}", sys::err_name(&e)),
                Ok(_) => {
                    let (data, end) = read_until(&fd, ctx.deadline(), |b| {
                        b.len() >= 2 && b.len() >= 2 + usize::from(u16::from_be_bytes([b[0], b[1]]))
                    });
                    if data.len() > 2 {
                        describe_reply(&data[2..], Some(id), false)
                    } else {
                        end
                    }
                }
            }
        }
    };
    Attempt::reached(&what, format!("connected; {after}"))
}

/// Reads until `done(data)` or EOF or the deadline; returns the data and
/// how reading ended ("closed by peer without data", …).
fn read_until(fd: &Fd, deadline: Instant, done: impl Fn(&[u8]) -> bool) -> (Vec<u8>, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        if done(&data) {
            return (data, String::new());
        }
        match sys::poll1(fd, libc::POLLIN, deadline) {
            Ok(0) => return (data, "no data before the deadline (connection open)".into()),
            Ok(_) => {}
            Err(e) => return (data, format!("poll: {}", sys::err_name(&e))),
        }
        match sys::recv(fd, &mut buf) {
            Ok(Some((0, _))) => return (data, "closed by peer without data".into()),
            Ok(Some((n, _))) => data.extend_from_slice(&buf[..n]),
            Ok(None) => {}
            Err(e) => return (data, format!("reset by peer ({})", sys::err_name(&e))),
        }
        if data.len() > 65536 {
            return (data, String::new());
        }
    }
}

// ---------------------------------------------------------------- UDP

/// Options of a UDP attempt.
#[derive(Default, Clone)]
pub struct UdpOpts {
    /// connect() the socket (replies then only from the peer). Off for
    /// broadcast/multicast, where anybody may answer.
    pub unconnected: bool,
    pub ttl: Option<i32>,
    pub broadcast: bool,
    pub bind_dev: bool,
    pub multicast: bool,
    pub bind: Option<SocketAddr>,
    /// The payload is a DNS query with this id (to describe answers).
    pub dns_id: Option<u16>,
    pub ntp: bool,
    /// Label for the attempt (default "udp").
    pub label: Option<&'static str>,
}

/// Sends one datagram to `dst` and waits for anything back: a datagram, or
/// an ICMP error through the error queue.
pub fn udp(ctx: &Ctx, dst: SocketAddr, payload: &[u8], o: &UdpOpts) -> Attempt {
    let what = format!("{} {dst}", o.label.unwrap_or("udp"));
    let fd = match open(&what, domain(&dst), libc::SOCK_DGRAM, 0) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let v6 = dst.is_ipv6();
    let setup = || -> io::Result<()> {
        if v6 {
            sys::set_int(&fd, libc::SOL_IPV6, libc::IPV6_RECVERR, 1)?;
        } else {
            sys::set_int(&fd, libc::SOL_IP, libc::IP_RECVERR, 1)?;
        }
        if let Some(t) = o.ttl {
            if v6 {
                sys::set_int(&fd, libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, t)?;
            } else {
                sys::set_int(&fd, libc::SOL_IP, libc::IP_TTL, t)?;
            }
        }
        if o.broadcast {
            sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
        }
        if o.bind_dev {
            sys::bind_device(&fd, &ctx.cfg.iface)?;
        }
        if o.multicast {
            set_multicast(&fd, ctx.ifindex, v6)?;
        }
        if let Some(b) = o.bind {
            sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            sys::bind(&fd, &Addr::Ip(b))?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        return failed(&what, "setup", &e);
    }
    let deadline = ctx.deadline();
    if !o.unconnected {
        if let Err(e) = sys::connect(&fd, &Addr::Ip(dst), ctx.timeout()) {
            return failed(&what, "connect", &e);
        }
    }
    // For a connected IPv4 socket, also catch answers from other addresses
    // (opened before sending, so that no early answer is missed).
    let stray = match (o.unconnected, dst, sys::local_addr(&fd)) {
        (false, SocketAddr::V4(_), Ok(SocketAddr::V4(me))) => {
            sys::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP)
                .ok()
                .map(|raw| StraySniffer {
                    raw,
                    local_port: me.port(),
                    peer: dst,
                })
        }
        _ => None,
    };
    let to = Addr::Ip(dst);
    let sent = sys::send(&fd, payload, o.unconnected.then_some(&to), deadline);
    if let Err(e) = sent {
        return failed(&what, "send", &e);
    }
    let (answers, notes) = collect_udp(&fd, deadline, o, !o.unconnected, stray.as_ref());
    if !answers.is_empty() {
        return Attempt::reached(&what, answers.join(", "));
    }
    let mut d = format!("no answer in {} ms", ctx.timeout().as_millis());
    if !notes.is_empty() {
        d = format!("{d} ({})", notes.join(", "));
    }
    Attempt::blocked(&what, d)
}

/// Sets the multicast interface, a generous TTL/hop limit and no loopback.
pub fn set_multicast(fd: &Fd, ifindex: u32, v6: bool) -> io::Result<()> {
    if v6 {
        sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_MULTICAST_IF, ifindex as i32)?;
        sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_MULTICAST_HOPS, 255)?;
        sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_MULTICAST_LOOP, 0)
    } else {
        let m = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr { s_addr: 0 },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: ifindex as i32,
        };
        sys::setopt(fd, libc::SOL_IP, libc::IP_MULTICAST_IF, &m)?;
        sys::set_int(fd, libc::SOL_IP, libc::IP_MULTICAST_TTL, 64)?;
        sys::set_int(fd, libc::SOL_IP, libc::IP_MULTICAST_LOOP, 0)
    }
}

/// A raw UDP socket watching for answers to a connected UDP socket that
/// come from another address than the one it is connected to (a multi-homed
/// peer answering from its other address): the socket itself drops those.
struct StraySniffer {
    raw: Fd,
    local_port: u16,
    peer: SocketAddr,
}

/// Waits until `deadline` for datagrams and error-queue entries; returns
/// (answers from outside, notes about local errors). With `first`, returns
/// at the first answer.
fn collect_udp(
    fd: &Fd,
    deadline: Instant,
    o: &UdpOpts,
    first: bool,
    stray: Option<&StraySniffer>,
) -> (Vec<String>, Vec<String>) {
    let mut answers = Vec::new();
    let mut notes = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut pfds = vec![libc::pollfd {
        fd: fd.0,
        events: libc::POLLIN | libc::POLLERR,
        revents: 0,
    }];
    if let Some(s) = stray {
        pfds.push(libc::pollfd {
            fd: s.raw.0,
            events: libc::POLLIN,
            revents: 0,
        });
    }
    while Instant::now() < deadline {
        for p in pfds.iter_mut() {
            p.revents = 0;
        }
        match sys::poll(&mut pfds, deadline) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                notes.push(format!("poll: {}", sys::err_name(&e)));
                break;
            }
        }
        let rev = pfds[0].revents;
        if rev & libc::POLLERR != 0 {
            drain_errqueue(fd, &mut answers, &mut notes);
        }
        if rev & libc::POLLIN != 0 {
            match sys::recv(fd, &mut buf) {
                Ok(Some((n, src))) => {
                    let from = src.ip.map(|a| a.to_string()).unwrap_or_default();
                    let local = src.ip.is_some_and(|a| sys::is_local(a.ip()));
                    let d = describe_reply(&buf[..n], o.dns_id, o.ntp);
                    if local {
                        notes.push(format!("own datagram from {from}: {d}"));
                    } else {
                        answers.push(format!("reply from {from}: {d}"));
                    }
                }
                Ok(None) => {}
                // A pending error (ICMP) surfaces here too: read the queue.
                Err(_) => drain_errqueue(fd, &mut answers, &mut notes),
            }
        }
        if let (Some(s), Some(p)) = (stray, pfds.get(1)) {
            if p.revents != 0 {
                while let Ok(Some((n, _))) = sys::recv(&s.raw, &mut buf) {
                    let Some(ip) = pk::parse_ipv4(&buf[..n]) else {
                        continue;
                    };
                    let Some((sp, dp)) = pk::ports(ip.payload) else {
                        continue;
                    };
                    let src = v4(ip.src, sp);
                    if ip.proto != pk::PROTO_UDP || dp != s.local_port || src == s.peer {
                        continue;
                    }
                    if sys::is_local(IpAddr::V4(ip.src)) {
                        continue;
                    }
                    let d = describe_reply(ip.payload.get(8..).unwrap_or(&[]), o.dns_id, o.ntp);
                    answers.push(format!("reply from another address, {src}: {d}"));
                }
            }
        }
        if first && !answers.is_empty() {
            break;
        }
        if answers.len() + notes.len() > 20 {
            break;
        }
    }
    (answers, notes)
}

fn drain_errqueue(fd: &Fd, answers: &mut Vec<String>, notes: &mut Vec<String>) {
    for _ in 0..64 {
        match sys::recv_err(fd) {
            Ok(Some(ei)) => {
                let (t, outside) = describe_err(&ei);
                if outside {
                    answers.push(t);
                } else {
                    notes.push(t);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Clear a pending error that has no queue entry.
    let _ = sys::so_error(fd);
}

// ---------------------------------------------------------------- ICMP

/// An ICMP echo request to `dst` (raw socket); reached on an echo reply or
/// an ICMP error quoting it, from a non-local address.
pub fn icmp_echo(ctx: &Ctx, dst: Ipv4Addr, ttl: Option<i32>) -> Attempt {
    let what = format!("icmp echo {dst}");
    let fd = match open(&what, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) {
        Ok(f) => f,
        Err(a) => return a,
    };
    if let Some(t) = ttl {
        if let Err(e) = sys::set_int(&fd, libc::SOL_IP, libc::IP_TTL, t) {
            return failed(&what, "setup", &e);
        }
    }
    let _ = sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1);
    let id = new_id();
    let msg = pk::icmp_echo(id, 1, b"ts-leakprobe");
    let deadline = ctx.deadline();
    if let Err(e) = sys::send(
        &fd,
        &msg,
        Some(&Addr::Ip(SocketAddr::V4(SocketAddrV4::new(dst, 0)))),
        deadline,
    ) {
        return failed(&what, "send", &e);
    }
    let sn = Sniffer { socks: vec![fd] };
    let hits = sn.watch(deadline, true, |p| match_echo(p, id));
    judge_hits(&what, hits, ctx)
}

/// Does `p` answer our ICMP echo `id` (reply, or error quoting it)?
pub fn match_echo(p: &pk::Ip4<'_>, id: u16) -> Option<String> {
    if p.proto != pk::PROTO_ICMP || p.payload.len() < 8 {
        return None;
    }
    let m = p.payload;
    if m[0] == 0 && u16::from_be_bytes([m[4], m[5]]) == id {
        return Some(format!("echo reply from {}", p.src));
    }
    let e = pk::parse_icmp_error(m)?;
    let q = e.quoted.payload;
    if e.quoted.proto == pk::PROTO_ICMP
        && q.len() >= 6
        && q[0] == 8
        && u16::from_be_bytes([q[4], q[5]]) == id
    {
        return Some(format!("{} from {}", pk::icmp_name(e.typ, e.code), p.src));
    }
    None
}

/// Turns sniffer hits into an attempt result: hits from a local source
/// (this machine's own ICMP errors) do not count as reached.
pub fn judge_hits(what: &str, hits: Vec<(IpAddr, String)>, ctx: &Ctx) -> Attempt {
    let (local, outside): (Vec<_>, Vec<_>) = hits.into_iter().partition(|(s, _)| sys::is_local(*s));
    if !outside.is_empty() {
        let t: Vec<String> = outside.into_iter().map(|(_, t)| t).collect();
        return Attempt::reached(what, t.join(", "));
    }
    let mut d = format!("no answer in {} ms", ctx.timeout().as_millis());
    if !local.is_empty() {
        let t: Vec<String> = local.into_iter().map(|(_, t)| t).collect();
        d = format!("{d} (locally generated: {})", t.join(", "));
    }
    Attempt::blocked(what, d)
}

/// Raw IPv4 sockets that see every incoming packet of some protocols.
pub struct Sniffer {
    pub socks: Vec<Fd>,
}

impl Sniffer {
    /// Opens one raw socket per protocol (before anything is sent).
    pub fn open(what: &str, protos: &[i32]) -> Result<Sniffer, Attempt> {
        let mut socks = Vec::new();
        for &p in protos {
            socks.push(open(what, libc::AF_INET, libc::SOCK_RAW, p)?);
        }
        Ok(Sniffer { socks })
    }

    /// Feeds every packet received until `deadline` to `f`; collects
    /// (source, text) of the matches (deduplicated). With `first`, stops
    /// at the first match from a non-local source.
    pub fn watch(
        &self,
        deadline: Instant,
        first: bool,
        mut f: impl FnMut(&pk::Ip4<'_>) -> Option<String>,
    ) -> Vec<(IpAddr, String)> {
        let mut hits: Vec<(IpAddr, String)> = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut pfds: Vec<libc::pollfd> = self
            .socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.0,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while Instant::now() < deadline {
            for p in pfds.iter_mut() {
                p.revents = 0;
            }
            match sys::poll(&mut pfds, deadline) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            for (i, p) in pfds.iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                // Drain what is queued on this socket.
                for _ in 0..256 {
                    match sys::recv(&self.socks[i], &mut buf) {
                        Ok(Some((n, _))) => {
                            if let Some(ip) = pk::parse_ipv4(&buf[..n]) {
                                if let Some(t) = f(&ip) {
                                    let src = IpAddr::V4(ip.src);
                                    if !hits.iter().any(|(_, h)| *h == t) {
                                        hits.push((src, t));
                                    }
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            let _ = sys::so_error(&self.socks[i]);
                            break;
                        }
                    }
                }
            }
            if first && hits.iter().any(|(s, _)| !sys::is_local(*s)) {
                break;
            }
            if hits.len() > 32 {
                break;
            }
        }
        hits
    }
}

/// Sends a whole hand-built IPv4 packet (IP_HDRINCL via IPPROTO_RAW).
pub fn send_hdrincl(
    what: &str,
    pkt: &[u8],
    dst: Ipv4Addr,
    deadline: Instant,
) -> Result<(), Attempt> {
    let fd = open(what, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
    sys::send(
        &fd,
        pkt,
        Some(&Addr::Ip(SocketAddr::V4(SocketAddrV4::new(dst, 0)))),
        deadline,
    )
    .map(drop)
    .map_err(|e| failed(what, "send", &e))
}

/// A raw IPv4 packet of protocol `proto` to `dst` (the kernel writes the IP
/// header); reached if a packet of that protocol comes back from `dst` or a
/// non-local ICMP error quotes ours.
pub fn raw_proto(ctx: &Ctx, dst: Ipv4Addr, proto: u8) -> Attempt {
    let what = format!("ip proto {proto} to {dst}");
    let sn = match Sniffer::open(&what, &[i32::from(proto), libc::IPPROTO_ICMP]) {
        Ok(s) => s,
        Err(a) => return a,
    };
    let fd = match open(&what, libc::AF_INET, libc::SOCK_RAW, i32::from(proto)) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let deadline = ctx.deadline();
    // A GRE header (no flags, protocol 0x0800) or just bytes: the payload
    // does not matter for whether anything answers.
    let payload: &[u8] = if proto == 47 {
        &[0, 0, 0x08, 0, 0x45, 0, 0, 20]
    } else {
        b"ts-leakprobe raw"
    };
    if let Err(e) = sys::send(
        &fd,
        payload,
        Some(&Addr::Ip(SocketAddr::V4(SocketAddrV4::new(dst, 0)))),
        deadline,
    ) {
        return failed(&what, "send", &e);
    }
    let hits = sn.watch(deadline, true, |p| {
        if p.proto == proto && p.src == dst {
            return Some(format!("protocol {proto} packet from {}", p.src));
        }
        if p.proto == pk::PROTO_ICMP {
            let e = pk::parse_icmp_error(p.payload)?;
            if e.quoted.proto == proto && e.quoted.dst == dst {
                return Some(format!("{} from {}", pk::icmp_name(e.typ, e.code), p.src));
            }
        }
        None
    });
    judge_hits(&what, hits, ctx)
}

// ---------------------------------------------------------------- ICMPv6

/// What an ICMPv6 attempt sends.
pub enum Icmp6Kind {
    Echo,
    RouterSolicit,
}

/// An ICMPv6 echo request (or router solicitation) to `dst` (with
/// `scope` for link-local/multicast); reached on an answer from a
/// non-local address.
pub fn icmp6(ctx: &Ctx, dst: Ipv6Addr, scope: u32, kind: Icmp6Kind) -> Attempt {
    let what = match kind {
        Icmp6Kind::Echo => format!("icmpv6 echo {dst}"),
        Icmp6Kind::RouterSolicit => format!("router solicitation {dst}"),
    };
    let fd = match open(&what, libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) {
        Ok(f) => f,
        Err(a) => return a,
    };
    if dst.is_multicast() {
        if let Err(e) = set_multicast(&fd, ctx.ifindex, true) {
            return failed(&what, "setup", &e);
        }
    }
    let id = new_id();
    let msg = match kind {
        Icmp6Kind::Echo => pk::icmpv6_echo(id, 1, b"ts-leakprobe"),
        Icmp6Kind::RouterSolicit => {
            if let Err(e) = sys::set_int(&fd, libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 255) {
                return failed(&what, "setup", &e);
            }
            pk::icmpv6_router_solicit(ctx.mac)
        }
    };
    let deadline = ctx.deadline();
    let to = Addr::Ip(SocketAddr::V6(SocketAddrV6::new(dst, 0, 0, scope)));
    if let Err(e) = sys::send(&fd, &msg, Some(&to), deadline) {
        return failed(&what, "send", &e);
    }
    let mut hits: Vec<(IpAddr, String)> = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        match sys::poll1(&fd, libc::POLLIN, deadline) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Ok(Some((n, src))) = sys::recv(&fd, &mut buf) {
            let m = &buf[..n];
            let Some(src) = src.ip.map(|s| s.ip()) else {
                continue;
            };
            if m.len() < 8 {
                continue;
            }
            let t = match (&kind, m[0]) {
                (Icmp6Kind::Echo, 129) if u16::from_be_bytes([m[4], m[5]]) == id => {
                    Some(format!("echo reply from {src}"))
                }
                (Icmp6Kind::RouterSolicit, 134) => Some(format!("router advertisement from {src}")),
                // Errors quote the IPv6 header (40 bytes) then our message.
                (Icmp6Kind::Echo, 1..=4)
                    if m.len() >= 8 + 40 + 6
                        && m[8 + 6] == 58
                        && m[48] == 128
                        && u16::from_be_bytes([m[52], m[53]]) == id =>
                {
                    Some(format!("{} from {src}", pk::icmp6_name(m[0], m[1])))
                }
                _ => None,
            };
            if let Some(t) = t {
                if !hits.iter().any(|(_, h)| *h == t) {
                    hits.push((src, t));
                }
            }
        }
        if hits.iter().any(|(s, _)| !sys::is_local(*s)) && !dst.is_multicast() {
            break;
        }
    }
    judge_hits(&what, hits, ctx)
}

// ---------------------------------------------------------------- link layer

/// An AF_PACKET raw socket bound to the interface for `ethertype`.
pub fn packet_socket(what: &str, ctx: &Ctx, ethertype: u16) -> Result<Fd, Attempt> {
    let fd = open(
        what,
        libc::AF_PACKET,
        libc::SOCK_RAW,
        i32::from(ethertype.to_be()),
    )?;
    sys::bind(
        &fd,
        &Addr::Ll {
            ifindex: ctx.ifindex as i32,
            proto: ethertype,
            mac: [0; 6],
        },
    )
    .map_err(|e| failed(what, "bind", &e))?;
    Ok(fd)
}

/// Sends a whole Ethernet frame on a bound packet socket.
pub fn send_frame(what: &str, fd: &Fd, frame: &[u8], deadline: Instant) -> Result<(), Attempt> {
    sys::send(fd, frame, None, deadline)
        .map(drop)
        .map_err(|e| failed(what, "send", &e))
}

/// Reads frames (not our own outgoing ones) until `deadline`, feeding
/// them to `f` until it returns false.
pub fn watch_frames(fd: &Fd, deadline: Instant, mut f: impl FnMut(&[u8]) -> bool) {
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        match sys::poll1(fd, libc::POLLIN, deadline) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while let Ok(Some((n, src))) = sys::recv(fd, &mut buf) {
            if src.pkttype == Some(libc::PACKET_OUTGOING) {
                continue;
            }
            if !f(&buf[..n]) {
                return;
            }
        }
    }
}

// ---------------------------------------------------------------- vsock

/// A vsock stream connect. Reached only if the connection is established:
/// a reset from the peer is the host's vsock device saying "no listener",
/// which every guest may hear (it is the device, not a service, answering).
pub fn vsock_stream(ctx: &Ctx, cid: u32, port: u32) -> Attempt {
    let what = format!("vsock stream cid {cid} port {port}");
    let fd = match open(&what, libc::AF_VSOCK, libc::SOCK_STREAM, 0) {
        Ok(f) => f,
        Err(a) => return a,
    };
    match sys::connect(&fd, &Addr::Vsock { cid, port }, ctx.timeout()) {
        Ok(()) => Attempt::reached(&what, "connected"),
        Err(e) if sys::is_timeout(&e) => Attempt::blocked(
            &what,
            format!("no answer in {} ms", ctx.timeout().as_millis()),
        ),
        Err(e) => match e.raw_os_error() {
            Some(libc::ECONNRESET | libc::ECONNREFUSED) => {
                Attempt::blocked(&what, format!("{} (no listener)", sys::err_name(&e)))
            }
            Some(libc::EINVAL) => Attempt::blocked(&what, "EINVAL (address refused by the kernel)"),
            _ => failed(&what, "connect", &e),
        },
    }
}

/// A vsock datagram; reached only if something comes back.
pub fn vsock_dgram(ctx: &Ctx, cid: u32, port: u32) -> Attempt {
    let what = format!("vsock dgram cid {cid} port {port}");
    let fd = match open(&what, libc::AF_VSOCK, libc::SOCK_DGRAM, 0) {
        Ok(f) => f,
        Err(a) => return a,
    };
    let deadline = ctx.deadline();
    match sys::send(
        &fd,
        b"ts-leakprobe",
        Some(&Addr::Vsock { cid, port }),
        deadline,
    ) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Attempt::blocked(&what, "send: EINVAL (not supported)")
        }
        Err(e) => return failed(&what, "send", &e),
    }
    let mut buf = [0u8; 512];
    if let Ok(r) = sys::poll1(&fd, libc::POLLIN, deadline) {
        if r != 0 {
            if let Ok(Some((n, _))) = sys::recv(&fd, &mut buf) {
                return Attempt::reached(
                    &what,
                    format!("sent; reply {}", describe_bytes(&buf[..n])),
                );
            }
        }
    }
    Attempt::blocked(&what, "sent; no reply")
}

// ---------------------------------------------------------------- scans

/// Compresses sorted ports into "1-3, 7" with at most `max` items.
pub fn ranges(ports: &[u16], max: usize) -> String {
    let mut items: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j] + 1 {
            j += 1;
        }
        items.push(if i == j {
            ports[i].to_string()
        } else {
            format!("{}-{}", ports[i], ports[j])
        });
        i = j + 1;
    }
    let n = items.len();
    if n > max {
        items.truncate(max);
        items.push(format!("… ({} more ranges)", n - max));
    }
    items.join(",")
}

/// Non-blocking TCP connects to every port of `dst`, at most `window`
/// in flight, each with the configured timeout.
pub fn tcp_scan(ctx: &Ctx, dst: Ipv4Addr) -> Attempt {
    let what = format!("tcp scan {dst} 1-65535");
    // Leave room for the descriptors of the vectors running alongside.
    let limit = sys::raise_nofile(ctx.cfg.scan_window as u64 + 4096);
    let window = (limit.saturating_sub(1024) as usize).clamp(16, ctx.cfg.scan_window);
    let started = Instant::now();
    struct Pending {
        fd: Fd,
        port: u16,
        deadline: Instant,
    }
    let mut pend: Vec<Pending> = Vec::with_capacity(window);
    let mut next: u32 = 1;
    let (mut open_ports, mut refused, mut timeouts) = (Vec::new(), 0u32, 0u32);
    let mut errs: std::collections::BTreeMap<String, u32> = Default::default();
    let mut window = window;
    let mut rounds = 0u32;
    loop {
        while pend.len() < window && next <= 65535 {
            let port = next as u16;
            let fd = match sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0) {
                Ok(f) => f,
                Err(e) => {
                    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if out_of_fds && !pend.is_empty() {
                        // Out of descriptors: shrink the window, retry later.
                        window = pend.len();
                        break;
                    }
                    *errs
                        .entry(format!("socket {}", sys::err_name(&e)))
                        .or_default() += 1;
                    next += 1;
                    continue;
                }
            };
            next += 1;
            let a = Addr::Ip(SocketAddr::V4(SocketAddrV4::new(dst, port)));
            match sys::connect_start(&fd, &a) {
                Ok(true) => open_ports.push(port),
                Ok(false) => pend.push(Pending {
                    fd,
                    port,
                    deadline: Instant::now() + ctx.timeout(),
                }),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => refused += 1,
                Err(e) => *errs.entry(sys::err_name(&e)).or_default() += 1,
            }
        }
        if pend.is_empty() {
            if next > 65535 {
                break;
            }
            continue;
        }
        let mut pfds: Vec<libc::pollfd> = pend
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd.0,
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let soonest = pend
            .iter()
            .map(|p| p.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        // Work in rounds, not per socket: wait a little past the soonest
        // deadline so that expiries come in bunches, and after a wake-up
        // let more answers pile up. Each round costs O(window), which
        // matters on an emulated CPU.
        rounds += 1;
        let polled = sys::poll(&mut pfds, soonest + Duration::from_millis(20));
        // Deadlines are judged at the time of the poll, not after the nap.
        let now = Instant::now();
        match polled {
            Ok(n) if n > 0 => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => {}
            Err(e) => return Attempt::error(&what, format!("poll: {}", sys::err_name(&e))),
        }
        let mut keep = Vec::with_capacity(pend.len());
        for (p, pf) in pend.into_iter().zip(pfds) {
            if pf.revents != 0 {
                match sys::so_error(&p.fd) {
                    Ok(0) => open_ports.push(p.port),
                    Ok(libc::ECONNREFUSED) => refused += 1,
                    Ok(e) => *errs.entry(sys::errno_name(e)).or_default() += 1,
                    Err(e) => *errs.entry(sys::err_name(&e)).or_default() += 1,
                }
            } else if now >= p.deadline {
                timeouts += 1;
            } else {
                keep.push(p);
            }
        }
        pend = keep;
    }
    open_ports.sort_unstable();
    let errs: Vec<String> = errs.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    let d = format!(
        "open: [{}] ({} ports); refused (RST): {refused}; no answer: {timeouts}; errors: [{}]; {} ms, window {window}, {rounds} rounds",
        ranges(&open_ports, 40),
        open_ports.len(),
        errs.join(", "),
        started.elapsed().as_millis()
    );
    if !open_ports.is_empty() || refused > 0 {
        Attempt::reached(&what, d)
    } else {
        Attempt::blocked(&what, d)
    }
}

/// A DNS query datagram to every UDP port of `dst` from one unconnected
/// socket, then listening; reached if any datagram or non-local ICMP error
/// comes back.
pub fn udp_scan(ctx: &Ctx, dst: Ipv4Addr) -> Attempt {
    let what = format!("udp scan {dst} 1-65535");
    let fd = match open(&what, libc::AF_INET, libc::SOCK_DGRAM, 0) {
        Ok(f) => f,
        Err(a) => return a,
    };
    if let Err(e) = sys::set_int(&fd, libc::SOL_IP, libc::IP_RECVERR, 1) {
        return failed(&what, "setup", &e);
    }
    // Big buffers so answers and errors are not dropped while sending.
    if sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20).is_err() {
        let _ = sys::set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
    }
    let id = new_id();
    let q = pk::dns_query(id, "outside.test", pk::DNS_A, pk::DNS_IN);
    let started = Instant::now();
    let mut answered: std::collections::BTreeSet<u16> = Default::default();
    let mut answers: Vec<String> = Vec::new();
    let mut icmp: std::collections::BTreeMap<String, std::collections::BTreeSet<u16>> =
        Default::default();
    let mut local: std::collections::BTreeMap<String, u32> = Default::default();
    let mut send_errs: std::collections::BTreeMap<String, u32> = Default::default();
    let mut buf = vec![0u8; 4096];
    let mut drain =
        |answered: &mut std::collections::BTreeSet<u16>,
         answers: &mut Vec<String>,
         icmp: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<u16>>,
         local: &mut std::collections::BTreeMap<String, u32>| {
            for _ in 0..4096 {
                match sys::recv(&fd, &mut buf) {
                    Ok(Some((n, src))) => {
                        if let Some(SocketAddr::V4(a)) = src.ip {
                            // Describe the first few answers only.
                            if *a.ip() == dst && answered.insert(a.port()) && answers.len() < 5 {
                                answers.push(format!(
                                    "{}: {}",
                                    a.port(),
                                    describe_reply(&buf[..n], Some(id), false)
                                ));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        let _ = sys::so_error(&fd);
                    }
                }
            }
            for _ in 0..65536 {
                match sys::recv_err(&fd) {
                    Ok(Some(ei)) => {
                        let (t, outside) = describe_err(&ei);
                        let port = ei.dest.map(|d| d.port()).unwrap_or(0);
                        if outside {
                            icmp.entry(t).or_default().insert(port);
                        } else {
                            *local.entry(t).or_default() += 1;
                        }
                    }
                    _ => break,
                }
            }
            let _ = sys::so_error(&fd);
        };
    // Prime the neighbour entry: the first datagrams would otherwise pile
    // up (and be dropped) while ARP resolves the gateway.
    let to = |p: u16| Addr::Ip(SocketAddr::V4(SocketAddrV4::new(dst, p)));
    let _ = sys::send(&fd, &q, Some(&to(53)), ctx.deadline());
    std::thread::sleep(Duration::from_millis(200));
    for port in 1..=65535u16 {
        // A pending ICMP error makes the next sendto fail once (without
        // sending): the error is consumed then, so send again.
        let mut sent = Err(sys::timeout_err());
        for _ in 0..3 {
            sent = sys::send(
                &fd,
                &q,
                Some(&to(port)),
                Instant::now() + Duration::from_millis(200),
            );
            match &sent {
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
                _ => break,
            }
        }
        if let Err(e) = sent {
            *send_errs.entry(sys::err_name(&e)).or_default() += 1;
            let _ = sys::so_error(&fd);
        }
        if port % 512 == 0 {
            drain(&mut answered, &mut answers, &mut icmp, &mut local);
        }
    }
    let send_time = started.elapsed();
    let deadline = Instant::now() + ctx.timeout().max(Duration::from_secs(2));
    while Instant::now() < deadline {
        match sys::poll1(&fd, libc::POLLIN | libc::POLLERR, deadline) {
            Ok(0) | Err(_) => break,
            Ok(_) => drain(&mut answered, &mut answers, &mut icmp, &mut local),
        }
    }
    let answered: Vec<u16> = answered.into_iter().collect();
    let icmp_s: Vec<String> = icmp
        .iter()
        .map(|(k, v)| {
            let v: Vec<u16> = v.iter().copied().collect();
            format!("{k} for {} ports [{}]", v.len(), ranges(&v, 10))
        })
        .collect();
    let local_s: Vec<String> = local.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    let errs_s: Vec<String> = send_errs.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    let d = format!(
        "answered: [{}] {}; icmp: [{}]; local errors: [{}]; send errors: [{}]; sent in {} ms",
        ranges(&answered, 40),
        answers.join(" | "),
        icmp_s.join(", "),
        local_s.join(", "),
        errs_s.join(", "),
        send_time.as_millis()
    );
    if !answered.is_empty() || !icmp.is_empty() {
        Attempt::reached(&what, d)
    } else {
        Attempt::blocked(&what, d)
    }
}

/// IPv4 socket address shorthand.
pub fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// IPv6 socket address shorthand.
pub fn v6(ip: Ipv6Addr, port: u16, scope: u32) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_compress() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10], 10), "1-3,7,9-10");
        assert_eq!(ranges(&[], 10), "");
        assert_eq!(ranges(&[1, 3, 5], 2), "1,3,… (1 more ranges)");
    }

    #[test]
    fn combine_prefers_reached_then_error() {
        let b = Attempt::blocked("a", "x");
        let e = Attempt::error("b", "y");
        let r = Attempt::reached("c", "z");
        assert_eq!(combine(vec![b.clone(), e.clone()]).res, Res::Error);
        assert_eq!(combine(vec![b.clone(), e, r]).res, Res::Reached);
        let o = combine(vec![b.clone(), b]);
        assert_eq!(o.res, Res::Blocked);
        assert_eq!(o.detail, "a: x; a: x");
        assert_eq!(combine(vec![]).res, Res::Error);
    }

    #[test]
    fn echo_matching() {
        let src: Ipv4Addr = "10.1.2.1".parse().unwrap();
        let me: Ipv4Addr = "10.1.2.3".parse().unwrap();
        let mut reply = pk::icmp_echo(0x4242, 1, b"x");
        reply[0] = 0;
        let p = pk::ipv4(src, me, 1, 64, 0, &[], &reply);
        let ip = pk::parse_ipv4(&p).unwrap();
        assert_eq!(
            match_echo(&ip, 0x4242).as_deref(),
            Some("echo reply from 10.1.2.1")
        );
        assert!(match_echo(&ip, 0x4243).is_none());
        // A time-exceeded quoting our echo.
        let orig = pk::ipv4(
            me,
            "8.8.8.8".parse().unwrap(),
            1,
            1,
            0,
            &[],
            &pk::icmp_echo(0x4242, 1, b""),
        );
        let mut err = vec![11, 0, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&orig);
        let p = pk::ipv4(src, me, 1, 64, 0, &[], &err);
        let ip = pk::parse_ipv4(&p).unwrap();
        assert_eq!(
            match_echo(&ip, 0x4242).as_deref(),
            Some("ICMP 11/0 TTL exceeded in transit from 10.1.2.1")
        );
    }
}
