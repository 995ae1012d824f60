//! The real GUI, driven through its accessibility tree: [`GuiSession`]
//! starts Xvfb on a free display, a private D-Bus session bus (which
//! activates at-spi-bus-launcher, and so the accessibility bus and its
//! registry, with that display), and the installed `tails-server-gui` on
//! them; [`GuiSession::drive`] runs `tests/clients/gui_driver.py` (Debian's
//! python3-pyatspi) for one command and returns its JSON. Dropping the
//! session stops the GUI, the bus and Xvfb, and waits for each.
//!
//! The GUI is a client of the daemon like the CLI: it reaches (or starts,
//! as root) the daemon of its environment's `TAILS_SERVER_*` directories,
//! which [`GuiSession::start_with_env`] passes on. A daemon the GUI starts
//! has the session's environment (its `DISPLAY` too) and outlives it: stop
//! it before looking for what the session left ([`processes_with_env`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{script, PYTHON};

/// The environment of a daemon of a test's own under `base` (runtime,
/// state and store; its log in `artifacts/daemon-log`): nothing of another
/// test's state is read or changed.
pub fn own_daemon_env(base: &str, artifacts: &Path) -> Vec<(String, String)> {
    vec![
        ("TAILS_SERVER_RUNTIME_DIR".into(), format!("{base}/run")),
        ("TAILS_SERVER_STATE_DIR".into(), format!("{base}/state")),
        ("TAILS_SERVER_STORE".into(), format!("{base}/store.luks")),
        (
            "TAILS_SERVER_LOG_DIR".into(),
            artifacts.join("daemon-log").display().to_string(),
        ),
    ]
}

/// `env` as the pairs `ts_env` and [`GuiSession::start_with_env`] take.
pub fn env_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The GUI under test: `$TAILS_SERVER_GUI_BIN` or the installed one.
pub fn gui_bin() -> PathBuf {
    std::env::var_os("TAILS_SERVER_GUI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/tails-server-gui"))
}

/// Where the GUI tests leave their screenshots and logs:
/// `target/test-artifacts/gui/` of the workspace (made).
pub fn artifacts_dir() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tests
        .parent()
        .unwrap_or(tests) // tests/ is in the workspace, which is its parent
        .join("target")
        .join("test-artifacts")
        .join("gui");
    std::fs::create_dir_all(&dir).expect("make target/test-artifacts/gui");
    dir
}

/// The texts of the QR codes an image (a screenshot) shows in full, read
/// with rqrr, a reader independent of the qrcode crate that drew them. A
/// code cut off by the window's edge is found but not read: it is left out.
pub fn qr_codes_in(png_file: &Path) -> Vec<String> {
    let bytes =
        std::fs::read(png_file).unwrap_or_else(|e| panic!("read {}: {e}", png_file.display()));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG screenshot");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG's size")];
    let info = reader.next_frame(&mut buf).expect("a PNG's pixels");
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let grey = |x: usize, y: usize| -> u8 {
        let p = &buf[y * info.line_size + x * channels..];
        if channels >= 3 {
            // Luma of the RGB channels (the alpha, if any, is ignored).
            ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000) as u8
        } else {
            p[0]
        }
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, grey);
    img.detect_grids()
        .iter()
        .filter_map(|g| g.decode().ok().map(|(_, text)| text))
        .collect()
}

/// The screen Xvfb makes: room for the GUI's window (760x720) and its
/// dialogs.
const SCREEN: &str = "1100x900x24";
/// Longest a driver command may take, its own waits included.
const DRIVE_DEADLINE: Duration = Duration::from_secs(240);

/// Xvfb, a session bus and the GUI, for one test.
pub struct GuiSession {
    display: String,
    bus_address: String,
    runtime_dir: PathBuf,
    artifacts: PathBuf,
    log: PathBuf,
    /// Extra environment of the GUI (and so of a daemon it starts), and of
    /// the driver.
    env: Vec<(String, String)>,
    // Stopped in this order: the GUI, the bus, Xvfb.
    gui: Option<Child>,
    bus: Option<Child>,
    xvfb: Option<Child>,
}

/// Stop `child` (SIGTERM, then SIGKILL after `grace`) and reap it.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet
        // (so not reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of `path` (or why it cannot be read), without blank
/// lines and GTK's warning at every coordinate the driver reads (X11
/// without a window manager has no screen coordinates).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter(|l| !l.contains("Screen coordinates not supported"))
                .collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Processes (not zombies) whose environment holds `entry` (`KEY=value`):
/// `pid comm` each.
pub fn processes_with_env(entry: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == entry.as_bytes()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            out.push(format!("{pid} {}", comm.trim_end()));
        }
    }
    out
}

/// Start Xvfb on the first free display from 90: its process and `:N`.
fn start_xvfb(log: &Path) -> (Child, String) {
    for n in 90..190 {
        let display = format!(":{n}");
        if Path::new(&format!("/tmp/.X{n}-lock")).exists()
            || Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
        {
            continue;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the Xvfb log");
        let mut child = Command::new("Xvfb")
            .args([&display, "-screen", "0", SCREEN, "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the Xvfb log"))
            .stderr(out)
            .spawn()
            .expect("start Xvfb (package xvfb)");
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                break; // taken meanwhile: the next one
            }
            if socket.exists() {
                return (child, display);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(&mut child, Duration::from_secs(2));
    }
    panic!("no free X display from :90 to :189: {}", tail(log, 10));
}

/// Start a session bus of our own (`--nofork`: our child) with `env`, so
/// that what it activates (at-spi-bus-launcher) has the display: its
/// process and address.
fn start_bus(env: &[(&str, &str)], log: &Path) -> (Child, String) {
    let err = std::fs::File::create(log).expect("open the bus log");
    let mut c = Command::new("dbus-daemon");
    c.args(["--session", "--nofork", "--print-address=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("start dbus-daemon (package dbus-daemon)");
    let stdout = child.stdout.take().expect("the bus's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) if line.trim().starts_with("unix:") => (child, line.trim().to_owned()),
        other => {
            stop(&mut child, Duration::from_secs(2));
            panic!("dbus-daemon gave no address ({other:?}): {}", tail(log, 10));
        }
    }
}

impl GuiSession {
    /// Xvfb, a session bus and the GUI, which reaches the daemon of the
    /// standard directories. Its log and the screenshots go to `artifacts`.
    pub fn start(artifacts: &Path) -> GuiSession {
        GuiSession::start_with_env(artifacts, &[])
    }

    /// The same, with `env` added to the GUI's environment (and to a daemon
    /// it starts, and to the driver's).
    pub fn start_with_env(artifacts: &Path, env: &[(&str, &str)]) -> GuiSession {
        GuiSession::start_with(artifacts, env, &[])
    }

    /// The greeter's screen (`tails-server-gui --greeter`) instead of the
    /// main window.
    pub fn start_greeter(artifacts: &Path, env: &[(&str, &str)]) -> GuiSession {
        GuiSession::start_with(artifacts, env, &["--greeter"])
    }

    fn start_with(artifacts: &Path, env: &[(&str, &str)], args: &[&str]) -> GuiSession {
        let gui = gui_bin();
        assert!(
            gui.is_file(),
            "{} is not installed: cargo build --release -p tails-server-gui && install -m0755 target/release/tails-server-gui /usr/local/bin/",
            gui.display()
        );
        std::fs::create_dir_all(artifacts).expect("make the artifacts directory");
        let runtime_dir =
            std::env::temp_dir().join(format!("ts-gui-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&runtime_dir);
        std::fs::create_dir_all(&runtime_dir).expect("make XDG_RUNTIME_DIR");
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod XDG_RUNTIME_DIR");

        let (xvfb, display) = start_xvfb(&artifacts.join("xvfb.log"));
        let rt = runtime_dir.display().to_string();
        let (bus, bus_address) = start_bus(
            &[("DISPLAY", &display), ("XDG_RUNTIME_DIR", &rt)],
            &artifacts.join("dbus.log"),
        );
        let mut session = GuiSession {
            display,
            bus_address,
            runtime_dir,
            artifacts: artifacts.to_path_buf(),
            log: artifacts.join("gui.log"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            gui: None,
            bus: Some(bus),
            xvfb: Some(xvfb),
        };
        let log = std::fs::File::create(&session.log).expect("open the GUI log");
        let mut c = Command::new(&gui);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the GUI log"))
            .stderr(log);
        session.session_env(&mut c);
        c.env("GTK_A11Y", "atspi")
            .env("GSETTINGS_BACKEND", "memory")
            .env("RUST_BACKTRACE", "1");
        session.gui = Some(c.spawn().expect("start tails-server-gui"));
        session
    }

    /// The session's environment (display, bus, runtime dir, `env`) on `c`.
    fn session_env(&self, c: &mut Command) {
        c.env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env_remove("NO_AT_BRIDGE")
            .env_remove("WAYLAND_DISPLAY");
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }

    /// The X display (`:N`): every process of the session has it.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Where the GUI's output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Run one driver command; its JSON, or its error line (and the GUI
    /// log's tail).
    pub fn try_drive(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        if !self.gui_alive() {
            // Rather than wait for its name on the bus.
            return Err(format!(
                "gui_driver {args:?}: the GUI is not running; its log (tail):\n{}",
                tail(&self.log, 40)
            ));
        }
        let mut c = Command::new(PYTHON);
        c.arg(script("gui_driver.py"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
        self.session_env(&mut c);
        let mut child = c.spawn().expect("run gui_driver.py with /usr/bin/python3");
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if start.elapsed() > DRIVE_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let failed = |why: String| {
            Err(format!(
                "gui_driver {args:?}: {why}\n--- driver stderr\n{stderr}--- GUI log (tail)\n{}",
                tail(&self.log, 30)
            ))
        };
        match status {
            None => failed(format!("still running after {DRIVE_DEADLINE:?}: killed")),
            Some(s) if !s.success() => failed(format!("exit {s}")),
            Some(_) => match serde_json::from_str(stdout.trim()) {
                Ok(v) => Ok(v),
                Err(e) => failed(format!("not one JSON line ({e}): {stdout:?}")),
            },
        }
    }

    /// The GUI runs (not exited, not a zombie: read from /proc, which
    /// does not reap it).
    fn gui_alive(&self) -> bool {
        let Some(g) = &self.gui else { return false };
        std::fs::read_to_string(format!("/proc/{}/stat", g.id())).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        })
    }

    /// Run one driver command and insist on success: its JSON.
    pub fn drive(&self, args: &[&str]) -> serde_json::Value {
        self.try_drive(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A screenshot of `page` (`services`, `service:<name>`, `server`) as
    /// `<artifacts>/<file>`: its path.
    pub fn screenshot(&self, page: &str, file: &str) -> PathBuf {
        let path = self.artifacts.join(file);
        let p = path.display().to_string();
        self.drive(&["screenshot", &p, "--page", page]);
        path
    }
}

impl Drop for GuiSession {
    fn drop(&mut self) {
        if let Some(mut g) = self.gui.take() {
            stop(&mut g, Duration::from_secs(5));
        }
        if let Some(mut b) = self.bus.take() {
            stop(&mut b, Duration::from_secs(5));
        }
        if let Some(mut x) = self.xvfb.take() {
            stop(&mut x, Duration::from_secs(5));
        }
        // What the bus activated (at-spi-bus-launcher, its bus, the
        // registry) ends with the bus; wait for it, briefly.
        let entry = format!("DISPLAY={}", self.display);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10)
            && processes_with_env(&entry)
                .iter()
                .any(|p| p.contains("at-spi") || p.contains("dbus-daemon"))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_qr_codes_of_an_image_are_read_and_a_blank_one_has_none() {
        let dir = std::env::temp_dir().join(format!("ts-qr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = "ebxmv6bldtpr2tslre2bkrs5zx2hvvupmpjbknndjl6u4vanqvz535ad.onion";
        let code = dir.join("code.png");
        std::fs::write(&code, tails_onion::qr_png(text).unwrap()).unwrap();
        assert_eq!(super::qr_codes_in(&code), vec![text.to_string()]);
        // A white RGB image: no code.
        let blank = dir.join("blank.png");
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, 64, 64);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[255; 64 * 64 * 3]).unwrap();
        w.finish().unwrap();
        std::fs::write(&blank, out).unwrap();
        assert!(super::qr_codes_in(&blank).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
