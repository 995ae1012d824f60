//! Where a boot's time goes inside each guest, read from the agents' own
//! console lines (`[    2.31] tails-agent: <what>`, the guest's uptime):
//! the kernel up to /init, the modules, the root file system, the firewall,
//! the network, and the agent listening on vsock.

/// Each phase and the words of the agent line that ends it, in boot order.
pub const PHASES: &[(&str, &str)] = &[
    ("kernel, to /init", "init started"),
    ("modules", "loaded "),
    ("root file system (squashfs)", "mounted "),
    ("sysctls, firewall (over netlink)", "firewall loaded"),
    ("network (rtnetlink)", " is 10."),
    ("agent listening on vsock", "listening on vsock"),
];

/// The agent lines of the last boot in `log`: (uptime, message).
fn last_boot(log: &str) -> Vec<(f64, &str)> {
    let lines: Vec<(f64, &str)> = log
        .lines()
        .filter_map(|l| {
            let (up, msg) = l.split_once("] tails-agent: ")?;
            let up = up.trim_start_matches('[').trim().parse().ok()?;
            Some((up, msg))
        })
        .collect();
    let start = lines
        .iter()
        .rposition(|(_, m)| m.starts_with(PHASES[0].1))
        .unwrap_or(lines.len());
    lines[start..].to_vec()
}

/// How long each of [`PHASES`] took in the last boot logged in `log`, in
/// seconds (`None` where its line is missing).
pub fn durations(log: &str) -> Vec<Option<f64>> {
    let lines = last_boot(log);
    let mut at = 0;
    let mut before = 0.0;
    PHASES
        .iter()
        .map(|(_, words)| {
            let i = lines[at..].iter().position(|(_, m)| m.contains(words))?;
            at += i;
            let t = lines[at].0;
            let d = t - before;
            before = t;
            Some(d)
        })
        .collect()
}

/// The uptime at which the agent of the last boot in `log` listened.
pub fn ready_at(log: &str) -> Option<f64> {
    last_boot(log)
        .iter()
        .find(|(_, m)| m.contains(PHASES[PHASES.len() - 1].1))
        .map(|(t, _)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[    2.80] tails-agent: init started
[    3.47] tails-agent: loaded 38 modules
[    9.00] tails-agent: power-off ordered by the host
[    3.763967] reboot: Power down
[    2.31] tails-agent: init started
[    2.92] tails-agent: loaded 38 modules
[    2.95] tails-agent: mounted /usr (squashfs, read-only)
[    3.31] tails-agent: firewall loaded in 0.35 s (internal eth0, uplink none)
[    3.35] tails-agent: eth0 is 10.1.2.1/24
[    3.35] tails-agent: no NIC 52:54:00:12:34:56: skipped
[    3.36] tails-agent: torvm agent listening on vsock port 1024
";

    #[test]
    fn the_last_boot_is_split_into_phases() {
        let d = durations(LOG);
        let want = [2.31, 0.61, 0.03, 0.36, 0.04, 0.01];
        assert_eq!(d.len(), want.len());
        for (got, want) in d.iter().zip(want) {
            let got = got.expect("every phase has its line");
            assert!((got - want).abs() < 1e-9, "{got} != {want}");
        }
        assert_eq!(ready_at(LOG), Some(3.36));
    }

    #[test]
    fn a_missing_line_leaves_its_phase_out_and_the_next_counts_from_the_last_seen() {
        let log = "[ 1.0] tails-agent: init started\n[ 1.5] tails-agent: loaded 3 modules\n\
                   [ 2.5] tails-agent: firewall loaded in 0.9 s\n";
        let d = durations(log);
        assert_eq!(d[2], None);
        assert!((d[3].unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(d[4], None);
        assert_eq!(ready_at(log), None);
        assert!(durations("no agent here").iter().all(Option::is_none));
    }
}
