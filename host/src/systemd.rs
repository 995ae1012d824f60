//! The systemd unit that brings the stack up at boot: installed by
//! `setup.sh` (from `host/tails-server.service`), not enabled by default;
//! `tails-server autostart on|off` enables or disables it here.

use std::process::Command;

/// The unit's name.
pub const UNIT: &str = "tails-server.service";

/// Where `setup.sh` installs the unit.
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
];

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("systemctl is not installed: this needs systemd")]
    NoSystemctl,
    #[error("{UNIT} is not installed: run ./setup.sh")]
    NotInstalled,
    #[error("systemctl {verb} {UNIT} failed: {detail}")]
    Failed { verb: &'static str, detail: String },
}

/// Enable (`on`) or disable the unit.
pub fn set_enabled(on: bool) -> Result<(), SystemdError> {
    let systemctl = crate::paths::find_program("systemctl").ok_or(SystemdError::NoSystemctl)?;
    if !UNIT_DIRS
        .iter()
        .any(|d| std::path::Path::new(d).join(UNIT).exists())
    {
        return Err(SystemdError::NotInstalled);
    }
    let verb = if on { "enable" } else { "disable" };
    let out = Command::new(systemctl)
        .args([verb, "--quiet", UNIT])
        .output()
        .map_err(|e| SystemdError::Failed {
            verb,
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SystemdError::Failed {
            verb,
            detail: crate::error::one_line(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(())
}

/// Is the unit enabled (`None` when systemctl cannot tell)?
pub fn is_enabled() -> Option<bool> {
    let systemctl = crate::paths::find_program("systemctl")?;
    let out = Command::new(systemctl)
        .args(["is-enabled", "--quiet", UNIT])
        .output()
        .ok()?;
    Some(out.status.success())
}
