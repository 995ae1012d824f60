//! Service options: their kinds ([`OptionKind`]), their specification in a service file
//! ([`OptionSpec`]), the standard options every service has, and their values
//! ([`OptionValue`]), parsed strictly from text (the CLI's `set-option NAME VALUE`, a
//! default in a service file) and displayed without ever showing a secret unless asked
//! ([`OptionValue::reveal`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

use serde::Deserialize;

use crate::error::OptionError;

/// The onion service's port.
pub const VIRTUAL_PORT_OPTION: &str = "virtual-port";
/// Whether the service's data (its persistent paths) is kept on the persistent volume.
pub const PERSISTENCE_OPTION: &str = "persistence";
/// Whether the service starts when Tails Server starts.
pub const AUTOSTART_OPTION: &str = "autostart";
/// Whether the service is also reachable from this computer (127.0.0.1).
pub const ALLOW_LOCALHOST_OPTION: &str = "allow-localhost";
/// Whether the service is also reachable from the local network.
pub const ALLOW_LAN_OPTION: &str = "allow-lan";
/// Whether only clients holding a client authorization key reach the onion service.
pub const CLIENT_AUTH_OPTION: &str = "client-auth";

/// The standard options every service has, in the order they are listed.
pub const STANDARD_OPTIONS: [&str; 6] = [
    VIRTUAL_PORT_OPTION,
    PERSISTENCE_OPTION,
    AUTOSTART_OPTION,
    ALLOW_LOCALHOST_OPTION,
    ALLOW_LAN_OPTION,
    CLIENT_AUTH_OPTION,
];

/// Shortest secret (set by hand or generated).
pub const SECRET_MIN_LEN: usize = 8;
/// Longest secret.
pub const SECRET_MAX_LEN: usize = 128;
/// The characters a secret may hold besides ASCII letters and digits: none of them needs
/// quoting in the usual config file syntaxes or a shell.
pub const SECRET_PUNCTUATION: &str = "-_.~+/=";
/// Largest `max_len` of a string option.
pub const STRING_MAX_LEN: usize = 4096;

/// The values of a service's options, by option name.
pub type Values = BTreeMap<String, OptionValue>;

/// The characters a string option allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chars {
    /// One line of text: any character but control characters and line separators
    /// (so a value cannot add a line to a config file).
    #[default]
    Text,
    /// ASCII letters, digits, `-`, `_` and `.`.
    Word,
    /// Words (as [`Chars::Word`]) separated by single spaces: a list of names.
    Words,
}

impl Chars {
    /// Whether `c` is allowed.
    pub fn allows(self, c: char) -> bool {
        match self {
            Chars::Text => !c.is_control() && c != '\u{2028}' && c != '\u{2029}',
            Chars::Word => c.is_ascii_alphanumeric() || "-_.".contains(c),
            Chars::Words => c.is_ascii_alphanumeric() || "-_. ".contains(c),
        }
    }
}

impl Chars {
    /// Whether the whole of `text` is made of these characters (and, for
    /// [`Chars::Words`], has no leading, trailing or double space).
    pub fn fits(self, text: &str) -> bool {
        text.chars().all(|c| self.allows(c))
            && (self != Chars::Words
                || (!text.starts_with(' ') && !text.ends_with(' ') && !text.contains("  ")))
    }
}

impl fmt::Display for Chars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Chars::Text => "one-line text",
            Chars::Word => "ASCII letters, digits, -, _ and .",
            Chars::Words => "words of ASCII letters, digits, -, _ and . separated by single spaces",
        })
    }
}

/// What values an option takes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionKind {
    /// `true` or `false`.
    Bool,
    /// An integer from `min` to `max` (inclusive).
    Int {
        /// The smallest value.
        min: i64,
        /// The largest value.
        max: i64,
    },
    /// A port number, 1 to 65535.
    Port,
    /// A text of at most `max_len` characters among `chars`.
    String {
        /// The longest value, in characters.
        max_len: usize,
        /// The characters allowed.
        chars: Chars,
    },
    /// One of `values`.
    Enum {
        /// The values, in the order the file lists them.
        values: Vec<String>,
    },
    /// A password or key, never displayed unless asked for; generated with `length`
    /// random letters and digits when the service file gives no default.
    Secret {
        /// The length of a generated secret.
        length: usize,
    },
}

impl OptionKind {
    /// Whether values of this kind are secrets.
    pub fn is_secret(&self) -> bool {
        matches!(self, OptionKind::Secret { .. })
    }

    /// The kind's name as written in a service file.
    pub fn name(&self) -> &'static str {
        match self {
            OptionKind::Bool => "bool",
            OptionKind::Int { .. } => "int",
            OptionKind::Port => "port",
            OptionKind::String { .. } => "string",
            OptionKind::Enum { .. } => "enum",
            OptionKind::Secret { .. } => "secret",
        }
    }
}

/// One option of a service: a standard one or one its file defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSpec {
    name: String,
    description: String,
    kind: OptionKind,
    /// `None` only for a secret (then generated); the loader guarantees it.
    default: Option<OptionValue>,
    standard: bool,
}

impl OptionSpec {
    pub(crate) fn new(
        name: &str,
        description: &str,
        kind: OptionKind,
        default: Option<OptionValue>,
        standard: bool,
    ) -> Self {
        Self {
            name: name.to_string(),
            description: description.to_string(),
            kind,
            default,
            standard,
        }
    }

    /// The option's name, as used on the command line (`allow-lan`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line describing the option.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// What values it takes.
    pub fn kind(&self) -> &OptionKind {
        &self.kind
    }

    /// The default value; `None` for a secret that is generated instead.
    pub fn default_value(&self) -> Option<&OptionValue> {
        self.default.as_ref()
    }

    /// Whether this is one of the [`STANDARD_OPTIONS`] every service has.
    pub fn is_standard(&self) -> bool {
        self.standard
    }

    /// The value a freshly enabled service starts with: the default, or for a secret
    /// without one, a new random secret (from `/dev/urandom`).
    pub fn initial_value(&self) -> std::io::Result<OptionValue> {
        match (&self.default, &self.kind) {
            (Some(value), _) => Ok(value.clone()),
            (None, OptionKind::Secret { length }) => {
                Ok(OptionValue::Secret(Secret::generate(*length)?))
            }
            // The loader rejects a non-secret option without a default, so this is only
            // reachable through a bug; report it rather than panic.
            (None, _) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("option {} has no default", self.name),
            )),
        }
    }
}

/// The standard options of a service whose default virtual port is `default_virtual_port`.
pub(crate) fn standard_options(default_virtual_port: u16) -> Vec<OptionSpec> {
    let b = |name, description, default| {
        OptionSpec::new(
            name,
            description,
            OptionKind::Bool,
            Some(OptionValue::Bool(default)),
            true,
        )
    };
    vec![
        OptionSpec::new(
            VIRTUAL_PORT_OPTION,
            "Port of the onion service that clients connect to",
            OptionKind::Port,
            Some(OptionValue::Port(default_virtual_port)),
            true,
        ),
        b(
            PERSISTENCE_OPTION,
            "Keep the service's data on the persistent volume",
            false,
        ),
        b(
            AUTOSTART_OPTION,
            "Start the service when Tails Server starts",
            false,
        ),
        b(
            ALLOW_LOCALHOST_OPTION,
            "Also reach the service from this computer (127.0.0.1)",
            false,
        ),
        b(
            ALLOW_LAN_OPTION,
            "Also reach the service from the local network",
            false,
        ),
        b(
            CLIENT_AUTH_OPTION,
            "Only clients holding a client authorization key reach the onion service",
            true,
        ),
    ]
}

/// A secret: [`fmt::Debug`] does not show it; [`Secret::reveal`] does.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What a secret displays as.
pub const HIDDEN: &str = "<hidden>";

impl Secret {
    /// Wraps `s` without checking it (tests).
    #[cfg(test)]
    pub(crate) fn new_unchecked(s: &str) -> Self {
        Secret(s.to_string())
    }

    /// The secret itself. Pass it on (into a config file, to the person who asked), but
    /// never into a log.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// `length` random ASCII letters and digits from `/dev/urandom`: what a
    /// secret option without a value gets, and what the GUI's "Regenerate"
    /// proposes.
    pub fn generate(length: usize) -> std::io::Result<Secret> {
        const ALPHABET: &[u8; 62] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut urandom = std::fs::File::open("/dev/urandom")?;
        let mut out = String::with_capacity(length);
        let mut buf = [0u8; 64];
        while out.len() < length {
            urandom.read_exact(&mut buf)?;
            // Rejection sampling: 248 = 4 × 62, so every letter is equally likely.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if out.len() < length {
                    out.push(char::from(ALPHABET[usize::from(b % 62)]));
                }
            }
        }
        Ok(Secret(out))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({HIDDEN})")
    }
}

fn is_secret_text(s: &str) -> bool {
    (SECRET_MIN_LEN..=SECRET_MAX_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || SECRET_PUNCTUATION.contains(c))
}

/// The value of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    /// Of a bool option.
    Bool(bool),
    /// Of an int option.
    Int(i64),
    /// Of a port option.
    Port(u16),
    /// Of a string or enum option.
    String(String),
    /// Of a secret option.
    Secret(Secret),
}

impl OptionValue {
    /// Parses `text` as a value of `spec`, strictly: a bool is `true` or `false` (not
    /// `yes`), an int or port has no surrounding spaces, and so on. The error names the
    /// option and what it takes, never the text.
    pub fn parse(spec: &OptionSpec, text: &str) -> Result<OptionValue, OptionError> {
        parse_kind(&spec.name, &spec.kind, text)
    }

    /// Displays the value with a secret in full (plain [`fmt::Display`] shows
    /// [`HIDDEN`] instead). What it displays parses back to the same value.
    pub fn reveal(&self) -> Reveal<'_> {
        Reveal(self)
    }
}

/// Parses `text` as a value of an option `name` of kind `kind`.
pub(crate) fn parse_kind(
    name: &str,
    kind: &OptionKind,
    text: &str,
) -> Result<OptionValue, OptionError> {
    let option = name.to_string();
    match kind {
        OptionKind::Bool => match text {
            "true" => Ok(OptionValue::Bool(true)),
            "false" => Ok(OptionValue::Bool(false)),
            _ => Err(OptionError::Bool { option }),
        },
        OptionKind::Int { min, max } => text
            .parse::<i64>()
            .ok()
            .filter(|v| (*min..=*max).contains(v))
            .map(OptionValue::Int)
            .ok_or(OptionError::Int {
                option,
                min: *min,
                max: *max,
            }),
        OptionKind::Port => text
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .map(OptionValue::Port)
            .ok_or(OptionError::Port { option }),
        OptionKind::String { max_len, chars } => {
            if text.chars().count() <= *max_len && chars.fits(text) {
                Ok(OptionValue::String(text.to_string()))
            } else {
                Err(OptionError::String {
                    option,
                    max_len: *max_len,
                    chars: *chars,
                })
            }
        }
        OptionKind::Enum { values } => {
            if values.iter().any(|v| v == text) {
                Ok(OptionValue::String(text.to_string()))
            } else {
                Err(OptionError::Enum {
                    option,
                    values: values.clone(),
                })
            }
        }
        OptionKind::Secret { .. } => {
            if is_secret_text(text) {
                Ok(OptionValue::Secret(Secret(text.to_string())))
            } else {
                Err(OptionError::Secret { option })
            }
        }
    }
}

impl fmt::Display for OptionValue {
    /// The value as text, with a secret shown as [`HIDDEN`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Secret(_) => f.write_str(HIDDEN),
            other => fmt::Display::fmt(&other.reveal(), f),
        }
    }
}

/// An [`OptionValue`] displayed with a secret in full; see [`OptionValue::reveal`].
pub struct Reveal<'a>(&'a OptionValue);

impl fmt::Display for Reveal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            OptionValue::Bool(b) => write!(f, "{b}"),
            OptionValue::Int(i) => write!(f, "{i}"),
            OptionValue::Port(p) => write!(f, "{p}"),
            OptionValue::String(s) => f.write_str(s),
            OptionValue::Secret(s) => f.write_str(s.reveal()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(name: &str, kind: OptionKind) -> OptionSpec {
        OptionSpec::new(name, "test", kind, None, false)
    }

    fn err(name: &str, kind: OptionKind, text: &str) -> String {
        OptionValue::parse(&spec(name, kind), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bool_is_true_or_false_only() {
        let s = spec("allow-lan", OptionKind::Bool);
        assert_eq!(OptionValue::parse(&s, "true"), Ok(OptionValue::Bool(true)));
        assert_eq!(
            OptionValue::parse(&s, "false"),
            Ok(OptionValue::Bool(false))
        );
        for bad in ["yes", "no", "True", "1", "", " true"] {
            assert_eq!(
                err("allow-lan", OptionKind::Bool, bad),
                "allow-lan takes true or false"
            );
        }
    }

    #[test]
    fn int_within_bounds() {
        let kind = OptionKind::Int { min: -5, max: 100 };
        let s = spec("max-users", kind.clone());
        assert_eq!(OptionValue::parse(&s, "-5"), Ok(OptionValue::Int(-5)));
        assert_eq!(OptionValue::parse(&s, "100"), Ok(OptionValue::Int(100)));
        for bad in ["101", "-6", "1.5", "ten", "", " 5", "99999999999999999999"] {
            assert_eq!(
                err("max-users", kind.clone(), bad),
                "max-users takes an integer from -5 to 100"
            );
        }
    }

    #[test]
    fn port_is_1_to_65535() {
        let s = spec("virtual-port", OptionKind::Port);
        assert_eq!(OptionValue::parse(&s, "1"), Ok(OptionValue::Port(1)));
        assert_eq!(
            OptionValue::parse(&s, "65535"),
            Ok(OptionValue::Port(65535))
        );
        for bad in ["0", "65536", "-1", "http", ""] {
            assert_eq!(
                err("virtual-port", OptionKind::Port, bad),
                "virtual-port takes a port number from 1 to 65535"
            );
        }
    }

    #[test]
    fn string_length_and_chars() {
        let text = OptionKind::String {
            max_len: 5,
            chars: Chars::Text,
        };
        let s = spec("motd", text.clone());
        assert_eq!(
            OptionValue::parse(&s, "héllo"),
            Ok(OptionValue::String("héllo".into()))
        );
        assert_eq!(
            OptionValue::parse(&s, ""),
            Ok(OptionValue::String("".into()))
        );
        for bad in ["toolong", "a\nb", "a\tb", "a\u{2028}"] {
            assert_eq!(
                err("motd", text.clone(), bad),
                "motd takes at most 5 characters of one-line text"
            );
        }
        let word = OptionKind::String {
            max_len: 10,
            chars: Chars::Word,
        };
        assert!(OptionValue::parse(&spec("room", word.clone()), "a-b_c.D9").is_ok());
        assert_eq!(
            err("room", word, "a b"),
            "room takes at most 10 characters of ASCII letters, digits, -, _ and ."
        );
    }

    #[test]
    fn enum_is_one_of_its_values() {
        let kind = OptionKind::Enum {
            values: vec!["off".into(), "on".into()],
        };
        let s = spec("directory-listing", kind.clone());
        assert_eq!(
            OptionValue::parse(&s, "on"),
            Ok(OptionValue::String("on".into()))
        );
        assert_eq!(
            err("directory-listing", kind, "yes"),
            "directory-listing takes one of: off, on"
        );
    }

    #[test]
    fn secret_is_checked_and_never_echoed() {
        let kind = OptionKind::Secret { length: 20 };
        let s = spec("server-password", kind.clone());
        let v = OptionValue::parse(&s, "correct-horse.battery").unwrap();
        assert_eq!(v.to_string(), HIDDEN);
        assert!(!format!("{v:?}").contains("horse"), "{v:?}");
        assert_eq!(v.reveal().to_string(), "correct-horse.battery");
        for bad in [
            "short",
            "has space inside",
            "quote\"inside",
            &"a".repeat(129),
        ] {
            let msg = err("server-password", kind.clone(), bad);
            assert_eq!(
                msg,
                "server-password takes a secret of 8 to 128 characters among ASCII letters, \
                 digits and -_.~+/="
            );
        }
    }

    #[test]
    fn generated_secrets_are_random_and_valid() {
        let spec = spec("pw", OptionKind::Secret { length: 24 });
        let a = spec.initial_value().unwrap();
        let b = spec.initial_value().unwrap();
        assert_ne!(a, b);
        let OptionValue::Secret(s) = &a else {
            panic!("{a:?}")
        };
        assert_eq!(s.reveal().len(), 24);
        assert!(s.reveal().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(OptionValue::parse(&spec, s.reveal()), Ok(a.clone()));
    }

    #[test]
    fn standard_options_defaults() {
        let std = standard_options(8080);
        let names: Vec<_> = std.iter().map(OptionSpec::name).collect();
        assert_eq!(names, STANDARD_OPTIONS);
        let value = |n: &str| {
            std.iter()
                .find(|o| o.name() == n)
                .and_then(|o| o.default_value().cloned())
        };
        assert_eq!(value("virtual-port"), Some(OptionValue::Port(8080)));
        assert_eq!(value("client-auth"), Some(OptionValue::Bool(true)));
        for n in ["persistence", "autostart", "allow-localhost", "allow-lan"] {
            assert_eq!(value(n), Some(OptionValue::Bool(false)), "{n}");
        }
        assert!(std.iter().all(OptionSpec::is_standard));
    }

    /// A kind and a value valid for it.
    fn kind_and_value() -> impl Strategy<Value = (OptionKind, OptionValue)> {
        let int = (any::<i64>(), any::<i64>()).prop_flat_map(|(a, b)| {
            let (min, max) = (a.min(b), a.max(b));
            (min..=max).prop_map(move |v| (OptionKind::Int { min, max }, OptionValue::Int(v)))
        });
        let text = (1usize..64, any::<bool>()).prop_flat_map(|(max_len, word)| {
            let (chars, re) = if word {
                (Chars::Word, format!("[A-Za-z0-9._-]{{0,{max_len}}}"))
            } else {
                (
                    Chars::Text,
                    format!("[^\\p{{Cc}}\u{2028}\u{2029}]{{0,{max_len}}}"),
                )
            };
            proptest::string::string_regex(&re)
                .expect("a valid regex")
                .prop_map(move |s| {
                    (
                        OptionKind::String { max_len, chars },
                        OptionValue::String(s),
                    )
                })
        });
        let enumeration = proptest::collection::btree_set("[a-z0-9 ]{1,12}", 1..6)
            .prop_flat_map(|set| {
                let values: Vec<String> = set.into_iter().collect();
                let n = values.len();
                (Just(values), 0..n)
            })
            .prop_map(|(values, i)| {
                let v = OptionValue::String(values[i].clone());
                (OptionKind::Enum { values }, v)
            });
        let secret = "[A-Za-z0-9_.~+/=-]{8,128}".prop_map(|s| {
            (
                OptionKind::Secret { length: 20 },
                OptionValue::Secret(Secret(s)),
            )
        });
        prop_oneof![
            any::<bool>().prop_map(|b| (OptionKind::Bool, OptionValue::Bool(b))),
            int,
            (1u16..).prop_map(|p| (OptionKind::Port, OptionValue::Port(p))),
            text,
            enumeration,
            secret,
        ]
    }

    proptest! {
        #[test]
        fn parse_reveal_round_trip((kind, value) in kind_and_value()) {
            let spec = spec("opt", kind);
            let text = value.reveal().to_string();
            prop_assert_eq!(OptionValue::parse(&spec, &text), Ok(value.clone()));
            if spec.kind().is_secret() {
                prop_assert_eq!(value.to_string(), HIDDEN);
                let debug = format!("{:?}", value);
                prop_assert!(!debug.contains(&text), "{}", debug);
            } else {
                prop_assert_eq!(value.to_string(), text);
            }
        }

        #[test]
        fn whatever_parses_displays_back((kind, _) in kind_and_value(), text in ".{0,40}") {
            let spec = spec("opt", kind);
            if let Ok(value) = OptionValue::parse(&spec, &text) {
                let again = OptionValue::parse(&spec, &value.reveal().to_string());
                prop_assert_eq!(again, Ok(value));
            }
        }
    }
}
