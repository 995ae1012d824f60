//! The host's firewall layer: table `inet tails_server` (see
//! [`tails_nft::host`]), applied before any VM starts, read back for
//! `status`, removed by `down`.
//!
//! It fences the users the stack's processes run as: the Tor VM's QEMU may
//! open TCP only, to public addresses and to the upstreams of this run; the
//! App VM's QEMU and vhost-device-vsock may send nothing over inet at all.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use crate::api::FirewallStatus;
use tails_nft::host::{Net, Params, BLOCKED_V4, BLOCKED_V6};

/// nft, at the fixed path Debian installs it (never looked up in `$PATH`).
pub const NFT: &str = "/usr/sbin/nft";

/// The nft program the host uses.
pub fn nft() -> PathBuf {
    PathBuf::from(NFT)
}

/// Name of the table, as nft writes it.
pub fn table_name() -> String {
    format!("{} {}", tails_nft::host::FAMILY, tails_nft::host::TABLE)
}

/// Load the table (replacing any previous version atomically).
pub fn apply(p: &Params, nft: &Path) -> Result<(), tails_nft::NftError> {
    tails_nft::apply(&tails_nft::host::ruleset(p), nft)
}

/// Remove the table (no error if it is not there).
pub fn remove(nft: &Path) -> Result<(), tails_nft::NftError> {
    tails_nft::remove(tails_nft::NfFamily::INet, tails_nft::host::TABLE, nft)
}

/// Read the table back.
pub fn status(nft: &Path) -> FirewallStatus {
    let mut st = FirewallStatus {
        table: table_name(),
        present: false,
        rules: 0,
        dropped_packets: 0,
        error: None,
    };
    match tails_nft::list(tails_nft::host::FAMILY, tails_nft::host::TABLE, nft) {
        Ok(Some(info)) => {
            st.present = true;
            st.rules = info.rules;
            st.dropped_packets = info.dropped_packets;
        }
        Ok(None) => {}
        Err(e) => st.error = Some(e.to_string()),
    }
    st
}

/// Is `addr` in a range the table blocks by default (private, loopback, …)?
pub fn is_blocked(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => BLOCKED_V4.iter().any(|(n, len)| {
            Net {
                addr: a.into(),
                len: *len,
            }
            .network()
                == IpAddr::V4(*n)
        }),
        IpAddr::V6(a) => BLOCKED_V6.iter().any(|(n, len)| {
            Net {
                addr: a.into(),
                len: *len,
            }
            .network()
                == IpAddr::V6(*n)
        }),
    }
}

/// The address of a bridge line (`[transport] addr:port [fingerprint] …`),
/// if it has one we can read.
pub fn bridge_addr(line: &str) -> Option<IpAddr> {
    line.split_whitespace().take(2).find_map(|tok| {
        let host = match tok.strip_prefix('[') {
            Some(rest) => rest.split_once(']')?.0,
            None => tok.rsplit_once(':')?.0,
        };
        host.parse().ok()
    })
}

/// The upstreams of a run: the testnet's subnet (`local`) and every bridge
/// whose address is in a range blocked by default (a bridge on the LAN).
pub fn upstreams(testnet_subnet: Option<&str>, bridges: &[String]) -> Result<Vec<Net>, String> {
    let mut out = Vec::new();
    if let Some(s) = testnet_subnet {
        out.push(s.parse::<Net>()?);
    }
    for b in bridges {
        if let Some(addr) = bridge_addr(b) {
            if is_blocked(addr) {
                let len = if addr.is_ipv4() { 32 } else { 128 };
                out.push(Net { addr, len });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_addresses() {
        let a = |s: &str| bridge_addr(s).map(|a| a.to_string());
        assert_eq!(
            a("192.0.2.7:443 4352E58420E68F5E40BF7C74FADDCCD9D1349413").as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(
            a("obfs4 192.168.1.9:9001 4352E58420E68F5E40BF7C74FADDCCD9D1349413 cert=x").as_deref(),
            Some("192.168.1.9")
        );
        assert_eq!(a("[2001:db8::7]:443 ABCD").as_deref(), Some("2001:db8::7"));
        assert_eq!(a("bridge.example:443"), None);
        assert_eq!(a(""), None);
    }

    #[test]
    fn blocked_ranges() {
        for s in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "172.20.0.1",
            "169.254.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "224.0.0.251",
        ] {
            assert!(is_blocked(s.parse().unwrap()), "{s}");
        }
        for s in ["192.0.2.7", "8.8.8.8", "2001:db8::1", "172.32.0.1"] {
            assert!(!is_blocked(s.parse().unwrap()), "{s}");
        }
    }

    #[test]
    fn upstreams_are_the_testnet_and_lan_bridges_only() {
        let bridges = vec![
            "192.0.2.7:443 4352E58420E68F5E40BF7C74FADDCCD9D1349413".to_string(),
            "192.168.1.9:9001 4352E58420E68F5E40BF7C74FADDCCD9D1349413".to_string(),
        ];
        let u = upstreams(Some("10.100.0.0/24"), &bridges).unwrap();
        let shown: Vec<String> = u.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.100.0.0/24", "192.168.1.9/32"]);
        assert!(upstreams(None, &[]).unwrap().is_empty());
        assert!(upstreams(Some("10.100.0.1/24"), &[]).is_err());
    }
}
