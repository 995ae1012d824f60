//! The App VM's side of persistence: a service whose `persistence` option is
//! on gets each of its persistent paths bind-mounted from the data disk
//! ([`APPVM_DATA_SERIAL`], mounted on [`DATA`]) before anything of it is
//! made; a service with it off writes to the amnesic overlay, and what the
//! disk held of it is removed.
//!
//! On the disk, `services/<name>/<path>` holds `<path>` of service `<name>`.
//! The first time, what the image has at that path (a package's defaults)
//! is copied there first, into a temporary name renamed when complete, so
//! that a copy cut by a crash is made again rather than taken as the data.

use std::path::{Path, PathBuf};

use tails_proto::msg::APPVM_DATA_SERIAL;

/// Where the data disk is mounted.
pub const DATA: &str = "/persistent";

/// `<DATA>/services/<name>`.
fn service_dir(name: &str) -> PathBuf {
    Path::new(DATA).join("services").join(name)
}

/// Where `path` of service `name` is kept on the disk.
fn kept(name: &str, path: &str) -> PathBuf {
    service_dir(name).join(path.trim_start_matches('/'))
}

/// Why a persistent path is refused, if it is: a clean absolute path, not
/// `/` and not inside the disk itself.
pub fn check(path: &str) -> Result<(), String> {
    if !crate::services::clean_absolute(path) || path == "/" {
        return Err("a persistent path needs a clean absolute path other than /".into());
    }
    if Path::new(path).starts_with(DATA) {
        return Err(format!("a persistent path cannot be under {DATA}"));
    }
    Ok(())
}

fn err<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    let what = what.to_owned();
    move |e| format!("cannot {what} {}: {e}", p.display())
}

/// Mount the data disk (formatted the first time).
async fn disk() -> Result<(), String> {
    if tails_guest::disk::find(APPVM_DATA_SERIAL).is_none() {
        return Err(
            "the App VM has no persistent disk: it was started while the persistent store was locked; \
             `tails-server down`, `tails-server persistence unlock`, then `tails-server up`"
                .into(),
        );
    }
    tails_guest::disk::mount(APPVM_DATA_SERIAL, Path::new(DATA)).await
}

/// Copy what the image has at `path` into `dst` (made through a temporary
/// name), or make `dst` empty if there is nothing.
async fn first_copy(path: &Path, dst: &Path) -> Result<(), String> {
    let parent = dst.parent().unwrap_or(Path::new(DATA));
    std::fs::create_dir_all(parent).map_err(err("make", parent))?;
    let tmp = PathBuf::from(format!("{}.tails-copy", dst.display()));
    if std::fs::symlink_metadata(&tmp).is_ok() {
        std::fs::remove_dir_all(&tmp).map_err(err("remove", &tmp))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            // cp -a keeps owners, modes, times and links as they are.
            let out = tails_guest::exec::system("/usr/bin/cp")
                .arg("-a")
                .arg("--")
                .arg(path)
                .arg(&tmp)
                .output()
                .await
                .map_err(|e| format!("cannot run cp: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot copy {} to the persistent disk: {}",
                    path.display(),
                    tails_guest::exec::last_line(&out.stderr, &[])
                ));
            }
        }
        Ok(_) => return Err(format!("{} is not a directory", path.display())),
        Err(_) => std::fs::create_dir(&tmp).map_err(err("make", &tmp))?,
    }
    std::fs::rename(&tmp, dst).map_err(err("rename", &tmp))?;
    // The copy is there for good before the service writes over it.
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(err("sync", parent))
}

/// Bind-mount each of `paths` from the disk for service `name`; what was
/// mounted, in order (also on error: the caller unmounts it).
pub async fn mount(name: &str, paths: &[String], done: &mut Vec<String>) -> Result<(), String> {
    disk().await?;
    for p in paths {
        check(p)?;
        let path = Path::new(p);
        if tails_guest::disk::is_mounted(path) {
            done.push(p.clone());
            continue;
        }
        let dst = kept(name, p);
        if std::fs::symlink_metadata(&dst).is_err() {
            first_copy(path, &dst).await?;
            tails_guest::log(format!("{name}: {p} is now kept on the persistent disk"));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{p} is not a directory")),
            Err(_) => std::fs::create_dir_all(path).map_err(err("make", path))?,
        }
        use nix::mount::MsFlags;
        nix::mount::mount(
            Some(dst.as_path()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot mount {p} from the persistent disk: {e}"))?;
        done.push(p.clone());
        nix::mount::mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| format!("cannot make {p} nosuid,nodev: {e}"))?;
    }
    Ok(())
}

/// Unmount what [`mount`] mounted (last first), after the service stopped.
pub fn unmount(paths: &[String]) {
    for p in paths.iter().rev() {
        if let Err(e) = nix::mount::umount(p.as_str()) {
            tails_guest::log(format!("cannot unmount {p}: {e}"));
        }
    }
}

/// Remove what the disk holds of service `name` (its persistence is off),
/// if the App VM has the disk and it holds anything (a blank one is left
/// blank).
pub async fn forget(name: &str) -> Result<(), String> {
    if !tails_guest::disk::is_mounted(Path::new(DATA))
        && !tails_guest::disk::formatted(APPVM_DATA_SERIAL)
    {
        return Ok(());
    }
    disk().await?;
    let dir = service_dir(name);
    if std::fs::symlink_metadata(&dir).is_ok() {
        std::fs::remove_dir_all(&dir).map_err(err("remove", &dir))?;
        tails_guest::log(format!(
            "{name}: persistence is off: its data on the persistent disk is removed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for ok in ["/var/lib/prosody", "/var/www/tails-server"] {
            check(ok).expect(ok);
        }
        for bad in [
            "/",
            "var/lib",
            "/var/../etc",
            "/persistent/x",
            "/persistent",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert_eq!(
            kept("prosody", "/var/lib/prosody"),
            Path::new("/persistent/services/prosody/var/lib/prosody")
        );
    }
}
