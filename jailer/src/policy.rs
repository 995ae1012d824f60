//! The seccomp filters the jailer installs, as BPF (seccompiler).
//!
//! vhost-device-vsock's list was taken from a full run of the stack under
//! `strace -f` (start, a VM's restart, exec traffic both ways, stop), plus
//! `connect` (a guest dialling the host, which the leak probe does), and
//! then narrowed: sockets only of `AF_UNIX`, `ioctl` only `FIONBIO`/`FIOCLEX`/`TCGETS`,
//! `prctl` only `PR_SET_NAME`, `clone` only for threads. `clone3` (whose
//! flags sit in memory, out of a filter's reach) answers `ENOSYS`, so glibc
//! falls back to `clone`, whose flags are checked (Firecracker does the
//! same). Anything else kills the process. `execve` stays allowed: the
//! filter is installed before the program is executed; in its jail there is
//! nothing else to execute.

use crate::spec::Policy;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot compile the seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
    #[error("seccomp filters exist for x86_64 only")]
    Arch,
}

fn arch() -> Result<TargetArch, PolicyError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(PolicyError::Arch)
    }
}

/// Syscalls allowed whatever their arguments.
const VSOCK_PLAIN: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_openat,
    libc::SYS_access,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_arch_prctl,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_prlimit64,
    libc::SYS_getrandom,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_bind,
    libc::SYS_listen,
    // A guest's connection to the host (CID 2, port P) is a connect to
    // `<uds-path>_P`, in its own directory: sockets are AF_UNIX only.
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_execve,
    // clone3 is let through here and answered ENOSYS by the second filter.
    libc::SYS_clone3,
];

fn cond(arg: u8, op: Op, value: u64) -> Result<SeccompCondition, PolicyError> {
    Ok(SeccompCondition::new(arg, Len::Dword, op, value)?)
}

fn one(arg: u8, op: Op, value: u64) -> Result<SeccompRule, PolicyError> {
    Ok(SeccompRule::new(vec![cond(arg, op, value)?])?)
}

fn vsock_backend() -> Result<Vec<BpfProgram>, PolicyError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        VSOCK_PLAIN.iter().map(|s| (*s, vec![])).collect();
    rules.insert(
        libc::SYS_socket,
        vec![one(0, Op::Eq, libc::AF_UNIX as u64)?],
    );
    rules.insert(
        libc::SYS_ioctl,
        vec![
            one(1, Op::Eq, libc::FIONBIO)?,
            one(1, Op::Eq, libc::FIOCLEX)?,
            // isatty(3) of its log.
            one(1, Op::Eq, libc::TCGETS)?,
        ],
    );
    rules.insert(
        libc::SYS_prctl,
        vec![one(0, Op::Eq, libc::PR_SET_NAME as u64)?],
    );
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(libc::SYS_clone, vec![one(0, Op::MaskedEq(thread), thread)?]);
    let allow: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch()?,
    )?
    .try_into()?;
    let no_clone3: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )?
    .try_into()?;
    // The lenient one first: installing the strict one calls prctl itself.
    Ok(vec![no_clone3, allow])
}

/// The filters of `policy`, to be installed in this order (the kernel runs
/// all of them and the strictest answer wins).
pub fn filters(policy: Policy) -> Result<Vec<BpfProgram>, PolicyError> {
    match policy {
        Policy::VsockBackend => vsock_backend(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vsock_policy_compiles() {
        let f = filters(Policy::VsockBackend).expect("filters");
        assert_eq!(f.len(), 2);
        assert!(
            f[1].len() > VSOCK_PLAIN.len(),
            "one check per syscall at least"
        );
    }
}
