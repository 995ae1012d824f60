//! A guest's persistent disk: the virtio-blk device the host hands QEMU with
//! a fixed serial (the Tor VM's state, the App VM's data), given an ext4 file
//! system when it is blank, checked before it is mounted, mounted
//! nosuid,nodev, and unmounted cleanly at power-off ([`unmount_all`]).
//!
//! The guest formats its own disk with its own clock: nothing on it comes
//! from the host but its size. A disk that holds something other than ext4
//! is never formatted over.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where e2fsprogs' programs are (the App VM's Debian root and the Tor VM's
/// initramfs both have them there).
const MKE2FS: &str = "/usr/sbin/mke2fs";
const E2FSCK: &str = "/usr/sbin/e2fsck";

/// ext4's superblock starts at byte 1024; its magic is at offset 0x38.
const MAGIC_AT: usize = 1024 + 0x38;
const MAGIC: [u8; 2] = [0x53, 0xef];
/// What is read to tell a blank disk (all zeros) from one in use.
const HEAD: usize = 64 * 1024;

/// The block device (`/dev/vdX`) whose virtio serial is `serial`, if any.
pub fn find(serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    entries.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let s = std::fs::read_to_string(e.path().join("serial")).ok()?;
        (name.starts_with("vd") && s.trim() == serial).then(|| PathBuf::from("/dev").join(name))
    })
}

/// [`find`], asked again every 20 ms for up to `within`: a disk's block device
/// appears a moment after its driver is loaded.
pub fn find_within(serial: &str, within: std::time::Duration) -> Option<PathBuf> {
    let start = std::time::Instant::now();
    loop {
        if let Some(dev) = find(serial) {
            return Some(dev);
        }
        if start.elapsed() >= within {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What the first bytes of a disk say it holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    Blank,
    Ext4,
    Other,
}

/// Judge a disk by its first [`HEAD`] bytes.
pub fn content(head: &[u8]) -> Content {
    if head.get(MAGIC_AT..MAGIC_AT + 2) == Some(&MAGIC[..]) {
        Content::Ext4
    } else if head.iter().all(|b| *b == 0) {
        Content::Blank
    } else {
        Content::Other
    }
}

/// The first [`HEAD`] bytes of `dev`.
fn head(dev: &Path) -> Result<Vec<u8>, String> {
    let mut head = vec![0u8; HEAD];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", dev.display()))?;
    Ok(head)
}

/// Whether the disk `serial` is there and holds a file system already.
pub fn formatted(serial: &str) -> bool {
    find(serial)
        .and_then(|dev| head(&dev).ok())
        .is_some_and(|h| content(&h) == Content::Ext4)
}

/// A failed program's last line (stderr first, then stdout).
fn tail(out: &std::process::Output) -> String {
    let both = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    crate::exec::last_line(&both, &[])
}

/// Find the disk `serial`, format it if blank, check it, and mount it on
/// `mountpoint` (made if missing). Already mounted there: nothing to do.
pub async fn mount(serial: &str, mountpoint: &Path) -> Result<(), String> {
    if is_mounted(mountpoint) {
        return Ok(());
    }
    let dev = find(serial).ok_or_else(|| format!("there is no disk {serial}"))?;
    let d = dev.display().to_string();
    match content(&head(&dev)?) {
        Content::Other => {
            return Err(format!(
                "{serial} holds something that is not ext4: it is left as it is"
            ))
        }
        Content::Blank => {
            crate::log(format!("{serial}: blank, making an ext4 file system"));
            // No reserved blocks (nobody else writes here); the root is root's.
            let out = crate::exec::output(&[MKE2FS, "-q", "-t", "ext4", "-m", "0", &d]).await?;
            if !out.status.success() {
                return Err(format!("cannot format {serial}: {}", tail(&out)));
            }
        }
        Content::Ext4 => {
            // -p: repairs what is safe to repair alone (a journal replayed,
            // counts fixed); 4 and above: errors left uncorrected.
            let out = crate::exec::output(&[E2FSCK, "-p", &d]).await?;
            match out.status.code() {
                Some(0) => {}
                Some(1..=3) => crate::log(format!("{serial}: e2fsck repaired it")),
                _ => {
                    return Err(format!(
                        "{serial} has errors e2fsck cannot repair alone: {}",
                        tail(&out)
                    ))
                }
            }
        }
    }
    // ext4 and what it needs, on the first persistent disk only.
    let loaded = tokio::task::spawn_blocking(crate::pid1::load_disk_modules)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot load ext4 for {serial}: {e}"))?;
    if loaded > 0 {
        crate::log(format!("loaded {loaded} modules for {serial}"));
    }
    std::fs::create_dir_all(mountpoint)
        .map_err(|e| format!("cannot make {}: {e}", mountpoint.display()))?;
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some(dev.as_path()),
        mountpoint,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("errors=remount-ro"),
    )
    .map_err(|e| format!("cannot mount {serial} on {}: {e}", mountpoint.display()))?;
    crate::log(format!("{serial} mounted on {}", mountpoint.display()));
    Ok(())
}

/// The mount points of `/proc/self/mounts`, in mount order, with their types.
fn mounts() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            // Spaces in a path are written \040; ours have none.
            Some((f.get(1)?.to_string(), f.get(2)?.to_string()))
        })
        .collect()
}

/// Is something mounted on `p`?
pub fn is_mounted(p: &Path) -> bool {
    let p = p.display().to_string();
    mounts().iter().any(|(m, _)| *m == p)
}

/// Unmount every ext4 mount (bind mounts first: the reverse of mount order)
/// so that the disks are clean when the VM powers off; what cannot be
/// unmounted is remounted read-only.
pub fn unmount_all() {
    for (m, fstype) in mounts().into_iter().rev() {
        if fstype != "ext4" {
            continue;
        }
        if nix::mount::umount(m.as_str()).is_err() {
            use nix::mount::MsFlags;
            let _ = nix::mount::mount(
                None::<&str>,
                m.as_str(),
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_judged_by_the_superblock() {
        let mut head = vec![0u8; HEAD];
        assert_eq!(content(&head), Content::Blank);
        head[MAGIC_AT] = 0x53;
        head[MAGIC_AT + 1] = 0xef;
        assert_eq!(content(&head), Content::Ext4);
        let mut other = vec![0u8; HEAD];
        other[0] = 0xeb; // a boot sector, a LUKS header, anything
        assert_eq!(content(&other), Content::Other);
        assert_eq!(content(&[]), Content::Blank);
    }
}
