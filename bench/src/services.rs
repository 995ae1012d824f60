//! `services`: for each service of the catalog, the time from `tails-server
//! SERVICE enable` to its client's first successful action through the
//! testnet's Tor (a page fetched, a file dropped, a chat message heard, a
//! file exchanged, a stream received…), against the same for nginx in the
//! same run: the table says what each service's own start costs beyond a
//! web server's.
//!
//! Each run gives the service a fresh key made here (imported, so that the
//! address is known beforehand) and a client key whose private half only
//! the client holds; the client's tor is bootstrapped before `enable`, so
//! that neither key generation nor the client's start is timed.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tails_tests::clients::{self, SERVICES};
use tails_tests::torclient::FreshClient;

use crate::{median, run_ok};

const STATE: &str = "/run/ts-bench-services-state";
const PAGE: &str = "tails-server services benchmark page";
/// How long one service may take to its client's first success.
const DEADLINE: Duration = Duration::from_secs(300);

fn ts(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args).env("TAILS_SERVER_STATE_DIR", STATE);
    c
}

fn option(bin: &Path, service: &str, name: &str) -> Result<String> {
    Ok(run_ok(&mut ts(bin, &[service, "get-option", name]))?
        .trim()
        .to_owned())
}

/// One attempt of `service`'s client action through `socks`; whether it
/// succeeded.
/// `service`'s client script with its credentials, read once (`None`: curl).
fn script_for(bin: &Path, service: &str) -> Result<Option<clients::ClientScript>> {
    let failed = std::cell::RefCell::new(None);
    let c = clients::client_script(service, |o| {
        option(bin, service, o).unwrap_or_else(|e| {
            failed.borrow_mut().get_or_insert(e);
            String::new()
        })
    });
    match failed.into_inner() {
        Some(e) => Err(e),
        None => Ok(c),
    }
}

fn attempt(
    service: &str,
    script: Option<&clients::ClientScript>,
    socks: &str,
    address: &str,
    port: u16,
) -> Result<bool> {
    let curl = |args: &[&str]| -> Result<String> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "60", "--socks5-hostname", socks])
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    Ok(match service {
        "nginx" => curl(&[&format!("http://{address}:{port}/")])? == "200",
        "filedrop" => {
            let file = std::env::temp_dir().join("ts-bench-drop");
            std::fs::write(&file, PAGE)?;
            let url = format!(
                "http://{address}:{port}/drop/bench-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos()
            );
            curl(&["-T", &file.display().to_string(), &url])? == "201"
        }
        other => {
            let c = script.with_context(|| format!("no client action for {other}"))?;
            Command::new(c.python)
                .arg(clients::script(c.script))
                .args(["--socks", socks, "--host", address, "--port"])
                .arg(port.to_string())
                .args(["--timeout", "60"])
                .args(&c.right)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?
                .success()
        }
    })
}

/// One measurement of `service`: fresh keys, a client ready, then `enable`
/// to the first success; the service is disabled again afterwards.
fn measure(bin: &Path, service: &str, join: &[String], socks: SocketAddr) -> Result<f64> {
    let _ = std::fs::remove_dir_all(Path::new(STATE).join("amnesic/services").join(service));
    let key = tails_onion::ServiceKey::generate()?;
    let client = tails_onion::ClientKey::generate()?;
    let address = key.onion_address();
    let key_file = std::env::temp_dir().join(format!("ts-bench-{service}.key"));
    let _ = std::fs::remove_file(&key_file);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file)?;
        f.write_all(&key.to_tor_secret_key_file())?;
    }
    let imported = run_ok(&mut ts(
        bin,
        &[service, "import-key", &key_file.display().to_string()],
    ));
    let _ = std::fs::remove_file(&key_file);
    imported?;
    run_ok(&mut ts(
        bin,
        &[
            service,
            "add-client",
            "bench",
            "--public-key",
            &client.public_base32(),
        ],
    ))?;
    let line = client.auth_private_line(&address);
    let tor = FreshClient::with_keys("ts-outside", join, socks, &[line.as_str()]);
    if !tor.wait_bootstrapped(120) {
        bail!("the client's tor did not bootstrap");
    }
    let port: u16 = option(bin, service, "virtual-port")?.parse()?;
    let script = script_for(bin, service)?;
    let socks = tor.socks.to_string();
    let host = address.to_string();
    let t0 = Instant::now();
    run_ok(&mut ts(bin, &[service, "enable"]))?;
    let took = loop {
        if attempt(service, script.as_ref(), &socks, &host, port)? {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > DEADLINE {
            bail!("{service}: no success within {} s", DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    run_ok(&mut ts(bin, &[service, "disable"]))?;
    Ok(took)
}

pub fn run(bin: &Path, runs: u32) -> Result<()> {
    crate::stack_on_testnet(bin, STATE, PAGE)?;
    let join = tails_testnet::join_options(&tails_testnet::Config::default())
        .context("the testnet's join options")?;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); SERVICES.len()];
    let mut port = 9191u16;
    for i in 1..=runs {
        for (k, service) in SERVICES.iter().enumerate() {
            port += 1;
            let socks: SocketAddr = format!("10.100.0.2:{port}").parse()?;
            let t = measure(bin, service, &join, socks)?;
            println!("run {i}: {service} enable→first client success {t:.1} s");
            times[k].push(t);
        }
    }
    crate::stack_down(bin, STATE);
    let base = median(times[0].clone());
    println!("runs: {runs} (medians), testnet, client authorization on, clients of tests/clients/");
    println!(
        "{:<14} {:>22} {:>16}",
        "service", "enable→first success", "ratio to nginx"
    );
    for (k, service) in SERVICES.iter().enumerate() {
        let m = median(times[k].clone());
        println!("{service:<14} {m:>20.1} s {:>16.2}", m / base);
    }
    Ok(())
}
