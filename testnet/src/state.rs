//! The state file `<state_dir>/testnet.json`: what `up` started (pids with
//! start times, ports, fingerprints, the join options), so that `status` and
//! `down` work from another process.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TestnetError;
use crate::process::ProcId;
use crate::torrc::Node;

/// The state file's format version.
pub(crate) const VERSION: u32 = 1;

/// What is running, as `up` recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub netns: String,
    pub veth_host: String,
    pub veth_ns: String,
    pub subnet: String,
    pub host_addr: Ipv4Addr,
    pub outside_addr: Ipv4Addr,
    pub socks_port: u16,
    pub control_port: u16,
    pub web_port: u16,
    pub dns_port: u16,
    pub nodes: Vec<Node>,
    pub dnsmasq: Option<ProcId>,
    pub web: Option<ProcId>,
    pub join_options: Vec<String>,
    pub started_unix: u64,
    /// The network namespace `up` ran in, as the kernel names it
    /// (`net:[4026531840]`): where the veth's host end is. Absent from
    /// state files written before it was recorded.
    #[serde(default)]
    pub started_in: Option<String>,
}

/// The calling thread's network namespace, as the kernel names it (a thread
/// may have moved to another one with setns: not /proc/self).
pub(crate) fn own_netns() -> Option<String> {
    fs::read_link("/proc/thread-self/ns/net")
        .ok()
        .map(|p| p.display().to_string())
}

/// The state file in `state_dir`.
pub(crate) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("testnet.json")
}

impl State {
    /// Reads the state file; `None` if there is none.
    pub fn load(state_dir: &Path) -> Result<Option<State>, TestnetError> {
        let p = path(state_dir);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(TestnetError::State {
                    path: p,
                    detail: e.to_string(),
                })
            }
        };
        let st: State = serde_json::from_str(&text).map_err(|e| TestnetError::State {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        if st.version != VERSION {
            return Err(TestnetError::State {
                path: p,
                detail: format!("version {} (this build reads {VERSION})", st.version),
            });
        }
        Ok(Some(st))
    }

    /// Writes the state file atomically (temporary file, then rename), mode 0644.
    pub fn save(&self, state_dir: &Path) -> Result<(), TestnetError> {
        let p = path(state_dir);
        let tmp = state_dir.join(".testnet.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| TestnetError::State {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &p)
        };
        write().map_err(|e| TestnetError::io(format!("write {}", p.display()), e))
    }

    /// Every process recorded, with a name for messages.
    pub fn procs(&self) -> Vec<(String, ProcId)> {
        let mut v: Vec<(String, ProcId)> = self
            .nodes
            .iter()
            .filter_map(|n| Some((n.nick.clone(), n.proc?)))
            .collect();
        if let Some(p) = self.dnsmasq {
            v.push(("dnsmasq".into(), p));
        }
        if let Some(p) = self.web {
            v.push(("web server".into(), p));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrc::plan_nodes;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("tails-testnet-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), None);
        let mut nodes = plan_nodes();
        nodes[0].fingerprint = Some("D16EEBB76B6230F8986B806055CDE73983462A29".into());
        nodes[0].v3ident = Some("E23E232B015903C9F314C9368D88F822229CF5EE".into());
        nodes[0].proc = Some(ProcId {
            pid: 1234,
            start: 987654,
        });
        let st = State {
            version: VERSION,
            netns: "ts-outside".into(),
            veth_host: "ts-out0".into(),
            veth_ns: "ts-out1".into(),
            subnet: "10.100.0.0/24".into(),
            host_addr: Ipv4Addr::new(10, 100, 0, 1),
            outside_addr: Ipv4Addr::new(10, 100, 0, 2),
            socks_port: 9050,
            control_port: 9051,
            web_port: 8080,
            dns_port: 53,
            nodes,
            dnsmasq: Some(ProcId { pid: 42, start: 7 }),
            web: None,
            join_options: vec!["TestingTorNetwork 1".into()],
            started_unix: 1_700_000_000,
            started_in: own_netns(),
        };
        assert!(st
            .started_in
            .as_deref()
            .is_some_and(|n| n.starts_with("net:[")));
        st.save(&dir).unwrap();
        let back = State::load(&dir).unwrap().unwrap();
        assert_eq!(back, st);
        // A state file from before the field: read, with no namespace.
        let mut old: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(path(&dir)).unwrap()).unwrap();
        assert!(old.as_object_mut().unwrap().remove("started_in").is_some());
        fs::write(path(&dir), old.to_string()).unwrap();
        assert_eq!(State::load(&dir).unwrap().unwrap().started_in, None);
        assert_eq!(back.procs().len(), 2);
        assert_eq!(
            back.procs()[0],
            (
                "tsauth0".to_string(),
                ProcId {
                    pid: 1234,
                    start: 987654
                }
            )
        );

        fs::write(path(&dir), "{ not json").unwrap();
        assert!(matches!(State::load(&dir), Err(TestnetError::State { .. })));
        fs::write(
            path(&dir),
            serde_json::to_string(&State { version: 99, ..st }).unwrap(),
        )
        .unwrap();
        let e = State::load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("version 99") && e.contains("testnet down"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
