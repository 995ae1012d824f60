//! The App VM's services, on the host's order: write their configuration,
//! open their port to the Tor VM (and only to it) in the App VM's firewall,
//! start them as their user, and wait until they listen; stop them and close
//! the port again.
//!
//! A service's output goes to the console (the host's console log of the
//! App VM), one line at a time, prefixed with its name.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};
use std::pin::Pin;
use std::time::Duration;

use tails_guest::exec::{last_line, output};
use tails_guest::{log, pid1};
use tails_proto::msg::{GuestMsg, HostMsg, ServiceFile, ServicePrepare, ServiceStart, ServiceUser};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;

/// How long a service may take to listen on its port.
const LISTEN: Duration = Duration::from_secs(40);
/// How long a stopping service gets after SIGTERM.
const STOP: Duration = Duration::from_secs(5);
/// How long one prepare step (a key made, an account added) may take.
const PREPARE: Duration = Duration::from_secs(90);
/// Largest input handed to a prepare step.
const PREPARE_STDIN_MAX: usize = 64 * 1024;
/// How much of a failed prepare step's output is kept for its error.
const PREPARE_OUTPUT_MAX: usize = 64 * 1024;

/// What the firewall needs to be re-applied with the open ports.
pub struct Firewall {
    pub apply: Box<dyn Fn(Vec<u16>) -> Result<(), String> + Send + Sync>,
}

struct Running {
    child: tokio::process::Child,
    port: u16,
    /// Its persistent paths, mounted from the data disk.
    mounts: Vec<String>,
}

/// The running services, by name.
pub struct Services {
    running: Mutex<BTreeMap<String, Running>>,
    firewall: Firewall,
    /// The App VM's address, where services are awaited.
    addr: std::net::Ipv4Addr,
    /// The ports the host's relay may reach (allow-localhost, allow-lan).
    relayed: crate::relay::Allowed,
    /// The relay's listener, started with the first relayed service.
    relay: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && n.len() <= 32
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '-')
}

/// A system user name: `[a-z_][a-z0-9_-]*`, at most 32 characters.
fn valid_user(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase() || f == '_')
        && n.len() <= 32
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '_' || x == '-')
}

pub(crate) fn clean_absolute(p: &str) -> bool {
    let path = Path::new(p);
    path.is_absolute()
        && p.len() <= 4096
        && !p.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Why a start request is malformed, if it is.
fn check(req: &ServiceStart) -> Result<(), String> {
    if !valid_name(&req.name) {
        return Err("a service name is 1 to 32 lower-case letters, digits and dashes".into());
    }
    match req.argv.first() {
        Some(a) if clean_absolute(a) => {}
        _ => return Err("the command must start with an absolute path".into()),
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err("an argument holds a NUL byte".into());
    }
    if req.port == 0 {
        return Err("the port must be 1 to 65535".into());
    }
    if !valid_user(&req.user) {
        return Err("the service's user is not a system user name".into());
    }
    for f in &req.files {
        if !clean_absolute(&f.path) {
            return Err("a configuration file needs a clean absolute path".into());
        }
        if f.mode > 0o777 {
            return Err("a file mode is at most 0777".into());
        }
        if f.owner.as_deref().is_some_and(|o| !valid_user(o)) {
            return Err("a file's owner is not a system user name".into());
        }
    }
    for u in &req.users {
        if !valid_user(&u.name) || !clean_absolute(&u.home) {
            return Err("a user needs a system user name and a clean absolute home".into());
        }
    }
    for c in &req.certs {
        crate::certs::check(c)?;
        if !valid_user(&c.owner) {
            return Err("a certificate's owner is not a system user name".into());
        }
    }
    for p in &req.prepare {
        match p.argv.first() {
            Some(a) if clean_absolute(a) => {}
            _ => return Err("a prepare command must start with an absolute path".into()),
        }
        if p.argv.iter().any(|a| a.contains('\0')) {
            return Err("a prepare argument holds a NUL byte".into());
        }
        if !valid_user(&p.user) {
            return Err("a prepare step's user is not a system user name".into());
        }
        if p.creates.as_deref().is_some_and(|c| !clean_absolute(c)) {
            return Err("a prepare step's `creates` needs a clean absolute path".into());
        }
        if p.stdin.len() > PREPARE_STDIN_MAX {
            return Err(format!(
                "a prepare step's input is over {PREPARE_STDIN_MAX} bytes"
            ));
        }
    }
    for p in &req.persistent {
        crate::persist::check(p)?;
    }
    for d in &req.dirs {
        if !clean_absolute(&d.path) || d.path == "/" {
            return Err("a directory needs a clean absolute path".into());
        }
        if d.mode > 0o777 {
            return Err("a directory mode is at most 0777".into());
        }
    }
    Ok(())
}

/// Make `d` (and its parents), then give it (not what is in it) to its
/// owner with its mode; a symlink in its place is refused.
fn make_dir(d: &tails_proto::msg::ServiceDir) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| format!("{}: {e}", d.path);
    let (uid, gid) = pid1::user_ids(&d.owner)
        .ok_or_else(|| format!("{}: there is no user {} in the App VM", d.path, d.owner))?;
    std::fs::create_dir_all(&d.path).map_err(err)?;
    let meta = std::fs::symlink_metadata(&d.path).map_err(err)?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", d.path));
    }
    std::os::unix::fs::lchown(&d.path, Some(uid), Some(gid)).map_err(err)?;
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(d.mode)).map_err(err)
}

/// The uid (and gid) of a user the agent makes: fixed by its name, so that
/// the files it owns on the persistent disk are its own again at the next
/// boot, whatever order the services start in (an amnesic root makes the
/// users anew at every boot). Above the system range and below systemd's
/// dynamic users: 59000–59999.
pub(crate) fn fixed_id(name: &str) -> u32 {
    // FNV-1a: small, stable across versions and machines.
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    59_000 + h % 1000
}

/// Make the system user `u` unless the App VM has one of that name.
async fn make_user(u: &ServiceUser) -> Result<(), String> {
    if pid1::user_ids(&u.name).is_some() {
        return Ok(());
    }
    let id = fixed_id(&u.name).to_string();
    let group = output(&[
        "/usr/sbin/groupadd",
        "--system",
        "--gid",
        &id,
        "--",
        &u.name,
    ])
    .await?;
    // 9: the group is there already (made with the package); it is used.
    if !group.status.success() && group.status.code() != Some(9) {
        return Err(format!(
            "cannot make the group {}: {}",
            u.name,
            last_line(&group.stderr, &[])
        ));
    }
    let out = output(&[
        "/usr/sbin/useradd",
        "--system",
        "--uid",
        &id,
        "--gid",
        &u.name,
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--home-dir",
        &u.home,
        "--",
        &u.name,
    ])
    .await?;
    if !out.status.success() {
        return Err(format!(
            "cannot make the user {}: {}",
            u.name,
            last_line(&out.stderr, &[])
        ));
    }
    log(format!("made the system user {}", u.name));
    Ok(())
}

/// `argv` (checked: not empty) to run as `user`, with a clean environment,
/// from `/`, its output piped, killed if dropped.
fn command_as(
    argv: &[String],
    user: &str,
    stdin: std::process::Stdio,
) -> Result<tokio::process::Command, String> {
    let (uid, gid) =
        pid1::user_ids(user).ok_or_else(|| format!("there is no user {user} in the App VM"))?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "an empty command".to_string())?;
    let mut cmd = tails_guest::exec::system(program);
    cmd.args(args).stdin(stdin);
    if uid != 0 {
        // std drops the supplementary groups when root changes uid.
        cmd.uid(uid).gid(gid);
    }
    Ok(cmd)
}

/// Run the prepare step `p` of `service` (skipped when what it creates exists);
/// its output is only reported when it fails, secrets blanked.
async fn prepare(service: &str, p: &ServicePrepare) -> Result<(), String> {
    if let Some(c) = &p.creates {
        if std::fs::symlink_metadata(c).is_ok() {
            return Ok(());
        }
    }
    let mut cmd = command_as(&p.argv, &p.user, std::process::Stdio::piped())?;
    let program = &p.argv[0];
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{service}: cannot run {program}: {e}"))?;
    let input = p.stdin.clone();
    let mut stdin = child.stdin.take();
    let feed = async move {
        use tokio::io::AsyncWriteExt;
        if let Some(s) = stdin.as_mut() {
            // A step that does not read its input is fine.
            let _ = s.write_all(&input).await;
        }
        drop(stdin);
    };
    let read = |out: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(o) = out {
            let _ = o
                .take(PREPARE_OUTPUT_MAX as u64)
                .read_to_end(&mut buf)
                .await;
        }
        buf
    };
    let stdout = read(child.stdout.take().map(|o| Box::new(o) as _));
    let stderr = read(child.stderr.take().map(|o| Box::new(o) as _));
    let run = async {
        let ((), out, err, status) = tokio::join!(feed, stdout, stderr, child.wait());
        (out, err, status)
    };
    let Ok((out, err, status)) = tokio::time::timeout(PREPARE, run).await else {
        return Err(format!(
            "{service}: {program} did not finish within {} s",
            PREPARE.as_secs()
        ));
    };
    let status = status.map_err(|e| format!("{service}: {program}: {e}"))?;
    if !status.success() {
        let both = [out, err].concat();
        return Err(format!(
            "{service}: {program} failed ({status}): {}",
            last_line(&both, &p.stdin)
        ));
    }
    log(format!("service {service}: prepared with {program}"));
    Ok(())
}

/// Write `f` whole or not at all (a temporary file renamed over it), owned by
/// its owner.
pub(crate) fn write_file(f: &ServiceFile) -> Result<(), String> {
    let path = Path::new(&f.path);
    let err = |e: std::io::Error| format!("{}: {e}", f.path);
    let owner = match &f.owner {
        None => None,
        Some(o) => Some(
            pid1::user_ids(o)
                .ok_or_else(|| format!("{}: there is no user {o} in the App VM", f.path))?,
        ),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // The folder may be a service's own (a certificate, a file with an owner): a
    // link its user left at the temporary name is removed, never followed, and the
    // file is made anew (O_EXCL, O_NOFOLLOW); rename replaces a link at the path
    // itself rather than writing through it.
    let tmp = path.with_extension("tails-server-new");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(f.mode)
        .open(&tmp)
        .map_err(err)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&out, Some(uid), Some(gid)).map_err(err)?;
    }
    out.write_all(&f.contents).map_err(err)?;
    out.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Services {
    pub fn new(firewall: Firewall, addr: std::net::Ipv4Addr) -> Self {
        Services {
            running: Mutex::new(BTreeMap::new()),
            firewall,
            addr,
            relayed: Default::default(),
            relay: std::sync::Mutex::new(None),
        }
    }

    /// Let the host's relay reach `port` (`on`), or no longer.
    fn set_relayed(&self, port: u16, on: bool) {
        let mut set = self
            .relayed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            set.insert(port);
        } else {
            set.remove(&port);
        }
        drop(set);
        if on {
            let mut relay = self
                .relay
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if relay.as_ref().is_none_or(|h| h.is_finished()) {
                *relay = Some(crate::relay::spawn(self.relayed.clone()));
            }
        }
    }

    fn ports(running: &BTreeMap<String, Running>) -> Vec<u16> {
        running.values().map(|r| r.port).collect()
    }

    async fn start(&self, req: ServiceStart) -> Result<(), String> {
        check(&req)?;
        let mut running = self.running.lock().await;
        if let Some(r) = running.get_mut(&req.name) {
            if r.child.try_wait().ok().flatten().is_none() {
                return Ok(()); // already running
            }
            running.remove(&req.name);
        }
        if running.values().any(|r| r.port == req.port) {
            return Err(format!("port {} is taken by another service", req.port));
        }
        for u in &req.users {
            make_user(u).await?;
        }
        let mut mounts = Vec::new();
        let started = self.start_mounted(req, &mut running, &mut mounts).await;
        if started.is_err() {
            crate::persist::unmount(&mounts);
        }
        started
    }

    /// The rest of [`Services::start`], once the users are made: what it
    /// mounts is in `mounts` (for the caller to unmount on error).
    async fn start_mounted(
        &self,
        req: ServiceStart,
        running: &mut BTreeMap<String, Running>,
        mounts: &mut Vec<String>,
    ) -> Result<(), String> {
        // The data first: the directories, files and keys made below land
        // on the disk when the service is persistent.
        if req.persistent.is_empty() {
            crate::persist::forget(&req.name).await?;
        } else {
            crate::persist::mount(&req.name, &req.persistent, mounts).await?;
        }
        for d in &req.dirs {
            make_dir(d)?;
        }
        for f in &req.files {
            write_file(f)?;
        }
        for c in &req.certs {
            crate::certs::make(&req.name, c).await?;
        }
        for p in &req.prepare {
            prepare(&req.name, p).await?;
        }
        let mut cmd = command_as(&req.argv, &req.user, std::process::Stdio::null())?;
        let mut ports = Self::ports(running);
        ports.push(req.port);
        (self.firewall.apply)(ports)?;
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = (self.firewall.apply)(Self::ports(running));
                return Err(format!("cannot start {}: {e}", req.argv[0]));
            }
        };
        let name = req.name.clone();
        let outs: [Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>; 2] = [
            child.stdout.take().map(|o| Box::new(o) as _),
            child.stderr.take().map(|o| Box::new(o) as _),
        ];
        for out in outs.into_iter().flatten() {
            let name = name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    log(format!("service {name}: {l}"));
                }
            });
        }
        // Wait until it listens (or dies).
        let target = std::net::SocketAddr::from((self.addr, req.port));
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = (self.firewall.apply)(Self::ports(running));
                return Err(format!(
                    "{} exited at start ({status}); see the App VM's console log",
                    req.name
                ));
            }
            if tokio::net::TcpStream::connect(target).await.is_ok() {
                break;
            }
            if start.elapsed() > LISTEN {
                let _ = child.kill().await;
                let _ = (self.firewall.apply)(Self::ports(running));
                return Err(format!(
                    "{} did not listen on port {} within {} s",
                    req.name,
                    req.port,
                    LISTEN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log(format!(
            "service {} listening on port {}",
            req.name, req.port
        ));
        self.set_relayed(req.port, req.relay);
        running.insert(
            req.name,
            Running {
                child,
                port: req.port,
                mounts: std::mem::take(mounts),
            },
        );
        Ok(())
    }

    async fn stop(&self, name: &str) -> Result<(), String> {
        let mut running = self.running.lock().await;
        let Some(mut r) = running.remove(name) else {
            return Ok(());
        };
        if let Some(pid) = r.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(STOP, r.child.wait()).await.is_err() {
            let _ = r.child.kill().await;
        }
        self.set_relayed(r.port, false);
        crate::persist::unmount(&r.mounts);
        log(format!("service {name} stopped"));
        (self.firewall.apply)(Self::ports(&running))
    }

    async fn is_running(&self, name: &str) -> bool {
        let mut running = self.running.lock().await;
        match running.get_mut(name) {
            Some(r) => r.child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    async fn answer(&self, name: String, res: Result<(), String>) -> GuestMsg {
        match res {
            Ok(()) => GuestMsg::Service {
                running: self.is_running(&name).await,
                name,
            },
            Err(message) => GuestMsg::Error { message },
        }
    }
}

impl tails_guest::server::Extension for Services {
    fn handle(&self, msg: HostMsg) -> Pin<Box<dyn Future<Output = GuestMsg> + Send + '_>> {
        Box::pin(async move {
            match msg {
                HostMsg::StartService(req) => {
                    let name = req.name.clone();
                    let res = self.start(req).await;
                    self.answer(name, res).await
                }
                HostMsg::StopService { name } => {
                    let res = self.stop(&name).await;
                    self.answer(name, res).await
                }
                HostMsg::ServiceState { name } => self.answer(name, Ok(())).await,
                _ => GuestMsg::Error {
                    message: "not an App VM request".into(),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ServiceStart {
        ServiceStart {
            name: "nginx".into(),
            argv: vec!["/usr/sbin/nginx".into()],
            user: "root".into(),
            files: vec![ServiceFile {
                path: "/etc/tails-server/nginx.conf".into(),
                mode: 0o644,
                contents: b"x".to_vec(),
                owner: None,
            }],
            port: 80,
            dirs: vec![],
            users: vec![],
            prepare: vec![],
            certs: vec![],
            persistent: vec![],
            relay: false,
        }
    }

    #[test]
    fn made_users_get_ids_fixed_by_their_names() {
        assert_eq!(fixed_id("share"), fixed_id("share"));
        assert_ne!(fixed_id("share"), fixed_id("infinoted"));
        for n in [
            "share",
            "infinoted",
            "prosody",
            "a",
            "a-very-long-user-name-of-32-ch",
        ] {
            assert!((59_000..60_000).contains(&fixed_id(n)), "{n}");
        }
    }

    fn step(argv: &[&str], stdin: &str, creates: Option<&str>) -> ServicePrepare {
        ServicePrepare {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            user: "root".into(),
            stdin: stdin.as_bytes().to_vec(),
            creates: creates.map(str::to_owned),
        }
    }

    fn dir(path: &str, mode: u32) -> tails_proto::msg::ServiceDir {
        tails_proto::msg::ServiceDir {
            path: path.into(),
            owner: "www-data".into(),
            mode,
        }
    }

    #[test]
    fn start_requests_are_checked() {
        assert!(check(&req()).is_ok());
        type Breaker = Box<dyn Fn(&mut ServiceStart)>;
        let bad: Vec<Breaker> = vec![
            Box::new(|r| r.name = "Nginx".into()),
            Box::new(|r| r.name = "".into()),
            Box::new(|r| r.name = "a".repeat(33)),
            Box::new(|r| r.argv = vec![]),
            Box::new(|r| r.argv = vec!["nginx".into()]),
            Box::new(|r| r.argv = vec!["/usr/../bin/sh".into()]),
            Box::new(|r| r.argv.push("a\0b".into())),
            Box::new(|r| r.port = 0),
            Box::new(|r| r.files[0].path = "etc/x".into()),
            Box::new(|r| r.files[0].path = "/etc/../root/.ssh/authorized_keys".into()),
            Box::new(|r| r.files[0].mode = 0o4755),
            Box::new(|r| r.dirs.push(dir("relative/x", 0o700))),
            Box::new(|r| r.dirs.push(dir("/", 0o700))),
            Box::new(|r| r.dirs.push(dir("/var/../etc", 0o700))),
            Box::new(|r| r.dirs.push(dir("/var/lib/x", 0o4700))),
            Box::new(|r| r.user = "Root".into()),
            Box::new(|r| r.files[0].owner = Some("a b".into())),
            Box::new(|r| {
                r.users.push(ServiceUser {
                    name: "x;y".into(),
                    home: "/var/lib/x".into(),
                })
            }),
            Box::new(|r| {
                r.users.push(ServiceUser {
                    name: "xy".into(),
                    home: "var/lib/x".into(),
                })
            }),
            Box::new(|r| r.prepare.push(step(&["keygen"], "", None))),
            Box::new(|r| r.prepare.push(step(&[], "", None))),
            Box::new(|r| r.prepare.push(step(&["/bin/true", "a\0b"], "", None))),
            Box::new(|r| r.prepare.push(step(&["/bin/true"], "", Some("../x")))),
            Box::new(|r| {
                r.prepare.push(step(
                    &["/bin/true"],
                    &"x".repeat(PREPARE_STDIN_MAX + 1),
                    None,
                ))
            }),
            Box::new(|r| {
                let mut s = step(&["/bin/true"], "", None);
                s.user = "".into();
                r.prepare.push(s)
            }),
        ];
        let mut ok = req();
        ok.dirs.push(dir("/var/lib/tails-server-x", 0o700));
        assert!(check(&ok).is_ok());
        for (i, f) in bad.iter().enumerate() {
            let mut r = req();
            f(&mut r);
            assert!(check(&r).is_err(), "case {i}");
        }
    }

    #[tokio::test]
    async fn prepare_steps_run_once_and_fail_without_their_secret() {
        let dir = std::env::temp_dir().join(format!("ts-prep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("made").display().to_string();
        let write = format!("cat > {out}");
        let first = step(&["/bin/sh", "-c", &write], "first-secret-1\n", Some(&out));
        prepare("x", &first).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first-secret-1\n");
        // Done once: skipped while what it made is there.
        let again = step(&["/bin/sh", "-c", &write], "second-secret\n", Some(&out));
        prepare("x", &again).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first-secret-1\n");
        // A failure says which program and how, with the input blanked out.
        let bad = step(
            &["/bin/sh", "-c", "echo; echo \"no: $(cat)\" >&2; exit 3"],
            "user:hunter22-secret\n",
            None,
        );
        let e = prepare("x", &bad).await.unwrap_err();
        assert!(
            e.starts_with("x: /bin/sh failed (exit status: 3): no: "),
            "{e}"
        );
        assert!(e.contains("<secret>") && !e.contains("hunter22"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        // A step that does not read its input, or takes none, is fine.
        prepare("x", &step(&["/bin/true"], "ignored-input", None))
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn files_are_written_whole_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ts-svc-{}", std::process::id()));
        let f = ServiceFile {
            path: dir.join("sub/conf").display().to_string(),
            mode: 0o640,
            contents: b"listen 80;\n".to_vec(),
            owner: Some("nobody".into()),
        };
        write_file(&f).unwrap();
        let meta = std::fs::metadata(&f.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        let nobody = pid1::user_ids("nobody").unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), nobody);
        // A link left at the temporary name (by a service owning the folder) is
        // not written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("sub/conf.tails-server-new")).unwrap();
        write_file(&f).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(std::fs::read(&f.path).unwrap(), b"listen 80;\n");
        assert_eq!(std::fs::read(&f.path).unwrap(), b"listen 80;\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
