//! A small client for tor's control port (control-spec.txt): cookie
//! authentication and GETINFO, with bounded line and reply sizes and
//! timeouts on every read and write. Plus parsers for the replies the
//! readiness checks use (bootstrap phase, consensus flags), testable on
//! sample strings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Longest reply line accepted (ns/all lines are well under 1 KiB).
const MAX_LINE: usize = 16 * 1024;
/// Largest reply accepted (a consensus of a few relays is a few KiB).
const MAX_REPLY: usize = 8 * 1024 * 1024;

/// One line of a control reply: status code, separator ('-' mid, '+' data,
/// ' ' end), text, and the data block that follows a '+' line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplyLine {
    pub code: u16,
    pub sep: char,
    pub text: String,
    pub data: Option<String>,
}

/// Reads one line (up to LF), at most `max` bytes, without the CR LF.
fn read_line_bounded<R: BufRead>(r: &mut R, max: usize) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().map_err(|e| format!("read: {e}"))?;
        if buf.is_empty() {
            return Err("connection closed".into());
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        if line.len() + chunk.len() > max + 2 {
            return Err(format!("reply line longer than {max} bytes"));
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if done {
            break;
        }
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "reply line is not UTF-8".into())
}

/// Reads one complete reply (up to and including its end line).
pub(crate) fn read_reply<R: BufRead>(r: &mut R) -> Result<Vec<ReplyLine>, String> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let l = read_line_bounded(r, MAX_LINE)?;
        total += l.len();
        if l.len() < 4 || !l.is_char_boundary(3) || !l.is_char_boundary(4) {
            return Err(format!("malformed reply line {l:?}"));
        }
        let code: u16 = l[..3]
            .parse()
            .map_err(|_| format!("malformed reply line {l:?}"))?;
        let sep = l[3..4].chars().next().unwrap_or('?');
        let text = l[4..].to_string();
        let data = if sep == '+' {
            let mut d = String::new();
            loop {
                let dl = read_line_bounded(r, MAX_LINE)?;
                total += dl.len() + 1;
                if total > MAX_REPLY {
                    return Err(format!("reply larger than {MAX_REPLY} bytes"));
                }
                if dl == "." {
                    break;
                }
                // Dot-stuffing: a data line starting with '.' was sent with one more.
                d.push_str(dl.strip_prefix('.').unwrap_or(&dl));
                d.push('\n');
            }
            Some(d)
        } else {
            None
        };
        if total > MAX_REPLY {
            return Err(format!("reply larger than {MAX_REPLY} bytes"));
        }
        match sep {
            '-' | '+' | ' ' => {}
            _ => return Err(format!("malformed reply line {l:?}")),
        }
        lines.push(ReplyLine {
            code,
            sep,
            text,
            data,
        });
        if sep == ' ' {
            return Ok(lines);
        }
    }
}

/// The value of `key` in a GETINFO reply, or the error the reply carries.
pub(crate) fn getinfo_value(reply: &[ReplyLine], key: &str) -> Result<String, String> {
    if let Some(bad) = reply.iter().find(|l| l.code != 250) {
        return Err(format!("GETINFO {key}: {} {}", bad.code, bad.text));
    }
    let prefix = format!("{key}=");
    let l = reply
        .iter()
        .find(|l| l.text.starts_with(&prefix))
        .ok_or_else(|| format!("GETINFO {key}: no value in the reply"))?;
    Ok(match &l.data {
        Some(d) => d.clone(),
        None => l.text[prefix.len()..].to_string(),
    })
}

/// The bootstrap percentage and summary of a `status/bootstrap-phase` value, e.g.
/// `NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`.
pub(crate) fn parse_bootstrap(value: &str) -> Option<(u8, String)> {
    let p = value
        .split_whitespace()
        .find_map(|w| w.strip_prefix("PROGRESS="))?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 100)?;
    let summary = value
        .split_once("SUMMARY=\"")
        .and_then(|(_, s)| s.split('"').next())
        .unwrap_or("")
        .to_string();
    Some((p, summary))
}

/// What the consensus (`ns/all`) says about the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Consensus {
    pub relays: usize,
    pub exits: usize,
    pub hsdirs: usize,
    pub running: usize,
}

/// Counts relays and their flags in an `ns/all` value (router status entries:
/// an `r` line, then an `s` line with the flags, …).
pub(crate) fn parse_ns_all(value: &str) -> Consensus {
    let mut c = Consensus::default();
    for l in value.lines() {
        if l.starts_with("r ") {
            c.relays += 1;
        } else if let Some(flags) = l.strip_prefix("s ") {
            let has = |f: &str| flags.split_whitespace().any(|x| x == f);
            // A BadExit is no exit.
            if has("Exit") && !has("BadExit") {
                c.exits += 1;
            }
            if has("HSDir") {
                c.hsdirs += 1;
            }
            if has("Running") {
                c.running += 1;
            }
        }
    }
    c
}

/// An authenticated control connection.
pub(crate) struct ControlConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl ControlConn {
    /// Connects and authenticates with the cookie in `cookie_file`.
    pub fn connect(
        addr: SocketAddr,
        cookie_file: &Path,
        timeout: Duration,
    ) -> Result<Self, String> {
        let cookie = std::fs::read(cookie_file)
            .map_err(|e| format!("cannot read the cookie {}: {e}", cookie_file.display()))?;
        if cookie.len() != 32 {
            return Err(format!("cookie {} is not 32 bytes", cookie_file.display()));
        }
        let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        let mut c = ControlConn {
            reader: BufReader::new(s),
            writer,
        };
        let hex: String = cookie.iter().map(|b| format!("{b:02X}")).collect();
        let reply = c.command(&format!("AUTHENTICATE {hex}"))?;
        match reply.last() {
            Some(l) if l.code == 250 => Ok(c),
            Some(l) => Err(format!("AUTHENTICATE: {} {}", l.code, l.text)),
            None => Err("AUTHENTICATE: empty reply".into()),
        }
    }

    fn command(&mut self, cmd: &str) -> Result<Vec<ReplyLine>, String> {
        self.writer
            .write_all(format!("{cmd}\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        // Skip asynchronous events (code 650): none are subscribed, but be safe.
        loop {
            let r = read_reply(&mut self.reader)?;
            if r.first().map(|l| l.code) != Some(650) {
                return Ok(r);
            }
        }
    }

    /// Give the client an onion service's client-authorization key (base64).
    pub fn onion_client_auth_add(&mut self, address: &str, key_b64: &str) -> Result<(), String> {
        let r = self.command(&format!("ONION_CLIENT_AUTH_ADD {address} x25519:{key_b64}"))?;
        match r.last() {
            Some(l) if (250..=252).contains(&l.code) => Ok(()),
            Some(l) => Err(format!("ONION_CLIENT_AUTH_ADD: {} {}", l.code, l.text)),
            None => Err("ONION_CLIENT_AUTH_ADD: empty reply".into()),
        }
    }

    /// GETINFO one key.
    pub fn getinfo(&mut self, key: &str) -> Result<String, String> {
        let r = self.command(&format!("GETINFO {key}"))?;
        getinfo_value(&r, key)
    }
}

impl Drop for ControlConn {
    fn drop(&mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n");
        let mut sink = [0u8; 64];
        let _ = self.reader.get_mut().read(&mut sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn reply(s: &str) -> Vec<ReplyLine> {
        read_reply(&mut Cursor::new(s.as_bytes())).unwrap()
    }

    #[test]
    fn single_line_getinfo() {
        let r = reply(
            "250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY=\"Done\"\r\n250 OK\r\n",
        );
        assert_eq!(r.len(), 2);
        let v = getinfo_value(&r, "status/bootstrap-phase").unwrap();
        assert_eq!(parse_bootstrap(&v), Some((100, "Done".to_string())));
    }

    #[test]
    fn bootstrap_in_progress_and_warnings() {
        let v = "NOTICE BOOTSTRAP PROGRESS=45 TAG=requesting_descriptors SUMMARY=\"Asking for relay descriptors\"";
        assert_eq!(
            parse_bootstrap(v),
            Some((45, "Asking for relay descriptors".into()))
        );
        let w = "WARN BOOTSTRAP PROGRESS=10 TAG=conn_done SUMMARY=\"Connected to a relay\" WARNING=\"Connection refused\" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=ignore HOST=ABCD HOSTADDR=10.100.0.2:5000";
        assert_eq!(parse_bootstrap(w).unwrap().0, 10);
        assert_eq!(parse_bootstrap("NOTICE BOOTSTRAP TAG=x"), None);
        assert_eq!(parse_bootstrap("NOTICE BOOTSTRAP PROGRESS=101"), None);
    }

    const NS_ALL: &str = "250+ns/all=\r\n\
r tsauth0 0W7rt2tiMPiYa4BgVc3nOYNGKik 2024-01-01 00:00:00 10.100.0.2 5000 7000\r\n\
s Authority Fast Guard HSDir Running Stable V2Dir Valid\r\n\
w Bandwidth=0 Unmeasured=1\r\n\
r tsrelay0 IjpfBpmdN6YoOld9CWFFO6wa+6A 2024-01-01 00:00:00 10.100.0.2 5003 7003\r\n\
s Fast Guard HSDir Running Stable V2Dir Valid\r\n\
r tsexit0 AAAAAAAAAAAAAAAAAAAAAAAAAAA 2024-01-01 00:00:00 10.100.0.2 5005 7005\r\n\
s Exit Fast Guard HSDir Running Stable V2Dir Valid\r\n\
r badone BBBBBBBBBBBBBBBBBBBBBBBBBBB 2024-01-01 00:00:00 10.100.0.2 5006 7006\r\n\
s BadExit Exit Running Valid\r\n\
.\r\n\
250 OK\r\n";

    #[test]
    fn ns_all_data_reply_counts_relays_and_flags() {
        let r = reply(NS_ALL);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].sep, '+');
        let v = getinfo_value(&r, "ns/all").unwrap();
        assert!(v.starts_with("r tsauth0 "));
        let c = parse_ns_all(&v);
        assert_eq!(
            c,
            Consensus {
                relays: 4,
                exits: 1,
                hsdirs: 3,
                running: 4
            }
        );
        // Flags are whole words: "HSDirX" or "Exits" do not count.
        assert_eq!(
            parse_ns_all("r a\ns HSDirX Exits\n"),
            Consensus {
                relays: 1,
                ..Default::default()
            }
        );
        assert_eq!(parse_ns_all(""), Consensus::default());
    }

    #[test]
    fn dot_stuffed_data_is_unstuffed() {
        let r = reply("250+x=\r\n..hidden\r\nplain\r\n.\r\n250 OK\r\n");
        assert_eq!(r[0].data.as_deref(), Some(".hidden\nplain\n"));
    }

    #[test]
    fn errors_and_malformed_replies() {
        let r = reply("552 Unrecognized key \"nope\"\r\n");
        assert!(getinfo_value(&r, "nope").unwrap_err().contains("552"));
        let r = reply("250 OK\r\n");
        assert!(getinfo_value(&r, "x").is_err());
        for bad in ["", "25\r\n", "abc-x\r\n", "250*x\r\n", "250-x=1\r\n"] {
            assert!(
                read_reply(&mut Cursor::new(bad.as_bytes())).is_err(),
                "{bad:?}"
            );
        }
        let long = format!("250-x={}\r\n250 OK\r\n", "a".repeat(MAX_LINE + 10));
        assert!(read_reply(&mut Cursor::new(long.as_bytes()))
            .unwrap_err()
            .contains("longer"));
        // An unterminated data block is an error, not a hang.
        assert!(read_reply(&mut Cursor::new(b"250+x=\r\nabc\r\n".as_slice())).is_err());
    }

    #[test]
    fn circuit_established_value() {
        let r = reply("250-status/circuit-established=1\r\n250 OK\r\n");
        assert_eq!(
            getinfo_value(&r, "status/circuit-established").unwrap(),
            "1"
        );
    }
}
