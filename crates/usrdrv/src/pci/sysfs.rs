//! PCI functions as the kernel shows them in sysfs: identity, driver, IOMMU group,
//! and driver binding through `driver_override`.
//!
//! Every path is relative to a sysfs root ([`Sysfs::system`] is `/sys`), so the
//! same code runs against a fake tree in tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::address::PciAddress;

/// The name of the kernel's VFIO PCI driver.
pub const VFIO_PCI_DRIVER: &str = "vfio-pci";

/// Errors from reading or changing PCI state in sysfs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysfsError {
    /// No function with this address exists.
    #[error("no PCI device at {address}: `ls {}` lists the addresses present", .devices_dir.display())]
    NoSuchDevice {
        /// The address asked for.
        address: PciAddress,
        /// The directory that was searched.
        devices_dir: PathBuf,
    },
    /// Reading a sysfs file or link failed.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file or link.
        path: PathBuf,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// Writing a sysfs file was refused for lack of privilege.
    #[error("permission denied writing {}: changing driver bindings needs root (or CAP_SYS_ADMIN)", .path.display())]
    PermissionDenied {
        /// The file.
        path: PathBuf,
    },
    /// Writing a sysfs file failed.
    #[error("cannot write '{value}' to {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// A sysfs file did not hold what the kernel documents.
    #[error("unexpected content {content:?} in {}", .path.display())]
    Unexpected {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// The driver did not take the device; the previous binding was restored.
    #[error(
        "{address} did not bind to {driver} (its driver is now {}): is the module loaded? Try `modprobe {driver}`",
        .now.as_deref().unwrap_or("none")
    )]
    BindFailed {
        /// The device.
        address: PciAddress,
        /// The driver asked for.
        driver: String,
        /// The driver bound after the attempt and the restore.
        now: Option<String>,
    },
}

/// A snapshot of one PCI function's identity and binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it is.
    pub address: PciAddress,
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
    /// Class code: base class, subclass and programming interface (24 bits).
    pub class: u32,
    /// The kernel driver bound to it, if any.
    pub driver: Option<String>,
    /// Its IOMMU group, or `None` when no IOMMU translates for it.
    pub iommu_group: Option<u32>,
}

/// One entry of a function's `resource` file: a BAR, the ROM, or a bridge window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// The line's index (0 to 5 are BARs, 6 the expansion ROM).
    pub index: usize,
    /// The first address.
    pub start: u64,
    /// The last address (inclusive).
    pub end: u64,
    /// The kernel's `IORESOURCE_*` flags.
    pub flags: u64,
}

impl Resource {
    const IO: u64 = 0x100;
    const MEM: u64 = 0x200;
    const PREFETCH: u64 = 0x2000;
    const MEM_64: u64 = 0x0010_0000;

    /// The size in bytes (0 for an unused entry).
    pub fn size(&self) -> u64 {
        if self.end > self.start || self.start != 0 {
            self.end.wrapping_sub(self.start).wrapping_add(1)
        } else {
            0
        }
    }

    /// Whether it is I/O port space (otherwise memory).
    pub fn is_io(&self) -> bool {
        self.flags & Self::IO != 0
    }

    /// Whether it is memory space.
    pub fn is_memory(&self) -> bool {
        self.flags & Self::MEM != 0
    }

    /// Whether it is prefetchable memory.
    pub fn is_prefetchable(&self) -> bool {
        self.flags & Self::PREFETCH != 0
    }

    /// Whether it is a 64-bit memory BAR.
    pub fn is_64bit(&self) -> bool {
        self.flags & Self::MEM_64 != 0
    }
}

/// Something visible the kernel uses a device for, which taking the device
/// away would break.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Usage {
    /// A block device with a mounted filesystem.
    Mounted {
        /// The block device, e.g. `nvme0n1p1`.
        block: String,
        /// Where it is mounted.
        mountpoint: String,
    },
    /// A network interface that is up.
    InterfaceUp {
        /// The interface, e.g. `eth0`.
        interface: String,
    },
    /// A block device another block device is built on (device-mapper, RAID,
    /// bcache: an entry in its `holders` directory).
    Stacked {
        /// The block device, e.g. `nvme0n1`.
        block: String,
        /// The device built on it, e.g. `dm-0` or `md127`.
        holder: String,
    },
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mounted { block, mountpoint } => {
                write!(f, "/dev/{block} is mounted on {mountpoint}")
            }
            Self::InterfaceUp { interface } => write!(f, "network interface {interface} is up"),
            Self::Stacked { block, holder } => {
                write!(
                    f,
                    "/dev/{block} is part of /dev/{holder} (device-mapper, RAID or similar)"
                )
            }
        }
    }
}

/// A view of the PCI parts of a sysfs tree.
///
/// ```no_run
/// use usrdrv::pci::Sysfs;
///
/// let sysfs = Sysfs::system();
/// for address in sysfs.find(0x1234, 0x11e8)? {
///     let function = sysfs.function(address)?;
///     println!("{address}: driver {:?}, IOMMU group {:?}", function.driver, function.iommu_group);
/// }
/// # Ok::<(), usrdrv::pci::SysfsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// The running system's sysfs, mounted at `/sys`.
    pub fn system() -> Self {
        Self::at("/sys")
    }

    /// A sysfs tree rooted elsewhere: the directory that holds `bus/pci` and
    /// `kernel/iommu_groups`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    /// The directory of the function at `address`
    /// (`<root>/bus/pci/devices/DDDD:BB:DD.F`), whether or not it exists.
    pub fn device_dir(&self, address: PciAddress) -> PathBuf {
        self.devices_dir().join(address.to_string())
    }

    /// Every PCI function present, sorted by address.
    pub fn addresses(&self) -> Result<Vec<PciAddress>, SysfsError> {
        read_addresses(&self.devices_dir())
    }

    /// The identity and binding of the function at `address`.
    pub fn function(&self, address: PciAddress) -> Result<PciFunction, SysfsError> {
        let dir = self.existing_device_dir(address)?;
        Ok(PciFunction {
            address,
            vendor_id: read_hex(&dir.join("vendor"), 0xffff)? as u16,
            device_id: read_hex(&dir.join("device"), 0xffff)? as u16,
            class: read_hex(&dir.join("class"), 0xff_ffff)? as u32,
            driver: self.driver(address)?,
            iommu_group: self.iommu_group(address)?,
        })
    }

    /// Every function with this vendor and device ID, sorted by address.
    pub fn find(&self, vendor_id: u16, device_id: u16) -> Result<Vec<PciAddress>, SysfsError> {
        let mut found = Vec::new();
        for address in self.addresses()? {
            let dir = self.device_dir(address);
            if read_hex(&dir.join("vendor"), 0xffff)? == u64::from(vendor_id)
                && read_hex(&dir.join("device"), 0xffff)? == u64::from(device_id)
            {
                found.push(address);
            }
        }
        Ok(found)
    }

    /// The name of the driver bound to `address`, or `None`.
    pub fn driver(&self, address: PciAddress) -> Result<Option<String>, SysfsError> {
        let dir = self.existing_device_dir(address)?;
        link_name(&dir.join("driver"))
    }

    /// The IOMMU group of `address`, or `None` when no IOMMU translates for it.
    pub fn iommu_group(&self, address: PciAddress) -> Result<Option<u32>, SysfsError> {
        let dir = self.existing_device_dir(address)?;
        let link = dir.join("iommu_group");
        match link_name(&link)? {
            None => Ok(None),
            Some(name) => name.parse().map(Some).map_err(|_| SysfsError::Unexpected {
                path: link,
                content: name,
            }),
        }
    }

    /// Every function in IOMMU group `group`, sorted by address.
    pub fn iommu_group_members(&self, group: u32) -> Result<Vec<PciAddress>, SysfsError> {
        let dir = self
            .root
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("devices");
        read_addresses(&dir)
    }

    /// The BARs, ROM and windows in the function's `resource` file.
    pub fn resources(&self, address: PciAddress) -> Result<Vec<Resource>, SysfsError> {
        let path = self.existing_device_dir(address)?.join("resource");
        let text = read_text(&path)?;
        let mut resources = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let fields: Vec<u64> = line
                .split_whitespace()
                .filter_map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                .collect();
            let [start, end, flags] = fields[..] else {
                return Err(SysfsError::Unexpected {
                    path,
                    content: line.to_owned(),
                });
            };
            resources.push(Resource {
                index,
                start,
                end,
                flags,
            });
        }
        Ok(resources)
    }

    /// The NUMA node the function is attached to, if the system has NUMA.
    pub fn numa_node(&self, address: PciAddress) -> Result<Option<u32>, SysfsError> {
        let path = self.existing_device_dir(address)?.join("numa_node");
        match fs::read_to_string(&path) {
            // -1 means no NUMA affinity.
            Ok(text) => Ok(text
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|n| u32::try_from(n).ok())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SysfsError::Read { path, source }),
        }
    }

    /// The configuration space as sysfs gives it: 256 or 4096 bytes to root,
    /// the first 64 to other users.
    pub fn config(&self, address: PciAddress) -> Result<Vec<u8>, SysfsError> {
        let path = self.existing_device_dir(address)?.join("config");
        fs::read(&path).map_err(|source| SysfsError::Read { path, source })
    }

    /// Whether a PCI driver of this name is registered (its module loaded).
    pub fn driver_exists(&self, driver: &str) -> bool {
        !driver.is_empty()
            && !driver.contains('/')
            && self.root.join("bus/pci/drivers").join(driver).is_dir()
    }

    /// Visible uses of the function that taking it from its driver would break:
    /// mounted filesystems on its block devices (judged against `mounts`, the
    /// text of `/proc/mounts`), block devices built on them (their `holders`:
    /// device-mapper, RAID), and network interfaces that are up.
    pub fn usages(&self, address: PciAddress, mounts: &str) -> Result<Vec<Usage>, SysfsError> {
        let device = self.existing_device_dir(address)?;
        let device = fs::canonicalize(&device).map_err(|source| SysfsError::Read {
            path: device.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for block in self.class_members("block", &device)? {
            let dev = format!("/dev/{block}");
            for line in mounts.lines() {
                let mut fields = line.split_whitespace();
                if let (Some(source), Some(mountpoint)) = (fields.next(), fields.next())
                    && source == dev
                {
                    found.push(Usage::Mounted {
                        block: block.clone(),
                        mountpoint: mountpoint.to_owned(),
                    });
                }
            }
            let holders = self.root.join("class/block").join(&block).join("holders");
            let mut stacked: Vec<String> = fs::read_dir(&holders)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            stacked.sort();
            found.extend(stacked.into_iter().map(|holder| Usage::Stacked {
                block: block.clone(),
                holder,
            }));
        }
        for interface in self.class_members("net", &device)? {
            let operstate = self
                .root
                .join("class/net")
                .join(&interface)
                .join("operstate");
            let flags = self.root.join("class/net").join(&interface).join("flags");
            let up = fs::read_to_string(&operstate).is_ok_and(|s| s.trim() == "up")
                || fs::read_to_string(&flags)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
                    .is_some_and(|f| f & 0x1 != 0);
            if up {
                found.push(Usage::InterfaceUp { interface });
            }
        }
        Ok(found)
    }

    /// Members of `/sys/class/<class>` whose device lies under `device`.
    fn class_members(&self, class: &str, device: &Path) -> Result<Vec<String>, SysfsError> {
        let dir = self.root.join("class").join(class);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SysfsError::Read { path: dir, source }),
        };
        let mut members = Vec::new();
        for entry in entries.flatten() {
            if fs::canonicalize(entry.path()).is_ok_and(|p| p.starts_with(device)) {
                members.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        members.sort();
        Ok(members)
    }

    /// Releases `address` from its driver (the device is left with none).
    /// Does nothing when it has none.
    pub fn unbind(&self, address: PciAddress) -> Result<(), SysfsError> {
        let dir = self.existing_device_dir(address)?;
        if self.driver(address)?.is_some() {
            write_sysfs(&dir.join("driver/unbind"), &address.to_string())?;
        }
        Ok(())
    }

    /// Gives `address` back to the driver the kernel would choose: clears
    /// `driver_override`, releases it from its current driver and probes it.
    /// Returns the driver it ends up with (none when no driver claims it).
    pub fn reprobe(&self, address: PciAddress) -> Result<Option<String>, SysfsError> {
        let dir = self.existing_device_dir(address)?;
        write_sysfs(&dir.join("driver_override"), "\n")?;
        self.unbind(address)?;
        write_sysfs(
            &self.root.join("bus/pci/drivers_probe"),
            &address.to_string(),
        )?;
        self.driver(address)
    }

    /// Binds `address` to `driver` (for example [`VFIO_PCI_DRIVER`]).
    ///
    /// Uses `driver_override` and `drivers_probe`, which works for any device ID
    /// (binding through `new_id` silently does nothing for IDs a driver does not
    /// list). The device is first released by its current driver. If the new
    /// driver does not take it, the device is probed again with the override
    /// naming the driver it had, so it goes back to that driver (also when it
    /// had been bound by an override, as vfio-pci devices are, which the
    /// kernel's own choice would not restore); then the override is put back
    /// as it was, and [`SysfsError::BindFailed`] says what happened. Binding to
    /// the driver it already has does nothing.
    pub fn bind(&self, address: PciAddress, driver: &str) -> Result<(), SysfsError> {
        let dir = self.existing_device_dir(address)?;
        let current = self.driver(address)?;
        if current.as_deref() == Some(driver) {
            return Ok(());
        }
        let override_path = dir.join("driver_override");
        // The kernel shows no override as "(null)"; writing a newline clears it.
        let original_override = fs::read_to_string(&override_path)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty() && text != "(null)")
            .unwrap_or_else(|| "\n".to_owned());
        write_sysfs(&override_path, driver)?;
        if current.is_some()
            && let Err(err) = write_sysfs(&dir.join("driver/unbind"), &address.to_string())
        {
            // Nothing changed but the override: take it back.
            let _ = write_sysfs(&override_path, "\n");
            return Err(err);
        }
        let probe = write_sysfs(
            &self.root.join("bus/pci/drivers_probe"),
            &address.to_string(),
        );
        let now = self.driver(address)?;
        if now.as_deref() == Some(driver) {
            return Ok(());
        }
        // Restore: probe with the override naming the driver the device had
        // (or none, for the kernel's choice), then put the override back.
        let _ = write_sysfs(&override_path, current.as_deref().unwrap_or("\n"));
        if self.driver(address)?.is_some() {
            let _ = write_sysfs(&dir.join("driver/unbind"), &address.to_string());
        }
        let _ = write_sysfs(
            &self.root.join("bus/pci/drivers_probe"),
            &address.to_string(),
        );
        let _ = write_sysfs(&override_path, &original_override);
        match probe {
            Err(err @ SysfsError::PermissionDenied { .. }) => Err(err),
            _ => Err(SysfsError::BindFailed {
                address,
                driver: driver.to_owned(),
                now: self.driver(address)?,
            }),
        }
    }

    fn existing_device_dir(&self, address: PciAddress) -> Result<PathBuf, SysfsError> {
        let dir = self.device_dir(address);
        if dir.exists() {
            Ok(dir)
        } else {
            Err(SysfsError::NoSuchDevice {
                address,
                devices_dir: self.devices_dir(),
            })
        }
    }
}

/// The PCI addresses among the entries of `dir`, sorted. Entries with other
/// names (non-PCI devices in an IOMMU group, for example) are skipped.
fn read_addresses(dir: &Path) -> Result<Vec<PciAddress>, SysfsError> {
    let read_error = |source| SysfsError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut addresses = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let name = entry.map_err(read_error)?.file_name();
        if let Some(address) = name.to_str().and_then(|n| n.parse().ok()) {
            addresses.push(address);
        }
    }
    addresses.sort();
    Ok(addresses)
}

/// Reads a sysfs text file.
fn read_text(path: &Path) -> Result<String, SysfsError> {
    fs::read_to_string(path).map_err(|source| SysfsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a sysfs file holding one hexadecimal number such as `0x1234`.
fn read_hex(path: &Path, max: u64) -> Result<u64, SysfsError> {
    let text = read_text(path)?;
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    u64::from_str_radix(digits, 16)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| SysfsError::Unexpected {
            path: path.to_owned(),
            content: text.clone(),
        })
}

/// The last component of the symlink at `path`, or `None` when there is no link.
fn link_name(path: &Path) -> Result<Option<String>, SysfsError> {
    match fs::read_link(path) {
        Ok(target) => Ok(target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SysfsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `value` to a sysfs attribute in one `write` call, as sysfs expects.
fn write_sysfs(path: &Path, value: &str) -> Result<(), SysfsError> {
    fs::write(path, value).map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            SysfsError::PermissionDenied {
                path: path.to_owned(),
            }
        } else {
            SysfsError::Write {
                path: path.to_owned(),
                value: value.trim().to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake_sysfs::FakeSysfs;

    fn addr(text: &str) -> PciAddress {
        text.parse().unwrap()
    }

    #[test]
    fn lists_and_describes_functions() {
        let fake = FakeSysfs::new();
        fake.add("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, None, Some(3));
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        fake.add(
            "0000:00:1f.0",
            0x8086,
            0x2918,
            0x060100,
            Some("lpc_ich"),
            None,
        );
        let sysfs = Sysfs::at(fake.root());

        assert_eq!(
            sysfs.addresses().unwrap(),
            vec![
                addr("0000:00:02.0"),
                addr("0000:00:03.0"),
                addr("0000:00:1f.0")
            ]
        );
        let nvme = sysfs.function(addr("0000:00:02.0")).unwrap();
        assert_eq!(
            nvme,
            PciFunction {
                address: addr("0000:00:02.0"),
                vendor_id: 0x1b36,
                device_id: 0x0010,
                class: 0x010802,
                driver: Some("nvme".into()),
                iommu_group: Some(2),
            }
        );
        let lpc = sysfs.function(addr("0000:00:1f.0")).unwrap();
        assert_eq!(lpc.iommu_group, None);
        let edu = sysfs.function(addr("0000:00:03.0")).unwrap();
        assert_eq!(edu.driver, None);
    }

    #[test]
    fn finds_by_vendor_and_device() {
        let fake = FakeSysfs::new();
        fake.add("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, None, Some(3));
        fake.add("0000:00:04.0", 0x1234, 0x11e8, 0x00ff00, None, Some(4));
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        let sysfs = Sysfs::at(fake.root());
        assert_eq!(
            sysfs.find(0x1234, 0x11e8).unwrap(),
            vec![addr("0000:00:03.0"), addr("0000:00:04.0")]
        );
        assert!(sysfs.find(0xdead, 0xbeef).unwrap().is_empty());
    }

    #[test]
    fn group_members_are_listed() {
        let fake = FakeSysfs::new();
        fake.add("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, None, Some(3));
        fake.add(
            "0000:00:03.1",
            0x1234,
            0x11e9,
            0x00ff00,
            Some("e1000e"),
            Some(3),
        );
        let sysfs = Sysfs::at(fake.root());
        assert_eq!(
            sysfs.iommu_group_members(3).unwrap(),
            vec![addr("0000:00:03.0"), addr("0000:00:03.1")]
        );
        assert!(matches!(
            sysfs.iommu_group_members(9),
            Err(SysfsError::Read { .. })
        ));
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let fake = FakeSysfs::new();
        let sysfs = Sysfs::at(fake.root());
        let err = sysfs.function(addr("0000:00:09.0")).unwrap_err();
        assert!(matches!(err, SysfsError::NoSuchDevice { .. }));
        assert!(
            err.to_string().contains("no PCI device at 0000:00:09.0"),
            "{err}"
        );
    }

    #[test]
    fn garbage_in_an_id_file_is_reported_with_its_path() {
        let fake = FakeSysfs::new();
        fake.add("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, None, Some(3));
        let vendor = fake.root().join("devices/pci0000:00/0000:00:03.0/vendor");
        fs::write(&vendor, "banana\n").unwrap();
        let err = Sysfs::at(fake.root())
            .function(addr("0000:00:03.0"))
            .unwrap_err();
        match err {
            SysfsError::Unexpected { path, content } => {
                assert!(path.ends_with("vendor"));
                assert_eq!(content, "banana\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bind_to_current_driver_is_a_no_op() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:03.0",
            0x1234,
            0x11e8,
            0x00ff00,
            Some("vfio-pci"),
            Some(3),
        );
        let sysfs = Sysfs::at(fake.root());
        sysfs.bind(addr("0000:00:03.0"), VFIO_PCI_DRIVER).unwrap();
        let over = fake
            .root()
            .join("devices/pci0000:00/0000:00:03.0/driver_override");
        assert_eq!(fs::read_to_string(over).unwrap(), "(null)\n");
    }

    #[test]
    fn failed_bind_unbinds_then_restores_and_reports() {
        // A plain directory tree never binds anything: the bind must notice,
        // clear the override it set, and say so.
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        let sysfs = Sysfs::at(fake.root());
        let err = sysfs
            .bind(addr("0000:00:02.0"), VFIO_PCI_DRIVER)
            .unwrap_err();
        match &err {
            SysfsError::BindFailed { driver, now, .. } => {
                assert_eq!(driver, "vfio-pci");
                assert_eq!(now.as_deref(), Some("nvme"));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("modprobe vfio-pci"), "{err}");
        let dev = fake.root().join("devices/pci0000:00/0000:00:02.0");
        assert_eq!(
            fs::read_to_string(dev.join("driver_override")).unwrap(),
            "\n"
        );
        let unbind = fake.root().join("bus/pci/drivers/nvme/unbind");
        assert_eq!(fs::read_to_string(unbind).unwrap(), "0000:00:02.0");
        let probe = fake.root().join("bus/pci/drivers_probe");
        assert_eq!(fs::read_to_string(probe).unwrap(), "0000:00:02.0");
    }

    #[test]
    fn a_failed_bind_asks_for_the_previous_driver_and_keeps_its_override() {
        // A vfio-pci device is on vfio-pci through its override: the kernel's
        // own choice would leave it with no driver, so the recovery must name
        // vfio-pci and leave the override as it was.
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:03.0",
            0x1234,
            0x11e8,
            0x00ff00,
            Some(VFIO_PCI_DRIVER),
            Some(3),
        );
        let dev = fake.device_dir("0000:00:03.0");
        fs::write(dev.join("driver_override"), "vfio-pci\n").unwrap();
        let sysfs = Sysfs::at(fake.root());
        let err = sysfs.bind(addr("0000:00:03.0"), "pcieport").unwrap_err();
        assert!(matches!(err, SysfsError::BindFailed { .. }), "{err:?}");
        assert_eq!(
            fs::read_to_string(dev.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        let probe = fake.root().join("bus/pci/drivers_probe");
        assert_eq!(fs::read_to_string(probe).unwrap(), "0000:00:03.0");
    }

    #[test]
    fn resources_numa_and_config_are_read() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        fake.set_resources(
            "0000:00:02.0",
            &[
                (0xfebf_0000, 0xfebf_3fff, 0x0014_0204),
                (0, 0, 0),
                (0xc000, 0xc01f, 0x0004_0101),
            ],
        );
        fake.set_numa_node("0000:00:02.0", 1);
        let sysfs = Sysfs::at(fake.root());
        let r = sysfs.resources(addr("0000:00:02.0")).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].size(), 0x4000);
        assert!(r[0].is_memory() && r[0].is_64bit() && !r[0].is_prefetchable());
        assert_eq!(r[1].size(), 0);
        assert!(r[2].is_io() && r[2].size() == 0x20);
        assert_eq!(sysfs.numa_node(addr("0000:00:02.0")).unwrap(), Some(1));
        let config = sysfs.config(addr("0000:00:02.0")).unwrap();
        assert_eq!(&config[..4], &[0x36, 0x1b, 0x10, 0x00]);
        fake.set_numa_node("0000:00:02.0", -1);
        assert_eq!(sysfs.numa_node(addr("0000:00:02.0")).unwrap(), None);
    }

    #[test]
    fn usages_find_mounted_filesystems_and_interfaces_that_are_up() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        fake.add(
            "0000:00:03.0",
            0x8086,
            0x100e,
            0x020000,
            Some("e1000"),
            Some(3),
        );
        fake.add_block("0000:00:02.0", "nvme0n1");
        fake.add_block("0000:00:02.0", "nvme0n1p1");
        fake.add_net("0000:00:03.0", "eth0", true);
        let sysfs = Sysfs::at(fake.root());
        let mounts = "proc /proc proc rw 0 0\n/dev/nvme0n1p1 /data ext4 rw 0 0\n";
        assert_eq!(
            sysfs.usages(addr("0000:00:02.0"), mounts).unwrap(),
            vec![Usage::Mounted {
                block: "nvme0n1p1".into(),
                mountpoint: "/data".into()
            }]
        );
        assert!(sysfs.usages(addr("0000:00:02.0"), "").unwrap().is_empty());
        // A partition under device-mapper is in use even with nothing mounted.
        let holders = fake
            .device_dir("0000:00:02.0")
            .join("nvme/nvme0/nvme0n1p1/holders");
        std::fs::create_dir_all(holders.join("dm-0")).unwrap();
        let used = sysfs.usages(addr("0000:00:02.0"), "").unwrap();
        assert_eq!(
            used,
            vec![Usage::Stacked {
                block: "nvme0n1p1".into(),
                holder: "dm-0".into()
            }]
        );
        assert_eq!(
            used[0].to_string(),
            "/dev/nvme0n1p1 is part of /dev/dm-0 (device-mapper, RAID or similar)"
        );
        std::fs::remove_dir_all(&holders).unwrap();
        assert_eq!(
            sysfs.usages(addr("0000:00:03.0"), mounts).unwrap(),
            vec![Usage::InterfaceUp {
                interface: "eth0".into()
            }]
        );
        fake.add(
            "0000:00:04.0",
            0x8086,
            0x100e,
            0x020000,
            Some("e1000"),
            Some(4),
        );
        fake.add_net("0000:00:04.0", "eth1", false);
        assert!(
            sysfs
                .usages(addr("0000:00:04.0"), mounts)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn drivers_and_unbind() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        let sysfs = Sysfs::at(fake.root());
        assert!(sysfs.driver_exists("nvme"));
        assert!(!sysfs.driver_exists("vfio-pci"));
        assert!(!sysfs.driver_exists("../nvme"));
        sysfs.unbind(addr("0000:00:02.0")).unwrap();
        let unbind = fake.root().join("bus/pci/drivers/nvme/unbind");
        assert_eq!(fs::read_to_string(unbind).unwrap(), "0000:00:02.0");
    }

    #[test]
    fn bind_of_missing_device_changes_nothing() {
        let fake = FakeSysfs::new();
        let sysfs = Sysfs::at(fake.root());
        let err = sysfs
            .bind(addr("0000:00:07.0"), VFIO_PCI_DRIVER)
            .unwrap_err();
        assert!(matches!(err, SysfsError::NoSuchDevice { .. }));
        let probe = fake.root().join("bus/pci/drivers_probe");
        assert_eq!(fs::read_to_string(probe).unwrap(), "");
    }
}
