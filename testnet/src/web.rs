//! The "outside" web server: a small HTTP/1.0 responder that serves one fixed
//! page on `<outside>:8080` inside the namespace and appends one line per
//! request (time, client address, request line) to a log file.
//!
//! It runs as its own process so that it outlives whoever ran `up`: forked
//! (twice, so it is nobody's child and never a zombie), in a new session,
//! with default signal dispositions; it enters the namespace with setns(2),
//! binds, drops to nobody, reports "OK <pid>" (or the error) on a pipe, and
//! serves. ps shows it as `ts-testnet-web <address> <log>`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::TestnetError;
use crate::process::ProcId;

/// The page served for every request.
pub const PAGE: &str = "tails-server testnet outside page\n";
/// Longest request head read.
const MAX_REQUEST: usize = 8192;
/// Connections served at once; more are closed at once.
const MAX_ACTIVE: usize = 64;
/// The unprivileged user the server runs as once bound (nobody:nogroup).
const NOBODY: libc::uid_t = 65534;

/// Starts the server in the namespace at `netns_path`, listening on `addr`,
/// logging to `log_path`. Returns once it listens.
pub(crate) fn spawn(
    netns_path: &Path,
    addr: SocketAddr,
    log_path: &Path,
) -> Result<ProcId, TestnetError> {
    let ns = File::open(netns_path)
        .map_err(|e| TestnetError::io(format!("open {}", netns_path.display()), e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(log_path)
        .map_err(|e| TestnetError::io(format!("open {}", log_path.display()), e))?;
    let devnull = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| TestnetError::io("open /dev/null", e))?;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(TestnetError::io("pipe2", std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 just returned these two fresh descriptors, owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: the child of a possibly multi-threaded process only uses
    // system calls and glibc's malloc (which fork(2) in glibc leaves usable),
    // takes no lock another thread could hold (no stdio, no env), and leaves
    // only through _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(TestnetError::io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above; the intermediate child only calls setsid, fork, _exit.
        unsafe {
            libc::setsid();
            let grandchild = libc::fork();
            if grandchild != 0 {
                libc::_exit(if grandchild < 0 { 1 } else { 0 });
            }
        }
        server_main(ns.as_raw_fd(), devnull.as_raw_fd(), log, log_path, wr, addr);
    }
    drop(wr);
    let mut status = 0;
    // SAFETY: pid is our child (the intermediate one), waited once.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let msg = read_report(&rd, Duration::from_secs(10))?;
    match msg
        .strip_prefix("OK ")
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        Some(pid) => ProcId::of(pid)
            .ok_or_else(|| TestnetError::Web(format!("process {pid} vanished at once"))),
        None => Err(TestnetError::Web(msg.trim().to_string())),
    }
}

/// Reads the child's one-line report, waiting at most `timeout`.
fn read_report(rd: &OwnedFd, timeout: Duration) -> Result<String, TestnetError> {
    let end = std::time::Instant::now() + timeout;
    let mut f = File::from(rd.try_clone().map_err(|e| TestnetError::io("dup", e))?);
    let mut msg = Vec::new();
    while !msg.contains(&b'\n') && msg.len() < 512 {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
        if n <= 0 {
            return Err(TestnetError::Web(format!(
                "no report within {} s",
                timeout.as_secs()
            )));
        }
        let mut buf = [0u8; 512];
        let n = f
            .read(&mut buf)
            .map_err(|e| TestnetError::io("read the web server's report", e))?;
        if n == 0 {
            break;
        }
        msg.extend_from_slice(&buf[..n]);
    }
    if msg.is_empty() {
        return Err(TestnetError::Web("it exited before reporting".into()));
    }
    Ok(String::from_utf8_lossy(&msg).into_owned())
}

/// The server process: never returns.
fn server_main(
    ns_fd: RawFd,
    devnull: RawFd,
    log: File,
    log_path: &Path,
    wr: OwnedFd,
    addr: SocketAddr,
) -> ! {
    let mut report = File::from(wr);
    let fail = |report: &mut File, what: &str| -> ! {
        let msg = format!("ERR {what}: {}\n", std::io::Error::last_os_error());
        let _ = report.write_all(msg.as_bytes());
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(1) }
    };
    // SAFETY: plain system calls on valid arguments.
    unsafe {
        // Default dispositions and an empty mask: the parent may have
        // handlers (a daemon's SIGTERM handler) that mean nothing here.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGCHLD,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::prctl(
            libc::PR_SET_NAME,
            c"ts-testnet-web".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        set_cmdline(&format!("ts-testnet-web {addr} {}", log_path.display()));
        if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
            fail(&mut report, "setns");
        }
        for fd in 0..3 {
            libc::dup2(devnull, fd);
        }
    }
    close_fds_except(&[log.as_raw_fd(), report.as_raw_fd()]);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = report.write_all(format!("ERR bind {addr}: {e}\n").as_bytes());
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    };
    // SAFETY: dropping privileges; checked.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(NOBODY) != 0
            || libc::setuid(NOBODY) != 0
        {
            fail(&mut report, "drop privileges to nobody");
        }
    }
    // One write, so that the parent reads the whole line at once.
    let _ = report.write_all(format!("OK {}\n", std::process::id()).as_bytes());
    drop(report);
    serve(listener, Arc::new(log));
}

/// Makes /proc/self/cmdline (what ps shows) read `title` rather than the
/// command line of the process that ran `up` (which would look like an `up`
/// that never ended). With CAP_SYS_RESOURCE the kernel is pointed at a new
/// buffer; without, the old argument area is overwritten with as much of the
/// title as fits. Only cosmetic: failures are ignored.
fn set_cmdline(title: &str) {
    let mut buf = title.as_bytes().to_vec();
    buf.push(0);
    // Leaked on purpose: the kernel reads the command line from it for as
    // long as the process lives.
    let buf: &'static mut [u8] = Box::leak(buf.into_boxed_slice());
    let start = buf.as_ptr() as libc::c_ulong;
    let end = start + buf.len() as libc::c_ulong;
    // SAFETY: prctl(PR_SET_MM) only records the addresses of a live,
    // never-freed buffer. The heap lies below the stack (the old area), so
    // the new start comes first and keeps start < end at every step.
    let moved = unsafe {
        libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_ARG_START, start, 0, 0) == 0
            && libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_ARG_END, end, 0, 0) == 0
    };
    if moved {
        return;
    }
    // Fields 48 and 49 of /proc/self/stat: the argument area's bounds.
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (Some(Ok(a)), Some(Ok(b))) = (
        f.get(45).map(|x| x.parse::<usize>()),
        f.get(46).map(|x| x.parse::<usize>()),
    ) else {
        return;
    };
    if a == 0 || b <= a + 1 || b - a > 1 << 20 {
        return;
    }
    // The whole title if it fits, else its first word (cut if need be).
    let title = if title.len() < b - a {
        title
    } else {
        title.split(' ').next().unwrap_or("")
    };
    let n = title.len().min(b - a - 1);
    // SAFETY: [a, b) is this process's own argument area (on its initial
    // stack, writable); nothing in this process reads the arguments again.
    unsafe {
        std::ptr::copy_nonoverlapping(title.as_ptr(), a as *mut u8, n);
        std::ptr::write_bytes((a + n) as *mut u8, 0, b - a - n);
    }
}

/// Closes every descriptor but 0, 1, 2 and `keep`.
fn close_fds_except(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing descriptors this fresh process inherited; the
            // read_dir one is already closed (EBADF, harmless).
            unsafe { libc::close(fd) };
        }
    }
}

fn serve(listener: TcpListener, log: Arc<File>) -> ! {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_ACTIVE {
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (log2, active2) = (log.clone(), active.clone());
        let spawned = std::thread::Builder::new().spawn(move || {
            handle(stream, peer, &log2);
            active2.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Serves one connection: reads the request head, answers, logs.
pub(crate) fn handle(mut stream: TcpStream, peer: SocketAddr, log: &File) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while buf.len() < MAX_REQUEST {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    let first = request_line(&buf);
    let (status, response) = respond(&first);
    let _ = stream.write_all(&response);
    let _ = stream.flush();
    let _ = (&*log).write_all(log_line(SystemTime::now(), peer, &first, status).as_bytes());
}

/// The request line, printable ASCII only, at most 200 characters.
pub(crate) fn request_line(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    buf[..end]
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(200)
        .map(|&b| b as char)
        .collect()
}

/// The status and the full response to a request line.
pub(crate) fn respond(request_line: &str) -> (u16, Vec<u8>) {
    let method = request_line.split(' ').next().unwrap_or("");
    let (status, reason, body) = match method {
        "GET" | "HEAD" => (200, "OK", PAGE),
        "" => (400, "Bad Request", "bad request\n"),
        _ => (405, "Method Not Allowed", "method not allowed\n"),
    };
    let mut r = format!(
        "HTTP/1.0 {status} {reason}\r\nServer: tails-testnet\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        r.extend_from_slice(body.as_bytes());
    }
    (status, r)
}

/// One log line: `2024-01-02T03:04:05Z 10.100.0.2:41234 "GET / HTTP/1.1" 200`.
pub(crate) fn log_line(t: SystemTime, peer: SocketAddr, request_line: &str, status: u16) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{} {peer} \"{request_line}\" {status}\n", utc(secs))
}

/// Formats Unix seconds as UTC, ISO 8601 (days to civil date: H. Hinnant's algorithm).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_704_164_645), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn responses() {
        let (s, r) = respond("GET /x HTTP/1.1");
        assert_eq!(s, 200);
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(r.ends_with(&format!("\r\n\r\n{PAGE}")));
        assert!(r.contains(&format!("Content-Length: {}\r\n", PAGE.len())));
        let (_, h) = respond("HEAD / HTTP/1.0");
        assert!(String::from_utf8(h).unwrap().ends_with("\r\n\r\n"));
        assert_eq!(respond("").0, 400);
        assert_eq!(respond("POST / HTTP/1.0").0, 405);
    }

    #[test]
    fn request_line_is_sanitized_and_logged_with_the_client_address() {
        assert_eq!(
            request_line(b"GET /a\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n"),
            "GET /a[31m HTTP/1.1"
        );
        assert_eq!(request_line(&[b'a'; 500]).len(), 200);
        let peer: SocketAddr = "10.100.0.2:41234".parse().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        assert_eq!(
            log_line(t, peer, "GET / HTTP/1.1", 200),
            "2024-01-02T03:04:05Z 10.100.0.2:41234 \"GET / HTTP/1.1\" 200\n"
        );
    }

    #[test]
    fn handle_serves_the_page_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let path =
            std::env::temp_dir().join(format!("tails-testnet-weblog-{}", std::process::id()));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let t = std::thread::spawn(move || {
            let (s, peer) = l.accept().unwrap();
            handle(s, peer, &log);
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /probe HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        t.join().unwrap();
        assert!(body.ends_with(PAGE));
        let logged = fs::read_to_string(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert!(logged.contains(" 127.0.0.1:"), "{logged}");
        assert!(logged.contains("\"GET /probe HTTP/1.0\" 200"), "{logged}");
    }
}
