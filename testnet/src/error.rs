//! The errors of the testnet: one line each, saying what went wrong and what
//! to do about it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong while starting, inspecting or stopping the testnet.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// Network namespaces, veth pairs and dropping to debian-tor need root.
    #[error("the testnet needs root (network namespaces, veth pairs): run it as root")]
    NotRoot,
    /// A program the testnet runs is not installed.
    #[error("{tool} is missing: run ./setup.sh (Debian package {package})")]
    MissingTool {
        /// The program's name.
        tool: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
    },
    /// A system user the testnet runs its processes as does not exist.
    #[error("user {user} is missing: run ./setup.sh (Debian package {package})")]
    MissingUser {
        /// The user's name.
        user: &'static str,
        /// The Debian package that creates it.
        package: &'static str,
    },
    /// The [`crate::Config`] is unusable.
    #[error("invalid testnet configuration: {0}")]
    Config(String),
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (ip, tor-gencert, tor --list-fingerprint) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and the end of its output.
        detail: String,
    },
    /// The state file exists but cannot be used.
    #[error(
        "state file {path} is unusable ({detail}): run `tails-server testnet down` to clean up"
    )]
    State {
        /// The state file.
        path: PathBuf,
        /// Why it is unusable.
        detail: String,
    },
    /// A process of the testnet exited while the network was starting.
    #[error(
        "{name} exited during start-up ({last}): see {log}; `tails-server testnet down` cleans up"
    )]
    ProcessDied {
        /// The node or service name (tsauth0, dnsmasq, …).
        name: String,
        /// Its last warning or error line, if any.
        last: String,
        /// Where its log is.
        log: PathBuf,
    },
    /// The network did not become usable before the deadline.
    #[error("the testnet is not ready after {secs} s: {condition}; logs in {logs}; `tails-server testnet down` cleans up")]
    NotReady {
        /// The deadline, in seconds.
        secs: u64,
        /// The first readiness condition that is not met.
        condition: String,
        /// The state directory holding every log.
        logs: PathBuf,
    },
    /// The outside web server could not be started.
    #[error("the outside web server did not start: {0}")]
    Web(String),
    /// The client tor's control port misbehaved.
    #[error("tor control port {addr}: {detail}")]
    Control {
        /// The control port.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
    /// Some processes survived SIGKILL.
    #[error("could not stop {0} even with SIGKILL: check them with ps and retry `tails-server testnet down`")]
    Unkillable(String),
    /// The state directory holds something that is not a testnet.
    #[error("{0} exists but is not a testnet state directory (no .tails-testnet marker): remove it by hand or choose another state_dir")]
    ForeignStateDir(PathBuf),
    /// The testnet runs, but its host end is in another network namespace.
    #[error("the testnet is up, but was started in another network namespace ({theirs}; this is {ours}): run `tails-server testnet down`, then `testnet up` here")]
    OtherNamespace { theirs: String, ours: String },

    /// The testnet is down, so there is nothing to read.
    #[error("the testnet is not up: run `tails-server testnet up`")]
    NotUp,

    #[error("the testnet's client: {0}")]
    Client(String),
}

impl TestnetError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestnetError::Io {
            what: what.into(),
            source,
        }
    }
}
