//! Harness for the integration tests: runs the installed `tails-server` (the
//! one `./setup.sh` built from this checkout) and inspects the host.

pub mod clients;
pub mod faults;
pub mod gui;
pub mod leak;
pub mod torclient;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: `$TAILS_SERVER_BIN` or the installed one.
pub fn bin() -> PathBuf {
    std::env::var_os("TAILS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/tails-server"))
}

/// Result of one CLI run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `tails-server ARGS` with extra environment.
pub fn ts_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run tails-server").into()
}

/// Run `tails-server ARGS`.
pub fn ts(args: &[&str]) -> Run {
    ts_env(args, &[])
}

/// Run `tails-server ARGS` and insist on success.
pub fn ts_ok(args: &[&str]) -> Run {
    let r = ts(args);
    assert_eq!(r.code, 0, "tails-server {args:?} failed: {r:?}");
    r
}

/// Set by `run-tests.sh` for its main run: the testnet is the suite's, shared
/// by the tests that need one (`daemon.rs` starts it, `tor_network.rs` ends it).
pub const SHARED_TESTNET_ENV: &str = "TAILS_TESTS_SHARED_TESTNET";

/// The root namespace's testnet, held by a test that needs it. Dropped, it
/// ends the testnet if this test started it and the suite does not share it
/// ([`SHARED_TESTNET_ENV`] unset): a test file run on its own leaves nothing
/// up, and one run by `run-tests.sh` leaves it to the next.
#[must_use = "the testnet ends when this is dropped"]
pub struct TestnetGuard {
    started: bool,
}

impl TestnetGuard {
    /// The suite's testnet if one runs (`testnet up` joins it), else a new one.
    pub fn join() -> Self {
        let r = ts(&["testnet", "up"]);
        assert_eq!(r.code, 0, "testnet up: {r:?}");
        TestnetGuard {
            started: !r.stderr.contains(tails_testnet::ALREADY_UP),
        }
    }

    /// A fresh testnet: any running one is ended first.
    pub fn fresh() -> Self {
        let _ = ts(&["testnet", "down"]);
        Self::join()
    }
}

impl Drop for TestnetGuard {
    fn drop(&mut self) {
        if self.started && std::env::var_os(SHARED_TESTNET_ENV).is_none() {
            let r = ts(&["testnet", "down"]);
            if r.code != 0 {
                eprintln!("testnet down after the test: {r:?}");
            }
        }
    }
}

/// PIDs of processes whose command name starts with `prefix`.
pub fn pids_named(prefix: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // A zombie is gone for our purposes.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if comm.starts_with(prefix) && !zombie {
            out.push(pid);
        }
    }
    out
}

/// PIDs of processes whose command name is exactly `name`.
pub fn pids_exact(name: &str) -> Vec<u32> {
    pids_named(name)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .collect()
}

/// Everything the stack may leave behind, listed (empty when clean).
pub fn leftovers(runtime: &Path) -> Vec<String> {
    let mut l = Vec::new();
    for name in [
        "qemu-system",
        "vhost-device",
        "tails-jailer",
        "qemu-storage",
    ] {
        for pid in pids_named(name) {
            l.push(format!("process {name} {pid}"));
        }
    }
    if runtime.exists() {
        l.push(format!("runtime dir {}", runtime.display()));
    }
    l
}

/// The parsed `status --json`.
pub fn status_json() -> serde_json::Value {
    let r = ts_ok(&["status", "--json"]);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {r:?}"))
}

/// The entry of `vm` in a status report.
pub fn vm_status<'a>(status: &'a serde_json::Value, vm: &str) -> &'a serde_json::Value {
    status["vms"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == vm))
        .unwrap_or_else(|| panic!("no {vm} in status: {status}"))
}

/// The network namespace `name` (`/run/netns/<name>`), opened here so that a
/// missing one fails in the caller, to be entered with [`enter_netns`].
pub fn open_netns(name: &str) -> std::fs::File {
    std::fs::File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("network namespace {name}: {e}"))
}

/// Move the calling thread, and only it, into the network namespace `ns`.
pub fn enter_netns(ns: std::fs::File) -> Result<(), String> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))
}

/// Wait until `cond` holds, polling, for at most `secs`.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed().as_secs() < secs {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    cond()
}

/// Is the host's table `inet tails_server` loaded (in this namespace)?
pub fn host_table_loaded() -> bool {
    Command::new("/usr/sbin/nft")
        .args(["list", "table", "inet", "tails_server"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Stop whatever stack runs and insist that nothing is left of it (no
/// process, no runtime directory, no host table).
pub fn clean_start(runtime: &Path) {
    let _ = ts(&["down"]);
    assert!(
        leftovers(runtime).is_empty(),
        "not clean before the test: {:?}",
        leftovers(runtime)
    );
    assert!(!host_table_loaded(), "a host table is left from before");
}

/// The value of `key: value` in a YAML output of the CLI (one line each).
pub fn yaml_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

/// Poll `f` every 2 s until it returns Some, for at most `secs`.
pub fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(secs) {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    None
}

/// The shell command that puts `page` where the App VM's nginx serves it.
pub fn page_script(page: &str) -> String {
    format!("mkdir -p /var/www/tails-server && echo '{page}' > /var/www/tails-server/index.html")
}
