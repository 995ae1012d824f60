//! The messages exchanged between the host agent and a guest agent.
//!
//! The host always opens the connection (vsock port [`AGENT_PORT`]); the guest
//! greets with [`GuestMsg::Hello`], then answers each [`HostMsg`] with exactly
//! one [`GuestMsg`]. Nothing a guest says is trusted for anything the host can
//! derive itself: the host already knows which VM it dialled, so a `Hello`
//! naming another role is a protocol violation.

use serde::{Deserialize, Serialize};

/// vsock port on which each guest agent listens for the host.
pub const AGENT_PORT: u32 = 1024;
/// vsock port of the App VM agent's relay (allow-localhost / allow-lan):
/// the host dials it once per TCP connection it accepted for a service. Each
/// connection starts with the service's target port as 2 big-endian bytes,
/// then carries raw bytes both ways. Nothing of who connected is sent.
pub const RELAY_PORT: u32 = 1025;
/// Serial of the App VM's persistent data disk (the virtio-blk device the
/// host hands QEMU when the persistent store is unlocked).
pub const APPVM_DATA_SERIAL: &str = "tails-appvm-data";
/// Serial of the Tor VM's state disk (tor's DataDirectory: its guards).
pub const TORVM_STATE_SERIAL: &str = "tails-torvm-state";
/// Serial of the Tor VM's read-only root: the squashfs the agent mounts on
/// /usr (tor, nft, e2fsprogs, busybox and their libraries).
pub const TORVM_ROOT_SERIAL: &str = "tails-torvm-root";
/// Largest frame the host accepts from a guest (exec output is the big one).
pub const MAX_GUEST_FRAME: usize = 4 << 20;
/// Largest frame a guest accepts from the host.
pub const MAX_HOST_FRAME: usize = 256 << 10;
/// Largest stdout or stderr an exec returns; more is cut and flagged.
pub const MAX_EXEC_OUTPUT: usize = 1 << 20;
/// Largest argv (all arguments together) an exec request may carry.
pub const MAX_EXEC_ARGV: usize = 64 << 10;

/// Which guest an agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Torvm,
    Appvm,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Torvm, Role::Appvm];

    pub fn name(self) -> &'static str {
        match self {
            Role::Torvm => "torvm",
            Role::Appvm => "appvm",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "torvm" => Ok(Role::Torvm),
            "appvm" => Ok(Role::Appvm),
            _ => Err(format!("unknown VM `{s}`: use `torvm` or `appvm`")),
        }
    }
}

/// Run a command in the guest (administration and tests, like `qvm-run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// The guest kills the command after this many milliseconds.
    pub timeout_ms: u64,
    #[serde(with = "b64")]
    pub stdin: Vec<u8>,
}

/// What a command run in the guest produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOutput {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(with = "b64")]
    pub stderr: Vec<u8>,
    /// Output was longer than [`MAX_EXEC_OUTPUT`] and was cut.
    pub truncated: bool,
    pub timed_out: bool,
}

/// Which Tor network the Tor VM's tor joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TorNetwork {
    /// The public Tor network, tor's defaults.
    Public,
    /// A private network (the embedded testnet): its torrc lines
    /// (`TestingTorNetwork 1`, `DirAuthority …`), one option per entry.
    Local { options: Vec<String> },
}

/// How the Tor VM's tor is to run. The Tor VM agent renders the torrc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorConfig {
    pub network: TorNetwork,
    /// `Bridge` lines (without the keyword); empty: no bridges.
    pub bridges: Vec<String>,
    /// tor's DataDirectory is the state disk ([`TORVM_STATE_SERIAL`]), so
    /// that its entry guards outlive a reboot; false: in memory, new guards
    /// at every boot.
    #[serde(default)]
    pub keep_state: bool,
}

/// Tor's bootstrap state as its control port reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorProgress {
    /// 0–100.
    pub progress: u8,
    /// Tor's SUMMARY of the phase, or why tor is not running.
    pub summary: String,
    pub running: bool,
}

/// Tor VM: publish an onion service with a key the host holds.
///
/// `Debug` leaves the key out: it is a secret and must never reach a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnionPublish {
    /// The service's secret key as tor's `ADD_ONION` takes it
    /// (`ED25519-V3:<base64 of the 64-byte expanded key>`).
    pub key: String,
    /// The service id the host computed from the key (56 base32 characters,
    /// no `.onion`): an existing service with it is replaced.
    pub service_id: String,
    /// The port the onion service offers.
    pub virtual_port: u16,
    /// Where tor forwards it: the App VM's service (10.1.2.3:<target>).
    pub target_port: u16,
    /// Authorized clients' x25519 public keys, base32 (empty: no client
    /// authorization).
    pub client_auth: Vec<String>,
    /// How long to wait for the first descriptor upload.
    pub timeout_ms: u64,
    /// Close the service's open rendezvous circuits when it is replaced:
    /// tor keeps them on `DEL_ONION` (for running connections to finish), so
    /// a revoked client would keep its access over them until they expire.
    #[serde(default)]
    pub close_circuits: bool,
}

impl std::fmt::Debug for OnionPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionPublish")
            .field("key", &"<secret>")
            .field("service_id", &self.service_id)
            .field("virtual_port", &self.virtual_port)
            .field("target_port", &self.target_port)
            .field("client_auth", &self.client_auth.len())
            .field("close_circuits", &self.close_circuits)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// One file the App VM agent writes before starting a service. `Debug`
/// leaves the contents out: a config file may hold a secret (a password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// Absolute path in the App VM.
    pub path: String,
    /// Permission bits (e.g. 0o640).
    pub mode: u32,
    #[serde(with = "b64")]
    pub contents: Vec<u8>,
    /// Its owner (and group): a user of the App VM; root when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl std::fmt::Debug for ServiceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .field("owner", &self.owner)
            .finish()
    }
}

/// A system user the App VM agent makes before a service starts, when the
/// App VM has no user of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUser {
    pub name: String,
    /// Its home directory (not made).
    pub home: String,
}

/// A command the App VM agent runs, after the files and before the service.
/// `Debug` leaves its input out: it may hold a secret (a password).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePrepare {
    /// The command (absolute path first).
    pub argv: Vec<String>,
    /// The user it runs as.
    pub user: String,
    /// Its standard input (empty: none).
    #[serde(default, with = "b64")]
    pub stdin: Vec<u8>,
    /// Skipped when this absolute path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
}

impl std::fmt::Debug for ServicePrepare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServicePrepare")
            .field("argv", &self.argv)
            .field("user", &self.user)
            .field("stdin", &format_args!("<{} bytes>", self.stdin.len()))
            .field("creates", &self.creates)
            .finish()
    }
}

/// A self-signed TLS certificate the App VM agent makes when `cert` does not
/// exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCert {
    /// Where its private key goes (0600).
    pub key: String,
    /// Where the certificate goes (0644).
    pub cert: String,
    /// Who owns both.
    pub owner: String,
    /// DNS names; the first is also its common name.
    pub names: Vec<String>,
}

/// App VM: start one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStart {
    /// The catalog name (`nginx`).
    pub name: String,
    /// The command (absolute path first).
    pub argv: Vec<String>,
    /// The user it runs as.
    pub user: String,
    /// Configuration files written first.
    pub files: Vec<ServiceFile>,
    /// The TCP port it listens on: opened in the App VM's firewall for the
    /// Tor VM only, and awaited before the reply.
    pub port: u16,
    /// Directories made (or fixed) first: the service's data, owned by a
    /// user of the App VM.
    #[serde(default)]
    pub dirs: Vec<ServiceDir>,
    /// System users made first (before the directories).
    #[serde(default)]
    pub users: Vec<ServiceUser>,
    /// Commands run after the files, before the service.
    #[serde(default)]
    pub prepare: Vec<ServicePrepare>,
    /// Certificates made (when missing) after the files, before the commands.
    #[serde(default)]
    pub certs: Vec<ServiceCert>,
    /// Its persistent paths, kept on the data disk ([`APPVM_DATA_SERIAL`]):
    /// each is mounted from there before anything else is made. Empty: the
    /// service is amnesic, and whatever the disk held of it is removed.
    #[serde(default)]
    pub persistent: Vec<String>,
    /// Its port is reached through the agent's relay ([`RELAY_PORT`]):
    /// allow-localhost or allow-lan is on.
    #[serde(default)]
    pub relay: bool,
}

/// A directory the App VM agent makes before a service starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDir {
    /// Absolute path in the App VM.
    pub path: String,
    /// Its owner (and group): a user of the App VM.
    pub owner: String,
    /// Permission bits (at most 0o777).
    pub mode: u32,
}

/// Host → guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum HostMsg {
    Ping,
    Exec(ExecRequest),
    /// Stop every process, sync, power the VM off.
    PowerOff,
    /// Tor VM only: write the torrc and start tor (once per boot).
    StartTor(TorConfig),
    /// Tor VM only: report tor's bootstrap state.
    TorStatus,
    /// Tor VM only: publish an onion service; answered once its descriptor
    /// is uploaded (or the timeout passed).
    PublishOnion(OnionPublish),
    /// Tor VM only: take an onion service down (56-character service id).
    RemoveOnion {
        service_id: String,
    },
    /// App VM only: write the files, open the port, start the service.
    StartService(ServiceStart),
    /// App VM only: stop a service and close its port.
    StopService {
        name: String,
    },
    /// App VM only: is this service running?
    ServiceState {
        name: String,
    },
}

/// Guest → host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum GuestMsg {
    #[serde(rename_all = "snake_case")]
    Hello {
        role: Role,
        agent_version: String,
    },
    Pong {
        uptime_ms: u64,
    },
    Exec(ExecOutput),
    PoweringOff,
    TorStarted,
    Tor(TorProgress),
    /// The onion service is up: tor's service id (the host checks it against
    /// the address it computed) and how many descriptor uploads tor reported.
    OnionPublished {
        service_id: String,
        uploads: u32,
    },
    OnionRemoved,
    /// A service's state after StartService, StopService or ServiceState.
    Service {
        name: String,
        running: bool,
    },
    Error {
        message: String,
    },
}

mod b64 {
    use data_encoding::BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        BASE64
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let p = OnionPublish {
            key: "ED25519-V3:SECRETKEYBLOB".into(),
            service_id: "a".repeat(56),
            virtual_port: 80,
            target_port: 80,
            client_auth: vec!["b".repeat(52)],
            timeout_ms: 1,
            close_circuits: false,
        };
        let f = ServiceFile {
            path: "/etc/x.conf".into(),
            mode: 0o640,
            contents: b"password hunter22".to_vec(),
            owner: None,
        };
        let shown = format!("{:?} {:?}", HostMsg::PublishOnion(p), f);
        assert!(!shown.contains("SECRETKEYBLOB"), "{shown}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(
            shown.contains("/etc/x.conf") && shown.contains("0640"),
            "{shown}"
        );
    }
}
