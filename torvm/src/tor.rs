//! tor in the Tor VM: the torrc rendered from the host's order, the tor
//! process, and its control socket, which only this agent uses.
//!
//! The control socket lives in /run/tor (debian-tor, 0700) with cookie
//! authentication; tor has no SOCKS port (the App VM reaches it only through
//! the transparent TransPort and DNSPort on the internal link).

use std::future::Future;
use std::pin::Pin;
use tails_guest::log;
use tails_proto::msg::{GuestMsg, HostMsg, TorConfig, TorNetwork, TorProgress};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;

pub const TRANS_PORT: u16 = 9040;
pub const DNS_PORT: u16 = 5353;
use crate::control::{CONTROL_SOCKET, COOKIE};
const TORRC: &str = "/etc/tor/torrc";
/// The isolation flags of the App VM's ports.
pub const STREAM_ISOLATION: &str = "IsolateDestAddr IsolateDestPort";
const TOR: &str = "/usr/sbin/tor";
/// A torrc option line from the host: one line, bounded.
const MAX_OPTION: usize = 1024;

/// tor's DataDirectory (its state: the entry guards).
const DATA_DIR: &str = "/var/lib/tor";

/// The torrc for `cfg`; refuses option lines that could smuggle a second line.
pub fn torrc(cfg: &TorConfig, listen: std::net::Ipv4Addr) -> Result<String, String> {
    let mut lines = vec![
        format!("DataDirectory {DATA_DIR}"),
        "User debian-tor".into(),
        "Log notice stdout".into(),
        "SocksPort 0".into(),
        // Stream isolation: each destination address and port of the App
        // VM gets circuits of its own, so that one service's connections
        // cannot be linked to another's by an exit.
        format!("TransPort {listen}:{TRANS_PORT} {STREAM_ISOLATION}"),
        format!("DNSPort {listen}:{DNS_PORT} {STREAM_ISOLATION}"),
        "VirtualAddrNetworkIPv4 10.192.0.0/10".into(),
        "AutomapHostsOnResolve 1".into(),
        format!("ControlSocket {CONTROL_SOCKET}"),
        "CookieAuthentication 1".into(),
        format!("CookieAuthFile {COOKIE}"),
        "ClientUseIPv6 0".into(),
        // In memory, writes cost RAM only; on the state disk, tor saves its
        // guards within minutes of a change (not hourly), so that a power
        // cut loses little of them.
        format!("AvoidDiskWrites {}", if cfg.keep_state { 0 } else { 1 }),
    ];
    let checked = |l: &String| -> Result<String, String> {
        if l.len() > MAX_OPTION || l.chars().any(|c| c.is_control()) || l.trim().is_empty() {
            return Err(format!(
                "refusing torrc line {:?}",
                l.chars().take(80).collect::<String>()
            ));
        }
        Ok(l.trim().to_owned())
    };
    if let TorNetwork::Local { options } = &cfg.network {
        for o in options {
            lines.push(checked(o)?);
        }
    }
    if !cfg.bridges.is_empty() {
        lines.push("UseBridges 1".into());
        for b in &cfg.bridges {
            lines.push(format!("Bridge {}", checked(b)?));
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// Parse `250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=45 TAG=… SUMMARY="…"`.
pub fn parse_bootstrap(line: &str) -> Option<(u8, String)> {
    let rest = line.split_once("BOOTSTRAP ")?.1;
    let progress = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("PROGRESS="))?
        .parse::<u8>()
        .ok()?
        .min(100);
    let summary = rest
        .split_once("SUMMARY=\"")
        .and_then(|(_, s)| s.split_once('"'))
        .map(|(s, _)| s.to_owned())
        .unwrap_or_default();
    Some((progress, summary))
}

/// Ask tor for its bootstrap phase over the control socket.
async fn query_bootstrap() -> Result<(u8, String), String> {
    let mut c = crate::control::Control::connect().await?;
    let r = c.command("GETINFO status/bootstrap-phase").await?;
    let line = r.lines.first().map(String::as_str).unwrap_or("");
    parse_bootstrap(line).ok_or_else(|| format!("unexpected reply: {line}"))
}

/// The Tor VM's own requests: start tor, report its bootstrap.
pub struct Tor {
    state: Mutex<Option<tokio::process::Child>>,
    listen: std::net::Ipv4Addr,
}

impl Tor {
    pub fn new(listen: std::net::Ipv4Addr) -> Self {
        Tor {
            state: Mutex::new(None),
            listen,
        }
    }

    async fn start(&self, cfg: TorConfig) -> GuestMsg {
        let mut state = self.state.lock().await;
        if state.is_some() {
            return GuestMsg::Error {
                message: "tor is already started in this boot".into(),
            };
        }
        let text = match torrc(&cfg, self.listen) {
            Ok(t) => t,
            Err(message) => return GuestMsg::Error { message },
        };
        if let Err(e) =
            std::fs::create_dir_all("/etc/tor").and_then(|_| std::fs::write(TORRC, text))
        {
            return GuestMsg::Error {
                message: format!("{TORRC}: {e}"),
            };
        }
        if cfg.keep_state {
            if let Err(message) = state_disk().await {
                return GuestMsg::Error { message };
            }
        }
        if let Err(e) = prepare_run_dir() {
            return GuestMsg::Error { message: e };
        }
        let child = tokio::process::Command::new(TOR)
            .args(["-f", TORRC])
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut c) => {
                // tor's log goes to the console (the host's console log).
                for out in [
                    c.stdout
                        .take()
                        .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                    c.stderr.take().map(|o| Box::new(o) as _),
                ]
                .into_iter()
                .flatten()
                {
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(out).lines();
                        while let Ok(Some(l)) = lines.next_line().await {
                            log(format!("tor: {l}"));
                        }
                    });
                }
                *state = Some(c);
                log("tor started");
                GuestMsg::TorStarted
            }
            Err(e) => GuestMsg::Error {
                message: format!("cannot start tor: {e}"),
            },
        }
    }

    async fn status(&self) -> GuestMsg {
        let mut state = self.state.lock().await;
        let running = match state.as_mut() {
            None => {
                return GuestMsg::Tor(TorProgress {
                    progress: 0,
                    summary: "tor is not started".into(),
                    running: false,
                })
            }
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                Ok(Some(s)) => {
                    return GuestMsg::Tor(TorProgress {
                        progress: 0,
                        summary: format!("tor exited ({s}); see the console log"),
                        running: false,
                    })
                }
                Err(e) => {
                    return GuestMsg::Error {
                        message: e.to_string(),
                    }
                }
            },
        };
        drop(state);
        match query_bootstrap().await {
            Ok((progress, summary)) => GuestMsg::Tor(TorProgress {
                progress,
                summary,
                running,
            }),
            // Early on the control socket may not exist yet.
            Err(e) => GuestMsg::Tor(TorProgress {
                progress: 0,
                summary: format!("starting ({e})"),
                running,
            }),
        }
    }
}

/// tor's DataDirectory on the state disk (its entry guards kept across
/// boots): mounted on /var/lib/tor, debian-tor's, 0700, as tor demands.
async fn state_disk() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::Path::new(DATA_DIR);
    tails_guest::disk::mount(tails_proto::msg::TORVM_STATE_SERIAL, dir).await?;
    let (uid, gid) =
        tails_guest::pid1::user_ids("debian-tor").ok_or("no debian-tor user in the image")?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| format!("{DATA_DIR}: {e}"))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{DATA_DIR}: {e}"))
}

/// /run/tor for the control socket and cookie: debian-tor's, 0700.
fn prepare_run_dir() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let (uid, gid) =
        tails_guest::pid1::user_ids("debian-tor").ok_or("no debian-tor user in the image")?;
    std::fs::create_dir_all("/run/tor").map_err(|e| format!("/run/tor: {e}"))?;
    std::os::unix::fs::chown("/run/tor", Some(uid), Some(gid))
        .map_err(|e| format!("/run/tor: {e}"))?;
    std::fs::set_permissions("/run/tor", std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("/run/tor: {e}"))
}

impl tails_guest::server::Extension for Tor {
    fn handle(&self, msg: HostMsg) -> Pin<Box<dyn Future<Output = GuestMsg> + Send + '_>> {
        Box::pin(async move {
            match msg {
                HostMsg::StartTor(cfg) => self.start(cfg).await,
                HostMsg::TorStatus => self.status().await,
                HostMsg::PublishOnion(req) => crate::onion::publish(req).await,
                HostMsg::RemoveOnion { service_id } => crate::onion::remove(service_id).await,
                _ => GuestMsg::Error {
                    message: "not a Tor VM request".into(),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lines_parse() {
        let l = r#"250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=45 TAG=requesting_descriptors SUMMARY="Asking for relay descriptors""#;
        assert_eq!(
            parse_bootstrap(l),
            Some((45, "Asking for relay descriptors".into()))
        );
        assert_eq!(
            parse_bootstrap("250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=250 TAG=x")
                .map(|p| p.0),
            Some(100)
        );
        assert_eq!(parse_bootstrap("551 nope"), None);
    }

    #[test]
    fn torrc_refuses_smuggled_lines() {
        let cfg = TorConfig {
            network: TorNetwork::Local {
                options: vec!["TestingTorNetwork 1\nSocksPort 9050".into()],
            },
            bridges: vec![],
            keep_state: false,
        };
        assert!(torrc(&cfg, "10.1.2.1".parse().unwrap()).is_err());
        let cfg = TorConfig {
            network: TorNetwork::Local {
                options: vec!["TestingTorNetwork 1".into()],
            },
            bridges: vec!["obfs4 1.2.3.4:443 FP".into()],
            keep_state: true,
        };
        let t = torrc(&cfg, "10.1.2.1".parse().unwrap()).unwrap();
        assert!(t.contains("TransPort 10.1.2.1:9040 IsolateDestAddr IsolateDestPort\n"));
        assert!(t.contains("DNSPort 10.1.2.1:5353 IsolateDestAddr IsolateDestPort\n"));
        assert!(t.contains("SocksPort 0\n"));
        assert!(
            t.contains("AvoidDiskWrites 0\n"),
            "the state disk is written"
        );
        assert!(t.contains("TestingTorNetwork 1\n"));
        assert!(t.contains("UseBridges 1\nBridge obfs4 1.2.3.4:443 FP\n"));
    }
}
