//! Processes of the stack seen from outside: identified by pid *and* start
//! time (a pid alone may be reused by an unrelated process once the first
//! one is gone), checked for life, and stopped.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The command name of tails-jailer (15 bytes at most, like every `comm`).
pub const JAILER_COMM: &str = "tails-jailer";

/// One process, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_time: u64,
    /// Its command name (`comm`).
    pub comm: String,
}

/// `(state, start time)` of `pid` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after
    // the last ')'. Then: state (field 3) … starttime (field 22).
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcId {
    /// The process `pid` now, if it runs.
    pub fn of(pid: u32) -> Option<ProcId> {
        let (state, start_time) = stat(pid)?;
        if matches!(state, 'Z' | 'X') {
            return None;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some(ProcId {
            pid,
            start_time,
            comm: comm.trim_end().to_owned(),
        })
    }

    /// Is this very process (same pid, same start) still alive (not a zombie)?
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((s, t)) if t == self.start_time && !matches!(s, 'Z' | 'X'))
    }

    /// `name (pid N)`; for a jailer, the program it jails: `name (pid N,
    /// jailed)`.
    pub fn describe(&self) -> String {
        if self.comm == JAILER_COMM {
            if let Some(child) = self.jailed() {
                return format!("{} (pid {}, jailed)", child.comm, child.pid);
            }
        }
        format!("{} (pid {})", self.comm, self.pid)
    }

    /// The program a jailer runs: its child that is not the jailer's own
    /// log pump (a fork of the jailer, with the jailer's name).
    pub fn jailed(&self) -> Option<ProcId> {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).ok()?;
        children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter_map(ProcId::of)
            .find(|c| c.comm != JAILER_COMM)
    }

    /// Signal it through a pidfd: the pidfd is opened first, then the start
    /// time checked, so the signal reaches this very process even if its
    /// pid were reused between the check and the signal.
    fn signal(&self, sig: nix::sys::signal::Signal) {
        // SAFETY: pidfd_open takes a pid and flags; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
        if fd < 0 {
            return;
        }
        // SAFETY: a descriptor pidfd_open just returned, ours alone.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        if self.alive() {
            // SAFETY: pidfd_send_signal on our pidfd, no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    sig as libc::c_int,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }

    /// SIGKILL it (if it is still this process).
    pub fn kill(&self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Is `pid` a live process? A zombie (such as a child not yet reaped) is not.
pub fn pid_alive(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if !matches!(s, 'Z' | 'X'))
}

/// SIGKILL each of `procs`, then wait (at most `limit`) until all are gone;
/// whether they are.
pub fn kill_all(procs: &[ProcId], limit: Duration) -> bool {
    for p in procs {
        p.kill();
    }
    let start = Instant::now();
    while procs.iter().any(ProcId::alive) && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    !procs.iter().any(ProcId::alive)
}

/// This process's children whose command name is `comm`.
pub fn children_named(comm: &str) -> Vec<ProcId> {
    let me = std::process::id();
    // Children of every thread of ours (tokio's workers spawn too).
    let mut pids: Vec<u32> = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                pids.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(ProcId::of)
        .filter(|p| p.comm == comm)
        .collect()
}

/// SIGTERM each of `procs`, SIGKILL those left after `grace`; whether all
/// are gone.
pub fn terminate_all(procs: &[ProcId], grace: Duration) -> bool {
    for p in procs {
        p.signal(nix::sys::signal::Signal::SIGTERM);
    }
    let start = Instant::now();
    while procs.iter().any(ProcId::alive) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_all(procs, Duration::from_secs(3))
}

/// Stop a child: SIGTERM, then SIGKILL after `grace`; reaped either way.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let id = ProcId::of(child.id()).expect("running");
        assert_eq!(id.comm, "sleep");
        assert!(id.alive());
        let other = ProcId {
            start_time: id.start_time + 1,
            ..id.clone()
        };
        assert!(!other.alive(), "another start time is another process");
        terminate(&mut child, Duration::from_secs(1));
        assert!(!id.alive());
        assert!(ProcId::of(id.pid).is_none());
        assert!(!pid_alive(id.pid));
    }

    #[test]
    fn kill_all_waits_for_the_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let id = ProcId::of(child.id()).expect("running");
        // Reap it from another thread, as a parent would.
        let t = std::thread::spawn(move || child.wait());
        assert!(kill_all(std::slice::from_ref(&id), Duration::from_secs(5)));
        assert!(t.join().expect("join").is_ok());
    }
}
