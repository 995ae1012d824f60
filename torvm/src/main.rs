//! Tor VM agent: PID 1 of the Tor VM's initramfs.
//!
//! Loads the modules, mounts its read-only /usr (the squashfs on the disk with
//! serial `tails-torvm-root`: tor, nft and their libraries are read from it on
//! demand instead of sitting whole in RAM), loads its firewall, brings up the
//! internal link (10.1.2.1 on the NIC with MAC 00:55:44:33:22:11) and, when the VM has one, the uplink (QEMU
//! user-mode networking, 10.0.2.15), then serves the host on vsock. On the
//! host's order it starts tor (see [`tor`]); it is the only process that
//! talks to tor's control socket.

mod control;
mod onion;
mod tor;

use std::net::Ipv4Addr;
use tails_guest::{log, net, pid1};
use tails_proto::Role;

/// The Tor VM's NIC on the internal link: the App VM's gateway.
const INTERNAL: net::Plan = net::Plan {
    mac: "00:55:44:33:22:11",
    addr: Ipv4Addr::new(10, 1, 2, 1),
    prefix: 24,
    gateway: None,
    required: true,
};

/// The App VM's fixed address: the only source the Tor VM redirects to tor.
const APPVM_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);

/// The uplink: QEMU user-mode networking (slirp), whose gateway 10.0.2.2 has
/// the fixed MAC slirp gives its virtual hosts (52:55 + the address).
const UPLINK: net::Plan = net::Plan {
    mac: "52:54:00:12:34:56",
    addr: Ipv4Addr::new(10, 0, 2, 15),
    prefix: 24,
    gateway: Some((
        Ipv4Addr::new(10, 0, 2, 2),
        [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02],
    )),
    required: false,
};

fn early_init() -> Result<(), String> {
    pid1::mount_pseudo_fs().map_err(|e| e.to_string())?;
    let (n, later) = pid1::load_modules().map_err(|e| e.to_string())?;
    log(format!(
        "loaded {n} modules ({later} more when a persistent disk is mounted)"
    ));
    mount_usr()?;
    log("mounted /usr (squashfs, read-only)");
    // No IPv6 anywhere in the Tor VM, and no forwarding.
    pid1::sysctl("net.ipv6.conf.all.disable_ipv6", "1").map_err(|e| e.to_string())?;
    pid1::sysctl("net.ipv6.conf.default.disable_ipv6", "1").map_err(|e| e.to_string())?;
    pid1::sysctl("net.ipv4.ip_forward", "0").map_err(|e| e.to_string())?;
    // Answer ARP only for the address of the NIC asked on (the App VM must
    // not learn the uplink's address), no redirects, no source routes, and
    // strict reverse-path filtering (no spoofed sources).
    for (k, v) in tails_guest::pid1::HARDENING_SYSCTLS {
        pid1::sysctl(k, v).map_err(|e| e.to_string())?;
    }
    firewall()
}

/// Mount the read-only /usr, found by its serial. Nothing in it is trusted more than the
/// initramfs: both come from the host's image directory, read-only.
fn mount_usr() -> Result<(), String> {
    let serial = tails_proto::msg::TORVM_ROOT_SERIAL;
    let dev = tails_guest::disk::find_within(serial, std::time::Duration::from_secs(5))
        .ok_or_else(|| format!("no disk with serial {serial}: the Tor VM has no /usr"))?;
    pid1::mount_fs(
        &dev.to_string_lossy(),
        "/usr",
        "squashfs",
        nix::mount::MsFlags::MS_RDONLY
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOSUID,
        None,
    )
    .map_err(|e| e.to_string())
}

/// Load the Tor VM's nftables table before any link is up (fail closed: an
/// error here powers the VM off): over netlink by the agent itself (a few
/// milliseconds, where nft's first run takes tenths of a second under TCG),
/// by nft if that fails.
fn firewall() -> Result<(), String> {
    let internal = net::iface_by_mac(INTERNAL.mac)
        .map_err(|e| e.to_string())?
        .0;
    let uplink = net::iface_by_mac(UPLINK.mac).ok().map(|(name, _)| name);
    let (tor_uid, _) = pid1::user_ids("debian-tor").ok_or("no debian-tor user in the image")?;
    let rules = tails_nft::torvm::ruleset(&tails_nft::torvm::Params {
        internal_if: &internal,
        uplink_if: uplink.as_deref(),
        torvm_addr: INTERNAL.addr,
        appvm_addr: APPVM_ADDR,
        trans_port: tor::TRANS_PORT,
        dns_port: tor::DNS_PORT,
        tor_uid,
    });
    let start = std::time::Instant::now();
    let how = tails_nft::apply_netlink_or_nft(&rules, std::path::Path::new("/usr/sbin/nft"))
        .map_err(|e| e.to_string())?;
    log(format!(
        "firewall loaded {} in {:.2} s (internal {internal}, uplink {})",
        how,
        start.elapsed().as_secs_f64(),
        uplink.as_deref().unwrap_or("none")
    ));
    Ok(())
}

fn main() {
    tails_guest::run_agent(
        Role::Torvm,
        early_init,
        &[INTERNAL, UPLINK],
        std::sync::Arc::new(tor::Tor::new(INTERNAL.addr)),
    )
}
