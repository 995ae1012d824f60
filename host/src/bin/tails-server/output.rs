//! How the CLI prints: YAML with every value on one line (a key line must
//! stay copyable) or JSON, and a reader that went away (`| head`) ends the
//! command quietly.

use anyhow::{Context, Result};
use serde_json::Value;

/// YAML with every string on one line.
pub fn yaml(v: &Value) -> Result<String> {
    let mut opts = serde_saphyr::SerializerOptions::default();
    opts.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(v, opts).context("render YAML")
}

/// Write to stdout; a reader that went away (`| head`) ends the command
/// quietly. (SIGPIPE stays ignored process-wide: the daemon and the image
/// builder write to sockets and pipes whose far end may close, and must see
/// that as an error, not die of it.)
pub fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tails-server: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Print `v` as YAML, or as JSON with `json`.
pub fn print(v: &Value, json: bool) -> Result<()> {
    if json {
        say(&format!("{}\n", serde_json::to_string_pretty(v)?));
    } else {
        say(&yaml(v)?);
    }
    Ok(())
}

/// Write a file for the person (a QR code, an exported key): whole, 0600.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    tails_server::store::write_private(path, bytes)
        .with_context(|| format!("write {}", path.display()))
}
