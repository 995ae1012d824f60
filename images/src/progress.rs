//! Progress reporting for image builds: a trait the builder calls at each stage and for
//! each status line of its subprocesses, a terminal implementation with indicatif
//! spinners, and a silent one.

use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Receives the builder's progress (called from the building thread).
pub trait Progress {
    /// A new stage starts (the previous one, if any, is finished).
    fn stage(&self, name: &str);
    /// A status line within the current stage (e.g. a subprocess's output line).
    fn message(&self, msg: &str);
    /// The build is over (successfully or not).
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str) {}
    fn message(&self, _msg: &str) {}
    fn finish(&self) {}
}

struct Current {
    name: String,
    started: Instant,
    bar: ProgressBar,
}

/// Shows one spinner per stage, with elapsed time and the latest status line, on stderr.
/// When stderr is not a terminal, prints one line per stage start and end instead.
pub struct TermProgress {
    current: Mutex<Option<Current>>,
    tty: bool,
}

impl Default for TermProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl TermProgress {
    /// A progress display on stderr.
    pub fn new() -> Self {
        Self {
            current: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Current>> {
        // A panic while holding the lock leaves only display state behind: keep going.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end_current(&self) {
        if let Some(cur) = self.lock().take() {
            let secs = cur.started.elapsed().as_secs_f64();
            if self.tty {
                cur.bar.set_style(done_style());
                cur.bar.finish_with_message(format!("done in {secs:.1} s"));
            } else {
                eprintln!("  {}: done in {secs:.1} s", cur.name);
            }
        }
    }
}

fn spinner_style() -> ProgressStyle {
    // The template is a constant known to be valid; fall back to the default style anyway.
    ProgressStyle::with_template("{spinner:.cyan} [{elapsed:>4}] {prefix:.bold}: {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("✔ [{elapsed:>4}] {prefix:.bold}: {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Progress for TermProgress {
    fn stage(&self, name: &str) {
        self.end_current();
        let bar = if self.tty {
            let bar = ProgressBar::new_spinner();
            bar.set_style(spinner_style());
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            eprintln!("==> {name}");
            ProgressBar::hidden()
        };
        *self.lock() = Some(Current {
            name: name.to_string(),
            started: Instant::now(),
            bar,
        });
    }

    fn message(&self, msg: &str) {
        if !self.tty {
            return;
        }
        if let Some(cur) = self.lock().as_ref() {
            let line: String = msg.trim().chars().take(200).collect();
            cur.bar.set_message(line);
        }
    }

    fn finish(&self) {
        self.end_current();
    }
}

impl Drop for TermProgress {
    fn drop(&mut self) {
        if let Some(cur) = self.lock().take() {
            cur.bar.abandon();
        }
    }
}
