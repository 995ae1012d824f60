//! The three nftables rulesets (host, Tor VM, App VM), generated as nft JSON
//! and applied atomically.
//!
//! Each ruleset is one table of ours, built as a batch of `add` commands
//! (see [`torvm::ruleset`]). [`apply`] loads it in one `nft -j -f -`
//! transaction that first deletes the previous version of that table (if
//! any), so the kernel switches from the old table to the new one at once, or
//! keeps the old one if anything in the batch fails. Other tables are never
//! touched: apply refuses a batch that would do anything but add to the
//! tables it adds itself.
//!
//! [`list`] reads back one table of ours (never the whole ruleset), and
//! [`remove`] deletes it; both name the table explicitly.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

pub use nftables::schema::Nftables;
use nftables::schema::{NfCmd, NfListObject, NfObject, Table};
pub use nftables::types::NfFamily;

pub mod appvm;
mod dsl;
pub mod host;
mod netlink;
#[cfg(test)]
mod testutil;
pub mod torvm;

/// The host table every rule of ours lives in (and the only one we read back).
pub const HOST_TABLE: &str = "tails_server";
/// Its family.
pub const HOST_FAMILY: &str = "inet";

/// Why a ruleset could not be applied or checked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The batch holds something other than `add` commands for tables it
    /// adds itself (it would touch a table that is not ours).
    #[error("refusing ruleset: {0}")]
    NotOurs(String),
    /// Serialising the batch failed (not expected for the types we build).
    #[error("cannot serialise the ruleset to nft JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The batch holds something [`apply_netlink`] does not compile (nft
    /// handles it: use [`apply`]).
    #[error("not loadable over netlink without nft: {0}")]
    Unsupported(String),
    /// The netlink socket failed.
    #[error("netlink: cannot {what}: {source}")]
    Netlink {
        what: &'static str,
        source: std::io::Error,
    },
    /// The kernel refused a command of the batch; nothing was changed.
    #[error("the kernel refused the ruleset ({what}): {source}")]
    KernelRefused {
        what: String,
        source: std::io::Error,
    },
    /// nft could not be started or fed.
    #[error("cannot run {program}: {source}")]
    Run {
        program: String,
        source: std::io::Error,
    },
    /// nft ran and refused the batch; nothing was changed.
    #[error("{program} refused the ruleset ({action}, {status}): {message}")]
    Refused {
        program: String,
        /// "apply" or "check".
        action: &'static str,
        status: ExitStatus,
        /// nft's diagnostics on one line (shortened).
        message: String,
        /// nft's stderr, whole.
        stderr: String,
    },
}

/// Applies `rs` atomically in ONE `nft -j -f -` batch run by the program at
/// `nft` (an absolute path: the Tor VM agent runs without PATH): for each
/// table that `rs` adds, `add table` + `delete table` (so the delete never
/// fails on a first run) come first, then everything in `rs`. If nft refuses
/// any part, the kernel keeps the previous ruleset whole.
pub fn apply(rs: &Nftables, nft: &Path) -> Result<(), NftError> {
    run(rs, nft, false)
}

/// Like [`apply`] (the same batch: the table deleted and added again, in one
/// transaction), sent by this process over netlink instead of by nft: see
/// the `netlink` module for what it compiles. Anything else is
/// [`NftError::Unsupported`], refused before anything is sent.
pub fn apply_netlink(rs: &Nftables) -> Result<(), NftError> {
    netlink::send(&replace_batch(rs)?)
}

/// How [`apply_netlink_or_nft`] loaded a ruleset.
#[derive(Debug)]
pub enum Loaded {
    /// Over netlink, by this process.
    Netlink,
    /// By nft, after netlink failed for this reason.
    Nft(NftError),
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loaded::Netlink => f.write_str("over netlink"),
            Loaded::Nft(why) => write!(f, "with nft ({why})"),
        }
    }
}

/// [`apply_netlink`]; if that fails for any reason (nothing was changed
/// then, or the same table was loaded), [`apply`] with the nft at `nft`.
/// An error only if nft failed too.
pub fn apply_netlink_or_nft(rs: &Nftables, nft: &Path) -> Result<Loaded, NftError> {
    match apply_netlink(rs) {
        Ok(()) => Ok(Loaded::Netlink),
        Err(why) => {
            apply(rs, nft)?;
            Ok(Loaded::Nft(why))
        }
    }
}

/// Deletes table `family name` if it exists (`add` + `delete` in one batch,
/// so a missing table is not an error). Other tables are never touched.
pub fn remove(family: NfFamily, name: &str, nft: &Path) -> Result<(), NftError> {
    let table = || {
        NfListObject::Table(Table {
            family,
            name: Cow::Owned(name.to_owned()),
            handle: None,
        })
    };
    let batch = Nftables {
        objects: Cow::Owned(vec![
            NfObject::CmdObject(NfCmd::Add(table())),
            NfObject::CmdObject(NfCmd::Delete(table())),
        ]),
    };
    feed(&batch, nft, "remove", &[])
}

/// What [`list`] read back of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Rules in the table.
    pub rules: usize,
    /// Packets counted by the table's `counter … drop` rules.
    pub dropped_packets: u64,
    /// The table as `nft -j list table` printed it.
    pub json: serde_json::Value,
}

/// Reads back table `family name` (`nft -j list table`, nothing else):
/// `None` if it does not exist.
pub fn list(family: &str, name: &str, nft: &Path) -> Result<Option<TableInfo>, NftError> {
    let program = nft.display().to_string();
    let out = Command::new(nft)
        .args(["-j", "list", "table", family, name])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NftError::Run {
            program: program.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NftError::Refused {
            program,
            action: "list",
            status: out.status,
            message: one_line(&stderr),
            stderr,
        });
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut info = TableInfo {
        rules: 0,
        dropped_packets: 0,
        json,
    };
    let objects = info.json["nftables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for obj in objects {
        let Some(rule) = obj.get("rule") else {
            continue;
        };
        if rule["family"] != family || rule["table"] != name {
            continue;
        }
        info.rules += 1;
        let expr = rule["expr"].as_array().cloned().unwrap_or_default();
        let drops = expr.iter().any(|e| e.get("drop").is_some());
        for e in &expr {
            if let (true, Some(n)) = (drops, e["counter"]["packets"].as_u64()) {
                info.dropped_packets += n;
            }
        }
    }
    Ok(Some(info))
}

/// What of a table [`list`] read back must stay the same: its chains and
/// rules, without the kernel's handles and with the counters zeroed (they
/// move with traffic). Two listings of an unchanged table are equal.
pub fn fingerprint(info: &TableInfo) -> Vec<serde_json::Value> {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                if let Some(serde_json::Value::Object(c)) = m.get_mut("counter") {
                    for k in ["packets", "bytes"] {
                        if c.contains_key(k) {
                            c.insert(k.into(), 0.into());
                        }
                    }
                }
                m.values_mut().for_each(scrub);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    let mut objects: Vec<serde_json::Value> = info.json["nftables"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.get("metainfo").is_none())
        .collect();
    objects.iter_mut().for_each(scrub);
    objects
}

/// Like [`apply`], but with `nft -c`: the same batch is checked (by nft and
/// the kernel) and nothing is changed.
pub fn check(rs: &Nftables, nft: &Path) -> Result<(), NftError> {
    run(rs, nft, true)
}

fn run(rs: &Nftables, nft: &Path, check_only: bool) -> Result<(), NftError> {
    let batch = replace_batch(rs)?;
    if check_only {
        feed(&batch, nft, "check", &["-c"])
    } else {
        feed(&batch, nft, "apply", &[])
    }
}

/// Feeds `batch` to `nft [flags] -j -f -`.
fn feed(
    batch: &Nftables,
    nft: &Path,
    action: &'static str,
    flags: &[&str],
) -> Result<(), NftError> {
    let payload = serde_json::to_vec(batch)?;
    let program = nft.display().to_string();

    let mut cmd = Command::new(nft);
    cmd.args(flags);
    cmd.args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run_err = |source| NftError::Run {
        program: program.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(run_err)?;
    // nft reads the whole JSON document before it writes anything, so
    // writing all of it before reading its output cannot deadlock.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(&payload),
        None => Err(std::io::Error::other("no pipe to nft's stdin")),
    };
    let out = child.wait_with_output().map_err(run_err)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(NftError::Refused {
            program,
            action,
            status: out.status,
            message: one_line(&stderr),
            stderr,
        });
    }
    // nft succeeded on what it read; a short write would have made it fail.
    written.map_err(run_err)
}

/// `rs` preceded by `add table` + `delete table` for each table it adds.
/// Refuses anything but `add` commands, and adds to tables `rs` does not add.
fn replace_batch<'a>(rs: &Nftables<'a>) -> Result<Nftables<'a>, NftError> {
    let mut ours: Vec<(NfFamily, &str)> = Vec::new();
    for obj in rs.objects.iter() {
        let NfObject::CmdObject(NfCmd::Add(obj)) = obj else {
            return Err(NftError::NotOurs(
                "it holds a command other than `add`".into(),
            ));
        };
        let (family, table) = match obj {
            NfListObject::Table(t) => {
                ours.push((t.family, &t.name));
                continue;
            }
            NfListObject::Chain(c) => (c.family, &c.table),
            NfListObject::Rule(r) => (r.family, &r.table),
            NfListObject::Set(s) => (s.family, &s.table),
            NfListObject::Map(m) => (m.family, &m.table),
            NfListObject::Element(e) => (e.family, &e.table),
            _ => {
                return Err(NftError::NotOurs(
                    "it adds an object kind apply does not handle".into(),
                ))
            }
        };
        if !ours.contains(&(family, table)) {
            return Err(NftError::NotOurs(format!(
                "it adds to table {table:?}, which it does not add first"
            )));
        }
    }
    if ours.is_empty() {
        return Err(NftError::NotOurs("it adds no table".into()));
    }

    let mut objects = Vec::with_capacity(2 * ours.len() + rs.objects.len());
    for (family, name) in ours {
        let table = || {
            NfListObject::Table(Table {
                family,
                name: Cow::Owned(name.to_owned()),
                handle: None,
            })
        };
        objects.push(NfObject::CmdObject(NfCmd::Add(table())));
        objects.push(NfObject::CmdObject(NfCmd::Delete(table())));
    }
    objects.extend(rs.objects.iter().cloned());
    Ok(Nftables {
        objects: Cow::Owned(objects),
    })
}

/// nft's diagnostics on one line, at most about 300 characters.
fn one_line(stderr: &str) -> String {
    const MAX: usize = 300;
    let joined = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.is_empty() {
        return "(no message)".into();
    }
    match joined.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nftables::schema::{Chain, Rule};

    fn table(name: &str) -> NfListObject<'static> {
        NfListObject::Table(Table {
            family: NfFamily::INet,
            name: Cow::Owned(name.into()),
            handle: None,
        })
    }
    fn add(obj: NfListObject<'static>) -> NfObject<'static> {
        NfObject::CmdObject(NfCmd::Add(obj))
    }
    fn batch(objs: Vec<NfObject<'static>>) -> Nftables<'static> {
        Nftables {
            objects: Cow::Owned(objs),
        }
    }
    fn sample() -> Nftables<'static> {
        torvm::ruleset(&torvm::Params {
            internal_if: "eth0",
            uplink_if: Some("eth1"),
            torvm_addr: [10, 1, 2, 1].into(),
            appvm_addr: [10, 1, 2, 3].into(),
            trans_port: 9040,
            dns_port: 5353,
            tor_uid: 101,
        })
    }

    #[test]
    fn batch_deletes_only_our_table_first() {
        let rs = sample();
        let b = replace_batch(&rs).unwrap();
        let ours = table(torvm::TABLE);
        assert_eq!(b.objects[0], NfObject::CmdObject(NfCmd::Add(ours.clone())));
        assert_eq!(b.objects[1], NfObject::CmdObject(NfCmd::Delete(ours)));
        assert_eq!(&b.objects[2..], &rs.objects[..]);
        // No other delete anywhere.
        let deletes = b
            .objects
            .iter()
            .filter(|o| matches!(o, NfObject::CmdObject(NfCmd::Delete(_))))
            .count();
        assert_eq!(deletes, 1);
    }

    #[test]
    fn refuses_what_is_not_ours() {
        let nft = Path::new("/nonexistent/nft");
        let foreign_rule = add(NfListObject::Rule(Rule {
            table: "filter".into(),
            chain: "input".into(),
            ..Rule::default()
        }));
        let foreign_chain = add(NfListObject::Chain(Chain {
            table: "filter".into(),
            ..Chain::default()
        }));
        let flush = NfObject::CmdObject(NfCmd::Flush(nftables::schema::FlushObject::Ruleset(None)));
        let delete = NfObject::CmdObject(NfCmd::Delete(table("filter")));
        for objs in [
            vec![],
            vec![add(table("mine")), foreign_rule],
            vec![add(table("mine")), foreign_chain],
            vec![add(table("mine")), flush],
            vec![add(table("mine")), delete],
            vec![add(table("mine")), NfObject::ListObject(table("mine"))],
        ] {
            let rs = batch(objs);
            for res in [apply(&rs, nft), check(&rs, nft)] {
                assert!(matches!(res, Err(NftError::NotOurs(_))), "{res:?}");
            }
        }
    }

    #[test]
    fn missing_nft_is_a_run_error() {
        let err = check(&sample(), Path::new("/nonexistent/nft")).unwrap_err();
        assert!(matches!(err, NftError::Run { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("cannot run /nonexistent/nft: "), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn diagnostics_on_one_short_line() {
        assert_eq!(one_line(""), "(no message)");
        assert_eq!(
            one_line("Error: Could not process rule: No such file or directory\n\n  {\"x\": 1}\n"),
            "Error: Could not process rule: No such file or directory | {\"x\": 1}"
        );
        let long = one_line(&"é".repeat(1000));
        assert_eq!(long.chars().count(), 301);
        assert!(long.ends_with('…'));
    }
}
