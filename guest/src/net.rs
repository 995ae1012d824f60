//! Interface configuration over rtnetlink, from inside the agent: no `ip`
//! process to start (under TCG each exec from the squashfs costs a tenth of a
//! second or more). Interfaces are found by their MAC address, fixed by the
//! host on the QEMU command line, never by probe order.

use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no interface with MAC {0}")]
    NoSuchMac(String),
    #[error("netlink: {0}")]
    Netlink(String),
}

/// How one VM's single internal interface is set up.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// MAC (lower-case, colon-separated) of the interface to configure.
    pub mac: &'static str,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// Default gateway and its MAC, pinned in the neighbour table (no ARP).
    pub gateway: Option<(Ipv4Addr, [u8; 6])>,
    /// When false, a VM started without this NIC skips it.
    pub required: bool,
}

/// Index of the interface whose sysfs directory is `dir`.
fn ifindex(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Name and index of the interface whose MAC is `mac`.
pub fn iface_by_mac(mac: &str) -> Result<(String, u32), NetError> {
    let want = mac.to_ascii_lowercase();
    let entries = fs::read_dir("/sys/class/net").map_err(|_| NetError::NoSuchMac(want.clone()))?;
    for e in entries.flatten() {
        let addr = fs::read_to_string(e.path().join("address")).unwrap_or_default();
        if addr.trim() == want {
            let index = ifindex(&e.path()).ok_or_else(|| NetError::NoSuchMac(want.clone()))?;
            return Ok((e.file_name().to_string_lossy().into_owned(), index));
        }
    }
    Err(NetError::NoSuchMac(want))
}

fn nl(e: rtnetlink::Error) -> NetError {
    NetError::Netlink(e.to_string())
}

async fn link_up(h: &Handle, index: u32) -> Result<(), NetError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl)
}

/// Bring `lo` up and apply `plan`; returns the configured interface's name,
/// or `None` when an optional interface is absent.
pub async fn configure(plan: &Plan) -> Result<Option<String>, NetError> {
    if !plan.required && iface_by_mac(plan.mac).is_err() {
        return Ok(None);
    }
    let (conn, h, _) = rtnetlink::new_connection().map_err(|e| NetError::Netlink(e.to_string()))?;
    let task = tokio::spawn(conn);
    let result = async {
        let lo = ifindex(Path::new("/sys/class/net/lo"))
            .ok_or_else(|| NetError::Netlink("no loopback interface".into()))?;
        link_up(&h, lo).await?;
        let (name, index) = iface_by_mac(plan.mac)?;
        h.address()
            .add(index, plan.addr.into(), plan.prefix)
            .execute()
            .await
            .map_err(nl)?;
        link_up(&h, index).await?;
        if let Some((gw, gw_mac)) = plan.gateway {
            h.neighbours()
                .add(index, gw.into())
                .link_layer_address(&gw_mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl)?;
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            h.route().add(route).execute().await.map_err(nl)?;
        }
        Ok(Some(name))
    }
    .await;
    task.abort();
    result
}
