//! The one interface through which the host launches and controls VMs.
//!
//! [`Backend`] turns a [`VmSpec`] (what the VM is: memory, kernel, disks,
//! NICs, identity) into a running [`Vm`]. QEMU driven over QMP ([`qemu`]) is
//! the embedded default; a libvirt backend implements the same two traits.

pub mod qemu;

use crate::accel::Accel;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// A disk given to the guest.
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
    /// Fixed serial the guest sees (never host-derived).
    pub serial: String,
}

/// Where a NIC's frames go.
#[derive(Debug)]
pub enum NicLink {
    /// The listening end of the internal link: a Unix stream socket the
    /// host bound and listens on, handed over as a descriptor. QEMU accepts
    /// the other VM's QEMU, and accepts it again after that one restarted.
    StreamListen(OwnedFd),
    /// The dialling end: QEMU connects to the listening end at this path (a
    /// directory only the host and this VM's user reach), and connects again
    /// when the other end goes away (a restarted VM).
    StreamConnect(PathBuf),
    /// QEMU user-mode networking (slirp): the VM's connections out are made by
    /// the VM's QEMU process, as its unprivileged user. No host interface.
    User,
}

#[derive(Debug)]
pub struct Nic {
    pub mac: String,
    pub link: NicLink,
}

/// The identity a guest may observe, fixed so that it reveals nothing of the host.
#[derive(Debug, Clone)]
pub struct Identity {
    /// A named CPU model, never host passthrough.
    pub cpu_model: String,
    pub system_uuid: String,
    pub manufacturer: String,
    pub product: String,
}

/// Everything a backend needs to start one VM.
#[derive(Debug)]
pub struct VmSpec {
    pub name: String,
    /// Unprivileged user (and its group) the VM process runs as.
    pub uid: u32,
    pub gid: u32,
    /// Its supplementary groups (exactly these; `kvm` when KVM is used).
    pub groups: Vec<u32>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// vhost-user socket of this VM's vsock device.
    pub vhost_vsock: PathBuf,
    /// The VM's private directory (QMP socket), owned by `uid`.
    pub dir: PathBuf,
    /// The empty mount point its jail's root is built on.
    pub jail_root: PathBuf,
    pub console_log: PathBuf,
    pub identity: Identity,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{vm}: control channel: {detail}")]
    Control { vm: String, detail: String },
    #[error("{vm} is not running")]
    NotRunning { vm: String },
}

/// What the backend knows of a VM.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmInfo {
    /// The hypervisor's run state (QMP `query-status`: running, paused, shutdown…).
    pub state: String,
    pub memory_mib: u64,
    pub accel: String,
}

/// Launches VMs.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn launch(&self, spec: VmSpec) -> Result<Box<dyn Vm>, VmmError>;
}

/// A launched VM.
pub trait Vm: Send + Sync {
    /// Host process id of the VM, when the backend has one.
    fn pid(&self) -> Option<u32>;
    /// `None` while the VM runs; how it ended otherwise.
    fn exited(&self) -> Option<String>;
    /// Ask the hypervisor for the VM's state.
    fn info(&self) -> Result<VmInfo, VmmError>;
    /// ACPI power button.
    fn powerdown(&self) -> Result<(), VmmError>;
    /// Freeze the guest's CPUs (QMP `stop`): it runs nothing, sends nothing.
    fn pause(&self) -> Result<(), VmmError>;
    /// Let a frozen guest run on (QMP `cont`).
    fn resume(&self) -> Result<(), VmmError>;
    /// Stop the hypervisor now.
    fn quit(&self) -> Result<(), VmmError>;
    /// Last resort: kill the hypervisor process.
    fn kill(&self);
}
