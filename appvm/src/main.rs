//! App VM agent: PID 1 of the App VM.
//!
//! Starts in a small initramfs, loads the modules, mounts the read-only Debian
//! root (squashfs on the disk with serial `tails-appvm-root`) under a tmpfs
//! overlay, so nothing the services write survives a restart, switches into
//! it, configures the fixed identity of the internal link (10.1.2.3/24 on
//! 00:11:22:33:44:55, gateway 10.1.2.1 at 00:55:44:33:22:11, pinned in the
//! neighbour table), moves its clock by a random offset ([`clock`]), loads
//! its firewall (see [`tails_nft::appvm`]) before
//! the link comes up, and serves the host on vsock.

mod certs;
mod clock;
mod persist;
mod relay;
mod services;

use nix::mount::MsFlags;
use tails_guest::{log, net, pid1};
use tails_proto::Role;

/// The gateway: the Tor VM.
const GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 1, 2, 1);
/// The only NIC: fixed identity, gateway pinned (no ARP, nothing to spoof).
const NET: net::Plan = net::Plan {
    mac: "00:11:22:33:44:55",
    addr: std::net::Ipv4Addr::new(10, 1, 2, 3),
    prefix: 24,
    gateway: Some((GATEWAY, [0x00, 0x55, 0x44, 0x33, 0x22, 0x11])),
    required: true,
};
/// nft in the App VM's Debian root.
const NFT: &str = "/usr/sbin/nft";
/// The read-only root: the first virtio disk.
const ROOT_DEV: &str = "/dev/vda";
const HOSTNAME: &str = "localhost";

fn early_init() -> Result<(), String> {
    pid1::mount_pseudo_fs().map_err(|e| e.to_string())?;
    let (n, later) = pid1::load_modules().map_err(|e| e.to_string())?;
    log(format!(
        "loaded {n} modules ({later} more when a persistent disk is mounted)"
    ));
    mount_root().map_err(|e| e.to_string())?;
    pid1::switch_root("/newroot").map_err(|e| e.to_string())?;
    log("mounted the root (squashfs under a tmpfs overlay) and switched to it");
    for (k, v) in [
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
        ("net.ipv4.ip_forward", "0"),
    ]
    .into_iter()
    .chain(pid1::HARDENING_SYSCTLS.iter().copied())
    {
        pid1::sysctl(k, v).map_err(|e| e.to_string())?;
    }
    nix::unistd::sethostname(HOSTNAME).map_err(|e| format!("sethostname: {e}"))?;
    clock::randomize()?;
    log("clock moved by a random offset (boot clock randomization)");
    firewall()
}

/// Load the App VM's nftables table before the link comes up (fail closed:
/// an error here powers the VM off). No service ports yet: nothing may
/// connect in.
///
/// Over netlink by the agent itself (a few milliseconds, where nft's first
/// run takes tenths of a second under TCG), by nft if that fails.
fn firewall() -> Result<(), String> {
    let start = std::time::Instant::now();
    let how = tails_nft::apply_netlink_or_nft(&ruleset(Vec::new())?, std::path::Path::new(NFT))
        .map_err(|e| e.to_string())?;
    log(format!(
        "firewall loaded {how} in {:.2} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The App VM's table with `service_ports` open to the Tor VM.
fn ruleset(service_ports: Vec<u16>) -> Result<tails_nft::Nftables<'static>, String> {
    let iface = net::iface_by_mac(NET.mac).map_err(|e| e.to_string())?.0;
    Ok(tails_nft::appvm::ruleset(&tails_nft::appvm::Params {
        iface: &iface,
        addr: NET.addr,
        prefix: NET.prefix,
        gateway: GATEWAY,
        service_ports,
    }))
}

/// Reload the App VM's table with `service_ports` open to the Tor VM (nft:
/// a set of ports is nft's to compile).
fn apply_firewall(service_ports: Vec<u16>) -> Result<(), String> {
    tails_nft::apply(&ruleset(service_ports)?, std::path::Path::new(NFT)).map_err(|e| e.to_string())
}

/// squashfs (read-only) + tmpfs (writable, amnesic) = overlay at /newroot.
fn mount_root() -> Result<(), pid1::InitError> {
    // The block device may appear a moment after the driver loads.
    for _ in 0..100 {
        if pid1::exists(ROOT_DEV) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    pid1::mount_fs(ROOT_DEV, "/lower", "squashfs", MsFlags::MS_RDONLY, None)?;
    pid1::mount_fs("tmpfs", "/rw", "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
    std::fs::create_dir_all("/rw/upper").map_err(|source| pid1::InitError::Io {
        path: "/rw/upper".into(),
        source,
    })?;
    std::fs::create_dir_all("/rw/work").map_err(|source| pid1::InitError::Io {
        path: "/rw/work".into(),
        source,
    })?;
    pid1::mount_fs(
        "overlay",
        "/newroot",
        "overlay",
        MsFlags::empty(),
        Some("lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work"),
    )
}

fn main() {
    tails_guest::run_agent(
        Role::Appvm,
        early_init,
        &[NET],
        std::sync::Arc::new(services::Services::new(
            services::Firewall {
                apply: Box::new(apply_firewall),
            },
            NET.addr,
        )),
    )
}
