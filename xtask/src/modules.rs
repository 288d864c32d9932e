//! Kernel modules for the guest: which files to copy, resolved from the
//! kernel's `modules.dep`, and a trimmed `modules.dep` for busybox modprobe.
//!
//! Module names are compared with `-` and `_` treated as equal, as the
//! kernel does (`vfio-pci.ko` is module `vfio_pci`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::error::{Error, Result};

/// The modules the guest loads at boot; their dependencies come along.
pub const GUEST_MODULES: &[&str] = &[
    "vfio",
    "vfio_iommu_type1",
    "vfio_pci",
    "nvme",
    "uio_pci_generic",
];

/// Modules loaded when the kernel has them, skipped otherwise: ext4 (and the
/// crc32c it asks for when mounting) so tests can mount a filesystem on the
/// NVMe namespace.
pub const OPTIONAL_GUEST_MODULES: &[&str] = &["crc32c_generic", "ext4"];

/// Compressed module suffixes that the rig does not unpack (yet).
const COMPRESSED: &[&str] = &[".ko.xz", ".ko.zst", ".ko.gz"];

/// A module name in canonical form: `-` replaced by `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The canonical module name of a path in `modules.dep` or
/// `modules.builtin`, e.g. `kernel/drivers/vfio/pci/vfio-pci.ko` → `vfio_pci`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = COMPRESSED
        .iter()
        .chain([".ko"].iter())
        .find_map(|suffix| file.strip_suffix(suffix))
        .unwrap_or(file);
    normalize(stem)
}

/// The kernel's module index: `modules.dep` plus `modules.builtin`.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// Canonical name → (path, dependency paths), from `modules.dep`.
    entries: BTreeMap<String, (String, Vec<String>)>,
    /// Canonical names of built-in modules.
    builtin: BTreeSet<String>,
}

/// What to put in the guest: files, a `modules.dep`, and what to load.
#[derive(Debug, PartialEq, Eq)]
pub struct ModuleSelection {
    /// Canonical names of the requested modules that need loading (in the
    /// requested order; built-in ones are left out).
    pub load: Vec<String>,
    /// Paths, relative to `lib/modules/<version>/`, of every module file
    /// in the dependency closure, sorted.
    pub files: Vec<String>,
    /// A `modules.dep` holding only the closure.
    pub modules_dep: String,
}

impl ModuleDb {
    /// Parses `modules.dep` and `modules.builtin` text.
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Self {
        let mut entries = BTreeMap::new();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(module_name(path), (path.to_string(), deps));
        }
        let builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Self { entries, builtin }
    }

    /// Resolves `wanted` (names in any `-`/`_` spelling) to the files they
    /// and their dependencies need, adding those of `optional` the kernel has.
    pub fn resolve_with_optional(
        &self,
        wanted: &[&str],
        optional: &[&str],
    ) -> Result<ModuleSelection> {
        let present: Vec<&str> = optional
            .iter()
            .copied()
            .filter(|name| self.entries.contains_key(&normalize(name)))
            .collect();
        let all: Vec<&str> = wanted.iter().copied().chain(present).collect();
        self.resolve(&all)
    }

    /// Resolves `wanted` (names in any `-`/`_` spelling) to the files they
    /// and their dependencies need.
    pub fn resolve(&self, wanted: &[&str]) -> Result<ModuleSelection> {
        let mut load = Vec::new();
        let mut queue = VecDeque::new();
        for name in wanted {
            let name = normalize(name);
            if let Some((path, _)) = self.entries.get(&name) {
                load.push(name);
                queue.push_back(path.clone());
            } else if !self.builtin.contains(&name) {
                return Err(Error::Image(format!(
                    "Kernel module {name} is neither in modules.dep nor built in: use a kernel \
                     with VFIO, NVMe and UIO support (CONFIG_VFIO_PCI, CONFIG_BLK_DEV_NVME, \
                     CONFIG_UIO_PCI_GENERIC)"
                )));
            }
        }
        let mut closure = BTreeSet::new();
        while let Some(path) = queue.pop_front() {
            if !closure.insert(path.clone()) {
                continue;
            }
            if let Some(suffix) = COMPRESSED.iter().find(|s| path.ends_with(*s)) {
                return Err(Error::Image(format!(
                    "Kernel module {path} is compressed ({suffix}), which the rig does not unpack \
                     yet: use a kernel whose modules are plain .ko files"
                )));
            }
            let deps = self
                .entries
                .get(&module_name(&path))
                .map(|(_, deps)| deps.clone())
                .ok_or_else(|| {
                    Error::Image(format!(
                        "modules.dep names {path} as a dependency but has no entry for it: \
                         run depmod for this kernel"
                    ))
                })?;
            queue.extend(deps);
        }
        let mut modules_dep = String::new();
        for path in &closure {
            if let Some((_, deps)) = self.entries.get(&module_name(path)) {
                modules_dep.push_str(path);
                modules_dep.push(':');
                for dep in deps {
                    modules_dep.push(' ');
                    modules_dep.push_str(dep);
                }
                modules_dep.push('\n');
            }
        }
        Ok(ModuleSelection {
            load,
            files: closure.into_iter().collect(),
            modules_dep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/vfio/vfio.ko:
kernel/drivers/vfio/vfio_virqfd.ko:
kernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko
kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio_virqfd.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio_virqfd.ko kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
kernel/drivers/nvme/host/nvme-core.ko: kernel/lib/crc64.ko
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko kernel/lib/crc64.ko
kernel/lib/crc64.ko:
kernel/drivers/uio/uio.ko:
kernel/drivers/uio/uio_pci_generic.ko: kernel/drivers/uio/uio.ko
kernel/sound/unrelated.ko: kernel/lib/crc64.ko
";
    const BUILTIN: &str = "kernel/fs/hugetlbfs/hugetlbfs.ko\nkernel/drivers/pci/pci-stub.ko\n";

    fn db() -> ModuleDb {
        ModuleDb::parse(DEP, BUILTIN)
    }

    #[test]
    fn names_treat_dash_and_underscore_alike() {
        assert_eq!(normalize("vfio-pci"), "vfio_pci");
        assert_eq!(
            module_name("kernel/drivers/vfio/pci/vfio-pci.ko"),
            "vfio_pci"
        );
        assert_eq!(
            module_name("kernel/drivers/vfio/vfio_iommu_type1.ko"),
            "vfio_iommu_type1"
        );
        assert_eq!(module_name("kernel/x/nvme-core.ko.zst"), "nvme_core");
        let a = db().resolve(&["vfio-pci"]).expect("resolves");
        let b = db().resolve(&["vfio_pci"]).expect("resolves");
        assert_eq!(a, b);
        assert_eq!(a.load, ["vfio_pci"]);
    }

    #[test]
    fn closure_of_the_guest_modules() {
        let sel = db()
            .resolve_with_optional(GUEST_MODULES, OPTIONAL_GUEST_MODULES)
            .expect("resolves");
        assert_eq!(
            sel.files,
            [
                "kernel/drivers/nvme/host/nvme-core.ko",
                "kernel/drivers/nvme/host/nvme.ko",
                "kernel/drivers/uio/uio.ko",
                "kernel/drivers/uio/uio_pci_generic.ko",
                "kernel/drivers/vfio/pci/vfio-pci-core.ko",
                "kernel/drivers/vfio/pci/vfio-pci.ko",
                "kernel/drivers/vfio/vfio.ko",
                "kernel/drivers/vfio/vfio_iommu_type1.ko",
                "kernel/drivers/vfio/vfio_virqfd.ko",
                "kernel/lib/crc64.ko",
                "kernel/virt/lib/irqbypass.ko",
            ]
        );
        assert_eq!(
            sel.load,
            [
                "vfio",
                "vfio_iommu_type1",
                "vfio_pci",
                "nvme",
                "uio_pci_generic"
            ]
        );
        assert!(!sel.modules_dep.contains("unrelated"));
        assert!(
            sel.modules_dep
                .contains("kernel/drivers/uio/uio_pci_generic.ko: kernel/drivers/uio/uio.ko\n")
        );
        assert!(sel.modules_dep.contains("kernel/drivers/vfio/vfio.ko:\n"));
        assert_eq!(sel.modules_dep.lines().count(), sel.files.len());
    }

    #[test]
    fn builtin_modules_need_no_file() {
        let sel = db()
            .resolve(&["hugetlbfs", "pci_stub", "uio"])
            .expect("resolves");
        assert_eq!(sel.load, ["uio"]);
        assert_eq!(sel.files, ["kernel/drivers/uio/uio.ko"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = db().resolve(&["no_such_module"]).expect_err("must fail");
        assert!(err.to_string().contains("no_such_module"), "{err}");
    }

    #[test]
    fn compressed_module_is_a_clear_error() {
        let db = ModuleDb::parse(
            "kernel/a/foo.ko.zst: kernel/a/bar.ko.zst\nkernel/a/bar.ko.zst:\n",
            "",
        );
        let err = db.resolve(&["foo"]).expect_err("must fail");
        assert!(err.to_string().contains("compressed"), "{err}");
    }

    #[test]
    fn missing_dependency_entry_is_an_error() {
        let db = ModuleDb::parse("kernel/a/foo.ko: kernel/a/gone.ko\n", "");
        let err = db.resolve(&["foo"]).expect_err("must fail");
        assert!(err.to_string().contains("gone.ko"), "{err}");
    }

    #[test]
    fn optional_modules_are_added_when_present_and_skipped_when_not() {
        let sel = db()
            .resolve_with_optional(&["vfio"], &["vfio_pci", "no_such_module"])
            .expect("absent optional modules are not an error");
        assert!(sel.load.contains(&"vfio_pci".to_string()));
        assert!(!sel.load.iter().any(|m| m == "no_such_module"));
    }
}
