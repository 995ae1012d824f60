//! `transfer`: 20 MiB downloaded by the testnet's client through the App
//! VM's nginx onion service, against the same client downloading the same
//! 20 MiB from a plain tor's onion service on the host, backed by a web
//! server on loopback, in the same run, interleaved. Target: ratio ≥ 0.8.
//!
//! Then hops of the Tails Server path alone, to show which one limits:
//! - the internal link (App VM → Tor VM, TCP): the same file fetched from
//!   nginx by `wget` in the Tor VM, run as tor's user (`busybox su
//!   debian-tor`): the Tor VM's table lets only that user open a
//!   connection to the App VM (`tails_nft::torvm`), and no rule is changed;
//! - vsock as a stream: the same file through the host's allow-localhost
//!   relay (host loopback → vsock → the App VM agent's relay → nginx),
//!   turned on for the benchmark;
//! - vsock as exec: the file read back with `exec appvm` in pieces of
//!   1 MiB, exec's output cap (`tails_proto::msg::MAX_EXEC_OUTPUT`).
//!
//! The file is random, written by the App VM into nginx's web root; every
//! copy of it (each download, the Tor VM's, the host's) is checked to be
//! exactly 20 MiB with the SHA-256 the App VM computed: one that is not
//! fails the benchmark. Both onion services are published and reached once
//! (`/`, which also gives the testnet's client its key) before the first
//! timed run. A download through curl is timed from its connection made to
//! its end (curl's `time_total − time_pretransfer`); the link and exec
//! figures are the host's wall clock around the execs (their round trip,
//! measured with `true`, is printed).
//!
//! `tails-server testnet fetch` is not used for the timed downloads: it
//! GETs only `/`, keeps at most 64 KiB of a response and retries until its
//! timeout (`tails_testnet::fetch`).

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::onion::{self, HostTor};
use crate::{median, run_ok};

const STATE: &str = "/run/ts-bench-transfer-state";
/// The host's copies of the downloads (a tmpfs: no disk is timed).
const DIR: &str = "/run/ts-bench-transfer";
const PAGE: &str = "tails-server transfer benchmark page";
const MIB: usize = 1 << 20;
/// The size of the file.
const SIZE: usize = 20 * MIB;
/// The file's path on both web servers.
const BIG: &str = "/big.bin";
/// nginx's web root (where `tails_tests::page_script` writes the page).
const WEB_ROOT: &str = "/var/www/tails-server";
/// nginx's target port (services/nginx.yaml, `default_target_port`): where
/// tor in the Tor VM connects to it, and where the allow-localhost relay
/// listens on the host.
const NGINX_PORT: u16 = 8080;
/// The App VM's address on the internal link.
const APPVM_ADDR: &str = "10.1.2.3";
/// exec's output cap (`tails_proto::msg::MAX_EXEC_OUTPUT`): more is cut.
const EXEC_PIECE: usize = MIB;
/// Where the Tor VM keeps its copy during a link run (a tmpfs).
const TORVM_COPY: &str = "/tmp/ts-bench-transfer.bin";
/// Longest one download may take, in seconds.
const MAX_SECS: u64 = 600;

fn ts(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args).env("TAILS_SERVER_STATE_DIR", STATE);
    c
}

/// A web server on loopback for the plain tor's service: `BIG` is `big`,
/// any other path the page. One thread per connection.
fn serve(big: Arc<Vec<u8>>) -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let big = Arc::clone(&big);
            std::thread::spawn(move || answer(s, &big));
        }
    });
    Ok(port)
}

/// One HTTP/1.0 request read and answered (errors end the connection).
fn answer(mut s: TcpStream, big: &[u8]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 && head.len() < 8192 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let wants_big = String::from_utf8_lossy(&head).split_whitespace().nth(1) == Some(BIG);
    let body = if wants_big { big } else { PAGE.as_bytes() };
    let _ = s.write_all(
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = s.write_all(body);
}

/// The hash in `sha256sum`'s output.
fn sha256_of(out: &str) -> Result<String> {
    out.split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .with_context(|| format!("no SHA-256 in {out:?}"))
}

/// `file` is the App VM's file: `SIZE` bytes with the SHA-256 `sum`.
fn check(file: &Path, sum: &str, what: &str) -> Result<()> {
    let len = std::fs::metadata(file)?.len();
    if len != SIZE as u64 {
        bail!("{what}: {len} bytes, not {SIZE}");
    }
    let got = sha256_of(&run_ok(Command::new("sha256sum").arg(file))?)?;
    if got != sum {
        bail!("{what}: SHA-256 {got}, not the App VM's {sum}");
    }
    Ok(())
}

/// The random file written into nginx's web root by the App VM; its SHA-256
/// as the App VM computed it.
fn write_big(bin: &Path) -> Result<String> {
    let file = format!("{WEB_ROOT}{BIG}");
    let script = format!("head -c {SIZE} /dev/urandom > {file}.part && mv {file}.part {file}");
    let exec = |argv: &[&str]| {
        let mut c = ts(bin, &["exec", "appvm", "--timeout", "300", "--"]);
        c.args(argv);
        c
    };
    run_ok(&mut exec(&["sh", "-c", &script]))?;
    sha256_of(&run_ok(&mut exec(&["sha256sum", &file]))?)
}

/// GET `url` into `out`, through the SOCKS proxy `socks` (the testnet's
/// client) if given; seconds from the connection made to the end.
fn curl(url: &str, socks: Option<SocketAddr>, out: &Path) -> Result<f64> {
    let _ = std::fs::remove_file(out);
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail", "--max-time", &MAX_SECS.to_string(), "-o"])
        .arg(out)
        .args(["-w", "%{size_download} %{time_pretransfer} %{time_total}"]);
    match socks {
        Some(s) => c.arg("--socks5-hostname").arg(s.to_string()),
        None => c.args(["--noproxy", "*"]),
    };
    let w = run_ok(c.arg(url))?;
    let v: Vec<f64> = w
        .split_whitespace()
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("curl's figures: {w:?}"))?;
    let [size, pretransfer, total] = v[..] else {
        bail!("curl's figures: {w:?}");
    };
    if size != SIZE as f64 {
        bail!("{url}: {size} bytes downloaded, not {SIZE}");
    }
    Ok(total - pretransfer)
}

/// Seconds of one `exec VM -- true`: an exec's round trip.
fn exec_rtt(bin: &Path, vm: &str) -> Result<f64> {
    let t0 = Instant::now();
    run_ok(&mut ts(bin, &["exec", vm, "--", "true"]))?;
    Ok(t0.elapsed().as_secs_f64())
}

/// The App VM's file read back through `exec appvm`, one piece of exec's
/// output cap per exec; the bytes and the seconds taken.
fn exec_copy(bin: &Path) -> Result<(Vec<u8>, f64)> {
    let mut bytes = Vec::with_capacity(SIZE);
    let t0 = Instant::now();
    for i in 0..SIZE / EXEC_PIECE {
        let out = ts(
            bin,
            &["exec", "appvm", "--raw", "--timeout", "60", "--", "dd"],
        )
        .args([
            format!("if={WEB_ROOT}{BIG}"),
            format!("bs={EXEC_PIECE}"),
            format!("skip={i}"),
            "count=1".into(),
            "status=none".into(),
        ])
        .output()?;
        if !out.status.success() || out.stdout.len() != EXEC_PIECE {
            bail!(
                "exec piece {i}: {} bytes, {}: {}",
                out.stdout.len(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        bytes.extend_from_slice(&out.stdout);
    }
    Ok((bytes, t0.elapsed().as_secs_f64()))
}

/// Seconds for tor's user in the Tor VM to fetch the file from nginx over
/// the internal link; the Tor VM's copy is checked (size, SHA-256) after
/// the timed exec and removed. The Tor VM's busybox links few applets: the
/// others are run as `/bin/busybox APPLET`.
fn link_run(bin: &Path, sum: &str) -> Result<f64> {
    let bb = "/bin/busybox";
    let get = format!(
        "{bb} rm -f {TORVM_COPY}; {bb} su -s /bin/sh debian-tor -c \
         '{bb} wget -q -O - http://{APPVM_ADDR}:{NGINX_PORT}{BIG}' > {TORVM_COPY}"
    );
    let t0 = Instant::now();
    run_ok(&mut ts(
        bin,
        &[
            "exec",
            "torvm",
            "--timeout",
            &MAX_SECS.to_string(),
            "--",
            "sh",
            "-c",
            &get,
        ],
    ))?;
    let t = t0.elapsed().as_secs_f64();
    let look = format!(
        "{bb} wc -c < {TORVM_COPY}; {bb} sha256sum {TORVM_COPY}; r=$?; {bb} rm -f {TORVM_COPY}; exit $r"
    );
    let out = run_ok(&mut ts(bin, &["exec", "torvm", "--", "sh", "-c", &look]))?;
    let (len, hash) = out.split_once('\n').context("the Tor VM's copy")?;
    if len.trim() != SIZE.to_string() {
        bail!("the Tor VM's copy: {} bytes, not {SIZE}", len.trim());
    }
    let got = sha256_of(hash)?;
    if got != sum {
        bail!("the Tor VM's copy: SHA-256 {got}, not the App VM's {sum}");
    }
    Ok(t)
}

/// What the runs download from, ready before the first.
struct Setup {
    /// The App VM's file through its onion service.
    onion_url: String,
    /// The host's copy through the host tor's onion service.
    plain_url: String,
    /// The testnet's client.
    socks: SocketAddr,
    /// The App VM's SHA-256 of the file.
    sum: String,
    /// Why the relay is not measured, if it is not.
    no_relay: Option<String>,
    /// Publishes the plain service; killed on drop.
    _tor: HostTor,
}

fn onion_url(address: &str) -> String {
    let host = address.trim_end_matches(".onion");
    format!("http://{host}.onion{BIG}")
}

/// nginx published with the file and its relay turned on; the host's copy
/// (read back through exec, checked) served and published by a host tor;
/// both services reached once by the testnet's client.
fn setup(bin: &Path) -> Result<Setup> {
    std::fs::create_dir_all(DIR)?;
    let out = run_ok(&mut ts(bin, &["nginx", "enable"]))?;
    let address = onion::field(&out, "address")?;
    let auth = onion::field(&out, "auth-private")?;
    // Before the first fetch: whatever turning it on changes is done by then.
    let no_relay = run_ok(&mut ts(
        bin,
        &["nginx", "set-option", "allow-localhost", "true"],
    ))
    .err()
    .map(|e| format!("allow-localhost could not be turned on: {e:#}"));
    let sum = write_big(bin)?;
    let (bytes, _) = exec_copy(bin)?;
    let copy = Path::new(DIR).join("copy.bin");
    std::fs::write(&copy, &bytes)?;
    check(&copy, &sum, "the host's copy")?;
    let port = serve(Arc::new(bytes))?;
    let tor = onion::start_host_tor()?;
    let key = tails_onion::ServiceKey::generate()?;
    let client = tails_onion::ClientKey::generate()?;
    let plain = key.onion_address();
    onion::add_onion(&key, &client, port)?;
    onion::fetch(bin, &address, &auth)?;
    onion::fetch(
        bin,
        &plain.to_string(),
        client.auth_private_line(&plain).as_str(),
    )?;
    let socks = tails_testnet::status(&tails_testnet::Config::default())
        .context("the testnet's status")?
        .socks
        .context("the testnet's client has no SOCKS port")?;
    Ok(Setup {
        onion_url: onion_url(&address),
        plain_url: onion_url(&plain.to_string()),
        socks,
        sum,
        no_relay,
        _tor: tor,
    })
}

/// Seconds of each figure, one entry per run.
#[derive(Default)]
struct Samples {
    onion: Vec<f64>,
    plain: Vec<f64>,
    link: Vec<f64>,
    relay: Vec<f64>,
    exec: Vec<f64>,
    rtt_torvm: Vec<f64>,
    rtt_appvm: Vec<f64>,
}

fn mib_s(secs: f64) -> f64 {
    (SIZE / MIB) as f64 / secs
}

/// One run of every figure, in the same order each time.
fn one_run(bin: &Path, s: &Setup, i: u32, x: &mut Samples) -> Result<()> {
    let file = PathBuf::from(DIR).join("download.bin");
    let onion = curl(&s.onion_url, Some(s.socks), &file)?;
    check(&file, &s.sum, "tails-server's onion service")?;
    let plain = curl(&s.plain_url, Some(s.socks), &file)?;
    check(&file, &s.sum, "the plain onion service")?;
    let link = link_run(bin, &s.sum)?;
    let relay = match s.no_relay {
        Some(_) => None,
        None => {
            let url = format!("http://127.0.0.1:{NGINX_PORT}{BIG}");
            let t = curl(&url, None, &file)?;
            check(&file, &s.sum, "the allow-localhost relay")?;
            Some(t)
        }
    };
    let (bytes, exec) = exec_copy(bin)?;
    std::fs::write(&file, bytes)?;
    check(&file, &s.sum, "exec")?;
    let _ = std::fs::remove_file(&file);
    x.rtt_torvm.push(exec_rtt(bin, "torvm")?);
    x.rtt_appvm.push(exec_rtt(bin, "appvm")?);
    let relay_text = relay.map_or("not measured".into(), |t| format!("{:.1} MiB/s", mib_s(t)));
    println!(
        "run {i}: tails-server onion {:.1} MiB/s, plain onion {:.1} MiB/s; internal link {:.1} MiB/s, vsock relay {relay_text}, vsock exec {:.1} MiB/s",
        mib_s(onion),
        mib_s(plain),
        mib_s(link),
        mib_s(exec)
    );
    x.onion.push(onion);
    x.plain.push(plain);
    x.link.push(link);
    x.relay.extend(relay);
    x.exec.push(exec);
    Ok(())
}

fn report(s: &Setup, runs: u32, x: Samples) {
    let (onion, plain) = (median(x.onion), median(x.plain));
    let (rtt_t, rtt_a) = (median(x.rtt_torvm), median(x.rtt_appvm));
    let mib = SIZE / MIB;
    println!("{mib} MiB of random bytes, runs: {runs} (medians), testnet, client authorization on in both, every copy checked (size, SHA-256)");
    println!(
        "tails-server: client → Tor VM's tor → internal link → App VM nginx: {:7.2} MiB/s ({onion:.2} s)",
        mib_s(onion)
    );
    println!(
        "plain tor on the host: same client → host tor → loopback server:   {:7.2} MiB/s ({plain:.2} s)",
        mib_s(plain)
    );
    println!(
        "ratio tails-server / plain tor: {:.2} (target >= 0.8)",
        plain / onion
    );
    println!("hops of the tails-server path alone:");
    let link = median(x.link);
    println!(
        "internal link, App VM nginx → Tor VM (TCP, wget as tor's user):   {:7.2} MiB/s ({link:.2} s, with one exec round trip of {rtt_t:.2} s)",
        mib_s(link)
    );
    match &s.no_relay {
        Some(why) => println!("vsock stream (the allow-localhost relay): not measured: {why}"),
        None => {
            let relay = median(x.relay);
            println!(
                "vsock stream, App VM nginx → host (the allow-localhost relay):    {:7.2} MiB/s ({relay:.2} s)",
                mib_s(relay)
            );
        }
    }
    let exec = median(x.exec);
    let pieces = SIZE / EXEC_PIECE;
    println!(
        "vsock exec, {pieces} × `exec appvm -- dd` of 1 MiB (exec's output cap): {:7.2} MiB/s ({exec:.2} s, with {pieces} exec round trips of {rtt_a:.2} s)",
        mib_s(exec)
    );
}

fn measure(bin: &Path, runs: u32) -> Result<()> {
    let s = setup(bin)?;
    let mut x = Samples::default();
    for i in 1..=runs {
        one_run(bin, &s, i, &mut x)?;
    }
    report(&s, runs, x);
    Ok(())
}

pub fn run(bin: &Path, runs: u32) -> Result<()> {
    let r = crate::stack_on_testnet(bin, STATE, PAGE).and_then(|()| measure(bin, runs));
    crate::stack_down(bin, STATE);
    let _ = std::fs::remove_dir_all(DIR);
    r
}
