//! The host agent of Tails Server: the only trusted part.
//!
//! A library with the daemon ([`daemon`]: the API's transport and one
//! handler per request), the supervisor that keeps the stack as asked
//! ([`supervisor`]), the stack of two VMs ([`stack`], [`vmm`], [`vhost`],
//! [`agent`]), the host firewall ([`firewall`]) and the state store
//! ([`store`], [`services`]); and the API ([`api`], a leaf) with its client
//! side ([`client`]). The binaries — the CLI `tails-server`, later the GUI —
//! are thin clients of that API. See DESIGN.md for what each layer may do.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod accel;
pub mod agent;
pub mod api;
pub mod client;
pub mod daemon;
pub mod error;
pub mod firewall;
pub mod identity;
pub mod paths;
pub mod proc;
pub mod services;
pub mod stack;
pub mod store;
pub mod supervisor;
pub mod systemd;
pub mod takeover;
pub mod vhost;
pub mod vmm;

pub use paths::Paths;

/// Log a line to the daemon's log (its stderr, redirected by whoever
/// started it). Never pass a secret or a guest's raw bytes.
pub fn log(msg: impl std::fmt::Display) {
    eprintln!("tails-server daemon: {msg}");
}

/// The inputs of the image build for this installation.
pub fn image_inputs(paths: &Paths) -> tails_images::BuildInputs {
    tails_images::BuildInputs {
        torvm_agent: paths.agent("torvm"),
        appvm_agent: paths.agent("appvm"),
        services_dir: paths.services(),
        cache_dir: paths.images.clone(),
    }
}
