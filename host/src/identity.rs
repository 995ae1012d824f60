//! `tails-server identity`: what the App VM can see of the machine it runs
//! on, and a fingerprint of it.
//!
//! The App VM's identity is fixed (DESIGN.md, "Fixed identity"): the same
//! DMI strings, system UUID, CPU model and flags, MAC, PCI devices, disk
//! serials, kernel command line, host name and time zone on every machine and
//! every run. This module collects those facts inside the App VM (a POSIX
//! shell script run through the agent), parses the answer as hostile input
//! (bounded, printable, strictly `key<TAB>value` lines), and hashes it, so two
//! runs can be compared by one line.
//!
//! Values that change by themselves (BogoMIPS, clock frequency, uptime) are
//! not collected: they say nothing about the host's identity under TCG and
//! would make every fingerprint different.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The script run in the App VM. Every line of its output is
/// `key<TAB>value`; keys are unique.
pub const SCRIPT: &str = r#"
set -u
emit() { printf '%s\t%s\n' "$1" "$2"; }
for f in sys_vendor product_name product_version product_serial product_uuid product_family product_sku \
         board_vendor board_name board_version board_serial board_asset_tag \
         chassis_vendor chassis_type chassis_version chassis_serial chassis_asset_tag \
         bios_vendor bios_version bios_date bios_release; do
  v=$(cat /sys/class/dmi/id/$f 2>/dev/null) || v='(none)'
  emit "dmi.$f" "$v"
done
for k in 'vendor_id' 'cpu family' 'model' 'model name' 'stepping' 'microcode' 'cache size' 'flags' 'address sizes'; do
  v=$(grep -m1 "^$k[[:space:]]*:" /proc/cpuinfo | sed 's/^[^:]*:[[:space:]]*//')
  emit "cpu.$(echo "$k" | tr ' ' '_')" "$v"
done
emit cpu.count "$(grep -c '^processor' /proc/cpuinfo)"
emit mem.total "$(grep -m1 '^MemTotal:' /proc/meminfo | tr -s ' ')"
for n in /sys/class/net/*; do
  i=${n##*/}
  [ "$i" = lo ] && continue
  emit "net.$i.mac" "$(cat $n/address)"
done
for d in /sys/bus/pci/devices/*; do
  emit "pci.${d##*/}" "$(cat $d/vendor):$(cat $d/device) sub $(cat $d/subsystem_vendor):$(cat $d/subsystem_device) class $(cat $d/class)"
done
for b in /sys/block/*; do
  i=${b##*/}
  case $i in loop*|ram*|zram*) continue;; esac
  s=$(cat $b/serial 2>/dev/null) || s=$(cat $b/device/serial 2>/dev/null) || s='(none)'
  emit "disk.$i.serial" "$s"
  emit "disk.$i.size" "$(cat $b/size)"
done
emit kernel.cmdline "$(cat /proc/cmdline)"
emit kernel.release "$(uname -r)"
emit host.name "$(cat /proc/sys/kernel/hostname)"
emit host.domain "$(cat /proc/sys/kernel/domainname)"
emit time.zone "$(date +%Z%z)"
emit time.localtime "$(readlink -f /etc/localtime 2>/dev/null || echo '(none)')"
emit machine_id "$(cat /etc/machine-id 2>/dev/null || echo '(none)')"
emit apt.sources "$(cat /etc/apt/sources.list 2>/dev/null | tr '\n' '|')"
emit apt.sources_d "$(ls /etc/apt/sources.list.d 2>/dev/null | tr '\n' ' ')"
emit apt.conf_d "$(ls /etc/apt/apt.conf.d 2>/dev/null | tr '\n' ' ')"
"#;

/// What `identity` says of the App VM's clock: the window it is moved in
/// at each boot, never a time.
pub fn clock_window() -> String {
    format!(
        "moved at each boot, before any service starts, by a random {} to {} s earlier or later (boot clock randomization, as in Whonix); the Tor VM's clock is exact, for tor",
        tails_proto::CLOCK_OFFSET_MIN_MS as f64 / 1000.0,
        tails_proto::CLOCK_OFFSET_MAX_MS / 1000
    )
}

/// What the App VM can observe that cannot be pinned on every host.
pub const UNPINNED: &[&str] = &[
    "the accelerator: under KVM the CPUID hypervisor leaf says KVM and the paravirtual clock (kvmclock) is there, under TCG neither",
    "the TSC frequency under TCG, and under KVM on a host without TSC scaling",
    "the host CPU's speed and its load, through timing (BogoMIPS, how fast code runs)",
    "which CPU vulnerabilities the guest kernel reports (/sys/devices/system/cpu/vulnerabilities), as the host's microcode decides under KVM",
];

/// At most this many facts.
const MAX_FACTS: usize = 512;
/// Longest key and value accepted.
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 4096;

/// What the App VM sees, key by key.
pub type Facts = BTreeMap<String, String>;

/// Parse the script's output; any line that breaks the format is refused
/// with a one-line reason (nothing of a hostile guest is trusted).
pub fn parse(out: &[u8]) -> Result<Facts, String> {
    let text = std::str::from_utf8(out).map_err(|_| "the App VM's answer is not UTF-8")?;
    let mut facts = Facts::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let (k, v) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {n} of the App VM's answer is not key<TAB>value"))?;
        let key_ok = !k.is_empty()
            && k.len() <= MAX_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
        if !key_ok {
            return Err(format!(
                "line {n} of the App VM's answer has a malformed key"
            ));
        }
        if v.len() > MAX_VALUE || v.chars().any(|c| c.is_control()) {
            return Err(format!(
                "line {n} of the App VM's answer has an overlong or unprintable value"
            ));
        }
        if facts.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("line {n} of the App VM's answer repeats key {k}"));
        }
        if facts.len() > MAX_FACTS {
            return Err(format!(
                "the App VM's answer has more than {MAX_FACTS} facts"
            ));
        }
    }
    if facts.is_empty() {
        return Err("the App VM's answer is empty".into());
    }
    Ok(facts)
}

/// SHA-256 over `key=value\n` for every fact, in key order, as hex.
pub fn fingerprint(facts: &Facts) -> String {
    let mut h = Sha256::new();
    for (k, v) in facts {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    data_encoding::HEXLOWER.encode(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fingerprints_in_key_order() {
        let a = parse(b"net.eth0.mac\t00:11:22:33:44:55\nhost.name\tlocalhost\n").unwrap();
        let b = parse(b"host.name\tlocalhost\nnet.eth0.mac\t00:11:22:33:44:55\n").unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 64);
        let c = parse(b"host.name\tother\nnet.eth0.mac\t00:11:22:33:44:55\n").unwrap();
        assert_ne!(fingerprint(&a), fingerprint(&c));
        // Empty values are facts too.
        assert_eq!(parse(b"host.domain\t\n").unwrap()["host.domain"], "");
    }

    #[test]
    fn hostile_answers_are_refused_in_one_line() {
        let long_value = format!("k\t{}\n", "x".repeat(MAX_VALUE + 1));
        let many: String = (0..=MAX_FACTS).map(|i| format!("k{i}\tv\n")).collect();
        let cases: Vec<&[u8]> = vec![
            b"",
            b"no tab here\n",
            b"\tvalue\n",
            b"bad key\tv\n",
            b"k\tv\x1b[31m\n",
            b"k\tv\nk\tw\n",
            b"\xff\tv\n",
            long_value.as_bytes(),
            many.as_bytes(),
        ];
        for c in cases {
            let e = parse(c).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
