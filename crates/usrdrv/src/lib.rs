//! # usrdrv
//!
//! Safe user-space PCI drivers with DMA on Linux.
//!
//! usrdrv opens a PCI device by its full address and declared DMA mask, maps
//! its BARs for bounds-checked volatile register access, hands out DMA memory
//! and scatter-gather lists that stay inside the device's DMA mask and the
//! IOMMU's ranges, delivers interrupts as eventfds, and turns the kernel asking
//! for the device back into errors instead of hangs. Underneath is VFIO on
//! machines with an IOMMU, and the `usrdma` kernel module on machines without
//! one; [`Device::open`] picks by the driver the device is bound to, and the
//! driver code is the same for both.
//!
//! ```no_run
//! use std::time::Duration;
//! use usrdrv::Device;
//! use usrdrv::dma::{Direction, DmaMask};
//! use usrdrv::irq::IrqKind;
//! use usrdrv::pci::{Sysfs, VFIO_PCI_DRIVER};
//!
//! // Find QEMU's `edu` device and hand it to vfio-pci (needs root).
//! let sysfs = Sysfs::system();
//! let address = sysfs.find(0x1234, 0x11e8)?[0];
//! sysfs.bind(address, VFIO_PCI_DRIVER)?;
//!
//! // Open it, declaring that its DMA engine drives 28 address bits.
//! let device = Device::open(address, DmaMask::new(28)?)?;
//! let regs = device.bar(0)?;
//! assert_eq!(regs.read32(0x00)?, 0x010000ed);
//!
//! // DMA memory with its device address, and the caller's own memory mapped.
//! let buffer = device.alloc_dma(4096)?;
//! let mut mine = vec![0u8; 100];
//! let mapping = device.map_dma(&mut mine[..], Direction::FromDevice)?;
//! println!("buffer at {:#x}, mine at {:?}", buffer.device_addr(), mapping.sg_list());
//!
//! // Interrupts as eventfds.
//! let irqs = device.enable_interrupts(IrqKind::Msi, 1)?;
//! let fired = irqs.wait(0, Some(Duration::from_millis(10)))?;
//! # let _ = fired;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layout
//!
//! - [`Device`]: the handle drivers use.
//! - [`pci`]: addresses (`DDDD:BB:DD.F`), sysfs enumeration and driver
//!   binding, configuration-space capabilities.
//! - [`vfio`]: containers, groups, devices and IOMMU domains, one type per
//!   kernel object.
//! - [`usrdma`]: devices bound to the usrdma module, and the system-wide
//!   listing of its buffers.
//! - [`mmio`]: BAR access.
//! - [`dma`]: the IOVA allocator, DMA buffers (with a device-shared/CPU-owned
//!   typestate), mappings of the caller's memory, pools, named buffers.
//! - [`irq`]: INTx, MSI and MSI-X through eventfds.
//!
//! All raw system calls live in one private module; the rest of the crate has
//! no `unsafe` code. DMA and interrupts go through internal backend traits
//! that VFIO and usrdma implement.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod device;
pub mod dma;
mod error;
pub mod irq;
pub mod limits;
pub mod mmio;
pub mod pci;
mod revocation;
#[allow(unsafe_code)]
mod sys;
pub mod usrdma;
pub mod vfio;

pub use device::{Backend, Device};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
pub use error::Error;
