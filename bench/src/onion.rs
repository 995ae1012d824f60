//! `onion`: time from `tails-server nginx enable` to the first page fetched
//! by an authorized client of the testnet, against a plain tor on the host
//! publishing the same kind of service (ADD_ONION with client authorization,
//! a local web server) on the same testnet, in the same run, interleaved.
//! Target: ratio ≤ 1.2.
//!
//! Every run uses fresh keys (a new address), so no client has the
//! descriptor cached. The host tor's bootstrap is not timed, nor is the
//! stack's `up`: both are up before the first run.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{median, run_ok};

const STATE: &str = "/run/ts-bench-onion-state";
const TOR_DIR: &str = "/run/ts-bench-onion-tor";
const CONTROL: &str = "127.0.0.1:19351";
const PAGE: &str = "tails-server onion benchmark page";

fn ts(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args).env("TAILS_SERVER_STATE_DIR", STATE);
    c
}

/// A tiny web server on loopback for the plain tor's service.
fn serve_page() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{PAGE}",
                    PAGE.len()
                )
                .as_bytes(),
            );
        }
    });
    Ok(port)
}

/// A plain tor on the host, joined to the testnet; killed on drop.
pub(crate) struct HostTor(Child);

impl Drop for HostTor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(TOR_DIR);
    }
}

/// One command on the host tor's control port; the reply lines.
pub(crate) fn control(cmd: &str) -> Result<Vec<String>> {
    let addr: SocketAddr = CONTROL.parse()?;
    tails_tests::torclient::control(addr, &Path::new(TOR_DIR).join("cookie"), cmd)
        .map_err(anyhow::Error::msg)
}

/// The host tor, started and bootstrapped on the testnet (up to 180 s).
pub(crate) fn start_host_tor() -> Result<HostTor> {
    let _ = std::fs::remove_dir_all(TOR_DIR);
    std::fs::create_dir_all(TOR_DIR)?;
    let join = tails_testnet::join_options(&tails_testnet::Config::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut torrc = join.join("\n");
    torrc.push_str(&format!(
        "\nDataDirectory {TOR_DIR}/data\nSocksPort 0\nControlPort {CONTROL}\nCookieAuthentication 1\nCookieAuthFile {TOR_DIR}/cookie\nLog notice file {TOR_DIR}/notice.log\n"
    ));
    let path = PathBuf::from(TOR_DIR).join("torrc");
    std::fs::write(&path, torrc)?;
    let child = Command::new("tor")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start tor")?;
    let tor = HostTor(child);
    let start = Instant::now();
    loop {
        if let Ok(r) = control("GETINFO status/bootstrap-phase") {
            if r.iter().any(|l| l.contains("PROGRESS=100")) {
                return Ok(tor);
            }
        }
        if start.elapsed() > Duration::from_secs(180) {
            bail!("the host tor did not bootstrap on the testnet in 180 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetch `/` through the testnet's client with the key line (the client
/// learns the key first, from stdin: the key is in no file), retrying
/// until the service answers (up to 300 s); what it printed of the page.
pub(crate) fn fetch(bin: &Path, address: &str, auth_line: &str) -> Result<String> {
    let mut child = ts(
        bin,
        &[
            "testnet",
            "fetch",
            "--timeout",
            "300",
            "--auth-private",
            "-",
            &format!("http://{address}/"),
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(auth_line.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "fetch failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of the `key: value` line of a command's output.
pub(crate) fn field(yaml: &str, key: &str) -> Result<String> {
    yaml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(|s| s.trim().to_string())
        .with_context(|| format!("no {key} in the output"))
}

/// One Tails Server run: fresh keys, enable, fetch; then disable. The
/// whole time, and how long `enable` took of it (it returns once the
/// service runs and tor uploaded its descriptor).
fn ts_run(bin: &Path) -> Result<(f64, f64)> {
    let _ = std::fs::remove_dir_all(Path::new(STATE).join("amnesic/services/nginx"));
    let t0 = Instant::now();
    let out = run_ok(&mut ts(bin, &["nginx", "enable"]))?;
    let enabled = t0.elapsed().as_secs_f64();
    let address = field(&out, "address")?;
    let auth = field(&out, "auth-private")?;
    fetch(bin, &address, &auth)?;
    let t = t0.elapsed().as_secs_f64();
    run_ok(&mut ts(bin, &["nginx", "disable"]))?;
    Ok((t, enabled))
}

/// `key`'s service published by the host tor (port 80 to `127.0.0.1:port`),
/// for `client` only.
pub(crate) fn add_onion(
    key: &tails_onion::ServiceKey,
    client: &tails_onion::ClientKey,
    port: u16,
) -> Result<()> {
    let r = control(&format!(
        "ADD_ONION {} Flags=Detach,V3Auth Port=80,127.0.0.1:{port} ClientAuthV3={}",
        key.tor_add_onion_key().as_str(),
        client.public_base32()
    ))?;
    if !r.iter().any(|l| l.starts_with("250-ServiceID=")) {
        bail!("the host tor refused ADD_ONION: {r:?}");
    }
    Ok(())
}

/// One plain-tor run: fresh keys, ADD_ONION, fetch; then DEL_ONION.
fn plain_run(bin: &Path, port: u16) -> Result<f64> {
    let key = tails_onion::ServiceKey::generate()?;
    let client = tails_onion::ClientKey::generate()?;
    let address = key.onion_address();
    let t0 = Instant::now();
    add_onion(&key, &client, port)?;
    fetch(
        bin,
        &address.to_string(),
        client.auth_private_line(&address).as_str(),
    )?;
    let t = t0.elapsed().as_secs_f64();
    control(&format!("DEL_ONION {}", address.without_suffix()))?;
    Ok(t)
}

pub fn run(bin: &Path, runs: u32) -> Result<()> {
    crate::stack_on_testnet(bin, STATE, PAGE)?;
    let port = serve_page()?;
    let tor = start_host_tor()?;
    let (mut a, mut b, mut e) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=runs {
        let (x, enabled) = ts_run(bin)?;
        let y = plain_run(bin, port)?;
        println!(
            "run {i}: tails-server enable→page {x:.2} s (enable {enabled:.2} s, then the fetch {:.2} s), plain tor ADD_ONION→page {y:.2} s",
            x - enabled
        );
        a.push(x);
        b.push(y);
        e.push(enabled);
    }
    drop(tor);
    crate::stack_down(bin, STATE);
    let (x, y) = (median(a), median(b));
    println!("runs: {runs} (medians), testnet, client authorization on in both");
    println!(
        "tails-server: `nginx enable` to the first page by an authorized client: {x:.2} s (`enable` itself: {:.2} s)",
        median(e)
    );
    println!("plain tor on the host: ADD_ONION to the first page by the same client:  {y:.2} s");
    println!("ratio: {:.2} (target <= 1.2)", x / y);
    Ok(())
}
