//! Deterministic newc cpio archives for the initramfs images: an in-memory tree of
//! entries written sorted by path, with one fixed mtime, explicit owners, and inode
//! numbers given by position, so that the same tree always gives the same bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use cpio::newc::ModeFileType;
use cpio::NewcBuilder;

use crate::error::{ImageError, IoContext};

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir { mode: u32, uid: u32, gid: u32 },
    /// A regular file with its contents.
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A symbolic link.
    Symlink { target: String },
    /// A character device node.
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// The contents of an archive, keyed by path without the leading `/`.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

fn normalise(path: &str) -> Result<String, ImageError> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(ImageError::Binary {
            path: path.into(),
            message: "not a valid path inside an initramfs".into(),
        });
    }
    Ok(parts.join("/"))
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<(), ImageError> {
        let path = normalise(path)?;
        // Parent directories, created 0755 root:root unless already present.
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            self.entries
                .entry(path[..end].to_string())
                .or_insert(Node::Dir {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                });
            end += 1;
        }
        self.entries.insert(path, node);
        Ok(())
    }

    /// Adds a directory (root-owned).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        self.insert(
            path,
            Node::Dir {
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }

    /// Adds a directory with an explicit owner.
    pub fn dir_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(), ImageError> {
        self.insert(path, Node::Dir { mode, uid, gid })
    }

    /// Adds a root-owned file with the given contents.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<(), ImageError> {
        self.insert(
            path,
            Node::File {
                data,
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }

    /// Adds a root-owned file with the contents of `src` (symlinks followed).
    pub fn file_from(&mut self, path: &str, src: &Path, mode: u32) -> Result<(), ImageError> {
        let data = std::fs::read(src).at(src)?;
        self.file(path, data, mode)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        self.insert(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// Adds a root-owned character device node.
    pub fn char_dev(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Result<(), ImageError> {
        self.insert(path, Node::CharDev { major, minor, mode })
    }

    /// Whether `path` is in the tree.
    pub fn contains(&self, path: &str) -> bool {
        normalise(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// Writes the tree as a newc archive, every entry with mtime `mtime`; returns the
    /// number of bytes written.
    pub fn write_to<W: Write>(&self, out: W, mtime: u32) -> Result<u64, ImageError> {
        let io = |e: std::io::Error| ImageError::Io {
            path: "<initramfs>".into(),
            source: e,
        };
        let mut out = CountingWriter {
            inner: out,
            count: 0,
        };
        for (index, (name, node)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(index + 1).map_err(|_| ImageError::TooLarge {
                name: name.clone(),
                size: index as u64,
            })?;
            let base = NewcBuilder::new(name).ino(ino).mtime(mtime);
            let (builder, data): (NewcBuilder, &[u8]) = match node {
                Node::Dir { mode, uid, gid } => (
                    base.mode(mode & 0o7777)
                        .set_mode_file_type(ModeFileType::Directory)
                        .uid(*uid)
                        .gid(*gid)
                        .nlink(2),
                    &[],
                ),
                Node::File {
                    data,
                    mode,
                    uid,
                    gid,
                } => (
                    base.mode(mode & 0o7777)
                        .set_mode_file_type(ModeFileType::Regular)
                        .uid(*uid)
                        .gid(*gid),
                    data,
                ),
                Node::Symlink { target } => (
                    base.mode(0o777).set_mode_file_type(ModeFileType::Symlink),
                    target.as_bytes(),
                ),
                Node::CharDev { major, minor, mode } => (
                    base.mode(mode & 0o7777)
                        .set_mode_file_type(ModeFileType::Char)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let size = u32::try_from(data.len()).map_err(|_| ImageError::TooLarge {
                name: name.clone(),
                size: data.len() as u64,
            })?;
            let mut w = builder.write(&mut out, size);
            w.write_all(data).map_err(io)?;
            w.finish().map_err(io)?;
        }
        let out = cpio::newc::trailer(out).map_err(io)?;
        Ok(out.count)
    }

    /// Writes the tree out as files under `root` (which must not exist yet), for
    /// mksquashfs: directories, files with their modes, symlinks. Owners are left to
    /// the writer (root, as the builder runs); device nodes have no place in a
    /// read-only root and are refused.
    pub fn write_dir(&self, root: &Path) -> Result<(), ImageError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(root)
            .at(root)?;
        // The mode the squashfs's root (/usr) gets: not the umask's.
        crate::set_mode(root, 0o755)?;
        // Sorted by path, so a parent always comes before what is in it.
        for (name, node) in &self.entries {
            let path = root.join(name);
            match node {
                Node::Dir { mode, .. } => {
                    std::fs::create_dir(&path).at(&path)?;
                    crate::set_mode(&path, *mode)?;
                }
                Node::File { data, mode, .. } => {
                    std::fs::write(&path, data).at(&path)?;
                    crate::set_mode(&path, *mode)?;
                }
                Node::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &path).at(&path)?;
                }
                Node::CharDev { .. } => {
                    return Err(ImageError::Binary {
                        path: name.into(),
                        message: "a device node cannot go into a read-only root".into(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Writes the archive to `path` (mode 0644); returns its size.
    pub fn write_file(&self, path: &Path, mtime: u32) -> Result<u64, ImageError> {
        let file = std::fs::File::create(path).at(path)?;
        let mut buf = std::io::BufWriter::new(file);
        let size = self.write_to(&mut buf, mtime)?;
        let file = buf.into_inner().map_err(|e| e.into_error()).at(path)?;
        file.sync_all().at(path)?;
        crate::set_mode(path, 0o644)?;
        Ok(size)
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A minimal initramfs whose init powers the machine off at once: the
/// baseline of the boot benchmark and the payload of the accelerator probe.
pub fn write_poweroff(path: &Path) -> Result<u64, ImageError> {
    let mut t = Tree::new();
    t.dir("/bin", 0o755)?;
    t.file_from("/bin/busybox", Path::new(crate::BUSYBOX_PATH), 0o755)?;
    t.file(
        "/init",
        b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n".to_vec(),
        0o755,
    )?;
    t.write_file(path, 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// (name, mode, uid, mtime, ino, rdev, data) of one entry.
    pub(crate) type ReadEntry = (String, u32, u32, u32, u32, (u32, u32), Vec<u8>);

    /// Reads an archive back.
    pub(crate) fn read_back(bytes: &[u8]) -> Vec<ReadEntry> {
        let mut entries = Vec::new();
        let mut rest = bytes;
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            let e = reader.entry().clone();
            if e.is_trailer() {
                break;
            }
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            entries.push((
                e.name().to_string(),
                e.mode(),
                e.uid(),
                e.mtime(),
                e.ino(),
                (e.rdev_major(), e.rdev_minor()),
                data,
            ));
            rest = reader.finish().unwrap();
        }
        entries
    }

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.file("/init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
            .unwrap();
        t.file(
            "/etc/tails-server/modules.load",
            b"/lib/modules/x/a.ko\n".to_vec(),
            0o644,
        )
        .unwrap();
        t.symlink("/bin/sh", "busybox").unwrap();
        t.file("/bin/busybox", vec![0x7f, b'E', b'L', b'F', 1, 2, 3], 0o755)
            .unwrap();
        t.char_dev("/dev/console", 5, 1, 0o600).unwrap();
        t.dir_owned("/var/lib/tor", 0o700, 102, 106).unwrap();
        t
    }

    #[test]
    fn a_tree_is_written_out_as_a_directory() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = crate::testutil::TempDir::new("write-dir");
        let root = tmp.path().join("usr");
        let mut t = Tree::new();
        t.file("sbin/tor", b"elf".to_vec(), 0o755).unwrap();
        t.file("share/tor/defaults", b"x".to_vec(), 0o644).unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        t.dir("lib", 0o700).unwrap();
        t.write_dir(&root).unwrap();
        assert_eq!(std::fs::read(root.join("sbin/tor")).unwrap(), b"elf");
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("sbin/tor"), 0o755);
        assert_eq!(mode("share/tor/defaults"), 0o644);
        assert_eq!(mode("lib"), 0o700);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        // Never over something already there.
        assert!(t.write_dir(&root).is_err());
        let mut dev = Tree::new();
        dev.char_dev("dev/null", 1, 3, 0o666).unwrap();
        assert!(dev.write_dir(&tmp.path().join("dev")).is_err());
    }

    #[test]
    fn same_tree_same_bytes_in_any_insertion_order() {
        let mut a = Vec::new();
        sample().write_to(&mut a, 1_700_000_000).unwrap();
        let mut t = Tree::new();
        t.dir_owned("var/lib/tor", 0o700, 102, 106).unwrap();
        t.char_dev("dev/console", 5, 1, 0o600).unwrap();
        t.file("bin/busybox", vec![0x7f, b'E', b'L', b'F', 1, 2, 3], 0o755)
            .unwrap();
        t.symlink("bin/sh", "busybox").unwrap();
        t.file(
            "etc/tails-server/modules.load",
            b"/lib/modules/x/a.ko\n".to_vec(),
            0o644,
        )
        .unwrap();
        t.file("init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
            .unwrap();
        let mut b = Vec::new();
        t.write_to(&mut b, 1_700_000_000).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        sample().write_to(&mut c, 1).unwrap();
        assert_ne!(a, c, "mtime must be part of the archive");
    }

    #[test]
    fn entries_read_back() {
        let mut bytes = Vec::new();
        let n = sample().write_to(&mut bytes, 1_700_000_000).unwrap();
        assert_eq!(n, bytes.len() as u64);
        let entries = read_back(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // Parents were added, before their children.
        for dir in ["bin", "dev", "etc", "etc/tails-server", "var", "var/lib"] {
            assert!(names.contains(&dir), "{dir} missing from {names:?}");
        }
        let init = entries.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.6, b"#!/bin/sh\necho hi\n");
        let sh = entries.iter().find(|e| e.0 == "bin/sh").unwrap();
        assert_eq!(sh.1, 0o120777);
        assert_eq!(sh.6, b"busybox");
        let console = entries.iter().find(|e| e.0 == "dev/console").unwrap();
        assert_eq!((console.1, console.5), (0o020600, (5, 1)));
        let tor = entries.iter().find(|e| e.0 == "var/lib/tor").unwrap();
        assert_eq!((tor.1, tor.2), (0o040700, 102));
        assert!(entries.iter().all(|e| e.3 == 1_700_000_000));
        let inos: Vec<u32> = entries.iter().map(|e| e.4).collect();
        assert_eq!(inos, (1..=entries.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn bad_paths_are_rejected() {
        let mut t = Tree::new();
        assert!(t.file("/../etc/x", vec![], 0o644).is_err());
        assert!(t.dir("/", 0o755).is_err());
    }
}
