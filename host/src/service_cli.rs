//! The service commands of the CLI, as in the Tails Server blueprint:
//! `tails-server list` and `tails-server <service> info|status|enable|
//! disable|get-option|set-option`, plus client management and credentials.
//! Output is YAML (or JSON with `--json`).
//!
//! Options and clients are kept on the host (see [`crate::services`]);
//! `enable` and `disable` go through the daemon, which drives the guests.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tails_catalog::{Catalog, OptionValue, Service};

use crate::client::{call, connect};
use crate::ctl::{Reply, Request, ServiceReport};
use crate::paths::Paths;
use crate::services::{self, Store};

/// `tails-server <service> …`
#[derive(Parser)]
#[command(no_binary_name = true, name = "tails-server <service>")]
struct ServiceCli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Print the service's attributes and current values.
    Info {
        /// Also the client application, documentation, packages and clients.
        #[arg(long)]
        details: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print whether it is installed, running and published.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Start it in the App VM and publish it as an onion service.
    Enable,
    /// Remove the onion service and stop it.
    Disable,
    /// Print an option's value.
    GetOption { option: String },
    /// Set an option (checked; nothing changes if it is refused).
    SetOption { option: String, value: String },
    /// Authorize a new client (a fresh key pair); shows its credentials.
    AddClient { name: String },
    /// Revoke a client.
    RemoveClient { name: String },
    /// Show how to connect: address, the client's key line, connection info, QR code.
    Credentials {
        /// Which client (default: the only one, or `default`).
        client: Option<String>,
        /// Also write the QR code as an SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// YAML with every string on one line (a key line must stay copyable).
fn yaml(v: &Value) -> Result<String> {
    let mut opts = serde_saphyr::SerializerOptions::default();
    opts.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(v, opts).context("render YAML")
}

/// Write to stdout; a reader that went away (`| head`) ends the command
/// quietly. (SIGPIPE stays ignored process-wide: the daemon and the image
/// builder write to sockets and pipes whose far end may close, and must see
/// that as an error, not die of it.)
fn say(text: &str) {
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

fn print(v: &Value, json: bool) -> Result<()> {
    if json {
        say(&format!("{}\n", serde_json::to_string_pretty(v)?));
    } else {
        say(&yaml(v)?);
    }
    Ok(())
}

fn catalog(paths: &Paths) -> Catalog {
    let (catalog, errors) = Catalog::load_dir(&paths.services());
    for e in errors {
        eprintln!("tails-server: skipping a service: {e}");
    }
    catalog
}

fn find<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a Service> {
    catalog.get(name).with_context(|| {
        format!("unknown service `{name}`: `tails-server list` shows the services")
    })
}

/// `tails-server list [--json]`
pub fn list(paths: &Paths, json: bool) -> Result<()> {
    let catalog = catalog(paths);
    let store = Store::new(paths.service_state());
    let items: Vec<Value> = catalog
        .iter()
        .map(|s| {
            let enabled = store.load(s).map(|st| st.enabled).unwrap_or(false);
            json!({"name": s.name(), "description": s.description(), "enabled": enabled})
        })
        .collect();
    print(&Value::Array(items), json)
}

/// What the daemon says of a service, if it runs.
async fn report(paths: &Paths, name: &str) -> Result<Option<ServiceReport>> {
    let Some(c) = connect(paths).await else {
        return Ok(None);
    };
    match call(
        c,
        &Request::ServiceState {
            service: name.to_owned(),
        },
        |_| {},
    )
    .await?
    {
        Reply::Service(r) => Ok(Some(r)),
        // The stack is not up (a daemon starting or stopping): nothing runs.
        Reply::Error(_) => Ok(None),
        other => bail!("unexpected reply {other:?}"),
    }
}

async fn daemon_call(paths: &Paths, req: Request) -> Result<String> {
    let Some(c) = connect(paths).await else {
        bail!("tails-server is not up: run `tails-server up` first");
    };
    match call(c, &req, |_| {}).await? {
        Reply::Done(m) => Ok(m),
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn option_map(svc: &Service, st: &services::State, reveal: bool) -> serde_json::Map<String, Value> {
    svc.options()
        .iter()
        .filter_map(|o| {
            let v = st.values.get(o.name())?;
            let text = if reveal {
                v.reveal().to_string()
            } else {
                v.to_string()
            };
            let val = match v {
                OptionValue::Bool(b) => json!(b),
                OptionValue::Int(i) => json!(i),
                OptionValue::Port(p) => json!(p),
                _ => json!(text),
            };
            Some((o.name().to_owned(), val))
        })
        .collect()
}

/// The credentials of one client, as a person passes them on.
fn credentials(
    svc: &Service,
    st: &services::State,
    address: &tails_onion::OnionAddress,
    client: Option<&str>,
) -> Result<Value> {
    let addr = address.to_string();
    let info = svc
        .render_connection_info(
            &st.values,
            &tails_catalog::Builtins {
                address: &addr,
                target_port: svc.default_target_port(),
            },
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", svc.name()))?;
    let mut v = json!({"address": addr, "connection-info": info});
    if services::client_auth_on(&st.values) {
        let name = match client {
            Some(n) => n.to_owned(),
            None if st.clients.len() == 1 => st.clients.keys().next().cloned().unwrap_or_default(),
            None => services::FIRST_CLIENT.to_owned(),
        };
        let key = st.clients.get(&name).with_context(|| {
            format!(
                "no client named {name}: `tails-server {} add-client {name}` makes one",
                svc.name()
            )
        })?;
        v["client"] = json!(name);
        v["auth-private"] = json!(key.auth_private_line(address).as_str());
    } else {
        v["client-auth"] = json!(false);
    }
    Ok(v)
}

fn print_credentials(v: &Value, json: bool, svg: Option<&std::path::Path>) -> Result<()> {
    // The QR code carries what the client needs: the key line if there is
    // one, else the connection info.
    let qr_text = v["auth-private"]
        .as_str()
        .or(v["connection-info"].as_str())
        .unwrap_or("");
    if let Some(path) = svg {
        let svg = tails_onion::qr_svg(qr_text).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::services::write_private(path, svg.as_bytes())?;
    }
    if json {
        return print(v, true);
    }
    print(v, false)?;
    if let Some(line) = v["auth-private"].as_str() {
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
    let catalog = catalog(paths);
    if catalog.get(name).is_none() {
        bail!(
            "unknown command or service `{name}`: `tails-server --help` lists the commands, `tails-server list` the services"
        );
    }
    let cli = match ServiceCli::try_parse_from(rest) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; mistakes get clap's message.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let svc = find(&catalog, name)?;
    let store = Store::new(paths.service_state());
    match cli.action {
        Action::Info { details, json } => {
            let st = store.load(svc)?;
            let rep = report(paths, name).await?;
            let mut v = json!({
                "description": svc.description(),
                "installed": true,
                "enabled": st.enabled,
                "running": rep.as_ref().is_some_and(|r| r.running),
                "published": rep.as_ref().is_some_and(|r| r.published),
                "address": store.address(name).map(|a| a.to_string()),
                "local-port": svc.default_target_port(),
                "remote-port": services::virtual_port(svc, &st.values),
                "persistent-paths": svc.persistent_paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "options": option_map(svc, &st, false),
            });
            if details {
                v["client-application"] = json!(svc.client_application());
                v["documentation"] = json!(svc.documentation());
                v["packages"] = json!(svc.packages());
                v["icon-name"] = json!(svc.icon_name());
                v["clients"] = json!(st.clients.keys().collect::<Vec<_>>());
            }
            print(&v, json)?;
        }
        Action::Status { json } => {
            let rep = report(paths, name).await?;
            let v = json!({
                "installed": true,
                "running": rep.as_ref().is_some_and(|r| r.running),
                "published": rep.as_ref().is_some_and(|r| r.published),
            });
            print(&v, json)?;
        }
        Action::Enable => {
            let msg = daemon_call(
                paths,
                Request::Enable {
                    service: name.clone(),
                },
            )
            .await?;
            eprintln!("{msg}");
            let st = store.load(svc)?;
            if !services::client_auth_on(&st.values) {
                eprintln!("WARNING: client authorization is off: anyone who learns the address can reach {name}, and a hosted onion service whose address leaks is far easier to locate than a client.");
            }
            if let Some(addr) = store.address(name) {
                let v = credentials(svc, &st, &addr, None)?;
                print_credentials(&v, false, None)?;
            }
        }
        Action::Disable => {
            let msg = daemon_call(
                paths,
                Request::Disable {
                    service: name.clone(),
                },
            )
            .await?;
            say(&format!("{msg}\n"));
        }
        Action::GetOption { option } => {
            let st = store.load(svc)?;
            let v = st.values.get(&option).with_context(|| {
                format!("{name} has no option {option}: `tails-server {name} info` lists them")
            })?;
            say(&format!("{}\n", v.reveal()));
        }
        Action::SetOption { option, value } => {
            let mut st = store.load(svc)?;
            let parsed = svc
                .parse_option(&option, &value)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let off = matches!(parsed, OptionValue::Bool(false))
                && option == tails_catalog::CLIENT_AUTH_OPTION;
            st.values.insert(option.clone(), parsed);
            store.save(svc, &st)?;
            if off {
                eprintln!("WARNING: client authorization is now off for {name}: anyone who learns its address can reach it, and a hosted onion service whose address leaks is far easier to locate than a client. Turn it back on with `tails-server {name} set-option client-auth true`.");
            }
            if st.enabled {
                eprintln!(
                    "{name} is enabled: `tails-server {name} disable` then `enable` to apply"
                );
            }
        }
        Action::AddClient { name: client } => {
            let mut st = store.load(svc)?;
            services::add_client(&mut st, &client)?;
            store.save(svc, &st)?;
            let addr = store.onion_key(name)?.onion_address();
            eprintln!(
                "client {client} added{}",
                if st.enabled {
                    ": `disable` then `enable` to apply"
                } else {
                    ""
                }
            );
            let v = credentials(svc, &st, &addr, Some(&client))?;
            print_credentials(&v, false, None)?;
        }
        Action::RemoveClient { name: client } => {
            let mut st = store.load(svc)?;
            if st.clients.remove(&client).is_none() {
                bail!("{name} has no client named {client}");
            }
            store.save(svc, &st)?;
            eprintln!(
                "client {client} revoked{}",
                if st.enabled {
                    ": `disable` then `enable` to apply"
                } else {
                    ""
                }
            );
        }
        Action::Credentials { client, svg, json } => {
            let st = store.load(svc)?;
            let addr = store.address(name).with_context(|| {
                format!("{name} has no address yet: `tails-server {name} enable` makes one")
            })?;
            let v = credentials(svc, &st, &addr, client.as_deref())?;
            print_credentials(&v, json, svg.as_deref())?;
        }
    }
    Ok(0)
}
