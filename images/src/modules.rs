//! Kernel module selection: the root module sets of each VM, and their dependency
//! closure from `modules.dep` in load order (dependencies first), skipping modules
//! built into the kernel (`modules.builtin`). Soft `pre:` dependencies
//! (`modules.softdep`, e.g. libcrc32c needs a crc32c implementation, which it would
//! otherwise request through modprobe, absent from the guests) count as dependencies,
//! resolved through `modules.alias`, preferring the portable `*_generic` implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{ImageError, IoContext};

/// Networking, vsock and nftables modules both VMs need: what their boot
/// rulesets use (`meta`, `payload`, `cmp`, `lookup` and `counter` are in
/// nf_tables itself; `ct` is nft_ct), nothing more. Every module costs a
/// few milliseconds of a TCG boot (signature, relocation, init).
pub const NET_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    "nf_tables",
    "nft_ct",
    "nf_conntrack",
    "af_packet",
];

/// NAT, for the Tor VM only: its `redirect to :<port>` of the App VM's TCP
/// and DNS to tor (the App VM's table has no nat chain).
pub const NAT_MODULES: &[&str] = &["nft_chain_nat", "nft_redir", "nft_nat", "nf_nat"];

/// Both VMs' entropy source: QEMU's virtio-rng device, fed from the host's
/// /dev/urandom, seeds the guest's generator at boot (tor's keys, the App
/// VM's clock offset).
pub const RNG_MODULES: &[&str] = &["virtio_rng"];

/// The virtio disk: both VMs' read-only squashfs is on one.
pub const BLOCK_MODULES: &[&str] = &["virtio_blk"];

/// ext4, for a persistent disk (the Tor VM's state, the App VM's data): loaded
/// by the agent when it first mounts one, not at boot (ext4 and jbd2 are the
/// largest modules of all; a stack without persistence never needs them).
pub const DISK_MODULES: &[&str] = &["ext4"];

/// Root modules of the Tor VM at boot: networking and NAT, plus the disk of
/// its read-only squashfs /usr.
pub fn torvm_roots() -> Vec<&'static str> {
    let mut v = NET_MODULES.to_vec();
    v.extend(NAT_MODULES);
    v.extend(RNG_MODULES);
    v.extend(BLOCK_MODULES);
    v.push("squashfs");
    v
}

/// Root modules of the App VM at boot: networking plus its root file system
/// (virtio disk, squashfs lower layer, overlay).
pub fn appvm_roots() -> Vec<&'static str> {
    let mut v = NET_MODULES.to_vec();
    v.extend(RNG_MODULES);
    v.extend(BLOCK_MODULES);
    v.extend(["squashfs", "overlay"]);
    v
}

/// A module's canonical name: the file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.find(".ko").map_or(file, |i| &file[..i]);
    stem.replace('-', "_")
}

/// The parsed `modules.dep` and `modules.builtin` of one kernel.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// Module name → (path relative to `/lib/modules/<kver>`, dependency paths).
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// Module name → names (or aliases) to load before it.
    softdeps: BTreeMap<String, Vec<String>>,
    /// Alias → module names.
    aliases: BTreeMap<String, Vec<String>>,
}

/// One module to load: its name and path relative to `/lib/modules/<kver>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: String,
}

impl ModuleDb {
    /// Parses the text of `modules.dep` and `modules.builtin`.
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<Self, ImageError> {
        let mut modules = BTreeMap::new();
        for (n, line) in modules_dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or_else(|| {
                ImageError::Module(format!("modules.dep line {}: no ':' in {line:?}", n + 1))
            })?;
            let path = path.trim().to_string();
            let deps = deps.split_whitespace().map(str::to_string).collect();
            modules.insert(module_name(&path), (path, deps));
        }
        let builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(Self {
            modules,
            builtin,
            ..Self::default()
        })
    }

    /// Adds the `pre:` soft dependencies of `modules.softdep` and the plain (wildcard-free)
    /// aliases of `modules.alias`.
    pub fn with_softdeps(mut self, modules_softdep: &str, modules_alias: &str) -> Self {
        for line in modules_softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut pre = false;
            for w in words {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => self
                        .softdeps
                        .entry(module_name(module))
                        .or_default()
                        .push(name.to_string()),
                    _ => {}
                }
            }
        }
        for line in modules_alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(alias), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                if !alias.contains(['*', '?', '[']) {
                    self.aliases
                        .entry(alias.to_string())
                        .or_default()
                        .push(module_name(module));
                }
            }
        }
        self
    }

    /// The loadable module a soft dependency names, if any: the module itself, else the
    /// modules with that alias, preferring `*_generic` (hardware-accelerated variants
    /// may not load on the guest's CPU model), else the first by name.
    fn resolve_soft(&self, name: &str) -> Option<String> {
        let own = module_name(name);
        if self.modules.contains_key(&own) {
            return Some(own);
        }
        let mut candidates: Vec<&String> = self
            .aliases
            .get(name)?
            .iter()
            .filter(|m| self.modules.contains_key(*m))
            .collect();
        candidates.sort();
        candidates
            .iter()
            .find(|m| m.ends_with("_generic"))
            .or_else(|| candidates.first())
            .map(|m| (*m).clone())
    }

    /// Reads `modules.dep` and `modules.builtin` from a module directory.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let dep = std::fs::read_to_string(dir.join("modules.dep")).at(dir.join("modules.dep"))?;
        let builtin_path = dir.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_path).at(builtin_path)?;
        // Both files are optional: without them, no soft dependencies.
        let softdep = std::fs::read_to_string(dir.join("modules.softdep")).unwrap_or_default();
        let alias = std::fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
        Ok(Self::parse(&dep, &builtin)?.with_softdeps(&softdep, &alias))
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// The modules to load for `roots`, dependencies before dependents, each once.
    /// Built-in roots are skipped; an unknown module or a dependency cycle is an error.
    pub fn closure(&self, roots: &[&str]) -> Result<Vec<Module>, ImageError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut stack = Vec::new();
        for root in roots {
            let name = module_name(root);
            if self.builtin.contains(&name) && !self.modules.contains_key(&name) {
                continue;
            }
            self.visit(&name, root, &mut stack, &mut done, &mut order)?;
        }
        Ok(order)
    }

    /// The modules to load for `roots` once `loaded` (a [`Self::closure`]) is
    /// loaded: their closure without what `loaded` holds, in load order.
    pub fn closure_after(
        &self,
        loaded: &[Module],
        roots: &[&str],
    ) -> Result<Vec<Module>, ImageError> {
        let mut all = self.closure(roots)?;
        all.retain(|m| !loaded.iter().any(|l| l.name == m.name));
        Ok(all)
    }

    fn visit(
        &self,
        name: &str,
        wanted_by: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), ImageError> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(i) = stack.iter().position(|s| s == name) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(name.to_string());
            return Err(ImageError::Module(format!(
                "dependency cycle: {}",
                cycle.join(" -> ")
            )));
        }
        let Some((path, deps)) = self.modules.get(name) else {
            let via = if wanted_by == name {
                String::new()
            } else {
                format!(" (needed by {wanted_by})")
            };
            return Err(ImageError::Module(format!(
                "module {name}{via} is neither in modules.dep nor in modules.builtin"
            )));
        };
        stack.push(name.to_string());
        // modules.dep lists dependencies in reverse load order (modprobe loads from the
        // end); visiting them from the end keeps that order where the graph allows.
        for dep in deps.iter().rev() {
            let dep_name = module_name(dep);
            if self.builtin.contains(&dep_name) && !self.modules.contains_key(&dep_name) {
                continue;
            }
            self.visit(&dep_name, name, stack, done, order)?;
        }
        // Soft dependencies that resolve to nothing loadable are built in or optional.
        let soft = self
            .softdeps
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for dep_name in soft.iter().filter_map(|s| self.resolve_soft(s)) {
            self.visit(&dep_name, name, stack, done, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(Module {
            name: name.to_string(),
            path: path.clone(),
        });
        Ok(())
    }
}

/// The contents of `/etc/tails-server/modules.load`: absolute in-guest paths, one per line.
pub fn modules_load(kver: &str, modules: &[Module]) -> String {
    modules
        .iter()
        .map(|m| format!("/lib/modules/{kver}/{}\n", m.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/net/netfilter/nft_nat.ko: kernel/net/netfilter/nf_tables.ko kernel/net/netfilter/nfnetlink.ko kernel/net/netfilter/nf_nat.ko kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/lib/libcrc32c.ko:
kernel/net/netfilter/nf_nat.ko: kernel/net/netfilter/nf_conntrack.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
";
    const BUILTIN: &str = "kernel/net/packet/af_packet.ko\nkernel/fs/ext4/ext4.ko\n";

    fn names(mods: &[Module]) -> Vec<&str> {
        mods.iter().map(|m| m.name.as_str()).collect()
    }

    fn pos(mods: &[Module], name: &str) -> usize {
        mods.iter().position(|m| m.name == name).unwrap()
    }

    #[test]
    fn dependencies_come_first_each_once_builtin_skipped() {
        let db = ModuleDb::parse(DEP, BUILTIN).unwrap();
        let mods = db
            .closure(&[
                "af_packet",
                "nft_nat",
                "nf_tables",
                "virtio_net",
                "vmw_vsock_virtio_transport",
            ])
            .unwrap();
        let n = names(&mods);
        assert!(!n.contains(&"af_packet"));
        let mut sorted = n.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), n.len(), "duplicates in {n:?}");
        for (module, dep) in [
            ("nft_nat", "nf_tables"),
            ("nft_nat", "nf_nat"),
            ("nf_nat", "nf_conntrack"),
            ("nf_conntrack", "libcrc32c"),
            ("nf_tables", "nfnetlink"),
            ("virtio_net", "net_failover"),
            ("net_failover", "failover"),
            (
                "vmw_vsock_virtio_transport",
                "vmw_vsock_virtio_transport_common",
            ),
            ("vmw_vsock_virtio_transport_common", "vsock"),
        ] {
            assert!(
                pos(&mods, dep) < pos(&mods, module),
                "{dep} after {module} in {n:?}"
            );
        }
        assert_eq!(n.len(), 12);
        let load = modules_load("6.1.0-1-amd64", &mods);
        assert!(load.starts_with("/lib/modules/6.1.0-1-amd64/kernel/"));
        assert_eq!(load.lines().count(), 12);
    }

    #[test]
    fn closure_after_leaves_out_what_is_loaded() {
        let db = ModuleDb::parse(DEP, "").unwrap();
        let boot = db.closure(&["nf_tables", "virtio_net"]).unwrap();
        let later = db.closure_after(&boot, &["nft_nat"]).unwrap();
        // nf_conntrack before nf_nat before nft_nat; nf_tables, nfnetlink and
        // libcrc32c are loaded already.
        assert_eq!(names(&later), vec!["nf_conntrack", "nf_nat", "nft_nat"]);
        // Everything already loaded: nothing left.
        assert!(db.closure_after(&boot, &["nf_tables"]).unwrap().is_empty());
        // An unknown module is still named.
        let err = db
            .closure_after(&boot, &["nosuch"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuch"), "{err}");
    }

    #[test]
    fn order_is_deterministic() {
        let db = ModuleDb::parse(DEP, BUILTIN).unwrap();
        let a = db.closure(&["nft_nat", "virtio_net"]).unwrap();
        let b = db.closure(&["nft_nat", "virtio_net"]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn missing_module_is_named() {
        let db = ModuleDb::parse(DEP, BUILTIN).unwrap();
        let err = db
            .closure(&["nft_nat", "no_such_mod"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no_such_mod"), "{err}");
        let db = ModuleDb::parse("kernel/a.ko: kernel/gone.ko\n", "").unwrap();
        let err = db.closure(&["a"]).unwrap_err().to_string();
        assert!(err.contains("gone") && err.contains("needed by a"), "{err}");
    }

    #[test]
    fn cycle_is_an_error() {
        let dep = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko: kernel/a.ko\n";
        let db = ModuleDb::parse(dep, "").unwrap();
        let err = db.closure(&["a"]).unwrap_err().to_string();
        assert!(
            err.contains("cycle") && err.contains("a -> b -> c -> a"),
            "{err}"
        );
    }

    #[test]
    fn soft_pre_dependencies_prefer_generic() {
        let dep = "kernel/net/netfilter/nf_tables.ko: kernel/lib/libcrc32c.ko\n\
                   kernel/lib/libcrc32c.ko:\n\
                   kernel/arch/x86/crypto/crc32c-intel.ko:\n\
                   kernel/crypto/crc32c_generic.ko:\n\
                   kernel/crypto/md5.ko:\n";
        let softdep =
            "# comment\nsoftdep libcrc32c pre: crc32c\nsoftdep nf_tables pre: nosuch post: md5\n";
        let alias =
            "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias pci:v*d* crc32c_intel\n";
        let db = ModuleDb::parse(dep, "")
            .unwrap()
            .with_softdeps(softdep, alias);
        let mods = db.closure(&["nf_tables"]).unwrap();
        assert_eq!(
            names(&mods),
            vec!["crc32c_generic", "libcrc32c", "nf_tables"]
        );
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(module_name("kernel/x/nf-foo.ko.xz"), "nf_foo");
        assert_eq!(module_name("vsock"), "vsock");
        let db = ModuleDb::parse("kernel/a-b.ko:\n", "").unwrap();
        assert_eq!(names(&db.closure(&["a-b"]).unwrap()), vec!["a_b"]);
    }
}
