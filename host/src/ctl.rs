//! Messages between the CLI and the daemon on the root-only control socket.
//! They travel in `tails-proto` frames, like the guest messages.

use crate::stack::VmStatus;
use serde::{Deserialize, Serialize};
use tails_proto::msg::ExecOutput;
use tails_proto::Role;

/// Largest frame on the control socket.
pub const MAX_CTL_FRAME: usize = 8 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Request {
    Up {
        network: Network,
        /// `Bridge` lines (without the keyword) for tor in the Tor VM.
        bridges: Vec<String>,
    },
    Status,
    Down,
    /// Start a service in the App VM and publish it as an onion service.
    Enable {
        service: String,
    },
    /// Take it down and stop it.
    Disable {
        service: String,
    },
    /// Is it running, is it published?
    ServiceState {
        service: String,
    },
    Exec {
        vm: Role,
        argv: Vec<String>,
        timeout_secs: u64,
        /// Bytes for the command's stdin (at most MAX_EXEC_STDIN).
        stdin: Vec<u8>,
    },
}

/// Which network the Tor VM's tor joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The public Tor network.
    Public,
    /// The embedded private Tor network (`tails-server testnet up` first).
    Local,
    /// No uplink at all: tor does not run (tests, offline maintenance).
    None,
}

impl Network {
    pub fn name(self) -> &'static str {
        match self {
            Network::Public => "public",
            Network::Local => "local",
            Network::None => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub daemon_pid: u32,
    pub accel: String,
    pub backend: String,
    pub network: Network,
    /// vhost-device-vsock: `running` or how it ended.
    pub vsock: String,
    /// The host's table, read back from the kernel.
    pub host_firewall: crate::firewall::FirewallStatus,
    /// How the App VM reaches the outside now (or that it cannot).
    pub path_out: String,
    pub vms: Vec<VmStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Reply {
    /// A step of a long operation; more replies follow.
    Progress(String),
    /// Tor's bootstrap during `up`; more replies follow.
    Tor(tails_proto::TorProgress),
    /// The operation finished; the text says how.
    Done(String),
    Status(StatusReport),
    Service(ServiceReport),
    Exec(ExecOutput),
    Error(String),
}

/// A service's state as the daemon knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceReport {
    pub running: bool,
    pub published: bool,
    /// The onion address (computed on the host from the key).
    pub address: Option<String>,
}
