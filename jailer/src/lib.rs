//! The jailer: starts one process of the stack (a VM's QEMU, a VM's vsock
//! backend) alone in namespaces of its own, with only the files it needs, no
//! capability, an unprivileged uid, `PR_SET_NO_NEW_PRIVS`, rlimits, a
//! cgroup and, for the vsock backends, a seccomp filter.
//!
//! The host agent writes a [`JailSpec`] and runs `tails-jailer SPEC-JSON`
//! as root; see [`jail`] for what happens then.

pub mod cgroup;
pub mod jail;
pub mod logpump;
pub mod policy;
pub mod spec;

pub use spec::{Bind, JailSpec, Limits, LogSpec, Net, Policy};

/// Where setup.sh installs the jailer.
pub const DEFAULT_PATH: &str = "/usr/local/lib/tails-server/tails-jailer";
