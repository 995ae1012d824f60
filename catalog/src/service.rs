//! One service: its file's format, how a file is parsed and checked
//! ([`Service::parse`]), and what a checked service offers (its fields, its options'
//! initial values, its start command and config files and its connection info rendered
//! for given option values).
//!
//! A service file (`services/NAME.yaml`):
//!
//! ```yaml
//! name: nginx                      # = the file name without extension
//! description: Web server …        # one line
//! client_application: Tor Browser  # one line
//! documentation: https://nginx.org/en/docs/
//! icon_name: text-html
//! packages: [nginx-light]          # Debian packages the App VM image needs
//! start:                           # how the App VM agent starts it
//!   command: [/usr/sbin/nginx, -c, /etc/tails-server/nginx.conf]   # argv, templates
//!   user: root                     # the user it runs as
//!   directories:                   # optional: made (or fixed) before it starts
//!     - path: /var/lib/tails-server-filedrop
//!       owner: www-data              # a user of the App VM (its group too)
//!       mode: "0700"                 # optional, default 0700
//!   users:                         # optional: system users made at first start
//!     - name: infinoted              # (when the App VM has none of that name)
//!       home: /var/lib/x             # optional, default /nonexistent (not made)
//!   config:                        # files written before it starts
//!     - path: /etc/tails-server/nginx.conf
//!       mode: "0644"               # optional, default 0644, at most 0777
//!       owner: www-data            # optional, default root (the group too)
//!       template: |
//!         … listen {target_port}; …
//!   certificates:                  # optional: a self-signed TLS certificate made at
//!     - key: /var/lib/x/tls/key.pem  # the first start (EC P-256; valid from the start
//!       certificate: /var/lib/x/tls/cert.pem   # of the day before, for ten years)
//!       owner: prosody
//!       names: ["{address}", "rooms.{address}"]   # DNS names (the first: its CN)
//!   prepare:                       # optional: run in order after the files, before
//!     - command: [/usr/bin/ssh-keygen, …]   # the service; like `command` (no secrets)
//!       user: root                 # optional, default root
//!       stdin: "{user}:{password}\n"   # optional; may hold secrets (never in argv)
//!       creates: /var/lib/x/key    # optional: skipped when this path exists, so a key
//!                                  # or an account is made at the first start only
//! default_target_port: 80          # the port it listens on in the App VM
//! default_virtual_port: 80         # the onion service's port
//! persistent_paths: [/var/www/tails-server]   # optional
//! options:                         # optional; besides the standard options
//!   - name: server-password
//!     description: Password to join the server
//!     kind: {secret: {length: 20}} # bool | port | {int: {min, max}}
//!                                  # | {string: {max_len, chars: text|word|words}}
//!                                  # | {enum: {values: [...]}} | {secret: {length}}
//!     default: …                   # required except for a secret (then generated)
//! connection_info: "http://{address}/"
//! ```
//!
//! Placeholders (see [`crate::template`]): the connection info may use `{address}`,
//! `{virtual_port}` and every option; config files additionally `{target_port}`; command
//! arguments the built-ins and every option but secrets (command lines are visible to
//! every process in the App VM and end up in logs). A config file whose template holds a
//! secret must not be readable by every user (mode's last digit without the read bit).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::error::{LoadError, Problem, RenderError};
use crate::names;
use crate::option::{
    self, Chars, OptionKind, OptionSpec, OptionValue, Values, SECRET_MAX_LEN, SECRET_MIN_LEN,
    STANDARD_OPTIONS, STRING_MAX_LEN,
};
use crate::template::{self, Builtins, Template};

/// Largest service file read.
pub const MAX_FILE_LEN: u64 = 256 * 1024;

/// Default mode of a config file.
const DEFAULT_MODE: u32 = 0o644;
/// Mode of a `start.directories` entry without one.
const DEFAULT_DIR_MODE: u32 = 0o700;

// ---------------------------------------------------------------------------------------
// The file format, as deserialized (then checked into a `Service`).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    description: Spanned<String>,
    client_application: Spanned<String>,
    documentation: Spanned<String>,
    icon_name: Spanned<String>,
    packages: Vec<Spanned<String>>,
    start: RawStart,
    default_target_port: Port,
    default_virtual_port: Port,
    #[serde(default)]
    persistent_paths: Vec<Spanned<String>>,
    #[serde(default)]
    options: Vec<RawOption>,
    connection_info: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStart {
    command: Spanned<Vec<Spanned<String>>>,
    user: Spanned<String>,
    #[serde(default)]
    config: Vec<RawConfig>,
    #[serde(default)]
    directories: Vec<RawDirectory>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    prepare: Vec<RawPrepare>,
    #[serde(default)]
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    key: Spanned<String>,
    certificate: Spanned<String>,
    owner: Spanned<String>,
    names: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    #[serde(default)]
    home: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrepare {
    command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    user: Option<Spanned<String>>,
    #[serde(default)]
    stdin: Option<Spanned<String>>,
    #[serde(default)]
    creates: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    path: Spanned<String>,
    owner: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    path: Spanned<String>,
    template: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    owner: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOption {
    name: Spanned<String>,
    description: Spanned<String>,
    kind: Spanned<RawKind>,
    #[serde(default)]
    default: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawKind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Port,
    String {
        max_len: usize,
        #[serde(default)]
        chars: Chars,
    },
    Enum {
        values: Vec<String>,
    },
    Secret {
        length: usize,
    },
}

/// A port number in a service file, checked while deserializing.
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number from 1 to 65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|&p| p != 0)
                    .map(Port)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A default value as written (`true`, `42`, `text`), turned into text and parsed by the
/// option's kind like a value given on the command line.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value (true, 42, some text)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes `text` strictly (`yes` is no bool), naming the field of an error.
fn parse_yaml(file: &Path, text: &str) -> Result<RawService, LoadError> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
    };
    let mut field = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            field = field_path(e.path());
            e.into_inner()
        })
    })
    .map_err(|e| match innermost(&e) {
        // serde-saphyr locates a missing field at the end of its mapping, which points
        // at whatever comes last; the field's path says more.
        serde_saphyr::Error::SerdeMissingField { field: missing, .. } => {
            let path = match field {
                Some(parent) => format!("{parent}.{missing}"),
                None => missing.to_string(),
            };
            LoadError::new(file, None, Some(path), Problem::MissingField)
        }
        inner => {
            let line = inner.location().map(|l| l.line());
            LoadError::new(file, line, field, Problem::Yaml(yaml_message(inner)))
        }
    })
}

/// The error itself, out of the wrappers serde-saphyr may put around it.
fn innermost(mut e: &serde_saphyr::Error) -> &serde_saphyr::Error {
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = e
    {
        e = error;
    }
    e
}

/// `options[1].default` from serde_path_to_error's path, without the `value` segments
/// that `Spanned` adds.
fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    let mut s = String::new();
    for segment in path {
        match segment {
            serde_path_to_error::Segment::Seq { index } => s.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if key == "value" {
                    continue;
                }
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    (!s.is_empty()).then_some(s)
}

/// serde-saphyr's message for `e`, without its location and on one line.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    let msg = serde_saphyr::DefaultMessageFormatter.format_message(e);
    msg.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The checked service.

/// How the App VM agent starts a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    command: Vec<Template>,
    user: String,
    config: Vec<ConfigTemplate>,
    directories: Vec<Directory>,
    users: Vec<SystemUser>,
    prepare: Vec<Prepare>,
    certificates: Vec<Certificate>,
}

/// A self-signed TLS certificate the App VM agent makes at the service's first start
/// (when `certificate` does not exist yet), for clients that reach it through the onion
/// service (which already authenticates the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    key: PathBuf,
    certificate: PathBuf,
    owner: String,
    names: Vec<Template>,
}

/// A [`Certificate`] rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePlan {
    /// Where its private key goes (0600, the owner's).
    pub key: PathBuf,
    /// Where the certificate goes (0644, the owner's).
    pub certificate: PathBuf,
    /// Who owns both.
    pub owner: String,
    /// The DNS names it is for (the first is also its common name).
    pub names: Vec<String>,
}

/// A system user the App VM agent makes before the service starts, if the App VM has
/// no user of that name (a service whose package brings none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUser {
    /// Its name (also its group's).
    pub name: String,
    /// Its home directory (`/nonexistent` when the file gives none); not made.
    pub home: PathBuf,
}

/// A command the App VM agent runs before the service starts (a key or certificate
/// made at first start, an account, a configuration check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    command: Vec<Template>,
    user: String,
    stdin: Option<Template>,
    creates: Option<PathBuf>,
}

/// A [`Prepare`] step rendered; [`fmt::Debug`] leaves its input out (it may hold a
/// secret).
#[derive(Clone, PartialEq, Eq)]
pub struct PrepareStep {
    /// The argv (never holds a secret).
    pub command: Vec<String>,
    /// The user it runs as.
    pub user: String,
    /// What it reads on its standard input (may hold a secret: never log it).
    pub stdin: Option<String>,
    /// When this path exists the step is skipped (done at an earlier start).
    pub creates: Option<PathBuf>,
}

impl fmt::Debug for PrepareStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrepareStep")
            .field("command", &self.command)
            .field("user", &self.user)
            .field(
                "stdin",
                &self.stdin.as_ref().map(|s| format!("<{} bytes>", s.len())),
            )
            .field("creates", &self.creates)
            .finish()
    }
}

/// A directory the App VM agent makes (or fixes) before the service starts:
/// owned by `owner` (a user of the App VM, also its group), with `mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// Absolute path in the App VM.
    pub path: PathBuf,
    /// The user (and group) it belongs to.
    pub owner: String,
    /// Permission bits (at most 0o777).
    pub mode: u32,
}

impl Start {
    /// The argv: the first element a fixed absolute path, the others templates.
    pub fn command(&self) -> &[Template] {
        &self.command
    }

    /// The user the service runs as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The config files written before it starts.
    pub fn config(&self) -> &[ConfigTemplate] {
        &self.config
    }

    /// The directories made before it starts.
    pub fn directories(&self) -> &[Directory] {
        &self.directories
    }

    /// The system users made before it starts.
    pub fn users(&self) -> &[SystemUser] {
        &self.users
    }

    /// The commands run before it starts.
    pub fn prepare(&self) -> &[Prepare] {
        &self.prepare
    }

    /// The certificates made at its first start.
    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }
}

/// A config file to write before the service starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTemplate {
    path: PathBuf,
    template: Template,
    mode: u32,
    owner: Option<String>,
}

impl ConfigTemplate {
    /// Where (an absolute path in the App VM).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its contents.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Its permission bits (at most 0o777).
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// Its owner (and group), root when `None`.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }
}

/// A start command and config files with the values filled in; see [`Service::render_start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// The argv (never holds a secret: the loader refuses secrets in commands).
    pub command: Vec<String>,
    /// The user to run it as.
    pub user: String,
    /// The config files to write first.
    pub files: Vec<ConfigFile>,
    /// The directories to make first (data owned by the service's user).
    pub directories: Vec<Directory>,
    /// The system users to make first.
    pub users: Vec<SystemUser>,
    /// The commands to run after the files, before the service.
    pub prepare: Vec<PrepareStep>,
    /// The certificates to make (when missing) before the commands.
    pub certificates: Vec<CertificatePlan>,
}

/// A config file with its contents; [`fmt::Debug`] leaves the contents out since they may
/// hold a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Absolute path in the App VM.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// Its owner (and group), root when `None`.
    pub owner: Option<String>,
    /// The contents (may hold a secret: never log them).
    pub contents: String,
}

impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("owner", &self.owner)
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .finish()
    }
}

/// A service of the catalog, checked: every field valid, every placeholder known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    file: PathBuf,
    name_line: u64,
    name: String,
    description: String,
    client_application: String,
    documentation: String,
    icon_name: String,
    packages: Vec<String>,
    start: Start,
    default_target_port: u16,
    default_virtual_port: u16,
    persistent_paths: Vec<PathBuf>,
    options: Vec<OptionSpec>,
    connection_info: Template,
}

impl Service {
    /// Parses and checks the service file `file` whose contents are `text`. All the
    /// problems found are returned (at least one), each naming the file, the line where
    /// known and the field.
    pub fn parse(file: &Path, text: &str) -> Result<Service, Vec<LoadError>> {
        let raw = parse_yaml(file, text).map_err(|e| vec![e])?;
        let mut c = Checker {
            file,
            text,
            errors: Vec::new(),
        };
        let service = c.service(raw);
        if c.errors.is_empty() {
            Ok(service)
        } else {
            Err(c.errors)
        }
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub(crate) fn name_line(&self) -> u64 {
        self.name_line
    }

    /// Its name, as used on the command line (= the file name without extension).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line describing it.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The application clients use to connect.
    pub fn client_application(&self) -> &str {
        &self.client_application
    }

    /// URL of its documentation.
    pub fn documentation(&self) -> &str {
        &self.documentation
    }

    /// The icon the GUI shows for it.
    pub fn icon_name(&self) -> &str {
        &self.icon_name
    }

    /// The Debian packages the App VM image needs for it.
    pub fn packages(&self) -> &[String] {
        &self.packages
    }

    /// How it starts in the App VM.
    pub fn start(&self) -> &Start {
        &self.start
    }

    /// The port it listens on in the App VM, unless configured otherwise.
    pub fn default_target_port(&self) -> u16 {
        self.default_target_port
    }

    /// The onion service's port unless the `virtual-port` option says otherwise.
    pub fn default_virtual_port(&self) -> u16 {
        self.default_virtual_port
    }

    /// What the persistence option keeps.
    pub fn persistent_paths(&self) -> &[PathBuf] {
        &self.persistent_paths
    }

    /// All its options: the standard ones first, then those its file defines.
    pub fn options(&self) -> &[OptionSpec] {
        &self.options
    }

    /// The option called `name`.
    pub fn option(&self, name: &str) -> Option<&OptionSpec> {
        self.options.iter().find(|o| o.name() == name)
    }

    /// The connection info template.
    pub fn connection_info(&self) -> &Template {
        &self.connection_info
    }

    /// Parses `text` as the value of option `name` (the CLI's `set-option NAME VALUE`).
    pub fn parse_option(&self, name: &str, text: &str) -> Result<OptionValue, crate::OptionError> {
        let spec = self
            .option(name)
            .ok_or_else(|| crate::OptionError::Unknown {
                service: self.name.clone(),
                option: name.to_string(),
                known: self.options.iter().map(|o| o.name().to_string()).collect(),
            })?;
        OptionValue::parse(spec, text)
    }

    /// The option values of a freshly enabled service: the defaults, and new random
    /// secrets for the secrets without one.
    pub fn initial_values(&self) -> std::io::Result<Values> {
        self.options
            .iter()
            .map(|o| Ok((o.name().to_string(), o.initial_value()?)))
            .collect()
    }

    /// The connection info for `values` (secrets written out in full).
    pub fn render_connection_info(
        &self,
        values: &Values,
        builtins: &Builtins<'_>,
    ) -> Result<String, RenderError> {
        self.connection_info.render(values, builtins)
    }

    /// The command, user and config files for `values`.
    pub fn render_start(
        &self,
        values: &Values,
        builtins: &Builtins<'_>,
    ) -> Result<StartPlan, RenderError> {
        let command = self
            .start
            .command
            .iter()
            .map(|arg| arg.render(values, builtins))
            .collect::<Result<_, _>>()?;
        let files = self
            .start
            .config
            .iter()
            .map(|c| {
                Ok(ConfigFile {
                    path: c.path.clone(),
                    mode: c.mode,
                    owner: c.owner.clone(),
                    contents: c.template.render(values, builtins)?,
                })
            })
            .collect::<Result<_, RenderError>>()?;
        let prepare = self
            .start
            .prepare
            .iter()
            .map(|p| {
                Ok(PrepareStep {
                    command: p
                        .command
                        .iter()
                        .map(|arg| arg.render(values, builtins))
                        .collect::<Result<_, _>>()?,
                    user: p.user.clone(),
                    stdin: p
                        .stdin
                        .as_ref()
                        .map(|t| t.render(values, builtins))
                        .transpose()?,
                    creates: p.creates.clone(),
                })
            })
            .collect::<Result<_, RenderError>>()?;
        let certificates = self
            .start
            .certificates
            .iter()
            .map(|c| {
                Ok(CertificatePlan {
                    key: c.key.clone(),
                    certificate: c.certificate.clone(),
                    owner: c.owner.clone(),
                    names: c
                        .names
                        .iter()
                        .map(|n| n.render(values, builtins))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, RenderError>>()?;
        Ok(StartPlan {
            command,
            user: self.start.user.clone(),
            files,
            directories: self.start.directories.clone(),
            users: self.start.users.clone(),
            prepare,
            certificates,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Checking.

/// Where a template is used, which decides the placeholders it may hold.
#[derive(Clone, Copy)]
enum Use {
    ConnectionInfo,
    Config,
    Command,
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<LoadError>,
}

impl Checker<'_> {
    fn error(&mut self, line: u64, field: &str, problem: Problem) {
        self.errors.push(LoadError::new(
            self.file,
            Some(line),
            Some(field.to_string()),
            problem,
        ));
    }

    fn at(&mut self, at: &Location, field: &str, problem: Problem) {
        self.error(at.line(), field, problem);
    }

    /// The line of `needle` within the scalar at `at` (a placeholder in a block scalar
    /// is some lines below the scalar's start); the scalar's line if not found.
    fn line_of(&self, at: &Location, needle: &str) -> u64 {
        let span = at.span();
        let found = span
            .byte_offset()
            .zip(span.byte_len())
            .and_then(|(off, len)| {
                let start = usize::try_from(off).ok()?;
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                let source = self.text.get(start..end)?;
                let pos = source.find(needle)?;
                u64::try_from(source[..pos].matches('\n').count()).ok()
            });
        at.line() + found.unwrap_or(0)
    }

    fn one_line(&mut self, s: &Spanned<String>, field: &str) -> String {
        if let Some(why) = names::one_line_problem(&s.value) {
            self.at(&s.referenced, field, Problem::Text(why));
        }
        s.value.clone()
    }

    /// A clean absolute path (any problem recorded); `false` if it is not one.
    fn absolute(&mut self, s: &Spanned<String>, field: &str) -> bool {
        let Some(why) = names::absolute_path_problem(&s.value) else {
            return true;
        };
        let problem = Problem::Path {
            path: s.value.clone(),
            why,
        };
        self.at(&s.referenced, field, problem);
        false
    }

    fn path(&mut self, s: &Spanned<String>, field: &str, seen: &mut HashSet<String>) -> PathBuf {
        if self.absolute(s, field) && !seen.insert(s.value.clone()) {
            self.at(
                &s.referenced,
                field,
                Problem::DuplicatePath(s.value.clone()),
            );
        }
        PathBuf::from(&s.value)
    }

    fn service(&mut self, raw: RawService) -> Service {
        let name = raw.name.value.clone();
        if !names::is_name(&name) {
            self.at(
                &raw.name.referenced,
                "name",
                Problem::ServiceName(name.clone()),
            );
        } else {
            let stem = self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned());
            if stem.as_deref() != Some(name.as_str()) {
                let problem = Problem::NameNotStem {
                    name: name.clone(),
                    stem: stem.unwrap_or_default(),
                };
                self.at(&raw.name.referenced, "name", problem);
            }
        }
        let description = self.one_line(&raw.description, "description");
        let client_application = self.one_line(&raw.client_application, "client_application");
        if !names::is_url(&raw.documentation.value) {
            let problem = Problem::Url(raw.documentation.value.clone());
            self.at(&raw.documentation.referenced, "documentation", problem);
        }
        if !names::is_icon_name(&raw.icon_name.value) {
            let problem = Problem::IconName(raw.icon_name.value.clone());
            self.at(&raw.icon_name.referenced, "icon_name", problem);
        }

        let mut seen = HashSet::new();
        for (i, p) in raw.packages.iter().enumerate() {
            let field = format!("packages[{i}]");
            if !names::is_package_name(&p.value) {
                self.at(&p.referenced, &field, Problem::PackageName(p.value.clone()));
            } else if !seen.insert(p.value.as_str()) {
                self.at(
                    &p.referenced,
                    &field,
                    Problem::DuplicatePackage(p.value.clone()),
                );
            }
        }

        let mut seen = HashSet::new();
        let persistent_paths = raw
            .persistent_paths
            .iter()
            .enumerate()
            .map(|(i, p)| self.path(p, &format!("persistent_paths[{i}]"), &mut seen))
            .collect();

        let options = self.options(&raw.options, raw.default_virtual_port.0);
        let secrets: Vec<&str> = options
            .iter()
            .filter(|o| o.kind().is_secret())
            .map(OptionSpec::name)
            .collect();
        let start = self.start(&raw.start, &options, &secrets);
        if !raw.start.certificates.is_empty() && !raw.packages.iter().any(|p| p.value == "openssl")
        {
            let at = &raw.start.certificates[0].key.referenced;
            self.at(at, "start.certificates", Problem::CertificatesNeedOpenssl);
        }
        let connection_info = self.template(
            &raw.connection_info,
            "connection_info",
            Use::ConnectionInfo,
            &options,
            &secrets,
        );

        Service {
            file: self.file.to_path_buf(),
            name_line: raw.name.referenced.line(),
            name,
            description,
            client_application,
            documentation: raw.documentation.value,
            icon_name: raw.icon_name.value,
            packages: raw.packages.into_iter().map(|p| p.value).collect(),
            start,
            default_target_port: raw.default_target_port.0,
            default_virtual_port: raw.default_virtual_port.0,
            persistent_paths,
            options,
            connection_info,
        }
    }

    /// The standard options and the file's, those with a valid name at least (enough to
    /// check the placeholders without a cascade of errors; any problem has been recorded,
    /// and a service with a problem is not returned).
    fn options(&mut self, raw: &[RawOption], default_virtual_port: u16) -> Vec<OptionSpec> {
        let mut options = option::standard_options(default_virtual_port);
        for (i, o) in raw.iter().enumerate() {
            let field = |f: &str| format!("options[{i}].{f}");
            let name = o.name.value.as_str();
            let name_problem = if !names::is_name(name) {
                Some(Problem::OptionName(name.to_string()))
            } else if STANDARD_OPTIONS.contains(&name) {
                Some(Problem::StandardOption(name.to_string()))
            } else if name == template::ADDRESS {
                Some(Problem::ReservedOptionName(name.to_string()))
            } else if options.iter().any(|s| s.name() == name) {
                Some(Problem::DuplicateOption(name.to_string()))
            } else {
                None
            };
            let name_ok = name_problem.is_none();
            if let Some(problem) = name_problem {
                self.at(&o.name.referenced, &field("name"), problem);
            }
            let description = self.one_line(&o.description, &field("description"));
            let (kind, kind_ok) = self.kind(&o.kind, &field("kind"));
            let default = match &o.default {
                // Checking a default against an inconsistent kind would only repeat it.
                _ if !kind_ok => None,
                Some(d) => match option::parse_kind(name, &kind, &d.value.0) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.at(&d.referenced, &field("default"), Problem::Default(e));
                        None
                    }
                },
                None if kind.is_secret() => None,
                None => {
                    let problem = Problem::MissingDefault(name.to_string());
                    self.at(&o.name.referenced, &format!("options[{i}]"), problem);
                    None
                }
            };
            if name_ok {
                options.push(OptionSpec::new(name, &description, kind, default, false));
            }
        }
        options
    }

    /// The kind of `raw`, also when it is inconsistent (the problem is then recorded, and
    /// the kind only serves to check the rest of the file).
    fn kind(&mut self, raw: &Spanned<RawKind>, field: &str) -> (OptionKind, bool) {
        let (kind, problem) = match &raw.value {
            RawKind::Bool => (OptionKind::Bool, None),
            RawKind::Port => (OptionKind::Port, None),
            &RawKind::Int { min, max } => (
                OptionKind::Int { min, max },
                (min > max).then(|| format!("min {min} is greater than max {max}")),
            ),
            &RawKind::String { max_len, chars } => (
                OptionKind::String { max_len, chars },
                (!(1..=STRING_MAX_LEN).contains(&max_len))
                    .then(|| format!("max_len must be from 1 to {STRING_MAX_LEN}")),
            ),
            RawKind::Enum { values } => {
                let mut seen = HashSet::new();
                let problem = if values.is_empty() {
                    Some("an enum needs at least one value".to_string())
                } else if let Some(bad) = values.iter().find(|v| {
                    names::one_line_problem(v).is_some() || v.trim() != v.as_str() || v.len() > 64
                }) {
                    Some(format!(
                        "enum value {bad:?} is not one line of at most 64 bytes without \
                         surrounding spaces"
                    ))
                } else {
                    values
                        .iter()
                        .find(|v| !seen.insert(v.as_str()))
                        .map(|v| format!("enum value {v:?} is listed twice"))
                };
                (
                    OptionKind::Enum {
                        values: values.clone(),
                    },
                    problem,
                )
            }
            &RawKind::Secret { length } => (
                OptionKind::Secret { length },
                (!(SECRET_MIN_LEN..=SECRET_MAX_LEN).contains(&length)).then(|| {
                    format!("a secret's length must be from {SECRET_MIN_LEN} to {SECRET_MAX_LEN}")
                }),
            ),
        };
        let ok = problem.is_none();
        if let Some(p) = problem {
            self.at(&raw.referenced, field, Problem::Kind(p));
        }
        (kind, ok)
    }

    /// Checks a command line at `raw` (`field` names it): an absolute program, then
    /// templates without secrets or control characters.
    fn argv(
        &mut self,
        raw: &Spanned<Vec<Spanned<String>>>,
        field: &str,
        options: &[OptionSpec],
        secrets: &[&str],
    ) -> Vec<Template> {
        let mut command = Vec::new();
        if raw.value.is_empty() {
            self.at(&raw.referenced, field, Problem::EmptyCommand);
        }
        for (i, arg) in raw.value.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if arg.value.chars().any(char::is_control) {
                self.at(&arg.referenced, &field, Problem::CommandControl);
                continue;
            }
            let t = self.template(arg, &field, Use::Command, options, secrets);
            if i == 0 && (!t.is_literal() || names::absolute_path_problem(&arg.value).is_some()) {
                self.at(&arg.referenced, &field, Problem::Program(arg.value.clone()));
            }
            command.push(t);
        }
        command
    }

    fn user_name(&mut self, raw: &Spanned<String>, field: &str) -> String {
        if !names::is_user_name(&raw.value) {
            self.at(&raw.referenced, field, Problem::UserName(raw.value.clone()));
        }
        raw.value.clone()
    }

    fn start(&mut self, raw: &RawStart, options: &[OptionSpec], secrets: &[&str]) -> Start {
        let command = self.argv(&raw.command, "start.command", options, secrets);
        let user = self.user_name(&raw.user, "start.user");
        let mut seen = HashSet::new();
        let mut config = Vec::new();
        for (i, c) in raw.config.iter().enumerate() {
            let field = |f: &str| format!("start.config[{i}].{f}");
            let path = self.path(&c.path, &field("path"), &mut seen);
            let template = self.template(
                &c.template,
                &field("template"),
                Use::Config,
                options,
                secrets,
            );
            let mode = match &c.mode {
                None => DEFAULT_MODE,
                Some(m) => match parse_mode(&m.value) {
                    Some(mode) => {
                        let secret = template.placeholders().find(|p| secrets.contains(p));
                        if let (Some(secret), true) = (secret, mode & 0o004 != 0) {
                            let problem = Problem::SecretReadable {
                                mode: m.value.clone(),
                                secret: secret.to_string(),
                            };
                            self.at(&m.referenced, &field("mode"), problem);
                        }
                        mode
                    }
                    None => {
                        self.at(
                            &m.referenced,
                            &field("mode"),
                            Problem::Mode(m.value.clone()),
                        );
                        DEFAULT_MODE
                    }
                },
            };
            if c.mode.is_none() {
                if let Some(secret) = template.placeholders().find(|p| secrets.contains(p)) {
                    let problem = Problem::SecretReadable {
                        mode: format!("{DEFAULT_MODE:04o} (the default)"),
                        secret: secret.to_string(),
                    };
                    self.at(&c.path.referenced, &field("mode"), problem);
                }
            }
            let owner = c.owner.as_ref().map(|o| self.user_name(o, &field("owner")));
            config.push(ConfigTemplate {
                path,
                template,
                mode,
                owner,
            });
        }
        let mut directories = Vec::new();
        for (i, d) in raw.directories.iter().enumerate() {
            let field = |f: &str| format!("start.directories[{i}].{f}");
            let path = self.path(&d.path, &field("path"), &mut seen);
            if !names::is_user_name(&d.owner.value) {
                let problem = Problem::UserName(d.owner.value.clone());
                self.at(&d.owner.referenced, &field("owner"), problem);
            }
            let mode = match &d.mode {
                None => DEFAULT_DIR_MODE,
                Some(m) => parse_mode(&m.value).unwrap_or_else(|| {
                    self.at(
                        &m.referenced,
                        &field("mode"),
                        Problem::Mode(m.value.clone()),
                    );
                    DEFAULT_DIR_MODE
                }),
            };
            directories.push(Directory {
                path,
                owner: d.owner.value.clone(),
                mode,
            });
        }
        let mut users = Vec::new();
        let mut names_seen = HashSet::new();
        for (i, u) in raw.users.iter().enumerate() {
            let field = |f: &str| format!("start.users[{i}].{f}");
            let name = self.user_name(&u.name, &field("name"));
            if !names_seen.insert(name.clone()) {
                self.at(
                    &u.name.referenced,
                    &field("name"),
                    Problem::DuplicateUser(name.clone()),
                );
            }
            let home = match &u.home {
                None => PathBuf::from("/nonexistent"),
                Some(h) => {
                    self.absolute(h, &field("home"));
                    PathBuf::from(&h.value)
                }
            };
            users.push(SystemUser { name, home });
        }
        let mut prepare = Vec::new();
        for (i, p) in raw.prepare.iter().enumerate() {
            let field = |f: &str| format!("start.prepare[{i}].{f}");
            let command = self.argv(&p.command, &field("command"), options, secrets);
            let user = match &p.user {
                None => "root".to_string(),
                Some(u) => self.user_name(u, &field("user")),
            };
            let stdin = p
                .stdin
                .as_ref()
                .map(|t| self.template(t, &field("stdin"), Use::Config, options, secrets));
            let creates = p.creates.as_ref().map(|c| {
                self.absolute(c, &field("creates"));
                PathBuf::from(&c.value)
            });
            prepare.push(Prepare {
                command,
                user,
                stdin,
                creates,
            });
        }
        let mut certificates = Vec::new();
        for (i, c) in raw.certificates.iter().enumerate() {
            let field = |f: &str| format!("start.certificates[{i}].{f}");
            let key = self.path(&c.key, &field("key"), &mut seen);
            let certificate = self.path(&c.certificate, &field("certificate"), &mut seen);
            let owner = self.user_name(&c.owner, &field("owner"));
            if c.names.value.is_empty() {
                self.at(&c.names.referenced, &field("names"), Problem::NoNames);
            }
            let names = c
                .names
                .value
                .iter()
                .enumerate()
                .map(|(j, n)| {
                    let f = format!("start.certificates[{i}].names[{j}]");
                    self.template(n, &f, Use::Command, options, secrets)
                })
                .collect();
            certificates.push(Certificate {
                key,
                certificate,
                owner,
                names,
            });
        }
        Start {
            command,
            user,
            config,
            directories,
            users,
            prepare,
            certificates,
        }
    }

    /// Parses the template at `raw` and checks its placeholders for `usage`.
    fn template(
        &mut self,
        raw: &Spanned<String>,
        field: &str,
        usage: Use,
        options: &[OptionSpec],
        secrets: &[&str],
    ) -> Template {
        let template = match Template::parse(&raw.value) {
            Ok(t) => t,
            Err(e) => {
                let crate::TemplateError::BadPlaceholder { snippet, .. } = &e;
                let line = self.line_of(&raw.referenced, snippet);
                self.error(line, field, Problem::Template(e));
                return Template::empty();
            }
        };
        let builtins: &[&str] = match usage {
            Use::ConnectionInfo => &[template::ADDRESS, template::VIRTUAL_PORT],
            Use::Config | Use::Command => &[
                template::ADDRESS,
                template::TARGET_PORT,
                template::VIRTUAL_PORT,
            ],
        };
        let mut reported = HashSet::new();
        for name in template.placeholders() {
            let is_option = options.iter().any(|o| o.name() == name);
            let problem = if matches!(usage, Use::Command) && secrets.contains(&name) {
                Problem::SecretInCommand(name.to_string())
            } else if builtins.contains(&name) || is_option {
                continue;
            } else {
                let allowed: Vec<String> = builtins
                    .iter()
                    .copied()
                    .chain(
                        options
                            .iter()
                            .map(OptionSpec::name)
                            .filter(|n| !matches!(usage, Use::Command) || !secrets.contains(n)),
                    )
                    .map(|n| format!("{{{n}}}"))
                    .collect();
                Problem::UnknownPlaceholder {
                    name: name.to_string(),
                    allowed: allowed.join(", "),
                }
            };
            if reported.insert(name) {
                let line = self.line_of(&raw.referenced, &format!("{{{name}}}"));
                self.error(line, field, problem);
            }
        }
        template
    }
}

/// `"0640"`, `"640"` → 0o640; at most 0o777.
fn parse_mode(s: &str) -> Option<u32> {
    let digits_ok = (3..=4).contains(&s.len()) && s.chars().all(|c| ('0'..='7').contains(&c));
    digits_ok
        .then(|| u32::from_str_radix(s, 8).ok())
        .flatten()
        .filter(|&m| m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid service file; tests break one field at a time.
    pub(crate) const GOOD: &str = "\
name: chat
description: A chat server
client_application: Pidgin
documentation: https://example.org/chat
icon_name: chat-icon
packages: [chatd, chatd-data]
start:
  command: [/usr/bin/chatd, --port, '{target_port}', --motd, '{motd}']
  user: chatd
  config:
    - path: /etc/chatd/chatd.conf
      mode: \"0640\"
      template: |
        port = {target_port}
        password = {server-password}
        max = {max-users}
        motd = {motd}
        cipher = {cipher}
        onion = {address}:{virtual_port}
default_target_port: 6667
default_virtual_port: 6697
persistent_paths: [/var/lib/chatd]
options:
  - name: server-password
    description: Password to join
    kind: {secret: {length: 20}}
  - name: max-users
    description: Most users at once
    kind: {int: {min: 1, max: 100}}
    default: 10
  - name: motd
    description: Message of the day
    kind: {string: {max_len: 80}}
    default: Welcome
  - name: cipher
    description: Cipher
    kind: {enum: {values: [fast, strong]}}
    default: strong
  - name: log
    description: Keep a log
    kind: bool
    default: false
connection_info: \"{address}:{virtual_port} password {server-password}\"
";

    fn parse(text: &str) -> Result<Service, Vec<LoadError>> {
        Service::parse(Path::new("services/chat.yaml"), text)
    }

    /// The errors of `text`, one line each.
    #[test]
    fn directories_are_made_for_their_owner() {
        let with = GOOD.replace(
            "  config:\n",
            "  directories:\n    - path: /var/lib/chatd/rooms\n      owner: chatd\n    - path: /var/lib/chatd/up\n      owner: chatd\n      mode: \"0750\"\n  config:\n",
        );
        let svc = parse(&with).expect("parses");
        let dirs = svc.start().directories();
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].path, Path::new("/var/lib/chatd/rooms"));
        assert_eq!((dirs[0].owner.as_str(), dirs[0].mode), ("chatd", 0o700));
        assert_eq!(dirs[1].mode, 0o750);
        for (bad, field) in [
            ("path: var/lib/x", "start.directories[0].path"),
            ("path: /var/../etc", "start.directories[0].path"),
            ("owner: Bad User", "start.directories[0].owner"),
            ("mode: \"07777\"", "start.directories[0].mode"),
        ] {
            let (key, _) = bad.split_once(':').unwrap();
            let line = match key {
                "path" => format!("    - {bad}\n      owner: chatd\n"),
                "owner" => format!("    - path: /var/lib/x\n      {bad}\n"),
                _ => format!("    - path: /var/lib/x\n      owner: chatd\n      {bad}\n"),
            };
            let text = GOOD.replace("  config:\n", &format!("  directories:\n{line}  config:\n"));
            let e = errors(&text);
            assert!(e.iter().any(|m| m.contains(field)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn users_owners_and_prepare_steps_render_in_order() {
        let with = GOOD.replace(
            "  config:\n",
            "  users:\n    - name: chatd\n      home: /var/lib/chatd\n    - name: chatlog\n  \
             prepare:\n    - command: [/usr/bin/chatd-keygen, --out, /var/lib/chatd/key, '{motd}']\n      \
             creates: /var/lib/chatd/key\n    - command: [/usr/sbin/chpasswd]\n      \
             stdin: \"chatd:{server-password}\\n\"\n    - command: [/usr/bin/chatd, --check]\n      \
             user: chatd\n  config:\n",
        )
        .replace("      mode: \"0640\"\n", "      mode: \"0640\"\n      owner: chatd\n");
        let svc = parse(&with).expect("parses");
        let users = svc.start().users();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name, "chatd");
        assert_eq!(users[0].home, Path::new("/var/lib/chatd"));
        assert_eq!(users[1].home, Path::new("/nonexistent"));
        assert_eq!(svc.start().config()[0].owner(), Some("chatd"));
        let values = svc.initial_values().unwrap();
        let OptionValue::Secret(pw) = values["server-password"].clone() else {
            panic!("not a secret")
        };
        let b = Builtins {
            address: "x.onion",
            target_port: 1,
        };
        let plan = svc.render_start(&values, &b).unwrap();
        assert_eq!(plan.files[0].owner.as_deref(), Some("chatd"));
        assert_eq!(plan.prepare.len(), 3);
        assert_eq!(
            plan.prepare[0].command,
            [
                "/usr/bin/chatd-keygen",
                "--out",
                "/var/lib/chatd/key",
                "Welcome"
            ]
        );
        assert_eq!(plan.prepare[0].user, "root");
        assert_eq!(
            plan.prepare[0].creates.as_deref(),
            Some(Path::new("/var/lib/chatd/key"))
        );
        assert_eq!(
            plan.prepare[1].stdin.as_deref(),
            Some(format!("chatd:{}\n", pw.reveal()).as_str())
        );
        assert_eq!(plan.prepare[2].user, "chatd");
        // The secret on a prepare step's input never reaches its Debug form.
        assert!(!format!("{plan:?}").contains(pw.reveal()));

        // A secret in a prepare command line is refused, as in the start command.
        let bad = with.replace("'{motd}']", "'{server-password}']");
        let e = errors(&bad);
        assert!(
            e.iter().any(|m| m.contains("start.prepare[0].command[3]")
                && m.contains("server-password")),
            "{e:?}"
        );
        for (from, to, field) in [
            (
                "/usr/bin/chatd-keygen",
                "chatd-keygen",
                "start.prepare[0].command[0]",
            ),
            (
                "creates: /var/lib/chatd/key",
                "creates: key",
                "start.prepare[0].creates",
            ),
            (
                "user: chatd\n  config",
                "user: Chat D\n  config",
                "start.prepare[2].user",
            ),
            ("- name: chatlog", "- name: chatd", "start.users[1].name"),
            ("home: /var/lib/chatd", "home: ../x", "start.users[0].home"),
            ("owner: chatd", "owner: \"x y\"", "start.config[0].owner"),
        ] {
            assert!(with.contains(from), "{from}");
            let e = errors(&with.replacen(from, to, 1));
            assert!(e.iter().any(|m| m.contains(field)), "{to}: {e:?}");
        }
    }

    #[test]
    fn certificates_render_their_names() {
        let with = GOOD.replace("chatd-data]", "chatd-data, openssl]").replace(
            "  config:\n",
            "  certificates:\n    - key: /var/lib/chatd/tls/key.pem\n      \
             certificate: /var/lib/chatd/tls/cert.pem\n      owner: chatd\n      \
             names: [\"{address}\", \"rooms.{address}\"]\n  config:\n",
        );
        let svc = parse(&with).expect("parses");
        let values = svc.initial_values().unwrap();
        let b = Builtins {
            address: "x.onion",
            target_port: 1,
        };
        let plan = svc.render_start(&values, &b).unwrap();
        assert_eq!(plan.certificates.len(), 1);
        let c = &plan.certificates[0];
        assert_eq!(c.names, ["x.onion", "rooms.x.onion"]);
        assert_eq!(c.key, Path::new("/var/lib/chatd/tls/key.pem"));
        assert_eq!(c.owner, "chatd");
        for (from, to, field) in [
            (
                "names: [\"{address}\", \"rooms.{address}\"]",
                "names: []",
                "start.certificates[0].names",
            ),
            (
                "\"rooms.{address}\"",
                "\"{server-password}\"",
                "start.certificates[0].names[1]",
            ),
            (
                "key: /var/lib/chatd/tls/key.pem",
                "key: tls/key.pem",
                "start.certificates[0].key",
            ),
            (
                "certificate: /var/lib/chatd/tls/cert.pem",
                "certificate: /var/lib/chatd/tls/key.pem",
                "start.certificates[0].certificate",
            ),
        ] {
            assert!(with.contains(from), "{from}");
            let e = errors(&with.replacen(from, to, 1));
            assert!(e.iter().any(|m| m.contains(field)), "{to}: {e:?}");
        }
    }

    #[test]
    fn words_are_names_separated_by_single_spaces() {
        assert!(Chars::Words.fits("alice bob carol"));
        assert!(Chars::Words.fits("alice"));
        for bad in [
            " alice",
            "alice ",
            "alice  bob",
            "alice;bob",
            "a\tb",
            "al$ce",
        ] {
            assert!(!Chars::Words.fits(bad), "{bad:?}");
        }
        assert!(!Chars::Word.fits("alice bob"));
    }

    fn errors(text: &str) -> Vec<String> {
        let errs = parse(text).expect_err("should fail");
        errs.iter()
            .map(|e| {
                let s = e.to_string();
                assert!(!s.contains('\n'), "{s}");
                s
            })
            .collect()
    }

    /// The single error of `text` with `from` replaced by `to`.
    fn error_with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        let errs = errors(&GOOD.replacen(from, to, 1));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn good_file_loads() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.name(), "chat");
        assert_eq!(s.description(), "A chat server");
        assert_eq!(s.client_application(), "Pidgin");
        assert_eq!(s.documentation(), "https://example.org/chat");
        assert_eq!(s.icon_name(), "chat-icon");
        assert_eq!(s.packages(), ["chatd", "chatd-data"]);
        assert_eq!(s.default_target_port(), 6667);
        assert_eq!(s.default_virtual_port(), 6697);
        assert_eq!(s.persistent_paths(), [PathBuf::from("/var/lib/chatd")]);
        assert_eq!(s.start().user(), "chatd");
        assert_eq!(s.start().command().len(), 5);
        assert_eq!(s.start().config()[0].mode(), 0o640);
        assert_eq!(
            s.start().config()[0].path(),
            Path::new("/etc/chatd/chatd.conf")
        );
        let names: Vec<_> = s.options().iter().map(OptionSpec::name).collect();
        assert_eq!(
            names,
            [
                "virtual-port",
                "persistence",
                "autostart",
                "allow-localhost",
                "allow-lan",
                "client-auth",
                "server-password",
                "max-users",
                "motd",
                "cipher",
                "log"
            ]
        );
        assert_eq!(
            s.option("virtual-port").unwrap().default_value(),
            Some(&OptionValue::Port(6697))
        );
        assert_eq!(
            s.option("max-users").unwrap().kind(),
            &OptionKind::Int { min: 1, max: 100 }
        );
        assert_eq!(s.option("server-password").unwrap().default_value(), None);
    }

    #[test]
    fn values_render_into_start_and_connection_info() {
        let s = parse(GOOD).unwrap();
        let mut values = s.initial_values().unwrap();
        let OptionValue::Secret(pw) = values["server-password"].clone() else {
            panic!("not a secret")
        };
        assert_eq!(pw.reveal().len(), 20);
        values.insert(
            "virtual-port".into(),
            s.parse_option("virtual-port", "7000").unwrap(),
        );
        let b = Builtins {
            address: "abc.onion",
            target_port: 6667,
        };
        assert_eq!(
            s.render_connection_info(&values, &b).unwrap(),
            format!("abc.onion:7000 password {}", pw.reveal())
        );
        let plan = s.render_start(&values, &b).unwrap();
        assert_eq!(
            plan.command,
            ["/usr/bin/chatd", "--port", "6667", "--motd", "Welcome"]
        );
        assert_eq!(plan.user, "chatd");
        assert_eq!(
            plan.files[0].contents,
            format!(
                "port = 6667\npassword = {}\nmax = 10\nmotd = Welcome\ncipher = strong\n\
                 onion = abc.onion:7000\n",
                pw.reveal()
            )
        );
        let debug = format!("{plan:?}");
        assert!(!debug.contains(pw.reveal()), "{debug}");
        assert!(debug.contains("0640"), "{debug}");
    }

    #[test]
    fn parse_option_names_the_problem() {
        let s = parse(GOOD).unwrap();
        assert_eq!(
            s.parse_option("allow-lan", "yes").unwrap_err().to_string(),
            "allow-lan takes true or false"
        );
        assert_eq!(
            s.parse_option("max-users", "0").unwrap_err().to_string(),
            "max-users takes an integer from 1 to 100"
        );
        let e = s.parse_option("colour", "red").unwrap_err().to_string();
        assert!(
            e.starts_with("chat has no option colour; its options are: virtual-port, "),
            "{e}"
        );
        assert_eq!(s.parse_option("log", "true"), Ok(OptionValue::Bool(true)));
    }

    #[test]
    fn service_name_rules() {
        assert_eq!(
            error_with("name: chat", "name: Chat"),
            "services/chat.yaml: line 1: field name: \"Chat\" is not a service name: \
             lower-case letters, digits and -, starting with a letter, at most 32 characters"
        );
        assert_eq!(
            error_with("name: chat", "name: talk"),
            "services/chat.yaml: line 1: field name: name \"talk\" differs from the file \
             name \"chat\""
        );
    }

    #[test]
    fn text_fields_are_one_line() {
        assert_eq!(
            error_with("description: A chat server", "description: \"two\\nlines\""),
            "services/chat.yaml: line 2: field description: the text must be one line \
             without control characters (use >- for a folded block)"
        );
        assert_eq!(
            error_with("client_application: Pidgin", "client_application: ''"),
            "services/chat.yaml: line 3: field client_application: the text is empty"
        );
    }

    #[test]
    fn url_and_icon() {
        assert_eq!(
            error_with("https://example.org/chat", "example.org"),
            "services/chat.yaml: line 4: field documentation: \"example.org\" is not an \
             https://, http:// or file:/// URL"
        );
        assert_eq!(
            error_with("icon_name: chat-icon", "icon_name: a/b"),
            "services/chat.yaml: line 5: field icon_name: \"a/b\" is not an icon name: ASCII \
             letters, digits, -, _ and ."
        );
    }

    #[test]
    fn packages() {
        assert_eq!(
            error_with("[chatd, chatd-data]", "[chatd, \"a,b\"]"),
            "services/chat.yaml: line 6: field packages[1]: \"a,b\" is not a Debian package name"
        );
        assert_eq!(
            error_with("[chatd, chatd-data]", "[chatd, chatd]"),
            "services/chat.yaml: line 6: field packages[1]: package \"chatd\" is listed twice"
        );
    }

    #[test]
    fn command_rules() {
        assert_eq!(
            error_with("[/usr/bin/chatd, --port", "[chatd, --port"),
            "services/chat.yaml: line 8: field start.command[0]: the program \"chatd\" is not \
             a fixed absolute path (no placeholders)"
        );
        assert_eq!(
            error_with(
                "command: [/usr/bin/chatd, --port, '{target_port}', --motd, '{motd}']",
                "command: []"
            ),
            "services/chat.yaml: line 8: field start.command: the command is empty; the first \
             element is the program's absolute path"
        );
        assert_eq!(
            error_with("'{motd}']", "'{server-password}']"),
            "services/chat.yaml: line 8: field start.command[4]: the secret server-password \
             may not appear in the command (command lines are visible to every process and \
             get logged); put it in a config file"
        );
        assert_eq!(
            error_with("'{motd}']", "\"a\\0b\"]"),
            "services/chat.yaml: line 8: field start.command[4]: a command argument holds a \
             control character"
        );
        assert_eq!(
            error_with("user: chatd", "user: Chat D"),
            "services/chat.yaml: line 9: field start.user: \"Chat D\" is not a system user \
             name: [a-z_][a-z0-9_-]*, at most 32 characters"
        );
    }

    #[test]
    fn config_rules() {
        assert_eq!(
            error_with("path: /etc/chatd/chatd.conf", "path: etc/chatd.conf"),
            "services/chat.yaml: line 11: field start.config[0].path: \"etc/chatd.conf\" is \
             not a clean absolute path: it does not start with /"
        );
        assert_eq!(
            error_with("mode: \"0640\"", "mode: \"0944\""),
            "services/chat.yaml: line 12: field start.config[0].mode: \"0944\" is not a file \
             mode: three or four octal digits such as \"0640\", at most 0777"
        );
        assert_eq!(
            error_with("mode: \"0640\"", "mode: \"0644\""),
            "services/chat.yaml: line 12: field start.config[0].mode: mode 0644 lets every \
             user read the file, but its template holds the secret server-password; use a \
             mode without the last digit's read bit, such as 0640"
        );
        assert_eq!(
            error_with("      mode: \"0640\"\n", ""),
            "services/chat.yaml: line 11: field start.config[0].mode: mode 0644 (the default) \
             lets every user read the file, but its template holds the secret \
             server-password; use a mode without the last digit's read bit, such as 0640"
        );
        // An unquoted mode is read as the text written, not as a number.
        let s = parse(&GOOD.replace("mode: \"0640\"", "mode: 0600")).unwrap();
        assert_eq!(s.start().config()[0].mode(), 0o600);
        let two = GOOD.replace(
            "    - path: /etc/chatd/chatd.conf",
            "    - path: /etc/x\n      template: x\n    - path: /etc/x",
        );
        let errs = errors(&two);
        assert_eq!(
            errs,
            [
                "services/chat.yaml: line 13: field start.config[1].path: path \"/etc/x\" is \
              listed twice"
            ]
        );
    }

    #[test]
    fn unknown_placeholder_names_its_line() {
        assert_eq!(
            error_with("cipher = {cipher}", "cipher = {ciphr}"),
            "services/chat.yaml: line 18: field start.config[0].template: unknown placeholder \
             {ciphr}; this template may use {address}, {target_port}, {virtual_port}, \
             {virtual-port}, {persistence}, {autostart}, {allow-localhost}, {allow-lan}, \
             {client-auth}, {server-password}, {max-users}, {motd}, {cipher}, {log}"
        );
        let e = error_with("password {server-password}", "password {target_port}");
        assert!(
            e.starts_with(
                "services/chat.yaml: line 43: field connection_info: unknown placeholder \
                 {target_port}; this template may use {address}, {virtual_port}, "
            ),
            "{e}"
        );
        assert_eq!(
            error_with("max = {max-users}", "max = {Max}"),
            "services/chat.yaml: line 16: field start.config[0].template: \"{Max}\" is not a \
             placeholder: write {name} with lower-case letters, digits, - and _, or {{ for a \
             literal {"
        );
    }

    #[test]
    fn ports() {
        assert_eq!(
            error_with("default_target_port: 6667", "default_target_port: 70000"),
            "services/chat.yaml: line 20: field default_target_port: invalid value: integer \
             `70000`, expected a port number from 1 to 65535"
        );
        assert_eq!(
            error_with("default_virtual_port: 6697", "default_virtual_port: 0"),
            "services/chat.yaml: line 21: field default_virtual_port: invalid value: integer \
             `0`, expected a port number from 1 to 65535"
        );
        let e = error_with("default_virtual_port: 6697", "default_virtual_port: http");
        assert!(
            e.starts_with("services/chat.yaml: line 21: field default_virtual_port: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn persistent_paths() {
        assert_eq!(
            error_with("[/var/lib/chatd]", "[/var/lib/../chatd]"),
            "services/chat.yaml: line 22: field persistent_paths[0]: \"/var/lib/../chatd\" is \
             not a clean absolute path: it has an empty, . or .. component"
        );
        assert_eq!(
            error_with("[/var/lib/chatd]", "[/var/lib/chatd, /var/lib/chatd]"),
            "services/chat.yaml: line 22: field persistent_paths[1]: path \"/var/lib/chatd\" \
             is listed twice"
        );
    }

    #[test]
    fn option_names() {
        assert_eq!(
            error_with("name: log\n", "name: Log\n"),
            "services/chat.yaml: line 39: field options[4].name: \"Log\" is not an option \
             name: lower-case letters, digits and -, starting with a letter, at most 32 \
             characters"
        );
        assert_eq!(
            error_with("name: log\n", "name: allow-lan\n"),
            "services/chat.yaml: line 39: field options[4].name: allow-lan is a standard \
             option every service has; a service file may not define it"
        );
        assert_eq!(
            error_with("name: log\n", "name: address\n"),
            "services/chat.yaml: line 39: field options[4].name: address is the name of a \
             built-in placeholder; choose another option name"
        );
        assert_eq!(
            error_with("name: log\n", "name: motd\n"),
            "services/chat.yaml: line 39: field options[4].name: option motd is defined twice"
        );
    }

    #[test]
    fn option_kinds() {
        assert_eq!(
            error_with("{min: 1, max: 100}", "{min: 100, max: 1}"),
            "services/chat.yaml: line 29: field options[1].kind: min 100 is greater than max 1"
        );
        assert_eq!(
            error_with("max_len: 80", "max_len: 0"),
            "services/chat.yaml: line 33: field options[2].kind: max_len must be from 1 to 4096"
        );
        assert_eq!(
            error_with("[fast, strong]", "[]"),
            "services/chat.yaml: line 37: field options[3].kind: an enum needs at least one value"
        );
        assert_eq!(
            error_with("[fast, strong]", "[fast, fast]"),
            "services/chat.yaml: line 37: field options[3].kind: enum value \"fast\" is listed \
             twice"
        );
        assert_eq!(
            error_with("length: 20", "length: 4"),
            "services/chat.yaml: line 26: field options[0].kind: a secret's length must be \
             from 8 to 128"
        );
        let e = error_with("kind: bool", "kind: float");
        assert_eq!(
            e,
            "services/chat.yaml: line 41: field options[4].kind: unknown variant `float`, \
             expected one of bool, int, port, string, enum, secret"
        );
        let e = error_with("{min: 1, max: 100}", "{min: 1, max: 100, step: 2}");
        assert_eq!(
            e,
            "services/chat.yaml: line 29: field options[1].kind.int.step: unknown field \
             `step`, expected one of min, max"
        );
    }

    #[test]
    fn option_defaults() {
        assert_eq!(
            error_with("default: 10", "default: 1000"),
            "services/chat.yaml: line 30: field options[1].default: invalid default: \
             max-users takes an integer from 1 to 100"
        );
        assert_eq!(
            error_with("default: false", "default: yes"),
            "services/chat.yaml: line 42: field options[4].default: invalid default: log \
             takes true or false"
        );
        assert_eq!(
            error_with("default: strong", "default: medium"),
            "services/chat.yaml: line 38: field options[3].default: invalid default: cipher \
             takes one of: fast, strong"
        );
        assert_eq!(
            error_with("    default: false\n", ""),
            "services/chat.yaml: line 39: field options[4]: option log needs a default (only \
             a secret may go without: it is then generated)"
        );
        let with_default = GOOD.replace(
            "kind: {secret: {length: 20}}",
            "kind: {secret: {length: 20}}\n    default: short",
        );
        let errs = errors(&with_default);
        assert_eq!(
            errs,
            [
                "services/chat.yaml: line 27: field options[0].default: invalid default: \
              server-password takes a secret of 8 to 128 characters among ASCII letters, \
              digits and -_.~+/="
            ]
        );
    }

    #[test]
    fn yaml_shape_errors_name_line_and_field() {
        assert_eq!(
            error_with("icon_name: chat-icon", "icon_name: chat-icon\nicon: x"),
            "services/chat.yaml: line 6: field icon: unknown field `icon`, expected one of \
             name, description, client_application, documentation, icon_name, packages, \
             start, default_target_port, default_virtual_port, persistent_paths, options, \
             connection_info"
        );
        assert_eq!(
            error_with("user: chatd", "user: [chatd]"),
            "services/chat.yaml: line 9: field start.user: expected string scalar"
        );
        let e = error_with("connection_info: ", "connection_inf: ");
        assert!(
            e.starts_with("services/chat.yaml: line 43: field connection_inf: unknown field"),
            "{e}"
        );
        assert_eq!(
            error_with("default_target_port: 6667\n", ""),
            "services/chat.yaml: field default_target_port: this required field is missing"
        );
        assert_eq!(
            error_with("  user: chatd\n", ""),
            "services/chat.yaml: field start.user: this required field is missing"
        );
        let e = error_with(
            "packages: [chatd, chatd-data]",
            "packages: [chatd, chatd-data",
        );
        assert!(e.starts_with("services/chat.yaml: line "), "{e}");
    }

    #[test]
    fn several_problems_are_all_reported() {
        let bad = GOOD
            .replace("icon_name: chat-icon", "icon_name: a/b")
            .replace("[chatd, chatd-data]", "[X]")
            .replace("cipher = {cipher}", "cipher = {ciphr}");
        let errs = errors(&bad);
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0777"), Some(0o777));
        for bad in ["", "64", "1777", "0800", "rw-r--r--", "00640"] {
            assert_eq!(parse_mode(bad), None, "{bad}");
        }
    }
}
