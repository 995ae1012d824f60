//! Run a command for the host with a deadline and bounded output.

use std::process::Stdio;
use std::time::Duration;
use tails_proto::msg::{ExecOutput, ExecRequest, MAX_EXEC_OUTPUT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The environment every program the agents run gets (nothing inherited).
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// A system program the agent runs itself: a clean environment (PATH, LANG),
/// from `/`, no input, its output piped, killed if dropped.
pub fn system(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Run `argv` (program first) with [`system`] to its end; why it could not
/// start otherwise.
pub async fn output(argv: &[&str]) -> Result<std::process::Output, String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    system(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// The last non-empty line of `output`, with every word of `secrets` (a
/// step's input) blanked and control characters escaped, at most 200
/// characters: what an error shows of a program that failed.
pub fn last_line(output: &[u8], secrets: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(output).into_owned();
    let secret_text = String::from_utf8_lossy(secrets);
    for word in secret_text.split(|c: char| c.is_whitespace() || c == ':') {
        if word.len() >= 6 {
            text = text.replace(word, "<secret>");
        }
    }
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)");
    line.chars()
        .flat_map(char::escape_default)
        .take(200)
        .collect()
}

/// Read everything from `r`, keeping at most `max` bytes; returns whether more was dropped.
async fn read_bounded<R: AsyncRead + Unpin>(mut r: R, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (kept, cut)
}

/// Run `req`; never fails: a command that cannot start is reported as exit 127.
pub async fn run(req: ExecRequest) -> ExecOutput {
    let Some((prog, args)) = req.argv.split_first() else {
        return failed("empty command");
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(&format!("{prog}: {e}")),
    };
    let stdin = child.stdin.take();
    let input = req.stdin;
    let writer = tokio::spawn(async move {
        if let Some(mut s) = stdin {
            let _ = s.write_all(&input).await;
        }
    });
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(read_bounded(s, MAX_EXEC_OUTPUT)));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(read_bounded(s, MAX_EXEC_OUTPUT)));
    let deadline = Duration::from_millis(req.timeout_ms.max(1));
    let (status, timed_out) = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(s) => (s.ok(), false),
        Err(_) => {
            if let Some(pid) = child.id() {
                // Kill the whole process group the command started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            (child.wait().await.ok(), true)
        }
    };
    let _ = writer.await;
    let (stdout, cut_out) = match out {
        Some(h) => h.await.unwrap_or_default(),
        None => Default::default(),
    };
    let (stderr, cut_err) = match err {
        Some(h) => h.await.unwrap_or_default(),
        None => Default::default(),
    };
    use std::os::unix::process::ExitStatusExt;
    ExecOutput {
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stdout,
        stderr,
        truncated: cut_out || cut_err,
        timed_out,
    }
}

fn failed(msg: &str) -> ExecOutput {
    ExecOutput {
        exit_code: Some(127),
        signal: None,
        stdout: Vec::new(),
        stderr: format!("{msg}\n").into_bytes(),
        truncated: false,
        timed_out: false,
    }
}
