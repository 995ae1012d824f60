//! The log pump: a jailed program's stdout and stderr (a guest's serial
//! console, a backend's messages) go through a pipe to this small process
//! outside the jail, which writes them to the log with every control
//! character made visible (`\x1b`, never a raw escape sequence that would
//! act on the terminal of whoever reads the log; `\r` is dropped, `\` is
//! doubled) and caps the log: past `max_bytes` the log is copied to
//! `<log>.1` and emptied (one old log kept). It runs as the jailed
//! program's unprivileged user, with no capability, in the host's PID
//! namespace (out of the jailed program's reach), and ends at end of file.

use std::io::{Read, Seek, SeekFrom, Write};

/// `bytes` as they may be shown on a terminal.
pub fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            b'\r' => {}
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' | b'\t' | 0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
    }
}

/// Copy `cur` into `prev` and empty `cur` (both opened by the jailer).
fn rotate(cur: &mut std::fs::File, prev: &mut std::fs::File) -> std::io::Result<()> {
    let mut all = Vec::new();
    cur.seek(SeekFrom::Start(0))?;
    cur.read_to_end(&mut all)?;
    prev.set_len(0)?;
    prev.seek(SeekFrom::Start(0))?;
    prev.write_all(&all)?;
    cur.set_len(0)
}

/// Pump `input` into `cur` until end of file.
pub fn pump(
    mut input: std::fs::File,
    mut cur: std::fs::File,
    mut prev: std::fs::File,
    max_bytes: u64,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        out.clear();
        escape(&buf[..n], &mut out);
        // A full disk must not stop the program: what cannot be written is
        // lost, the pipe keeps being read.
        let _ = cur.write_all(&out);
        if cur.metadata().map(|m| m.len()).unwrap_or(0) >= max_bytes {
            let _ = rotate(&mut cur, &mut prev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        let mut out = Vec::new();
        escape(b"ok\tline\r\n\x1b[31mred\x07\\ \xc3\xa9", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok\tline\n\\x1b[31mred\\x07\\\\ \\xc3\\xa9"
        );
    }
}
