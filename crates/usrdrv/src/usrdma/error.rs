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
    /// The kernel is locked down: it forbids user space direct access to
    /// PCI devices, and the module refuses to be opened (EPERM although the
    /// caller has `CAP_SYS_RAWIO`).
    #[error(
        "the kernel is locked down (Secure Boot, or lockdown= on the command line; see /sys/kernel/security/lockdown), which forbids user space direct access to PCI devices, so the usrdma module refuses to open {}: usrdma cannot be used on this boot; boot without lockdown, or use VFIO with an IOMMU (vfio-pci works under lockdown)", .path.display()
    )]
    LockedDown {
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
    /// The memory to map for DMA is a shared mapping of a regular file
    /// (page cache that its file system writes back), which the module does
    /// not pin for the long term.
    #[error(
        "{len} bytes at {addr:#x} lie in a shared mapping of a regular file, which the usrdma module will not pin for DMA (the file system writes those pages back while the device may change them): map anonymous memory (a Vec or Box), a memfd or tmpfs file, shared anonymous memory or hugetlb pages instead, and copy the file's data in and out"
    )]
    NotPinnable {
        /// The first byte asked for.
        addr: u64,
        /// The length asked for.
        len: u64,
    },
    /// A coherent buffer larger than this kernel can give.
    #[error(
        "a DMA buffer of {size} bytes is more than this kernel can give ({max} bytes at most{}): map your own memory with map_dma instead (hugetlb pages, e.g. mmap with MAP_HUGETLB, for large physically contiguous runs), or boot a kernel with CMA and reserve an area with cma=SIZE",
        if *.cma { ", the CMA area's size" } else { ": one block of the page allocator, as the kernel has no CMA" }
    )]
    BufferTooLarge {
        /// The size asked for (whole pages).
        size: u64,
        /// The largest the module reported (`GET_INFO`).
        max: u64,
        /// The kernel takes large buffers from a CMA area.
        cma: bool,
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
