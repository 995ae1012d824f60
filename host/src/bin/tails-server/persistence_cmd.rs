//! `tails-server persistence create|unlock|lock|status|change-passphrase`:
//! requests to the daemon, which owns the store. A passphrase is asked on the
//! terminal without echo (twice when it is new), or read from a file for
//! scripts (`--passphrase-file`, its first line); it is zeroized once sent.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tails_server::api::{ApiSecret, PersistenceAction, Reply, Request};
use tails_server::cli::PersistenceCmd;
use tails_server::client::{self, call};
use tails_server::Paths;
use zeroize::Zeroizing;

use crate::output::{print, say};
use crate::stack_cmd::{expect, unexpected};

/// The first line of `path` (at most 1 KiB).
fn from_file(path: &Path) -> Result<ApiSecret> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut line = Zeroizing::new(String::new());
    // One short line: at most 1 KiB is read.
    std::io::BufReader::new(std::io::Read::take(f, 1025))
        .read_line(&mut line)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string());
    Ok(ApiSecret(trimmed))
}

/// Ask on the terminal, without echo.
fn ask_tty(prompt: &str) -> Result<ApiSecret> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask the passphrase on: use --passphrase-file")?;
    let old = tcgetattr(&tty).context("the terminal")?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    (&tty).write_all(prompt.as_bytes())?;
    tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet).context("the terminal")?;
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSAFLUSH, &old);
    read.context("reading the passphrase")?;
    Ok(ApiSecret(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_string(),
    )))
}

/// The passphrase from `file`, or asked (twice when `new`).
fn passphrase(file: Option<&Path>, what: &str, new: bool) -> Result<ApiSecret> {
    if let Some(f) = file {
        return from_file(f);
    }
    let first = ask_tty(&format!("{what}: "))?;
    if new {
        let again = ask_tty(&format!("{what}, again: "))?;
        if *again.0 != *first.0 {
            bail!("the two passphrases differ: nothing was changed");
        }
    }
    Ok(first)
}

pub async fn run(paths: &Paths, cmd: PersistenceCmd) -> Result<()> {
    let action = match cmd {
        PersistenceCmd::Create {
            size_mib,
            passphrase_file,
        } => PersistenceAction::Create {
            passphrase: passphrase(passphrase_file.as_deref(), "New passphrase", true)?,
            size_mib,
        },
        PersistenceCmd::Unlock { passphrase_file } => PersistenceAction::Unlock {
            passphrase: passphrase(passphrase_file.as_deref(), "Passphrase", false)?,
        },
        PersistenceCmd::Lock => PersistenceAction::Lock,
        PersistenceCmd::Status { json } => {
            let conn = client::connect_or_start(paths).await?;
            let req = Request::Persistence(PersistenceAction::Status);
            return match expect(call(conn, &req, |_| {}).await?)? {
                Reply::Persistence(p) => print(
                    &json!({
                        "exists": p.exists,
                        "unlocked": p.unlocked,
                        "file": p.file,
                        "mountpoint": p.mountpoint,
                    }),
                    json,
                ),
                other => Err(unexpected(&other)),
            };
        }
        PersistenceCmd::ChangePassphrase {
            passphrase_file,
            new_passphrase_file,
        } => PersistenceAction::ChangePassphrase {
            old: passphrase(passphrase_file.as_deref(), "Current passphrase", false)?,
            new: passphrase(new_passphrase_file.as_deref(), "New passphrase", true)?,
        },
    };
    let conn = client::connect_or_start(paths).await?;
    match expect(call(conn, &Request::Persistence(action), |_| {}).await?)? {
        Reply::Done(m) => {
            say(&format!("{m}\n"));
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}
