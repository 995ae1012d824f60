//! `tails-server`: the command line of Tails Server, a thin client of the
//! daemon's API (`tails_server::api`). It renders what the daemon answers and
//! never writes a state file, kills a process or touches the firewall
//! itself. `tails-server daemon` runs the daemon (the library's) in the
//! foreground; `image` and `testnet` are local tools that need no daemon.
//! The command line's definition is the library's (`tails_server::cli`).

mod output;
mod persistence_cmd;
mod service_cmd;
mod stack_cmd;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tails_server::cli::{Cli, Cmd, ImageCmd, TestnetCmd};
use tails_server::Paths;

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("tails-server must run as root (try `sudo tails-server …`)");
    }
    Ok(())
}

fn image(paths: &Paths, cmd: ImageCmd) -> Result<()> {
    let inputs = tails_server::image_inputs(paths);
    for (what, p) in [
        ("Tor VM agent", &inputs.torvm_agent),
        ("App VM agent", &inputs.appvm_agent),
    ] {
        if !p.exists() {
            bail!(
                "the {what} is not installed at {}: run ./setup.sh",
                p.display()
            );
        }
    }
    match cmd {
        ImageCmd::Build { force } => {
            let progress = tails_images::TermProgress::new();
            let images = tails_images::build(&inputs, &progress, force)?;
            println!("images ready in {}", images.dir.display());
        }
        ImageCmd::Show => match tails_images::find(&inputs)? {
            Some(images) => println!("{}", images.dir.display()),
            None => bail!("no images for the current inputs: run `tails-server image build`"),
        },
    }
    Ok(())
}

fn testnet(cmd: TestnetCmd) -> Result<()> {
    let cfg = tails_testnet::Config::default();
    match cmd {
        TestnetCmd::Up => {
            let start = std::time::Instant::now();
            let st = tails_testnet::up(&cfg, &|m| {
                eprintln!("[{:5.1}s] {m}", start.elapsed().as_secs_f64())
            })?;
            println!(
                "testnet is up ({:.1} s): {} relays, {} exits, {} HSDirs",
                start.elapsed().as_secs_f64(),
                st.relays,
                st.exits,
                st.hsdirs
            );
        }
        TestnetCmd::Down => {
            if tails_testnet::down(&cfg)? {
                println!("testnet is down");
            } else {
                println!("testnet was not running");
            }
        }
        TestnetCmd::Fetch {
            url,
            auth_private,
            timeout,
        } => {
            let (host, port) = parse_http_url(&url).map_err(anyhow::Error::msg)?;
            let line = match auth_private.as_deref() {
                None => None,
                Some("-") => {
                    let mut s = String::new();
                    std::io::Read::read_to_string(
                        &mut std::io::Read::take(std::io::stdin(), 4096),
                        &mut s,
                    )?;
                    Some(s)
                }
                Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("read {f}"))?),
            };
            let page = tails_testnet::fetch(
                &cfg,
                &host,
                port,
                line.as_deref(),
                std::time::Duration::from_secs(timeout),
            )?;
            print!("{page}");
        }
        TestnetCmd::Status { json } => {
            let st = tails_testnet::status(&cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&testnet_json(&st))?);
            } else {
                print_testnet(&st);
            }
        }
    }
    Ok(())
}

/// `http://host[:port][/]` → (host, port).
fn parse_http_url(url: &str) -> Result<(String, u16), String> {
    let bad = || format!("{url:?} is not a URL like http://HOST[:PORT]/");
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let hostport = rest.split('/').next().unwrap_or("");
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (hostport, 80),
    };
    if host.is_empty() || host.len() > 255 || port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn testnet_json(st: &tails_testnet::Status) -> serde_json::Value {
    serde_json::json!({
        "up": st.up, "relays": st.relays, "exits": st.exits, "hsdirs": st.hsdirs,
        "bootstrap": st.bootstrap,
        "socks": st.socks.map(|a| a.to_string()),
        "control": st.control.map(|a| a.to_string()),
        "join_torrc": st.join_torrc.as_ref().map(|p| p.display().to_string()),
        "web": st.web.map(|a| a.to_string()),
        "web_log": st.web_log.as_ref().map(|p| p.display().to_string()),
        "host_addr": st.host_addr.to_string(),
        "outside_addr": st.outside_addr.to_string(),
        "subnet": st.subnet,
    })
}

fn print_testnet(st: &tails_testnet::Status) {
    if !st.up {
        println!("testnet is down");
        return;
    }
    println!(
        "testnet: up ({} relays, {} exits, {} HSDirs; client bootstrap {}%)",
        st.relays, st.exits, st.hsdirs, st.bootstrap
    );
    println!(
        "subnet: {} (host side {}, outside {})",
        st.subnet, st.host_addr, st.outside_addr
    );
    if let Some(p) = &st.join_torrc {
        println!(
            "join: add the lines of {} to another tor's torrc",
            p.display()
        );
    }
    if let Some(a) = st.socks {
        println!("client SOCKS: {a} (e.g. curl --socks5-hostname {a} http://outside.test:8080/)");
    }
    if let Some(a) = st.web {
        let log = st
            .web_log
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!("outside web server: http://{a}/ (log: {log})");
    }
}

fn main() {
    // Whatever the CLI or the daemon creates (logs, state, sockets) is
    // root's only unless it says otherwise.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tails-server: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    if let Cmd::ProbeKvm = cli.cmd {
        return Ok(if tails_server::accel::probe_kvm().is_ok() {
            0
        } else {
            1
        });
    }
    // What works on the host itself is root's; what goes through the
    // daemon's API is checked by the daemon (root, or the group
    // tails-server).
    if matches!(
        cli.cmd,
        Cmd::Image { .. } | Cmd::Testnet { .. } | Cmd::Daemon { .. }
    ) {
        require_root()?;
    }
    let paths = Paths::from_env();
    if let Cmd::Image { cmd } = cli.cmd {
        image(&paths, cmd)?;
        return Ok(0);
    }
    if let Cmd::Testnet { cmd } = cli.cmd {
        testnet(cmd)?;
        return Ok(0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Up { network, bridges } => {
                stack_cmd::up(&paths, network, bridges).await.map(|_| 0)
            }
            Cmd::Down => stack_cmd::down(&paths).await.map(|_| 0),
            Cmd::Watch => stack_cmd::watch(&paths).await.map(|_| 0),
            Cmd::Status { json } => stack_cmd::status(&paths, json).await.map(|_| 0),
            Cmd::Exec {
                vm,
                timeout,
                stdin,
                raw,
                command,
            } => stack_cmd::exec(&paths, vm, command, timeout, stdin, raw).await,
            Cmd::Identity { json } => stack_cmd::identity(&paths, json).await.map(|_| 0),
            Cmd::List { json } => service_cmd::list(&paths, json).await.map(|_| 0),
            Cmd::Service(args) => service_cmd::run(&paths, args).await,
            Cmd::Autostart {
                state,
                network,
                bridges,
            } => service_cmd::autostart(&paths, state == "on", network, bridges)
                .await
                .map(|_| 0),
            Cmd::Persistence { cmd } => persistence_cmd::run(&paths, cmd).await.map(|_| 0),
            Cmd::Isolate { state, start, json } => {
                let set = match state.as_str() {
                    "on" => Some(true),
                    "off" => Some(false),
                    _ => None,
                };
                service_cmd::isolate(&paths, set, start, json)
                    .await
                    .map(|_| 0)
            }
            Cmd::Daemon { boot } => {
                tails_server::daemon::run(paths, tails_server::daemon::Options { boot })
                    .await
                    .map_err(anyhow::Error::new)
                    .map(|_| 0)
            }
            Cmd::Image { .. } | Cmd::Testnet { .. } | Cmd::ProbeKvm => Ok(0),
        }
    })
}
