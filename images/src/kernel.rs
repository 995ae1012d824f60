//! The Debian kernel: resolving the package behind `linux-image-amd64`, downloading and
//! unpacking it, and turning its compressed `vmlinuz` (bzImage) into the ELF `vmlinux`
//! that QEMU boots directly through PVH.

use std::path::{Path, PathBuf};

use crate::command::{run, run_retry, Tools};
use crate::error::{ImageError, IoContext};
use crate::progress::Progress;

/// Start of an XZ stream.
const XZ_MAGIC: &[u8] = &[0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00];
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// How many downloads to try (an apt hook on some machines deletes .debs under our feet).
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// The unpacked kernel package.
#[derive(Debug)]
pub struct KernelPackage {
    /// Binary package name, e.g. `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// Its Debian version, e.g. `6.1.192-3`.
    pub version: String,
    /// Kernel release, e.g. `6.1.0-57-amd64`.
    pub kver: String,
    /// Where the package was unpacked.
    pub root: PathBuf,
}

impl KernelPackage {
    /// `<root>/lib/modules/<kver>`.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.kver)
    }
}

/// The package `meta` (e.g. `linux-image-amd64`) depends on, per the host's apt lists.
pub fn resolve_package(tools: &Tools, meta: &str) -> Result<String, ImageError> {
    let mut cmd = tools.command("apt-cache");
    cmd.args(["depends", meta]);
    let out = run(
        cmd,
        None,
        None,
        "run `apt-get update` (the host's apt lists may be missing)",
    )?;
    parse_depends(&out.stdout_text()).ok_or_else(|| {
        ImageError::Kernel(format!(
            "`apt-cache depends {meta}` names no linux-image-* dependency; run `apt-get update`"
        ))
    })
}

fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|d| d.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|d| d.starts_with("linux-image-") && crate::services::is_package_name(d))
        .map(str::to_string)
}

/// Downloads `package` into `dir` and unpacks it into `dir/root`.
pub fn fetch(
    tools: &Tools,
    package: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<KernelPackage, ImageError> {
    std::fs::create_dir_all(dir).at(dir)?;
    progress.message(&format!("apt-get download {package}"));
    run_retry(
        || {
            let mut cmd = tools.command("apt-get");
            cmd.current_dir(dir)
                .args(["-q", "-o", "APT::Sandbox::User=root", "download", package]);
            cmd
        },
        DOWNLOAD_ATTEMPTS,
        progress,
        "check that the Debian mirror is reachable and run `apt-get update`",
        || Ok(()),
    )?;
    let deb = find_deb(dir, package)?;
    let mut cmd = tools.command("dpkg-deb");
    cmd.arg("-f").arg(&deb).arg("Version");
    let version = run(
        cmd,
        None,
        None,
        "the downloaded package may be corrupt; retry",
    )?
    .stdout_text()
    .trim()
    .to_string();
    let root = dir.join("root");
    progress.message(&format!("dpkg-deb -x {}", deb.display()));
    let mut cmd = tools.command("dpkg-deb");
    cmd.arg("-x").arg(&deb).arg(&root);
    run(
        cmd,
        None,
        Some(progress),
        "the downloaded package may be corrupt; retry",
    )?;
    let kver = find_kver(&root)?;
    Ok(KernelPackage {
        package: package.to_string(),
        version,
        kver,
        root,
    })
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, ImageError> {
    let prefix = format!("{package}_");
    for entry in std::fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    Err(ImageError::Kernel(format!(
        "apt-get download reported success but no {package}_*.deb is in {}",
        dir.display()
    )))
}

/// The kernel release of the one `boot/vmlinuz-*` in an unpacked package.
fn find_kver(root: &Path) -> Result<String, ImageError> {
    let boot = root.join("boot");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&boot).at(&boot)? {
        let name = entry.at(&boot)?.file_name();
        if let Some(kver) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
            found.push(kver.to_string());
        }
    }
    match found.as_slice() {
        [kver] if root.join("lib/modules").join(kver).is_dir() => Ok(kver.clone()),
        [kver] => Err(ImageError::Kernel(format!(
            "package has vmlinuz-{kver} but no lib/modules/{kver}"
        ))),
        _ => Err(ImageError::Kernel(format!(
            "expected one vmlinuz-* in {}, found {found:?}",
            boot.display()
        ))),
    }
}

/// The unpacked package's `vmlinuz-<kver>`.
pub fn vmlinuz_path(pkg: &KernelPackage) -> PathBuf {
    pkg.root.join("boot").join(format!("vmlinuz-{}", pkg.kver))
}

/// Offsets of every XZ stream magic in `buf`.
pub fn xz_offsets(buf: &[u8]) -> Vec<usize> {
    buf.windows(XZ_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == XZ_MAGIC)
        .map(|(i, _)| i)
        .collect()
}

/// Decompresses the XZ-compressed ELF kernel embedded in a bzImage (`CONFIG_KERNEL_XZ`).
/// Tries each XZ magic in turn until one decompresses to an ELF file.
pub fn extract_vmlinux(tools: &Tools, bzimage: &[u8]) -> Result<Vec<u8>, ImageError> {
    let offsets = xz_offsets(bzimage);
    if offsets.is_empty() {
        return Err(ImageError::Kernel(
            "no XZ stream in vmlinuz (is the kernel built with CONFIG_KERNEL_XZ?)".into(),
        ));
    }
    let mut last_err = None;
    for off in offsets {
        let mut cmd = tools.command("xz");
        // --single-stream: stop after the first stream, ignore what follows (the bzImage
        // carries the decompressed size and more after the payload).
        cmd.args(["-dc", "--single-stream"]);
        match run(
            cmd,
            Some(&bzimage[off..]),
            None,
            "is xz-utils installed and the kernel package intact?",
        ) {
            Ok(out) if out.stdout.starts_with(ELF_MAGIC) => return Ok(out.stdout),
            Ok(_) => {
                last_err = Some(ImageError::Kernel(format!(
                    "XZ stream at offset {off} does not decompress to an ELF image"
                )))
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| ImageError::Kernel("no usable XZ stream in vmlinuz".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Tool;

    fn xz_tools() -> Tools {
        Tools::find(
            &[Tool {
                name: "xz",
                package: "xz-utils",
            }],
            false,
        )
        .unwrap()
    }

    #[test]
    fn finds_and_decompresses_embedded_xz() {
        let mut payload = b"\x7fELF\x02\x01\x01".to_vec();
        payload.extend((0..50_000u32).map(|i| (i % 251) as u8));
        let mut cmd = std::process::Command::new("xz");
        cmd.args(["-c", "--check=crc32", "--format=xz"]);
        let compressed = run(cmd, Some(&payload), None, "").unwrap().stdout;
        // A bzImage-like buffer: setup code, a false magic, the stream, trailing data.
        let mut image = vec![0x55u8; 1000];
        image.extend_from_slice(XZ_MAGIC);
        image.extend_from_slice(b"not really xz");
        let real_offset = image.len();
        image.extend_from_slice(&compressed);
        image.extend_from_slice(&[0xAA; 777]);
        assert_eq!(xz_offsets(&image), vec![1000, real_offset]);
        let out = extract_vmlinux(&xz_tools(), &image).unwrap();
        assert_eq!(out, payload);
    }

    #[test]
    fn no_xz_or_no_elf_is_an_error() {
        let err = extract_vmlinux(&xz_tools(), &[0u8; 4096])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no XZ stream"), "{err}");
        let mut cmd = std::process::Command::new("xz");
        cmd.args(["-c"]);
        let compressed = run(cmd, Some(b"plain text, not ELF"), None, "")
            .unwrap()
            .stdout;
        let err = extract_vmlinux(&xz_tools(), &compressed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ELF"), "{err}");
    }

    #[test]
    fn parses_apt_cache_depends() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
    }
}
