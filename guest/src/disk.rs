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

async fn run(program: &str, args: &[&str]) -> Result<std::process::Output, String> {
    tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))
}

fn tail(out: &std::process::Output) -> String {
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// Find the disk `serial`, format it if blank, check it, and mount it on
/// `mountpoint` (made if missing). Already mounted there: nothing to do.
pub async fn mount(serial: &str, mountpoint: &Path) -> Result<(), String> {
    if is_mounted(mountpoint) {
        return Ok(());
    }
    let dev = find(serial).ok_or_else(|| format!("there is no disk {serial}"))?;
    let d = dev.display().to_string();
    let mut head = vec![0u8; HEAD];
    std::fs::File::open(&dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("cannot read {d}: {e}"))?;
    match content(&head) {
        Content::Other => {
            return Err(format!(
                "{serial} holds something that is not ext4: it is left as it is"
            ))
        }
        Content::Blank => {
            crate::log(format!("{serial}: blank, making an ext4 file system"));
            // No reserved blocks (nobody else writes here); the root is root's.
            let out = run(MKE2FS, &["-q", "-t", "ext4", "-m", "0", &d]).await?;
            if !out.status.success() {
                return Err(format!("cannot format {serial}: {}", tail(&out)));
            }
        }
        Content::Ext4 => {
            // -p: repairs what is safe to repair alone (a journal replayed,
            // counts fixed); 4 and above: errors left uncorrected.
            let out = run(E2FSCK, &["-p", &d]).await?;
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
