//! The catalog's services and the real client of each (the scripts of
//! `tests/clients/`, or curl): what the services test and the services
//! benchmark both run.

use std::path::PathBuf;

/// The catalog's services, in the order they are enabled; nginx first (the
/// benchmark's baseline).
pub const SERVICES: [&str; 8] = [
    "nginx",
    "filedrop",
    "ngircd",
    "prosody",
    "mumble-server",
    "infinoted",
    "sftp",
    "icecast",
];

/// Debian's python, with Debian's client libraries (not a pyenv on PATH).
pub const PYTHON: &str = "/usr/bin/python3";
/// run-tests.sh's venv for the client only PyPI has (pymumble).
pub const VENV_PYTHON: &str = "/var/lib/tails-server-tests/venv/bin/python";

/// A client script of `tests/clients/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// How to run a service's client script: the interpreter, the script, and
/// its arguments with the right credentials and with wrong ones (besides
/// `--socks`, `--host`, `--port` and `--timeout`, which every script takes).
pub struct ClientScript {
    pub python: &'static str,
    pub script: &'static str,
    pub right: Vec<String>,
    pub wrong: Vec<String>,
    /// Words, one of which the detail of a refusal for wrong credentials holds.
    pub refusal: &'static [&'static str],
}

/// The client script of `service`, its credentials read with `option`
/// (`get-option`); `None` for the web services (curl).
pub fn client_script(service: &str, option: impl Fn(&str) -> String) -> Option<ClientScript> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    const WRONG: &str = "not-the-password";
    Some(match service {
        "ngircd" => {
            let pw = option("server-password");
            let channel = format!("#{}", option("channel"));
            ClientScript {
                python: PYTHON,
                script: "irc_chat.py",
                right: v(&["--password", &pw, "--channel", &channel]),
                wrong: v(&["--password", WRONG, "--channel", &channel]),
                refusal: &["passwdmismatch", "bad password"],
            }
        }
        "prosody" => {
            let pw = option("initial-password");
            let room = option("room");
            let users = ["--users", "alice,bob", "--room", &room, "--password"];
            ClientScript {
                python: PYTHON,
                script: "xmpp_chat.py",
                right: v(&[&users[..], &[pw.as_str()]].concat()),
                wrong: v(&[&users[..], &[WRONG]].concat()),
                refusal: &["auth"],
            }
        }
        "mumble-server" => ClientScript {
            python: VENV_PYTHON,
            script: "mumble_check.py",
            right: v(&["--password", &option("server-password")]),
            wrong: v(&["--password", WRONG]),
            refusal: &["password"],
        },
        "infinoted" => ClientScript {
            python: PYTHON,
            script: "gobby_edit.py",
            right: v(&["--password", &option("password")]),
            wrong: v(&["--password", WRONG]),
            refusal: &["password", "auth"],
        },
        "sftp" => ClientScript {
            python: PYTHON,
            script: "sftp_exchange.py",
            right: v(&["--user", "share", "--password", &option("password")]),
            wrong: v(&["--user", "share", "--password", WRONG]),
            refusal: &["auth"],
        },
        "icecast" => ClientScript {
            python: PYTHON,
            script: "icecast_stream.py",
            right: v(&["--source-password", &option("source-password")]),
            wrong: v(&["--source-password", WRONG]),
            refusal: &["password", "auth"],
        },
        _ => return None,
    })
}
