//! # usrdrv
//!
//! Safe user-space PCI drivers with DMA on Linux.
//!
//! usrdrv opens a PCI device by its full address, maps its BARs for
//! bounds-checked volatile register access, and (in the DMA layer that grows on
//! this one) hands out DMA memory and scatter-gather lists that stay inside the
//! device's DMA mask. Underneath is VFIO on machines with an IOMMU.
//!
//! ```no_run
//! use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};
//! use usrdrv::vfio::Device;
//!
//! // Find QEMU's `edu` device and hand it to vfio-pci (needs root).
//! let sysfs = Sysfs::system();
//! let address: PciAddress = sysfs.find(0x1234, 0x11e8)?[0];
//! sysfs.bind(address, VFIO_PCI_DRIVER)?;
//!
//! // Open it through VFIO and read its identification register.
//! let device = Device::open(address)?;
//! let bar0 = device.bar(0)?;
//! assert_eq!(bar0.read32(0x00)?, 0x010000ed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layout
//!
//! - [`pci`]: addresses (`DDDD:BB:DD.F`), sysfs enumeration and driver binding.
//! - [`vfio`]: containers, groups and devices, one type per kernel object.
//! - [`mmio`]: BAR access.
//!
//! All raw system calls live in one private module; the rest of the crate has
//! no `unsafe` code.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod device;
pub mod dma;
mod error;
pub mod irq;
pub mod mmio;
pub mod pci;
#[allow(unsafe_code)]
mod sys;
pub mod vfio;

pub use device::Device;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
pub use error::Error;
