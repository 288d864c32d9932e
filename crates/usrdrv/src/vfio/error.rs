//! What can go wrong opening and using VFIO objects, with what to do about it.

use std::io;
use std::path::PathBuf;

use crate::pci::{PciAddress, SysfsError};

/// Errors from VFIO containers, groups and devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfioError {
    /// Reading PCI state from sysfs failed.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// A VFIO character device does not exist.
    #[error("{} does not exist: load VFIO with `modprobe vfio-pci` (and bind the device to vfio-pci)", .path.display())]
    NotPresent {
        /// The missing device node.
        path: PathBuf,
    },
    /// A VFIO character device exists but may not be opened.
    #[error(
        "permission denied opening {}: run as root, or give your user the group's device node (e.g. a udev rule setting its owner) and enough RLIMIT_MEMLOCK",
        .path.display()
    )]
    PermissionDenied {
        /// The device node.
        path: PathBuf,
    },
    /// Opening a VFIO character device failed otherwise.
    #[error("cannot open {}", .path.display())]
    Open {
        /// The device node.
        path: PathBuf,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The group is already open, here or in another process.
    #[error(
        "IOMMU group {group} is already open (by this process or another): VFIO allows one opener per group"
    )]
    GroupBusy {
        /// The group number.
        group: u32,
    },
    /// The kernel asked for the device back (unbind or hot-unplug) and usrdrv
    /// gave it back: every later call on it fails this way.
    #[error("{address} was revoked (unbound or removed): drop every handle to it")]
    Revoked {
        /// The device.
        address: PciAddress,
    },
    /// Every device of the IOMMU domain was revoked and given back, which
    /// released its IOMMU mappings: the domain takes no new device.
    #[error(
        "the IOMMU domain gave back all its devices (revoked) and lost its mappings: open group {group} in a new IommuDomain"
    )]
    DomainReleased {
        /// The group that was to be attached.
        group: u32,
    },
    /// The device is not bound to vfio-pci.
    #[error(
        "{address} is bound to {}, not vfio-pci: bind it first (as root: `echo vfio-pci > /sys/bus/pci/devices/{address}/driver_override`, unbind it from its driver, then `echo {address} > /sys/bus/pci/drivers_probe`)",
        .driver.as_deref().unwrap_or("no driver")
    )]
    NotBoundToVfio {
        /// The device.
        address: PciAddress,
        /// Its current driver, if any.
        driver: Option<String>,
    },
    /// The device has no IOMMU group: no IOMMU translates its DMA.
    #[error(
        "{address} has no IOMMU group, so no IOMMU is enabled for it: turn on VT-d/AMD-Vi in the firmware, and on Intel boot with `intel_iommu=on` (AMD-Vi is on unless `amd_iommu=off`); on a machine without an IOMMU, use the usrdma module instead (`modprobe usrdma`, then `usrdrv bind {address} --driver usrdma`); `usrdrv doctor` checks it all"
    )]
    NoIommu {
        /// The device.
        address: PciAddress,
    },
    /// Some members of the group are bound to drivers other than vfio-pci.
    #[error(
        "IOMMU group {group} is not viable: every member must be bound to vfio-pci or to no driver, but {}",
        describe_blockers(.blockers)
    )]
    GroupNotViable {
        /// The group number.
        group: u32,
        /// The members in the way and their drivers.
        blockers: Vec<(PciAddress, String)>,
    },
    /// The kernel's VFIO speaks another API version.
    #[error("VFIO API version {found} is not supported (expected 0)")]
    ApiVersion {
        /// The version the kernel reported.
        found: i32,
    },
    /// The kernel lacks the Type1 v2 IOMMU backend.
    #[error("the kernel's VFIO has no Type1 v2 IOMMU backend: `modprobe vfio_iommu_type1`")]
    NoType1v2,
    /// The IOMMU refused to set up the container because interrupts are not isolated.
    #[error(
        "the IOMMU refused to attach group {group}: interrupt remapping is off, so the device could forge interrupts. Enable it (firmware, `intremap=on`), or as a last resort load vfio_iommu_type1 with allow_unsafe_interrupts=1"
    )]
    UnsafeInterrupts {
        /// The group being attached.
        group: u32,
    },
    /// An ioctl failed.
    #[error("{op} on {target} failed")]
    Ioctl {
        /// The ioctl's name.
        op: &'static str,
        /// What it was issued on.
        target: String,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// VFIO gave a device that is not a PCI function.
    #[error("VFIO reports {address} as a device that is not PCI: usrdrv drives PCI functions only")]
    NotPci {
        /// The device.
        address: PciAddress,
    },
    /// The kernel's answer to an ioctl is not what the UAPI header documents.
    #[error(
        "{op} on {target} returned something unexpected: {why}; please report this with your kernel version"
    )]
    BadReply {
        /// The ioctl's name.
        op: &'static str,
        /// What it was issued on.
        target: String,
        /// What is wrong with the answer.
        why: String,
    },
    /// The device has no such region, or the region is not a usable BAR.
    #[error("{address} has no usable BAR {bar}: {why}")]
    NoSuchBar {
        /// The device.
        address: PciAddress,
        /// The BAR asked for.
        bar: u8,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// The IOMMU's address ranges and the DMA mask leave nothing to allocate.
    #[error("cannot set up device addresses")]
    AddressSpace(#[source] crate::dma::IovaError),
    /// A configuration-space write was refused.
    #[error(transparent)]
    ProtectedConfig(#[from] crate::pci::ConfigError),
    /// The device does not support reset.
    #[error("{address} does not support reset (no FLR, PM or bus reset available to VFIO)")]
    ResetUnsupported {
        /// The device.
        address: PciAddress,
    },
}

fn describe_blockers(blockers: &[(PciAddress, String)]) -> String {
    let list: Vec<String> = blockers
        .iter()
        .map(|(addr, driver)| format!("{addr} is bound to {driver}"))
        .collect();
    format!("{}: unbind them or bind them to vfio-pci", list.join(", "))
}

impl VfioError {
    /// Maps a failure to open a VFIO device node to the error that says what to do.
    pub(crate) fn open(path: PathBuf, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::NotFound => Self::NotPresent { path },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ => Self::Open { path, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_viable_names_every_blocker() {
        let err = VfioError::GroupNotViable {
            group: 7,
            blockers: vec![
                ("0000:00:02.0".parse().unwrap(), "nvme".into()),
                ("0000:00:02.1".parse().unwrap(), "snd_hda_intel".into()),
            ],
        };
        let msg = err.to_string();
        assert!(msg.contains("group 7"), "{msg}");
        assert!(msg.contains("0000:00:02.0 is bound to nvme"), "{msg}");
        assert!(
            msg.contains("0000:00:02.1 is bound to snd_hda_intel"),
            "{msg}"
        );
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let missing = VfioError::open(
            "/dev/vfio/vfio".into(),
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert!(
            missing.to_string().contains("modprobe vfio-pci"),
            "{missing}"
        );
        let denied = VfioError::open(
            "/dev/vfio/3".into(),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(denied.to_string().contains("run as root"), "{denied}");
    }
}
