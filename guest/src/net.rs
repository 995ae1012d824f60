//! Interface configuration. Interfaces are found by their MAC address (fixed
//! by the host on the QEMU command line), never by probe order.

use std::fs;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("no interface with MAC {0}")]
    NoSuchMac(String),
    #[error("`ip {args}` failed: {detail}")]
    Ip { args: String, detail: String },
}

/// Name of the interface whose MAC is `mac` (lower-case, colon-separated).
pub fn iface_by_mac(mac: &str) -> Result<String, NetError> {
    let want = mac.to_ascii_lowercase();
    let entries = fs::read_dir("/sys/class/net").map_err(|_| NetError::NoSuchMac(want.clone()))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(addr) = fs::read_to_string(e.path().join("address")) {
            if addr.trim() == want {
                return Ok(name);
            }
        }
    }
    Err(NetError::NoSuchMac(want))
}

/// Run `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError::Ip {
            args: args.join(" "),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Run several `ip` commands in one process (`ip -batch -`, iproute2 only):
/// under TCG each exec costs a tenth of a second.
pub fn ip_batch(cmds: &[Vec<&str>]) -> Result<(), NetError> {
    use std::io::Write;
    let script: String = cmds.iter().map(|c| c.join(" ") + "\n").collect();
    let err = |detail: String| NetError::Ip {
        args: "-batch -".into(),
        detail,
    };
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

/// Bring `lo` up.
pub fn loopback_up() -> Result<(), NetError> {
    ip(&["link", "set", "lo", "up"])
}

/// Give the interface with `mac` the address `cidr` and bring it up.
pub fn configure(mac: &str, cidr: &str) -> Result<String, NetError> {
    let dev = iface_by_mac(mac)?;
    ip(&["addr", "add", cidr, "dev", &dev])?;
    ip(&["link", "set", &dev, "up"])?;
    Ok(dev)
}
