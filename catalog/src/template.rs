//! Templates: text with `{name}` placeholders, used for config files, command arguments
//! and the connection info.
//!
//! Syntax, chosen so that config files full of braces (nginx, JSON, …) need few escapes:
//! - `{name}` is a placeholder, `name` being a lower-case letter followed by lower-case
//!   letters, digits, `-` and `_`: an option name (`{server-password}`) or a built-in
//!   (`{address}`, `{target_port}`, `{virtual_port}`).
//! - `{{` is a literal `{`.
//! - A `{` followed by whitespace or at the end of the text is a literal `{` (so
//!   `server {` needs no escape).
//! - Any other `{` is an error: a mistyped placeholder (`{Address}`, `{virtual port}`)
//!   is caught when the file is loaded instead of landing in a config file.
//! - `}` is always literal.
//!
//! Which placeholders a template may use is checked when its service file is loaded
//! (see [`crate::Service`]); rendering then only fails if the caller leaves a value out.

use std::fmt;

use crate::error::{RenderError, TemplateError};
use crate::option::Values;

/// The onion address (`xyz….onion`): in the connection info and config files.
pub const ADDRESS: &str = "address";
/// The port the service listens on in the App VM: in config files and the command.
pub const TARGET_PORT: &str = "target_port";
/// The onion service's port (the `virtual-port` option): anywhere.
pub const VIRTUAL_PORT: &str = "virtual_port";

/// The values of the built-in placeholders that do not come from options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtins<'a> {
    /// The onion address, for `{address}`.
    pub address: &'a str,
    /// The port the service listens on in the App VM, for `{target_port}`.
    pub target_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Placeholder(String),
}

/// A parsed template.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

fn is_placeholder_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

impl Template {
    /// Parses `source` (see the module documentation for the syntax).
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.chars().next() {
                Some('{') => {
                    text.push('{');
                    rest = &after[1..];
                }
                None => {
                    text.push('{');
                    rest = after;
                }
                Some(c) if c.is_whitespace() => {
                    text.push('{');
                    rest = after;
                }
                Some(_) => {
                    let name_len = after
                        .find(|c: char| !is_placeholder_char(c))
                        .unwrap_or(after.len());
                    let name = &after[..name_len];
                    let closed = after[name_len..].starts_with('}');
                    if !closed || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
                        let offset = source.len() - rest.len() + open;
                        return Err(TemplateError::BadPlaceholder {
                            offset,
                            snippet: snippet(&rest[open..]),
                        });
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Placeholder(name.to_string()));
                    rest = &after[name_len + 1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The empty template (stands in for one that did not parse).
    pub(crate) fn empty() -> Template {
        Template {
            source: String::new(),
            parts: Vec::new(),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders' names, in order of appearance (repeated if repeated).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Placeholder(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Whether the template has no placeholder.
    pub fn is_literal(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// Fills the placeholders: built-ins from `builtins` (`{virtual_port}` from the
    /// `virtual-port` option), the others from `values`. Secrets are written out in full:
    /// the result of a template that holds one must not be logged.
    pub fn render(&self, values: &Values, builtins: &Builtins<'_>) -> Result<String, RenderError> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Placeholder(name) => match name.as_str() {
                    ADDRESS => out.push_str(builtins.address),
                    TARGET_PORT => out.push_str(&builtins.target_port.to_string()),
                    _ => {
                        let key = if name == VIRTUAL_PORT {
                            crate::option::VIRTUAL_PORT_OPTION
                        } else {
                            name.as_str()
                        };
                        let value = values
                            .get(key)
                            .ok_or_else(|| RenderError::Missing(name.clone()))?;
                        out.push_str(&value.reveal().to_string());
                    }
                },
            }
        }
        Ok(out)
    }
}

/// A few characters from a bad `{` on, up to the end of its line, for an error message.
fn snippet(from_brace: &str) -> String {
    from_brace
        .chars()
        .take_while(|&c| c != '\n')
        .take(16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::option::{OptionValue, Secret};

    fn names(t: &Template) -> Vec<&str> {
        t.placeholders().collect()
    }

    #[test]
    fn placeholders_and_literals() {
        let t = Template::parse("http://{address}:{virtual_port}/ {{x} }").unwrap();
        assert_eq!(names(&t), vec!["address", "virtual_port"]);
        let t = Template::parse("server {\n  listen {target_port};\n}\n{").unwrap();
        assert_eq!(names(&t), vec!["target_port"]);
        assert!(Template::parse("plain").unwrap().is_literal());
        assert!(Template::parse("").unwrap().is_literal());
        assert!(Template::parse("a {{b}} c").unwrap().is_literal());
        let t = Template::parse("{server-password}{x_1}").unwrap();
        assert_eq!(names(&t), vec!["server-password", "x_1"]);
    }

    #[test]
    fn bad_placeholders_are_errors() {
        for (text, offset, snippet) in [
            ("x {Address}", 2, "{Address}"),
            ("{virtual port}", 0, "{virtual port}"),
            ("a\n{}", 2, "{}"),
            ("{1x}", 0, "{1x}"),
            ("{unclosed\nnext", 0, "{unclosed"),
            ("{\"json\": 1}", 0, "{\"json\": 1}"),
        ] {
            let err = Template::parse(text).unwrap_err();
            assert_eq!(
                err,
                TemplateError::BadPlaceholder {
                    offset,
                    snippet: snippet.to_string()
                },
                "{text:?}"
            );
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.contains("is not a placeholder"), "{msg}");
        }
    }

    #[test]
    fn render_fills_everything() {
        let t = Template::parse("{address}:{virtual_port} {target_port} {pw} {{ {on}").unwrap();
        let mut values = Values::new();
        values.insert("virtual-port".into(), OptionValue::Port(8080));
        values.insert(
            "pw".into(),
            OptionValue::Secret(Secret::new_unchecked("hunter22")),
        );
        values.insert("on".into(), OptionValue::Bool(true));
        let b = Builtins {
            address: "abc.onion",
            target_port: 80,
        };
        assert_eq!(
            t.render(&values, &b).unwrap(),
            "abc.onion:8080 80 hunter22 { true"
        );
        values.remove("pw");
        assert_eq!(
            t.render(&values, &b).unwrap_err().to_string(),
            "no value for the placeholder {pw}"
        );
    }
}
