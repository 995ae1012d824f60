//! The daemon's errors: each module's own error wrapped, with its cause
//! kept, and turned into the API's [`ApiError`] (a kind and one line) only
//! at the edge, when the reply is sent.

use crate::api::{ApiError, ErrorKind, Network};
use crate::services::ServiceError;
use crate::stack::{StackError, UpError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(Box<ServiceError>),
    #[error(transparent)]
    Stack(Box<StackError>),
    #[error(transparent)]
    Up(Box<UpError>),
    #[error("{0} is not installed: run ./setup.sh")]
    Missing(&'static str),
    #[error("cannot read the image cache: {0}")]
    ImageCache(#[source] tails_images::ImageError),
    #[error("the guest images are missing or out of date: run `tails-server image build`")]
    NoImages,
    #[error("the local Tor network is not usable: {0}")]
    Testnet(#[source] tails_testnet::TestnetError),
    #[error("bad upstream network: {0}")]
    Upstreams(String),
    #[error("a task of the daemon failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the stack died and could not be started again after {attempts} attempts: see `tails-server status` and the daemon log; `tails-server down` then `up` tries afresh")]
    GaveUp { attempts: u32 },
    #[error(
        "the stack is being started again (next attempt in {secs} s): see `tails-server status`"
    )]
    RestartPending { secs: u64 },
    #[error("unknown service `{0}`: `tails-server list` shows the services")]
    UnknownService(String),
    #[error("the Tor VM published another address than the key's: refused")]
    WrongServiceId,
    #[error("{0} did not keep running in the App VM: see the App VM's console log")]
    ServiceDied(String),
    #[error("tails-server is not up: run `tails-server up`")]
    NotUp,
    #[error("tails-server is starting or stopping; try again in a moment")]
    Busy,
    #[error("socket activation: {0}")]
    Activation(String),
    #[error("`down` was asked while the stack or a service was starting: it was stopped")]
    StoppedByDown,
    #[error("bridges need an uplink: use --network public or local")]
    BridgesNeedUplink,
    #[error("tails-server is up on the {0} network: `tails-server down` first to change it")]
    OtherNetwork(Network),
    #[error("{0} is enabled: `tails-server {0} disable` first, then import the key")]
    EnabledKeyImport(String),
    #[error("{service} already has the address {address}: `tails-server {service} export-key FILE` keeps it, then `import-key --replace FILE` replaces it")]
    KeyExists { service: String, address: String },
    #[error("{service} listens on port {port} in the App VM, which {other} (enabled) already uses: `tails-server {other} disable` first")]
    PortTaken {
        service: String,
        port: u16,
        other: String,
    },
    #[error(transparent)]
    Vault(#[from] tails_vault::VaultError),
    #[error("the stack runs on the persistent store (the VMs' disks, the services' keys): `tails-server down` stops it and locks the store")]
    StoreInUse,
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
    #[error("{0} keeps its data on the App VM's persistent disk, but the stack was started without it (the persistent store was locked): `tails-server down`, `tails-server persistence unlock`, then `tails-server up`")]
    NoDataDisk(String),
    #[error("turning persistence off removes {0}'s address, keys and data from the persistent store: they are gone at the next reboot; add --yes to go on")]
    ConfirmAmnesic(String),
    #[error("the stack is down, but the persistent store is still unlocked ({0}): `tails-server persistence lock` tries again")]
    StoreStillUnlocked(#[source] tails_vault::VaultError),
    #[error("{0}")]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    Systemd(#[from] crate::systemd::SystemdError),
    /// An error already in the API's form (from a reconciler round).
    #[error("{}", .0.message)]
    Reported(ApiError),
}

impl From<ServiceError> for DaemonError {
    fn from(e: ServiceError) -> Self {
        DaemonError::Service(Box::new(e))
    }
}

impl From<UpError> for DaemonError {
    fn from(e: UpError) -> Self {
        DaemonError::Up(Box::new(e))
    }
}

impl DaemonError {
    pub fn kind(&self) -> ErrorKind {
        use DaemonError::*;
        match self {
            Store(_) => ErrorKind::Store,
            Service(e) => match &**e {
                ServiceError::Store(_) => ErrorKind::Store,
                ServiceError::NoClient { .. }
                | ServiceError::NoCredentials { .. }
                | ServiceError::NoAddress { .. } => ErrorKind::NotFound,
                ServiceError::Option(o)
                    if matches!(**o, tails_catalog::OptionError::Unknown { .. }) =>
                {
                    ErrorKind::NotFound
                }
                ServiceError::Random(_) | ServiceError::Secrets { .. } => ErrorKind::Host,
                _ => ErrorKind::Invalid,
            },
            Stack(e) => match **e {
                StackError::Agent { .. } => ErrorKind::Guest,
                _ => ErrorKind::Stack,
            },
            Up(_) | GaveUp { .. } | ServiceDied(_) | WrongServiceId => ErrorKind::Stack,
            Agent(_) => ErrorKind::Guest,
            Missing(_) | ImageCache(_) | NoImages | Testnet(_) | Join(_) | Systemd(_) => {
                ErrorKind::Host
            }
            Upstreams(_) | BridgesNeedUplink | EnabledKeyImport(_) | KeyExists { .. } => {
                ErrorKind::Invalid
            }
            OtherNetwork(_) | PortTaken { .. } => ErrorKind::Invalid,
            StoreStillUnlocked(_) => ErrorKind::Host,
            StoreInUse => ErrorKind::Invalid,
            Relay(_) | Activation(_) => ErrorKind::Host,
            ConfirmAmnesic(_) => ErrorKind::Confirm,
            NoDataDisk(_) => ErrorKind::Stack,
            Vault(e) => match e {
                tails_vault::VaultError::Tool { .. } | tails_vault::VaultError::Io { .. } => {
                    ErrorKind::Host
                }
                _ => ErrorKind::Invalid,
            },
            RestartPending { .. } | Busy | StoppedByDown => ErrorKind::Busy,
            UnknownService(_) => ErrorKind::NotFound,
            NotUp => ErrorKind::NotUp,
            Reported(e) => e.kind,
        }
    }

    /// The error as a client gets it: its kind, and one line.
    pub fn to_api(&self) -> ApiError {
        ApiError {
            kind: self.kind(),
            message: one_line(&self.to_string()),
        }
    }
}

/// Text made one line (a cause from outside may hold line breaks).
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_cause_and_become_one_line() {
        let e = DaemonError::Store(StoreError::Damaged {
            path: "/x/state.json".into(),
            reason: "EOF while parsing\nat line 3".into(),
        });
        let a = e.to_api();
        assert_eq!(a.kind, ErrorKind::Store);
        assert_eq!(a.message.lines().count(), 1, "{}", a.message);
        assert!(a.message.contains("/x/state.json"), "{}", a.message);
        let io = DaemonError::Store(StoreError::Io {
            what: "read",
            path: "/x".into(),
            source: std::io::Error::other("boom"),
        });
        assert!(
            std::error::Error::source(&io).is_some(),
            "the cause is kept"
        );
    }
}
