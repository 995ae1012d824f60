//! The three nftables rulesets (host, Tor VM, App VM), generated as nft JSON
//! and applied atomically.
//!
//! Thin for now: the foundation only fixes the names. The rulesets themselves
//! arrive with the isolation issue; until then the only barriers are the ones
//! the foundation builds (no host interface for the internal link, the App VM
//! with no other NIC, vsock groups, unprivileged sandboxed QEMU).

/// The host table every rule of ours lives in (and the only one we read back).
pub const HOST_TABLE: &str = "tails_server";
/// Its family.
pub const HOST_FAMILY: &str = "inet";
