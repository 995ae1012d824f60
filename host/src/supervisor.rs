//! The supervisor: what should run, and making it so.
//!
//! The daemon records the desired state — the stack up on a network (or
//! down) and the enabled services — in `<runtime>/desired.json`, so that a
//! daemon started after one that died finds it. One task, the reconciler
//! ([`Supervisor::run`]), is the only one that changes the stack: each round
//! it compares what runs with what is asked and does the difference:
//!
//! 1. the stack: started if it should run and does not; if a part of it died
//!    (a QEMU, vhost-device-vsock), what is left is stopped and the stack
//!    started again, with bounded retries and backoff, the host table staying
//!    loaded throughout (fail closed);
//! 2. each enabled service: its [`Plan`](crate::services::Plan) (config,
//!    command, onion ports, clients) is compared with what was applied; the
//!    service is restarted in the App VM if its config changed, and its onion
//!    service published again (same key, same address) if its ports or
//!    clients changed; services no longer enabled are taken down.
//!
//! Requests change the desired state or the store, then wait for the first
//! round that started after their change ([`Supervisor::settle`]), so many
//! changes that arrive together are applied in one round, and none is lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tails_catalog::Catalog;
use tails_proto::msg::{HostMsg, TorConfig, TorNetwork, TorProgress};
use tokio::sync::{broadcast, watch, Notify};

use crate::api::{ApiError, ErrorKind, Incident, Network, SupervisorReport};
use crate::error::DaemonError;
use crate::paths::{find_program, Paths};
use crate::services::{self, Plan, RelayWant};
use crate::stack::{Part, Stack, StackError, UpError};
use crate::store::Store;
use crate::vmm::qemu::Qemu;
use tails_proto::Role;

/// Restarts of a stack that came up before, then the supervisor gives up
/// (until the next request).
pub const MAX_RESTARTS: u32 = 5;
/// A stack that ran this long without dying gets its restart budget back.
const HEALTHY: Duration = Duration::from_secs(600);
/// How often the reconciler looks at the stack when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);

/// How the stack should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackWant {
    pub network: Network,
    pub bridges: Vec<String>,
    /// It came up at least once. Until then a failure to start it undoes
    /// the request (`up` failed); after, the supervisor brings it back.
    pub confirmed: bool,
}

/// An enabled service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Asked, never published yet: a failure undoes the request.
    Enabling,
    /// Published once: a failure is retried.
    Enabled,
}

/// The desired state (`<runtime>/desired.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Desired {
    pub stack: Option<StackWant>,
    pub services: BTreeMap<String, Phase>,
}

/// What one round achieved, for the requests waiting on it.
#[derive(Debug, Clone)]
pub struct Round {
    /// The request counter when the round started: every change counted
    /// up to it was seen.
    pub gen: u64,
    pub stack: Result<(), ApiError>,
    pub services: BTreeMap<String, Result<(), ApiError>>,
}

/// What runs of one service (kept in `<runtime>/live.json`, so that a
/// daemon taking over a running stack knows what it runs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Live {
    start_id: Option<[u8; 32]>,
    publish_id: Option<[u8; 32]>,
    /// Service id of the published onion service.
    published: Option<String>,
    /// Clients authorized in what was published (their public keys).
    clients: Vec<String>,
    running: bool,
    error: Option<String>,
    /// Do not retry before this (after an error).
    #[serde(skip)]
    retry_at: Option<Instant>,
    failures: u32,
}

/// What runs of one service, as requests see it.
#[derive(Debug, Clone, Default)]
pub struct LiveReport {
    pub running: bool,
    pub published: bool,
    /// Clients authorized in the published onion service.
    pub clients: Option<usize>,
    pub error: Option<String>,
}

/// Restart bookkeeping.
#[derive(Debug, Default)]
struct Restarts {
    /// Restarts since the stack was last healthy for [`HEALTHY`].
    attempts: u32,
    /// Times each VM was started again, since this daemon started (a
    /// whole-stack restart counts for both).
    per_vm: [u32; 2],
    next_at: Option<Instant>,
    last_start: Option<Instant>,
}

#[derive(Debug, Default)]
struct Record {
    incidents: VecDeque<Incident>,
    last_error: Option<String>,
    found_at_start: Option<String>,
}

pub struct Supervisor {
    paths: Paths,
    catalog: Catalog,
    /// The one writer of the kept state: every load-change-save holds it.
    pub store: tokio::sync::Mutex<Store>,
    desired: Mutex<Desired>,
    stack: Mutex<Option<Arc<Stack>>>,
    live: Mutex<BTreeMap<String, Live>>,
    /// Shared with the host firewall's watchdog, which reports here.
    record: Arc<Mutex<Record>>,
    restarts: Mutex<Restarts>,
    requested: AtomicU64,
    wake: Notify,
    /// The last rounds that saw new requests, oldest first (a waiter takes
    /// the first that saw its request: a later one may say otherwise, e.g.
    /// after a failed `up` was undone).
    rounds: Mutex<VecDeque<Arc<Round>>>,
    /// The request number of the last round kept, to wake waiters.
    round_seen: watch::Sender<u64>,
    progress: broadcast::Sender<String>,
    /// Bumped when anything a client shows may have changed (what is asked,
    /// what runs, what went wrong, the store): watchers then look again.
    changes: watch::Sender<u64>,
    /// Tor's bootstrap as an `up` sees it, for watchers.
    tor: broadcast::Sender<TorProgress>,
    started: SystemTime,
    /// A dead daemon's host table was kept at start (fail closed while the
    /// stack was to come back): remove it if the stack is not to run.
    orphan_table: Mutex<bool>,
    /// The host's listeners of services with allow-localhost or allow-lan.
    relays: tokio::sync::Mutex<BTreeMap<String, ServiceRelays>>,
}

/// The relays of one service.
struct ServiceRelays {
    want: RelayWant,
    relays: Vec<crate::relay::Relay>,
}

fn record_incident(record: &Mutex<Record>, what: String) {
    crate::log(&what);
    let mut r = lock(record);
    if r.incidents.len() >= 50 {
        r.incidents.pop_front();
    }
    r.incidents.push_back(Incident {
        at: now_secs(),
        what,
    });
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these small locks leaves consistent
    // data (each is changed in one assignment): keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn vm_index(role: Role) -> usize {
    match role {
        Role::Torvm => 0,
        Role::Appvm => 1,
    }
}

/// Read the desired state a previous daemon left; the default if none.
pub fn read_desired(paths: &Paths) -> Result<Desired, crate::store::StoreError> {
    Ok(crate::store::read_json(&paths.desired_file())?.unwrap_or_default())
}

impl Supervisor {
    pub fn new(paths: Paths, catalog: Catalog, store: Store, desired: Desired) -> Arc<Self> {
        let (round_seen, _) = watch::channel(0);
        let (progress, _) = broadcast::channel(256);
        let (changes, _) = watch::channel(0);
        let (tor, _) = broadcast::channel(64);
        Arc::new(Supervisor {
            paths,
            catalog,
            store: tokio::sync::Mutex::new(store),
            desired: Mutex::new(desired),
            stack: Mutex::new(None),
            live: Mutex::new(BTreeMap::new()),
            record: Arc::new(Mutex::new(Record::default())),
            restarts: Mutex::new(Restarts::default()),
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            rounds: Mutex::new(VecDeque::new()),
            round_seen,
            progress,
            changes,
            tor,
            started: SystemTime::now(),
            orphan_table: Mutex::new(false),
            relays: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// Make `name`'s relays what `want` says (`None`, or neither scope: no
    /// relay). The host table follows the listeners: it learns a port
    /// before its listener opens and forgets it after it closed, and a stack
    /// started anew under open listeners is given their ports again.
    async fn sync_relays(
        &self,
        stack: &Stack,
        name: &str,
        want: Option<RelayWant>,
    ) -> Result<(), DaemonError> {
        let want = want.filter(RelayWant::any);
        let mut all = self.relays.lock().await;
        if all.get(name).map(|r| r.want) != want {
            if let Some(old) = all.remove(name) {
                for r in old.relays {
                    r.stop().await;
                }
            }
        }
        let others: Vec<RelayWant> = all
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(_, r)| r.want)
            .collect();
        relay_table(stack, others.iter().copied().chain(want))?;
        let Some(w) = want.filter(|_| !all.contains_key(name)) else {
            return Ok(());
        };
        match open_relays(&self.paths.vsock_uds("appvm"), w).await {
            Ok(relays) => {
                crate::log(format!(
                    "{name}: reachable on port {} from {}",
                    w.port,
                    match (w.localhost, w.lan) {
                        (true, true) => "this computer and the local network",
                        (true, false) => "this computer",
                        _ => "the local network",
                    }
                ));
                all.insert(name.to_owned(), ServiceRelays { want: w, relays });
                Ok(())
            }
            Err(e) => {
                if let Err(te) = relay_table(stack, others.into_iter()) {
                    crate::log(format!("{name}: the host table after a failed relay: {te}"));
                }
                Err(DaemonError::Relay(e))
            }
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The running stack, if any.
    pub fn stack(&self) -> Option<Arc<Stack>> {
        lock(&self.stack).clone()
    }

    pub fn desired(&self) -> Desired {
        lock(&self.desired).clone()
    }

    /// Change the desired state (saved at once); returns the request number
    /// to [`settle`](Self::settle) on.
    pub fn want(&self, change: impl FnOnce(&mut Desired)) -> Result<u64, DaemonError> {
        let gen = {
            let mut d = lock(&self.desired);
            let mut next = d.clone();
            change(&mut next);
            crate::store::write_json(&self.paths.desired_file(), &next)?;
            *d = next;
            self.changed();
            // Counted under the same lock a round reads both with: the
            // round that sees this number sees this change.
            self.requested.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.wake.notify_one();
        Ok(gen)
    }

    /// Count a change (made already, in the store) and wake the reconciler.
    pub fn poke(&self) -> u64 {
        let gen = {
            let _d = lock(&self.desired);
            self.requested.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.wake.notify_one();
        gen
    }

    /// Wait for the first round that saw request `gen`.
    pub async fn settle(&self, gen: u64) -> Arc<Round> {
        let mut rx = self.round_seen.subscribe();
        loop {
            if let Some(r) = lock(&self.rounds).iter().find(|r| r.gen >= gen) {
                return r.clone();
            }
            if rx.changed().await.is_err() {
                // The reconciler is gone (the daemon is stopping).
                return Arc::new(Round {
                    gen,
                    stack: Err(ApiError {
                        kind: ErrorKind::Busy,
                        message: "the daemon is stopping; try again".into(),
                    }),
                    services: BTreeMap::new(),
                });
            }
        }
    }

    /// Keep `round` for its waiters if it saw new requests.
    fn finish_round(&self, round: Round) {
        let gen = round.gen;
        {
            let mut rounds = lock(&self.rounds);
            if rounds.back().is_some_and(|r| r.gen >= gen) {
                return;
            }
            if rounds.len() >= 64 {
                rounds.pop_front();
            }
            rounds.push_back(Arc::new(round));
        }
        self.round_seen.send_replace(gen);
    }

    /// Steps of a stack start, as they happen.
    pub fn subscribe_progress(&self) -> broadcast::Receiver<String> {
        self.progress.subscribe()
    }

    /// Say that something a client shows may have changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A count that moves when something a client shows may have changed.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tor's bootstrap, as an `up` saw it.
    pub fn tor_seen(&self, p: &TorProgress) {
        let _ = self.tor.send(p.clone());
    }

    pub fn subscribe_tor(&self) -> broadcast::Receiver<TorProgress> {
        self.tor.subscribe()
    }

    /// Note something that happened (shown by `status`, logged).
    pub fn incident(&self, what: impl Into<String>) {
        record_incident(&self.record, what.into());
    }

    /// Install `stack` as the running one, with its firewall watchdog.
    fn install(&self, stack: Arc<Stack>) {
        let record = self.record.clone();
        stack.watch_firewall(Arc::new(move |what| record_incident(&record, what)));
        *lock(&self.stack) = Some(stack);
    }

    /// The host table was left loaded by a dead daemon (see `orphan_table`).
    pub fn adopt_table(&self) {
        *lock(&self.orphan_table) = true;
    }

    pub fn set_found_at_start(&self, what: String) {
        self.incident(format!("at start: {what}"));
        lock(&self.record).found_at_start = Some(what);
    }

    pub fn report(&self) -> SupervisorReport {
        let r = lock(&self.record);
        SupervisorReport {
            daemon_started: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            found_at_start: r.found_at_start.clone(),
            incidents: r.incidents.iter().cloned().collect(),
            last_error: r.last_error.clone(),
        }
    }

    /// How many times this daemon started `role`'s VM again.
    pub fn restarts(&self, role: Role) -> u32 {
        lock(&self.restarts).per_vm[vm_index(role)]
    }

    /// What runs of `name`.
    pub fn live(&self, name: &str) -> LiveReport {
        let live = lock(&self.live);
        match live.get(name) {
            Some(l) => LiveReport {
                running: l.running,
                published: l.published.is_some(),
                clients: l.published.as_ref().map(|_| l.clients.len()),
                error: l.error.clone(),
            },
            None => LiveReport::default(),
        }
    }

    /// Nothing is asked and nothing runs: the daemon may go.
    pub fn idle(&self) -> bool {
        let d = lock(&self.desired);
        d.stack.is_none() && d.services.is_empty() && lock(&self.stack).is_none()
    }

    /// Take over the stack a daemon that died left running (see
    /// [`Stack::adopt`]); what was taken over, in words.
    pub async fn adopt(&self, file: &crate::stack::StateFile) -> Result<String, DaemonError> {
        let qemu =
            find_program("qemu-system-x86_64").ok_or(DaemonError::Missing("qemu-system-x86_64"))?;
        let images = tails_images::find(&crate::image_inputs(&self.paths))
            .map_err(DaemonError::ImageCache)?
            .ok_or(DaemonError::NoImages)?;
        let stack = Stack::adopt(
            &self.paths,
            file,
            Box::new(Qemu {
                binary: qemu,
                jailer: self.paths.jailer(),
            }),
            &images,
        )?;
        let killed = stack.kill_unresponsive().await;
        let live: BTreeMap<String, Live> = crate::store::read_json(&self.paths.live_file())
            .ok()
            .flatten()
            .unwrap_or_default();
        let services = live
            .iter()
            .filter(|(_, l)| l.published.is_some())
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>();
        *lock(&self.live) = live;
        self.install(Arc::new(stack));
        let mut what = "took over its stack (the VMs ran on)".to_string();
        if !services.is_empty() {
            what.push_str(&format!("; published: {}", services.join(", ")));
        }
        if !killed.is_empty() {
            what.push_str(&format!(
                "; stopped {} (its agent did not answer), to start it again",
                killed
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(what)
    }

    /// Tell watchers when what a round leaves differs from what the last
    /// round left: what runs, the restarts, the errors and incidents.
    fn changed_since(&self, last: &mut Vec<u8>) {
        // Nobody watches: nothing to compare (a watcher's first look is
        // its own).
        if self.changes.receiver_count() == 0 {
            last.clear();
            return;
        }
        let now = {
            let rec = lock(&self.record);
            serde_json::to_vec(&(
                &*lock(&self.live),
                lock(&self.restarts).per_vm,
                lock(&self.stack).is_some(),
                &rec.last_error,
                rec.incidents.back().map(|i| (i.at, &i.what)),
            ))
            .unwrap_or_default()
        };
        if now != *last {
            *last = now;
            self.changed();
        }
    }

    /// Keep `live.json` as what runs is (when it changed).
    fn save_live(&self, last: &mut Vec<u8>) {
        let json = serde_json::to_vec(&*lock(&self.live)).unwrap_or_default();
        if json != *last {
            match crate::store::write_json(&self.paths.live_file(), &*lock(&self.live)) {
                Ok(()) => *last = json,
                Err(e) => crate::log(format!("cannot record what runs: {e}")),
            }
        }
    }

    /// The reconciler. Runs until the daemon stops.
    pub async fn run(self: Arc<Self>) {
        let mut last_gen = u64::MAX;
        let mut saved = Vec::new();
        let mut shown = Vec::new();
        loop {
            let (gen, desired) = {
                let d = lock(&self.desired);
                (self.requested.load(Ordering::SeqCst), d.clone())
            };
            let round = self.reconcile(gen, desired, gen != last_gen).await;
            last_gen = gen;
            self.save_live(&mut saved);
            {
                let mut rec = lock(&self.record);
                rec.last_error = match (
                    &round.stack,
                    round.services.values().find_map(|r| r.as_ref().err()),
                ) {
                    (Err(e), _) => Some(e.message.clone()),
                    (Ok(()), Some(e)) => Some(e.message.clone()),
                    _ => None,
                };
            }
            self.finish_round(round);
            self.changed_since(&mut shown);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn reconcile(&self, gen: u64, desired: Desired, asked: bool) -> Round {
        let (stack, restarted) = match self.reconcile_stack(&desired).await {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_api();
                // An enable that cannot even start is undone, not left
                // pending: the person was told it failed.
                let enabling: Vec<String> = desired
                    .services
                    .iter()
                    .filter(|(_, p)| **p == Phase::Enabling)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !enabling.is_empty() {
                    let _ = self.want(|d| {
                        for n in &enabling {
                            d.services.remove(n);
                        }
                    });
                }
                let services = desired
                    .services
                    .keys()
                    .map(|n| (n.clone(), Err(e.clone())))
                    .collect();
                return Round {
                    gen,
                    stack: Err(e),
                    services,
                };
            }
        };
        let services = match stack {
            Some(stack) => {
                let retry_due = {
                    let live = lock(&self.live);
                    live.values()
                        .any(|l| l.retry_at.is_some_and(|t| t <= Instant::now()))
                };
                if asked || restarted || retry_due {
                    // `down` wins here too: services being started or
                    // published are dropped (the stack goes next round,
                    // and all of them with it).
                    tokio::select! {
                        r = self.reconcile_services(&stack, &desired) => r,
                        _ = self.stack_unwanted() => {
                            let e = DaemonError::StoppedByDown.to_api();
                            desired.services.keys().map(|n| (n.clone(), Err(e.clone()))).collect()
                        }
                    }
                } else {
                    self.last_service_results(&desired)
                }
            }
            None => BTreeMap::new(),
        };
        Round {
            gen,
            stack: Ok(()),
            services,
        }
    }

    /// The services' results without doing anything (nothing changed).
    fn last_service_results(&self, desired: &Desired) -> BTreeMap<String, Result<(), ApiError>> {
        let live = lock(&self.live);
        desired
            .services
            .keys()
            .map(|n| {
                let r = match live.get(n).and_then(|l| l.error.clone()) {
                    Some(message) => Err(ApiError {
                        kind: ErrorKind::Stack,
                        message,
                    }),
                    None => Ok(()),
                };
                (n.clone(), r)
            })
            .collect()
    }

    /// Bring the stack to what is asked; the running stack (if it should
    /// run) and whether it was (re)started in this round.
    async fn reconcile_stack(
        &self,
        desired: &Desired,
    ) -> Result<(Option<Arc<Stack>>, bool), DaemonError> {
        let current = self.stack();
        let Some(want) = desired.stack.clone() else {
            if let Some(s) = current {
                self.take_down_services(&s).await;
                s.down().await;
                *lock(&self.stack) = None;
                crate::stack::remove_stack_files(&self.paths);
                *lock(&self.restarts) = Restarts::default();
                crate::log("the stack is down");
            }
            if std::mem::take(&mut *lock(&self.orphan_table)) {
                match crate::firewall::remove(&crate::firewall::nft()) {
                    Ok(()) => self.incident("removed the host firewall a dead daemon left"),
                    Err(e) => self.incident(format!("cannot remove the host firewall: {e}")),
                }
            }
            return Ok((None, false));
        };
        if let Some(s) = current {
            match s.dead_part() {
                None => {
                    let mut r = lock(&self.restarts);
                    if r.last_start.is_some_and(|t| t.elapsed() > HEALTHY) {
                        r.attempts = 0;
                    }
                    return Ok((Some(s), false));
                }
                Some((part, how)) if self.may_restart() => {
                    let role = part.role();
                    match self.restart_vm(&s, part, &how).await {
                        Ok(()) => return Ok((Some(s), true)),
                        Err(e) => self.incident(format!(
                            "{role} did not come back ({e}); starting the whole stack again"
                        )),
                    }
                    lock(&self.live).clear();
                    *lock(&self.stack) = None;
                    s.stop_for_restart().await;
                }
                Some((part, how)) => {
                    self.incident(format!(
                        "{part} died ({how}); stopping the rest of the stack to start it again (the host firewall stays loaded)"
                    ));
                    lock(&self.live).clear();
                    *lock(&self.stack) = None;
                    s.stop_for_restart().await;
                    let mut r = lock(&self.restarts);
                    r.next_at = Some(Instant::now());
                }
            }
        }
        // The stack should run and does not.
        {
            let r = lock(&self.restarts);
            if want.confirmed {
                if r.attempts >= MAX_RESTARTS {
                    return Err(DaemonError::GaveUp {
                        attempts: r.attempts,
                    });
                }
                if let Some(t) = r.next_at {
                    if t > Instant::now() {
                        return Err(DaemonError::RestartPending {
                            secs: (t - Instant::now()).as_secs() + 1,
                        });
                    }
                }
            }
        }
        let restart = want.confirmed;
        if restart {
            let n = self.count_attempt(&[Role::Torvm, Role::Appvm]);
            self.incident(format!(
                "starting the stack again (attempt {n} of {MAX_RESTARTS}, network {})",
                want.network
            ));
        }
        crate::stack::remove_stack_files(&self.paths);
        let progress = self.progress.clone();
        let say = move |m: String| {
            crate::log(&m);
            let _ = progress.send(m);
        };
        let t0 = Instant::now();
        // `down` wins over a start in progress (VM boots, tor's bootstrap):
        // the start is dropped and what it had started is stopped.
        let started = tokio::select! {
            r = start_stack(&self.paths, &want, self.data_disks().await, &say) => Some(r),
            _ = self.stack_unwanted() => None,
        };
        let Some(started) = started else {
            self.abandon_start().await;
            return Err(DaemonError::StoppedByDown);
        };
        match started {
            Ok(stack) => {
                let stack = Arc::new(stack);
                self.install(stack.clone());
                lock(&self.live).clear();
                {
                    let mut r = lock(&self.restarts);
                    r.last_start = Some(Instant::now());
                    r.next_at = None;
                }
                if restart {
                    self.incident(format!(
                        "the stack is back ({:.1} s); publishing the enabled services again",
                        t0.elapsed().as_secs_f64()
                    ));
                } else {
                    let _ = self.want(|d| {
                        if let Some(w) = d.stack.as_mut() {
                            w.confirmed = true;
                        }
                    });
                }
                Ok((Some(stack), true))
            }
            Err(e) => {
                if restart {
                    let mut r = lock(&self.restarts);
                    let delay = Duration::from_secs(1 << r.attempts.min(5));
                    r.next_at = Some(Instant::now() + delay);
                    drop(r);
                    self.incident(format!(
                        "the stack did not start: {e}; trying again in {} s",
                        delay.as_secs()
                    ));
                } else {
                    // `up` failed: nothing half-done is kept.
                    crate::log(format!("up failed: {e}"));
                    let _ = self.want(|d| *d = Desired::default());
                }
                Err(e)
            }
        }
    }

    /// Returns once the stack is no longer asked for.
    /// The disks a stack starting now gets: none with the persistent store
    /// locked; else the App VM's data disk, and the Tor VM's state disk once
    /// a service is persistent (or the Tor VM has one already): its guards
    /// then outlive a reboot, as a long-lived service needs.
    async fn data_disks(&self) -> crate::stack::DataDisks {
        let store = self.store.lock().await;
        if !matches!(store.persistent(), crate::store::Persistent::Unlocked(_)) {
            return Default::default();
        }
        let torvm = self.paths.vm_disk("torvm");
        let keep_tor = !store.persistent_services().is_empty() || torvm.exists();
        crate::stack::DataDisks {
            appvm: Some(self.paths.vm_disk("appvm")),
            torvm: keep_tor.then_some(torvm),
        }
    }

    async fn stack_unwanted(&self) {
        while lock(&self.desired).stack.is_some() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a dropped start left: every jailer this daemon started (each
    /// stops its QEMU or backend, and is killed if it does not end), the
    /// stack's files, the host table.
    async fn abandon_start(&self) {
        let jailers = crate::proc::children_named(crate::proc::JAILER_COMM);
        let gone = tokio::task::spawn_blocking(move || {
            crate::proc::terminate_all(&jailers, Duration::from_secs(3))
        })
        .await
        .unwrap_or(false);
        crate::stack::remove_stack_files(&self.paths);
        if gone {
            if let Err(e) = crate::firewall::remove(&crate::firewall::nft()) {
                self.incident(format!("cannot remove the host firewall: {e}"));
            }
        } else {
            self.incident("a process of the stopped start did not end: the host firewall stays");
        }
        lock(&self.live).clear();
        crate::log("the start was stopped by `down`");
    }

    /// Count a restart of `roles`; which attempt it is.
    fn count_attempt(&self, roles: &[Role]) -> u32 {
        let mut r = lock(&self.restarts);
        r.attempts += 1;
        for role in roles {
            r.per_vm[vm_index(*role)] += 1;
        }
        r.attempts
    }

    /// Restarts are left in the budget.
    fn may_restart(&self) -> bool {
        lock(&self.restarts).attempts < MAX_RESTARTS
    }

    /// Start `role`'s VM again (the rest of the stack runs on); what ran in
    /// it is forgotten, so the services are started or published again.
    async fn restart_vm(&self, stack: &Stack, part: Part, how: &str) -> Result<(), UpError> {
        let role = part.role();
        let n = self.count_attempt(&[role]);
        self.incident(format!(
            "{part} died ({how}); starting {role} again (attempt {n} of {MAX_RESTARTS}; the other VM runs on, the host firewall stays loaded)"
        ));
        {
            let mut live = lock(&self.live);
            for l in live.values_mut() {
                match role {
                    // The services ran there; the onion services stay
                    // published in the Tor VM and point at them again.
                    Role::Appvm => {
                        l.running = false;
                        l.start_id = None;
                    }
                    // Tor's onion services went with it.
                    Role::Torvm => {
                        l.published = None;
                        l.publish_id = None;
                    }
                }
            }
        }
        let t0 = Instant::now();
        let say = |m: String| crate::log(&m);
        stack.restart(role, &say).await?;
        lock(&self.restarts).last_start = Some(Instant::now());
        self.incident(format!(
            "{} is back ({:.1} s); starting and publishing the enabled services again",
            match role {
                Role::Torvm => "the Tor VM",
                Role::Appvm => "the App VM",
            },
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Take every live service down (before the stack goes).
    async fn take_down_services(&self, stack: &Stack) {
        let names: Vec<String> = lock(&self.live).keys().cloned().collect();
        for n in names {
            self.take_down(stack, &n).await;
        }
    }

    /// Remove `name`'s onion service and stop it; forget it.
    async fn take_down(&self, stack: &Stack, name: &str) {
        if let Err(e) = self.sync_relays(stack, name, None).await {
            crate::log(format!("{name}: closing its relay: {e}"));
        }
        let live = lock(&self.live).remove(name).unwrap_or_default();
        if let Some(sid) = &live.published {
            if let Err(e) = stack.remove_onion(sid).await {
                crate::log(format!("{name}: removing its onion service: {e}"));
            }
        }
        if live.running {
            let stop = HostMsg::StopService {
                name: name.to_owned(),
            };
            if let Err(e) = stack.service(stop, name).await {
                crate::log(format!("{name}: stopping it: {e}"));
            }
        }
    }

    async fn reconcile_services(
        &self,
        stack: &Arc<Stack>,
        desired: &Desired,
    ) -> BTreeMap<String, Result<(), ApiError>> {
        let gone: Vec<String> = lock(&self.live)
            .keys()
            .filter(|n| !desired.services.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            crate::log(format!("{n}: taking it down"));
            self.take_down(stack, &n).await;
        }
        let mut results = BTreeMap::new();
        for (name, phase) in &desired.services {
            {
                let live = lock(&self.live);
                if let Some(t) = live.get(name).and_then(|l| l.retry_at) {
                    if t > Instant::now() {
                        let message = live
                            .get(name)
                            .and_then(|l| l.error.clone())
                            .unwrap_or_default();
                        results.insert(
                            name.clone(),
                            Err(ApiError {
                                kind: ErrorKind::Stack,
                                message,
                            }),
                        );
                        continue;
                    }
                }
            }
            let r = self.apply(stack, name).await;
            let r = match r {
                Ok(()) => {
                    if let Some(l) = lock(&self.live).get_mut(name) {
                        l.error = None;
                        l.retry_at = None;
                        l.failures = 0;
                    }
                    if *phase == Phase::Enabling {
                        let _ = self.want(|d| {
                            if let Some(p) = d.services.get_mut(name) {
                                *p = Phase::Enabled;
                            }
                        });
                    }
                    Ok(())
                }
                Err(e) => {
                    let e = e.to_api();
                    if *phase == Phase::Enabling {
                        // Nothing half-done: the enable is undone.
                        self.take_down(stack, name).await;
                        let _ = self.want(|d| {
                            d.services.remove(name);
                        });
                        crate::log(format!("{name}: enable failed: {}", e.message));
                    } else {
                        let mut live = lock(&self.live);
                        let l = live.entry(name.clone()).or_default();
                        l.failures += 1;
                        let delay = Duration::from_secs(1 << l.failures.min(6));
                        l.retry_at = Some(Instant::now() + delay);
                        l.error = Some(e.message.clone());
                        drop(live);
                        self.incident(format!(
                            "{name}: {}; trying again in {} s",
                            e.message,
                            delay.as_secs()
                        ));
                    }
                    Err(e)
                }
            };
            results.insert(name.clone(), r);
        }
        results
    }

    /// Make what runs of `name` what its state asks.
    async fn apply(&self, stack: &Arc<Stack>, name: &str) -> Result<(), DaemonError> {
        let svc = self
            .catalog
            .get(name)
            .ok_or_else(|| DaemonError::UnknownService(name.to_owned()))?;
        let plan: Plan = {
            let store = self.store.lock().await;
            let st = services::load(&store, svc)?;
            services::plan(svc, &st)?
        };
        let relay = plan.relay;
        self.apply_planned(stack, name, plan).await?;
        // Once it runs: the relay reaches it.
        self.sync_relays(stack, name, Some(relay)).await
    }

    /// Start and publish `name` as `plan` says, where it differs from what runs.
    async fn apply_planned(
        &self,
        stack: &Arc<Stack>,
        name: &str,
        plan: Plan,
    ) -> Result<(), DaemonError> {
        let live = lock(&self.live).get(name).cloned().unwrap_or_default();
        let need_start = !live.running || live.start_id != Some(plan.start_id);
        let need_publish = live.published.is_none() || live.publish_id != Some(plan.publish_id);
        if !need_start && !need_publish {
            return Ok(());
        }
        let sid = plan.address.without_suffix();
        if live.running && need_start {
            crate::log(format!("{name}: its configuration changed: restarting it"));
            let stop = HostMsg::StopService {
                name: name.to_owned(),
            };
            stack.service(stop, name).await?;
            self.update(name, |l| l.running = false);
        }
        if let (Some(old), true) = (&live.published, need_publish) {
            crate::log(format!(
                "{name}: its onion service changed (ports or clients): publishing it again"
            ));
            // The same address is replaced by the publication itself (in one
            // control session, so visitors barely notice); another one goes.
            if *old != sid {
                stack.remove_onion(old).await?;
            }
            self.update(name, |l| l.published = None);
        }
        // A client revoked (or client authorization turned on): its open
        // circuits are cut, so that it cannot go on over them.
        let revoked = live.published.is_some()
            && (live
                .clients
                .iter()
                .any(|c| !plan.publish.client_auth.contains(c))
                || (live.clients.is_empty() && !plan.publish.client_auth.is_empty()));
        let mut publish_req = plan.publish.clone();
        publish_req.close_circuits = revoked;
        let start = async {
            if need_start {
                stack
                    .service(HostMsg::StartService(plan.start.clone()), name)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let publish = async {
            if need_publish {
                stack.publish_onion(publish_req).await.map(Some)
            } else {
                Ok(None)
            }
        };
        // Both at once: the service starts in the App VM while tor builds
        // and uploads the descriptor.
        let (started, published) = tokio::join!(start, publish);
        if let Ok(Some(true)) = started {
            self.update(name, |l| {
                l.running = true;
                l.start_id = Some(plan.start_id);
            });
        }
        if let Ok(Some((got, uploads))) = &published {
            let clients = plan.publish.client_auth.clone();
            self.update(name, |l| {
                l.published = Some(sid.clone());
                l.publish_id = Some(plan.publish_id);
                l.clients = clients;
            });
            if *got != sid {
                return Err(DaemonError::WrongServiceId);
            }
            crate::log(format!(
                "{name} published at {} ({uploads} descriptor upload(s))",
                plan.address
            ));
        }
        match (started, published) {
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
            (Ok(Some(false)), _) => Err(DaemonError::ServiceDied(name.to_owned())),
            _ => Ok(()),
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Live)) {
        f(lock(&self.live).entry(name.to_owned()).or_default());
    }
}

/// The host table's relay ports: those of `wants`.
fn relay_table(stack: &Stack, wants: impl Iterator<Item = RelayWant>) -> Result<(), DaemonError> {
    let (mut localhost, mut lan) = (Vec::new(), Vec::new());
    for w in wants {
        if w.localhost {
            localhost.push(w.port);
        }
        if w.lan {
            lan.push(w.port);
        }
    }
    for v in [&mut localhost, &mut lan] {
        v.sort_unstable();
        v.dedup();
    }
    stack
        .set_relay_ports(localhost, lan)
        .map_err(|e| DaemonError::Up(Box::new(e)))
}

/// Open the listeners of `w` (all of them, or none).
async fn open_relays(
    uds: &std::path::Path,
    w: RelayWant,
) -> Result<Vec<crate::relay::Relay>, crate::relay::RelayError> {
    use crate::relay::{Relay, RelayError, Scope};
    let mut relays = Vec::new();
    if w.localhost {
        relays.push(Relay::start(Scope::Localhost, &[], w.port, uds.to_owned()).await?);
    }
    if w.lan {
        let started = match crate::relay::lan_addresses() {
            Ok(addrs) => Relay::start(Scope::Lan, &addrs, w.port, uds.to_owned()).await,
            Err(e) => Err(RelayError::Addresses(e)),
        };
        match started {
            Ok(r) => relays.push(r),
            Err(e) => {
                for r in relays {
                    r.stop().await;
                }
                return Err(e);
            }
        }
    }
    Ok(relays)
}

/// Start a stack for `want`: find QEMU, vhost-device-vsock and the images,
/// choose the accelerator, and bring both VMs up (see [`Stack::up`]).
pub async fn start_stack(
    paths: &Paths,
    want: &StackWant,
    disks: crate::stack::DataDisks,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Stack, DaemonError> {
    let keep_state = disks.torvm.is_some();
    let qemu =
        find_program("qemu-system-x86_64").ok_or(DaemonError::Missing("qemu-system-x86_64"))?;
    let vhost =
        find_program("vhost-device-vsock").ok_or(DaemonError::Missing("vhost-device-vsock"))?;
    let inputs = crate::image_inputs(paths);
    let images = tails_images::find(&inputs)
        .map_err(DaemonError::ImageCache)?
        .ok_or(DaemonError::NoImages)?;
    let mut testnet_subnet = None;
    let bridges = want.bridges.clone();
    let tor = match want.network {
        Network::None => None,
        Network::Public => Some(TorConfig {
            network: TorNetwork::Public,
            bridges,
            keep_state,
        }),
        Network::Local => {
            let cfg = tails_testnet::Config::default();
            testnet_subnet = Some(tails_testnet::subnet(&cfg).map_err(DaemonError::Testnet)?);
            let options =
                tokio::task::spawn_blocking(move || tails_testnet::join_options_here(&cfg))
                    .await?
                    .map_err(DaemonError::Testnet)?;
            Some(TorConfig {
                network: TorNetwork::Local { options },
                bridges,
                keep_state,
            })
        }
    };
    progress("choosing the accelerator".into());
    let torvm_user = crate::stack::user(crate::stack::USERS[0].0, crate::stack::USERS[0].1)?;
    let (p, q, k) = (paths.clone(), qemu.clone(), images.vmlinux.clone());
    let accel = tokio::task::spawn_blocking(move || {
        crate::accel::detect(
            &p,
            &q,
            &k,
            torvm_user,
            &crate::stack::vm_groups(crate::accel::Accel::Kvm),
        )
    })
    .await?;
    let bridges = tor.as_ref().map(|t| t.bridges.clone()).unwrap_or_default();
    let upstreams = crate::firewall::upstreams(testnet_subnet.as_deref(), &bridges)
        .map_err(DaemonError::Upstreams)?;
    let backend = Box::new(Qemu {
        binary: qemu,
        jailer: paths.jailer(),
    });
    let stack = Stack::up(
        paths,
        backend,
        &images,
        &vhost,
        accel,
        crate::stack::Uplink { tor, upstreams },
        disks,
        progress,
    )
    .await
    .map_err(|e: UpError| DaemonError::Up(Box::new(e)))?;
    Ok(stack)
}

impl From<StackError> for DaemonError {
    fn from(e: StackError) -> Self {
        DaemonError::Stack(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(tag: &str) -> (Arc<Supervisor>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("ts-sup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let paths = Paths {
            runtime: dir.join("run"),
            log: dir.join("log"),
            images: dir.join("images"),
            lib: dir.join("lib"),
            state: dir.join("state"),
            store: dir.join("store.luks"),
        };
        std::fs::create_dir_all(&paths.runtime).expect("mkdir");
        let store = crate::store::test_store(&paths.state);
        let sup = Supervisor::new(paths, Catalog::default(), store, Desired::default());
        (sup, dir)
    }

    fn round(gen: u64, ok: bool) -> Round {
        Round {
            gen,
            stack: if ok {
                Ok(())
            } else {
                Err(ApiError {
                    kind: ErrorKind::Stack,
                    message: "failed".into(),
                })
            },
            services: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_waiter_gets_the_first_round_that_saw_its_request() {
        let (sup, dir) = supervisor("settle");
        let gen = sup
            .want(|d| {
                d.stack = Some(StackWant {
                    network: Network::None,
                    bridges: vec![],
                    confirmed: false,
                })
            })
            .expect("want");
        assert_eq!(gen, 1);
        // The desired state is saved at once, for a daemon that follows.
        assert!(read_desired(sup.paths()).expect("read").stack.is_some());
        let waiter = {
            let sup = sup.clone();
            tokio::spawn(async move { sup.settle(gen).await })
        };
        // A failed start, then (its undoing) a calm round: the waiter must
        // be told of the failure, even if it looks only afterwards.
        sup.finish_round(round(0, true));
        sup.finish_round(round(1, false));
        sup.finish_round(round(2, true));
        sup.finish_round(round(2, true));
        let r = waiter.await.expect("join");
        assert_eq!(r.gen, 1);
        assert!(r.stack.is_err(), "{r:?}");
        let late = sup.settle(2).await;
        assert!(late.gen == 2 && late.stack.is_ok());
        crate::store::test_cleanup(&dir.join("state"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn changes_are_counted_under_the_desired_lock() {
        let (sup, dir) = supervisor("count");
        let a = sup.poke();
        let b = sup
            .want(|d| {
                d.services.insert("nginx".into(), Phase::Enabling);
            })
            .expect("want");
        assert!(b > a);
        assert!(sup.desired().services.contains_key("nginx"));
        assert!(!sup.idle(), "an enabled service is something to supervise");
        crate::store::test_cleanup(&dir.join("state"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
