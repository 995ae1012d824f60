//! The testnet's processes: starting them detached (own session, so they
//! outlive whoever ran `up`), recognising them again from another process
//! (pid plus kernel start time, so a recycled pid is never signalled), and
//! stopping them (SIGTERM, then SIGKILL after a grace period).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::TestnetError;

/// A process, as the kernel knows it: its pid and its start time (clock
/// ticks since boot, field 22 of /proc/PID/stat). The pair is unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

/// State letter and start time of `pid`, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after the last ')'. There, index 0 is field 3 (state) and
    // index 19 is field 22 (starttime).
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcId {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: i32) -> Option<ProcId> {
        stat(pid).map(|(_, start)| ProcId { pid, start })
    }

    /// Whether this very process still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        // Reap it if it is our child that exited (then /proc forgets it); for
        // anyone else's process this fails with ECHILD and does nothing.
        // SAFETY: waitpid with a null status pointer is allowed.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG) };
        matches!(stat(self.pid), Some((s, start)) if start == self.start && s != 'Z' && s != 'X')
    }

    /// Sends `sig` if this very process still runs.
    pub fn signal(&self, sig: i32) {
        if self.alive() {
            // SAFETY: plain kill(2); the start time check above makes sure
            // the pid still names our process (the window is negligible).
            unsafe { libc::kill(self.pid, sig) };
        }
    }
}

/// Starts `program args` in a new session, stdin from /dev/null, stdout and
/// stderr appended to `out`. The process is not waited for: it outlives us.
pub(crate) fn spawn_detached(
    program: &Path,
    args: &[String],
    out: &Path,
) -> Result<ProcId, TestnetError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(out)
        .map_err(|e| TestnetError::io(format!("open {}", out.display()), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| TestnetError::io("dup log fd", e))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| TestnetError::io(format!("start {}", program.display()), e))?;
    let pid = child.id() as i32;
    // Not waited for: it was never waited for, so /proc still shows it (at
    // worst as a zombie, which ProcId::alive() reaps and reports dead).
    drop(child);
    ProcId::of(pid).ok_or_else(|| TestnetError::Command {
        command: program.display().to_string(),
        detail: format!("process {pid} vanished at once: see {}", out.display()),
    })
}

/// Stops `procs` (name, process): SIGTERM to those alive, SIGKILL to those
/// still alive after `grace`. Returns whether any was alive, or the names of
/// those that survived even SIGKILL.
pub(crate) fn stop_all(procs: &[(String, ProcId)], grace: Duration) -> Result<bool, TestnetError> {
    let alive: Vec<&(String, ProcId)> = procs.iter().filter(|(_, p)| p.alive()).collect();
    if alive.is_empty() {
        return Ok(false);
    }
    for (_, p) in &alive {
        p.signal(libc::SIGTERM);
    }
    if !wait_gone(&alive, grace) {
        for (_, p) in &alive {
            p.signal(libc::SIGKILL);
        }
        if !wait_gone(&alive, Duration::from_secs(5)) {
            let names: Vec<String> = alive
                .iter()
                .filter(|(_, p)| p.alive())
                .map(|(n, p)| format!("{n} (pid {})", p.pid))
                .collect();
            return Err(TestnetError::Unkillable(names.join(", ")));
        }
    }
    Ok(true)
}

fn wait_gone(procs: &[&(String, ProcId)], timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if procs.iter().all(|(_, p)| !p.alive()) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `program args` to completion with stdin from /dev/null, capturing
/// its output; an error names the command and quotes the end of its output.
pub(crate) fn run(program: &Path, args: &[&str]) -> Result<String, TestnetError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestnetError::io(format!("run {}", program.display()), e))?;
    check_output(program, args, out)
}

pub(crate) fn check_output(
    program: &Path,
    args: &[&str],
    out: std::process::Output,
) -> Result<String, TestnetError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    Err(TestnetError::Command {
        command: format!("{} {}", program.display(), args.join(" ")),
        detail: format!("{}: {}", out.status, tail(&text, 3)),
    })
}

/// The last `n` non-empty lines of `text`, on one line.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The last warning or error line of a tor log (or any log), if any.
pub(crate) fn last_problem(log: &Path) -> Option<String> {
    let text = fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .rev()
        .find(|l| l.contains("[err]") || l.contains("[warn]") || l.contains("rror"))
        .map(|l| l.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let other = ProcId {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!other.alive());
    }

    #[test]
    fn a_stopped_child_is_dead_and_reaped() {
        let p = spawn_detached(
            Path::new("/bin/sleep"),
            &["30".to_string()],
            Path::new("/dev/null"),
        )
        .unwrap();
        assert!(p.alive());
        assert!(stop_all(&[("sleep".into(), p)], Duration::from_secs(5)).unwrap());
        assert!(!p.alive());
        assert!(!stop_all(&[("sleep".into(), p)], Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 2), "");
    }
}
