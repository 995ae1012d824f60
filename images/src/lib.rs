//! Reproducible guest images for Tails Server, built from Debian packages and cached by
//! a hash of their inputs.
//!
//! One build produces, in `<cache_dir>/<key>/`:
//! - `vmlinux`: the Debian kernel as an ELF image, booted by QEMU `-kernel` through PVH;
//! - `torvm.initramfs`: the Tor VM's early userspace (agent as `/init`, kernel modules,
//!   `/etc`, tor's empty DataDirectory);
//! - `torvm.squashfs`: the Tor VM's read-only `/usr` (busybox, tor, nft, e2fsprogs, their
//!   libraries), mounted by the agent before it runs anything: its pages are read on
//!   demand and can be dropped again, where an initramfs sits whole in the VM's RAM;
//! - `appvm.initramfs`: the App VM's early userspace (agent as `/init`, modules);
//! - `appvm.squashfs`: the App VM's read-only Debian root with the services' packages;
//! - `manifest.json`: what went in ([`Manifest`]).
//!
//! Builds happen in a temporary directory beside the final one, renamed into place at
//! the end, under a lock file, so an interrupted build leaves nothing half-done.

mod command;
pub use command::SYSTEM_DIRS;
pub mod error;
mod host;
pub mod initramfs;
mod kernel;
pub mod modules;
pub mod progress;
mod rootfs;
mod services;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use command::{Tools, BUILD_TOOLS, KEY_TOOLS};
pub use error::ImageError;
use error::IoContext;
use initramfs::Tree;
pub use progress::{NoProgress, Progress, TermProgress};

/// Where images are cached unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/tails-server/images";
/// Changes whenever the builder's output for the same inputs changes.
pub const BUILDER_VERSION: &str = "tails-images 7";
/// The Debian suite everything comes from.
pub const SUITE: &str = "bookworm";
/// The kernel metapackage whose dependency is the kernel used.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// SOURCE_DATE_EPOCH of every build: 2025-05-20T00:00:00Z (fixed, so that builds from
/// the same inputs are identical; it is also the mtime of every file in the images).
pub const SOURCE_DATE_EPOCH: u64 = 1_747_699_200;
/// Packages always installed in the App VM root.
pub const BASE_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "nftables",
    "procps",
    "ca-certificates",
    "curl",
];
/// Host packages whose files go into the Tor VM (their versions are part of the key).
pub const HOST_PACKAGES: &[&str] = &["tor", "nftables", "busybox-static", "e2fsprogs"];
/// busybox-static's binary on the host.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// tor on the host.
pub const TOR_PATH: &str = "/usr/sbin/tor";
/// nft on the host.
pub const NFT_PATH: &str = "/usr/sbin/nft";
/// e2fsprogs' programs the Tor VM's agent runs on its state disk (format a
/// blank one, check one before mounting it).
pub const E2FS_PATHS: &[&str] = &["/usr/sbin/mke2fs", "/usr/sbin/e2fsck"];
/// The x86-64 dynamic loader, at the path binaries name as their interpreter.
pub const DYNAMIC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// busybox applets linked in the Tor VM's /bin.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ip", "ping", "ls", "cat", "ps", "mount", "ifconfig", "nc", "wget", "sleep", "echo",
    "true", "false", "uname", "dmesg", "id",
];
/// Size the Tor VM initramfs should stay under (a warning beyond it, not an error): it
/// is unpacked into the VM's RAM and stays there.
pub const TORVM_INITRAMFS_TARGET: u64 = 8 * 1024 * 1024;
/// In-guest path of the module list the agents load at boot.
pub const MODULES_LOAD_PATH: &str = "/etc/tails-server/modules.load";
/// In-guest path of the modules an agent loads when it first mounts a
/// persistent (ext4) disk, after those of [`MODULES_LOAD_PATH`].
pub const MODULES_DISK_PATH: &str = "/etc/tails-server/modules.disk";

/// File name of the kernel inside an image directory.
pub const VMLINUX: &str = "vmlinux";
/// File name of the Tor VM initramfs.
pub const TORVM_INITRAMFS: &str = "torvm.initramfs";
/// File name of the Tor VM's read-only `/usr`.
pub const TORVM_ROOT: &str = "torvm.squashfs";
/// File name of the App VM initramfs.
pub const APPVM_INITRAMFS: &str = "appvm.initramfs";
/// File name of the App VM root file system.
pub const APPVM_ROOT: &str = "appvm.squashfs";
/// Every file of a build but the manifest (each checked for its size when a build is
/// looked up, each with its sha256 in the manifest).
pub const IMAGE_FILES: [&str; 5] = [
    VMLINUX,
    TORVM_INITRAMFS,
    TORVM_ROOT,
    APPVM_INITRAMFS,
    APPVM_ROOT,
];
/// File name of the manifest.
pub const MANIFEST: &str = "manifest.json";
/// The symlink to the last built (or found) image directory.
pub const CURRENT_LINK: &str = "current";

const TMP_PREFIX: &str = ".tmp-";
const WORK_PREFIX: &str = ".work-";
const OLD_PREFIX: &str = ".old-";
const LOCK_FILE: &str = ".lock";

/// What a build is made from.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    /// Static binary, becomes /init of the Tor VM initramfs.
    pub torvm_agent: PathBuf,
    /// Static binary, becomes /init of the App VM initramfs.
    pub appvm_agent: PathBuf,
    /// `services/*.yaml`; each has a `packages:` list.
    pub services_dir: PathBuf,
    /// Where images are cached (see [`DEFAULT_CACHE_DIR`]).
    pub cache_dir: PathBuf,
}

/// A complete set of built images.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
    pub vmlinux: PathBuf,
    pub torvm_initramfs: PathBuf,
    pub torvm_root: PathBuf,
    pub appvm_initramfs: PathBuf,
    pub appvm_root: PathBuf,
    pub manifest: Manifest,
}

/// What went into a build (`manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cache key (also the directory name).
    pub key: String,
    /// [`BUILDER_VERSION`] of the build.
    pub builder_version: String,
    /// Debian suite.
    pub suite: String,
    /// Kernel binary package, e.g. `linux-image-6.1.0-57-amd64`.
    pub kernel_package: String,
    /// Its Debian version, e.g. `6.1.192-3`.
    pub kernel_package_version: String,
    /// Kernel release, e.g. `6.1.0-57-amd64`.
    pub kernel_version: String,
    /// Packages requested for the App VM root (base + services), sorted.
    pub appvm_packages: Vec<String>,
    /// Tor VM modules, in load order.
    pub torvm_modules: Vec<String>,
    /// App VM modules, in load order.
    pub appvm_modules: Vec<String>,
    /// Tor VM modules loaded when it first mounts a persistent disk, in load
    /// order (not at boot). Absent from manifests written before the split.
    #[serde(default)]
    pub torvm_disk_modules: Vec<String>,
    /// App VM modules loaded when it first mounts a persistent disk.
    #[serde(default)]
    pub appvm_disk_modules: Vec<String>,
    /// Host package versions copied into the Tor VM (tor, nftables, busybox-static).
    pub host_packages: BTreeMap<String, String>,
    /// uid and gid of debian-tor in the Tor VM (the host's).
    pub debian_tor_ids: (u32, u32),
    /// apt sources the App VM root was built from.
    pub apt_sources: Vec<String>,
    /// File name → size in bytes.
    pub sizes: BTreeMap<String, u64>,
    /// File name → sha256 (hex).
    pub sha256: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH used (the mtime of every file in the images).
    pub built_at_epoch: u64,
    /// Wall-clock seconds per build stage (informational).
    pub stage_seconds: BTreeMap<String, f64>,
}

/// The App VM packages: [`BASE_PACKAGES`] plus every service's, sorted, deduplicated.
pub fn appvm_packages(inputs: &BuildInputs) -> Result<Vec<String>, ImageError> {
    let mut all = services::all_packages(&inputs.services_dir)?;
    all.extend(BASE_PACKAGES.iter().map(|s| s.to_string()));
    all.sort();
    all.dedup();
    Ok(all)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Hashes a (name, value) pair unambiguously.
fn field(h: &mut Sha256, name: &str, value: &str) {
    for part in [name, value] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
}

struct KeyInputs {
    key: String,
    packages: Vec<String>,
    host_packages: BTreeMap<String, String>,
    debian_tor_ids: (u32, u32),
}

fn key_inputs(inputs: &BuildInputs, tools: &Tools) -> Result<KeyInputs, ImageError> {
    let mut h = Sha256::new();
    field(&mut h, "builder", BUILDER_VERSION);
    field(&mut h, "suite", SUITE);
    field(&mut h, "kernel", KERNEL_METAPACKAGE);
    field(&mut h, "epoch", &SOURCE_DATE_EPOCH.to_string());
    field(&mut h, "torvm_agent", &sha256_file(&inputs.torvm_agent)?);
    field(&mut h, "appvm_agent", &sha256_file(&inputs.appvm_agent)?);
    let packages = appvm_packages(inputs)?;
    for p in &packages {
        field(&mut h, "package", p);
    }
    let mut host_packages = BTreeMap::new();
    for (p, v) in host::package_versions(tools, HOST_PACKAGES)? {
        field(&mut h, "host", &format!("{p}={v}"));
        host_packages.insert(p, v);
    }
    let ids = host::debian_tor_ids(tools)?;
    field(&mut h, "debian-tor", &format!("{}:{}", ids.0, ids.1));
    field(&mut h, "torvm_modules", &modules::torvm_roots().join(","));
    field(&mut h, "appvm_modules", &modules::appvm_roots().join(","));
    field(&mut h, "disk_modules", &modules::DISK_MODULES.join(","));
    Ok(KeyInputs {
        key: hex(&h.finalize()),
        packages,
        host_packages,
        debian_tor_ids: ids,
    })
}

/// The sha256 (hex) of everything a build depends on: [`BUILDER_VERSION`], both agent
/// binaries, the App VM package list, the host's tor/nftables/busybox-static versions
/// (and debian-tor ids), the suite and the kernel metapackage.
pub fn cache_key(inputs: &BuildInputs) -> Result<String, ImageError> {
    let tools = Tools::find(KEY_TOOLS, false)?;
    Ok(key_inputs(inputs, &tools)?.key)
}

fn images_in(dir: &Path, manifest: Manifest) -> Images {
    Images {
        dir: dir.to_path_buf(),
        vmlinux: dir.join(VMLINUX),
        torvm_initramfs: dir.join(TORVM_INITRAMFS),
        torvm_root: dir.join(TORVM_ROOT),
        appvm_initramfs: dir.join(APPVM_INITRAMFS),
        appvm_root: dir.join(APPVM_ROOT),
        manifest,
    }
}

/// The images in `dir` if they are complete: the manifest parses and names `key`, and
/// every file is present with the size the manifest records.
fn load_complete(dir: &Path, key: &str) -> Option<Images> {
    let text = std::fs::read(dir.join(MANIFEST)).ok()?;
    let manifest: Manifest = serde_json::from_slice(&text).ok()?;
    if manifest.key != key {
        return None;
    }
    for name in IMAGE_FILES {
        let meta = std::fs::metadata(dir.join(name)).ok()?;
        if !meta.is_file() || manifest.sizes.get(name) != Some(&meta.len()) {
            return None;
        }
    }
    Some(images_in(dir, manifest))
}

/// The cached images for the current inputs, if a complete build of them exists.
pub fn find(inputs: &BuildInputs) -> Result<Option<Images>, ImageError> {
    let key = cache_key(inputs)?;
    Ok(load_complete(&inputs.cache_dir.join(&key), &key))
}

/// Builds the images for `inputs` (or returns the cached ones, unless `force`).
pub fn build(
    inputs: &BuildInputs,
    progress: &dyn Progress,
    force: bool,
) -> Result<Images, ImageError> {
    let result = build_inner(inputs, progress, force);
    progress.finish();
    result
}

fn build_inner(
    inputs: &BuildInputs,
    progress: &dyn Progress,
    force: bool,
) -> Result<Images, ImageError> {
    progress.stage("checks");
    let tools = Tools::find(BUILD_TOOLS, true)?;
    host::require_static(&inputs.torvm_agent, "the Tor VM agent")?;
    host::require_static(&inputs.appvm_agent, "the App VM agent")?;
    host::require_static(Path::new(BUSYBOX_PATH), "busybox (from busybox-static)")?;
    let ki = key_inputs(inputs, &tools)?;
    let cache = &inputs.cache_dir;
    let final_dir = cache.join(&ki.key);
    if !force {
        if let Some(images) = load_complete(&final_dir, &ki.key) {
            progress.message(&format!("cached: {}", final_dir.display()));
            update_current(cache, &ki.key)?;
            clean_stale_if_idle(cache);
            return Ok(images);
        }
    }
    std::fs::create_dir_all(cache).at(cache)?;
    set_mode(cache, 0o755)?;
    let lock_path = cache.join(LOCK_FILE);
    let lock = std::fs::File::create(&lock_path).at(&lock_path)?;
    progress.message("waiting for the cache lock");
    lock.lock().at(&lock_path)?;
    // Another build may have finished while we waited.
    if !force {
        if let Some(images) = load_complete(&final_dir, &ki.key) {
            update_current(cache, &ki.key)?;
            return Ok(images);
        }
    }
    clean_stale(cache)?;
    let tmp = cache.join(format!("{TMP_PREFIX}{}", ki.key));
    let work = cache.join(format!("{WORK_PREFIX}{}", ki.key));
    let _cleanup = RemoveOnDrop(vec![tmp.clone(), work.clone()]);
    for d in [&tmp, &work] {
        std::fs::create_dir_all(d).at(d)?;
        set_mode(d, 0o755)?;
    }
    let manifest = build_into(inputs, &tools, &ki, &tmp, &work, progress)?;

    progress.stage("install");
    let manifest_path = tmp.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    write_synced(&manifest_path, &json)?;
    sync_dir(&tmp)?;
    if final_dir.symlink_metadata().is_ok() {
        let old = cache.join(format!("{OLD_PREFIX}{}", ki.key));
        rootfs::remove_tree(&old)?;
        std::fs::rename(&final_dir, &old).at(&final_dir)?;
        std::fs::rename(&tmp, &final_dir).at(&final_dir)?;
        rootfs::remove_tree(&old)?;
    } else {
        std::fs::rename(&tmp, &final_dir).at(&final_dir)?;
    }
    update_current(cache, &ki.key)?;
    sync_dir(cache)?;
    progress.message(&format!("installed {}", final_dir.display()));
    drop(lock);
    Ok(images_in(&final_dir, manifest))
}

fn build_into(
    inputs: &BuildInputs,
    tools: &Tools,
    ki: &KeyInputs,
    out: &Path,
    work: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, ImageError> {
    let epoch32 = u32::try_from(SOURCE_DATE_EPOCH).map_err(|_| ImageError::TooLarge {
        name: "SOURCE_DATE_EPOCH".into(),
        size: SOURCE_DATE_EPOCH,
    })?;
    let mut stage_seconds = BTreeMap::new();
    let mut sizes = BTreeMap::new();
    let mut timer = StageTimer::start(progress, "kernel");

    // Kernel.
    let package = kernel::resolve_package(tools, KERNEL_METAPACKAGE)?;
    let kpkg = kernel::fetch(tools, &package, &work.join("kernel"), progress)?;
    progress.message(&format!("decompressing vmlinuz-{}", kpkg.kver));
    let vmlinuz_path = kernel::vmlinuz_path(&kpkg);
    let vmlinuz = std::fs::read(&vmlinuz_path).at(&vmlinuz_path)?;
    let vmlinux = kernel::extract_vmlinux(tools, &vmlinuz)?;
    write_synced(&out.join(VMLINUX), &vmlinux)?;
    sizes.insert(VMLINUX.to_string(), vmlinux.len() as u64);
    drop((vmlinuz, vmlinux));
    timer.next(&mut stage_seconds, "modules");

    // Modules.
    let mod_dir = kpkg.modules_dir();
    if !mod_dir.join("modules.dep").is_file() {
        progress.message("depmod");
        let mut cmd = tools.command("depmod");
        cmd.arg("-b").arg(&kpkg.root).arg(&kpkg.kver);
        command::run(
            cmd,
            None,
            Some(progress),
            "is kmod installed? run ./setup.sh",
        )?;
    }
    let db = modules::ModuleDb::load(&mod_dir)?;
    let tor_mods = db.closure(&modules::torvm_roots())?;
    let app_mods = db.closure(&modules::appvm_roots())?;
    let tor_disk_mods = db.closure_after(&tor_mods, modules::DISK_MODULES)?;
    let app_disk_mods = db.closure_after(&app_mods, modules::DISK_MODULES)?;
    for m in [&tor_mods, &app_mods, &tor_disk_mods, &app_disk_mods]
        .into_iter()
        .flatten()
    {
        if !m.path.ends_with(".ko") {
            return Err(ImageError::Module(format!(
                "{} is compressed ({}); the agents load plain .ko files",
                m.name, m.path
            )));
        }
    }
    timer.next(&mut stage_seconds, "torvm initramfs");

    // Tor VM initramfs.
    let mut tor = Tree::new();
    base_tree(&mut tor, &inputs.torvm_agent)?;
    add_modules(&mut tor, &mod_dir, &kpkg.kver, &tor_mods, &tor_disk_mods)?;
    for d in ["etc", "root"] {
        tor.dir(d, if d == "root" { 0o700 } else { 0o755 })?;
    }
    let (uid, gid) = ki.debian_tor_ids;
    // Owned by debian-tor as in Debian's tor package: tor refuses a DataDirectory that
    // is not owned by the user it runs as.
    tor.dir_owned("var/lib/tor", 0o700, uid, gid)?;
    // Everything tor, nft and e2fsprogs are made of goes into the squashfs (`usr`,
    // mounted on /usr), under its merged-/usr path; the initramfs links /bin, /sbin,
    // /lib64 and each /lib/<dir> into /usr, as Debian does.
    let mut usr = Tree::new();
    let mut programs = vec![BUSYBOX_PATH];
    for applet in BUSYBOX_APPLETS {
        usr.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    let mut libs = vec![PathBuf::from(DYNAMIC_LOADER)];
    for bin in [TOR_PATH, NFT_PATH].iter().chain(E2FS_PATHS) {
        progress.message(&format!("ldd {bin}"));
        programs.push(bin);
        libs.extend(host::shared_libs(tools, Path::new(bin))?);
    }
    libs.sort();
    libs.dedup();
    for bin in programs {
        usr.file_from(&usr_path(bin)?, Path::new(bin), 0o755)?;
    }
    for lib in &libs {
        let name = lib.to_string_lossy();
        usr.file_from(&usr_path(&name)?, lib, host_mode(lib)?)?;
    }
    // tor's Debian defaults (the geoip files, in tor-geoipdb, are left out).
    let defaults = Path::new("/usr/share/tor/tor-service-defaults-torrc");
    if defaults.is_file() {
        usr.file_from(&usr_path(&defaults.to_string_lossy())?, defaults, 0o644)?;
    }
    tor.dir("usr", 0o755)?;
    for link in merged_usr_links(&libs)? {
        tor.symlink(&link.0, &link.1)?;
    }
    tor.file(
        "etc/passwd",
        format!(
            "root:x:0:0:root:/root:/bin/sh\ndebian-tor:x:{uid}:{gid}::/var/lib/tor:/bin/false\n"
        )
        .into_bytes(),
        0o644,
    )?;
    tor.file(
        "etc/group",
        format!("root:x:0:\ndebian-tor:x:{gid}:\n").into_bytes(),
        0o644,
    )?;
    tor.file(
        "etc/nsswitch.conf",
        b"passwd: files\ngroup: files\nhosts: files\n".to_vec(),
        0o644,
    )?;
    tor.file("etc/hosts", b"127.0.0.1\tlocalhost\n".to_vec(), 0o644)?;
    // mke2fs's profiles (the features of an ext4), from e2fsprogs.
    let mke2fs_conf = Path::new("/etc/mke2fs.conf");
    if mke2fs_conf.is_file() {
        tor.file_from(&mke2fs_conf.to_string_lossy(), mke2fs_conf, 0o644)?;
    }
    let size = tor.write_file(&out.join(TORVM_INITRAMFS), epoch32)?;
    if size > TORVM_INITRAMFS_TARGET {
        progress.message(&format!(
            "warning: {TORVM_INITRAMFS} is {size} bytes, over the {TORVM_INITRAMFS_TARGET}-byte target"
        ));
    }
    sizes.insert(TORVM_INITRAMFS.to_string(), size);
    timer.next(&mut stage_seconds, "torvm root (squashfs)");
    let usr_dir = work.join("torvm-usr");
    rootfs::remove_tree(&usr_dir)?;
    usr.write_dir(&usr_dir)?;
    pack_root(tools, &usr_dir, out, TORVM_ROOT, &mut sizes, progress)?;
    timer.next(&mut stage_seconds, "appvm initramfs");

    // App VM initramfs.
    let mut app = Tree::new();
    base_tree(&mut app, &inputs.appvm_agent)?;
    add_modules(&mut app, &mod_dir, &kpkg.kver, &app_mods, &app_disk_mods)?;
    for d in ["lower", "rw", "newroot"] {
        app.dir(d, 0o755)?;
    }
    let size = app.write_file(&out.join(APPVM_INITRAMFS), epoch32)?;
    sizes.insert(APPVM_INITRAMFS.to_string(), size);
    // The kernel package is no longer needed; free the space before mmdebstrap.
    rootfs::remove_tree(&work.join("kernel"))?;
    timer.next(&mut stage_seconds, "appvm root (mmdebstrap)");

    // App VM root.
    let sources = rootfs::apt_sources(SUITE);
    let root = work.join("appvm-root");
    rootfs::mmdebstrap(
        tools,
        SUITE,
        &ki.packages,
        &sources,
        SOURCE_DATE_EPOCH,
        &root,
        progress,
    )
    .map_err(|e| match e {
        ImageError::UnknownPackage {
            package,
            suite,
            files: _,
        } => ImageError::UnknownPackage {
            files: services::files_naming(&inputs.services_dir, &package),
            package,
            suite,
        },
        e => e,
    })?;
    rootfs::scrub(&root)?;
    timer.next(&mut stage_seconds, "squashfs");
    pack_root(tools, &root, out, APPVM_ROOT, &mut sizes, progress)?;
    timer.next(&mut stage_seconds, "checksums");

    let mut sha256 = BTreeMap::new();
    for name in IMAGE_FILES {
        sha256.insert(name.to_string(), sha256_file(&out.join(name))?);
    }
    timer.end(&mut stage_seconds);

    Ok(Manifest {
        key: ki.key.clone(),
        builder_version: BUILDER_VERSION.to_string(),
        suite: SUITE.to_string(),
        kernel_package: kpkg.package.clone(),
        kernel_package_version: kpkg.version.clone(),
        kernel_version: kpkg.kver.clone(),
        appvm_packages: ki.packages.clone(),
        torvm_modules: tor_mods.iter().map(|m| m.name.clone()).collect(),
        appvm_modules: app_mods.iter().map(|m| m.name.clone()).collect(),
        torvm_disk_modules: tor_disk_mods.iter().map(|m| m.name.clone()).collect(),
        appvm_disk_modules: app_disk_mods.iter().map(|m| m.name.clone()).collect(),
        host_packages: ki.host_packages.clone(),
        debian_tor_ids: ki.debian_tor_ids,
        apt_sources: sources,
        sizes,
        sha256,
        built_at_epoch: SOURCE_DATE_EPOCH,
        stage_seconds,
    })
}

/// Packs the staged tree `root` into the squashfs `out/name`, records its size, and
/// removes the staged tree.
fn pack_root(
    tools: &Tools,
    root: &Path,
    out: &Path,
    name: &str,
    sizes: &mut BTreeMap<String, u64>,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let size = rootfs::mksquashfs(tools, root, &out.join(name), SOURCE_DATE_EPOCH, progress)?;
    sizes.insert(name.to_string(), size);
    rootfs::remove_tree(root)
}

/// Where a host file of a merged-/usr system lives below /usr (the path inside the
/// Tor VM's squashfs): `/usr/sbin/tor` is `sbin/tor`, `/lib/x86_64-linux-gnu/libc.so.6`
/// and `/bin/busybox` are `lib/x86_64-linux-gnu/libc.so.6` and `bin/busybox`.
fn usr_path(host: &str) -> Result<String, ImageError> {
    let rel = host.trim_start_matches('/');
    let rel = rel.strip_prefix("usr/").unwrap_or(rel);
    let top = rel.split('/').next().unwrap_or_default();
    if !["bin", "sbin", "lib", "lib64", "share"].contains(&top) || !rel.contains('/') {
        return Err(ImageError::Binary {
            path: host.into(),
            message:
                "not under /usr, /bin, /sbin, /lib or /lib64: no place for it in the Tor VM's /usr"
                    .into(),
        });
    }
    Ok(rel.to_string())
}

/// The symlinks that make the initramfs a merged-/usr system once the squashfs is on
/// /usr: `bin`, `sbin` and `lib64` whole, and each directory (or file) directly in
/// `/lib` that `libs` use (`/lib` itself holds the modules, in the initramfs).
fn merged_usr_links(libs: &[PathBuf]) -> Result<Vec<(String, String)>, ImageError> {
    let mut links: Vec<(String, String)> = ["bin", "sbin", "lib64"]
        .iter()
        .map(|d| (d.to_string(), format!("usr/{d}")))
        .collect();
    let mut under_lib = std::collections::BTreeSet::new();
    for lib in libs {
        let rel = usr_path(&lib.to_string_lossy())?;
        if let Some(rest) = rel.strip_prefix("lib/") {
            let first = rest.split('/').next().unwrap_or(rest);
            if first == "modules" {
                return Err(ImageError::Binary {
                    path: lib.clone(),
                    message: "a library under /lib/modules".into(),
                });
            }
            under_lib.insert(first.to_string());
        }
    }
    links.extend(
        under_lib
            .into_iter()
            .map(|d| (format!("lib/{d}"), format!("../usr/lib/{d}"))),
    );
    Ok(links)
}

/// What both initramfs images share: /init, the usual mount points and device nodes.
fn base_tree(tree: &mut Tree, agent: &Path) -> Result<(), ImageError> {
    tree.file_from("init", agent, 0o755)?;
    for d in ["dev", "proc", "sys", "run", "etc"] {
        tree.dir(d, 0o755)?;
    }
    tree.dir("tmp", 0o1777)?;
    tree.char_dev("dev/console", 5, 1, 0o600)?;
    tree.char_dev("dev/null", 1, 3, 0o666)?;
    Ok(())
}

/// The module files of `boot` and `disk`, and their two lists
/// ([`MODULES_LOAD_PATH`], [`MODULES_DISK_PATH`]).
fn add_modules(
    tree: &mut Tree,
    mod_dir: &Path,
    kver: &str,
    boot: &[modules::Module],
    disk: &[modules::Module],
) -> Result<(), ImageError> {
    for m in boot.iter().chain(disk) {
        tree.file_from(
            &format!("lib/modules/{kver}/{}", m.path),
            &mod_dir.join(&m.path),
            0o644,
        )?;
    }
    tree.file(
        MODULES_LOAD_PATH,
        modules::modules_load(kver, boot).into_bytes(),
        0o644,
    )?;
    tree.file(
        MODULES_DISK_PATH,
        modules::modules_load(kver, disk).into_bytes(),
        0o644,
    )
}

/// 0755 if the host file is executable by anyone, else 0644.
fn host_mode(path: &Path) -> Result<u32, ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).at(path)?.permissions().mode();
    Ok(if mode & 0o111 != 0 { 0o755 } else { 0o644 })
}

struct StageTimer<'a> {
    progress: &'a dyn Progress,
    name: String,
    started: Instant,
}

impl<'a> StageTimer<'a> {
    fn start(progress: &'a dyn Progress, name: &str) -> Self {
        progress.stage(name);
        Self {
            progress,
            name: name.to_string(),
            started: Instant::now(),
        }
    }
    fn end(&mut self, record: &mut BTreeMap<String, f64>) {
        let secs = (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        record.insert(self.name.clone(), secs);
    }
    fn next(&mut self, record: &mut BTreeMap<String, f64>, name: &str) {
        self.end(record);
        self.progress.stage(name);
        self.name = name.to_string();
        self.started = Instant::now();
    }
}

/// Removes the listed paths when dropped (the temporary and work directories of a build:
/// after a successful rename the temporary directory no longer exists).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            // Best effort; a leftover is removed by the next build's clean_stale.
            let _ = rootfs::remove_tree(p);
        }
    }
}

/// Removes leftovers of interrupted builds, unmounting what an interrupted mmdebstrap
/// left mounted in them. Called with the cache lock held, so none of them belongs to a
/// running build. Tries every leftover; returns the first error.
fn clean_stale(cache: &Path) -> Result<(), ImageError> {
    let mut first_err = None;
    for entry in std::fs::read_dir(cache).at(cache)? {
        let entry = entry.at(cache)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [TMP_PREFIX, WORK_PREFIX, OLD_PREFIX]
            .iter()
            .any(|p| name.starts_with(p))
            || name == ".current.tmp"
        {
            let path = entry.path();
            if let Err(e) = rootfs::unmount_below(&path).and_then(|()| rootfs::remove_tree(&path)) {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Best effort: removes leftovers of interrupted builds if no build is running.
fn clean_stale_if_idle(cache: &Path) {
    let Ok(lock) = std::fs::File::create(cache.join(LOCK_FILE)) else {
        return;
    };
    if lock.try_lock().is_ok() {
        // Leftovers only waste space; failing to remove them is not an error here.
        let _ = clean_stale(cache);
    }
}

/// Points `<cache>/current` at `<key>` (atomically).
fn update_current(cache: &Path, key: &str) -> Result<(), ImageError> {
    let tmp = cache.join(".current.tmp");
    rootfs::remove_tree(&tmp)?;
    std::os::unix::fs::symlink(key, &tmp).at(&tmp)?;
    let link = cache.join(CURRENT_LINK);
    std::fs::rename(&tmp, &link).at(&link)
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).at(path)?;
    f.write_all(data).at(path)?;
    f.sync_all().at(path)?;
    set_mode(path, 0o644)
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).at(path)
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    /// A temporary directory removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "tails-images-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testutil::TempDir;

    fn inputs(dir: &Path) -> BuildInputs {
        let services = dir.join("services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(
            services.join("web.yaml"),
            "name: web\npackages: [nginx-light]\n",
        )
        .unwrap();
        std::fs::write(dir.join("tor-agent"), b"agent one").unwrap();
        std::fs::write(dir.join("app-agent"), b"app agent").unwrap();
        BuildInputs {
            torvm_agent: dir.join("tor-agent"),
            appvm_agent: dir.join("app-agent"),
            services_dir: services,
            cache_dir: dir.join("cache"),
        }
    }

    fn host_ready() -> bool {
        HOST_PACKAGES.iter().all(|p| {
            std::process::Command::new("dpkg-query")
                .args(["-W", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    #[test]
    fn cache_key_follows_inputs() {
        if !host_ready() {
            eprintln!("skipped: tor, nftables or busybox-static not installed (run ./setup.sh)");
            return;
        }
        let dir = TempDir::new("key");
        let inp = inputs(dir.path());
        let k1 = cache_key(&inp).unwrap();
        assert_eq!(k1.len(), 64);
        assert_eq!(k1, cache_key(&inp).unwrap(), "key must be stable");
        std::fs::write(&inp.torvm_agent, b"agent two").unwrap();
        let k2 = cache_key(&inp).unwrap();
        assert_ne!(k1, k2, "key must change with the Tor VM agent");
        std::fs::write(&inp.appvm_agent, b"other app agent").unwrap();
        let k3 = cache_key(&inp).unwrap();
        assert_ne!(k2, k3, "key must change with the App VM agent");
        std::fs::write(inp.services_dir.join("x.yaml"), "packages: [prosody]\n").unwrap();
        assert_ne!(
            k3,
            cache_key(&inp).unwrap(),
            "key must change with the packages"
        );
        // Same package set in a different order or split: same key.
        std::fs::remove_file(inp.services_dir.join("x.yaml")).unwrap();
        std::fs::write(
            inp.services_dir.join("a.yaml"),
            "packages: [curl, nginx-light]\n",
        )
        .unwrap();
        assert_eq!(k3, cache_key(&inp).unwrap());
    }

    #[test]
    fn find_requires_a_complete_directory() {
        if !host_ready() {
            eprintln!("skipped: host packages missing");
            return;
        }
        let dir = TempDir::new("find");
        let inp = inputs(dir.path());
        assert!(find(&inp).unwrap().is_none());
        let key = cache_key(&inp).unwrap();
        let d = inp.cache_dir.join(&key);
        std::fs::create_dir_all(&d).unwrap();
        let mut sizes = BTreeMap::new();
        for name in IMAGE_FILES {
            std::fs::write(d.join(name), name.as_bytes()).unwrap();
            sizes.insert(name.to_string(), name.len() as u64);
        }
        let m = Manifest {
            key: key.clone(),
            builder_version: BUILDER_VERSION.into(),
            suite: SUITE.into(),
            kernel_package: "linux-image-x".into(),
            kernel_package_version: "1".into(),
            kernel_version: "x".into(),
            appvm_packages: vec![],
            torvm_modules: vec![],
            appvm_modules: vec![],
            torvm_disk_modules: vec![],
            appvm_disk_modules: vec![],
            host_packages: BTreeMap::new(),
            debian_tor_ids: (1, 2),
            apt_sources: vec![],
            sizes,
            sha256: BTreeMap::new(),
            built_at_epoch: SOURCE_DATE_EPOCH,
            stage_seconds: BTreeMap::new(),
        };
        std::fs::write(d.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        let found = find(&inp).unwrap().unwrap();
        assert_eq!(found.manifest, m);
        assert_eq!(found.appvm_root, d.join(APPVM_ROOT));
        std::fs::write(d.join(APPVM_ROOT), b"truncated").unwrap();
        assert!(
            find(&inp).unwrap().is_none(),
            "size mismatch must not count as complete"
        );
        std::fs::write(d.join(APPVM_ROOT), APPVM_ROOT.as_bytes()).unwrap();
        std::fs::write(d.join(MANIFEST), b"{not json").unwrap();
        assert!(
            find(&inp).unwrap().is_none(),
            "a corrupt manifest must not count"
        );
    }

    #[test]
    fn host_files_map_to_their_merged_usr_place() {
        assert_eq!(usr_path("/usr/sbin/tor").unwrap(), "sbin/tor");
        assert_eq!(usr_path("/bin/busybox").unwrap(), "bin/busybox");
        assert_eq!(
            usr_path("/lib/x86_64-linux-gnu/libc.so.6").unwrap(),
            "lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            usr_path("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap(),
            "lib/x86_64-linux-gnu/libz.so.1"
        );
        assert_eq!(
            usr_path(DYNAMIC_LOADER).unwrap(),
            "lib64/ld-linux-x86-64.so.2"
        );
        for bad in ["/etc/passwd", "/opt/x/lib.so", "/usr/tor", "/lib"] {
            assert!(usr_path(bad).is_err(), "{bad}");
        }
        let links = merged_usr_links(&[
            PathBuf::from(DYNAMIC_LOADER),
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libz.so.1"),
        ])
        .unwrap();
        assert_eq!(
            links,
            [
                ("bin", "usr/bin"),
                ("sbin", "usr/sbin"),
                ("lib64", "usr/lib64"),
                ("lib/x86_64-linux-gnu", "../usr/lib/x86_64-linux-gnu"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(merged_usr_links(&[PathBuf::from("/lib/modules/x/a.ko")]).is_err());
    }

    #[test]
    fn stale_temporaries_are_cleaned_and_current_points_to_key() {
        let dir = TempDir::new("stale");
        let c = dir.path();
        std::fs::create_dir_all(c.join(".tmp-abc/x")).unwrap();
        std::fs::create_dir_all(c.join(".work-abc")).unwrap();
        std::fs::create_dir_all(c.join("abc")).unwrap();
        clean_stale(c).unwrap();
        assert!(!c.join(".tmp-abc").exists() && !c.join(".work-abc").exists());
        assert!(c.join("abc").is_dir());
        update_current(c, "abc").unwrap();
        update_current(c, "abc").unwrap();
        assert_eq!(
            std::fs::read_link(c.join(CURRENT_LINK)).unwrap(),
            PathBuf::from("abc")
        );
    }

    /// One real build (downloads the kernel, runs mmdebstrap; several minutes, root).
    /// `TAILS_IMAGES_TEST_CACHE=/some/dir cargo test -p tails-images -- --ignored`
    #[test]
    #[ignore]
    fn real_build() {
        let cache = std::env::var_os("TAILS_IMAGES_TEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("tails-images-real-build"));
        let inp = BuildInputs {
            torvm_agent: BUSYBOX_PATH.into(),
            appvm_agent: BUSYBOX_PATH.into(),
            services_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../services"),
            cache_dir: cache,
        };
        let images = build(&inp, &TermProgress::new(), false).unwrap();
        assert!(std::fs::read(&images.vmlinux)
            .unwrap()
            .starts_with(b"\x7fELF"));
        assert!(images.manifest.sizes[TORVM_INITRAMFS] <= TORVM_INITRAMFS_TARGET);
        let again = find(&inp).unwrap().unwrap();
        assert_eq!(again.manifest, images.manifest);
    }
}
