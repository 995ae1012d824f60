//! Host ↔ guest wire protocol.
//!
//! Every message travels in one frame: an 8-byte header (magic `TS`, protocol
//! version as big-endian `u16`, payload length as big-endian `u32`) followed by
//! a JSON payload. The reader enforces a size limit *before* allocating, a
//! deadline for the whole frame, strict JSON (unknown fields and trailing bytes
//! are errors), and the version. A guest may be root-compromised, so the host
//! treats every decode error as fatal for that connection only.
//!
//! The framing ([`codec`]) is generic so that the host's own CLI ↔ daemon
//! channel reuses it; the guest messages are in [`msg`].

pub mod codec;
pub mod msg;

pub use codec::{read_frame, write_frame, FrameError, HEADER_LEN, MAGIC, VERSION};
pub use msg::{
    ExecOutput, ExecRequest, GuestMsg, HostMsg, Role, TorConfig, TorNetwork, TorProgress,
    AGENT_PORT, MAX_GUEST_FRAME, RELAY_PORT,
};

/// The App VM's boot clock randomization (Whonix's model): at each boot,
/// before any service starts, its agent moves the clock by a random amount
/// of at least `CLOCK_OFFSET_MIN_MS` and below `CLOCK_OFFSET_MAX_MS`,
/// earlier or later, with nanoseconds. The Tor VM keeps the exact clock tor
/// needs.
pub const CLOCK_OFFSET_MIN_MS: u64 = 500;
pub const CLOCK_OFFSET_MAX_MS: u64 = 180_000;
