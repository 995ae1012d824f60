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
    Up,
    Status,
    Down,
    Exec {
        vm: Role,
        argv: Vec<String>,
        timeout_secs: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub daemon_pid: u32,
    pub accel: String,
    pub backend: String,
    /// vhost-device-vsock: `running` or how it ended.
    pub vsock: String,
    pub vms: Vec<VmStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Reply {
    /// A step of a long operation; more replies follow.
    Progress(String),
    /// The operation finished; the text says how.
    Done(String),
    Status(StatusReport),
    Exec(ExecOutput),
    Error(String),
}
