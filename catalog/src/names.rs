//! The rules for the names, paths and one-line texts a service file holds.
//!
//! Each check returns a plain `bool` or the reason as a short phrase; the caller turns it
//! into a [`Problem`](crate::Problem) located in the file.

/// Longest service or option name.
pub const MAX_NAME_LEN: usize = 32;

/// A service or option name: `[a-z][a-z0-9-]*`, at most [`MAX_NAME_LEN`] characters.
pub(crate) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Debian policy 5.6.1: lower-case letters, digits, `+`, `-`, `.`; at least two
/// characters; starting with a letter or digit. The same rule as the image builder's
/// `is_package_name` (images/src/services.rs), which reads the same files.
pub fn is_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A system user name as Debian's adduser accepts it by default: `[a-z_][a-z0-9_-]*`,
/// at most 32 characters.
pub(crate) fn is_user_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// A freedesktop icon name: ASCII letters, digits, `-`, `_`, `.`, starting with a letter
/// or digit, at most 64 characters.
pub(crate) fn is_icon_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A documentation URL: `https://host…`, `http://host…` or `file:///path`, without
/// spaces or control characters.
pub(crate) fn is_url(s: &str) -> bool {
    let rest = ["https://", "http://", "file:///"]
        .iter()
        .find_map(|scheme| s.strip_prefix(scheme));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && s.len() <= 2048
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Why `s` is not a clean absolute path below `/`, if it is not: it must start with `/`,
/// name something below `/`, and have no empty, `.` or `..` component (so no `//` and no
/// trailing `/`), no control characters, and at most 4096 bytes.
pub(crate) fn absolute_path_problem(s: &str) -> Option<&'static str> {
    let Some(rest) = s.strip_prefix('/') else {
        return Some("does not start with /");
    };
    if rest.is_empty() {
        return Some("is / itself");
    }
    if s.len() > 4096 {
        return Some("is longer than 4096 bytes");
    }
    if s.chars().any(char::is_control) {
        return Some("holds a control character");
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("has an empty, . or .. component");
    }
    None
}

/// Why `s` is not one non-empty line of text, if it is not.
pub(crate) fn one_line_problem(s: &str) -> Option<&'static str> {
    if s.trim().is_empty() {
        Some("is empty")
    } else if s.chars().any(char::is_control) {
        Some("must be one line without control characters (use >- for a folded block)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["nginx", "a", "mumble-server", "x1", &"a".repeat(32)] {
            assert!(is_name(good), "{good}");
        }
        for bad in [
            "",
            "Nginx",
            "1abc",
            "-a",
            "a_b",
            "a.b",
            "é",
            &"a".repeat(33),
        ] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn package_names() {
        for good in ["nginx-light", "libfoo2.0+x", "0ad"] {
            assert!(is_package_name(good), "{good}");
        }
        for bad in ["a", "--x", "a,b", "Nginx", "a b"] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }

    #[test]
    fn user_names() {
        for good in ["root", "www-data", "_apt", "mumble-server", "debian-tor"] {
            assert!(is_user_name(good), "{good}");
        }
        for bad in ["", "Root", "1x", "-x", "a b", "a:b", &"a".repeat(33)] {
            assert!(!is_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn icon_names() {
        assert!(is_icon_name("text-html"));
        assert!(is_icon_name("org.gnome.Gobby"));
        for bad in ["", "-x", "a/b", "a b", &"a".repeat(65)] {
            assert!(!is_icon_name(bad), "{bad}");
        }
    }

    #[test]
    fn urls() {
        for good in [
            "https://nginx.org/en/docs/",
            "http://example.org",
            "file:///usr/share/doc/tails/website/doc/tails_server/mumble.en.html",
        ] {
            assert!(is_url(good), "{good}");
        }
        for bad in [
            "",
            "nginx.org",
            "https://",
            "https:///x",
            "file://host/x",
            "ftp://x",
            "https://a b",
            "https://a\n",
        ] {
            assert!(!is_url(bad), "{bad}");
        }
    }

    #[test]
    fn absolute_paths() {
        assert_eq!(absolute_path_problem("/var/www/tails-server"), None);
        assert_eq!(absolute_path_problem("/etc/a.conf"), None);
        assert_eq!(
            absolute_path_problem("var/www"),
            Some("does not start with /")
        );
        assert_eq!(absolute_path_problem("/"), Some("is / itself"));
        for bad in ["/a//b", "/a/", "/a/../b", "/./a", "/a/.."] {
            assert_eq!(
                absolute_path_problem(bad),
                Some("has an empty, . or .. component"),
                "{bad}"
            );
        }
        assert_eq!(
            absolute_path_problem("/a\nb"),
            Some("holds a control character")
        );
        assert_eq!(
            absolute_path_problem(&format!("/{}", "a".repeat(4096))),
            Some("is longer than 4096 bytes")
        );
    }

    #[test]
    fn one_line_texts() {
        assert_eq!(one_line_problem("A web server"), None);
        assert_eq!(one_line_problem("  "), Some("is empty"));
        assert!(one_line_problem("two\nlines").is_some());
        assert!(one_line_problem("tab\there").is_some());
    }
}
