//! The services' state on the host: their options, their onion key and
//! their authorized clients, kept under `<state>/services/<name>/`, every
//! file 0600 and written whole (a temporary file renamed over the old one).
//!
//! The onion address is always computed here from the key; the client keys
//! are made here. Nothing of this comes from a guest.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tails_catalog::{OptionValue, Service, Values};
use tails_onion::{ClientKey, OnionAddress, ServiceKey};

/// Name of the client created on the first enable.
pub const FIRST_CLIENT: &str = "default";

/// What is kept of one service.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// Options set by the user, as text (validated again on every load).
    options: BTreeMap<String, String>,
    /// Authorized clients: name → x25519 private key, base32.
    clients: BTreeMap<String, String>,
    /// The user asked for it to be enabled.
    enabled: bool,
}

/// One service's state, loaded and checked.
pub struct State {
    pub values: Values,
    pub clients: BTreeMap<String, ClientKey>,
    pub enabled: bool,
}

/// The state directory of all services.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A client name: what a person types (`alice`, `laptop-2`).
pub fn valid_client_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && n.len() <= 32
        && c.all(|x| x.is_ascii_alphanumeric() || x == '-' || x == '_')
}

pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    fn service_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        Ok(d)
    }

    /// The service's state; defaults (and fresh secrets) where nothing was
    /// saved. A saved value the catalog no longer accepts is an error that
    /// names it.
    pub fn load(&self, svc: &Service) -> Result<State> {
        let path = self.dir.join(svc.name()).join("state.json");
        let file: StateFile = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("{} is damaged", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let mut values = svc
            .initial_values()
            .context("generate the service's secrets")?;
        for (k, v) in &file.options {
            let parsed = svc.parse_option(k, v).map_err(|e| {
                anyhow::anyhow!(
                    "{}: saved option {k} is no longer valid ({e}): `tails-server {} set-option {k} VALUE`",
                    path.display(),
                    svc.name()
                )
            })?;
            values.insert(k.clone(), parsed);
        }
        let mut clients = BTreeMap::new();
        for (name, key) in &file.clients {
            let bytes = data_encoding::BASE32_NOPAD
                .decode(key.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .with_context(|| format!("{}: client {name}'s key is damaged", path.display()))?;
            clients.insert(name.clone(), ClientKey::from_bytes(&bytes));
        }
        let st = State {
            values,
            clients,
            enabled: file.enabled,
        };
        // A secret made up just now (an option never saved) is kept at once:
        // otherwise every read would show, and every enable use, another one.
        let fresh_secret = svc
            .options()
            .iter()
            .any(|o| o.kind().is_secret() && !file.options.contains_key(o.name()));
        if fresh_secret {
            self.save(svc, &st)?;
        }
        Ok(st)
    }

    /// Save the state (options as text, secrets included: the file is 0600).
    pub fn save(&self, svc: &Service, st: &State) -> Result<()> {
        let file = StateFile {
            options: st
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.reveal().to_string()))
                .collect(),
            clients: st
                .clients
                .iter()
                .map(|(n, k)| {
                    (
                        n.clone(),
                        data_encoding::BASE32_NOPAD.encode(&k.to_bytes()[..]),
                    )
                })
                .collect(),
            enabled: st.enabled,
        };
        let path = self.service_dir(svc.name())?.join("state.json");
        write_private(&path, &serde_json::to_vec_pretty(&file)?)
    }

    /// The service's onion key: made on first use, then always the same (so
    /// is its address).
    pub fn onion_key(&self, name: &str) -> Result<ServiceKey> {
        let path = self.service_dir(name)?.join("onion.key");
        match std::fs::read(&path) {
            Ok(b) => {
                let seed = <[u8; 32]>::try_from(b.as_slice())
                    .ok()
                    .with_context(|| format!("{} is damaged", path.display()))?;
                Ok(ServiceKey::from_bytes(&seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = ServiceKey::generate().context("generate the onion key")?;
                write_private(&path, &k.to_bytes()[..])?;
                Ok(k)
            }
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// The address, if a key exists already.
    pub fn address(&self, name: &str) -> Option<OnionAddress> {
        let b = std::fs::read(self.dir.join(name).join("onion.key")).ok()?;
        let seed = <[u8; 32]>::try_from(b.as_slice()).ok()?;
        Some(ServiceKey::from_bytes(&seed).onion_address())
    }
}

/// Add a client (a fresh key pair) by name.
pub fn add_client(st: &mut State, name: &str) -> Result<()> {
    if !valid_client_name(name) {
        bail!(
            "a client name is 1 to 32 letters, digits, '-' or '_', starting with a letter or digit"
        );
    }
    if st.clients.contains_key(name) {
        bail!("there is already a client named {name}");
    }
    let k = ClientKey::generate().context("generate a client key")?;
    st.clients.insert(name.to_owned(), k);
    Ok(())
}

/// Whether client authorization is on (the default).
pub fn client_auth_on(v: &Values) -> bool {
    !matches!(
        v.get(tails_catalog::CLIENT_AUTH_OPTION),
        Some(OptionValue::Bool(false))
    )
}

/// The virtual port (the port the onion service offers).
pub fn virtual_port(svc: &Service, v: &Values) -> u16 {
    match v.get(tails_catalog::VIRTUAL_PORT_OPTION) {
        Some(OptionValue::Port(p)) => *p,
        _ => svc.default_virtual_port(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_kept_from_the_first_load() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/nginx.yaml"),
        )
        .expect("nginx.yaml")
        .replace(
            "options:\n",
            "options:\n  - name: admin-password\n    description: x\n    kind:\n      secret:\n        length: 16\n",
        );
        let svc = Service::parse(std::path::Path::new("nginx.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let dir = std::env::temp_dir().join(format!("ts-store-{}", std::process::id()));
        let store = Store::new(dir.clone());
        let first = store.load(&svc).expect("load");
        let second = store.load(&svc).expect("load");
        let secret = |st: &State| st.values["admin-password"].reveal().to_string();
        assert_eq!(secret(&first).len(), 16);
        assert_eq!(
            secret(&first),
            secret(&second),
            "the same secret on every read"
        );
        let mode = std::fs::metadata(dir.join("nginx/state.json"))
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn client_names() {
        for ok in ["alice", "laptop-2", "A_1"] {
            assert!(valid_client_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "é", &"a".repeat(33)] {
            assert!(!valid_client_name(bad), "{bad}");
        }
    }
}
