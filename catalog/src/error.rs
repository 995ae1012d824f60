//! The catalog's error types.
//!
//! - [`LoadError`]: one problem in one service file, displayed on one line as
//!   `services/foo.yaml: line 7: field default_target_port: <problem>` (the line and the
//!   field are left out when unknown). Its [`Problem`] says what is wrong.
//! - [`OptionError`]: a value given for an option (on the command line, or as a default
//!   in a service file) does not fit the option's kind. It never contains the value, so
//!   a mistyped secret is not echoed into a log.
//! - [`TemplateError`]: a template's syntax is wrong (found when the file is loaded).
//! - [`RenderError`]: a template names a value the caller did not supply.
//!
//! Each message is complete on one line, so none of these errors reports a `source()`
//! (an error reporter would print its message twice).

use std::path::{Path, PathBuf};

use crate::option::Chars;

/// One problem in one service file, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {problem}", .file.display(), where_suffix(*.line, .field.as_deref()))]
pub struct LoadError {
    file: PathBuf,
    line: Option<u64>,
    field: Option<String>,
    /// Boxed: a `Result<_, LoadError>` stays small. Not a `source()`: the message
    /// already includes it, and error reporters would print it twice.
    problem: Box<Problem>,
}

fn where_suffix(line: Option<u64>, field: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(line) = line {
        s.push_str(&format!(": line {line}"));
    }
    if let Some(field) = field {
        s.push_str(&format!(": field {field}"));
    }
    s
}

impl LoadError {
    pub(crate) fn new(
        file: &Path,
        line: Option<u64>,
        field: Option<String>,
        problem: Problem,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            line: line.filter(|&l| l > 0),
            field: field.filter(|f| !f.is_empty()),
            problem: Box::new(problem),
        }
    }

    /// The service file (or, if the directory itself could not be read, the directory).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The line in the file (1-based), when known.
    pub fn line(&self) -> Option<u64> {
        self.line
    }

    /// The field, as a path like `options[1].default`, when known.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What is wrong.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

/// What is wrong in a service file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The file (or the directory) could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),

    /// The file is larger than any service description needs to be.
    #[error("the file has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The YAML is malformed or does not have the expected shape: wrong type, unknown
    /// field, missing field, … (the message is serde-saphyr's, without its location).
    #[error("{0}")]
    Yaml(String),

    /// A required field is missing.
    #[error("this required field is missing")]
    MissingField,

    /// The `name:` is not the file name without its extension.
    #[error("name {name:?} differs from the file name {stem:?}")]
    NameNotStem {
        /// The `name:`.
        name: String,
        /// The file name without its extension.
        stem: String,
    },

    /// Two files define the same service (`foo.yaml` and `foo.yml`); neither is loaded.
    #[error("service {name:?} is defined again in {}; neither file is loaded", .other.display())]
    DuplicateService {
        /// The service name.
        name: String,
        /// The other file.
        other: PathBuf,
    },

    /// Not a service name.
    #[error(
        "{0:?} is not a service name: lower-case letters, digits and -, starting with a \
         letter, at most 32 characters"
    )]
    ServiceName(String),

    /// A description or application name is empty or not one line.
    #[error("the text {0}")]
    Text(&'static str),

    /// Not a documentation URL.
    #[error("{0:?} is not an https://, http:// or file:/// URL")]
    Url(String),

    /// Not an icon name.
    #[error("{0:?} is not an icon name: ASCII letters, digits, -, _ and .")]
    IconName(String),

    /// Not a Debian package name.
    #[error("{0:?} is not a Debian package name")]
    PackageName(String),

    /// A package is listed twice.
    #[error("package {0:?} is listed twice")]
    DuplicatePackage(String),

    /// Not a clean absolute path.
    #[error("{path:?} is not a clean absolute path: it {why}")]
    Path {
        /// The path.
        path: String,
        /// Why not.
        why: &'static str,
    },

    /// A path is listed twice.
    #[error("path {0:?} is listed twice")]
    DuplicatePath(String),

    /// `start.command` is empty.
    #[error("the command is empty; the first element is the program's absolute path")]
    EmptyCommand,

    /// A command argument holds a control character (or NUL, which argv cannot carry).
    #[error("a command argument holds a control character")]
    CommandControl,

    /// `start.command`'s first element is not a fixed absolute path.
    #[error("the program {0:?} is not a fixed absolute path (no placeholders)")]
    Program(String),

    /// Not a system user name.
    #[error("{0:?} is not a system user name: [a-z_][a-z0-9_-]*, at most 32 characters")]
    UserName(String),

    /// Certificates are made with the App VM's openssl.
    #[error("certificates are made with openssl: add openssl to packages")]
    CertificatesNeedOpenssl,

    /// A certificate without a name.
    #[error("a certificate needs at least one name (e.g. \"{{address}}\")")]
    NoNames,

    /// `start.users` names a user twice.
    #[error("the user {0:?} is listed twice")]
    DuplicateUser(String),

    /// Not a file mode.
    #[error("{0:?} is not a file mode: three or four octal digits such as \"0640\", at most 0777")]
    Mode(String),

    /// A config file holding a secret would be readable by every user of the App VM.
    #[error(
        "mode {mode} lets every user read the file, but its template holds the secret \
         {secret}; use a mode without the last digit's read bit, such as 0640"
    )]
    SecretReadable {
        /// The mode as written.
        mode: String,
        /// The secret option.
        secret: String,
    },

    /// Not an option name.
    #[error(
        "{0:?} is not an option name: lower-case letters, digits and -, starting with a \
         letter, at most 32 characters"
    )]
    OptionName(String),

    /// A service file may not define a standard option.
    #[error("{0} is a standard option every service has; a service file may not define it")]
    StandardOption(String),

    /// The name is a built-in template placeholder.
    #[error("{0} is the name of a built-in placeholder; choose another option name")]
    ReservedOptionName(String),

    /// Two options have the same name.
    #[error("option {0} is defined twice")]
    DuplicateOption(String),

    /// The kind's parameters are inconsistent (min > max, no enum values, …).
    #[error("{0}")]
    Kind(String),

    /// Every option but a secret needs a default.
    #[error("option {0} needs a default (only a secret may go without: it is then generated)")]
    MissingDefault(String),

    /// The default does not fit the option's kind.
    #[error("invalid default: {0}")]
    Default(OptionError),

    /// A template's syntax is wrong.
    #[error(transparent)]
    Template(#[from] TemplateError),

    /// A template names something that is not there.
    #[error("unknown placeholder {{{name}}}; this template may use {allowed}")]
    UnknownPlaceholder {
        /// The placeholder's name.
        name: String,
        /// What the template may use, as a list for the message.
        allowed: String,
    },

    /// A secret may not be passed on a command line.
    #[error(
        "the secret {0} may not appear in the command (command lines are visible to every \
         process and get logged); put it in a config file"
    )]
    SecretInCommand(String),
}

/// A value does not fit an option's kind. Never contains the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A bool option was given something else than `true` or `false`.
    #[error("{option} takes true or false")]
    Bool {
        /// The option's name.
        option: String,
    },

    /// An int option was given something else than an integer within its bounds.
    #[error("{option} takes an integer from {min} to {max}")]
    Int {
        /// The option's name.
        option: String,
        /// The smallest value.
        min: i64,
        /// The largest value.
        max: i64,
    },

    /// A port option was given something else than a port number.
    #[error("{option} takes a port number from 1 to 65535")]
    Port {
        /// The option's name.
        option: String,
    },

    /// A string option was given a too long text or one with characters not allowed.
    #[error("{option} takes at most {max_len} characters of {chars}")]
    String {
        /// The option's name.
        option: String,
        /// The longest value, in characters.
        max_len: usize,
        /// The characters allowed.
        chars: Chars,
    },

    /// An enum option was given something else than one of its values.
    #[error("{option} takes one of: {}", .values.join(", "))]
    Enum {
        /// The option's name.
        option: String,
        /// The values it takes.
        values: Vec<String>,
    },

    /// A secret option was given a value too short, too long or with other characters.
    #[error(
        "{option} takes a secret of {} to {} characters among ASCII letters, digits and {}",
        crate::option::SECRET_MIN_LEN,
        crate::option::SECRET_MAX_LEN,
        crate::option::SECRET_PUNCTUATION
    )]
    Secret {
        /// The option's name.
        option: String,
    },

    /// The service has no such option.
    #[error("{service} has no option {option}; its options are: {}", .known.join(", "))]
    Unknown {
        /// The service.
        service: String,
        /// The name asked for.
        option: String,
        /// The options it has.
        known: Vec<String>,
    },
}

/// A template's syntax is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` followed by something else than whitespace, `{` or `name}`.
    #[error(
        "{snippet:?} is not a placeholder: write {{name}} with lower-case letters, digits, \
         - and _, or {{{{ for a literal {{"
    )]
    BadPlaceholder {
        /// Byte offset of the `{` in the template.
        offset: usize,
        /// The text from the `{` on (at most a few characters, up to the end of the line).
        snippet: String,
    },
}

/// A template names a value the caller did not supply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// No value for this placeholder.
    #[error("no value for the placeholder {{{0}}}")]
    Missing(String),
}
