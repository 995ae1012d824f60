//! A one-question DNS client (RFC 1035, A record over UDP): the readiness
//! check that the outside DNS server answers the outside name.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The query for the A record of `name`, with id `id`, recursion desired.
pub(crate) fn build_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("bad DNS label {label:?}"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Index just past the (possibly compressed) name starting at `i`.
fn skip_name(buf: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *buf.get(i)?;
        if len == 0 {
            return Some(i + 1);
        }
        if len & 0xC0 == 0xC0 {
            return Some(i + 2);
        }
        i += 1 + usize::from(len);
    }
}

fn u16_at(buf: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]))
}

/// The A records of a response to query `id`.
pub(crate) fn parse_response(id: u16, buf: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    let short = || "truncated DNS response".to_string();
    if buf.len() < 12 || u16_at(buf, 0) != Some(id) {
        return Err("DNS response with a wrong id".into());
    }
    let flags = u16_at(buf, 2).ok_or_else(short)?;
    if flags & 0x8000 == 0 {
        return Err("DNS reply is a query".into());
    }
    let rcode = flags & 0xF;
    if rcode != 0 {
        return Err(format!("DNS rcode {rcode}"));
    }
    let qd = u16_at(buf, 4).ok_or_else(short)?;
    let an = u16_at(buf, 6).ok_or_else(short)?;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(buf, i).ok_or_else(short)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(buf, i).ok_or_else(short)?;
        let rtype = u16_at(buf, i).ok_or_else(short)?;
        let rdlen = usize::from(u16_at(buf, i + 8).ok_or_else(short)?);
        let data = buf.get(i + 10..i + 10 + rdlen).ok_or_else(short)?;
        if rtype == 1 && rdlen == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + rdlen;
    }
    Ok(out)
}

/// Asks `server` for the A records of `name`.
pub(crate) fn query_a(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    sock.send_to(&build_query(id, name)?, server)
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, from) = sock
        .recv_from(&mut buf)
        .map_err(|e| format!("no answer: {e}"))?;
    if from != server {
        return Err(format!("answer from {from}, not {server}"));
    }
    parse_response(id, &buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_response() {
        let q = build_query(0x1234, "outside.test").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x07outside\x04test\x00\x00\x01\x00\x01");
        // The server's answer: the question, then one A record with a compressed name.
        let mut r = q.clone();
        r[2] = 0x85;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 100, 0, 2]);
        assert_eq!(
            parse_response(0x1234, &r).unwrap(),
            vec![Ipv4Addr::new(10, 100, 0, 2)]
        );
        assert!(parse_response(0x4321, &r).is_err());
        let mut nx = r.clone();
        nx[3] = 0x83;
        assert!(parse_response(0x1234, &nx).unwrap_err().contains("rcode 3"));
        assert!(parse_response(0x1234, &r[..r.len() - 2]).is_err());
        assert!(build_query(1, "a..b").is_err());
    }
}
