//! Error type of the image builder: every failure names the file, command or module
//! involved and, where there is one, what the person can do about it.

use std::path::PathBuf;

/// Everything that can go wrong while computing the cache key, finding or building images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Host tools (or host files from Debian packages) the build needs are missing.
    #[error(
        "missing on this host: {}; run ./setup.sh (or apt-get install {})",
        .missing.join(", "),
        .packages.join(" ")
    )]
    MissingTools {
        /// The missing tools or files.
        missing: Vec<String>,
        /// Debian packages that provide them.
        packages: Vec<String>,
    },

    /// A subprocess failed (or could not be started).
    #[error("command `{command}` failed ({status}){}\nhint: {hint}", fmt_tail(.stderr_tail))]
    Command {
        /// The command line, for the person to re-run it.
        command: String,
        /// Exit status, or why it could not run.
        status: String,
        /// The last lines of its stderr.
        stderr_tail: Vec<String>,
        /// What to try next.
        hint: String,
    },

    /// A directory to remove has file systems mounted below it.
    #[error(
        "{} has file systems mounted below it ({}): a build (mmdebstrap) may still be \
         running there; wait for it to finish, or unmount them",
        .path.display(),
        .mounts.join(", ")
    )]
    Busy {
        /// The directory.
        path: PathBuf,
        /// The mount points below it.
        mounts: Vec<String>,
    },

    /// A file-system operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A services/*.yaml file could not be read as a service description.
    #[error("{}: invalid service description: {message}", .path.display())]
    Service {
        /// The service file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// apt (in mmdebstrap) knows no package of this name: a service file names it.
    #[error(
        "Debian {suite} has no package {package:?}{}: fix or remove that service file, then \
         run ./setup.sh again (the images and the stack are unchanged)",
        fmt_files(.files)
    )]
    UnknownPackage {
        /// The package name.
        package: String,
        /// The suite searched.
        suite: String,
        /// The service files naming it.
        files: Vec<PathBuf>,
    },

    /// A kernel module could not be resolved.
    #[error("kernel modules: {0}")]
    Module(String),

    /// The kernel package or image is not what was expected.
    #[error("kernel: {0}")]
    Kernel(String),

    /// A host binary (agent, busybox, tor, nft) is unusable.
    #[error("{}: {message}", .path.display())]
    Binary {
        /// The binary.
        path: PathBuf,
        /// Why it cannot be used.
        message: String,
    },

    /// The host's package database gave an unexpected answer.
    #[error("host packages: {0}")]
    HostPackage(String),

    /// A file does not fit in an initramfs entry (newc sizes are 32-bit).
    #[error("initramfs entry {name} is too large ({size} bytes)")]
    TooLarge {
        /// In-archive path.
        name: String,
        /// Its size.
        size: u64,
    },

    /// The manifest could not be (de)serialised.
    #[error("{}: manifest: {source}", .path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

fn fmt_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of its output:\n  {}", tail.join("\n  "))
    }
}

/// Shorthand to attach a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            path: path.into(),
            source,
        })
    }
}

fn fmt_files(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    format!(" (named by {})", names.join(", "))
}
