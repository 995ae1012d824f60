//! What the builder takes from the host system: installed package versions, the
//! `debian-tor` account, the shared libraries of dynamically linked binaries (via `ldd`),
//! and an ELF check that a binary is static.

use std::path::{Path, PathBuf};

use crate::command::{run, Tools};
use crate::error::{ImageError, IoContext};
use std::collections::BTreeMap;

/// The installed version of each of `packages`, in their order, from one
/// `dpkg-query` run; an error naming the first one that is not installed.
pub fn package_versions(
    tools: &Tools,
    packages: &[&str],
) -> Result<Vec<(String, String)>, ImageError> {
    let mut cmd = tools.command("dpkg-query");
    cmd.args(["-W", "-f", "${Package}\t${Status}\t${Version}\n"])
        .args(packages);
    let hint = format!(
        "install them: run ./setup.sh (or apt-get install {})",
        packages.join(" ")
    );
    let out = run(cmd, None, None, &hint)?.stdout_text();
    let found = parse_package_versions(&out);
    packages
        .iter()
        .map(|p| match found.get(*p) {
            Some(v) => Ok((p.to_string(), v.clone())),
            None => Err(ImageError::HostPackage(format!(
                "{p} is not installed (dpkg-query says {:?}); {hint}",
                out.lines()
                    .find(|l| l.split('\t').next() == Some(*p))
                    .unwrap_or("")
            ))),
        })
        .collect()
}

/// `package → version` of the installed packages among `dpkg-query`'s lines
/// (`package<TAB>status<TAB>version`).
fn parse_package_versions(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, status, version) = (f.next()?, f.next()?, f.next()?);
            (status.ends_with(" installed") && !version.is_empty())
                .then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

/// The `debian-tor` account's uid and gid.
pub fn debian_tor_ids(tools: &Tools) -> Result<(u32, u32), ImageError> {
    let mut cmd = tools.command("getent");
    cmd.args(["passwd", "debian-tor"]);
    let out = run(
        cmd,
        None,
        None,
        "install tor (it creates the debian-tor user): run ./setup.sh",
    )?;
    parse_passwd_ids(&out.stdout_text())
        .ok_or_else(|| ImageError::HostPackage("cannot parse `getent passwd debian-tor`".into()))
}

fn parse_passwd_ids(line: &str) -> Option<(u32, u32)> {
    let fields: Vec<&str> = line.trim().split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// The absolute paths of the shared libraries (and dynamic loader) `binary` needs.
pub fn shared_libs(tools: &Tools, binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut cmd = tools.command("ldd");
    cmd.arg(binary);
    let out = run(
        cmd,
        None,
        None,
        "is the binary intact? reinstall its package",
    )?;
    parse_ldd(&out.stdout_text()).map_err(|lib| ImageError::Binary {
        path: binary.to_path_buf(),
        message: format!("shared library {lib} not found (ldd)"),
    })
}

/// Parses `ldd` output; `Err(name)` for a library ldd could not find.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_string());
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        // Skips the vDSO (no path) and anything else that is not an absolute path.
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// The ELF interpreter of an x86-64 ELF binary, `None` if it is statically linked.
pub fn elf_interpreter(path: &Path) -> Result<Option<String>, ImageError> {
    let data = std::fs::read(path).at(path)?;
    let bad = |message: &str| ImageError::Binary {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    if data[4] != 2 || data[5] != 1 || u16_at(&data, 0x12) != Some(62) {
        return Err(bad("not an x86-64 (64-bit little-endian) ELF file"));
    }
    let phoff = u64_at(&data, 0x20).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let phentsize = u16_at(&data, 0x36).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let phnum = u16_at(&data, 0x38).ok_or_else(|| bad("truncated ELF header"))? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        const PT_INTERP: u32 = 3;
        if u32_at(&data, ph) == Some(PT_INTERP) {
            let off =
                u64_at(&data, ph + 8).ok_or_else(|| bad("truncated program header"))? as usize;
            let size =
                u64_at(&data, ph + 32).ok_or_else(|| bad("truncated program header"))? as usize;
            let raw = data
                .get(off..off.saturating_add(size))
                .ok_or_else(|| bad("PT_INTERP outside the file"))?;
            let interp = String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string();
            return Ok(Some(interp));
        }
    }
    Ok(None)
}

/// An error unless `path` is a statically linked x86-64 executable.
pub fn require_static(path: &Path, what: &str) -> Result<(), ImageError> {
    match elf_interpreter(path)? {
        None => Ok(()),
        Some(interp) => Err(ImageError::Binary {
            path: path.to_path_buf(),
            message: format!(
                "{what} must be statically linked but uses {interp} \
                 (build it for x86_64-unknown-linux-musl)"
            ),
        }),
    }
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f7c)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f7c4ff40000)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.1 => not found\n"),
            Err("libfoo.so.1".into())
        );
    }

    #[test]
    fn package_versions_of_installed_packages_only() {
        let text = "tor\tinstall ok installed\t0.4.8.16-1\n\
                    nftables\tdeinstall ok config-files\t1.0.6-2\n\
                    e2fsprogs\tinstall ok installed\t\n";
        let v = parse_package_versions(text);
        assert_eq!(v.get("tor").map(String::as_str), Some("0.4.8.16-1"));
        assert!(
            !v.contains_key("nftables"),
            "removed, its config files left"
        );
        assert!(!v.contains_key("e2fsprogs"), "no version");
    }

    #[test]
    fn passwd_ids() {
        assert_eq!(
            parse_passwd_ids("debian-tor:x:102:106::/var/lib/tor:/bin/false\n"),
            Some((102, 106))
        );
        assert_eq!(parse_passwd_ids("garbage"), None);
    }

    #[test]
    fn elf_static_check() {
        // /bin/sh is dynamic on Debian; the ELF parser must see its interpreter.
        let interp = elf_interpreter(Path::new("/bin/sh")).unwrap();
        assert!(interp.is_some_and(|i| i.contains("ld-linux")));
        if Path::new("/bin/busybox").exists() {
            // busybox-static, as installed by setup.sh.
            assert_eq!(elf_interpreter(Path::new("/bin/busybox")).unwrap(), None);
        }
        let err = elf_interpreter(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/Cargo.toml"
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not an ELF"), "{err}");
    }
}
