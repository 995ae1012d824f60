//! What a daemon that died left behind: found (read-only, for `status`
//! without a daemon) and taken over by the next daemon when it starts.
//!
//! The QEMUs and vhost-device-vsock of a dead daemon keep running, fenced in
//! by the host table, which stays loaded. The next daemon stops them (each
//! checked by pid *and* start time, so a reused pid is never signalled), and
//! the reconciler then brings the stack back to what `desired.json` asks.
//! The host table is removed only when nothing of the stack runs any more
//! and the stack is not to run again.

use std::time::Duration;

use serde::Serialize;

use crate::paths::Paths;
use crate::proc::{pid_alive, ProcId};
use crate::stack::StateFile;

/// What a daemon that died left.
#[derive(Debug, Clone, Serialize)]
pub struct Stale {
    /// The dead daemon's pid, from its pid file.
    pub daemon_pid: Option<u32>,
    /// Its processes still running (QEMU, vhost-device-vsock): `name (pid N)`.
    pub processes: Vec<String>,
    /// The host table is still loaded (so those processes stay fenced in).
    pub host_firewall: bool,
}

impl Stale {
    /// One line: what was found.
    pub fn describe(&self) -> String {
        let who = match self.daemon_pid {
            Some(p) => format!("the daemon (pid {p}) died"),
            None => "a daemon died".into(),
        };
        let procs = if self.processes.is_empty() {
            "no process of its stack still runs".to_string()
        } else {
            format!("still running: {}", self.processes.join(", "))
        };
        let fw = if self.host_firewall {
            format!(
                "the host firewall (table {}) stayed loaded",
                crate::firewall::table_name()
            )
        } else {
            "the host firewall is not loaded".into()
        };
        format!("{who}; {procs}; {fw}")
    }
}

/// The dead daemon's pid file, if any.
pub fn daemon_pid(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.daemon_pid())
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The live processes the state file names (only the jailers that run the
/// QEMUs and vsock backends, and those programs themselves, by pid, start
/// time and name).
fn stale_processes(paths: &Paths) -> Vec<ProcId> {
    let Ok(Some(st)) = crate::store::read_json::<StateFile>(&paths.state_file()) else {
        return Vec::new();
    };
    st.processes
        .into_iter()
        .filter(|p| p.alive())
        .filter(|p| {
            p.comm == crate::proc::JAILER_COMM
                || p.comm.starts_with("qemu-system")
                || p.comm.starts_with("vhost-device")
        })
        .collect()
}

/// What a dead daemon left, if it left anything (runtime files or the host
/// table); `None` while a daemon runs or when all is clean. Changes nothing.
pub fn find(paths: &Paths) -> Option<Stale> {
    find_left(paths, false)
}

/// [`find`], where the control socket is systemd's when `socket_given`
/// (socket activation): then it is no leftover.
pub fn find_left(paths: &Paths, socket_given: bool) -> Option<Stale> {
    let daemon = daemon_pid(paths);
    if daemon.is_some_and(|p| pid_alive(p) && p != std::process::id()) {
        return None;
    }
    let host_firewall = crate::firewall::status(&crate::firewall::nft()).present;
    let leftovers = paths.state_file().exists()
        || paths.desired_file().exists()
        || (!socket_given && paths.control_socket().exists())
        || paths.daemon_pid().exists();
    if !leftovers && !host_firewall {
        return None;
    }
    Some(Stale {
        daemon_pid: daemon,
        processes: stale_processes(paths)
            .iter()
            .map(ProcId::describe)
            .collect(),
        host_firewall,
    })
}

/// Take over from a dead daemon (called by a starting daemon that holds
/// the state lock): stop the processes it left, and remove the host table
/// if the stack is not to run again (`keep_table`); what was found.
pub fn take_over(paths: &Paths, keep_table: bool, socket_given: bool) -> Option<String> {
    let found = find_left(paths, socket_given)?;
    let procs = stale_processes(paths);
    let stopped = crate::proc::kill_all(&procs, Duration::from_secs(5));
    let mut what = found.describe();
    if !procs.is_empty() {
        what.push_str(if stopped {
            "; stopped them"
        } else {
            "; could not stop all of them"
        });
    }
    if found.host_firewall && !keep_table && stopped {
        match crate::firewall::remove(&crate::firewall::nft()) {
            Ok(()) => what.push_str("; removed the host firewall"),
            Err(e) => what.push_str(&format!("; cannot remove the host firewall: {e}")),
        }
    }
    crate::stack::remove_stack_files(paths);
    if !socket_given {
        let _ = std::fs::remove_file(paths.control_socket());
    }
    Some(what)
}
