//! A sysfs tree laid out the way the kernel does, in a temporary directory,
//! for tests of the code that reads and writes sysfs.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

/// Lays out a sysfs tree the way the kernel does, in a temporary directory.
pub(crate) struct FakeSysfs {
    dir: tempfile::TempDir,
}

impl FakeSysfs {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "bus/pci/devices",
            "bus/pci/drivers",
            "kernel/iommu_groups",
            "devices/pci0000:00",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("bus/pci/drivers_probe"), "").unwrap();
        Self { dir }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn add(
        &self,
        addr: &str,
        vendor: u16,
        device: u16,
        class: u32,
        driver: Option<&str>,
        group: Option<u32>,
    ) {
        let real = self.root().join("devices/pci0000:00").join(addr);
        fs::create_dir_all(&real).unwrap();
        fs::write(real.join("vendor"), format!("{vendor:#06x}\n")).unwrap();
        fs::write(real.join("device"), format!("{device:#06x}\n")).unwrap();
        fs::write(real.join("class"), format!("{class:#08x}\n")).unwrap();
        fs::write(real.join("driver_override"), "(null)\n").unwrap();
        symlink(
            format!("../../../devices/pci0000:00/{addr}"),
            self.root().join("bus/pci/devices").join(addr),
        )
        .unwrap();
        if let Some(driver) = driver {
            let ddir = self.root().join("bus/pci/drivers").join(driver);
            fs::create_dir_all(&ddir).unwrap();
            fs::write(ddir.join("unbind"), "").unwrap();
            symlink(
                format!("../../../bus/pci/drivers/{driver}"),
                real.join("driver"),
            )
            .unwrap();
        }
        if let Some(group) = group {
            let gdir = self
                .root()
                .join("kernel/iommu_groups")
                .join(group.to_string())
                .join("devices");
            fs::create_dir_all(&gdir).unwrap();
            symlink(
                format!("../../../../devices/pci0000:00/{addr}"),
                gdir.join(addr),
            )
            .unwrap();
            symlink(
                format!("../../../kernel/iommu_groups/{group}"),
                real.join("iommu_group"),
            )
            .unwrap();
        }
    }
}
