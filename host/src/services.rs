//! One service's state on the host: its options, its onion key and its
//! authorized clients, kept in the [`Store`](crate::store::Store) as
//! `services/<name>/state.json`; and what the guests are told to run it
//! (the [`Plan`]).
//!
//! The onion address is always computed here from the key; the client keys
//! are made here (or given as public keys by their owners). Nothing of this
//! comes from a guest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tails_catalog::{OptionValue, Service, Values};
use tails_onion::{ClientKey, ClientPublicKey, OnionAddress, ServiceKey, Zeroizing};
use tails_proto::msg::{OnionPublish, ServiceFile, ServiceStart};

use crate::store::{damaged, Store, StoreError};

/// Name of the client created on the first enable.
pub const FIRST_CLIENT: &str = "default";

/// How long the Tor VM may take to have a descriptor uploaded.
pub const PUBLISH_TIMEOUT_MS: u64 = 180_000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Option(Box<tails_catalog::OptionError>),
    #[error("{path}: saved option {option} is no longer valid ({source}): `tails-server {service} set-option {option} VALUE`")]
    SavedOption {
        path: String,
        service: String,
        option: String,
        #[source]
        source: Box<tails_catalog::OptionError>,
    },
    #[error(
        "a client name is 1 to 32 letters, digits, '-' or '_', starting with a letter or digit"
    )]
    ClientName,
    #[error("{service} already has a client named {client}")]
    ClientExists { service: String, client: String },
    #[error("{service} has no client named {client}: `tails-server {service} info --details` lists them")]
    NoClient { service: String, client: String },
    #[error("{service} has no client named {client}: `tails-server {service} add-client {client}` makes one")]
    NoCredentials { service: String, client: String },
    #[error("{client} is the last authorized client of {service}: without one, the service would be open to anyone who learns its address; add another client first (`tails-server {service} add-client NAME`), or disable {service}")]
    LastClient { service: String, client: String },
    #[error("{service} has client authorization on but no authorized client, so it is not published: `tails-server {service} add-client NAME` makes one")]
    NoAuthorizedClient { service: String },
    #[error("client {client} of {service} gave only its public key: its private key is with its owner, not here")]
    PublicOnly { service: String, client: String },
    #[error("{0}")]
    PublicKey(#[source] tails_onion::ClientPublicKeyError),
    #[error("{0}")]
    KeyFile(#[source] tails_onion::KeyFileError),
    #[error(
        "{service} has no address yet: `tails-server {service} enable` (or `import-key`) makes one"
    )]
    NoAddress { service: String },
    #[error("cannot make a key: {0}")]
    Random(#[from] tails_onion::KeyError),
    #[error("cannot generate {service}'s secrets: {source}")]
    Secrets {
        service: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{service}: {source}")]
    Render {
        service: String,
        #[source]
        source: tails_catalog::RenderError,
    },
}

impl From<tails_catalog::OptionError> for ServiceError {
    fn from(e: tails_catalog::OptionError) -> Self {
        ServiceError::Option(Box::new(e))
    }
}

/// An authorized client.
#[derive(Clone)]
pub enum Client {
    /// The host made the key pair and holds the private key (to hand it out).
    Held(ClientKey),
    /// The client's owner gave only the public key.
    PublicOnly(ClientPublicKey),
}

impl Client {
    /// The public key in base32, as `ADD_ONION … ClientAuthV3=` takes it.
    pub fn public_base32(&self) -> String {
        match self {
            Client::Held(k) => k.public_base32(),
            Client::PublicOnly(p) => p.public_base32(),
        }
    }
}

/// One service's state, loaded and checked.
pub struct ServiceState {
    pub values: Values,
    /// `None` until the first enable (or import).
    pub key: Option<ServiceKey>,
    pub clients: BTreeMap<String, Client>,
}

/// `state.json`, schema 1.
#[derive(Default, Serialize, Deserialize)]
struct File {
    /// Options set or generated, as text (checked again on every load).
    options: BTreeMap<String, String>,
    /// The onion key's storage form, base64 (tails_onion::ServiceKey).
    #[serde(default)]
    onion_key: Option<String>,
    clients: BTreeMap<String, FileClient>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileClient {
    /// x25519 private key, base32.
    Private(String),
    /// x25519 public key, base32.
    Public(String),
}

/// `state.json` before schema versions: private client keys only, the key in
/// `onion.key` beside it, and an `enabled` flag now kept by the daemon.
#[derive(Deserialize)]
struct FileV0 {
    options: BTreeMap<String, String>,
    clients: BTreeMap<String, String>,
    #[allow(dead_code)]
    enabled: bool,
}

/// A client name: what a person types (`alice`, `laptop-2`).
pub fn valid_client_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphanumeric())
        && n.len() <= 32
        && c.all(|x| x.is_ascii_alphanumeric() || x == '-' || x == '_')
}

fn b32_key(path: &std::path::Path, what: &str, text: &str) -> Result<[u8; 32], StoreError> {
    data_encoding::BASE32_NOPAD
        .decode(text.to_ascii_uppercase().as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| damaged(path, format!("{what} is not a 32-byte base32 key")))
}

fn b32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// Load `svc`'s state; defaults (and fresh secrets, saved at once) where
/// nothing was saved. A damaged file is an error naming it, left alone.
pub fn load(store: &Store, svc: &Service) -> Result<ServiceState, ServiceError> {
    let name = svc.name();
    let path = match store.locate(name) {
        Some(l) => l.path().to_owned(),
        None => {
            // Nothing here: it may be kept in the locked store, and a fresh
            // state (a new address) must not take its place.
            if let Some(e) = store.maybe_locked_away(name) {
                return Err(e.into());
            }
            store.service_file(name)
        }
    };
    let shown = path.display().to_string();
    let (file, legacy_key) = match crate::store::read_versioned(&path)? {
        None => (File::default(), None),
        Some((0, v)) => {
            let old: FileV0 =
                serde_json::from_value(v).map_err(|e| damaged(&path, e.to_string()))?;
            let key_path = path.with_file_name("onion.key");
            let key = match std::fs::read(&key_path) {
                Ok(b) => Some(
                    ServiceKey::from_storage(&b).map_err(|e| damaged(&key_path, e.to_string()))?,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(StoreError::Io {
                        what: "read",
                        path: key_path.display().to_string(),
                        source: e,
                    }
                    .into())
                }
            };
            let clients = old
                .clients
                .into_iter()
                .map(|(n, k)| (n, FileClient::Private(k)))
                .collect();
            (
                File {
                    options: old.options,
                    onion_key: None,
                    clients,
                },
                key,
            )
        }
        Some((_, v)) => (
            serde_json::from_value(v).map_err(|e| damaged(&path, e.to_string()))?,
            None,
        ),
    };
    let mut values = svc
        .initial_values()
        .map_err(|source| ServiceError::Secrets {
            service: name.to_owned(),
            source,
        })?;
    for (k, v) in &file.options {
        let parsed = svc
            .parse_option(k, v)
            .map_err(|source| ServiceError::SavedOption {
                path: shown.clone(),
                service: name.to_owned(),
                option: k.clone(),
                source: Box::new(source),
            })?;
        values.insert(k.clone(), parsed);
    }
    let key = match (&file.onion_key, legacy_key) {
        (Some(text), _) => {
            let bytes = Zeroizing::new(
                data_encoding::BASE64
                    .decode(text.as_bytes())
                    .map_err(|_| damaged(&path, "its onion key is not base64".into()))?,
            );
            Some(
                ServiceKey::from_storage(&bytes)
                    .map_err(|e| damaged(&path, format!("its onion key: {e}")))?,
            )
        }
        (None, k) => k,
    };
    let mut clients = BTreeMap::new();
    for (n, c) in &file.clients {
        let client = match c {
            FileClient::Private(k) => {
                let bytes = Zeroizing::new(b32_key(&path, &format!("client {n}'s key"), k)?);
                Client::Held(ClientKey::from_bytes(&bytes))
            }
            FileClient::Public(k) => Client::PublicOnly(
                ClientPublicKey::parse(k)
                    .map_err(|e| damaged(&path, format!("client {n}'s public key: {e}")))?,
            ),
        };
        clients.insert(n.clone(), client);
    }
    let st = ServiceState {
        values,
        key,
        clients,
    };
    // A secret made up just now (an option never saved) is kept at once:
    // otherwise every read would show, and every enable use, another one.
    // A file from before schema versions is rewritten in the current one.
    let fresh_secret = svc
        .options()
        .iter()
        .any(|o| o.kind().is_secret() && !file.options.contains_key(o.name()));
    let legacy = file.onion_key.is_none() && st.key.is_some();
    if fresh_secret || legacy {
        save(store, svc, &st)?;
    }
    if legacy {
        let _ = std::fs::remove_file(path.with_file_name("onion.key"));
    }
    Ok(st)
}

/// Save the state (secrets included: the file is 0600).
pub fn save(store: &Store, svc: &Service, st: &ServiceState) -> Result<(), ServiceError> {
    let file = File {
        options: st
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.reveal().to_string()))
            .collect(),
        onion_key: st
            .key
            .as_ref()
            .map(|k| data_encoding::BASE64.encode(&k.to_storage())),
        clients: st
            .clients
            .iter()
            .map(|(n, c)| {
                let fc = match c {
                    Client::Held(k) => FileClient::Private(b32(&k.to_bytes()[..])),
                    Client::PublicOnly(p) => FileClient::Public(p.public_base32()),
                };
                (n.clone(), fc)
            })
            .collect(),
    };
    Ok(store.write_service(svc.name(), &file, persistence_on(&st.values))?)
}

impl ServiceState {
    /// The onion key, made now if there is none (then saved by the caller).
    pub fn ensure_key(&mut self) -> Result<&ServiceKey, ServiceError> {
        let key = match self.key.take() {
            Some(k) => k,
            None => ServiceKey::generate()?,
        };
        Ok(self.key.insert(key))
    }

    pub fn address(&self) -> Option<OnionAddress> {
        self.key.as_ref().map(|k| k.onion_address())
    }

    pub fn client_auth_on(&self) -> bool {
        client_auth_on(&self.values)
    }

    /// Add a client: a fresh key pair, or the owner's public key.
    pub fn add_client(
        &mut self,
        service: &str,
        name: &str,
        public_key: Option<&str>,
    ) -> Result<(), ServiceError> {
        if !valid_client_name(name) {
            return Err(ServiceError::ClientName);
        }
        if self.clients.contains_key(name) {
            return Err(ServiceError::ClientExists {
                service: service.to_owned(),
                client: name.to_owned(),
            });
        }
        let c = match public_key {
            None => Client::Held(ClientKey::generate()?),
            Some(text) => {
                Client::PublicOnly(ClientPublicKey::parse(text).map_err(ServiceError::PublicKey)?)
            }
        };
        self.clients.insert(name.to_owned(), c);
        Ok(())
    }

    /// Revoke `name`; never the last client while client authorization is
    /// on (tor would then publish the service without it: open to all).
    pub fn remove_client(&mut self, service: &str, name: &str) -> Result<(), ServiceError> {
        if self.client_auth_on() && self.clients.len() == 1 && self.clients.contains_key(name) {
            return Err(ServiceError::LastClient {
                service: service.to_owned(),
                client: name.to_owned(),
            });
        }
        self.clients
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| ServiceError::NoClient {
                service: service.to_owned(),
                client: name.to_owned(),
            })
    }

    /// The first client, on the first enable with client authorization.
    pub fn ensure_first_client(&mut self, service: &str) -> Result<bool, ServiceError> {
        if self.client_auth_on() && self.clients.is_empty() {
            self.add_client(service, FIRST_CLIENT, None)?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A bool option's value (`default` when unset).
fn flag(v: &Values, option: &str, default: bool) -> bool {
    match v.get(option) {
        Some(OptionValue::Bool(b)) => *b,
        _ => default,
    }
}

/// Whether client authorization is on (the default).
pub fn client_auth_on(v: &Values) -> bool {
    flag(v, tails_catalog::CLIENT_AUTH_OPTION, true)
}

/// The `persistence` option (off when unset).
pub fn persistence_on(v: &Values) -> bool {
    flag(v, tails_catalog::PERSISTENCE_OPTION, false)
}

/// Whether the service comes up with the stack.
pub fn autostart_on(v: &Values) -> bool {
    flag(v, tails_catalog::AUTOSTART_OPTION, false)
}

/// Where the host relays connections to the service from (allow-localhost,
/// allow-lan; each off when unset), and to which of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayWant {
    pub port: u16,
    pub localhost: bool,
    pub lan: bool,
}

impl RelayWant {
    pub fn any(&self) -> bool {
        self.localhost || self.lan
    }
}

/// The virtual port (the port the onion service offers).
pub fn virtual_port(svc: &Service, v: &Values) -> u16 {
    match v.get(tails_catalog::VIRTUAL_PORT_OPTION) {
        Some(OptionValue::Port(p)) => *p,
        _ => svc.default_virtual_port(),
    }
}

/// What the guests are told to run one service, and how to tell whether
/// what runs is still what is asked.
pub struct Plan {
    pub address: OnionAddress,
    pub start: ServiceStart,
    pub publish: OnionPublish,
    /// Changes when the App VM side must be restarted (command, user, files).
    pub start_id: [u8; 32],
    /// Changes when the onion service must be published again (ports, clients).
    pub publish_id: [u8; 32],
    /// The host's relay to it.
    pub relay: RelayWant,
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// The plan for `svc` with state `st` (which must have a key).
pub fn plan(svc: &Service, st: &ServiceState) -> Result<Plan, ServiceError> {
    let name = svc.name();
    let key = st.key.as_ref().ok_or_else(|| ServiceError::NoAddress {
        service: name.to_owned(),
    })?;
    let address = key.onion_address();
    let addr_text = address.to_string();
    let target_port = svc.default_target_port();
    let relay = RelayWant {
        port: target_port,
        localhost: flag(&st.values, tails_catalog::ALLOW_LOCALHOST_OPTION, false),
        lan: flag(&st.values, tails_catalog::ALLOW_LAN_OPTION, false),
    };
    let rendered = svc
        .render_start(
            &st.values,
            &tails_catalog::Builtins {
                address: &addr_text,
                target_port,
            },
        )
        .map_err(|source| ServiceError::Render {
            service: name.to_owned(),
            source,
        })?;
    let start = ServiceStart {
        name: name.to_owned(),
        argv: rendered.command,
        user: rendered.user,
        files: rendered
            .files
            .into_iter()
            .map(|f| ServiceFile {
                path: f.path.display().to_string(),
                mode: f.mode,
                contents: f.contents.into_bytes(),
                owner: f.owner,
            })
            .collect(),
        port: target_port,
        dirs: rendered
            .directories
            .into_iter()
            .map(|d| tails_proto::msg::ServiceDir {
                path: d.path.display().to_string(),
                owner: d.owner,
                mode: d.mode,
            })
            .collect(),
        users: rendered
            .users
            .into_iter()
            .map(|u| tails_proto::msg::ServiceUser {
                name: u.name,
                home: u.home.display().to_string(),
            })
            .collect(),
        prepare: rendered
            .prepare
            .into_iter()
            .map(|p| tails_proto::msg::ServicePrepare {
                argv: p.command,
                user: p.user,
                stdin: p.stdin.map(String::into_bytes).unwrap_or_default(),
                creates: p.creates.map(|c| c.display().to_string()),
            })
            .collect(),
        certs: rendered
            .certificates
            .into_iter()
            .map(|c| tails_proto::msg::ServiceCert {
                key: c.key.display().to_string(),
                cert: c.certificate.display().to_string(),
                owner: c.owner,
                names: c.names,
            })
            .collect(),
        persistent: if persistence_on(&st.values) {
            svc.persistent_paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        } else {
            Vec::new()
        },
        relay: relay.any(),
    };
    // Everything the agent is sent, in one canonical form (the struct's field order).
    // Invariant: a struct of strings, integers and byte vectors (no maps, no floats)
    // always serializes.
    #[allow(clippy::expect_used)]
    let wire = serde_json::to_vec(&start).expect("a ServiceStart serializes");
    let start_id = digest(&[&wire]);
    let mut client_auth: Vec<String> = if st.client_auth_on() {
        st.clients.values().map(Client::public_base32).collect()
    } else {
        Vec::new()
    };
    // An empty list is no client authorization at all for tor: a service
    // that asks for it is not published without a client.
    if st.client_auth_on() && client_auth.is_empty() {
        return Err(ServiceError::NoAuthorizedClient {
            service: name.to_owned(),
        });
    }
    client_auth.sort();
    client_auth.dedup();
    let virtual_port = virtual_port(svc, &st.values);
    let mut pparts: Vec<Vec<u8>> = vec![
        address.to_string().into_bytes(),
        virtual_port.to_be_bytes().to_vec(),
        target_port.to_be_bytes().to_vec(),
    ];
    pparts.extend(client_auth.iter().map(|c| c.clone().into_bytes()));
    let publish_id = digest(&pparts.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let publish = OnionPublish {
        key: key.tor_add_onion_key().to_string(),
        service_id: address.without_suffix(),
        virtual_port,
        target_port,
        client_auth,
        timeout_ms: PUBLISH_TIMEOUT_MS,
        close_circuits: false,
    };
    Ok(Plan {
        address,
        start,
        publish,
        start_id,
        publish_id,
        relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nginx(extra_secret: bool) -> Service {
        let mut text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/nginx.yaml"),
        )
        .expect("nginx.yaml");
        if extra_secret {
            text = text.replace(
                "options:\n",
                "options:\n  - name: admin-password\n    description: x\n    kind:\n      secret:\n        length: 16\n",
            );
        }
        Service::parse(std::path::Path::new("nginx.yaml"), &text)
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ts-svc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_generated_secret_is_kept_from_the_first_load() {
        let svc = nginx(true);
        let dir = tmp("secret");
        let store = crate::store::test_store(&dir);
        let first = load(&store, &svc).expect("load");
        let second = load(&store, &svc).expect("load");
        let secret = |st: &ServiceState| st.values["admin-password"].reveal().to_string();
        assert_eq!(secret(&first).len(), 16);
        assert_eq!(
            secret(&first),
            secret(&second),
            "the same secret on every read"
        );
        let mode = std::fs::metadata(store.service_file("nginx"))
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        crate::store::test_cleanup(&dir);
    }

    #[test]
    fn key_and_clients_survive_a_round_trip() {
        let svc = nginx(false);
        let dir = tmp("roundtrip");
        let store = crate::store::test_store(&dir);
        let mut st = load(&store, &svc).expect("load");
        assert!(st.address().is_none());
        let addr = st.ensure_key().expect("key").onion_address();
        assert!(st.ensure_first_client("nginx").expect("first"));
        let bob = ClientKey::generate().expect("bob");
        st.add_client("nginx", "bob", Some(&bob.public_base32()))
            .expect("public");
        save(&store, &svc, &st).expect("save");
        let back = load(&store, &svc).expect("load");
        assert_eq!(back.address(), Some(addr));
        assert!(matches!(back.clients.get("default"), Some(Client::Held(_))));
        match back.clients.get("bob") {
            Some(Client::PublicOnly(p)) => assert_eq!(p.public_base32(), bob.public_base32()),
            _ => panic!("bob is public-only"),
        }
        // Bob's private key was never stored.
        let text = std::fs::read_to_string(store.service_file("nginx")).expect("read");
        assert!(!text.contains(&b32(&bob.to_bytes()[..])));
        let p = plan(&svc, &back).expect("plan");
        assert_eq!(p.publish.client_auth.len(), 2);
        assert_eq!(p.publish.service_id, addr.without_suffix());
        crate::store::test_cleanup(&dir);
    }

    #[test]
    fn a_service_with_client_authorization_is_never_published_without_a_client() {
        let svc = nginx(false);
        let dir = tmp("lastclient");
        let store = crate::store::test_store(&dir);
        let mut st = load(&store, &svc).expect("load");
        st.ensure_key().expect("key");
        // No client yet: no plan, rather than an ADD_ONION without
        // ClientAuthV3 (open to anyone).
        assert!(matches!(
            plan(&svc, &st),
            Err(ServiceError::NoAuthorizedClient { .. })
        ));
        st.ensure_first_client("nginx").expect("first");
        st.add_client("nginx", "bob", None).expect("bob");
        st.remove_client("nginx", "bob").expect("bob goes");
        let e = st
            .remove_client("nginx", "default")
            .expect_err("the last one stays");
        assert!(e.to_string().contains("add another client first"), "{e}");
        assert_eq!(plan(&svc, &st).expect("plan").publish.client_auth.len(), 1);
        // Client authorization off: no client needed, none sent.
        st.values.insert(
            tails_catalog::CLIENT_AUTH_OPTION.to_owned(),
            OptionValue::Bool(false),
        );
        st.remove_client("nginx", "default")
            .expect("off: it may go");
        assert!(plan(&svc, &st)
            .expect("plan")
            .publish
            .client_auth
            .is_empty());
        crate::store::test_cleanup(&dir);
    }

    #[test]
    fn a_file_from_before_schema_versions_is_migrated() {
        let svc = nginx(false);
        let dir = tmp("v0");
        let store = crate::store::test_store(&dir);
        let sdir = dir.join("services/nginx");
        std::fs::create_dir_all(&sdir).expect("mkdir");
        let key = ServiceKey::generate().expect("key");
        std::fs::write(sdir.join("onion.key"), &key.to_bytes()[..]).expect("key");
        let alice = ClientKey::generate().expect("alice");
        std::fs::write(
            sdir.join("state.json"),
            format!(
                "{{\"options\":{{\"directory-listing\":\"on\"}},\"clients\":{{\"alice\":\"{}\"}},\"enabled\":true}}",
                b32(&alice.to_bytes()[..])
            ),
        )
        .expect("state");
        let st = load(&store, &svc).expect("load v0");
        assert_eq!(st.address(), Some(key.onion_address()));
        assert!(matches!(st.clients.get("alice"), Some(Client::Held(_))));
        assert!(
            !sdir.join("onion.key").exists(),
            "the key moved into state.json"
        );
        let again = load(&store, &svc).expect("load v1");
        assert_eq!(again.address(), Some(key.onion_address()));
        crate::store::test_cleanup(&dir);
    }

    #[test]
    fn plan_ids_follow_what_matters() {
        let svc = nginx(false);
        let dir = tmp("plan");
        let store = crate::store::test_store(&dir);
        let mut st = load(&store, &svc).expect("load");
        st.ensure_key().expect("key");
        st.ensure_first_client("nginx").expect("first");
        let a = plan(&svc, &st).expect("plan");
        st.add_client("nginx", "bob", None).expect("bob");
        let b = plan(&svc, &st).expect("plan");
        assert_eq!(
            a.start_id, b.start_id,
            "a client does not restart the service"
        );
        assert_ne!(a.publish_id, b.publish_id, "a client republishes");
        st.values.insert(
            "directory-listing".into(),
            svc.parse_option("directory-listing", "on").expect("opt"),
        );
        let c = plan(&svc, &st).expect("plan");
        assert_ne!(b.start_id, c.start_id, "an option restarts the service");
        assert_eq!(b.publish_id, c.publish_id);
        crate::store::test_cleanup(&dir);
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
