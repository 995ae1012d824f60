//! One short function per request. State changes go through the store (held
//! by the supervisor, one writer) and the desired state; what runs is
//! changed by the reconciler, which each changing request waits for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tails_catalog::{OptionKind, OptionValue, Service};
use tokio::sync::{broadcast, mpsc, watch};

use crate::api::{
    ClientReport, Credentials, DesiredReport, ErrorKind, Network, OptionReport, Reply, Request,
    ServiceAction, ServiceInfo, ServiceReport, ServiceSummary, StackReport, StatusReport,
};
use crate::error::DaemonError;
use crate::services::{self, Client, ServiceState};
use crate::supervisor::{Phase, StackWant, Supervisor};

type Tx = mpsc::UnboundedSender<Reply>;

/// How long a watcher lets changes gather before it looks again.
const SETTLE: Duration = Duration::from_millis(150);
type Result<T, E = DaemonError> = std::result::Result<T, E>;

/// Host-wide settings (`<state>/settings.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    /// Bring the stack up at boot (through the systemd unit) on this network.
    #[serde(default)]
    pub autostart: Option<AutostartSettings>,
    /// The greeter's "Isolate via virtualization" (see [`crate::boot`]).
    #[serde(default)]
    pub isolate: Option<bool>,
}

/// The saved isolate choice's copy in the unlocked persistent store.
const ISOLATE_IN_STORE: &str = "isolate.json";

#[derive(Debug, Serialize, Deserialize)]
struct IsolateCopy {
    isolate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutostartSettings {
    pub network: Network,
    pub bridges: Vec<String>,
}

pub struct Handlers {
    sup: Arc<Supervisor>,
    quit: watch::Sender<bool>,
}

const CLIENT_AUTH_OFF: &str = "client authorization is off: anyone who learns the address can reach the service, and a hosted onion service whose address leaks is far easier to locate than a client";

impl Handlers {
    pub fn new(sup: Arc<Supervisor>) -> Handlers {
        Handlers {
            sup,
            quit: watch::channel(false).0,
        }
    }

    pub fn quit_signal(&self) -> watch::Receiver<bool> {
        self.quit.subscribe()
    }

    /// Nothing runs and the persistent store is locked: the daemon may go.
    pub fn idle(&self) -> bool {
        self.sup.idle() && !self.sup.paths().vault().is_unlocked()
    }

    /// The persistent store. Its operations take seconds (key derivation):
    /// they run on a blocking thread; the passphrases are zeroized when the
    /// request is dropped.
    async fn persistence(&self, a: crate::api::PersistenceAction) -> Result<Reply> {
        use crate::api::PersistenceAction as P;
        let vault = self.sup.paths().vault();
        if let P::Status = a {
            return Ok(Reply::Persistence(self.persistence_report()));
        }
        if matches!(a, P::Lock) && self.sup.desired().stack.is_some() {
            // The VMs' disks and the services' keys are in it.
            return Err(DaemonError::StoreInUse);
        }
        let v = vault.clone();
        let done = tokio::task::spawn_blocking(move || -> std::result::Result<String, tails_vault::VaultError> {
            match a {
                P::Create { passphrase, size_mib } => {
                    v.create(passphrase.0.as_bytes(), size_mib)?;
                    Ok(format!(
                        "the persistent store is made ({size_mib} MiB, {}), locked: `tails-server persistence unlock` opens it",
                        v.file.display()
                    ))
                }
                P::Unlock { passphrase } => {
                    v.unlock(passphrase.0.as_bytes())?;
                    Ok(format!(
                        "the persistent store is unlocked (mounted on the host at {})",
                        v.mountpoint.display()
                    ))
                }
                P::Lock => {
                    v.lock()?;
                    Ok("the persistent store is locked".into())
                }
                P::ChangePassphrase { old, new } => {
                    v.change_passphrase(old.0.as_bytes(), new.0.as_bytes())?;
                    Ok("the passphrase is changed: only the new one opens the store".into())
                }
                P::Status => Ok(String::new()),
            }
        })
        .await;
        // Whatever happened, the store knows where the services' state is now.
        self.sup
            .store
            .lock()
            .await
            .set_persistent(crate::store::Persistent::of(&self.sup.paths().vault()));
        let done = done??;
        crate::log(done.clone());
        Ok(Reply::Done(done))
    }

    fn persistence_report(&self) -> crate::api::PersistenceReport {
        let v = self.sup.paths().vault();
        crate::api::PersistenceReport {
            exists: v.exists(),
            unlocked: v.is_unlocked(),
            file: v.file.display().to_string(),
            mountpoint: v.mountpoint.display().to_string(),
        }
    }

    /// Everything a client shows (see [`crate::api::Snapshot`]).
    async fn snapshot(&self) -> crate::api::Snapshot {
        crate::api::Snapshot {
            status: self.status_report().await,
            catalog: self.catalog_summaries(),
            persistence: self.persistence_report(),
        }
    }

    /// A `Watch`: the state now, then again at every change (looked at
    /// once the changes pause for [`SETTLE`]), with the steps and tor's
    /// bootstrap of what others asked; until the client goes or the
    /// daemon stops.
    async fn watch(&self, tx: &Tx) -> Result<Reply> {
        let mut changes = self.sup.subscribe_changes();
        let mut steps = self.sup.subscribe_progress();
        let mut tor = self.sup.subscribe_tor();
        let mut quit = self.quit.subscribe();
        let mut shown = String::new();
        // The state is looked at again only when it may have changed (a
        // snapshot asks the VMs and nft): steps and tor's bootstrap are
        // passed on as they come.
        let mut dirty = true;
        loop {
            if dirty {
                let snap = self.snapshot().await;
                // Uptimes move every second: not a change worth a message.
                let mut key = snap.clone();
                if let Some(st) = key.status.stack.as_mut() {
                    for vm in &mut st.vms {
                        vm.uptime_secs = None;
                    }
                }
                let key = serde_json::to_string(&key).unwrap_or_default();
                if key != shown {
                    if tx.send(Reply::Event(Box::new(snap))).is_err() {
                        break;
                    }
                    shown = key;
                }
                dirty = false;
            }
            let sent = tokio::select! {
                _ = quit.changed() => break,
                _ = tx.closed() => break,
                r = changes.changed() => {
                    // Let a burst of changes gather into one look.
                    tokio::time::sleep(SETTLE).await;
                    changes.borrow_and_update();
                    dirty = true;
                    r.is_ok()
                }
                m = steps.recv() => match m {
                    Ok(m) => tx.send(Reply::Progress(m)).is_ok(),
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                p = tor.recv() => match p {
                    Ok(p) => tx.send(Reply::Tor(p)).is_ok(),
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => false,
                },
            };
            if !sent {
                break;
            }
        }
        Ok(Reply::Done("the daemon is stopping".into()))
    }

    pub async fn handle(&self, req: Request, tx: Tx) {
        let changes = !matches!(
            req,
            Request::Status
                | Request::List
                | Request::Exec { .. }
                | Request::Watch
                | Request::Persistence(crate::api::PersistenceAction::Status)
                | Request::Service {
                    action: ServiceAction::Info
                        | ServiceAction::State
                        | ServiceAction::GetOption { .. }
                        | ServiceAction::Credentials { .. }
                        | ServiceAction::ExportKey,
                    ..
                }
        );
        let reply = match req {
            Request::Up { network, bridges } => self.up(network, bridges, &tx).await,
            Request::Down => self.down().await,
            Request::Status => self.status().await,
            Request::Exec {
                vm,
                argv,
                timeout_secs,
                stdin,
            } => self.exec(vm, argv, timeout_secs, stdin).await,
            Request::List => Ok(self.list()),
            Request::Service { service, action } => self.service(&service, action).await,
            Request::Autostart {
                on,
                network,
                bridges,
            } => self.autostart(on, network, bridges).await,
            Request::Persistence(a) => self.persistence(a).await,
            Request::Watch => self.watch(&tx).await,
            Request::Isolate { set, start } => self.isolate(set, start, &tx).await,
        };
        if changes {
            self.sup.changed();
        }
        let _ = tx.send(reply.unwrap_or_else(|e| Reply::Error(e.to_api())));
    }

    async fn up(&self, network: Network, bridges: Vec<String>, tx: &Tx) -> Result<Reply> {
        if network == Network::None && !bridges.is_empty() {
            return Err(DaemonError::BridgesNeedUplink);
        }
        if let Some(w) = self.sup.desired().stack {
            if w.network != network {
                return Err(DaemonError::OtherNetwork(w.network));
            }
            if self.sup.stack().is_some() {
                let found = self
                    .sup
                    .report()
                    .found_at_start
                    .map(|f| format!("; at its start this daemon found that {f}"))
                    .unwrap_or_default();
                return Ok(Reply::Done(format!(
                    "tails-server is already up (network {network}; see `tails-server status`){found}"
                )));
            }
        }
        let autostart = autostart_names(&self.sup).await;
        let mut progress = self.sup.subscribe_progress();
        let gen = self.sup.want(|d| {
            if d.stack.is_none() {
                d.stack = Some(StackWant {
                    network,
                    bridges,
                    confirmed: false,
                });
            }
            for name in &autostart {
                d.services.entry(name.clone()).or_insert(Phase::Enabled);
            }
        })?;
        let settle = self.sup.settle(gen);
        tokio::pin!(settle);
        let round = loop {
            tokio::select! {
                r = &mut settle => break r,
                m = progress.recv() => if let Ok(m) = m {
                    let _ = tx.send(Reply::Progress(m));
                },
            }
        };
        // The last steps, sent just before the round ended.
        while let Ok(m) = progress.try_recv() {
            let _ = tx.send(Reply::Progress(m));
        }
        round.stack.clone().map_err(ApiFailure)?;
        for (name, r) in &round.services {
            if let Err(e) = r {
                let _ = tx.send(Reply::Progress(format!("{name} (autostart): {e}")));
            }
        }
        let Some(stack) = self.sup.stack() else {
            return Err(DaemonError::Busy);
        };
        if network == Network::None {
            return Ok(Reply::Done(
                "tails-server is up: both VMs are ready (no uplink, tor not started)".into(),
            ));
        }
        Ok(wait_bootstrap(&self.sup, &stack, network, tx).await)
    }

    async fn down(&self) -> Result<Reply> {
        let gen = self.sup.want(|d| *d = Default::default())?;
        let round = self.sup.settle(gen).await;
        // `down` locks the persistent store: only the passphrase opens it again.
        let vault = self.sup.paths().vault();
        let locked = if vault.is_unlocked() {
            tokio::task::spawn_blocking(move || vault.lock()).await?
        } else {
            Ok(())
        };
        self.sup
            .store
            .lock()
            .await
            .set_persistent(crate::store::Persistent::of(&self.sup.paths().vault()));
        let _ = self.quit.send(true);
        round.stack.clone().map_err(ApiFailure)?;
        // Said, not only logged: a person must not believe the store is closed.
        locked.map_err(DaemonError::StoreStillUnlocked)?;
        Ok(Reply::Done("tails-server is down".into()))
    }

    async fn status(&self) -> Result<Reply> {
        Ok(Reply::Status(Box::new(self.status_report().await)))
    }

    async fn status_report(&self) -> StatusReport {
        let desired = self.sup.desired();
        let stack = match self.sup.stack() {
            Some(s) => {
                let mut vms = s.status().await;
                for vm in &mut vms {
                    vm.restarts = self.sup.restarts(vm.name);
                }
                Some(StackReport {
                    accel: s.accel.name().into(),
                    backend: s.backend.into(),
                    network: s.network(),
                    vsock: s.vsock_state(),
                    path_out: s.path_out(),
                    vms,
                })
            }
            None => None,
        };
        let services = desired
            .services
            .keys()
            .map(|n| self.service_report(n, None))
            .collect();
        StatusReport {
            daemon_pid: std::process::id(),
            desired: DesiredReport {
                up: desired.stack.is_some(),
                network: desired.stack.as_ref().map(|w| w.network),
                bridges: desired.stack.as_ref().map_or(0, |w| w.bridges.len()),
                services: desired.services.keys().cloned().collect(),
            },
            stack,
            supervisor: self.sup.report(),
            host_firewall: crate::firewall::status(&crate::firewall::nft()),
            services,
        }
    }

    /// The stack, or why requests to it cannot be served now.
    fn running_stack(&self) -> Result<Arc<crate::stack::Stack>> {
        match (self.sup.stack(), self.sup.desired().stack) {
            (Some(s), _) => Ok(s),
            (None, Some(_)) => Err(DaemonError::Busy),
            (None, None) => Err(DaemonError::NotUp),
        }
    }

    async fn exec(
        &self,
        vm: crate::api::Role,
        argv: Vec<String>,
        timeout_secs: u64,
        stdin: Vec<u8>,
    ) -> Result<Reply> {
        let stack = self.running_stack()?;
        let out = stack
            .exec(
                vm,
                argv,
                Duration::from_secs(timeout_secs.clamp(1, 3600)),
                stdin,
            )
            .await?;
        Ok(Reply::Exec(out))
    }

    fn list(&self) -> Reply {
        Reply::List(self.catalog_summaries())
    }

    fn catalog_summaries(&self) -> Vec<ServiceSummary> {
        let desired = self.sup.desired();
        self.sup
            .catalog()
            .iter()
            .map(|s| ServiceSummary {
                name: s.name().to_owned(),
                description: s.description().to_owned(),
                icon_name: s.icon_name().to_owned(),
                enabled: desired.services.contains_key(s.name()),
            })
            .collect()
    }

    fn service_report(&self, name: &str, st: Option<&ServiceState>) -> ServiceReport {
        let live = self.sup.live(name);
        ServiceReport {
            name: name.to_owned(),
            enabled: self.sup.desired().services.contains_key(name),
            running: live.running,
            published: live.published,
            published_clients: live.clients,
            address: st.and_then(|s| s.address()).map(|a| a.to_string()),
            error: live.error,
        }
    }

    fn enabled(&self, name: &str) -> bool {
        self.sup.desired().services.contains_key(name)
    }

    /// Apply a saved change to an enabled service now; `None` if it is not
    /// enabled (the change applies at its next enable).
    async fn apply_now(&self, name: &str) -> Result<Option<()>> {
        if !self.enabled(name) {
            return Ok(None);
        }
        let gen = self.sup.poke();
        let round = self.sup.settle(gen).await;
        match round.services.get(name) {
            Some(Err(e)) => Err(ApiFailure(e.clone()).into()),
            _ => Ok(Some(())),
        }
    }

    async fn service(&self, name: &str, action: ServiceAction) -> Result<Reply> {
        let svc = self
            .sup
            .catalog()
            .get(name)
            .cloned()
            .ok_or_else(|| DaemonError::UnknownService(name.to_owned()))?;
        match action {
            ServiceAction::Info => self.info(&svc).await,
            ServiceAction::State => {
                let st = self.load(&svc).await?;
                Ok(Reply::Service(self.service_report(name, Some(&st))))
            }
            ServiceAction::Enable => self.enable(&svc).await,
            ServiceAction::Disable => self.disable(&svc).await,
            ServiceAction::GetOption { option } => {
                let st = self.load(&svc).await?;
                let v = st.values.get(&option).ok_or_else(|| {
                    services::ServiceError::from(tails_catalog::OptionError::Unknown {
                        service: name.to_owned(),
                        option: option.clone(),
                        known: svc.options().iter().map(|o| o.name().to_owned()).collect(),
                    })
                })?;
                Ok(Reply::Value(v.reveal().to_string()))
            }
            ServiceAction::SetOption { option, value, yes } => {
                self.set_option(&svc, &option, &value, yes).await
            }
            ServiceAction::AddClient {
                name: client,
                public_key,
            } => self.add_client(&svc, &client, public_key.as_deref()).await,
            ServiceAction::RemoveClient { name: client } => self.remove_client(&svc, &client).await,
            ServiceAction::Credentials { client } => {
                let st = self.load(&svc).await?;
                Ok(Reply::Credentials(Box::new(credentials(
                    &svc,
                    &st,
                    client.as_deref(),
                    None,
                )?)))
            }
            ServiceAction::ImportKey { file, replace } => {
                self.import_key(&svc, &file, replace).await
            }
            ServiceAction::ExportKey => {
                let st = self.load(&svc).await?;
                let key = st.key.as_ref().ok_or(services::ServiceError::NoAddress {
                    service: name.to_owned(),
                })?;
                Ok(Reply::KeyFile(key.to_tor_secret_key_file().to_vec()))
            }
        }
    }

    async fn load(&self, svc: &Service) -> Result<ServiceState> {
        let store = self.sup.store.lock().await;
        Ok(services::load(&store, svc)?)
    }

    /// Load, change and save `svc`'s state under the store's lock.
    async fn change<T>(
        &self,
        svc: &Service,
        f: impl FnOnce(&mut ServiceState) -> Result<T>,
    ) -> Result<(T, ServiceState)> {
        let store = self.sup.store.lock().await;
        let mut st = services::load(&store, svc)?;
        let out = f(&mut st)?;
        services::save(&store, svc, &st)?;
        Ok((out, st))
    }

    async fn info(&self, svc: &Service) -> Result<Reply> {
        let st = self.load(svc).await?;
        let options = svc
            .options()
            .iter()
            .filter_map(|o| {
                let v = st.values.get(o.name())?;
                let json = match v {
                    OptionValue::Bool(b) => serde_json::json!(b),
                    OptionValue::Int(i) => serde_json::json!(i),
                    OptionValue::Port(p) => serde_json::json!(p),
                    _ => serde_json::json!(v.to_string()),
                };
                Some(OptionReport {
                    name: o.name().to_owned(),
                    description: o.description().to_owned(),
                    kind: o.kind().name().to_owned(),
                    value: v.to_string(),
                    json,
                    choices: match o.kind() {
                        OptionKind::Enum { values } => values.clone(),
                        _ => Vec::new(),
                    },
                    range: match o.kind() {
                        OptionKind::Int { min, max } => Some((*min, *max)),
                        OptionKind::Port => Some((1, 65535)),
                        _ => None,
                    },
                    length: match o.kind() {
                        OptionKind::Secret { length } => Some(*length),
                        _ => None,
                    },
                })
            })
            .collect();
        Ok(Reply::Info(Box::new(ServiceInfo {
            name: svc.name().to_owned(),
            description: svc.description().to_owned(),
            client_application: svc.client_application().to_owned(),
            documentation: svc.documentation().to_owned(),
            icon_name: svc.icon_name().to_owned(),
            packages: svc.packages().to_vec(),
            state: self.service_report(svc.name(), Some(&st)),
            local_port: svc.default_target_port(),
            remote_port: services::virtual_port(svc, &st.values),
            persistent_paths: svc
                .persistent_paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            options,
            clients: st
                .clients
                .iter()
                .map(|(n, c)| ClientReport {
                    name: n.clone(),
                    host_holds_key: matches!(c, Client::Held(_)),
                })
                .collect(),
            client_auth: st.client_auth_on(),
        })))
    }

    /// A persistent service needs the App VM's data disk: refused when the
    /// running stack was started without it.
    fn needs_data_disk(&self, name: &str) -> Result<()> {
        match self.sup.stack() {
            Some(s) if s.disks.appvm.is_none() => Err(DaemonError::NoDataDisk(name.to_owned())),
            _ => Ok(()),
        }
    }

    async fn enable(&self, svc: &Service) -> Result<Reply> {
        let name = svc.name();
        self.running_stack()?;
        let port = svc.default_target_port();
        let taken = self.sup.desired().services.keys().find_map(|other| {
            let o = self.sup.catalog().get(other)?;
            (other != name && o.default_target_port() == port).then(|| other.clone())
        });
        if let Some(other) = taken {
            return Err(DaemonError::PortTaken {
                service: name.to_owned(),
                port,
                other,
            });
        }
        let ((), st) = self
            .change(svc, |st| {
                // Checked before anything is made or saved.
                if services::persistence_on(&st.values) {
                    self.needs_data_disk(name)?;
                }
                st.ensure_key()?;
                st.ensure_first_client(name)?;
                Ok(())
            })
            .await?;
        crate::log(format!(
            "enabling {name}: starting it in the App VM and publishing its onion service"
        ));
        let gen = self.sup.want(|d| {
            d.services.entry(name.to_owned()).or_insert(Phase::Enabling);
        })?;
        let round = self.sup.settle(gen).await;
        round.stack.clone().map_err(ApiFailure)?;
        if let Some(Err(e)) = round.services.get(name) {
            return Err(ApiFailure(e.clone()).into());
        }
        let address = st.address().map(|a| a.to_string()).unwrap_or_default();
        let done = format!("{name} is enabled and published at {address}");
        Ok(Reply::Credentials(Box::new(credentials(
            svc,
            &st,
            None,
            Some(done),
        )?)))
    }

    async fn disable(&self, svc: &Service) -> Result<Reply> {
        let name = svc.name();
        if !self.enabled(name) {
            return Ok(Reply::Done(format!("{name} is not enabled")));
        }
        let gen = self.sup.want(|d| {
            d.services.remove(name);
        })?;
        self.sup.settle(gen).await;
        Ok(Reply::Done(format!("{name} is disabled")))
    }

    async fn set_option(
        &self,
        svc: &Service,
        option: &str,
        value: &str,
        yes: bool,
    ) -> Result<Reply> {
        let name = svc.name();
        let parsed = svc
            .parse_option(option, value)
            .map_err(services::ServiceError::from)?;
        if option == tails_catalog::PERSISTENCE_OPTION {
            match parsed {
                OptionValue::Bool(false) if !yes => {
                    let kept = matches!(
                        self.sup.store.lock().await.locate(name),
                        Some(crate::store::Location::Persistent(_))
                    );
                    if kept {
                        return Err(DaemonError::ConfirmAmnesic(name.to_owned()));
                    }
                }
                OptionValue::Bool(true) => self.needs_data_disk(name)?,
                _ => {}
            }
        }
        let off = matches!(parsed, OptionValue::Bool(false))
            && option == tails_catalog::CLIENT_AUTH_OPTION;
        self.change(svc, |st| {
            st.values.insert(option.to_owned(), parsed);
            // Client authorization turned on for a service that never had
            // a client: it gets its first one, as on a first enable (an
            // empty list would publish it open).
            if st.key.is_some() {
                st.ensure_first_client(name)?;
            }
            Ok(())
        })
        .await?;
        let mut msg = Vec::new();
        if off {
            msg.push(format!("WARNING: {CLIENT_AUTH_OFF}. Turn it back on with `tails-server {name} set-option client-auth true`."));
        }
        msg.push(match self.apply_now(name).await? {
            Some(()) => format!("{name}: {option} set and applied"),
            None => format!("{name}: {option} set"),
        });
        Ok(Reply::Done(msg.join("\n")))
    }

    async fn add_client(
        &self,
        svc: &Service,
        client: &str,
        public_key: Option<&str>,
    ) -> Result<Reply> {
        let name = svc.name();
        let ((), st) = self
            .change(svc, |st| {
                st.add_client(name, client, public_key)?;
                st.ensure_key()?;
                Ok(())
            })
            .await?;
        let applied = self.apply_now(name).await?;
        let done = format!(
            "client {client} added{}",
            if applied.is_some() {
                " and authorized on the running service"
            } else {
                ""
            }
        );
        if public_key.is_some() {
            return Ok(Reply::Done(format!(
                "{done} (its private key stays with its owner)"
            )));
        }
        Ok(Reply::Credentials(Box::new(credentials(
            svc,
            &st,
            Some(client),
            Some(done),
        )?)))
    }

    async fn remove_client(&self, svc: &Service, client: &str) -> Result<Reply> {
        let name = svc.name();
        self.change(svc, |st| Ok(st.remove_client(name, client)?))
            .await?;
        let applied = self.apply_now(name).await?;
        Ok(Reply::Done(format!(
            "client {client} revoked{}",
            if applied.is_some() {
                " on the running service"
            } else {
                ""
            }
        )))
    }

    async fn import_key(&self, svc: &Service, file: &[u8], replace: bool) -> Result<Reply> {
        let name = svc.name();
        let key = tails_onion::ServiceKey::from_tor_secret_key_file(file)
            .map_err(services::ServiceError::KeyFile)?;
        let address = key.onion_address();
        if self.enabled(name) {
            return Err(DaemonError::EnabledKeyImport(name.to_owned()));
        }
        self.change(svc, |st| {
            if let Some(old) = st.address() {
                if old != address && !replace {
                    return Err(DaemonError::KeyExists {
                        service: name.to_owned(),
                        address: old.to_string(),
                    });
                }
            }
            st.key = Some(key);
            Ok(())
        })
        .await?;
        Ok(Reply::Done(format!("{name} now has the address {address}")))
    }

    /// The greeter's switch: saved in the settings and, when it is
    /// unlocked, in the persistent store too (an amnesic host, like Tails,
    /// finds it there after the next unlock).
    async fn isolate(&self, set: Option<bool>, start: bool, tx: &Tx) -> Result<Reply> {
        let vault = self.sup.paths().vault();
        let copy = vault.mountpoint.join(ISOLATE_IN_STORE);
        let unlocked = vault.is_unlocked();
        let settings = {
            let store = self.sup.store.lock().await;
            let mut s: Settings = store.read_settings()?;
            match set {
                Some(on) => {
                    s.isolate = Some(on);
                    store.write_settings(&s)?;
                    if unlocked {
                        crate::store::write_json(&copy, &IsolateCopy { isolate: on })?;
                    }
                }
                None if s.isolate.is_none() && unlocked => {
                    if let Ok(Some(c)) = crate::store::read_json::<IsolateCopy>(&copy) {
                        s.isolate = Some(c.isolate);
                        store.write_settings(&s)?;
                    }
                }
                None => {}
            }
            s
        };
        let (cmdline, file) = crate::boot::host_says(&self.sup.paths().isolate_file());
        let choice = crate::boot::decide(
            cmdline,
            file,
            settings.isolate,
            settings.autostart.is_some(),
        );
        let in_store = unlocked
            && crate::store::read_json::<IsolateCopy>(&copy)
                .ok()
                .flatten()
                .is_some_and(|c| Some(c.isolate) == settings.isolate);
        let done = if start && choice.on {
            let (network, bridges) = settings
                .autostart
                .map(|a| (a.network, a.bridges))
                .unwrap_or((Network::Public, Vec::new()));
            match self.up(network, bridges, tx).await? {
                Reply::Done(m) => Some(m),
                Reply::Error(e) => return Err(ApiFailure(e).into()),
                _ => None,
            }
        } else {
            None
        };
        Ok(Reply::Isolate(crate::api::IsolateReport {
            on: choice.on,
            decided_by: choice.source.words().to_owned(),
            saved: settings.isolate,
            in_store,
            done,
        }))
    }

    async fn autostart(&self, on: bool, network: Network, bridges: Vec<String>) -> Result<Reply> {
        if network == Network::None && !bridges.is_empty() {
            return Err(DaemonError::BridgesNeedUplink);
        }
        crate::systemd::set_enabled(on)?;
        let store = self.sup.store.lock().await;
        let mut s: Settings = store.read_settings()?;
        s.autostart = on.then_some(AutostartSettings { network, bridges });
        store.write_settings(&s)?;
        Ok(Reply::Done(if on {
            format!("at boot, {} brings the stack up on the {network} network with the services whose autostart option is on", crate::systemd::UNIT)
        } else {
            format!(
                "{} is disabled: nothing of Tails Server starts at boot",
                crate::systemd::UNIT
            )
        }))
    }
}

/// The services whose `autostart` option is on (their state readable).
async fn autostart_names(sup: &Supervisor) -> Vec<String> {
    let store = sup.store.lock().await;
    sup.catalog()
        .iter()
        .filter(|svc| {
            store.locate(svc.name()).is_some()
                && services::load(&store, svc).is_ok_and(|st| services::autostart_on(&st.values))
        })
        .map(|svc| svc.name().to_owned())
        .collect()
}

/// At boot: mark the services whose autostart option is on as enabled.
pub async fn enable_autostart_services(sup: &Supervisor) {
    let names = autostart_names(sup).await;
    if let Err(e) = sup.want(|d| {
        for n in names {
            d.services.entry(n).or_insert(Phase::Enabled);
        }
    }) {
        crate::log(format!("cannot record the autostart services: {e}"));
    }
}

/// A reply error carried through as it was given.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiFailure(pub crate::api::ApiError);

impl From<ApiFailure> for DaemonError {
    fn from(e: ApiFailure) -> Self {
        DaemonError::Reported(e.0)
    }
}

/// The credentials of one client, as a person passes them on.
fn credentials(
    svc: &Service,
    st: &ServiceState,
    client: Option<&str>,
    done: Option<String>,
) -> Result<Credentials> {
    let name = svc.name();
    let address = st.address().ok_or(services::ServiceError::NoAddress {
        service: name.to_owned(),
    })?;
    let addr = address.to_string();
    let info = svc
        .render_connection_info(
            &st.values,
            &tails_catalog::Builtins {
                address: &addr,
                target_port: svc.default_target_port(),
            },
        )
        .map_err(|source| services::ServiceError::Render {
            service: name.to_owned(),
            source,
        })?;
    let mut c = Credentials {
        service: name.to_owned(),
        address: addr,
        connection_info: info,
        client_auth: st.client_auth_on(),
        client: None,
        auth_private: None,
        warnings: Vec::new(),
        done,
    };
    if !st.client_auth_on() {
        c.warnings.push(format!("WARNING: {CLIENT_AUTH_OFF}."));
        return Ok(c);
    }
    let who = match client {
        Some(n) => n.to_owned(),
        None if st.clients.len() == 1 => st.clients.keys().next().cloned().unwrap_or_default(),
        None => services::FIRST_CLIENT.to_owned(),
    };
    // The answer to `enable` (or another change) does not fail for want of a key
    // line to show: the change is made; it says whose key is not here.
    let changed = c.done.is_some();
    match st.clients.get(&who) {
        Some(Client::Held(k)) => {
            c.auth_private = Some(k.auth_private_line(&address).to_string());
        }
        Some(Client::PublicOnly(_)) if changed => {
            c.warnings.push(format!(
                "{who} holds its own private key: give it the address; `tails-server {name} add-client NAME` makes a key line to pass on"
            ));
        }
        None if changed => {
            c.warnings.push(format!(
                "no key line to show: `tails-server {name} credentials CLIENT` shows one of {}",
                st.clients.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            return Ok(c);
        }
        Some(Client::PublicOnly(_)) => {
            return Err(services::ServiceError::PublicOnly {
                service: name.to_owned(),
                client: who,
            }
            .into())
        }
        None => {
            return Err(services::ServiceError::NoCredentials {
                service: name.to_owned(),
                client: who,
            }
            .into())
        }
    }
    c.client = Some(who);
    Ok(c)
}

/// Follow tor's bootstrap until 100 %, streaming it to the client. Past the
/// deadline the stack stays up (tor keeps trying) and the client is told so.
async fn wait_bootstrap(
    sup: &Supervisor,
    stack: &crate::stack::Stack,
    network: Network,
    tx: &Tx,
) -> Reply {
    let limit = match network {
        Network::Local => Duration::from_secs(180),
        _ => Duration::from_secs(540),
    };
    let start = Instant::now();
    let mut last = None;
    loop {
        match stack.tor_progress().await {
            Ok(p) if p.progress >= 100 => {
                crate::log("tor bootstrapped");
                sup.tor_seen(&p);
                let _ = tx.send(Reply::Tor(p));
                return Reply::Done(format!(
                    "tails-server is up: both VMs are ready and tor is bootstrapped on the {network} network"
                ));
            }
            Ok(p) if !p.running => {
                return Reply::Error(crate::api::ApiError {
                    kind: ErrorKind::Stack,
                    message: format!("tor is not running in the Tor VM: {}", p.summary),
                });
            }
            Ok(p) => {
                if last.as_ref() != Some(&p) {
                    crate::log(format!("tor bootstrap {}%: {}", p.progress, p.summary));
                    sup.tor_seen(&p);
                    let _ = tx.send(Reply::Tor(p.clone()));
                    last = Some(p);
                }
            }
            Err(e) => crate::log(format!("tor status: {e}")),
        }
        if start.elapsed() > limit {
            let at = last
                .map(|p| format!("{}%: {}", p.progress, p.summary))
                .unwrap_or_else(|| "no progress".into());
            return Reply::Error(crate::api::ApiError {
                kind: ErrorKind::Stack,
                message: format!(
                    "tor has not bootstrapped after {} s ({at}); the VMs stay up and tor keeps trying: watch `tails-server status`, or stop with `tails-server down`",
                    limit.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
