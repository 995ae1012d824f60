//! The App VM's read-only root: a minimal Debian built by mmdebstrap with the services'
//! packages, scrubbed of host- and build-specific state, packed into a reproducible
//! squashfs.

use std::path::{Path, PathBuf};

use crate::command::{run, run_retry, Tools};
use crate::error::{ImageError, IoContext};
use crate::progress::Progress;

/// How many times mmdebstrap is tried (an apt hook on some machines deletes .debs).
const MMDEBSTRAP_ATTEMPTS: u32 = 3;
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// The App VM's name server: the Tor VM's DNSPort, on the internal link.
const RESOLV_CONF: &str = "nameserver 10.1.2.1\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The apt source lines (one-line format) for `suite`, using the host's Debian mirrors
/// where its apt configuration names them.
pub fn apt_sources(suite: &str) -> Vec<String> {
    let entries = host_source_entries();
    let pick = |want: &str, default: &str| {
        entries
            .iter()
            .find(|(_, suites)| suites.iter().any(|s| s == want))
            .map(|(uri, _)| uri.clone())
            .unwrap_or_else(|| default.to_string())
    };
    let main = pick(suite, DEFAULT_MIRROR);
    let security = pick(&format!("{suite}-security"), DEFAULT_SECURITY_MIRROR);
    vec![
        format!("deb {main} {suite} main"),
        format!("deb {main} {suite}-updates main"),
        format!("deb {security} {suite}-security main"),
    ]
}

/// (URI, suites) of every `deb` entry in the host's apt sources, in file order.
fn host_source_entries() -> Vec<(String, Vec<String>)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut entries = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("sources") => entries.extend(parse_deb822(&text)),
            _ if file.ends_with("sources.list")
                || file.extension().is_some_and(|e| e == "list") =>
            {
                entries.extend(parse_one_line(&text))
            }
            _ => {}
        }
    }
    entries
}

fn parse_one_line(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            // Options: skip up to the closing bracket.
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push((
                uri.trim_end_matches('/').to_string(),
                vec![suite.to_string()],
            ));
        }
    }
    out
}

fn parse_deb822(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let values = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = values(),
                "uris" => uris = values(),
                "suites" => suites = values(),
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            if let Some(uri) = uris.first() {
                out.push((uri.trim_end_matches('/').to_string(), suites));
            }
        }
    }
    out
}

/// Builds the root with mmdebstrap into `dir` (which must not exist yet).
pub fn mmdebstrap(
    tools: &Tools,
    suite: &str,
    packages: &[String],
    sources: &[String],
    epoch: u64,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let remove = || remove_tree(dir);
    remove()?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = run_retry(
            || {
                let mut cmd = tools.command("mmdebstrap");
                cmd.env("SOURCE_DATE_EPOCH", epoch.to_string())
                    .arg("--variant=minbase")
                    .arg("--mode=root")
                    .arg(format!("--include={}", packages.join(",")))
                    .arg("--aptopt=Acquire::Retries \"3\"")
                    .arg(suite)
                    .arg(dir)
                    .args(sources);
                cmd
            },
            1,
            progress,
            "mmdebstrap must run as root with the Debian mirror reachable; check the package \
             names in services/*.yaml exist in Debian",
            remove,
        );
        match result {
            Ok(_) => return Ok(()),
            Err(e) => {
                // A package apt does not know fails every attempt the same way.
                if let Some(package) = unknown_package(&e) {
                    remove()?;
                    return Err(ImageError::UnknownPackage {
                        package,
                        suite: suite.to_string(),
                        files: Vec::new(),
                    });
                }
                if attempt >= MMDEBSTRAP_ATTEMPTS {
                    return Err(e);
                }
                progress.message(&format!(
                    "retrying (attempt {} of {MMDEBSTRAP_ATTEMPTS})",
                    attempt + 1
                ));
                remove()?;
            }
        }
    }
}

/// The package apt could not find, if that is why `e` (a failed mmdebstrap) failed.
fn unknown_package(e: &ImageError) -> Option<String> {
    let ImageError::Command { stderr_tail, .. } = e else {
        return None;
    };
    stderr_tail.iter().find_map(|line| {
        let name = if let Some(i) = line.find("Unable to locate package ") {
            line[i + "Unable to locate package ".len()..]
                .split_whitespace()
                .next()
        } else if let (Some(i), true) = (
            line.find("Package '"),
            line.contains("has no installation candidate"),
        ) {
            line[i + "Package '".len()..].split('\'').next()
        } else {
            None
        }?;
        crate::services::is_package_name(name).then(|| name.to_string())
    })
}

/// The App VM's apt sources: fixed, whatever mirror the host built it from
/// (a host's mirror or proxy would tell a guest where the host is).
pub fn fixed_sources(suite: &str) -> String {
    format!(
        "deb {DEFAULT_MIRROR} {suite} main\ndeb {DEFAULT_MIRROR} {suite}-updates main\ndeb {DEFAULT_SECURITY_MIRROR} {suite}-security main\n"
    )
}

/// Removes host- and build-specific state from the root: ids, names, the
/// apt sources and options the build used (replaced by fixed ones).
pub fn scrub(root: &Path) -> Result<(), ImageError> {
    replace_file(root, "etc/apt/sources.list", &fixed_sources(crate::SUITE))?;
    let list_d = root.join("etc/apt/sources.list.d");
    if list_d.is_dir() {
        empty_dir(&list_d)?;
    }
    // mmdebstrap keeps its --aptopt options here.
    let opts = root.join("etc/apt/apt.conf.d/99mmdebstrap");
    if opts.symlink_metadata().is_ok() {
        std::fs::remove_file(&opts).at(&opts)?;
    }
    replace_file(root, "etc/machine-id", "")?;
    replace_file(root, "etc/hostname", "localhost\n")?;
    replace_file(root, "etc/hosts", HOSTS)?;
    replace_file(root, "etc/resolv.conf", RESOLV_CONF)?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if dbus_id.symlink_metadata().is_ok_and(|m| m.is_file()) {
        std::fs::remove_file(&dbus_id).at(&dbus_id)?;
    }
    for dir in ["var/lib/apt/lists", "var/cache/apt", "tmp", "var/tmp"] {
        empty_dir(&root.join(dir))?;
    }
    std::fs::create_dir_all(root.join("var/lib/apt/lists/partial"))
        .at(root.join("var/lib/apt/lists"))?;
    std::fs::create_dir_all(root.join("var/cache/apt/archives/partial"))
        .at(root.join("var/cache/apt"))?;
    remove_files_keep_dirs(&root.join("var/log"))?;
    for (dir, suffix) in [("var/cache/debconf", "-old"), ("var/lib/dpkg", "-old")] {
        remove_matching(&root.join(dir), |n| n.ends_with(suffix))?;
    }
    // Host keys a package (openssh-server) made while the image was built: the same in
    // every copy of the image, and unused (a service makes its own at its first start).
    remove_matching(&root.join("etc/ssh"), |n| n.starts_with("ssh_host_"))?;
    let aux = root.join("var/cache/ldconfig/aux-cache");
    if aux.symlink_metadata().is_ok() {
        std::fs::remove_file(&aux).at(&aux)?;
    }
    Ok(())
}

/// Packs the root into a squashfs at `out` (mode 0644); returns its size.
pub fn mksquashfs(
    tools: &Tools,
    root: &Path,
    out: &Path,
    epoch: u64,
    progress: &dyn Progress,
) -> Result<u64, ImageError> {
    let epoch = epoch.to_string();
    let mut cmd = tools.command("mksquashfs");
    // Ownership is kept as mmdebstrap (as root) made it: service users' files (e.g.
    // /var/lib/<service>) must stay theirs. They are the chroot's own ids, not the host's.
    cmd.arg(root).arg(out).args([
        "-noappend",
        "-comp",
        "zstd",
        "-reproducible",
        "-mkfs-time",
        &epoch,
        "-all-time",
        &epoch,
        "-no-progress",
        "-quiet",
    ]);
    run(
        cmd,
        None,
        Some(progress),
        "is there enough space in the cache directory?",
    )?;
    crate::set_mode(out, 0o644)?;
    Ok(std::fs::metadata(out).at(out)?.len())
}

/// Writes `content` at `root/rel`, replacing whatever (even a symlink) was there.
fn replace_file(root: &Path, rel: &str, content: &str) -> Result<(), ImageError> {
    let path = root.join(rel);
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(&path).at(&path)?;
    }
    std::fs::write(&path, content).at(&path)?;
    crate::set_mode(&path, 0o644)
}

/// Removes a directory tree if it exists. Refuses if anything is mounted below it (an
/// interrupted mmdebstrap may still have /proc, /sys, /dev/pts mounted in its root).
pub(crate) fn remove_tree(dir: &Path) -> Result<(), ImageError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mounts = mounts_below(dir);
            if !mounts.is_empty() {
                return Err(ImageError::Busy {
                    path: dir.to_path_buf(),
                    mounts,
                });
            }
            std::fs::remove_dir_all(dir).at(dir)
        }
        Ok(_) => std::fs::remove_file(dir).at(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(dir),
    }
}

/// Lazily unmounts everything mounted at or below `dir`, deepest first: what an
/// interrupted mmdebstrap leaves in its root (/proc, /sys, /dev/pts, /dev/shm). Only for
/// the builder's own leftover directories, with the cache lock held.
pub(crate) fn unmount_below(dir: &Path) -> Result<(), ImageError> {
    let mut mounts = mounts_below(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let mut cmd = std::process::Command::new("umount");
        cmd.arg("--lazy").arg(&m);
        crate::command::run(cmd, None, None, "unmount it by hand, then retry")?;
    }
    Ok(())
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<String> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mount_points(&info)
        .into_iter()
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect()
}

/// The mount points (5th field, octal escapes decoded) of a mountinfo text.
fn mount_points(info: &str) -> Vec<String> {
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|field| {
            let mut out = Vec::new();
            let b = field.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let octal = b
                    .get(i + 1..i + 4)
                    .and_then(|o| std::str::from_utf8(o).ok());
                match (b[i], octal.and_then(|o| u8::from_str_radix(o, 8).ok())) {
                    (b'\\', Some(c)) => {
                        out.push(c);
                        i += 4;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect()
}

fn empty_dir(dir: &Path) -> Result<(), ImageError> {
    remove_matching(dir, |_| true)
}

/// Removes the entries of `dir` whose name matches (directories recursively).
fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at(dir),
    };
    for entry in entries {
        let entry = entry.at(dir)?;
        if matches(&entry.file_name().to_string_lossy()) {
            remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes every non-directory below `dir`, keeping the directories (services expect
/// e.g. /var/log/nginx to exist).
fn remove_files_keep_dirs(dir: &Path) -> Result<(), ImageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at(dir),
    };
    for entry in entries {
        let path = entry.at(dir)?.path();
        let meta = path.symlink_metadata().at(&path)?;
        if meta.is_dir() {
            remove_files_keep_dirs(&path)?;
        } else {
            std::fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(tail: &[&str]) -> ImageError {
        ImageError::Command {
            command: "mmdebstrap".into(),
            status: "exit status: 1".into(),
            stderr_tail: tail.iter().map(|s| s.to_string()).collect(),
            hint: String::new(),
        }
    }

    #[test]
    fn apt_naming_an_unknown_package_is_recognised() {
        let e = failed(&[
            "I: ...",
            "E: Unable to locate package tails-no-such-pkg",
            "E: apt-get failed",
        ]);
        assert_eq!(unknown_package(&e).as_deref(), Some("tails-no-such-pkg"));
        let e = failed(&["E: Package 'oldpkg' has no installation candidate"]);
        assert_eq!(unknown_package(&e).as_deref(), Some("oldpkg"));
        assert_eq!(unknown_package(&failed(&["E: network unreachable"])), None);
    }

    #[test]
    fn parses_sources() {
        let one =
            "# comment\ndeb [arch=amd64 signed-by=/x] http://m.example/debian/ bookworm main\n\
                   deb-src http://m.example/debian bookworm main\n";
        assert_eq!(
            parse_one_line(one),
            vec![(
                "http://m.example/debian".to_string(),
                vec!["bookworm".to_string()]
            )]
        );
        let d822 = "Types: deb\n# http://snapshot\nURIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        let e = parse_deb822(d822);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].0, "http://deb.debian.org/debian-security");
        assert_eq!(e[0].1, vec!["bookworm", "bookworm-updates"]);
    }

    #[test]
    fn mountinfo_parsing() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
                    30 22 0:5 / /tmp/a\\040b/root/proc ro - proc proc ro\n";
        assert_eq!(mount_points(info), vec!["/", "/tmp/a b/root/proc"]);
        // /proc is mounted on every Linux machine.
        assert!(!mounts_below(Path::new("/proc")).is_empty());
    }

    #[test]
    fn scrub_cleans_and_keeps_log_dirs() {
        let root = crate::testutil::TempDir::new("scrub");
        let r = root.path();
        for d in [
            "etc/apt/sources.list.d",
            "etc/apt/apt.conf.d",
            "var/log/nginx",
            "var/lib/apt/lists",
            "var/cache/apt/archives",
            "tmp",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("etc/machine-id"), "abc\n").unwrap();
        std::os::unix::fs::symlink("/nonexistent-tails-test/hostname", r.join("etc/hostname"))
            .unwrap();
        std::fs::write(r.join("var/log/nginx/error.log"), "x").unwrap();
        std::fs::write(r.join("var/lib/apt/lists/foo_Packages"), "x").unwrap();
        std::fs::write(r.join("var/cache/apt/archives/a.deb"), "x").unwrap();
        std::fs::write(r.join("tmp/junk"), "x").unwrap();
        std::fs::write(
            r.join("etc/apt/sources.list"),
            "deb http://mirror.host-isp.example/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/apt/sources.list.d/proxy.list"), "x").unwrap();
        std::fs::write(
            r.join("etc/apt/apt.conf.d/99mmdebstrap"),
            "Acquire::http::Proxy \"x\";",
        )
        .unwrap();
        scrub(r).unwrap();
        assert_eq!(
            std::fs::read_to_string(r.join("etc/apt/sources.list")).unwrap(),
            fixed_sources("bookworm")
        );
        assert!(!r.join("etc/apt/sources.list.d/proxy.list").exists());
        assert!(!r.join("etc/apt/apt.conf.d/99mmdebstrap").exists());
        assert_eq!(
            std::fs::read_to_string(r.join("etc/machine-id")).unwrap(),
            ""
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/hostname")).unwrap(),
            "localhost\n"
        );
        assert!(r.join("var/log/nginx").is_dir());
        assert!(!r.join("var/log/nginx/error.log").exists());
        assert!(!r.join("var/lib/apt/lists/foo_Packages").exists());
        assert!(!r.join("var/cache/apt/archives/a.deb").exists());
        assert!(!r.join("tmp/junk").exists());
    }
}
