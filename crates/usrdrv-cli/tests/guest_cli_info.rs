//! `usrdrv info` in the VM against QEMU's edu (1234:11e8) and NVMe
//! (1b36:0010) devices: what it prints must match what the kernel reports.
//! Run as root by `cargo xtask test`, with `usrdrv` in PATH.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};

fn find(vendor: u16, device: u16) -> PciAddress {
    let found = Sysfs::system()
        .find(vendor, device)
        .expect("read /sys/bus/pci/devices");
    *found
        .first()
        .unwrap_or_else(|| panic!("the VM has a {vendor:04x}:{device:04x} device"))
}

fn edu() -> PciAddress {
    find(0x1234, 0x11e8)
}

fn nvme() -> PciAddress {
    find(0x1b36, 0x0010)
}

fn device_dir(address: PciAddress) -> PathBuf {
    PathBuf::from("/sys/bus/pci/devices").join(address.to_string())
}

/// `usrdrv info ADDRESS --json`, which must succeed.
fn info_json(address: PciAddress) -> Value {
    info_json_as(address, None)
}

/// `usrdrv info ADDRESS --json` as user `uid` (`None`: as root), which must succeed.
fn info_json_as(address: PciAddress, uid: Option<u32>) -> Value {
    let mut command = Command::new("usrdrv");
    command.args(["info", &address.to_string(), "--json"]);
    if let Some(uid) = uid {
        // Root dropping to a user also drops its supplementary groups.
        command.uid(uid).gid(uid);
    }
    let out = command.output().expect("run usrdrv");
    assert!(
        out.status.success(),
        "usrdrv info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("usrdrv info --json prints JSON")
}

/// `usrdrv info ADDRESS` as text, printed for the log.
fn info_text(address: PciAddress) -> String {
    let out = Command::new("usrdrv")
        .args(["info", &address.to_string(), "--color", "never"])
        .output()
        .expect("run usrdrv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("text output is UTF-8");
    println!("$ usrdrv info {address}\n{text}");
    text
}

/// The kernel's own `resource` file: `(index, start, size, flags)` of each BAR in use.
fn kernel_bars(address: PciAddress) -> Vec<(u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(device_dir(address).join("resource"))
        .expect("read the resource file");
    text.lines()
        .take(6)
        .enumerate()
        .filter_map(|(i, line)| {
            let f: Vec<u64> = line
                .split_whitespace()
                .map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).expect("hex numbers"))
                .collect();
            (f[1] > f[0]).then(|| (i as u64, f[0], f[1] - f[0] + 1, f[2]))
        })
        .collect()
}

fn kernel_numa_node(address: PciAddress) -> Value {
    let text =
        std::fs::read_to_string(device_dir(address).join("numa_node")).expect("read numa_node");
    match text.trim().parse::<i64>().expect("numa_node is a number") {
        n if n >= 0 => json!(n),
        _ => Value::Null,
    }
}

fn kernel_group(address: PciAddress) -> u64 {
    let link = std::fs::read_link(device_dir(address).join("iommu_group"))
        .expect("the VM has an IOMMU: every device has a group");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("a group's name is its number")
}

fn kernel_config(address: PciAddress) -> Vec<u8> {
    std::fs::read(device_dir(address).join("config")).expect("read config")
}

/// Checks the BARs `info` reports are the kernel's.
fn assert_bars_match(address: PciAddress, info: &Value) {
    let reported: Vec<(Option<u64>, Option<u64>, Option<u64>)> = info["bars"]
        .as_array()
        .expect("bars is an array")
        .iter()
        .map(|b| (b["index"].as_u64(), b["start"].as_u64(), b["size"].as_u64()))
        .collect();
    let kernel: Vec<(Option<u64>, Option<u64>, Option<u64>)> = kernel_bars(address)
        .into_iter()
        .map(|(i, start, size, _)| (Some(i), Some(start), Some(size)))
        .collect();
    assert_eq!(reported, kernel, "{address}: BARs differ from sysfs");
}

fn has_capability(info: &Value, name: &str) -> bool {
    info["capabilities"]
        .as_array()
        .expect("capabilities are known (root)")
        .iter()
        .any(|c| c["name"] == name)
}

/// Puts the device back on the driver it had (none: no driver): checked by
/// [`Restore::finish`], and attempted on drop when a test fails before it.
struct Restore {
    address: PciAddress,
    driver: Option<String>,
    done: bool,
}

impl Restore {
    fn new(address: PciAddress) -> Self {
        Self {
            address,
            driver: Sysfs::system()
                .driver(address)
                .expect("read the driver link"),
            done: false,
        }
    }

    fn restore(&self) -> Result<(), usrdrv::pci::SysfsError> {
        let sysfs = Sysfs::system();
        match self.driver.as_deref() {
            Some(driver) => sysfs.bind(self.address, driver),
            // Clears driver_override too, and no driver claims edu.
            None => sysfs.reprobe(self.address).map(|_| ()),
        }
    }

    /// Restores the driver and checks it is back.
    fn finish(mut self) {
        self.done = true;
        self.restore().expect("restore the driver");
        assert_eq!(
            Sysfs::system()
                .driver(self.address)
                .expect("read the driver link"),
            self.driver,
            "{} is back on its driver",
            self.address
        );
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.done
            && let Err(err) = self.restore()
        {
            eprintln!("could not restore {}: {err}", self.address);
        }
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn info_edu_matches_sysfs() {
    let address = edu();
    let info = info_json(address);
    assert_eq!(info["schema"], "usrdrv.info/1");
    assert_eq!(info["address"], address.to_string());
    assert_eq!(info["vendor_id"], "1234");
    assert_eq!(info["device_id"], "11e8");
    assert_eq!(info["class"], "00ff00");
    assert_eq!(
        info["driver"],
        json!(Sysfs::system().driver(address).unwrap())
    );
    assert_eq!(info["numa_node"], kernel_numa_node(address));

    // BAR0: 1 MiB of 32-bit, non-prefetchable memory, as the kernel has it.
    assert_bars_match(address, &info);
    let bar0 = &info["bars"][0];
    assert_eq!(bar0["index"], 0);
    assert_eq!(bar0["type"], "memory");
    assert_eq!(bar0["size"], 1 << 20);
    assert_eq!(bar0["prefetchable"], false);

    // Root reads the whole configuration space, so the list is known.
    let config = kernel_config(address);
    assert_eq!(info["config_size"], config.len());
    assert!(has_capability(&info, "MSI"), "{}", info["capabilities"]);
    let i = &info["interrupts"];
    assert_eq!(
        i["intx_pin"],
        ["none", "INTA", "INTB", "INTC", "INTD"][usize::from(config[0x3d])]
    );
    assert_eq!(i["intx_pin"], "INTA");
    assert_eq!(i["msi_vectors"], 1);
    assert_eq!(i["msix_table_size"], 0);
    assert_eq!(i["msix_table"], Value::Null);

    // Its own IOMMU group, alone.
    let group = kernel_group(address);
    assert_eq!(info["iommu_group"], group);
    let members = info["iommu_group_members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["address"], address.to_string());
    assert_eq!(members[0]["driver"], info["driver"]);

    info_text(address);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn info_nvme_on_its_driver() {
    let address = nvme();
    assert_eq!(
        Sysfs::system().driver(address).unwrap().as_deref(),
        Some("nvme"),
        "the NVMe controller boots on nvme"
    );
    let info = info_json(address);
    assert_eq!(info["vendor_id"], "1b36");
    assert_eq!(info["device_id"], "0010");
    assert_eq!(info["class"], "010802");
    assert_eq!(info["driver"], "nvme");
    assert_eq!(info["numa_node"], kernel_numa_node(address));

    assert_bars_match(address, &info);
    let bar0 = &info["bars"][0];
    assert_eq!(bar0["index"], 0);
    assert_eq!(bar0["type"], "memory");
    assert_eq!(bar0["address_bits"], 64);
    assert_eq!(bar0["mmap"], Value::Null, "unknown without VFIO");

    assert!(
        has_capability(&info, "PCI Express"),
        "{}",
        info["capabilities"]
    );
    assert!(has_capability(&info, "MSI-X"), "{}", info["capabilities"]);
    assert_eq!(info["interrupts"]["msix_table_size"], 65);
    assert_eq!(info["interrupts"]["msix_table"]["bar"], 0);

    assert_eq!(info["iommu_group"], kernel_group(address));
    let vfio = &info["vfio"];
    assert_eq!(vfio["available"], false);
    assert_eq!(vfio["reason"], "not_bound_to_vfio_pci");
    assert!(
        vfio["message"].as_str().unwrap().contains("bound to nvme"),
        "{vfio}"
    );

    let text = info_text(address);
    assert!(text.contains("MSI-X  yes        table size 65"), "{text}");
    assert!(
        text.contains("\nVFIO\n  not bound to vfio-pci (bound to nvme)"),
        "{text}"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn info_edu_on_vfio_pci_shows_what_vfio_reports() {
    let address = edu();
    let restore = Restore::new(address);
    Sysfs::system()
        .bind(address, VFIO_PCI_DRIVER)
        .expect("bind edu to vfio-pci");

    let info = info_json(address);
    assert_eq!(info["driver"], "vfio-pci");
    let vfio = &info["vfio"];
    assert_eq!(vfio["available"], true, "{vfio}");
    assert_eq!(vfio["reason"], Value::Null);
    assert_eq!(vfio["reset_supported"], false, "edu has no reset method");
    let regions = vfio["regions"].as_array().unwrap();
    let bar0 = regions
        .iter()
        .find(|r| r["name"] == "BAR0")
        .expect("VFIO reports BAR0");
    assert_eq!(bar0["index"], 0);
    assert_eq!(bar0["size"], 1 << 20);
    assert_eq!(bar0["readable"], true);
    assert_eq!(bar0["writable"], true);
    assert_eq!(bar0["mmap"], true);
    let config = regions
        .iter()
        .find(|r| r["name"] == "config")
        .expect("VFIO reports the config region");
    assert_eq!(config["mmap"], false);
    // Unimplemented BARs are reported with size 0.
    assert!(
        regions
            .iter()
            .filter(
                |r| ["BAR1", "BAR2", "BAR3", "BAR4", "BAR5"].contains(&r["name"].as_str().unwrap())
            )
            .all(|r| r["size"] == 0),
        "{regions:?}"
    );
    let irqs = &vfio["irqs"];
    assert_eq!(irqs["intx"]["count"], 1);
    assert_eq!(irqs["msi"]["count"], 1);
    assert_eq!(irqs["msix"]["count"], 0);
    // The BAR table now knows mmap from VFIO.
    assert_eq!(info["bars"][0]["mmap"], true);

    let text = info_text(address);
    assert!(
        text.contains("opened through vfio-pci; reset not supported"),
        "{text}"
    );
    assert!(text.contains("  0    memory 32-bit  1 MiB  "), "{text}");

    // While this process holds the group, info leaves it alone and says why.
    let held = usrdrv::vfio::Device::open(address).expect("open edu through VFIO");
    let busy = info_json(address);
    assert_eq!(busy["vfio"]["available"], false);
    assert_eq!(busy["vfio"]["reason"], "group_busy", "{}", busy["vfio"]);
    assert_eq!(busy["bars"][0]["mmap"], Value::Null);
    drop(held);
    assert_eq!(
        info_json(address)["vfio"]["available"],
        true,
        "closed again"
    );
    restore.finish();
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn info_without_root_says_what_it_cannot_see() {
    let address = edu();
    let restore = Restore::new(address);
    Sysfs::system()
        .bind(address, VFIO_PCI_DRIVER)
        .expect("bind edu to vfio-pci");
    let nobody = 65534;
    let info = info_json_as(address, Some(nobody));
    // Identity and BARs are world-readable; the capability list is not.
    assert_eq!(info["vendor_id"], "1234");
    assert_bars_match(address, &info);
    assert_eq!(info["config_size"], 64);
    assert_eq!(info["capabilities"], Value::Null);
    assert_eq!(info["interrupts"]["intx_pin"], "INTA");
    assert_eq!(info["interrupts"]["msi_vectors"], Value::Null);
    assert_eq!(info["interrupts"]["msix_table_size"], Value::Null);
    // /dev/vfio/N belongs to root.
    let vfio = &info["vfio"];
    assert_eq!(vfio["available"], false);
    assert_eq!(vfio["reason"], "permission_denied", "{vfio}");
    assert!(
        vfio["message"].as_str().unwrap().contains("not root"),
        "{vfio}"
    );
    assert_eq!(info["bars"][0]["mmap"], Value::Null);
    restore.finish();
}
