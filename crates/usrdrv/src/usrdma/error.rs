//! What can go wrong opening and driving a device through the usrdma module,
//! and what to do about it.

use std::io;
use std::path::PathBuf;

use crate::pci::{PciAddress, SysfsError};

/// Errors from the usrdma backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsrdmaError {
    /// Reading PCI state from sysfs failed.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The device is bound to another driver (or none).
    #[error(
        "{address} is bound to {}, not usrdma: hand it over with `usrdrv bind {address} --driver usrdma` (load the module first: `modprobe usrdma`)",
        .driver.as_deref().unwrap_or("no driver")
    )]
    NotBound {
        /// The device.
        address: PciAddress,
        /// Its current driver, if any.
        driver: Option<String>,
    },
    /// The device node does not exist although the device is bound.
    #[error("{} does not exist: is devtmpfs mounted on /dev? (the usrdma module creates the node on bind)", .path.display())]
    NoNode {
        /// The node's path.
        path: PathBuf,
    },
    /// The caller may not open the node.
    #[error(
        "opening {} needs root (CAP_SYS_RAWIO): without an IOMMU the device reaches all memory, so only a privileged process may drive it", .path.display()
    )]
    Permission {
        /// The node's path.
        path: PathBuf,
    },
    /// Another process (or another handle in this one) has the device open.
    #[error(
        "{address} is already open through usrdma (one opener at a time): close the other handle or process (`fuser {}`)", .path.display()
    )]
    Busy {
        /// The device.
        address: PciAddress,
        /// The node's path.
        path: PathBuf,
    },
    /// The module speaks an older version of the ABI than this crate needs.
    #[error(
        "the usrdma module speaks ABI version {found}, this usrdrv needs {expected} or later: install the module from the same usrdrv release"
    )]
    ApiVersion {
        /// What the module reported.
        found: u32,
        /// What this crate speaks.
        expected: u32,
    },
    /// The kernel asked for the device back (unbind or hot-unplug).
    #[error("{address} was revoked (unbound or removed): drop every handle to it")]
    Revoked {
        /// The device.
        address: PciAddress,
    },
    /// The device has no such memory BAR.
    #[error("{address} has no mappable memory BAR {bar}")]
    NoSuchBar {
        /// The device.
        address: PciAddress,
        /// The BAR asked for.
        bar: u8,
    },
    /// The mask cannot be used.
    #[error(
        "a DMA mask of {bits} bits is not supported by usrdma or the platform: the module takes 12 to 64 bits"
    )]
    BadMask {
        /// The mask width asked for.
        bits: u32,
    },
    /// A configuration-space write was refused.
    #[error(transparent)]
    ProtectedConfig(#[from] crate::pci::ConfigError),
    /// The function has no reset method the kernel can use.
    #[error("{address} cannot be reset: it has no function-level or other reset method")]
    ResetUnsupported {
        /// The device.
        address: PciAddress,
    },
    /// The module refused to take the device as quiesced because bus
    /// mastering is on: a transfer a previous owner started could be
    /// landing, so the module keeps that owner's memory.
    #[error(
        "{address} masters the bus, so the usrdma module cannot take it as quiesced: declare it quiesced (Device::quiesce) right after opening, before anything turns bus mastering on"
    )]
    BusMasterOn {
        /// The device.
        address: PciAddress,
        /// The error the module returned (`EBUSY`).
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("{op} on {address} failed")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The device.
        address: PciAddress,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
}
