//! The service commands, as in the Tails Server blueprint: `tails-server
//! list` and `tails-server <service> info|status|enable|disable|get-option|
//! set-option|add-client|remove-client|credentials|import-key|export-key`,
//! and `autostart`. Every one is a request to the daemon, which owns the
//! state; this renders the answers (YAML, or JSON with `--json`).

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tails_server::api::{
    Credentials, Network, Reply, Request, ServiceAction, ServiceInfo, MAX_KEY_FILE,
};
use tails_server::cli::{ServiceCli, ServiceCmd as Action};
use tails_server::client::{self, call};
use tails_server::Paths;

use crate::output::{print, say, write_private};
use crate::stack_cmd::{expect, unexpected};

/// One request about `name`; an unknown service is named as a possible
/// typo of a command.
async fn service_request(paths: &Paths, name: &str, action: ServiceAction) -> Result<Reply> {
    let req = Request::Service {
        service: name.to_owned(),
        action,
    };
    let conn = client::connect_or_start(paths).await?;
    match call(conn, &req, |_| {}).await? {
        Reply::Error(e) if e.kind == tails_server::api::ErrorKind::NotFound && e.message.starts_with("unknown service") => bail!(
            "unknown command or service `{name}`: `tails-server --help` lists the commands, `tails-server list` the services"
        ),
        r => expect(r),
    }
}

async fn ask(paths: &Paths, req: Request) -> Result<Reply> {
    let conn = client::connect_or_start(paths).await?;
    expect(call(conn, &req, |_| {}).await?)
}

/// `tails-server list [--json]`
pub async fn list(paths: &Paths, json: bool) -> Result<()> {
    match ask(paths, Request::List).await? {
        Reply::List(items) => {
            let v: Vec<Value> = items
                .iter()
                .map(
                    |s| json!({"name": s.name, "description": s.description, "enabled": s.enabled}),
                )
                .collect();
            print(&Value::Array(v), json)
        }
        other => Err(unexpected(&other)),
    }
}

/// `tails-server autostart on|off [--network N] [--bridge LINE]…`
pub async fn autostart(
    paths: &Paths,
    on: bool,
    network: Network,
    bridges: Vec<String>,
) -> Result<()> {
    match ask(
        paths,
        Request::Autostart {
            on,
            network,
            bridges,
        },
    )
    .await?
    {
        Reply::Done(m) => {
            say(&format!("{m}\n"));
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

/// `isolate on|off|status`.
pub async fn isolate(paths: &Paths, set: Option<bool>, start: bool, json: bool) -> Result<()> {
    match ask(paths, Request::Isolate { set, start }).await? {
        Reply::Isolate(r) => {
            let v = json!({
                "isolate": if r.on { "on" } else { "off" },
                "decided-by": r.decided_by,
                "saved": r.saved.map(|on| if on { "on" } else { "off" }),
                "in-persistent-store": r.in_store,
            });
            if let Some(done) = &r.done {
                say(&format!("{done}\n"));
            }
            print(&v, json)
        }
        other => Err(unexpected(&other)),
    }
}

fn info_value(i: &ServiceInfo, details: bool) -> Value {
    let options: serde_json::Map<String, Value> = i
        .options
        .iter()
        .map(|o| (o.name.clone(), o.json.clone()))
        .collect();
    let mut v = json!({
        "description": i.description,
        "installed": true,
        "enabled": i.state.enabled,
        "running": i.state.running,
        "published": i.state.published,
        "address": i.state.address,
        "local-port": i.local_port,
        "remote-port": i.remote_port,
        "persistent-paths": i.persistent_paths,
        "options": options,
    });
    if let Some(e) = &i.state.error {
        v["error"] = json!(e);
    }
    if details {
        v["client-application"] = json!(i.client_application);
        v["documentation"] = json!(i.documentation);
        v["packages"] = json!(i.packages);
        v["icon-name"] = json!(i.icon_name);
        v["clients"] = json!(i.clients.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
    }
    v
}

fn credentials_value(c: &Credentials) -> Value {
    let mut v = json!({"address": c.address, "connection-info": c.connection_info});
    if c.client_auth {
        v["client"] = json!(c.client);
        v["auth-private"] = json!(c.auth_private);
    } else {
        v["client-auth"] = json!(false);
    }
    v
}

fn print_credentials(c: &Credentials, json: bool, svg: Option<&std::path::Path>) -> Result<()> {
    let v = credentials_value(c);
    // The QR code carries what the client needs: the key line if there is
    // one, else the connection info.
    let qr_text = c.auth_private.as_deref().unwrap_or(&c.connection_info);
    if let Some(path) = svg {
        let svg = tails_onion::qr_svg(qr_text).map_err(|e| anyhow::anyhow!("{e}"))?;
        write_private(path, svg.as_bytes())?;
    }
    if json {
        return print(&v, true);
    }
    print(&v, false)?;
    if let Some(line) = &c.auth_private {
        say(&format!(
            "# Give the client the line above (auth-private): Tor Browser asks for the key part\n\
             # (after `x25519:`) when it opens the address; tor reads the whole line from a\n\
             # `<name>.auth_private` file in its ClientOnionAuthDir.\n# Keep it secret: whoever has it can reach the service.\n# {line}\n"
        ));
    }
    let qr = tails_onion::qr_terminal(qr_text).map_err(|e| anyhow::anyhow!("{e}"))?;
    say(&format!("{qr}\n"));
    Ok(())
}

/// `tails-server <service> <action> …` (`args` starts with the service name).
pub async fn run(paths: &Paths, args: Vec<String>) -> Result<i32> {
    let Some((name, rest)) = args.split_first() else {
        bail!("no command: `tails-server --help` lists them");
    };
    let looks_like_a_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !looks_like_a_name {
        bail!(
            "unknown command or service `{name}`: `tails-server --help` lists the commands, `tails-server list` the services"
        );
    }
    let cli = match ServiceCli::try_parse_from(rest) {
        Ok(c) => c,
        Err(e) => {
            // `tails-server launch`: a typo of a command, more likely than a
            // service without an action.
            if let Reply::List(items) = ask(paths, Request::List).await? {
                if !items.iter().any(|s| &s.name == name) {
                    bail!(
                        "unknown command or service `{name}`: `tails-server --help` lists the commands, `tails-server list` the services"
                    );
                }
            }
            // --help and --version print and succeed; mistakes get clap's message.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let answer = |action| service_request(paths, name, action);
    match cli.action {
        Action::Info { details, json } => match answer(ServiceAction::Info).await? {
            Reply::Info(i) => print(&info_value(&i, details), json)?,
            other => return Err(unexpected(&other)),
        },
        Action::Status { json } => match answer(ServiceAction::State).await? {
            Reply::Service(s) => {
                let mut v = json!({"installed": true, "enabled": s.enabled, "running": s.running, "published": s.published});
                if let Some(n) = s.published_clients {
                    v["authorized-clients"] = json!(n);
                }
                if let Some(e) = &s.error {
                    v["error"] = json!(e);
                }
                print(&v, json)?;
            }
            other => return Err(unexpected(&other)),
        },
        Action::Enable => match answer(ServiceAction::Enable).await? {
            Reply::Credentials(c) => {
                if let Some(d) = &c.done {
                    eprintln!("{d}");
                }
                for w in &c.warnings {
                    eprintln!("{w}");
                }
                print_credentials(&c, false, None)?;
            }
            other => return Err(unexpected(&other)),
        },
        Action::Disable => done(answer(ServiceAction::Disable).await?, false)?,
        Action::GetOption { option } => match answer(ServiceAction::GetOption { option }).await? {
            Reply::Value(v) => say(&format!("{v}\n")),
            other => return Err(unexpected(&other)),
        },
        Action::SetOption { option, value, yes } => {
            let req = |yes| Request::Service {
                service: name.to_owned(),
                action: ServiceAction::SetOption {
                    option: option.clone(),
                    value: value.clone(),
                    yes,
                },
            };
            let conn = client::connect_or_start(paths).await?;
            let r = match call(conn, &req(yes), |_| {}).await? {
                Reply::Error(e) if e.kind == tails_server::api::ErrorKind::Confirm => {
                    if !confirm(&e.message)? {
                        bail!("nothing was changed");
                    }
                    let conn = client::connect_or_start(paths).await?;
                    call(conn, &req(true), |_| {}).await?
                }
                r => r,
            };
            done(expect(r)?, true)?
        }
        Action::AddClient { name, public_key } => {
            match answer(ServiceAction::AddClient { name, public_key }).await? {
                Reply::Credentials(c) => {
                    if let Some(d) = &c.done {
                        eprintln!("{d}");
                    }
                    print_credentials(&c, false, None)?;
                }
                r => done(r, true)?,
            }
        }
        Action::RemoveClient { name } => {
            done(answer(ServiceAction::RemoveClient { name }).await?, true)?
        }
        Action::Credentials { client, svg, json } => {
            match answer(ServiceAction::Credentials { client }).await? {
                Reply::Credentials(c) => {
                    for w in &c.warnings {
                        eprintln!("{w}");
                    }
                    print_credentials(&c, json, svg.as_deref())?
                }
                other => return Err(unexpected(&other)),
            }
        }
        Action::ImportKey { file, replace } => {
            let bytes = read_small(&file)?;
            done(
                answer(ServiceAction::ImportKey {
                    file: bytes,
                    replace,
                })
                .await?,
                false,
            )?
        }
        Action::ExportKey { file } => match answer(ServiceAction::ExportKey).await? {
            Reply::KeyFile(bytes) => {
                write_private(&file, &bytes)?;
                eprintln!(
                    "wrote {} (tor's hs_ed25519_secret_key format; keep it secret)",
                    file.display()
                );
            }
            other => return Err(unexpected(&other)),
        },
    }
    Ok(0)
}

/// Ask the person at the terminal to confirm `what` (its text ends with
/// "add --yes to go on"); without a terminal the answer is no, and the
/// error says how to confirm.
fn confirm(what: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        bail!("{what}");
    }
    let question = what.split("; add --yes").next().unwrap_or(what);
    eprint!("{question}.\nGo on? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// A `Done` reply: its text on stderr (`to_stderr`) or stdout.
fn done(r: Reply, to_stderr: bool) -> Result<()> {
    match r {
        Reply::Done(m) if to_stderr => {
            eprintln!("{m}");
            Ok(())
        }
        Reply::Done(m) => {
            say(&format!("{m}\n"));
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

/// A key file: at most [`MAX_KEY_FILE`] bytes.
fn read_small(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > MAX_KEY_FILE {
        bail!(
            "{} is not a tor key file (larger than {MAX_KEY_FILE} bytes)",
            path.display()
        );
    }
    Ok(bytes)
}
