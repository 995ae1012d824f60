//! The stack: the Tor VM and the App VM, each a QEMU with a vsock backend
//! of its own (vhost-device-vsock), each process in its jail; started,
//! watched and stopped as one unit.
//!
//! `up` either brings everything to "both agents ready" or tears down all it
//! started and says which VM failed and where its console log is.

use crate::accel::Accel;
use crate::agent::{Agent, AgentError};
use crate::api::{Network, VmStatus};
use crate::paths::Paths;
use crate::vhost::VhostVsock;
use crate::vmm::{Backend, Disk, Identity, Nic, NicLink, Vm, VmSpec};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tails_proto::msg::{ExecOutput, TorConfig, TorNetwork, TorProgress};
use tails_proto::Role;

/// MAC of the App VM's only NIC (fixed identity).
pub const APPVM_MAC: &str = "00:11:22:33:44:55";
/// MAC of the Tor VM's NIC on the internal link (the App VM's gateway).
pub const TORVM_INTERNAL_MAC: &str = "00:55:44:33:22:11";
/// MAC of the Tor VM's uplink NIC (QEMU user-mode networking).
pub const TORVM_UPLINK_MAC: &str = "52:54:00:12:34:56";
/// Kernel command line of both VMs: nothing host-derived.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 oops=panic i8042.noaux i8042.nokbd i8042.nopnp";

/// The unprivileged users the pieces run as, one per process.
pub const USERS: [(&str, &str); 4] = [
    ("tails-torvm", "the Tor VM's QEMU"),
    ("tails-appvm", "the App VM's QEMU"),
    ("tails-vsock-torvm", "the Tor VM's vsock backend"),
    ("tails-vsock-appvm", "the App VM's vsock backend"),
];

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    Precondition(String),
    #[error("cannot make the internal link (socketpair): {0}")]
    Link(#[source] nix::Error),
    #[error("{vm} did not become ready: {reason}; see its console log {log}")]
    VmFailed {
        vm: Role,
        reason: String,
        log: String,
    },
    #[error("cannot load the host firewall (table {table}), so no VM was started: {source}")]
    Firewall {
        table: String,
        source: tails_nft::NftError,
    },
    #[error(transparent)]
    Vhost(#[from] crate::vhost::VhostError),
    #[error(transparent)]
    Vmm(#[from] crate::vmm::VmmError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each of these locks guards one assignment at a time: a panic cannot
    // leave the data half-changed.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> UpError + '_ {
    move |source| UpError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Resolve a system user to (uid, gid), or say how to create it.
pub fn user(name: &str, what: &str) -> Result<(u32, u32), UpError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), u.gid.as_raw())),
        _ => Err(UpError::Precondition(format!(
            "system user {name} (for {what}) is missing: run ./setup.sh"
        ))),
    }
}

/// How the stack reaches the world: tor's configuration in the Tor VM, and
/// the host firewall's exceptions for it.
pub struct Uplink {
    /// `None`: the Tor VM has no uplink at all.
    pub tor: Option<TorConfig>,
    /// Networks the Tor VM's QEMU may reach although they are private.
    pub upstreams: Vec<tails_nft::host::Net>,
}

/// One VM of the stack: its QEMU and its vsock backend.
#[derive(Clone)]
struct Member {
    role: Role,
    vm: Arc<dyn Vm>,
    vsock: Arc<std::sync::Mutex<VhostVsock>>,
    started: Instant,
    /// The same, on the wall clock (for the state file).
    started_at: SystemTime,
    /// Its agent answered once: only then is it dialled (a connection
    /// that reaches vhost-device-vsock while the guest still sets up its
    /// vsock queues can end that VM's vsock for good).
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Member {
    fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running stack.
pub struct Stack {
    paths: Paths,
    members: std::sync::Mutex<Vec<Member>>,
    /// vhost-device-vsock and the jailer.
    vhost_bin: std::path::PathBuf,
    jailer: std::path::PathBuf,
    /// What a member is started again from.
    images: tails_images::Images,
    launcher: Box<dyn Backend>,
    users: Users,
    pub accel: Accel,
    pub backend: &'static str,
    /// How the Tor VM's tor runs; `None`: the Tor VM has no uplink at all.
    pub tor: Option<TorConfig>,
    /// The nft program that loaded the host table (and removes it).
    nft: std::path::PathBuf,
    /// What the host table was made from, and what it read back as once
    /// loaded (the watchdog compares against it).
    /// Behind one lock: the relay ports change them while the stack runs,
    /// and the watchdog must never compare a table against the other one's
    /// baseline.
    firewall: std::sync::Mutex<(tails_nft::host::Params, Vec<serde_json::Value>)>,
    /// The host firewall's watchdog, while the stack runs.
    watch: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The VMs' disks in the persistent store.
    pub disks: DataDisks,
    /// Each VM's guest RAM.
    memory: Memory,
}

/// Guest RAM of each VM, in MiB: the defaults, or what
/// `TAILS_SERVER_TORVM_MIB` / `TAILS_SERVER_APPVM_MIB` say in the daemon's
/// environment (`bench memory` bisects with them; a host with RAM to spare
/// may give more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub torvm: u32,
    pub appvm: u32,
}

impl Memory {
    /// The defaults: measured by `bench memory` (the smallest size that
    /// boots and serves) with room left for a real network's directory
    /// (Tor VM) and for the services' own use (App VM).
    pub const DEFAULT: Memory = Memory {
        torvm: 192,
        appvm: 512,
    };
    /// Below this no guest of ours boots; above it is a typo.
    pub const RANGE: std::ops::RangeInclusive<u32> = 48..=65536;

    /// The environment's sizes over the defaults; a bad value is refused
    /// in one line before anything starts.
    pub fn from_env() -> Result<Memory, UpError> {
        Memory::from_vars(|var| std::env::var(var).ok())
    }

    /// As [`Memory::from_env`], with `get` for the environment.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Memory, UpError> {
        let mut m = Memory::DEFAULT;
        for (var, slot) in [
            ("TAILS_SERVER_TORVM_MIB", &mut m.torvm),
            ("TAILS_SERVER_APPVM_MIB", &mut m.appvm),
        ] {
            if let Some(v) = get(var) {
                *slot = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| Memory::RANGE.contains(n))
                    .ok_or_else(|| {
                        UpError::Precondition(format!(
                            "{var}={v:?} is not a size in MiB from {} to {}: set a number such as 256, or unset it for the default",
                            Memory::RANGE.start(),
                            Memory::RANGE.end()
                        ))
                    })?;
            }
        }
        Ok(m)
    }

    pub fn of(self, role: Role) -> u32 {
        match role {
            Role::Torvm => self.torvm,
            Role::Appvm => self.appvm,
        }
    }
}

/// A part of the stack that can die on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A VM's QEMU.
    Vm(Role),
    /// A VM's vsock backend (vhost-device-vsock).
    Vsock(Role),
}

impl Part {
    /// The VM it belongs to (which is started again with it).
    pub fn role(self) -> Role {
        match self {
            Part::Vm(r) | Part::Vsock(r) => r,
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Vm(Role::Torvm) => "the Tor VM's QEMU",
            Part::Vm(Role::Appvm) => "the App VM's QEMU",
            Part::Vsock(Role::Torvm) => "the Tor VM's vsock backend",
            Part::Vsock(Role::Appvm) => "the App VM's vsock backend",
        })
    }
}

/// The unprivileged users of the stack's processes: (uid, gid) each.
#[derive(Debug, Clone, Copy)]
struct Users {
    torvm: (u32, u32),
    appvm: (u32, u32),
    vsock_torvm: (u32, u32),
    vsock_appvm: (u32, u32),
}

impl Users {
    fn lookup() -> Result<Users, UpError> {
        let u = |i: usize| user(USERS[i].0, USERS[i].1);
        Ok(Users {
            torvm: u(0)?,
            appvm: u(1)?,
            vsock_torvm: u(2)?,
            vsock_appvm: u(3)?,
        })
    }

    /// The user of `role`'s QEMU.
    fn vm(&self, role: Role) -> (u32, u32) {
        match role {
            Role::Torvm => self.torvm,
            Role::Appvm => self.appvm,
        }
    }

    /// The user of `role`'s vsock backend.
    fn vsock(&self, role: Role) -> (u32, u32) {
        match role {
            Role::Torvm => self.vsock_torvm,
            Role::Appvm => self.vsock_appvm,
        }
    }
}

/// What `up` reports as it goes.
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

/// The state file: enough to find, after a daemon died, the processes it
/// left (each by pid and start time, so that a reused pid is not taken for
/// one of them).
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct StateFile {
    pub daemon_pid: u32,
    pub processes: Vec<crate::proc::ProcId>,
    /// Each VM's QEMU, to take over.
    #[serde(default)]
    pub members: Vec<MemberRecord>,
    #[serde(default)]
    pub accel: Option<Accel>,
    /// The Tor VM's tor configuration (to start tor again in a restarted
    /// Tor VM).
    #[serde(default)]
    pub tor: Option<TorConfig>,
    /// What the host table is made from (loaded again at a takeover).
    #[serde(default)]
    pub firewall: Option<tails_nft::host::Params>,
    /// The VMs' disks in the persistent store.
    #[serde(default)]
    pub disks: DataDisks,
}

/// The VMs' disks in the unlocked persistent store, if the stack has them:
/// the App VM's data (the persistent paths of services with persistence
/// on) and the Tor VM's state (tor's DataDirectory, its guards).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDisks {
    pub appvm: Option<PathBuf>,
    pub torvm: Option<PathBuf>,
}

/// Size of the Tor VM's state disk (tor's state is a few KiB; its cached
/// directory documents a few MiB).
pub const TORVM_DISK_MIB: u64 = 32;
/// Room left free in the store beside the disks (the services' state files).
const STORE_MARGIN_MIB: u64 = 16;
/// The smallest App VM data disk worth making.
const MIN_APPVM_DISK_MIB: u64 = 32;

impl DataDisks {
    /// `vm`'s disk, if the stack has it.
    pub fn of(&self, role: Role) -> Option<&Path> {
        match role {
            Role::Appvm => self.appvm.as_deref(),
            Role::Torvm => self.torvm.as_deref(),
        }
    }

    /// Make each disk that is missing (allocated in full, so that the guest
    /// never meets a full store in the middle of a write: the Tor VM's
    /// first, the App VM's takes the rest of the store), and give each to its
    /// VM's QEMU user (0600).
    fn prepare(&self, users: &Users) -> Result<(), UpError> {
        for role in [Role::Torvm, Role::Appvm] {
            let Some(path) = self.of(role) else { continue };
            if let Some(dir) = path.parent() {
                mkdir(dir, (0, 0), 0o700)?;
            }
            if !path.exists() {
                let mib = match role {
                    Role::Torvm => TORVM_DISK_MIB,
                    Role::Appvm => {
                        let dir = path.parent().unwrap_or(Path::new("/"));
                        let st = nix::sys::statvfs::statvfs(dir).map_err(|e| {
                            UpError::Precondition(format!("{}: {e}", dir.display()))
                        })?;
                        let free = (st.blocks_available() as u64 * st.fragment_size() as u64) >> 20;
                        let mib = free.saturating_sub(STORE_MARGIN_MIB);
                        if mib < MIN_APPVM_DISK_MIB {
                            return Err(UpError::Precondition(format!(
                                "the persistent store has {free} MiB free, too little for the App VM's disk: make a larger one"
                            )));
                        }
                        mib
                    }
                };
                make_disk(path, mib)?;
            }
            let owner = users.vm(role);
            std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(io_err(path))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(path))?;
        }
        Ok(())
    }
}

/// A new disk file of `mib` MiB, allocated (zeros), made under a temporary
/// name: a cut creation leaves no half-made disk under the real one.
fn make_disk(path: &Path, mib: u64) -> Result<(), UpError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("img.new");
    let _ = std::fs::remove_file(&tmp);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let len =
        i64::try_from(mib << 20).map_err(|_| UpError::Precondition("disk too large".into()))?;
    nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, len)
        .map_err(|e| io_err(&tmp)(e.into()))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    crate::log(format!("made {} ({mib} MiB)", path.display()));
    Ok(())
}

/// One VM's QEMU in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRecord {
    pub role: Role,
    pub proc: crate::proc::ProcId,
    /// Its vsock backend.
    pub vsock: crate::proc::ProcId,
    /// Seconds since the Unix epoch when it started.
    pub started: u64,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What can go wrong with a request to a running stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{role} is not part of this stack")]
    NotPart { role: Role },
    #[error(
        "{role} is down (QEMU {how}); the daemon is bringing it back: see `tails-server status`"
    )]
    Down { role: Role, how: String },
    #[error("{role} agent: {source}")]
    Agent {
        role: Role,
        #[source]
        source: AgentError,
    },
    #[error("the Tor VM has no uplink (`up --network none`): nothing can be published")]
    NoUplink,
    #[error("{role} is starting; try again in a moment")]
    Booting { role: Role },
}

fn agent_err(role: Role) -> impl FnOnce(AgentError) -> StackError {
    move |source| StackError::Agent { role, source }
}

fn mkdir(path: &Path, owner: (u32, u32), mode: u32) -> Result<(), UpError> {
    std::fs::create_dir_all(path).map_err(io_err(path))?;
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Supplementary groups of a QEMU process: `kvm` only when KVM is used.
pub fn vm_groups(accel: Accel) -> Vec<u32> {
    match (accel, crate::accel::kvm_group()) {
        (Accel::Kvm, Some(g)) => vec![g],
        _ => vec![],
    }
}

#[allow(clippy::too_many_arguments)]
fn spec(
    role: Role,
    memory_mib: u32,
    paths: &Paths,
    images: &tails_images::Images,
    accel: Accel,
    owner: (u32, u32),
    link: NicLink,
    uplink: bool,
    data: Option<&Path>,
) -> VmSpec {
    let name = role.name();
    let (initrd, mut disks, mac, uuid) = match role {
        Role::Torvm => (
            images.torvm_initramfs.clone(),
            vec![Disk {
                path: images.torvm_root.clone(),
                read_only: true,
                serial: tails_proto::msg::TORVM_ROOT_SERIAL.into(),
            }],
            TORVM_INTERNAL_MAC,
            "5c1d2c2a-6f1e-4d39-9a7c-0d0000000001",
        ),
        Role::Appvm => (
            images.appvm_initramfs.clone(),
            vec![Disk {
                path: images.appvm_root.clone(),
                read_only: true,
                serial: "tails-appvm-root".into(),
            }],
            APPVM_MAC,
            "5c1d2c2a-6f1e-4d39-9a7c-0d0000000002",
        ),
    };
    if let Some(path) = data {
        disks.push(Disk {
            path: path.to_owned(),
            read_only: false,
            serial: match role {
                Role::Appvm => tails_proto::msg::APPVM_DATA_SERIAL,
                Role::Torvm => tails_proto::msg::TORVM_STATE_SERIAL,
            }
            .into(),
        });
    }
    VmSpec {
        name: name.into(),
        uid: owner.0,
        gid: owner.1,
        groups: vm_groups(accel),
        memory_mib,
        vcpus: 1,
        accel,
        kernel: images.vmlinux.clone(),
        initrd,
        cmdline: CMDLINE.into(),
        disks,
        nics: {
            let mut nics = vec![Nic {
                mac: mac.into(),
                link,
            }];
            if uplink && role == Role::Torvm {
                nics.push(Nic {
                    mac: TORVM_UPLINK_MAC.into(),
                    link: NicLink::User,
                });
            }
            nics
        },
        vhost_vsock: paths.vhost_socket(name),
        dir: paths.vm_dir(name),
        jail_root: paths.jail_root(&format!("{name}-qemu")),
        console_log: paths.console_log(name),
        identity: Identity {
            cpu_model: crate::vmm::qemu::vm_cpu_arg(
                role,
                accel,
                accel == Accel::Kvm && crate::accel::tsc_scaling(),
            ),
            system_uuid: uuid.into(),
            manufacturer: "Tails Server".into(),
            product: format!("Tails Server {name}"),
        },
    }
}

/// Watches a VM's console log for its agent's "listening on vsock" line.
///
/// A timing hint only, never trusted for anything else: dialing before the
/// guest's vsock driver has set up its queues can hit a window in which
/// vhost-device-vsock 0.3.0's worker for that VM fails (a host connection
/// that arrives after the guest memory is mapped but before the TX queue is
/// ready ends the worker with IterateQueue) and the VM's vsock never answers
/// again. The agent logs its line after the driver is up. A guest that
/// prints it early only hurts itself. Each poll reads only what is new, and
/// at most 4 MiB are read in all.
struct Announcement {
    marker: Vec<u8>,
    /// Bytes of the log already scanned.
    offset: u64,
    /// The end of what was scanned (a marker may straddle two reads).
    tail: Vec<u8>,
}

impl Announcement {
    const MAX: u64 = 4 << 20;

    fn new(role: Role) -> Self {
        Announcement {
            marker: format!("{} agent listening on vsock", role.name()).into_bytes(),
            offset: 0,
            tail: Vec::new(),
        }
    }

    /// Watching only what is written to `console_log` from now on (a VM
    /// started again, whose log holds the last run's line).
    fn from_end(role: Role, console_log: &Path) -> Self {
        let mut a = Self::new(role);
        a.offset = std::fs::metadata(console_log).map(|m| m.len()).unwrap_or(0);
        a
    }

    /// Has the line appeared (or has the console filled 4 MiB without it)?
    fn seen(&mut self, console_log: &Path) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        if self.offset >= Self::MAX {
            return true;
        }
        let mut buf = std::mem::take(&mut self.tail);
        let read = std::fs::File::open(console_log).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.offset))?;
            f.take(Self::MAX - self.offset).read_to_end(&mut buf)
        });
        let Ok(n) = read else { return false };
        self.offset += n as u64;
        if buf.windows(self.marker.len()).any(|w| w == self.marker) {
            return true;
        }
        let keep = buf.len().min(self.marker.len());
        self.tail = buf.split_off(buf.len() - keep);
        self.offset >= Self::MAX
    }
}

async fn wait_ready(
    paths: &Paths,
    role: Role,
    vm: Arc<dyn Vm>,
    mut announced: Announcement,
    deadline: Duration,
) -> Result<Agent, UpError> {
    let start = Instant::now();
    let uds = paths.vsock_uds(role.name());
    let console = paths.console_log(role.name());
    let log = console.display().to_string();
    let fail = |reason: String| UpError::VmFailed {
        vm: role,
        reason,
        log: log.clone(),
    };
    let mut last = "the agent has not announced itself on the console".to_string();
    loop {
        if let Some(how) = vm.exited() {
            return Err(fail(format!("QEMU {how}")));
        }
        if announced.seen(&console) {
            match Agent::connect(&uds, role).await {
                Ok(a) => return Ok(a),
                // A guest claiming another role is hostile or broken: stop at once.
                Err(e @ crate::agent::AgentError::WrongRole { .. }) => {
                    return Err(fail(e.to_string()))
                }
                Err(e) => last = e.to_string(),
            }
        }
        if start.elapsed() > deadline {
            return Err(fail(format!(
                "no agent after {} s ({last})",
                deadline.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Stack {
    /// Bring the stack up. On error everything started so far is stopped.
    #[allow(clippy::too_many_arguments)]
    pub async fn up(
        paths: &Paths,
        backend: Box<dyn Backend>,
        images: &tails_images::Images,
        vhost_bin: &Path,
        accel: Accel,
        uplink: Uplink,
        disks: DataDisks,
        progress: Progress<'_>,
    ) -> Result<Stack, UpError> {
        let Uplink { tor, upstreams } = uplink;
        let memory = Memory::from_env()?;
        let users = Users::lookup()?;
        // Fail closed: no process of the stack starts before its users are
        // fenced in.
        let nft = crate::firewall::nft();
        progress(format!(
            "loading the host firewall (table {})",
            crate::firewall::table_name()
        ));
        let params = tails_nft::host::Params {
            torvm_uid: users.torvm.0,
            // Each in an empty network namespace too: this is the second wall.
            no_inet_uids: vec![users.appvm.0, users.vsock_torvm.0, users.vsock_appvm.0],
            upstreams,
            relay_localhost: Vec::new(),
            relay_lan: Vec::new(),
        };
        let baseline = load_firewall(&params, &nft)?;
        let fenced = Self::up_fenced(
            paths,
            backend,
            images,
            vhost_bin,
            accel,
            tor,
            nft.clone(),
            (params, baseline),
            users,
            disks,
            memory,
            progress,
        );
        match fenced.await {
            Ok(s) => Ok(s),
            Err(e) => {
                if let Err(re) = crate::firewall::remove(&nft) {
                    crate::log(format!("removing the host firewall: {re}"));
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn up_fenced(
        paths: &Paths,
        backend: Box<dyn Backend>,
        images: &tails_images::Images,
        vhost_bin: &Path,
        accel: Accel,
        tor: Option<TorConfig>,
        nft: std::path::PathBuf,
        (firewall, baseline): (tails_nft::host::Params, Vec<serde_json::Value>),
        users: Users,
        disks: DataDisks,
        memory: Memory,
        progress: Progress<'_>,
    ) -> Result<Stack, UpError> {
        if disks != DataDisks::default() {
            progress("opening the VMs' disks in the persistent store".into());
            disks.prepare(&users)?;
        }
        mkdir(&paths.log, (0, 0), 0o700)?;
        mkdir(&paths.vsock_dir(), (0, 0), 0o711)?;
        mkdir(&paths.jail_dir(), (0, 0), 0o700)?;
        mkdir(&paths.vm_dir("torvm"), users.torvm, 0o700)?;
        mkdir(&paths.vm_dir("appvm"), users.appvm, 0o700)?;
        mkdir(&paths.link_dir(), users.torvm, 0o700)?;
        for vm in ["torvm", "appvm"] {
            // A fresh console log per run.
            let p = paths.console_log(vm);
            std::fs::write(&p, b"").map_err(io_err(&p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err(&p))?;
        }
        let jailer = paths.jailer();
        if !jailer.is_file() {
            return Err(UpError::Precondition(format!(
                "{} is missing: run ./setup.sh",
                jailer.display()
            )));
        }
        let stack = Stack {
            paths: paths.clone(),
            members: std::sync::Mutex::new(Vec::new()),
            vhost_bin: vhost_bin.to_path_buf(),
            jailer,
            images: images.clone(),
            backend: backend.name(),
            launcher: backend,
            users,
            accel,
            tor,
            nft,
            firewall: std::sync::Mutex::new((firewall, baseline)),
            watch: std::sync::Mutex::new(None),
            disks,
            memory,
        };
        match stack.launch(progress).await {
            Ok(()) => Ok(stack),
            Err(e) => {
                // The firewall goes in `up`, after this.
                stack.stop_processes(false).await;
                let _ = std::fs::remove_file(stack.paths.state_file());
                Err(e)
            }
        }
    }

    /// Take over the stack a daemon that died left running, from its state
    /// file: its QEMUs and vhost-device-vsock by pid and start time. A QEMU
    /// that is gone is taken over as dead (the supervisor starts it again);
    /// without vhost-device-vsock there is nothing to take over.
    pub fn adopt(
        paths: &Paths,
        file: &StateFile,
        backend: Box<dyn Backend>,
        images: &tails_images::Images,
    ) -> Result<Stack, UpError> {
        let memory = Memory::from_env()?;
        let users = Users::lookup()?;
        let firewall = file.firewall.clone().ok_or_else(|| {
            UpError::Precondition("the state file does not say how the host table was made".into())
        })?;
        // Loaded again (atomically): what runs from now on is known.
        let baseline = load_firewall(&firewall, &crate::firewall::nft())?;
        let accel = file
            .accel
            .ok_or_else(|| UpError::Precondition("the state file names no accelerator".into()))?;
        let now = SystemTime::now();
        let mut members = Vec::new();
        for role in [Role::Appvm, Role::Torvm] {
            let rec = file
                .members
                .iter()
                .find(|m| m.role == role)
                .ok_or_else(|| UpError::Precondition(format!("the state file names no {role}")))?;
            let age = Duration::from_secs(unix_secs(now).saturating_sub(rec.started));
            let started_at = now.checked_sub(age).unwrap_or(now);
            members.push(Member {
                role,
                vm: Arc::from(crate::vmm::qemu::adopt(
                    role.name(),
                    rec.proc.clone(),
                    paths.qmp_socket(role.name()),
                )),
                // A backend that is gone is seen as dead: its VM is started again.
                vsock: Arc::new(std::sync::Mutex::new(VhostVsock::adopt(
                    role,
                    rec.vsock.clone(),
                ))),
                started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                started_at,
                // It ran under the daemon that died.
                ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            });
        }
        let vhost_bin = crate::paths::find_program("vhost-device-vsock").ok_or_else(|| {
            UpError::Precondition("vhost-device-vsock is missing: run ./setup.sh".into())
        })?;
        let stack = Stack {
            paths: paths.clone(),
            members: std::sync::Mutex::new(members),
            vhost_bin,
            jailer: paths.jailer(),
            images: images.clone(),
            backend: backend.name(),
            launcher: backend,
            users,
            accel,
            tor: file.tor.clone(),
            nft: crate::firewall::nft(),
            firewall: std::sync::Mutex::new((firewall, baseline)),
            watch: std::sync::Mutex::new(None),
            disks: file.disks.clone(),
            memory,
        };
        stack.write_state();
        Ok(stack)
    }

    /// Kill each running VM whose agent does not answer (a taken-over
    /// stack); the supervisor then starts it again. Which ones it killed.
    pub async fn kill_unresponsive(&self) -> Vec<Role> {
        let mut killed = Vec::new();
        for m in self.members() {
            if m.vm.exited().is_some() {
                continue;
            }
            let ok = match Agent::connect(&self.paths.vsock_uds(m.role.name()), m.role).await {
                Ok(mut a) => a.ping().await.is_ok(),
                Err(_) => false,
            };
            if !ok {
                m.vm.kill();
                wait_exit(&m.vm, Duration::from_secs(3)).await;
                killed.push(m.role);
            }
        }
        killed
    }

    /// The internal link's end for `role`: the App VM's QEMU gets a fresh
    /// listening socket, the Tor VM's QEMU dials it (and dials again when
    /// the App VM restarts); a restarted Tor VM dials the same listener.
    fn link_end(&self, role: Role) -> Result<NicLink, UpError> {
        let path = self.paths.link_socket();
        match role {
            Role::Torvm => Ok(NicLink::StreamConnect(path)),
            Role::Appvm => {
                let _ = std::fs::remove_file(&path);
                let l = std::os::unix::net::UnixListener::bind(&path).map_err(io_err(&path))?;
                // Only the Tor VM's QEMU (and root) may dial it; its
                // directory is the Tor VM user's, 0700.
                // lchown: the directory is another uid's.
                std::os::unix::fs::lchown(
                    &path,
                    Some(self.users.torvm.0),
                    Some(self.users.torvm.1),
                )
                .map_err(io_err(&path))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err(&path))?;
                Ok(NicLink::StreamListen(l.into()))
            }
        }
    }

    /// Start `role`'s vsock backend, then its QEMU (not waiting for its
    /// agent). Waits up to seconds for the backend's sockets: off the async
    /// workers.
    fn spawn(&self, role: Role) -> Result<Member, UpError> {
        let vsock = self.spawn_vsock(role)?;
        self.spawn_vm(role, vsock)
    }

    /// Start `role`'s vsock backend in its jail, not waiting for it.
    fn spawn_vsock(&self, role: Role) -> Result<VhostVsock, UpError> {
        Ok(VhostVsock::spawn(
            &self.jailer,
            &self.vhost_bin,
            &self.paths,
            role,
            self.users.vsock(role),
        )?)
    }

    /// Wait for `role`'s backend, then start its QEMU. On an error the
    /// backend is stopped.
    fn spawn_vm(&self, role: Role, mut vsock: VhostVsock) -> Result<Member, UpError> {
        tokio::task::block_in_place(|| {
            vsock.ready(&self.paths, self.users.vsock(role), self.users.vm(role))
        })?;
        let launched = self.link_end(role).and_then(|link| {
            Ok(self.launcher.launch(spec(
                role,
                self.memory.of(role),
                &self.paths,
                &self.images,
                self.accel,
                self.users.vm(role),
                link,
                self.tor.is_some(),
                self.disks.of(role),
            ))?)
        });
        let vm: Arc<dyn Vm> = match launched {
            Ok(vm) => Arc::from(vm),
            Err(e) => {
                vsock.stop();
                return Err(e);
            }
        };
        Ok(Member {
            role,
            vm,
            vsock: Arc::new(std::sync::Mutex::new(vsock)),
            started: Instant::now(),
            started_at: SystemTime::now(),
            ready: Arc::default(),
        })
    }

    fn ready_deadline(&self) -> Duration {
        match self.accel {
            Accel::Kvm => Duration::from_secs(60),
            Accel::Tcg => Duration::from_secs(180),
        }
    }

    async fn launch(&self, progress: Progress<'_>) -> Result<(), UpError> {
        for role in [Role::Appvm, Role::Torvm] {
            progress(format!("starting {role} ({})", self.accel.name()));
        }
        // Both backends start at once; then the App VM's QEMU first: it
        // holds the link's listening end, which the Tor VM's dials.
        let app_vsock = self.spawn_vsock(Role::Appvm)?;
        let tor_vsock = match self.spawn_vsock(Role::Torvm) {
            Ok(v) => v,
            Err(e) => {
                let mut app_vsock = app_vsock;
                app_vsock.stop();
                return Err(e);
            }
        };
        let app = match self.spawn_vm(Role::Appvm, app_vsock) {
            Ok(m) => m,
            Err(e) => {
                let mut tor_vsock = tor_vsock;
                tor_vsock.stop();
                return Err(e);
            }
        };
        lock(&self.members).push(app);
        // On an error here, up's error path stops the App VM.
        let tor = self.spawn_vm(Role::Torvm, tor_vsock)?;
        lock(&self.members).push(tor);
        self.write_state();
        let members = self.members();
        let deadline = self.ready_deadline();
        let waits = members.iter().map(|m| {
            wait_ready(
                &self.paths,
                m.role,
                m.vm.clone(),
                Announcement::new(m.role),
                deadline,
            )
        });
        let results = futures::future::join_all(waits).await;
        for (m, r) in members.iter().zip(results) {
            let agent = r?;
            m.set_ready();
            progress(format!(
                "{} ready in {:.1} s (agent {})",
                m.role,
                m.started.elapsed().as_secs_f64(),
                agent.version
            ));
        }
        if self.tor.is_some() {
            progress("starting tor in the Tor VM".into());
            self.start_tor().await?;
        }
        Ok(())
    }

    /// Start `role`'s VM again after its QEMU or its vsock backend died,
    /// the other VM running on: what is left of the two is stopped, then a
    /// new backend and a new QEMU on the same link (the survivor's end
    /// reconnects), then its agent, then (Tor VM) tor. The host table stays
    /// loaded throughout.
    pub async fn restart(&self, role: Role, progress: Progress<'_>) -> Result<(), UpError> {
        // Fail closed: no VM starts while the host table is not as loaded.
        if let Err(what) = tokio::task::block_in_place(|| self.firewall_intact()) {
            return Err(UpError::Precondition(format!(
                "the host firewall (table {}) {what}: not starting {role}",
                crate::firewall::table_name()
            )));
        }
        if let Some(old) = self.member(role) {
            stop_vm(&self.paths, &old, false).await;
        }
        let console = self.paths.console_log(role.name());
        let announced = Announcement::from_end(role, &console);
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(&console)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, b"\n---- tails-server: restarting this VM ----\n")
            });
        mkdir(&self.paths.vm_dir(role.name()), self.users.vm(role), 0o700)?;
        progress(format!("starting {role} again ({})", self.accel.name()));
        let m = self.spawn(role)?;
        {
            let mut members = lock(&self.members);
            members.retain(|x| x.role != role);
            members.push(m.clone());
        }
        self.write_state();
        let agent = wait_ready(
            &self.paths,
            role,
            m.vm.clone(),
            announced,
            self.ready_deadline(),
        )
        .await?;
        m.set_ready();
        progress(format!(
            "{role} ready again in {:.1} s (agent {})",
            m.started.elapsed().as_secs_f64(),
            agent.version
        ));
        if role == Role::Torvm && self.tor.is_some() {
            self.start_tor().await?;
        }
        Ok(())
    }

    fn members(&self) -> Vec<Member> {
        lock(&self.members).clone()
    }

    /// The network the Tor VM's tor joins, as chosen at `up`.
    pub fn network(&self) -> Network {
        match self.tor.as_ref().map(|t| &t.network) {
            None => Network::None,
            Some(TorNetwork::Public) => Network::Public,
            Some(TorNetwork::Local { .. }) => Network::Local,
        }
    }

    /// Order the Tor VM's agent to start tor with the stack's configuration.
    async fn start_tor(&self) -> Result<(), UpError> {
        let Some(cfg) = self.tor.clone() else {
            return Ok(());
        };
        let fail = |reason: String| UpError::VmFailed {
            vm: Role::Torvm,
            reason,
            log: self.paths.console_log("torvm").display().to_string(),
        };
        let mut a = Agent::connect(&self.paths.vsock_uds("torvm"), Role::Torvm)
            .await
            .map_err(|e| fail(e.to_string()))?;
        a.start_tor(cfg)
            .await
            .map_err(|e| fail(format!("cannot start tor: {e}")))
    }

    /// Tor's bootstrap progress, as the Tor VM's agent reports it.
    pub async fn tor_progress(&self) -> Result<TorProgress, StackError> {
        if self.tor.is_none() {
            return Err(StackError::NoUplink);
        }
        let mut a = self.agent(Role::Torvm).await?;
        a.tor_status().await.map_err(agent_err(Role::Torvm))
    }

    /// The processes of the stack (for the state file).
    pub fn processes(&self) -> Vec<crate::proc::ProcId> {
        let mut pids: Vec<u32> = Vec::new();
        for m in self.members() {
            pids.extend(m.vm.pid());
            pids.push(lock(&m.vsock).pid());
        }
        pids.into_iter()
            .filter_map(crate::proc::ProcId::of)
            .collect()
    }

    fn write_state(&self) {
        let members = self
            .members()
            .iter()
            .filter_map(|m| {
                Some(MemberRecord {
                    role: m.role,
                    proc: crate::proc::ProcId::of(m.vm.pid()?)?,
                    vsock: lock(&m.vsock).proc_id()?,
                    started: unix_secs(m.started_at),
                })
            })
            .collect();
        let st = StateFile {
            daemon_pid: std::process::id(),
            processes: self.processes(),
            members,
            accel: Some(self.accel),
            tor: self.tor.clone(),
            firewall: Some(lock(&self.firewall).0.clone()),
            disks: self.disks.clone(),
        };
        if let Err(e) = crate::store::write_json(&self.paths.state_file(), &st) {
            crate::log(format!("cannot write the stack's state file: {e}"));
        }
    }

    /// The first part of the stack found dead, and how it ended; `None`
    /// while all of it runs.
    pub fn dead_part(&self) -> Option<(Part, String)> {
        for m in &self.members() {
            if let Some(how) = m.vm.exited() {
                return Some((Part::Vm(m.role), how));
            }
            if let Some(how) = lock(&m.vsock).exited() {
                return Some((Part::Vsock(m.role), how));
            }
        }
        None
    }

    fn member(&self, role: Role) -> Option<Member> {
        lock(&self.members).iter().find(|m| m.role == role).cloned()
    }

    /// Run a command in `role`'s guest through its agent.
    pub async fn exec(
        &self,
        role: Role,
        argv: Vec<String>,
        timeout: Duration,
        stdin: Vec<u8>,
    ) -> Result<ExecOutput, StackError> {
        let mut agent = self.agent(role).await?;
        agent.exec(argv, timeout, stdin).await.map_err(|e| {
            crate::log(format!("{role} agent: {e}"));
            StackError::Agent { role, source: e }
        })
    }

    /// An agent of a running VM, or why there is none.
    async fn agent(&self, role: Role) -> Result<Agent, StackError> {
        let m = self.member(role).ok_or(StackError::NotPart { role })?;
        if let Some(how) = m.vm.exited() {
            return Err(StackError::Down { role, how });
        }
        if !m.is_ready() {
            return Err(StackError::Booting { role });
        }
        Agent::connect(&self.paths.vsock_uds(role.name()), role)
            .await
            .map_err(agent_err(role))
    }

    /// App VM: start, stop or query a service; whether it runs.
    pub async fn service(
        &self,
        msg: tails_proto::msg::HostMsg,
        name: &str,
    ) -> Result<bool, StackError> {
        let mut a = self.agent(Role::Appvm).await?;
        a.service(msg, name).await.map_err(agent_err(Role::Appvm))
    }

    /// Tor VM: publish an onion service; tor's service id and uploads.
    pub async fn publish_onion(
        &self,
        req: tails_proto::msg::OnionPublish,
    ) -> Result<(String, u32), StackError> {
        if self.tor.is_none() {
            return Err(StackError::NoUplink);
        }
        let mut a = self.agent(Role::Torvm).await?;
        a.publish_onion(req).await.map_err(agent_err(Role::Torvm))
    }

    /// Tor VM: take an onion service down.
    pub async fn remove_onion(&self, service_id: &str) -> Result<(), StackError> {
        let mut a = self.agent(Role::Torvm).await?;
        a.remove_onion(service_id)
            .await
            .map_err(agent_err(Role::Torvm))
    }

    /// State of each VM's vsock backend: `running` or how it ended.
    pub fn vsock_state(&self) -> String {
        let mut members = self.members();
        members.sort_by_key(|m| m.role.name());
        members
            .iter()
            .map(|m| {
                let state = match lock(&m.vsock).exited() {
                    None => "running".to_string(),
                    Some(how) => format!("down ({how})"),
                };
                format!("{} {state}", m.role.name())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Status of each VM, asked of the hypervisor and the agent.
    pub async fn status(&self) -> Vec<VmStatus> {
        let mut out = Vec::new();
        for m in &self.members() {
            let console_log = self.paths.console_log(m.role.name()).display().to_string();
            if let Some(how) = m.vm.exited() {
                out.push(VmStatus {
                    name: m.role,
                    state: format!("down (QEMU {how})"),
                    agent: "down".into(),
                    uptime_secs: None,
                    memory_mib: None,
                    accel: None,
                    pid: None,
                    console_log,
                    restarts: 0,
                    tor: None,
                });
                continue;
            }
            let vm = m.vm.clone();
            let info = tokio::task::spawn_blocking(move || vm.info()).await;
            let (state, memory_mib, accel) = match info {
                Ok(Ok(i)) => (i.state, Some(i.memory_mib), Some(i.accel)),
                Ok(Err(e)) => (format!("unknown ({e})"), None, None),
                Err(_) => ("unknown (QMP query failed)".into(), None, None),
            };
            let agent = if !m.is_ready() {
                "starting (dialled once it announces itself)".to_string()
            } else {
                match Agent::connect(&self.paths.vsock_uds(m.role.name()), m.role).await {
                    Ok(mut a) => a
                        .ping()
                        .await
                        .map(|_| format!("ready (agent {})", a.version)),
                    Err(e) => Err(e),
                }
                .unwrap_or_else(|e| {
                    crate::log(format!("{} agent: {e}", m.role));
                    format!("unreachable ({e})")
                })
            };
            out.push(VmStatus {
                name: m.role,
                state,
                agent,
                uptime_secs: Some(m.started.elapsed().as_secs()),
                memory_mib,
                accel,
                pid: m.vm.pid(),
                console_log,
                restarts: 0,
                tor: match (m.role, &self.tor) {
                    (Role::Torvm, Some(_)) if m.is_ready() => {
                        Some(self.tor_progress().await.unwrap_or_else(|e| TorProgress {
                            progress: 0,
                            summary: e.to_string(),
                            running: false,
                        }))
                    }
                    _ => None,
                },
            });
        }
        out
    }

    /// Stop the stack: agent power-off, then ACPI power-down, then QMP quit,
    /// then SIGKILL, each after a timeout; then vhost-device-vsock; then,
    /// once nothing of it runs, the host table.
    pub async fn down(&self) {
        self.stop_watch();
        self.stop_processes(true).await;
        if let Err(e) = crate::firewall::remove(&self.nft) {
            crate::log(format!("removing the host firewall: {e}"));
        }
        let _ = std::fs::remove_file(self.paths.state_file());
    }

    /// Stop what is left of a stack that is to be started again at once:
    /// quickly, and with the host table left in place (fail closed).
    pub async fn stop_for_restart(&self) {
        self.stop_watch();
        self.stop_processes(false).await;
        let _ = std::fs::remove_file(self.paths.state_file());
    }

    /// Both VMs at once: each waits for its own guest's power-off and its
    /// backend's end, and neither needs the other for it. (The host table
    /// stays until `down` has seen both gone.)
    async fn stop_processes(&self, graceful: bool) {
        let members = self.members();
        futures::future::join_all(members.iter().map(|m| stop_vm(&self.paths, m, graceful))).await;
    }

    /// Start the host firewall's watchdog ([`crate::firewall_watch`]); it
    /// ends with the stack.
    pub fn watch_firewall(self: &Arc<Self>, report: crate::firewall_watch::Report) {
        let task = tokio::spawn(crate::firewall_watch::watch(Arc::downgrade(self), report));
        if let Some(old) = lock(&self.watch).replace(task) {
            old.abort();
        }
    }

    fn stop_watch(&self) {
        if let Some(t) = lock(&self.watch).take() {
            t.abort();
        }
    }

    /// `Ok` while the host table is loaded exactly as it was; what happened
    /// to it otherwise, in words.
    pub fn firewall_intact(&self) -> Result<(), String> {
        let fw = lock(&self.firewall);
        match tails_nft::list(tails_nft::host::FAMILY, tails_nft::host::TABLE, &self.nft) {
            Ok(Some(info)) if tails_nft::fingerprint(&info) == fw.1 => Ok(()),
            Ok(Some(_)) => Err("was changed".into()),
            Ok(None) => Err("was removed".into()),
            Err(e) => Err(format!("cannot be read ({e})")),
        }
    }

    /// Load the host table again, as it was made at `up`.
    pub fn restore_firewall(&self) -> Result<(), String> {
        let fw = lock(&self.firewall);
        crate::firewall::apply(&fw.0, &self.nft).map_err(|e| e.to_string())
    }

    /// The ports the host's relay listens on (allow-localhost on loopback,
    /// allow-lan on the local network): the host table accepts them only
    /// from there. Loaded (and the watchdog's baseline taken) before a
    /// listener opens, and after the last one closed.
    pub fn set_relay_ports(&self, localhost: Vec<u16>, lan: Vec<u16>) -> Result<(), UpError> {
        let mut fw = lock(&self.firewall);
        if fw.0.relay_localhost == localhost && fw.0.relay_lan == lan {
            return Ok(());
        }
        let mut params = fw.0.clone();
        params.relay_localhost = localhost;
        params.relay_lan = lan;
        let baseline = tokio::task::block_in_place(|| load_firewall(&params, &self.nft))?;
        *fw = (params, baseline);
        drop(fw);
        self.write_state();
        Ok(())
    }

    /// Freeze every running VM (QMP `stop`), both at once.
    pub async fn pause_vms(&self) {
        self.each_vm(|vm| vm.pause()).await;
    }

    /// Let the frozen VMs run on (QMP `cont`).
    pub async fn resume_vms(&self) {
        self.each_vm(|vm| vm.resume()).await;
    }

    /// Kill every VM's QEMU at once (the supervisor sees them dead).
    pub async fn kill_vms(&self) {
        self.each_vm(|vm| {
            vm.kill();
            Ok(())
        })
        .await;
    }

    async fn each_vm(
        &self,
        f: impl Fn(&dyn Vm) -> Result<(), crate::vmm::VmmError> + Send + Sync + Copy + 'static,
    ) {
        let calls = self.members().into_iter().map(|m| {
            tokio::task::spawn_blocking(move || {
                if m.vm.exited().is_none() {
                    if let Err(e) = f(m.vm.as_ref()) {
                        crate::log(format!("{}: {e}", m.role));
                    }
                }
            })
        });
        futures::future::join_all(calls).await;
    }

    /// Can the App VM reach anything now? Only through a running Tor VM.
    pub fn path_out(&self) -> String {
        match self.member(Role::Torvm).and_then(|m| m.vm.exited()) {
            Some(how) => {
                format!("cut: the Tor VM is down (QEMU {how}); the App VM reaches nothing")
            }
            None if self.tor.is_none() => {
                "none: the Tor VM has no uplink; the App VM reaches nothing".into()
            }
            None => "through the Tor VM's tor only".into(),
        }
    }
}

/// Load the host table for `params`; what it reads back as (the watchdog's
/// reference).
fn load_firewall(
    params: &tails_nft::host::Params,
    nft: &Path,
) -> Result<Vec<serde_json::Value>, UpError> {
    let err = |source| UpError::Firewall {
        table: crate::firewall::table_name(),
        source,
    };
    crate::firewall::apply(params, nft).map_err(err)?;
    match tails_nft::list(tails_nft::host::FAMILY, tails_nft::host::TABLE, nft).map_err(err)? {
        Some(info) => Ok(tails_nft::fingerprint(&info)),
        None => Err(UpError::Precondition(format!(
            "the host table {} is not there right after it was loaded",
            crate::firewall::table_name()
        ))),
    }
}

async fn wait_exit(vm: &Arc<dyn Vm>, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if vm.exited().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    vm.exited().is_some()
}

/// Stop `m`'s QEMU, then its vsock backend.
async fn stop_vm(paths: &Paths, m: &Member, graceful: bool) {
    stop_qemu(paths, m, graceful).await;
    let vsock = m.vsock.clone();
    let _ = tokio::task::spawn_blocking(move || lock(&vsock).stop()).await;
}

async fn stop_qemu(paths: &Paths, m: &Member, graceful: bool) {
    if m.vm.exited().is_some() {
        return;
    }
    if graceful && m.is_ready() {
        if let Ok(mut a) = Agent::connect(&paths.vsock_uds(m.role.name()), m.role).await {
            if a.power_off().await.is_ok() && wait_exit(&m.vm, Duration::from_secs(10)).await {
                return;
            }
        }
        let vm = m.vm.clone();
        if let Ok(Ok(())) = tokio::task::spawn_blocking(move || vm.powerdown()).await {
            if wait_exit(&m.vm, Duration::from_secs(5)).await {
                return;
            }
        }
    }
    let vm = m.vm.clone();
    let _ = tokio::task::spawn_blocking(move || vm.quit()).await;
    if wait_exit(&m.vm, Duration::from_secs(3)).await {
        return;
    }
    m.vm.kill();
    wait_exit(&m.vm, Duration::from_secs(3)).await;
}

/// Remove the runtime directory's contents that belong to the stack and the
/// daemon (the directory itself too).
pub fn remove_runtime(paths: &Paths) {
    let _ = std::fs::remove_dir_all(&paths.runtime);
}

/// [`remove_runtime`], but for the control socket, which is systemd's
/// (socket activation: it listens on it for the next daemon).
pub fn remove_runtime_but_socket(paths: &Paths) {
    let sock = paths.control_socket();
    let Ok(entries) = std::fs::read_dir(&paths.runtime) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p == sock {
            continue;
        }
        let _ = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

/// Remove the stack's runtime files (sockets, VM directories), not the
/// daemon's: before the stack starts again.
pub fn remove_stack_files(paths: &Paths) {
    let _ = std::fs::remove_dir_all(paths.vsock_dir());
    let _ = std::fs::remove_dir_all(paths.link_dir());
    let _ = std::fs::remove_dir_all(paths.jail_dir());
    for vm in ["torvm", "appvm"] {
        let _ = std::fs::remove_dir_all(paths.vm_dir(vm));
    }
    let _ = std::fs::remove_file(paths.state_file());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn vm_memory_comes_from_the_environment_or_is_refused_in_one_line() {
        let vars = |t: Option<&str>, a: Option<&str>| {
            let (t, a) = (t.map(String::from), a.map(String::from));
            Memory::from_vars(move |v| match v {
                "TAILS_SERVER_TORVM_MIB" => t.clone(),
                "TAILS_SERVER_APPVM_MIB" => a.clone(),
                _ => None,
            })
        };
        assert_eq!(vars(None, None).expect("defaults"), Memory::DEFAULT);
        let m = vars(Some("144"), Some(" 256\n")).expect("sizes");
        assert_eq!((m.of(Role::Torvm), m.of(Role::Appvm)), (144, 256));
        for bad in ["", "abc", "-1", "12", "1e3", "99999999"] {
            let e = vars(Some(bad), None).expect_err(bad).to_string();
            assert!(
                e.starts_with("TAILS_SERVER_TORVM_MIB=")
                    && e.contains("unset it")
                    && !e.contains('\n'),
                "{bad}: {e}"
            );
        }
        assert!(vars(None, Some("0")).is_err());
    }

    #[test]
    fn announcement_is_found_across_appends() {
        let path = std::env::temp_dir().join(format!("ts-console-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).expect("create");
        let mut a = Announcement::new(Role::Appvm);
        assert!(!a.seen(&path));
        f.write_all(b"[ 1.0] booting\n[ 2.0] tails-agent: appvm agent liste")
            .expect("write");
        assert!(!a.seen(&path), "half a line is not the line");
        f.write_all(b"ning on vsock port 1024\n").expect("write");
        assert!(a.seen(&path), "the line straddling two reads");
        // The Tor VM's line does not announce the App VM.
        let mut t = Announcement::new(Role::Torvm);
        assert!(!t.seen(&path));
        let _ = std::fs::remove_file(&path);
        assert!(!Announcement::new(Role::Appvm).seen(&path), "no log yet");
    }
}
