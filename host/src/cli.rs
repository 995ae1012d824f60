//! The command line of `tails-server`, as data: the clap definitions and
//! nothing else.
//!
//! They live in the library, not in the binary, so that the binary that
//! runs them and the packaging tool that documents them (`tails-package`:
//! man pages with clap_mangen, shell completions with clap_complete) read
//! one definition. What a command does is in the binary; the API's wire
//! types ([`crate::api`]) carry no clap derive: they are parsed here with
//! plain functions ([`parse_network`]) or their `FromStr`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::{Network, Role};

/// What `tails-server --help` says after the commands (the service
/// commands are not clap subcommands: their names come from the catalog).
const SERVICES_HELP: &str = "\
Services: `tails-server SERVICE ACTION [ARGS]` for each service of the catalog \
(`tails-server list`); ACTION is one of info, status, enable, disable, get-option, \
set-option, add-client, remove-client, credentials, import-key, export-key \
(`tails-server SERVICE --help`).";

/// `tails-server …`
#[derive(Parser)]
#[command(
    name = "tails-server",
    version,
    about = "Publish group services as Tor onion services from two isolated VMs",
    after_help = SERVICES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Start the Tor VM and the App VM; returns when both agents are ready
    /// and tor has bootstrapped.
    Up {
        /// The Tor network the Tor VM joins: public, local or none.
        #[arg(long, default_value = "public", value_parser = parse_network)]
        network: Network,
        /// A tor bridge line (without `Bridge`), e.g. `192.0.2.7:443 4352E58420E68F5E40BF7C74FADDCCD9D1349413`; repeatable (pluggable transports are not in the Tor VM image yet).
        #[arg(long = "bridge", value_name = "LINE", value_parser = parse_bridge)]
        bridges: Vec<String>,
    },
    /// The embedded private Tor network (in its own network namespace).
    Testnet {
        #[command(subcommand)]
        cmd: TestnetCmd,
    },
    /// Show each VM's state, agent, uptime, memory and accelerator.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop both VMs gracefully and remove every runtime file.
    Down,
    /// Follow the daemon: one JSON line at once and at every change
    /// (`{"state": …}`: what `status --json`, `list --json` and
    /// `persistence status --json` say), and the steps and tor's bootstrap
    /// of what is asked (`{"step": …}`, `{"tor": …}`), until it stops.
    Watch,
    /// Run a command in a guest and return its output and exit code.
    Exec {
        /// `torvm` or `appvm`.
        vm: Role,
        /// Kill the command after this many seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Pass this command's stdin to the guest command (at most 160 KiB).
        #[arg(long)]
        stdin: bool,
        /// Write the guest's output as it is, even to a terminal (by default
        /// control characters are shown escaped there, like `qvm-run`: a
        /// guest's escape sequences never reach your terminal).
        #[arg(long)]
        raw: bool,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show what the App VM can see of the machine (DMI, CPU, MACs, PCI,
    /// disks, command line, host name, time zone) and its fingerprint.
    Identity {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the services of the catalog.
    List {
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// `tails-server <service> info|status|enable|disable|get-option|set-option|add-client|remove-client|credentials`
    /// (parsed by [`ServiceCli`]).
    #[command(external_subcommand)]
    Service(Vec<String>),
    /// Guest images.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Bring the stack up at boot (the systemd unit tails-server.service), or not.
    Autostart {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// The Tor network the stack joins at boot: public, local or none.
        #[arg(long, default_value = "public", value_parser = parse_network)]
        network: Network,
        /// A tor bridge line for the boot network; repeatable.
        #[arg(long = "bridge", value_name = "LINE", value_parser = parse_bridge)]
        bridges: Vec<String>,
    },
    /// "Isolate via virtualization", the greeter's switch: whether the
    /// stack comes up at boot (with the autostart network, else the public
    /// one). The kernel command line (tails-server.isolate=on|off) and the
    /// file /etc/tails-server/isolate win over the saved choice.
    Isolate {
        /// `on`, `off`, or `status` (only say).
        #[arg(value_parser = ["on", "off", "status"])]
        state: String,
        /// Bring the stack up now if isolation is on, as a boot would.
        #[arg(long)]
        start: bool,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// The encrypted persistent store (a LUKS container on the host).
    Persistence {
        #[command(subcommand)]
        cmd: PersistenceCmd,
    },
    /// Run the host agent in the foreground (started by `up`, or by systemd).
    #[command(hide = true)]
    Daemon {
        /// At boot: bring the stack up with the autostart settings.
        #[arg(long)]
        boot: bool,
    },
    /// Exit 0 if KVM really runs a guest here (used by the accelerator probe).
    #[command(hide = true)]
    ProbeKvm,
}

/// `tails-server testnet …`
#[derive(Subcommand)]
pub enum TestnetCmd {
    /// Start it (3 directory authorities, relays with an exit, a client); returns when usable.
    Up,
    /// Stop it and remove its namespace, processes and files.
    Down,
    /// Show it, and what another tor needs to join it.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fetch a page as the testnet's client (through Tor), e.g. an onion service.
    Fetch {
        /// `http://HOST[:PORT]/` (HOST may be a .onion address).
        url: String,
        /// A file holding a client's `<address>:descriptor:x25519:<key>` line
        /// (`-` for stdin): the client learns the key first.
        #[arg(long, value_name = "FILE")]
        auth_private: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=900))]
        timeout: u64,
    },
}

/// `tails-server image …`
#[derive(Subcommand)]
pub enum ImageCmd {
    /// Build the guest images (cached: a no-op when the inputs have not changed).
    Build {
        /// Rebuild even if images for these inputs exist.
        #[arg(long)]
        force: bool,
    },
    /// Print where the current images are, or say that they are missing.
    Show,
}

/// Default size of a new store.
pub const DEFAULT_SIZE_MIB: u64 = 1024;

/// `tails-server persistence …`
#[derive(Subcommand)]
pub enum PersistenceCmd {
    /// Make the encrypted persistent store (a LUKS container; locked afterwards).
    Create {
        /// Its size in MiB.
        #[arg(long, default_value_t = DEFAULT_SIZE_MIB, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
        size_mib: u64,
        /// Read the passphrase from the first line of this file instead of asking.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Open it with its passphrase (mounted on the host only).
    Unlock {
        /// Read the passphrase from the first line of this file instead of asking.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Close it: only the passphrase opens it again.
    Lock,
    /// Whether it exists and whether it is unlocked.
    Status {
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Replace its passphrase (the old one no longer opens it).
    ChangePassphrase {
        /// The current passphrase, from a file.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The new passphrase, from a file.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
}

/// `tails-server <service> …`: what follows the service's name.
#[derive(Parser)]
#[command(
    no_binary_name = true,
    name = "tails-server <service>",
    about = "One service of the catalog: publish it as an onion service, set its options, authorize its clients"
)]
pub struct ServiceCli {
    #[command(subcommand)]
    pub action: ServiceCmd,
}

/// What can be done to a service.
#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Print the service's attributes and current values.
    Info {
        /// Also the client application, documentation, packages and clients.
        #[arg(long)]
        details: bool,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Print whether it is installed, running and published.
    Status {
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Start it in the App VM and publish it as an onion service.
    Enable,
    /// Remove the onion service and stop it.
    Disable,
    /// Print an option's value.
    GetOption {
        /// The option's name (`tails-server SERVICE info` lists them).
        option: String,
    },
    /// Set an option (checked; nothing changes if it is refused); applied at
    /// once to a running service.
    SetOption {
        /// The option's name (`tails-server SERVICE info` lists them).
        option: String,
        /// Its new value (`true` or `false` for a yes-or-no option).
        value: String,
        /// Go on with a change that loses something for good (persistence
        /// turned off) without being asked.
        #[arg(long)]
        yes: bool,
    },
    /// Authorize a new client (a fresh key pair, whose credentials are shown),
    /// or a client's own x25519 public key; applied at once.
    AddClient {
        /// The client's name: 1 to 32 letters, digits, `-` or `_`.
        name: String,
        /// The client's public key (52 base32 characters, or its
        /// `descriptor:x25519:…` line): the host never holds its private key.
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
    },
    /// Revoke a client; applied at once.
    RemoveClient {
        /// The client's name.
        name: String,
    },
    /// Show how to connect: address, the client's key line, connection info, QR code.
    Credentials {
        /// Which client (default: the only one, or `default`).
        client: Option<String>,
        /// Also write the QR code as an SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Take tor's `hs_ed25519_secret_key` file: the service gets its address.
    ImportKey {
        /// The key file.
        file: PathBuf,
        /// Replace the key the service has (its address is lost).
        #[arg(long)]
        replace: bool,
    },
    /// Write the service's key as tor's `hs_ed25519_secret_key` file (0600).
    ExportKey {
        /// Where to write it (0600).
        file: PathBuf,
    },
}

/// A network's name (`public`, `local`, `none`).
pub fn parse_network(s: &str) -> Result<Network, String> {
    Network::from_name(s)
        .ok_or_else(|| format!("{s:?} is not a network: use public, local or none"))
}

/// A bridge line: one line of printable text, at most 1 KiB.
pub fn parse_bridge(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 1024 || s.chars().any(|c| c.is_control()) {
        return Err("a bridge is one line of text, e.g. `192.0.2.7:443 4352E58420E68F5E40BF7C74FADDCCD9D1349413`".into());
    }
    Ok(s.strip_prefix("Bridge ").unwrap_or(s).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        // clap's own checks (conflicting names, bad defaults), which it
        // otherwise only runs when a command is parsed in a debug build.
        Cli::command().debug_assert();
        ServiceCli::command().debug_assert();
    }

    #[test]
    fn a_service_command_is_passed_on_whole() {
        let cli = Cli::try_parse_from(["tails-server", "nginx", "set-option", "a", "b"]).unwrap();
        match cli.cmd {
            Cmd::Service(args) => assert_eq!(args, ["nginx", "set-option", "a", "b"]),
            _ => panic!("not a service command"),
        }
        let s = ServiceCli::try_parse_from(["set-option", "a", "b", "--yes"]).unwrap();
        assert!(matches!(s.action, ServiceCmd::SetOption { yes: true, .. }));
    }

    #[test]
    fn bridges_and_networks_are_checked() {
        assert_eq!(
            parse_bridge(" Bridge 192.0.2.7:443 ").unwrap(),
            "192.0.2.7:443"
        );
        assert!(parse_bridge("a\nb").is_err());
        assert!(parse_bridge(&"x".repeat(1025)).is_err());
        assert!(parse_network("moon").is_err());
        assert!(Cli::try_parse_from(["tails-server", "up", "--network", "moon"]).is_err());
    }
}

/// `tails-server-gui`'s arguments (its window is its own; GTK takes none).
#[derive(Debug, Parser)]
#[command(
    name = "tails-server-gui",
    version,
    about = "The graphical interface of Tails Server",
    long_about = "The graphical interface of Tails Server: the services of the catalog, their \
state, options and clients, and how to connect to them (address, key, QR code).\n\n\
It is a client of the tails-server daemon's API, like the command line: root or a member \
of the group tails-server (the group of the daemon's socket) may use it."
)]
pub struct GuiArgs {
    /// Show the greeter's screen instead: the "Isolate via virtualization"
    /// switch and the persistent store's passphrase, before a session
    /// starts.
    #[arg(long)]
    pub greeter: bool,
}
