//! At boot: whether Tails Server starts at all, the greeter's "Isolate via
//! virtualization" switch, and where that choice comes from.
//!
//! In order, the first that says: the kernel command line
//! (`tails-server.isolate=on|off`, for a greeter or boot menu that sets
//! it), the file `/etc/tails-server/isolate` (`on` or `off`, for an image
//! or a greeter that writes it), the choice saved through the API (the
//! greeter's screen, `tails-server isolate on|off`), and last the older
//! `autostart` setting. Nothing says: off, nothing of Tails Server starts.

use serde::{Deserialize, Serialize};

/// The kernel command-line parameter.
pub const CMDLINE_KEY: &str = "tails-server.isolate";

/// The settings file a greeter or an image may write.
pub const DEFAULT_FILE: &str = "/etc/tails-server/isolate";

/// Where the choice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    KernelCommandLine,
    File,
    Saved,
    Autostart,
    Default,
}

impl Source {
    pub fn words(self) -> &'static str {
        match self {
            Source::KernelCommandLine => "the kernel command line (tails-server.isolate=)",
            Source::File => "the isolate file (/etc/tails-server/isolate)",
            Source::Saved => "the saved choice",
            Source::Autostart => "the autostart setting",
            Source::Default => "nothing was chosen",
        }
    }
}

/// The choice, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub on: bool,
    pub source: Source,
}

/// `on` or `off` (also `1`/`0`, `yes`/`no`, `true`/`false`).
pub fn word(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "yes" | "true" => Some(true),
        "off" | "0" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// What the kernel command line says (the last `tails-server.isolate=`
/// wins, as the kernel's own parameters do); `Err` with the bad value.
pub fn from_cmdline(cmdline: &str) -> Result<Option<bool>, String> {
    let mut found = None;
    for arg in cmdline.split_ascii_whitespace() {
        if let Some(v) = arg
            .strip_prefix(CMDLINE_KEY)
            .and_then(|r| r.strip_prefix('='))
        {
            found = Some(word(v).ok_or_else(|| v.to_owned())?);
        }
    }
    Ok(found)
}

/// The choice from what each place says (`None`: it says nothing).
pub fn decide(
    cmdline: Option<bool>,
    file: Option<bool>,
    saved: Option<bool>,
    autostart: bool,
) -> Choice {
    let (on, source) = match (cmdline, file, saved) {
        (Some(on), _, _) => (on, Source::KernelCommandLine),
        (None, Some(on), _) => (on, Source::File),
        (None, None, Some(on)) => (on, Source::Saved),
        (None, None, None) if autostart => (true, Source::Autostart),
        _ => (false, Source::Default),
    };
    Choice { on, source }
}

/// What this host says now: the kernel's command line and `file`; a bad
/// value is logged in one line and ignored.
pub fn host_says(file: &std::path::Path) -> (Option<bool>, Option<bool>) {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmd = from_cmdline(&cmdline).unwrap_or_else(|bad| {
        crate::log(format!(
            "the kernel command line says {CMDLINE_KEY}={bad}: use on or off; ignoring it"
        ));
        None
    });
    let f = match std::fs::read_to_string(file) {
        Ok(text) => word(&text).or_else(|| {
            crate::log(format!(
                "{} says {:?}: write on or off; ignoring it",
                file.display(),
                text.trim()
            ));
            None
        }),
        Err(_) => None,
    };
    (cmd, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_command_line_wins_then_the_file_then_the_saved_choice() {
        assert_eq!(
            from_cmdline("quiet tails-server.isolate=on splash"),
            Ok(Some(true))
        );
        assert_eq!(
            from_cmdline("tails-server.isolate=on tails-server.isolate=0"),
            Ok(Some(false))
        );
        assert_eq!(from_cmdline("quiet tails-server.isolated=on"), Ok(None));
        assert_eq!(
            from_cmdline("tails-server.isolate=maybe"),
            Err("maybe".into())
        );
        let d = decide(Some(false), Some(true), Some(true), true);
        assert_eq!((d.on, d.source), (false, Source::KernelCommandLine));
        let d = decide(None, Some(true), Some(false), false);
        assert_eq!((d.on, d.source), (true, Source::File));
        let d = decide(None, None, Some(false), true);
        assert_eq!((d.on, d.source), (false, Source::Saved));
        let d = decide(None, None, None, true);
        assert_eq!((d.on, d.source), (true, Source::Autostart));
        let d = decide(None, None, None, false);
        assert_eq!((d.on, d.source), (false, Source::Default));
        assert_eq!(word(" OFF\n"), Some(false));
        assert_eq!(word("enabled"), None);
    }
}
