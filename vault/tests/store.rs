//! The store with the real tools (qemu-img, qemu-storage-daemon, FUSE, a loop
//! mount, ext4), as root: made, opened, written, closed; the plaintext is not
//! in the container; a wrong passphrase changes nothing; a changed passphrase
//! opens it and the old one no longer does.

use std::path::{Path, PathBuf};

use tails_vault::{Vault, VaultError};

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = vault(&self.0);
        let _ = v.lock();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vault(dir: &Path) -> Vault {
    Vault {
        file: dir.join("store.luks"),
        work: dir.join("work"),
        mountpoint: dir.join("mnt"),
    }
}

#[test]
fn a_store_is_made_opened_closed_and_rekeyed() {
    let dir = PathBuf::from(format!("/run/ts-vault-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir.clone());
    let v = vault(&dir);
    let pass = b"correct horse battery staple";

    assert!(matches!(v.unlock(pass), Err(VaultError::Missing(_))));
    assert!(matches!(
        v.create(b"short", 64),
        Err(VaultError::BadPassphrase)
    ));
    let t = std::time::Instant::now();
    v.create(pass, 64).unwrap();
    println!("create 64 MiB: {:.1} s", t.elapsed().as_secs_f64());
    assert!(matches!(v.create(pass, 64), Err(VaultError::Exists(_))));
    let head = std::fs::read(&v.file).unwrap();
    assert_eq!(&head[..6], b"LUKS\xba\xbe", "a LUKS header");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&v.file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A wrong passphrase: refused, nothing mounted, nothing left running.
    let e = v.unlock(b"not the passphrase").unwrap_err();
    assert!(matches!(e, VaultError::WrongPassphrase), "{e}");
    assert!(!e.to_string().contains('\n'));
    assert!(!v.is_unlocked());
    assert!(!dir.join("work/qsd.pid").exists());

    let t = std::time::Instant::now();
    v.unlock(pass).unwrap();
    println!("unlock: {:.1} s", t.elapsed().as_secs_f64());
    assert!(v.is_unlocked());
    assert!(matches!(v.unlock(pass), Err(VaultError::Unlocked(_))));
    let marker = format!("tails-vault-plaintext-{}", std::process::id());
    std::fs::write(v.mountpoint.join("note"), &marker).unwrap();
    v.lock().unwrap();
    assert!(!v.is_unlocked());
    assert!(!v.mountpoint.join("note").exists(), "gone with the lock");
    let container = std::fs::read(&v.file).unwrap();
    assert!(
        !container
            .windows(marker.len())
            .any(|w| w == marker.as_bytes()),
        "the plaintext is not in the container"
    );

    // A new passphrase: the old one no longer opens it, the new one does.
    let new = b"a new passphrase, longer";
    assert!(matches!(
        v.change_passphrase(b"wrong passphrase", new),
        Err(VaultError::WrongPassphrase)
    ));
    v.change_passphrase(pass, new).unwrap();
    // cryptsetup (the reference implementation) reads the header and takes the
    // new passphrase, not the old one.
    let dump = std::process::Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&v.file)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("xts-plain64"), "{dump}");
    let tries = |p: &[u8]| {
        use std::io::Write;
        let mut c = std::process::Command::new("cryptsetup")
            .args(["luksOpen", "--test-passphrase", "--key-file", "-"])
            .arg(&v.file)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(p).unwrap();
        c.wait().unwrap().success()
    };
    assert!(tries(new) && !tries(pass), "cryptsetup: new yes, old no");
    assert!(matches!(v.unlock(pass), Err(VaultError::WrongPassphrase)));
    v.unlock(new).unwrap();
    assert_eq!(
        std::fs::read_to_string(v.mountpoint.join("note")).unwrap(),
        marker
    );
    v.lock().unwrap();
    drop(scratch);
}
