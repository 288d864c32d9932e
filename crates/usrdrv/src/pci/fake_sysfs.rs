//! A sysfs tree laid out the way the kernel does, in a temporary directory,
//! for tests of code that reads and writes sysfs (this crate's, and with the
//! `testing` feature other crates'). Pass [`FakeSysfs::root`] to
//! [`Sysfs::at`](super::Sysfs::at).
//!
//! Writes to its attribute files succeed but change nothing, as if every
//! driver refused the device: good for testing refusals and restores.
//!
//! Setup failures panic: this is test support.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A fake `/sys` with `bus/pci/devices`, `bus/pci/drivers`,
/// `kernel/iommu_groups`, `class/block` and `class/net`.
#[derive(Debug)]
pub struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl Default for FakeSysfs {
    fn default() -> Self {
        Self::new()
    }
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create a fake sysfs directory");
    }
    fs::write(path, content).expect("write a fake sysfs file");
}

fn link(target: &str, at: &Path) {
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).expect("create a fake sysfs directory");
    }
    symlink(target, at).expect("make a fake sysfs link");
}

impl FakeSysfs {
    /// An empty tree.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("make a temporary directory");
        for d in [
            "bus/pci/devices",
            "bus/pci/drivers",
            "kernel/iommu_groups",
            "devices/pci0000:00",
            "class/block",
            "class/net",
        ] {
            fs::create_dir_all(dir.path().join(d)).expect("create a fake sysfs directory");
        }
        write(&dir.path().join("bus/pci/drivers_probe"), "");
        Self { dir }
    }

    /// The directory to hand to `Sysfs::at`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The real (non-link) directory of the function at `addr`.
    pub fn device_dir(&self, addr: &str) -> PathBuf {
        self.root().join("devices/pci0000:00").join(addr)
    }

    /// Registers a PCI driver (its directory with `bind`/`unbind` files).
    pub fn add_driver(&self, driver: &str) {
        let dir = self.root().join("bus/pci/drivers").join(driver);
        write(&dir.join("bind"), "");
        write(&dir.join("unbind"), "");
    }

    /// Adds a function with its identity, driver (registered too) and IOMMU
    /// group, a `resource` file with no BARs, NUMA node -1, and 64 bytes of
    /// configuration space holding the IDs and class.
    pub fn add(
        &self,
        addr: &str,
        vendor: u16,
        device: u16,
        class: u32,
        driver: Option<&str>,
        group: Option<u32>,
    ) {
        let real = self.device_dir(addr);
        write(&real.join("vendor"), format!("{vendor:#06x}\n"));
        write(&real.join("device"), format!("{device:#06x}\n"));
        write(&real.join("class"), format!("{class:#08x}\n"));
        write(&real.join("driver_override"), "(null)\n");
        write(&real.join("numa_node"), "-1\n");
        write(
            &real.join("resource"),
            "0x0000000000000000 0x0000000000000000 0x0000000000000000\n".repeat(7),
        );
        let mut config = vec![0u8; 64];
        config[0..2].copy_from_slice(&vendor.to_le_bytes());
        config[2..4].copy_from_slice(&device.to_le_bytes());
        config[9..12].copy_from_slice(&class.to_le_bytes()[..3]);
        write(&real.join("config"), config);
        link(
            &format!("../../../devices/pci0000:00/{addr}"),
            &self.root().join("bus/pci/devices").join(addr),
        );
        if let Some(driver) = driver {
            self.add_driver(driver);
            link(
                &format!("../../../bus/pci/drivers/{driver}"),
                &real.join("driver"),
            );
        }
        if let Some(group) = group {
            let gdir = self
                .root()
                .join("kernel/iommu_groups")
                .join(group.to_string())
                .join("devices");
            link(
                &format!("../../../../devices/pci0000:00/{addr}"),
                &gdir.join(addr),
            );
            link(
                &format!("../../../kernel/iommu_groups/{group}"),
                &real.join("iommu_group"),
            );
        }
    }

    /// Sets the function's `resource` lines: `(start, end, flags)` each.
    pub fn set_resources(&self, addr: &str, resources: &[(u64, u64, u64)]) {
        let text: String = resources
            .iter()
            .map(|(start, end, flags)| format!("{start:#018x} {end:#018x} {flags:#018x}\n"))
            .collect();
        write(&self.device_dir(addr).join("resource"), text);
    }

    /// Sets the function's configuration space bytes.
    pub fn set_config(&self, addr: &str, config: &[u8]) {
        write(&self.device_dir(addr).join("config"), config);
    }

    /// Sets the function's NUMA node.
    pub fn set_numa_node(&self, addr: &str, node: i32) {
        write(
            &self.device_dir(addr).join("numa_node"),
            format!("{node}\n"),
        );
    }

    /// Writes `content` to the function's attribute file `name` (created if
    /// missing), e.g. a malformed `usrdma_buffers`.
    pub fn set_attribute(&self, addr: &str, name: &str, content: &str) {
        write(&self.device_dir(addr).join(name), content);
    }

    /// Adds a function bound to the `usrdma` driver (registered too), with
    /// no IOMMU group (the machines usrdma is for have none), class
    /// `0x00ff00`, and these `usrdma_buffers` and `usrdma_stats` texts (the
    /// format documented in `kmod/usrdma/usrdma_uapi.h`).
    pub fn add_usrdma(&self, addr: &str, vendor: u16, device: u16, buffers: &str, stats: &str) {
        self.add(addr, vendor, device, 0x00ff00, Some("usrdma"), None);
        self.set_attribute(addr, "usrdma_buffers", buffers);
        self.set_attribute(addr, "usrdma_stats", stats);
    }

    /// Gives the function a block device `name` (as an NVMe namespace would be).
    pub fn add_block(&self, addr: &str, name: &str) {
        let dir = self.device_dir(addr).join("nvme/nvme0").join(name);
        fs::create_dir_all(&dir).expect("create a fake block device");
        link(
            &format!("../../devices/pci0000:00/{addr}/nvme/nvme0/{name}"),
            &self.root().join("class/block").join(name),
        );
    }

    /// Gives the function a network interface `name`, up or down.
    pub fn add_net(&self, addr: &str, name: &str, up: bool) {
        let dir = self.device_dir(addr).join("net").join(name);
        write(&dir.join("operstate"), if up { "up\n" } else { "down\n" });
        write(&dir.join("flags"), if up { "0x1003\n" } else { "0x1002\n" });
        link(
            &format!("../../devices/pci0000:00/{addr}/net/{name}"),
            &self.root().join("class/net").join(name),
        );
    }
}
