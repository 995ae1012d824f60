//! A small client for tor's control socket (control-spec), used only by the
//! Tor VM agent: cookie authentication, commands with their (multi-line)
//! replies, and asynchronous events.
//!
//! Every line is bounded and every read has a deadline; nothing here is sent
//! to the host verbatim.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;

pub const CONTROL_SOCKET: &str = "/run/tor/control";
pub const COOKIE: &str = "/run/tor/control.authcookie";
/// A reply line longer than this ends the exchange.
const MAX_REPLY_LINE: usize = 4096;
/// At most this many lines in one reply, or events queued.
const MAX_LINES: usize = 1024;
/// How long one command may take to be answered.
const COMMAND: Duration = Duration::from_secs(10);

/// One authenticated control connection.
pub struct Control {
    r: BufReader<UnixStream>,
    /// Asynchronous events (`650 …`) read while waiting for a reply.
    events: VecDeque<String>,
}

/// A command's reply: its status code and lines (without the code prefix).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Control {
    /// Connect and authenticate with the cookie.
    pub async fn connect() -> Result<Control, String> {
        let cookie = tokio::fs::read(COOKIE)
            .await
            .map_err(|e| format!("{COOKIE}: {e}"))?;
        let hex: String = cookie.iter().map(|b| format!("{b:02X}")).collect();
        let s = tokio::time::timeout(COMMAND, UnixStream::connect(CONTROL_SOCKET))
            .await
            .map_err(|_| "control socket timed out".to_owned())?
            .map_err(|e| format!("{CONTROL_SOCKET}: {e}"))?;
        let mut c = Control {
            r: BufReader::new(s),
            events: VecDeque::new(),
        };
        let auth = c.command(&format!("AUTHENTICATE {hex}")).await?;
        if auth.code != 250 {
            return Err(format!("control authentication refused ({})", auth.code));
        }
        Ok(c)
    }

    /// Send one command line and read its reply (events that arrive in
    /// between are queued). The line must not contain CR or LF.
    pub async fn command(&mut self, line: &str) -> Result<Reply, String> {
        if line.contains(['\r', '\n']) {
            return Err("refusing a control command with a line break".into());
        }
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + COMMAND;
        let mut lines = Vec::new();
        loop {
            let l = self.read_line(deadline).await?;
            if l.starts_with("650") {
                self.queue_event(l);
                continue;
            }
            let (code, sep, rest) = split(&l)?;
            if lines.len() >= MAX_LINES {
                return Err("control reply too long".into());
            }
            match sep {
                ' ' => {
                    lines.push(rest.to_owned());
                    return Ok(Reply { code, lines });
                }
                '-' => lines.push(rest.to_owned()),
                // A data block follows, ending with a line ".".
                '+' => {
                    lines.push(rest.to_owned());
                    loop {
                        let d = self.read_line(deadline).await?;
                        if d == "." {
                            break;
                        }
                        if lines.len() >= MAX_LINES {
                            return Err("control reply too long".into());
                        }
                        lines.push(d);
                    }
                }
                _ => return Err("malformed control reply".into()),
            }
        }
    }

    /// The next asynchronous event line (`650 ` prefix removed), waiting
    /// until `deadline`; `None` when it passed.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<String>, String> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        match self.read_line(deadline).await {
            Ok(l) if l.starts_with("650") => {
                let (_, _, rest) = split(&l)?;
                Ok(Some(rest.to_owned()))
            }
            Ok(_) => Err("unexpected control line while waiting for events".into()),
            Err(e) if Instant::now() >= deadline => {
                let _ = e;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn queue_event(&mut self, line: String) {
        if self.events.len() < MAX_LINES {
            if let Ok((_, _, rest)) = split(&line) {
                self.events.push_back(rest.to_owned());
            }
        }
    }

    /// One line, bounded, before `deadline`.
    async fn read_line(&mut self, deadline: Instant) -> Result<String, String> {
        let mut line = Vec::new();
        let mut limited = (&mut self.r).take(MAX_REPLY_LINE as u64);
        let n = tokio::time::timeout_at(deadline, limited.read_until(b'\n', &mut line))
            .await
            .map_err(|_| "control socket timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err("control socket closed or line too long".into());
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
    }
}

/// `250-rest` → (250, '-', "rest").
fn split(l: &str) -> Result<(u16, char, &str), String> {
    let code = l
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("malformed control reply")?;
    let sep = l[3..].chars().next().unwrap_or(' ');
    let rest = l.get(4..).unwrap_or("");
    Ok((code, sep, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_split() {
        assert_eq!(
            split("250-ServiceID=abc").unwrap(),
            (250, '-', "ServiceID=abc")
        );
        assert_eq!(split("250 OK").unwrap(), (250, ' ', "OK"));
        assert_eq!(
            split("650 HS_DESC UPLOADED x").unwrap(),
            (650, ' ', "HS_DESC UPLOADED x")
        );
        assert_eq!(split("250").unwrap(), (250, ' ', ""));
        assert!(split("xx").is_err());
        assert!(split("abc OK").is_err());
    }
}
