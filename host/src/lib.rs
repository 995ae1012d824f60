//! The host agent of Tails Server: the only trusted part.
//!
//! A library with the daemon ([`daemon`]: the API's transport and one
//! handler per request), the supervisor that keeps the stack as asked
//! ([`supervisor`]), the stack of two VMs ([`stack`], [`vmm`], [`vhost`],
//! [`agent`]), the host firewall ([`firewall`]), the state store
//! ([`store`], [`services`]) and the allow-localhost / allow-lan relay
//! ([`relay`]); and the API ([`api`], a leaf) with its client
//! side ([`client`]), and the CLI's definition ([`cli`], clap only). The
//! binaries — the CLI `tails-server`, later the GUI —
//! are thin clients of that API. See DESIGN.md for what each layer may do.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod accel;
pub mod agent;
pub mod api;
pub mod boot;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod error;
pub mod firewall;
pub mod firewall_watch;
pub mod identity;
pub mod paths;
pub mod proc;
pub mod relay;
pub mod services;
pub mod stack;
pub mod store;
pub mod supervisor;
pub mod systemd;
pub mod takeover;
pub mod vhost;
pub mod vmm;

pub use paths::Paths;

/// A guest's bytes as they may be shown on a terminal: control characters
/// (escape sequences) made visible, `\r` dropped (see
/// [`tails_jailer::logpump::escape`]).
pub fn terminal_safe(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    tails_jailer::logpump::escape(bytes, &mut out);
    out
}

/// Log a line to the daemon's log (its stderr, redirected by whoever
/// started it), with the time in UTC. Never pass a secret or a guest's raw
/// bytes.
pub fn log(msg: impl std::fmt::Display) {
    eprintln!("{} tails-server daemon: {msg}", utc_now());
}

/// Now, as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = tails_testnet::utc(d.as_secs());
    let whole = secs.strip_suffix('Z').unwrap_or(&secs);
    format!("{whole}.{:03}Z", d.subsec_millis())
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_time_is_a_utc_date() {
        let t = super::utc_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
        let out = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .expect("date");
        let today = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // (Unless the test runs across midnight.)
        assert!(t.starts_with(&today) || today.is_empty(), "{t} vs {today}");
    }
}
