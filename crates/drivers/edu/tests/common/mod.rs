//! What the edu guest test binaries share: finding edu and handing it to the
//! driver of the boot's backend (vfio-pci with an IOMMU, usrdma without),
//! test data, and the process's resource counters.

use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};
use usrdrv::usrdma::USRDMA_DRIVER;
use usrdrv_edu::Edu;

/// Whether this boot has an IOMMU (any IOMMU group exists).
pub fn iommu_present() -> bool {
    std::fs::read_dir("/sys/kernel/iommu_groups").is_ok_and(|mut groups| groups.next().is_some())
}

/// The driver edu is driven through in this boot.
pub fn edu_driver() -> &'static str {
    if iommu_present() {
        VFIO_PCI_DRIVER
    } else {
        USRDMA_DRIVER
    }
}

/// edu's address, with edu bound to this boot's driver.
pub fn edu_address() -> PciAddress {
    let address = Edu::find().expect("the VM has an edu device");
    let driver = edu_driver();
    Sysfs::system()
        .bind(address, driver)
        .unwrap_or_else(|e| panic!("bind edu to {driver}: {e}"));
    address
}

/// edu, opened through this boot's backend.
pub fn open() -> Edu {
    Edu::open(edu_address()).expect("open edu")
}

/// A byte pattern that differs for every offset and every seed.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Locked memory (kB), pinned memory (kB) and open descriptors of this process.
pub fn resources() -> (u64, u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count();
    (field("VmLck:"), field("VmPin:"), fds)
}

/// One counter of the usrdma module's `usrdma_stats` attribute for `address`.
pub fn usrdma_stat(address: PciAddress, key: &str) -> u64 {
    let path = format!("/sys/bus/pci/devices/{address}/usrdma_stats");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().expect("a decimal counter"))
        })
        .unwrap_or_else(|| panic!("{key} in {path}: {text}"))
}
