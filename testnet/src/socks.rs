//! A minimal SOCKS5 client (RFC 1928, no authentication, CONNECT by host
//! name) and an HTTP/1.0 GET over it: the readiness check that the whole
//! path client → guard → middle → exit → outside DNS → outside web works.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest response read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// What a SOCKS5 reply code means.
pub(crate) fn reply_meaning(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown reply",
    }
}

/// The CONNECT request for `host:port` by name (address type 3).
pub(crate) fn connect_request(host: &str, port: u16) -> Result<Vec<u8>, String> {
    let len =
        u8::try_from(host.len()).map_err(|_| "host name longer than 255 bytes".to_string())?;
    let mut r = vec![5, 1, 0, 3, len];
    r.extend_from_slice(host.as_bytes());
    r.extend_from_slice(&port.to_be_bytes());
    Ok(r)
}

/// GETs `http://host:port/path` through the SOCKS5 proxy `socks` (the proxy
/// resolves `host`), returning the response body if the status is 200.
pub(crate) fn http_get(
    socks: SocketAddr,
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(5))
        .map_err(|e| format!("SOCKS {socks}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(&[5, 1, 0])
        .map_err(|e| format!("SOCKS write: {e}"))?;
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello)
        .map_err(|e| format!("SOCKS greeting: {e}"))?;
    if hello != [5, 0] {
        return Err(format!("SOCKS greeting refused: {hello:?}"));
    }
    s.write_all(&connect_request(host, port)?)
        .map_err(|e| format!("SOCKS write: {e}"))?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .map_err(|e| format!("SOCKS reply: {e}"))?;
    if head[0] != 5 {
        return Err(format!("SOCKS reply version {}", head[0]));
    }
    if head[1] != 0 {
        return Err(format!(
            "SOCKS CONNECT {host}:{port}: {} (reply {})",
            reply_meaning(head[1]),
            head[1]
        ));
    }
    let addr_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)
                .map_err(|e| format!("SOCKS reply: {e}"))?;
            usize::from(l[0])
        }
        t => return Err(format!("SOCKS reply address type {t}")),
    };
    let mut rest = vec![0u8; addr_len + 2];
    s.read_exact(&mut rest)
        .map_err(|e| format!("SOCKS reply: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n").as_bytes())
        .map_err(|e| format!("HTTP write: {e}"))?;
    let mut resp = Vec::new();
    s.take(MAX_RESPONSE)
        .read_to_end(&mut resp)
        .map_err(|e| format!("HTTP read: {e}"))?;
    parse_http_response(&resp)
}

/// The status code of a plain HTTP/1.0 GET of `path` at `addr` (no proxy).
pub(crate) fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("HTTP write: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() && !head[..n].contains(&b'\n') {
        match s.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("HTTP read: {e}")),
        }
    }
    parse_status_code(&head[..n])
}

/// The status code in an HTTP status line ("HTTP/1.0 200 OK").
pub(crate) fn parse_status_code(head: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(head);
    let line = line.lines().next().unwrap_or("");
    line.strip_prefix("HTTP/")
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line {line:?}"))
}

/// The body of an HTTP response if its status is 200.
pub(crate) fn parse_http_response(resp: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("truncated HTTP response ({} bytes)", resp.len()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {status:?}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_by_name() {
        assert_eq!(
            connect_request("outside.test", 8080).unwrap(),
            [&[5u8, 1, 0, 3, 12][..], b"outside.test", &[0x1f, 0x90]].concat()
        );
        assert!(connect_request(&"a".repeat(256), 80).is_err());
        assert_eq!(reply_meaning(4), "host unreachable");
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_code(b"HTTP/1.0 200 OK\r\nContent"), Ok(200));
        assert_eq!(parse_status_code(b"HTTP/1.0 404 Not found\r\n"), Ok(404));
        assert!(parse_status_code(b"SSH-2.0-x\r\n").is_err());
        assert!(parse_status_code(b"").is_err());
    }

    #[test]
    fn http_responses() {
        assert_eq!(
            parse_http_response(b"HTTP/1.0 200 OK\r\nA: b\r\n\r\nhello").unwrap(),
            "hello"
        );
        assert!(parse_http_response(b"HTTP/1.0 404 Not Found\r\n\r\n").is_err());
        assert!(parse_http_response(b"HTTP/1.0 200 OK\r\n").is_err());
    }
}
