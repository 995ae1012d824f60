//! Thin wrappers over the libc socket calls `ts-leakprobe` needs (IPv4/IPv6,
//! raw, AF_PACKET and AF_VSOCK sockets), all non-blocking and bounded by a
//! deadline, plus errno naming, the extended socket error queue
//! (`IP_RECVERR`), interface addresses and the file-descriptor limit.
//!
//! Every socket is created with `SOCK_NONBLOCK | SOCK_CLOEXEC`; waiting is
//! always `poll` with a deadline, so no call here can block for ever.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// An owned file descriptor, closed on drop.
pub struct Fd(pub RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_len(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Our own "no answer before the deadline" error (no errno).
pub fn timeout_err() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timeout")
}

/// True for [`timeout_err`].
pub fn is_timeout(e: &io::Error) -> bool {
    e.raw_os_error().is_none() && e.kind() == io::ErrorKind::TimedOut
}

/// A non-blocking, close-on-exec socket.
pub fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<Fd> {
    // SAFETY: plain syscall, no pointers.
    let fd =
        cvt(unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    Ok(Fd(fd))
}

/// setsockopt with a plain value.
pub fn setopt<T>(fd: &Fd, level: i32, name: i32, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to size_of::<T>() readable bytes.
    cvt(unsafe {
        libc::setsockopt(
            fd.0,
            level,
            name,
            val as *const T as *const libc::c_void,
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// setsockopt with an int.
pub fn set_int(fd: &Fd, level: i32, name: i32, v: i32) -> io::Result<()> {
    setopt(fd, level, name, &v)
}

/// SO_BINDTODEVICE.
pub fn bind_device(fd: &Fd, dev: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `dev`'s bytes.
    cvt(unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr() as *const libc::c_void,
            dev.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// getsockopt(SO_ERROR): the pending error, cleared by the read.
pub fn so_error(fd: &Fd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v/len are valid for writing.
    cvt(unsafe {
        libc::getsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(v)
}

/// A socket address of any family the probe uses.
#[derive(Debug, Clone, Copy)]
pub enum Addr {
    Ip(SocketAddr),
    /// AF_PACKET: interface index, ethertype (host order), destination MAC.
    Ll {
        ifindex: i32,
        proto: u16,
        mac: [u8; 6],
    },
    Vsock {
        cid: u32,
        port: u32,
    },
}

struct RawAddr {
    st: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn ptr(&self) -> *const libc::sockaddr {
        &self.st as *const libc::sockaddr_storage as *const libc::sockaddr
    }
}

fn raw(a: &Addr) -> RawAddr {
    // SAFETY: all-zero is a valid sockaddr_storage and a valid value of each
    // sockaddr_* struct written below; each fits in sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let p = &mut st as *mut libc::sockaddr_storage;
    let len = match a {
        Addr::Ip(SocketAddr::V4(v4)) => {
            let mut s: libc::sockaddr_in = unsafe { mem::zeroed() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            unsafe { (p as *mut libc::sockaddr_in).write(s) };
            mem::size_of::<libc::sockaddr_in>()
        }
        Addr::Ip(SocketAddr::V6(v6)) => {
            let mut s: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6.port().to_be();
            s.sin6_flowinfo = v6.flowinfo();
            s.sin6_addr.s6_addr = v6.ip().octets();
            s.sin6_scope_id = v6.scope_id();
            unsafe { (p as *mut libc::sockaddr_in6).write(s) };
            mem::size_of::<libc::sockaddr_in6>()
        }
        Addr::Ll {
            ifindex,
            proto,
            mac,
        } => {
            let mut s: libc::sockaddr_ll = unsafe { mem::zeroed() };
            s.sll_family = libc::AF_PACKET as u16;
            s.sll_protocol = proto.to_be();
            s.sll_ifindex = *ifindex;
            s.sll_halen = 6;
            s.sll_addr[..6].copy_from_slice(mac);
            unsafe { (p as *mut libc::sockaddr_ll).write(s) };
            mem::size_of::<libc::sockaddr_ll>()
        }
        Addr::Vsock { cid, port } => {
            let mut s: libc::sockaddr_vm = unsafe { mem::zeroed() };
            s.svm_family = libc::AF_VSOCK as libc::sa_family_t;
            s.svm_port = *port;
            s.svm_cid = *cid;
            unsafe { (p as *mut libc::sockaddr_vm).write(s) };
            mem::size_of::<libc::sockaddr_vm>()
        }
    };
    RawAddr {
        st,
        len: len as libc::socklen_t,
    }
}

/// What a received packet's source address says.
#[derive(Debug, Clone, Copy, Default)]
pub struct Source {
    pub ip: Option<SocketAddr>,
    /// AF_PACKET packet type (PACKET_HOST, PACKET_OUTGOING, …).
    pub pkttype: Option<u8>,
}

fn from_raw(st: &libc::sockaddr_storage) -> Source {
    let fam = i32::from(st.ss_family);
    let p = st as *const libc::sockaddr_storage;
    // SAFETY: the family says which struct the kernel wrote.
    unsafe {
        match fam {
            libc::AF_INET => {
                let s = &*(p as *const libc::sockaddr_in);
                Source {
                    ip: Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()),
                        u16::from_be(s.sin_port),
                    ))),
                    pkttype: None,
                }
            }
            libc::AF_INET6 => {
                let s = &*(p as *const libc::sockaddr_in6);
                Source {
                    ip: Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(s.sin6_addr.s6_addr),
                        u16::from_be(s.sin6_port),
                        s.sin6_flowinfo,
                        s.sin6_scope_id,
                    ))),
                    pkttype: None,
                }
            }
            libc::AF_PACKET => {
                let s = &*(p as *const libc::sockaddr_ll);
                Source {
                    ip: None,
                    pkttype: Some(s.sll_pkttype),
                }
            }
            _ => Source::default(),
        }
    }
}

/// getsockname(2) for IP sockets.
pub fn local_addr(fd: &Fd) -> io::Result<SocketAddr> {
    // SAFETY: zeroed storage is valid; st/len are valid for writing.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    cvt(unsafe {
        libc::getsockname(
            fd.0,
            &mut st as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    })?;
    from_raw(&st)
        .ip
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
}

/// bind(2).
pub fn bind(fd: &Fd, a: &Addr) -> io::Result<()> {
    let r = raw(a);
    // SAFETY: r describes a valid sockaddr of r.len bytes.
    cvt(unsafe { libc::bind(fd.0, r.ptr(), r.len) }).map(drop)
}

/// connect(2) without waiting: Ok(true) if done, Ok(false) if in progress.
pub fn connect_start(fd: &Fd, a: &Addr) -> io::Result<bool> {
    let r = raw(a);
    // SAFETY: r describes a valid sockaddr of r.len bytes.
    match cvt(unsafe { libc::connect(fd.0, r.ptr(), r.len) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// connect(2), waiting at most `timeout` for it to complete.
pub fn connect(fd: &Fd, a: &Addr, timeout: Duration) -> io::Result<()> {
    if connect_start(fd, a)? {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    let rev = poll1(fd, libc::POLLOUT, deadline)?;
    if rev == 0 {
        return Err(timeout_err());
    }
    match so_error(fd)? {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn ms_until(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    // Round up so that a few microseconds left still wait 1 ms.
    (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
}

/// poll(2) on one descriptor until `deadline`; returns revents (0: timeout).
pub fn poll1(fd: &Fd, events: i16, deadline: Instant) -> io::Result<i16> {
    let mut p = [libc::pollfd {
        fd: fd.0,
        events,
        revents: 0,
    }];
    poll(&mut p, deadline)?;
    Ok(p[0].revents)
}

/// poll(2) on many descriptors until `deadline` (retrying on EINTR);
/// returns the number of ready descriptors.
pub fn poll(p: &mut [libc::pollfd], deadline: Instant) -> io::Result<usize> {
    loop {
        // SAFETY: p is a valid slice of pollfd.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms_until(deadline)) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Ok(0);
        }
    }
}

/// send/sendto, waiting (until `deadline`) while the socket buffer is full.
pub fn send(fd: &Fd, buf: &[u8], to: Option<&Addr>, deadline: Instant) -> io::Result<usize> {
    let r = to.map(raw);
    loop {
        // SAFETY: buf is valid for reading; the address (if any) is valid.
        let n = unsafe {
            match &r {
                Some(r) => libc::sendto(
                    fd.0,
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                    r.ptr(),
                    r.len,
                ),
                None => libc::send(
                    fd.0,
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    libc::MSG_NOSIGNAL,
                ),
            }
        };
        match cvt_len(n) {
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                // ENOBUFS does not wake poll: sleep a little instead.
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    std::thread::sleep(Duration::from_millis(5));
                } else {
                    poll1(fd, libc::POLLOUT, deadline)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Non-blocking recvfrom: Ok(None) when nothing is queued.
pub fn recv(fd: &Fd, buf: &mut [u8]) -> io::Result<Option<(usize, Source)>> {
    // SAFETY: zeroed storage is valid; buf is valid for writing.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            fd.0,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
            &mut st as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    };
    match cvt_len(n) {
        Ok(n) => Ok(Some((n, from_raw(&st)))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// One entry of the socket error queue (`IP_RECVERR`/`IPV6_RECVERR`).
#[derive(Debug, Clone, Copy)]
pub struct ErrInfo {
    pub errno: i32,
    /// SO_EE_ORIGIN_*: 1 local, 2 ICMP, 3 ICMPv6.
    pub origin: u8,
    pub typ: u8,
    pub code: u8,
    /// Who sent the ICMP (absent for local errors).
    pub offender: Option<IpAddr>,
    /// Where the packet that caused it was going.
    pub dest: Option<SocketAddr>,
}

/// Reads one entry of the error queue; Ok(None) if it is empty.
pub fn recv_err(fd: &Fd) -> io::Result<Option<ErrInfo>> {
    let mut data = [0u8; 1500];
    let mut ctrl = [0u64; 64]; // 512 bytes, 8-aligned for cmsghdr
                               // SAFETY: zeroed structs are valid; every pointer below refers to a
                               // live local buffer of the length given.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = &mut name as *mut libc::sockaddr_storage as *mut libc::c_void;
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = mem::size_of_val(&ctrl);
    let n = unsafe { libc::recvmsg(fd.0, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    match cvt_len(n) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    }
    let dest = if msg.msg_namelen > 0 {
        from_raw(&name).ip
    } else {
        None
    };
    // SAFETY: walking the control messages the kernel wrote into `ctrl`,
    // with the libc CMSG helpers and unaligned reads.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let is_err = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
            let ee_len = mem::size_of::<libc::sock_extended_err>();
            if is_err && h.cmsg_len as usize >= libc::CMSG_LEN(ee_len as u32) as usize {
                let d = libc::CMSG_DATA(c);
                let ee: libc::sock_extended_err =
                    std::ptr::read_unaligned(d as *const libc::sock_extended_err);
                // The offender's address follows the struct (SO_EE_OFFENDER).
                let mut off_st: libc::sockaddr_storage = mem::zeroed();
                let avail = h.cmsg_len as usize - libc::CMSG_LEN(ee_len as u32) as usize;
                let take = avail.min(mem::size_of::<libc::sockaddr_in6>());
                std::ptr::copy_nonoverlapping(
                    d.add(ee_len),
                    &mut off_st as *mut libc::sockaddr_storage as *mut u8,
                    take,
                );
                let offender = if take >= 2 {
                    from_raw(&off_st).ip.map(|s| s.ip())
                } else {
                    None
                };
                return Ok(Some(ErrInfo {
                    errno: ee.ee_errno as i32,
                    origin: ee.ee_origin,
                    typ: ee.ee_type,
                    code: ee.ee_code,
                    offender,
                    dest,
                }));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(ErrInfo {
        errno: 0,
        origin: 0,
        typ: 0,
        code: 0,
        offender: None,
        dest,
    }))
}

/// Index of the interface `name`.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: c is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// One interface address as getifaddrs(3) reports it.
#[derive(Debug, Clone)]
pub struct IfAddr {
    pub name: String,
    pub ip: Option<IpAddr>,
    pub prefix: u8,
    pub mac: Option<[u8; 6]>,
}

/// All interface addresses (IPv4, IPv6, and AF_PACKET for MACs).
pub fn if_addrs() -> Vec<IfAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; each
    // node's fields are read according to the address family.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let fam = i32::from((*ifa.ifa_addr).sa_family);
            let st = ifa.ifa_addr as *const libc::sockaddr_storage;
            match fam {
                libc::AF_INET | libc::AF_INET6 => {
                    let ip = from_raw_ptr(st, fam);
                    let prefix = if ifa.ifa_netmask.is_null() {
                        0
                    } else {
                        match from_raw_ptr(ifa.ifa_netmask as *const libc::sockaddr_storage, fam) {
                            Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
                            Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
                            None => 0,
                        }
                    };
                    out.push(IfAddr {
                        name,
                        ip,
                        prefix,
                        mac: None,
                    });
                }
                libc::AF_PACKET => {
                    let s = &*(st as *const libc::sockaddr_ll);
                    let mut mac = [0u8; 6];
                    if s.sll_halen == 6 {
                        mac.copy_from_slice(&s.sll_addr[..6]);
                    }
                    out.push(IfAddr {
                        name,
                        ip: None,
                        prefix: 0,
                        mac: (s.sll_halen == 6).then_some(mac),
                    });
                }
                _ => {}
            }
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Reads an AF_INET/AF_INET6 sockaddr of known family without assuming the
/// buffer is a whole sockaddr_storage.
///
/// SAFETY (caller): `p` points to a sockaddr of family `fam`.
unsafe fn from_raw_ptr(p: *const libc::sockaddr_storage, fam: i32) -> Option<IpAddr> {
    match fam {
        libc::AF_INET => {
            let s = &*(p as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes())))
        }
        libc::AF_INET6 => {
            let s = &*(p as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(s.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// True if `ip` is one of this machine's own addresses (or loopback,
/// unspecified): answers "from" such an address were made locally.
pub fn is_local(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    // The addresses change while the probe runs (changed-ip), but reading
    // them is a netlink dump: cache them for a short while.
    static CACHE: std::sync::Mutex<Option<(Instant, Vec<IpAddr>)>> = std::sync::Mutex::new(None);
    let Ok(mut c) = CACHE.lock() else {
        return if_addrs().iter().any(|a| a.ip == Some(ip));
    };
    let fresh = matches!(&*c, Some((t, _)) if t.elapsed() < Duration::from_millis(100));
    if !fresh {
        *c = Some((
            Instant::now(),
            if_addrs().into_iter().filter_map(|a| a.ip).collect(),
        ));
    }
    c.as_ref().is_some_and(|(_, v)| v.contains(&ip))
}

/// Raises RLIMIT_NOFILE to at least `want` if possible; returns the soft
/// limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: rlimit is plain data, get/setrlimit only read/write it.
    unsafe {
        let mut r: libc::rlimit = mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur >= want {
            return r.rlim_cur;
        }
        let mut n = r;
        n.rlim_cur = want;
        if n.rlim_max < want {
            n.rlim_max = want; // root may raise the hard limit
        }
        if libc::setrlimit(libc::RLIMIT_NOFILE, &n) == 0 {
            return want;
        }
        n = r;
        n.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &n) == 0 {
            return r.rlim_max;
        }
        r.rlim_cur
    }
}

/// Effective uid.
pub fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Symbolic name of an errno value.
pub fn errno_name(e: i32) -> String {
    let s = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EPIPE => "EPIPE",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EPROTO => "EPROTO",
        _ => return format!("errno {e}"),
    };
    s.to_string()
}

/// Short name of an io::Error: our own timeout, an errno name, or its text.
pub fn err_name(e: &io::Error) -> String {
    if is_timeout(e) {
        return "timeout".into();
    }
    match e.raw_os_error() {
        Some(n) => errno_name(n),
        None => e.to_string(),
    }
}
