//! Which kernel modules the guest loads, and in what order: the closure of the wanted modules
//! over `modules.dep`, minus what `modules.builtin` says is built in.

use std::collections::{BTreeMap, BTreeSet};

use crate::ArtifactError;

/// The modules the guest needs (QEMU's virtio PCI devices: vsock for the agent, blk for the
/// root filesystem, net for a NIC; ext4 for the root filesystem). Each one's dependencies
/// come from `modules.dep`; those built into the kernel are skipped.
pub const WANTED: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio_blk",
    "ext4",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Taken when the kernel ships them as modules, skipped when absent: ext4 asks the crypto API
/// for crc32c at mount time (a soft dependency `modules.dep` does not list). Not
/// `crc32c_intel`: it needs SSE4.2, which QEMU's default software-emulated CPU lacks
/// (`finit_module` fails with ENODEV there).
pub const OPTIONAL: &[&str] = &["crc32c_generic"];

/// A module's name from its path: the file name without `.ko[.xz|.zst|.gz]`, `-` as `_`
/// (`kernel/lib/crc-ccitt.ko` is `crc_ccitt`).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `modules.dep`: each module's path (relative to `/lib/modules/<release>`) and its
/// dependencies' paths, by module name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModulesDep {
    /// name -> (path, dependency paths as listed).
    pub entries: BTreeMap<String, (String, Vec<String>)>,
}

/// Parses `modules.dep` (`path: dep dep ...` per line).
pub fn parse_modules_dep(text: &str) -> Result<ModulesDep, ArtifactError> {
    let mut dep = ModulesDep::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((path, deps)) = line.split_once(':') else {
            return Err(ArtifactError::content(
                "modules",
                format!("modules.dep line {}: no ':' in {line:?}", n + 1),
            ));
        };
        let path = path.trim().to_owned();
        let deps = deps.split_whitespace().map(str::to_owned).collect();
        dep.entries.insert(module_name(&path), (path, deps));
    }
    Ok(dep)
}

/// Parses `modules.builtin` (one path per line) into module names.
pub fn parse_modules_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(module_name)
        .collect()
}

/// The outcome of [`closure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulePlan {
    /// Paths (relative to `/lib/modules/<release>`) in load order, dependencies first.
    pub load_order: Vec<String>,
    /// Wanted modules that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
}

/// The modules to load for `wanted` (each must be a module or built in) and `optional` (taken
/// when present), dependencies first, each once. Wanted modules keep their given order where
/// dependencies allow; a dependency cycle is an error.
pub fn closure(
    dep: &ModulesDep,
    builtin: &BTreeSet<String>,
    wanted: &[&str],
    optional: &[&str],
) -> Result<ModulePlan, ArtifactError> {
    let mut plan = ModulePlan {
        load_order: Vec::new(),
        builtin: Vec::new(),
    };
    let mut done = BTreeSet::new();
    for (name, required) in wanted
        .iter()
        .map(|n| (*n, true))
        .chain(optional.iter().map(|n| (*n, false)))
    {
        let name = name.replace('-', "_");
        if builtin.contains(&name) {
            plan.builtin.push(name);
            continue;
        }
        match dep.entries.get(&name) {
            Some((path, _)) => {
                let path = path.clone();
                visit(dep, &path, &mut done, &mut Vec::new(), &mut plan.load_order)?;
            }
            None if required => {
                return Err(ArtifactError::content(
                    "modules",
                    format!("module {name} is neither in modules.dep nor in modules.builtin"),
                ));
            }
            None => {}
        }
    }
    Ok(plan)
}

fn visit(
    dep: &ModulesDep,
    path: &str,
    done: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    out: &mut Vec<String>,
) -> Result<(), ArtifactError> {
    if done.contains(path) {
        return Ok(());
    }
    if stack.iter().any(|p| p == path) {
        return Err(ArtifactError::content(
            "modules",
            format!("dependency cycle: {} -> {path}", stack.join(" -> ")),
        ));
    }
    stack.push(path.to_owned());
    let name = module_name(path);
    if let Some((_, deps)) = dep.entries.get(&name) {
        // modules.dep lists the deepest dependency last (modprobe loads from the end).
        for d in deps.iter().rev() {
            visit(dep, d, done, stack, out)?;
        }
    }
    stack.pop();
    done.insert(path.to_owned());
    out.push(path.to_owned());
    Ok(())
}

/// A module's path inside the initramfs: compressed modules are stored decompressed (the
/// agent loads plain `.ko` files with `finit_module`).
pub fn plain_path(path: &str) -> &str {
    path.strip_suffix(".xz")
        .or_else(|| path.strip_suffix(".zst"))
        .or_else(|| path.strip_suffix(".gz"))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz
";

    fn dep() -> ModulesDep {
        parse_modules_dep(DEP).unwrap()
    }

    fn position(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn names_come_from_file_names() {
        assert_eq!(module_name("kernel/lib/crc-ccitt.ko"), "crc_ccitt");
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.zst"), "ext4");
        assert_eq!(module_name("virtio.ko"), "virtio");
        assert_eq!(plain_path("a/b.ko.xz"), "a/b.ko");
        assert_eq!(plain_path("a/b.ko.zst"), "a/b.ko");
        assert_eq!(plain_path("a/b.ko"), "a/b.ko");
    }

    #[test]
    fn dependencies_come_first_and_each_module_once() {
        let plan = closure(&dep(), &BTreeSet::new(), WANTED, &[]).unwrap();
        let order = &plan.load_order;
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len(), "{order:?}");
        for (module, deps) in [
            ("virtio", &["virtio_ring"][..]),
            (
                "virtio_pci",
                &[
                    "virtio",
                    "virtio_ring",
                    "virtio_pci_modern_dev",
                    "virtio_pci_legacy_dev",
                ][..],
            ),
            (
                "vmw_vsock_virtio_transport",
                &["vmw_vsock_virtio_transport_common", "vsock"][..],
            ),
            ("ext4", &["jbd2", "mbcache", "crc16"][..]),
            ("virtio_net", &["net_failover", "failover", "virtio"][..]),
        ] {
            for d in deps {
                assert!(
                    position(order, d) < position(order, module),
                    "{d} after {module}: {order:?}"
                );
            }
        }
        assert_eq!(order.len(), 16);
        assert_eq!(order[0], "kernel/drivers/virtio/virtio_ring.ko");
        assert!(plan.builtin.is_empty());
    }

    #[test]
    fn builtin_modules_are_skipped_with_their_dependencies() {
        let builtin = parse_modules_builtin("kernel/fs/ext4/ext4.ko\nkernel/lib/crc16.ko\n");
        let plan = closure(&dep(), &builtin, WANTED, &["crc32c_generic"]).unwrap();
        assert_eq!(plan.builtin, vec!["ext4"]);
        assert!(!plan.load_order.iter().any(|p| p.contains("jbd2")));
        assert_eq!(plan.load_order.len(), 12);
    }

    #[test]
    fn optional_modules_are_taken_when_present() {
        let mut d = dep();
        d.entries.insert(
            "crc32c_generic".into(),
            ("kernel/crypto/crc32c_generic.ko".into(), vec![]),
        );
        let plan = closure(&d, &BTreeSet::new(), &["virtio"], OPTIONAL).unwrap();
        assert_eq!(
            plan.load_order,
            vec![
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/crypto/crc32c_generic.ko"
            ]
        );
    }

    #[test]
    fn a_missing_module_is_an_error_naming_it() {
        let err = closure(&dep(), &BTreeSet::new(), &["virtio", "nope"], &[]).unwrap_err();
        assert_eq!(err.code(), sr_common::ErrorCode::ArtifactContent);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_cycle_is_an_error() {
        let d = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(closure(&d, &BTreeSet::new(), &["a"], &[]).is_err());
    }

    #[test]
    fn a_malformed_line_is_an_error() {
        assert!(parse_modules_dep("kernel/x.ko\n").is_err());
    }
}
