//! Onion services in the Tor VM, on the host's order: `ADD_ONION` with the
//! key the host holds (never one tor makes up), forwarding to the App VM's
//! service, with client authorization; then wait for tor to report the
//! descriptor uploaded (`HS_DESC UPLOADED`). `DEL_ONION` takes one down.
//!
//! The host's fields are checked before they reach the control protocol: a
//! space or line break in them could otherwise add arguments or commands.

use std::net::Ipv4Addr;
use std::time::Duration;
use tails_guest::log;
use tails_proto::msg::{GuestMsg, OnionPublish};
use tokio::time::Instant;

use crate::control::Control;

/// Where the App VM's services are.
pub const APPVM: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// At most this many authorized clients per service.
const MAX_CLIENTS: usize = 64;
/// Longest wait for a descriptor upload the host may ask for.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// How long a tor that was just started may take to open its control socket.
const TOR_START: Duration = Duration::from_secs(60);

/// The control connection, waiting (until `deadline`) for a tor that is
/// still starting (a publication ordered right after the Tor VM came up).
async fn connect_when_ready(deadline: Instant) -> Result<Control, String> {
    loop {
        match Control::connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn is_base32(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// The `ADD_ONION` command for `req`, or why the request is malformed.
pub fn add_onion_command(req: &OnionPublish) -> Result<String, String> {
    let key_ok = req
        .key
        .strip_prefix("ED25519-V3:")
        .is_some_and(|k| k.len() == 88 && is_base64(k));
    if !key_ok {
        return Err("the onion key is not an ED25519-V3 key blob".into());
    }
    if !is_base32(&req.service_id, 56) {
        return Err("the service id is not 56 base32 characters".into());
    }
    if req.virtual_port == 0 || req.target_port == 0 {
        return Err("ports must be 1 to 65535".into());
    }
    if req.client_auth.len() > MAX_CLIENTS {
        return Err(format!("at most {MAX_CLIENTS} authorized clients"));
    }
    // tor 0.4.9 wants V3Auth named whenever ClientAuthV3 keys are given.
    let flags = if req.client_auth.is_empty() {
        "Detach"
    } else {
        "Detach,V3Auth"
    };
    let mut cmd = format!(
        "ADD_ONION {} Flags={flags} Port={},{}:{}",
        req.key, req.virtual_port, APPVM, req.target_port
    );
    for c in &req.client_auth {
        if !is_base32(c, 52) {
            return Err("a client key is not 52 base32 characters".into());
        }
        cmd.push_str(&format!(" ClientAuthV3={c}"));
    }
    Ok(cmd)
}

/// Publish, replacing a service with the same id, and wait for the first
/// descriptor upload. On failure nothing stays published.
pub async fn publish(req: OnionPublish) -> GuestMsg {
    match publish_inner(&req).await {
        Ok(uploads) => GuestMsg::OnionPublished {
            service_id: req.service_id.to_ascii_lowercase(),
            uploads,
        },
        Err(message) => {
            // Nothing half-done: take it down again (it may not exist).
            if let Ok(mut c) = Control::connect().await {
                let _ = c.command(&format!("DEL_ONION {}", req.service_id)).await;
            }
            GuestMsg::Error { message }
        }
    }
}

async fn publish_inner(req: &OnionPublish) -> Result<u32, String> {
    let cmd = add_onion_command(req)?;
    let id = req.service_id.to_ascii_lowercase();
    let wait = Duration::from_millis(req.timeout_ms).min(MAX_WAIT);
    let mut c = connect_when_ready(Instant::now() + wait.min(TOR_START)).await?;
    let ev = c.command("SETEVENTS HS_DESC").await?;
    if ev.code != 250 {
        return Err(format!("tor refused SETEVENTS ({})", ev.code));
    }
    // Replace: a service with this id may exist from an earlier enable
    // (552: there is none, which is fine).
    let del = c.command(&format!("DEL_ONION {id}")).await?;
    if del.code != 250 && del.code != 552 {
        return Err(format!("tor refused DEL_ONION ({})", del.code));
    }
    if del.code == 250 && req.close_circuits {
        let n = close_rend_circuits(&mut c, &id).await?;
        log(format!(
            "closed {n} rendezvous circuit(s) of the replaced onion service"
        ));
    }
    let added = c.command(&cmd).await?;
    if added.code != 250 {
        // The reply text is tor's, about our request: short and safe, but the
        // command (with the key) is never echoed.
        let why = added.lines.first().map(String::as_str).unwrap_or("");
        return Err(format!(
            "tor refused ADD_ONION ({} {})",
            added.code,
            why.chars().take(120).collect::<String>()
        ));
    }
    let got = added
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("ServiceID="))
        .unwrap_or("");
    if got != id {
        return Err("tor published another service id than the key's".into());
    }
    // The address stays out of the console log (the host has it anyway).
    log("onion service added; waiting for its descriptor");
    let deadline = Instant::now() + wait;
    let (mut uploads, mut failures) = (0u32, 0u32);
    while let Some(e) = c.next_event(deadline).await? {
        let w: Vec<&str> = e.split(' ').collect();
        if w.len() < 3 || w[0] != "HS_DESC" || w[2] != id {
            continue;
        }
        match w[1] {
            "UPLOADED" => {
                uploads += 1;
                break;
            }
            "FAILED" => failures += 1,
            _ => {}
        }
    }
    if uploads == 0 {
        return Err(format!(
            "tor did not upload the descriptor within {} s ({failures} uploads failed)",
            wait.as_secs()
        ));
    }
    log("onion service published");
    Ok(uploads)
}

/// The ids of `service_id`'s rendezvous circuits in the lines of `GETINFO
/// circuit-status` (`<id> <status> [<path>] … PURPOSE=HS_SERVICE_REND …
/// REND_QUERY=<service id> …`).
pub fn rend_circuits(lines: &[String], service_id: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let l = l.strip_prefix("circuit-status=").unwrap_or(l);
            let mut words = l.split(' ');
            let id = words.next()?;
            if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (mut rend, mut ours) = (false, false);
            for w in words {
                rend |= w == "PURPOSE=HS_SERVICE_REND";
                ours |= w
                    .strip_prefix("REND_QUERY=")
                    .is_some_and(|q| q.eq_ignore_ascii_case(service_id));
            }
            (rend && ours).then(|| id.to_owned())
        })
        .collect()
}

/// Close the service's rendezvous circuits (its visitors' connections):
/// after a client was revoked, none may go on over a circuit it already had.
async fn close_rend_circuits(c: &mut Control, service_id: &str) -> Result<usize, String> {
    let r = c.command("GETINFO circuit-status").await?;
    if r.code != 250 {
        return Err(format!("tor refused GETINFO circuit-status ({})", r.code));
    }
    let ids = rend_circuits(&r.lines, service_id);
    for id in &ids {
        // 552: it closed by itself meanwhile.
        let closed = c.command(&format!("CLOSECIRCUIT {id}")).await?;
        if closed.code != 250 && closed.code != 552 {
            return Err(format!("tor refused CLOSECIRCUIT ({})", closed.code));
        }
    }
    Ok(ids.len())
}

/// Take a service down, and close its visitors' circuits.
pub async fn remove(service_id: String) -> GuestMsg {
    if !is_base32(&service_id, 56) {
        return GuestMsg::Error {
            message: "the service id is not 56 base32 characters".into(),
        };
    }
    let res = async {
        let mut c = Control::connect().await?;
        let r = c.command(&format!("DEL_ONION {service_id}")).await?;
        match r.code {
            250 => close_rend_circuits(&mut c, &service_id.to_ascii_lowercase())
                .await
                .map(|_| ()),
            552 => Ok(()),
            code => Err(format!("tor refused DEL_ONION ({code})")),
        }
    }
    .await;
    match res {
        Ok(()) => GuestMsg::OnionRemoved,
        Err(message) => GuestMsg::Error { message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> OnionPublish {
        OnionPublish {
            key: format!("ED25519-V3:{}", "A".repeat(86) + "=="),
            service_id: "a".repeat(56),
            virtual_port: 80,
            target_port: 8080,
            client_auth: vec!["B".repeat(52)],
            timeout_ms: 1000,
            close_circuits: false,
        }
    }

    #[test]
    fn rendezvous_circuits_of_one_service_are_found() {
        let sid = "a".repeat(56);
        let lines: Vec<String> = [
            "circuit-status=".to_string(),
            format!("12 BUILT $AA~r1,$BB~r2 BUILD_FLAGS=IS_INTERNAL PURPOSE=HS_SERVICE_REND HS_STATE=HSSR_JOINED REND_QUERY={sid} TIME_CREATED=x"),
            format!("13 BUILT $AA~r1 PURPOSE=HS_SERVICE_INTRO HS_STATE=HSSI_ESTABLISHED REND_QUERY={sid}"),
            format!("14 BUILT $AA~r1 PURPOSE=HS_SERVICE_REND REND_QUERY={}", "b".repeat(56)),
            format!("15 EXTENDED PURPOSE=HS_SERVICE_REND REND_QUERY={}", sid.to_uppercase()),
            "x1 BUILT PURPOSE=HS_SERVICE_REND REND_QUERY=aaaa".to_string(),
            "OK".to_string(),
        ]
        .into();
        assert_eq!(rend_circuits(&lines, &sid), ["12", "15"]);
    }

    #[test]
    fn command_is_built_from_checked_fields_only() {
        let c = add_onion_command(&req()).unwrap();
        assert!(c.starts_with("ADD_ONION ED25519-V3:AAAA"));
        assert!(c.ends_with(&format!(
            " Flags=Detach,V3Auth Port=80,10.1.2.3:8080 ClientAuthV3={}",
            "B".repeat(52)
        )));
        let mut r = req();
        r.key = "NEW:ED25519-V3".into();
        assert!(
            add_onion_command(&r).is_err(),
            "tor must never make the key"
        );
        let mut r = req();
        r.key.push_str(" Flags=DiscardPK");
        assert!(add_onion_command(&r).is_err());
        let mut r = req();
        r.client_auth = vec![format!("{} Port=22,127.0.0.1:22", "B".repeat(52))];
        assert!(add_onion_command(&r).is_err(), "no smuggled arguments");
        let mut r = req();
        r.service_id = "x\r\nSIGNAL HALT".into();
        assert!(add_onion_command(&r).is_err());
        let mut r = req();
        r.target_port = 0;
        assert!(add_onion_command(&r).is_err());
        let mut r = req();
        r.client_auth = vec!["B".repeat(52); MAX_CLIENTS + 1];
        assert!(add_onion_command(&r).is_err());
    }
}
