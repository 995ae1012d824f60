//! Fault injection for the self-healing tests and the recovery benchmark:
//! kill one part of the stack with SIGKILL, and an authorized client that
//! fetches the published page in a loop, to tell when the service answers
//! again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::torclient::{http_get, Fetch};

/// A part of the stack to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    TorVm,
    AppVm,
    Vsock,
    Daemon,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::TorVm, Part::AppVm, Part::Vsock, Part::Daemon];

    pub fn name(self) -> &'static str {
        match self {
            Part::TorVm => "the Tor VM's QEMU",
            Part::AppVm => "the App VM's QEMU",
            Part::Vsock => "the App VM's vsock backend",
            Part::Daemon => "the daemon",
        }
    }
}

/// The pid of `part` now (QEMUs by their `-name`, the App VM's
/// vhost-device-vsock by its socket, the daemon by its pid file in
/// `runtime`).
pub fn pid_of(part: Part, runtime: &std::path::Path) -> Option<u32> {
    let qemu = |vm: &str| {
        crate::pids_named("qemu-system").into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("{vm},debug-threads")))
        })
    };
    match part {
        Part::TorVm => qemu("torvm"),
        Part::AppVm => qemu("appvm"),
        Part::Vsock => crate::pids_named("vhost-device").into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("vsock/appvm/vhost.sock"))
        }),
        Part::Daemon => std::fs::read_to_string(runtime.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    }
}

/// SIGKILL `part`; when it was killed.
pub fn kill(part: Part, runtime: &std::path::Path) -> Instant {
    let pid = pid_of(part, runtime).unwrap_or_else(|| panic!("{} is not running", part.name()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap_or_else(|e| panic!("kill {}: {e}", part.name()));
    let killed = Instant::now();
    // Gone (not merely signalled) before the caller goes on: a command sent
    // to a daemon still on its way out would meet a closing socket.
    let gone = crate::wait_until(5, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(true)
    });
    assert!(gone, "{} (pid {pid}) did not die", part.name());
    killed
}

/// One fetch: when it started, when it ended, whether the service answered.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub start: Instant,
    pub end: Instant,
    pub answered: bool,
    pub what: String,
}

/// An authorized client fetching the page in a loop until dropped.
pub struct FetchLoop {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FetchLoop {
    /// Fetch through the client at `socks`, from the host's own network
    /// namespace (`netns` None) or from inside `netns` (the namespace the
    /// stack runs in for the leak tests: the client is reached only from
    /// there, never through the machine's own network).
    pub fn start(netns: Option<&str>, socks: SocketAddr, address: &str, port: u16) -> FetchLoop {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, host) = (attempts.clone(), stop.clone(), address.to_owned());
        let ns = netns.map(crate::open_netns);
        let thread = std::thread::spawn(move || {
            if let Some(f) = ns {
                // This thread only: the test's other threads stay where they are.
                crate::enter_netns(f).expect("enter the network namespace");
            }
            while !s.load(Ordering::SeqCst) {
                let start = Instant::now();
                let f = http_get(socks, &host, port, Duration::from_secs(30));
                let answered = matches!(f, Fetch::Ok { .. });
                let what = match &f {
                    Fetch::Ok { status, .. } => status.clone(),
                    other => format!("{other:?}"),
                };
                if let Ok(mut v) = a.lock() {
                    v.push(Attempt {
                        start,
                        end: Instant::now(),
                        answered,
                        what,
                    });
                }
                std::thread::sleep(Duration::from_millis(if answered { 500 } else { 250 }));
            }
        });
        FetchLoop {
            attempts,
            stop,
            thread: Some(thread),
        }
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The end of the first answered fetch that started after `t`, waiting
    /// at most `limit`.
    pub fn first_answer_after(&self, t: Instant, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(a) = self.attempts().iter().find(|a| a.start > t && a.answered) {
                return Some(a.end);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// After a kill at `t`: the end of the first answered fetch after the
    /// service's last unanswered one, once the service has answered every
    /// fetch for `settle` since; `None` if that does not happen within
    /// `limit`. (A fetch answered just after the kill, before the supervisor
    /// stopped what was left, is not a recovery.)
    pub fn recovered(&self, t: Instant, settle: Duration, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let after: Vec<Attempt> = self
                .attempts()
                .into_iter()
                .filter(|a| a.start > t)
                .collect();
            let streak = match after.iter().rposition(|a| !a.answered) {
                Some(i) => after.get(i + 1),
                None => after.first(),
            };
            // Steady: answered since, at least three fetches, the last one
            // just now (a fetch that hangs through an outage is not in the
            // list until it ends).
            if let (Some(first), Some(last)) = (streak, after.last()) {
                let fetches = after.len()
                    - after
                        .iter()
                        .position(|a| a.start == first.start)
                        .unwrap_or(0);
                if first.answered
                    && fetches >= 3
                    && last.end.elapsed() < Duration::from_secs(3)
                    && last.end.duration_since(first.start) >= settle
                {
                    return Some(first.end);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The fetches that started in `[from, to]`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.start >= from && a.start <= to)
            .collect()
    }
}

impl Drop for FetchLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
