//! Against the real tor: the keys, addresses and lines this crate makes are the
//! ones tor computes, accepts and writes; and a key that tor made itself is
//! imported here with the address that tor gave it.
//!
//! Each test starts its own Debian `tor` (`/usr/sbin/tor`, or `$TOR`) with a
//! temporary DataDirectory, `DisableNetwork 1` (it never touches the network),
//! `SocksPort 0`, a control port on 127.0.0.1 (port chosen by tor, read from
//! `ControlPortWriteToFile`) and cookie authentication, talks to it with the
//! tiny control-port client below, and kills it when the test ends (a guard,
//! also on panic). setup.sh installs tor; without it these tests fail.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use data_encoding::{BASE64, HEXLOWER};
use tails_onion::{ClientKey, ClientPublicKey, KeyFileError, OnionAddress, ServiceKey};

/// RFC 8032 test 1 seed; tor's own test vector gives its address.
const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_SERVICE_ID: &str = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid";

/// How long tor may take to start, or to answer one command.
const PATIENCE: Duration = Duration::from_secs(30);

fn rfc_key() -> ServiceKey {
    let seed: [u8; 32] = HEXLOWER
        .decode(RFC8032_SEED.as_bytes())
        .unwrap()
        .try_into()
        .unwrap();
    ServiceKey::from_bytes(&seed)
}

fn tor_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TOR") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/tor");
    assert!(
        debian.exists(),
        "these tests need Debian's tor (/usr/sbin/tor, or set $TOR): setup.sh installs it"
    );
    debian
}

/// A private directory (mode 0700, as tor insists) removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tails-onion-tor-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        private_dir(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn private_dir(path: &Path) {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
}

/// A running tor, killed and reaped on drop.
struct Tor {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Tor {
    /// Starts tor with the base configuration plus `extra` torrc lines (in
    /// which `{dir}` stands for the test's directory), after `prepare` has
    /// laid out files in that (empty, private) directory.
    fn start(extra: &str, prepare: impl FnOnce(&Path)) -> Tor {
        let dir = TempDir::new();
        let root = dir.0.clone();
        prepare(&root);
        let data = root.join("data");
        private_dir(&data);
        let port_file = root.join("control-port");
        let torrc = root.join("torrc");
        fs::write(
            &torrc,
            format!(
                "DataDirectory {data}\n\
                 DisableNetwork 1\n\
                 SocksPort 0\n\
                 ControlPort 127.0.0.1:auto\n\
                 ControlPortWriteToFile {port}\n\
                 CookieAuthentication 1\n\
                 Log notice file {log}\n\
                 {extra}\n",
                data = data.display(),
                port = port_file.display(),
                log = root.join("tor.log").display(),
                extra = extra.replace("{dir}", &root.display().to_string()),
            ),
        )
        .unwrap();
        let defaults = root.join("torrc-defaults");
        fs::write(&defaults, "").unwrap();
        let child = Command::new(tor_binary())
            .arg("--defaults-torrc")
            .arg(&defaults)
            .arg("-f")
            .arg(&torrc)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tor");
        let mut tor = Tor {
            child,
            port: 0,
            dir,
        };
        tor.port = tor.wait_for("opening its control port", |_| {
            // "PORT=127.0.0.1:NNNN\n", written once the listener is open.
            let text = fs::read_to_string(&port_file).ok()?;
            text.trim().strip_prefix("PORT=127.0.0.1:")?.parse().ok()
        });
        tor
    }

    /// Polls `probe` until it gives a value; fails the test when tor exits
    /// first or has not got there within PATIENCE.
    fn wait_for<T>(&mut self, what: &str, mut probe: impl FnMut(&Tor) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = probe(self) {
                return value;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tor exited ({status}) before {what}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tor took more than {PATIENCE:?} before {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path("tor.log")).unwrap_or_default()
    }

    /// The contents of a file that tor writes (such as a HiddenServiceDir's
    /// `hostname`), once it is there.
    fn wait_for_file(&mut self, name: &str) -> Vec<u8> {
        self.wait_for(&format!("writing {name}"), |tor| {
            fs::read(tor.path(name))
                .ok()
                .filter(|bytes| !bytes.is_empty())
        })
    }

    /// A HiddenServiceDir's `hostname`, as tor wrote it.
    fn hostname(&mut self, hidden_service_dir: &str) -> String {
        let bytes = self.wait_for_file(&format!("{hidden_service_dir}/hostname"));
        String::from_utf8(bytes).unwrap()
    }

    /// An authenticated control connection.
    fn control(&self) -> Control {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut control = Control {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let cookie = fs::read(self.path("data").join("control_auth_cookie")).unwrap();
        let reply = control.command(&format!("AUTHENTICATE {}", HEXLOWER.encode(&cookie)));
        assert_eq!(reply.code, 250, "AUTHENTICATE: {reply:?}");
        control
    }
}

impl Drop for Tor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One reply: its status code and the text of its lines (after "NNN-",
/// "NNN+" or "NNN "; the data lines of a "NNN+" reply follow as they are).
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// The value of the first `key=value` line with this key.
    fn value<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.values(key).next()
    }

    fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter_map(move |l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

struct Control {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Control {
    fn command(&mut self, line: &str) -> Reply {
        assert!(!line.contains(['\r', '\n']));
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        let mut lines = Vec::new();
        loop {
            let text = self.read_line();
            assert!(text.len() >= 4, "short reply line {text:?}");
            let code: u16 = text[..3].parse().expect("status code");
            let rest = text[4..].to_string();
            match &text[3..4] {
                " " => {
                    lines.push(rest);
                    return Reply { code, lines };
                }
                "-" => lines.push(rest),
                "+" => {
                    lines.push(rest);
                    loop {
                        let data = self.read_line();
                        if data == "." {
                            break;
                        }
                        lines.push(data);
                    }
                }
                other => panic!("bad reply separator {other:?} in {text:?}"),
            }
        }
    }

    fn read_line(&mut self) -> String {
        let mut text = String::new();
        let n = self.reader.read_line(&mut text).unwrap();
        assert!(n > 0, "tor closed the control connection");
        text.trim_end_matches(['\r', '\n']).to_string()
    }

    /// The ServiceIDs this connection added: one on the `onions/current=`
    /// line, or several as the data lines of a `250+` reply.
    fn current_onions(&mut self) -> Vec<String> {
        let reply = self.command("GETINFO onions/current");
        assert_eq!(reply.code, 250, "{reply:?}");
        reply
            .value("onions/current")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .chain(reply.lines.iter().skip(1).filter(|l| *l != "OK").cloned())
            .collect()
    }
}

/// `ADD_ONION` as the torvm agent sends it: our key, DiscardPK, and V3Auth
/// with one `ClientAuthV3=` per client key.
fn add_onion(key: &ServiceKey, clients: &[String]) -> String {
    let mut command = format!("ADD_ONION {} ", key.tor_add_onion_key().as_str());
    if clients.is_empty() {
        command.push_str("Flags=DiscardPK");
    } else {
        command.push_str("Flags=DiscardPK,V3Auth");
    }
    command.push_str(" Port=80,127.0.0.1:8080");
    for client in clients {
        command.push_str(" ClientAuthV3=");
        command.push_str(client);
    }
    command
}

/// Sends [`add_onion`] and checks that tor hosts the key's service with
/// these clients: it answers the key's ServiceID and each client key back.
fn assert_tor_hosts(control: &mut Control, key: &ServiceKey, clients: &[String]) -> Reply {
    let reply = control.command(&add_onion(key, clients));
    assert_eq!(reply.code, 250, "{reply:?}");
    let ours = key.onion_address().without_suffix();
    assert_eq!(reply.value("ServiceID"), Some(ours.as_str()), "{reply:?}");
    assert_eq!(reply.values("ClientAuthV3").collect::<Vec<_>>(), clients);
    reply
}

#[test]
fn tor_computes_our_address_from_our_key() {
    let tor = Tor::start("", |_| {});
    let mut control = tor.control();
    let version = control.command("GETINFO version");
    eprintln!("tor {}", version.value("version").unwrap_or("?"));

    let mut keys = vec![rfc_key()];
    for _ in 0..4 {
        keys.push(ServiceKey::generate().unwrap());
    }
    for (i, key) in keys.iter().enumerate() {
        let client = ClientKey::generate().unwrap();
        let ours = key.onion_address().without_suffix();
        if i == 0 {
            assert_eq!(ours, RFC8032_SERVICE_ID);
        }
        // With client authorization (what Tails Server does) and without.
        for clients in [vec![client.public_base32()], vec![]] {
            let reply = assert_tor_hosts(&mut control, key, &clients);
            assert_eq!(reply.value("PrivateKey"), None, "DiscardPK: {reply:?}");
            assert_eq!(control.current_onions(), vec![ours.clone()]);
            let parsed: OnionAddress = format!("{ours}.onion").parse().unwrap();
            assert_eq!(parsed, key.onion_address());
            let deleted = control.command(&format!("DEL_ONION {ours}"));
            assert_eq!(deleted.code, 250, "{deleted:?}");
        }
    }
}

#[test]
fn tor_takes_several_client_keys_in_either_case() {
    let tor = Tor::start("", |_| {});
    let mut control = tor.control();
    let key = ServiceKey::generate().unwrap();
    let alice = ClientKey::generate().unwrap().public_base32();
    let bob = ClientKey::generate()
        .unwrap()
        .public_base32()
        .to_uppercase();
    let carol = ClientKey::generate().unwrap().public_base32();
    assert_tor_hosts(&mut control, &key, &[alice, bob, carol]);
}

#[test]
fn tor_refuses_malformed_client_keys() {
    let tor = Tor::start("", |_| {});
    let mut control = tor.control();
    let key = ServiceKey::generate().unwrap();
    let client = ClientKey::generate().unwrap();
    let good = client.public_base32();
    let malformed = [
        good[..51].to_string(),                 // one character short
        format!("{good}a"),                     // one too many
        format!("{}====", good.to_uppercase()), // padded
        format!("{}1", &good[..51]),            // '1' is not base32
        String::new(),                          // empty
        client.auth_public_line(),              // the file line, not the key
        BASE64.encode(&client.public()),        // base64, not base32
    ];
    for bad in malformed {
        let reply = control.command(&add_onion(&key, &[good.clone(), bad.clone()]));
        assert_eq!(reply.code, 512, "ClientAuthV3={bad:?}: {reply:?}");
        // tor 0.4.9: "512 Cannot decode v3 client auth key".
        assert!(reply.lines[0].contains("client auth"), "{bad:?}: {reply:?}");
    }
    // ClientAuthV3 without the V3Auth flag, and V3Auth without a client.
    let without_flag = add_onion(&key, std::slice::from_ref(&good)).replace(",V3Auth", "");
    assert_eq!(control.command(&without_flag).code, 512);
    let without_client = format!("{} Flags=V3Auth Port=80", key.tor_add_onion_key().as_str());
    assert_eq!(
        control.command(&format!("ADD_ONION {without_client}")).code,
        512
    );
    // A cut key blob.
    let blob = key.tor_add_onion_key();
    let cut = format!(
        "ADD_ONION {} Flags=DiscardPK Port=80",
        &blob[..blob.len() - 4]
    );
    assert_eq!(control.command(&cut).code, 512);
    // None of these left a service behind.
    assert!(control.current_onions().is_empty());
}

/// Lays out a HiddenServiceDir as tor wants it (mode 0700) holding our
/// `hs_ed25519_secret_key` of the key (mode 0600).
fn hidden_service_dir(dir: &Path, key: &ServiceKey) {
    private_dir(dir);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("hs_ed25519_secret_key"))
        .unwrap();
    file.write_all(&key.to_tor_secret_key_file()).unwrap();
}

/// The torrc lines of a HiddenServiceDir `{dir}/<name>`.
fn hidden_service(name: &str) -> String {
    format!("HiddenServiceDir {{dir}}/{name}\nHiddenServicePort 80 127.0.0.1:1\n")
}

/// What a tor that made a service key itself left in its HiddenServiceDir.
struct TorMadeService {
    hostname: String,
    secret_key_file: Vec<u8>,
    public_key_file: Vec<u8>,
}

/// Starts a tor with an empty HiddenServiceDir, so that tor generates the
/// key, and takes what it wrote there.
fn tor_made_service() -> TorMadeService {
    let mut tor = Tor::start(&hidden_service("hs"), |_| {});
    TorMadeService {
        hostname: tor.hostname("hs"),
        secret_key_file: tor.wait_for_file("hs/hs_ed25519_secret_key"),
        public_key_file: tor.wait_for_file("hs/hs_ed25519_public_key"),
    }
}

#[test]
fn a_key_tor_made_is_imported_with_the_address_tor_computed() {
    let made = tor_made_service();
    let key = ServiceKey::from_tor_secret_key_file(&made.secret_key_file).unwrap();
    assert_eq!(format!("{}\n", key.onion_address()), made.hostname);
    // Exported again, it is tor's file byte for byte; stored, it is the
    // 64-byte expanded key and reads back as the same service.
    assert_eq!(*key.to_tor_secret_key_file(), made.secret_key_file);
    let stored = key.to_storage();
    assert_eq!(stored.len(), ServiceKey::EXPANDED_LEN);
    let again = ServiceKey::from_storage(&stored).unwrap();
    assert_eq!(again.onion_address(), key.onion_address());
    // tor's public key file beside it holds our public key, and is refused
    // as the wrong file.
    assert_eq!(&made.public_key_file[32..], key.public().as_slice());
    assert_eq!(
        ServiceKey::from_tor_secret_key_file(&made.public_key_file).unwrap_err(),
        KeyFileError::PublicKeyFile
    );

    // Another tor, given the imported key over ADD_ONION, hosts that same
    // service.
    let other = Tor::start("", |_| {});
    let reply = assert_tor_hosts(&mut other.control(), &again, &[]);
    let service_id = made.hostname.trim_end().trim_end_matches(".onion");
    assert_eq!(reply.value("ServiceID"), Some(service_id), "{reply:?}");
}

#[test]
fn tor_reads_our_exported_key_files_of_both_forms() {
    let made_here = ServiceKey::generate().unwrap();
    let made = tor_made_service();
    let imported = ServiceKey::from_tor_secret_key_file(&made.secret_key_file).unwrap();
    assert_eq!(made_here.to_storage().len(), ServiceKey::SEED_LEN);
    assert_eq!(imported.to_storage().len(), ServiceKey::EXPANDED_LEN);
    let mut tor = Tor::start(
        &(hidden_service("seed") + &hidden_service("expanded")),
        |root| {
            hidden_service_dir(&root.join("seed"), &made_here);
            hidden_service_dir(&root.join("expanded"), &imported);
        },
    );
    assert_eq!(
        tor.hostname("seed"),
        format!("{}\n", made_here.onion_address())
    );
    assert_eq!(
        tor.hostname("expanded"),
        format!("{}\n", imported.onion_address())
    );
    assert_eq!(tor.hostname("expanded"), made.hostname);
    // tor kept our files as they were.
    for (dir, key) in [("seed", &made_here), ("expanded", &imported)] {
        let file = fs::read(tor.path(&format!("{dir}/hs_ed25519_secret_key"))).unwrap();
        assert_eq!(file, *key.to_tor_secret_key_file(), "{dir}");
    }
}

#[test]
fn tor_takes_a_client_public_key_parsed_from_our_line() {
    let tor = Tor::start("", |_| {});
    let mut control = tor.control();
    let key = ServiceKey::generate().unwrap();
    let client = ClientKey::generate().unwrap();
    let parsed = ClientPublicKey::parse(&format!("{}\n", client.auth_public_line())).unwrap();
    let pasted = ClientPublicKey::parse(&client.public_base32().to_uppercase()).unwrap();
    assert_eq!(parsed, pasted);
    assert_eq!(parsed, client.public_key());
    assert_tor_hosts(&mut control, &key, &[parsed.public_base32()]);
}

#[test]
fn tor_reads_our_key_file_and_authorized_clients() {
    let key = ServiceKey::generate().unwrap();
    let alice = ClientKey::generate().unwrap();
    let bob = ClientKey::generate().unwrap();
    let tor = Tor::start(
        "HiddenServiceDir {dir}/hs\nHiddenServicePort 80 127.0.0.1:8080",
        |root| {
            let hs = root.join("hs");
            let clients = hs.join("authorized_clients");
            private_dir(&clients);
            private_dir(&hs);
            fs::write(
                hs.join("hs_ed25519_secret_key"),
                key.to_tor_secret_key_file(),
            )
            .unwrap();
            fs::write(clients.join("alice.auth"), alice.auth_public_line() + "\n").unwrap();
            fs::write(clients.join("bob.auth"), bob.auth_public_line()).unwrap();
            // A broken one: tor warns about it, which shows that it reads
            // these files; that it warns of nothing else shows the others pass.
            fs::write(clients.join("mallory.auth"), "descriptor:x25519:nope\n").unwrap();
        },
    );
    // tor writes the hostname it computed from the key file at start.
    let hostname = fs::read_to_string(tor.path("hs/hostname")).unwrap();
    assert_eq!(hostname, format!("{}\n", key.onion_address()));
    // tor 0.4.9 names the bad value, not the file: "Client authorization
    // encoded base32 public key length is invalid: nope".
    let log = tor.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[warn]") && l.to_lowercase().contains("authorization"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].ends_with(": nope"), "{log}");
}

#[test]
fn tor_reads_our_auth_private_line_and_writes_the_same() {
    let ours = rfc_key().onion_address();
    let client = ClientKey::generate().unwrap();
    let tor = Tor::start("ClientOnionAuthDir {dir}/client-auth", |root| {
        let dir = root.join("client-auth");
        private_dir(&dir);
        fs::write(
            dir.join("ours.auth_private"),
            format!("{}\n", client.auth_private_line(&ours).as_str()),
        )
        .unwrap();
    });
    let mut control = tor.control();
    // tor loaded our line: it shows the same private key (in base64).
    let id = ours.without_suffix();
    let view = control.command(&format!("ONION_CLIENT_AUTH_VIEW {id}"));
    assert_eq!(view.code, 250, "{view:?}");
    let expected = format!(
        "CLIENT {id} x25519:{}",
        BASE64.encode(client.to_bytes().as_slice())
    );
    assert!(
        view.lines.iter().any(|l| l.starts_with(&expected)),
        "{view:?}\n{}",
        tor.log()
    );

    // tor's own file for a credential given over the control port is,
    // byte for byte, our line (without even a final newline).
    let other = ServiceKey::generate().unwrap().onion_address();
    let second = ClientKey::generate().unwrap();
    let added = control.command(&format!(
        "ONION_CLIENT_AUTH_ADD {} x25519:{} Flags=Permanent",
        other.without_suffix(),
        BASE64.encode(second.to_bytes().as_slice())
    ));
    assert_eq!(added.code, 250, "{added:?}");
    let written = fs::read_dir(tor.path("client-auth"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&other.without_suffix()))
        .expect("tor wrote a file for the credential");
    assert_eq!(
        fs::read_to_string(written).unwrap(),
        second.auth_private_line(&other).as_str()
    );
}
