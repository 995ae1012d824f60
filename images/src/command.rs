//! Running host tools: finding them up front (naming every missing one), and running
//! them with their output streamed to the progress display and the tail of their stderr
//! kept for the error message.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::ImageError;
use crate::progress::Progress;

/// How many stderr lines an error message keeps.
const TAIL_LINES: usize = 15;

/// Directories searched for tools besides `$PATH` (depmod lives in /usr/sbin, which a
/// non-login root shell may not have in its path).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// A tool the builder runs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

/// Tools needed by the cache key alone.
pub(crate) const KEY_TOOLS: &[Tool] = &[
    Tool {
        name: "dpkg-query",
        package: "dpkg",
    },
    Tool {
        name: "getent",
        package: "libc-bin",
    },
];

/// Tools needed by a full build.
pub(crate) const BUILD_TOOLS: &[Tool] = &[
    Tool {
        name: "dpkg-query",
        package: "dpkg",
    },
    Tool {
        name: "getent",
        package: "libc-bin",
    },
    Tool {
        name: "mmdebstrap",
        package: "mmdebstrap",
    },
    Tool {
        name: "mksquashfs",
        package: "squashfs-tools",
    },
    Tool {
        name: "dpkg-deb",
        package: "dpkg",
    },
    Tool {
        name: "apt-get",
        package: "apt",
    },
    Tool {
        name: "apt-cache",
        package: "apt",
    },
    Tool {
        name: "depmod",
        package: "kmod",
    },
    Tool {
        name: "ldd",
        package: "libc-bin",
    },
    Tool {
        name: "xz",
        package: "xz-utils",
    },
];

/// Host files copied into the images, and the packages that provide them.
pub(crate) const HOST_FILES: &[(&str, &str)] = &[
    (crate::BUSYBOX_PATH, "busybox-static"),
    (crate::TOR_PATH, "tor"),
    (crate::NFT_PATH, "nftables"),
];

/// Resolved absolute paths of the tools.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    found: Vec<(&'static str, PathBuf)>,
}

impl Tools {
    /// Finds every tool in `tools` (and, if `host_files`, checks the host files exist);
    /// names every missing one in a single error.
    pub fn find(tools: &[Tool], host_files: bool) -> Result<Self, ImageError> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let mut packages: Vec<String> = Vec::new();
        for tool in tools {
            match which(tool.name) {
                Some(path) => found.push((tool.name, path)),
                None => {
                    missing.push(tool.name.to_string());
                    packages.push(tool.package.to_string());
                }
            }
        }
        if host_files {
            for (file, package) in HOST_FILES {
                if !Path::new(file).is_file() {
                    missing.push((*file).to_string());
                    packages.push((*package).to_string());
                }
            }
        }
        if missing.is_empty() {
            Ok(Self { found })
        } else {
            packages.sort();
            packages.dedup();
            Err(ImageError::MissingTools { missing, packages })
        }
    }

    /// A `Command` for a tool found by [`Tools::find`] (or, failing that, by name).
    pub fn command(&self, name: &str) -> Command {
        let path = self
            .found
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.as_os_str())
            .unwrap_or_else(|| OsStr::new(name));
        let mut cmd = Command::new(path);
        cmd.env("LC_ALL", "C.UTF-8");
        cmd
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The command line of `cmd`, for messages.
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '"', '\'', '\n']) {
            parts.push(format!("'{}'", arg.replace('\'', "'\\''")));
        } else {
            parts.push(arg.into_owned());
        }
    }
    parts.join(" ")
}

/// What a successful run returns.
pub(crate) struct RunOutput {
    pub stdout: Vec<u8>,
}

impl RunOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` to completion: feeds `stdin` (if any), collects stdout, streams stderr
/// lines to `progress` (if any), and on failure returns an error with the command line,
/// the last lines of stderr and `hint`.
pub(crate) fn run(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    progress: Option<&dyn Progress>,
    hint: &str,
) -> Result<RunOutput, ImageError> {
    let command = display(&cmd);
    let fail = |status: String, tail: Vec<String>| ImageError::Command {
        command: command.clone(),
        status,
        stderr_tail: tail,
        hint: hint.to_string(),
    };
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}"), Vec::new()))?;
    let child_stdin = child.stdin.take();
    let child_stdout = child.stdout.take();
    let child_stderr = child.stderr.take();

    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let (stdout, write_result) = std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<()> {
            if let (Some(mut pipe), Some(data)) = (child_stdin, stdin) {
                match pipe.write_all(data) {
                    // The tool may stop reading early (xz --single-stream): not our error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    other => other,
                }
            } else {
                Ok(())
            }
        });
        let reader = s.spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = child_stdout {
                // A read error here shows up as a failed exit status or short output.
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        });
        if let Some(pipe) = child_stderr {
            for line in BufReader::new(pipe).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line);
                // Progress bars draw with carriage returns: keep the last segment.
                let line = line
                    .rsplit('\r')
                    .next()
                    .unwrap_or("")
                    .trim_end()
                    .to_string();
                if line.is_empty() {
                    continue;
                }
                if let Some(p) = progress {
                    p.message(&line);
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
        let stdout = reader.join().unwrap_or_default();
        let write_result = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("stdin writer panicked")));
        (stdout, write_result)
    });
    let status = child
        .wait()
        .map_err(|e| fail(format!("could not wait: {e}"), Vec::new()))?;
    let tail: Vec<String> = tail.into_iter().collect();
    if !status.success() {
        return Err(fail(status.to_string(), tail));
    }
    if let Err(e) = write_result {
        return Err(fail(format!("writing its stdin: {e}"), tail));
    }
    Ok(RunOutput { stdout })
}

/// Like [`run`], but tries up to `attempts` times, calling `before_retry` between tries.
pub(crate) fn run_retry(
    make: impl Fn() -> Command,
    attempts: u32,
    progress: &dyn Progress,
    hint: &str,
    mut before_retry: impl FnMut() -> Result<(), ImageError>,
) -> Result<RunOutput, ImageError> {
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        if attempt > 1 {
            progress.message(&format!("retrying (attempt {attempt} of {attempts})"));
            before_retry()?;
        }
        match run(make(), None, Some(progress), hint) {
            Ok(out) => return Ok(out),
            Err(e) => last = Some(e),
        }
    }
    // attempts.max(1) >= 1, so the loop ran and `last` is set whenever we get here.
    Err(last.unwrap_or_else(|| ImageError::Kernel("no attempt made".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_command_names_itself_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one >&2; echo two >&2; exit 3"]);
        let err = run(cmd, None, None, "do something")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("two"), "{err}");
        assert!(err.contains("hint: do something"), "{err}");
    }

    #[test]
    fn stdin_and_stdout_round_trip() {
        let data = vec![b'x'; 300_000];
        let out = run(Command::new("cat"), Some(&data), None, "").unwrap();
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn missing_tools_are_all_named() {
        let tools = [
            Tool {
                name: "no-such-tool-a",
                package: "pkg-a",
            },
            Tool {
                name: "sh",
                package: "dash",
            },
            Tool {
                name: "no-such-tool-b",
                package: "pkg-b",
            },
        ];
        let err = Tools::find(&tools, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("no-such-tool-a") && err.contains("no-such-tool-b"),
            "{err}"
        );
        assert!(err.contains("setup.sh"), "{err}");
        assert!(!err.contains("dash"), "{err}");
    }
}
