//! The host firewall's watchdog. While a stack runs, `nft monitor` reports
//! every change to the ruleset as it happens (netlink events, not a poll);
//! after each, table `inet tails_server` is read back and compared with
//! what was loaded ([`tails_nft::fingerprint`]: chains and rules, not the
//! counters). If it is gone or differs (`nft flush ruleset`, a reload of
//! Debian's nftables service, a rule added by hand), both VMs are frozen
//! (QMP `stop`: they send nothing), the table is loaded again and checked,
//! and the VMs go on (QMP `cont`). If that fails, both VMs are killed (the
//! supervisor then starts the stack again, which fails closed without the
//! table) and the reason is reported.

use crate::stack::Stack;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// How long a burst of events (one nft batch makes several) is let settle
/// before the table is read.
const SETTLE: Duration = Duration::from_millis(20);

/// What the watchdog reports (incidents, in words).
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// Watch `stack`'s table until the stack is gone or the task is aborted.
pub async fn watch(stack: Weak<Stack>, report: Report) {
    let nft = crate::firewall::nft();
    loop {
        let mut cmd = tokio::process::Command::new(&nft);
        cmd.arg("monitor")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe. A daemon killed with -9 leaves
        // no monitor behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                report(format!(
                    "cannot watch the host firewall (nft monitor: {e}); trying again"
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(out) = child.stdout.take() else {
            continue;
        };
        let mut lines = tokio::io::BufReader::new(out).lines();
        // A change made before the monitor listened is caught here.
        if !check(&stack, &report).await {
            return;
        }
        while let Ok(Some(_)) = lines.next_line().await {
            // Take the rest of the burst.
            while let Ok(Ok(Some(_))) = tokio::time::timeout(SETTLE, lines.next_line()).await {}
            if !check(&stack, &report).await {
                return;
            }
        }
        report("nft monitor ended; watching the host firewall again".into());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Check the table, and restore it if it changed; `false` once the stack
/// is gone.
async fn check(stack: &Weak<Stack>, report: &Report) -> bool {
    let Some(s) = stack.upgrade() else {
        return false;
    };
    let probe = s.clone();
    let intact = tokio::task::spawn_blocking(move || probe.firewall_intact()).await;
    let what = match intact {
        Ok(Ok(())) => return true,
        Ok(Err(what)) => what,
        Err(e) => format!("cannot be read ({e})"),
    };
    let t0 = Instant::now();
    s.pause_vms().await;
    let fixer = s.clone();
    let restored = tokio::task::spawn_blocking(move || {
        fixer.restore_firewall()?;
        fixer.firewall_intact()
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match restored {
        Ok(()) => {
            s.resume_vms().await;
            report(format!(
                "the host firewall (table {}) {what}: both VMs were frozen, the table loaded again and checked, and the VMs resumed ({} ms)",
                crate::firewall::table_name(),
                t0.elapsed().as_millis()
            ));
        }
        Err(e) => {
            s.kill_vms().await;
            report(format!(
                "the host firewall (table {}) {what} and cannot be loaded again ({e}): both VMs were stopped",
                crate::firewall::table_name()
            ));
        }
    }
    true
}
