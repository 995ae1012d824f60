//! The daemon's API: every request a client (the CLI, the GUI) may make, and
//! every reply and error it may get, as plain data.
//!
//! This module is a leaf: it imports nothing of the daemon and no CLI
//! framework, so a client links it without the stack. The messages travel in
//! `tails-proto` frames (magic, version, length, JSON) on the daemon's
//! root-only Unix socket; one connection carries one request, then zero or
//! more [`Reply::Progress`]/[`Reply::Tor`] reports, then exactly one final
//! reply. A [`Request::Watch`] connection instead stays open: the daemon
//! pushes a [`Snapshot`] at once and again whenever it changes, with the
//! steps and tor's bootstrap of what others asked, until it stops.
//!
//! Secrets that a person must pass on (a client's `auth-private` line, an
//! exported onion key) appear only in the replies that exist to hand them
//! out ([`Credentials`], [`Reply::KeyFile`]); no `Debug` of a reply shows them.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use tails_proto::msg::{ExecOutput, TorProgress};
pub use tails_proto::Role;

/// Largest frame on the control socket.
pub const MAX_FRAME: usize = 8 << 20;

/// Largest stdin `exec` passes (it travels in one guest frame).
pub const MAX_EXEC_STDIN: usize = 160 << 10;

/// Largest key file `import-key` takes (tor's is 96 bytes).
pub const MAX_KEY_FILE: usize = 4096;

/// One request; the daemon answers it on the same connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Request {
    /// Bring the stack up (and keep it up) on `network`.
    Up {
        network: Network,
        /// `Bridge` lines (without the keyword) for tor in the Tor VM.
        bridges: Vec<String>,
    },
    /// Stop the stack and the daemon; nothing of the stack is left.
    Down,
    /// The stack, the supervisor's record and the host firewall.
    Status,
    /// Run a command in a guest.
    Exec {
        vm: Role,
        argv: Vec<String>,
        timeout_secs: u64,
        /// Bytes for the command's stdin (at most [`MAX_EXEC_STDIN`]).
        stdin: Vec<u8>,
    },
    /// The services of the catalog.
    List,
    /// One service.
    Service {
        service: String,
        action: ServiceAction,
    },
    /// Bring the stack up at boot (through the systemd unit), on this network.
    Autostart {
        on: bool,
        network: Network,
        bridges: Vec<String>,
    },
    /// The encrypted persistent store.
    Persistence(PersistenceAction),
    /// Stay connected and be told of every change (see [`Snapshot`]).
    Watch,
    /// "Isolate via virtualization", the greeter's switch: whether the
    /// stack comes up at boot. `set` saves a choice (`None`: only say);
    /// `start` brings the stack up now if the choice is on, as a boot would.
    Isolate { set: Option<bool>, start: bool },
}

/// A passphrase in a request: zeroized when dropped, never shown by `Debug`.
#[derive(Clone)]
pub struct ApiSecret(pub zeroize::Zeroizing<String>);

impl Serialize for ApiSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ApiSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ApiSecret(zeroize::Zeroizing::new(String::deserialize(d)?)))
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// What to do with the persistent store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum PersistenceAction {
    /// Make it (locked afterwards).
    Create {
        passphrase: ApiSecret,
        size_mib: u64,
    },
    Unlock {
        passphrase: ApiSecret,
    },
    Lock,
    Status,
    ChangePassphrase {
        old: ApiSecret,
        new: ApiSecret,
    },
}

/// The persistent store's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistenceReport {
    pub exists: bool,
    pub unlocked: bool,
    /// The container file.
    pub file: String,
    /// Where it is mounted on the host when unlocked.
    pub mountpoint: String,
}

/// What to do with one service.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ServiceAction {
    Info,
    State,
    /// Start it in the App VM and publish it (and keep it so).
    Enable,
    /// Take the onion service down and stop it.
    Disable,
    GetOption {
        option: String,
    },
    /// Checked, saved, and applied at once to a running service.
    SetOption {
        option: String,
        value: String,
        /// The person confirmed a change that loses something (persistence
        /// turned off: the address and data are gone at the next reboot).
        #[serde(default)]
        yes: bool,
    },
    /// A fresh key pair, or a client's own public key (the host then never
    /// holds that client's private key).
    AddClient {
        name: String,
        public_key: Option<String>,
    },
    RemoveClient {
        name: String,
    },
    Credentials {
        client: Option<String>,
    },
    /// Take tor's `hs_ed25519_secret_key` file: the service gets that address.
    ImportKey {
        file: Vec<u8>,
        /// Replace a key the service has already (its address is lost).
        replace: bool,
    },
    /// Tor's `hs_ed25519_secret_key` file of the service's key.
    ExportKey,
}

impl fmt::Debug for ServiceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceAction::ImportKey { file, replace } => f
                .debug_struct("ImportKey")
                .field("file", &format_args!("<{} bytes>", file.len()))
                .field("replace", replace)
                .finish(),
            ServiceAction::SetOption { option, .. } => f
                .debug_struct("SetOption")
                .field("option", option)
                .field("value", &"<not shown>")
                .finish(),
            ServiceAction::Info => f.write_str("Info"),
            ServiceAction::State => f.write_str("State"),
            ServiceAction::Enable => f.write_str("Enable"),
            ServiceAction::Disable => f.write_str("Disable"),
            ServiceAction::GetOption { option } => {
                f.debug_struct("GetOption").field("option", option).finish()
            }
            ServiceAction::AddClient { name, public_key } => f
                .debug_struct("AddClient")
                .field("name", name)
                .field("public_key", public_key)
                .finish(),
            ServiceAction::RemoveClient { name } => {
                f.debug_struct("RemoveClient").field("name", name).finish()
            }
            ServiceAction::Credentials { client } => f
                .debug_struct("Credentials")
                .field("client", client)
                .finish(),
            ServiceAction::ExportKey => f.write_str("ExportKey"),
        }
    }
}

/// Which network the Tor VM's tor joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The public Tor network.
    Public,
    /// The embedded private Tor network (`tails-server testnet up` first).
    Local,
    /// No uplink at all: tor does not run (tests, offline maintenance).
    None,
}

impl Network {
    pub const ALL: [Network; 3] = [Network::Public, Network::Local, Network::None];

    pub fn name(self) -> &'static str {
        match self {
            Network::Public => "public",
            Network::Local => "local",
            Network::None => "none",
        }
    }

    /// The network called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.name() == name)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reply.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Reply {
    /// A step of a long operation; more replies follow.
    Progress(String),
    /// Tor's bootstrap during `up`; more replies follow.
    Tor(TorProgress),
    /// The operation finished; the text says how.
    Done(String),
    Status(Box<StatusReport>),
    List(Vec<ServiceSummary>),
    Service(ServiceReport),
    Info(Box<ServiceInfo>),
    /// An option's value (a secret's too: the person asked for it).
    Value(String),
    /// The operation finished; these are what the person passes on.
    Credentials(Box<Credentials>),
    /// An exported key file (secret).
    KeyFile(Vec<u8>),
    Exec(ExecOutput),
    Persistence(PersistenceReport),
    /// On a `Watch` connection: the state now (sent again when it changes).
    Event(Box<Snapshot>),
    Isolate(IsolateReport),
    Error(ApiError),
}

/// Whether the stack comes up at boot, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolateReport {
    /// What the next boot does.
    pub on: bool,
    /// Which place decided it, in words (the kernel command line, the file
    /// /etc/tails-server/isolate, the saved choice, …).
    pub decided_by: String,
    /// The choice saved through the API, if any.
    pub saved: Option<bool>,
    /// The saved choice is also in the unlocked persistent store.
    pub in_store: bool,
    /// What `start` did, if it did something.
    pub done: Option<String>,
}

/// Everything a client shows, as one value: what `status`, `list` and
/// `persistence status` say.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub status: StatusReport,
    pub catalog: Vec<ServiceSummary>,
    pub persistence: PersistenceReport,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Progress(m) => f.debug_tuple("Progress").field(m).finish(),
            Reply::Tor(p) => f.debug_tuple("Tor").field(p).finish(),
            Reply::Done(m) => f.debug_tuple("Done").field(m).finish(),
            Reply::Status(s) => f.debug_tuple("Status").field(s).finish(),
            Reply::List(l) => f.debug_tuple("List").field(l).finish(),
            Reply::Service(s) => f.debug_tuple("Service").field(s).finish(),
            Reply::Info(i) => f.debug_tuple("Info").field(&i.name).finish(),
            Reply::Value(_) => f.write_str("Value(<not shown>)"),
            Reply::Credentials(c) => f.debug_tuple("Credentials").field(&c.address).finish(),
            Reply::KeyFile(_) => f.write_str("KeyFile(<secret>)"),
            Reply::Exec(o) => f
                .debug_struct("Exec")
                .field("exit_code", &o.exit_code)
                .finish_non_exhaustive(),
            Reply::Persistence(p) => f.debug_tuple("Persistence").field(p).finish(),
            Reply::Event(s) => f.debug_tuple("Event").field(s).finish(),
            Reply::Isolate(i) => f.debug_tuple("Isolate").field(i).finish(),
            Reply::Error(e) => f.debug_tuple("Error").field(e).finish(),
        }
    }
}

/// What kind of failure an error is, for a client to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value is refused: fix the input.
    Invalid,
    /// No such service, option or client.
    NotFound,
    /// The stack is not up.
    NotUp,
    /// The daemon is starting or stopping the stack; try again.
    Busy,
    /// The stored state cannot be read or written.
    Store,
    /// The stack (a VM, tor, a service) failed.
    Stack,
    /// A guest misbehaved or did not answer.
    Guest,
    /// Anything else on the host.
    Host,
    /// The change loses something for good: the person is to be asked, and
    /// the request sent again confirmed.
    Confirm,
    /// The peer may not do this (not root, not in the group, or a request
    /// only root may make).
    Denied,
}

/// An error as a client sees it: its kind and one line saying what is wrong
/// and what to do (the daemon's typed error, with its causes, in words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// `status`. The stack's part is flattened in (`accel`, `vms`, `path_out`
/// … at the top level), absent while no stack runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub daemon_pid: u32,
    /// The stack as the daemon is asked to keep it: up (and on which
    /// network) or down.
    pub desired: DesiredReport,
    /// `None` while the stack is not (yet) up.
    #[serde(flatten)]
    pub stack: Option<StackReport>,
    /// What the supervisor did and saw: restarts, errors, what a dead daemon
    /// left.
    pub supervisor: SupervisorReport,
    /// The host's table, read back from the kernel.
    pub host_firewall: FirewallStatus,
    /// The enabled services and their onion services.
    pub services: Vec<ServiceReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredReport {
    pub up: bool,
    pub network: Option<Network>,
    pub bridges: usize,
    /// Enabled services, by name.
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackReport {
    pub accel: String,
    pub backend: String,
    pub network: Network,
    /// vhost-device-vsock: `running` or how it ended.
    pub vsock: String,
    /// How the App VM reaches the outside now (or that it cannot).
    pub path_out: String,
    pub vms: Vec<VmStatus>,
}

/// Per-VM status as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStatus {
    pub name: Role,
    /// Hypervisor state (`running`, …) or `down` with how it ended.
    pub state: String,
    pub agent: String,
    pub uptime_secs: Option<u64>,
    pub memory_mib: Option<u64>,
    pub accel: Option<String>,
    pub pid: Option<u32>,
    pub console_log: String,
    /// How many times the supervisor restarted it.
    #[serde(default)]
    pub restarts: u32,
    /// Tor VM only: tor's bootstrap, or why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tor: Option<TorProgress>,
}

/// What `status` shows of the host table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirewallStatus {
    /// `inet tails_server`.
    pub table: String,
    /// The table is loaded.
    pub present: bool,
    /// Rules in it.
    pub rules: usize,
    /// Packets its drop rules have counted since `up`.
    pub dropped_packets: u64,
    /// Why the table could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// The supervisor's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorReport {
    /// Seconds since the Unix epoch when this daemon started.
    pub daemon_started: u64,
    /// What this daemon found when it started (what a dead daemon left, and
    /// what it did with it), if anything.
    pub found_at_start: Option<String>,
    /// Everything the supervisor noticed and did, oldest first (at most 50).
    pub incidents: Vec<Incident>,
    /// The last error, if the stack is not as asked.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// One line: what happened and what was done.
    pub what: String,
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSummary {
    pub name: String,
    pub description: String,
    pub icon_name: String,
    pub enabled: bool,
}

/// A service's state as the daemon knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceReport {
    pub name: String,
    pub enabled: bool,
    pub running: bool,
    pub published: bool,
    /// How many clients the published onion service authorizes (`None`
    /// while it is not published).
    #[serde(default)]
    pub published_clients: Option<usize>,
    /// The onion address (computed on the host from the key).
    pub address: Option<String>,
    /// Why it is not as asked, if it is not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// `info`: the catalog's entry and the current values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceInfo {
    pub name: String,
    pub description: String,
    pub client_application: String,
    pub documentation: String,
    pub icon_name: String,
    pub packages: Vec<String>,
    pub state: ServiceReport,
    pub local_port: u16,
    pub remote_port: u16,
    pub persistent_paths: Vec<String>,
    /// Option values, secrets masked.
    pub options: Vec<OptionReport>,
    /// Authorized clients by name.
    pub clients: Vec<ClientReport>,
    pub client_auth: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionReport {
    pub name: String,
    pub description: String,
    /// `bool`, `int`, `port`, `string`, `enum`, `secret`.
    pub kind: String,
    /// The value as text (a secret is masked).
    pub value: String,
    /// The value as JSON (a number for int and port, a boolean for bool).
    pub json: serde_json::Value,
    /// `enum`: the values it may take, in the catalog's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// `int` and `port`: the smallest and largest values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(i64, i64)>,
    /// `secret`: how long a generated one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientReport {
    pub name: String,
    /// The host holds its private key (it made the pair), so it can show
    /// the client's credentials; false for a client that gave only its
    /// public key.
    pub host_holds_key: bool,
}

/// What a person passes on to one client.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub service: String,
    pub address: String,
    pub connection_info: String,
    pub client_auth: bool,
    pub client: Option<String>,
    /// `<address>:descriptor:x25519:<key>`: secret. `None` when client
    /// authorization is off, or for a client that gave only its public key.
    pub auth_private: Option<String>,
    /// Said to the person along with the credentials (e.g. "client
    /// authorization is off"), one line each.
    pub warnings: Vec<String>,
    /// What the operation that produced them did, if it did something.
    pub done: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_debug_shows_a_secret() {
        let r = Reply::Credentials(Box::new(Credentials {
            service: "nginx".into(),
            address: "x.onion".into(),
            connection_info: String::new(),
            client_auth: true,
            client: Some("alice".into()),
            auth_private: Some("SECRETLINE".into()),
            warnings: vec![],
            done: None,
        }));
        assert!(!format!("{r:?}").contains("SECRETLINE"));
        assert!(!format!("{:?}", Reply::KeyFile(b"SECRETKEY".to_vec())).contains("SECRETKEY"));
        assert!(!format!("{:?}", Reply::Value("hunter2".into())).contains("hunter2"));
        let a = ServiceAction::SetOption {
            option: "password".into(),
            value: "hunter2".into(),
            yes: false,
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        let a = ServiceAction::ImportKey {
            file: b"SECRETKEY".to_vec(),
            replace: false,
        };
        assert!(!format!("{a:?}").contains("SECRETKEY"));
    }

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let r = Request::Service {
            service: "nginx".into(),
            action: ServiceAction::AddClient {
                name: "bob".into(),
                public_key: None,
            },
        };
        let j = serde_json::to_string(&r).expect("json");
        let back: Request = serde_json::from_str(&j).expect("parse");
        assert!(matches!(back, Request::Service { .. }));
        assert!(serde_json::from_str::<Request>(
            r#"{"up":{"network":"local","bridges":[],"x":1}}"#
        )
        .is_err());
        assert!(
            serde_json::from_str::<Request>(r#"{"up":{"network":"moon","bridges":[]}}"#).is_err()
        );
        let w = serde_json::to_string(&Request::Watch).expect("json");
        assert_eq!(w, r#""watch""#);
        assert!(matches!(
            serde_json::from_str::<Request>(&w).expect("parse"),
            Request::Watch
        ));
    }

    #[test]
    fn network_names() {
        for n in Network::ALL {
            assert_eq!(Network::from_name(n.name()), Some(n));
        }
        assert_eq!(Network::from_name("moon"), None);
    }
}
