//! Tor VM agent: PID 1 of the Tor VM's initramfs.
//!
//! Brings up the internal link (10.1.2.1 on the NIC with MAC
//! 00:55:44:33:22:11), then serves the host on vsock. Tor itself, the uplink
//! and the firewall arrive with later issues; the agent is the only process
//! that will talk to tor's control socket.

use tails_guest::{log, net, pid1};
use tails_proto::Role;

/// The Tor VM's NIC on the internal link: the App VM's gateway.
const INTERNAL: net::Plan = net::Plan {
    mac: "00:55:44:33:22:11",
    addr: std::net::Ipv4Addr::new(10, 1, 2, 1),
    prefix: 24,
    gateway: None,
};

fn early_init() -> Result<(), String> {
    pid1::mount_pseudo_fs().map_err(|e| e.to_string())?;
    let n = pid1::load_modules().map_err(|e| e.to_string())?;
    log(format!("loaded {n} modules"));
    // No IPv6 anywhere in the Tor VM.
    pid1::sysctl("net.ipv6.conf.all.disable_ipv6", "1").map_err(|e| e.to_string())?;
    pid1::sysctl("net.ipv6.conf.default.disable_ipv6", "1").map_err(|e| e.to_string())?;
    pid1::sysctl("net.ipv4.ip_forward", "0").map_err(|e| e.to_string())?;
    Ok(())
}

fn main() {
    tails_guest::run_agent(Role::Torvm, early_init, INTERNAL)
}
