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
//! buffer.write_bytes(0, b"for the device")?;
//! let mapping = device.map_dma(vec![0u8; 100], Direction::FromDevice)?;
//! println!("buffer at {:#x}, mine at {:?}", buffer.device_addr(), mapping.sg_list());
//! let mine: Vec<u8> = mapping.unmap()?;
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
//! - [`emulated`]: in-process device models, for testing a driver in
//!   `cargo test` without hardware, with faults injected.
//!
//! All raw system calls live in one private module. Outside it, `unsafe`
//! appears only where a contract crosses the DMA seam (mapping memory for the
//! device, and the CPU-owned state of a buffer), each with a `SAFETY` comment.
//! A device is driven through one internal backend trait (registers,
//! configuration space, DMA, interrupts, reset, revocation) that VFIO, usrdma
//! and the emulated backend implement.
//!
//! ## Safety model
//!
//! A driver written in safe Rust cannot make the device write memory that
//! Rust has freed or believes it owns exclusively. That holds whatever safe
//! code does with usrdrv's values: `mem::forget`, `Box::leak`, `Rc` cycles,
//! sharing between threads, several handles to one device, drops in any order.
//! Here is what guarantees it, and where the caller takes over.
//!
//! **The caller's memory.** [`Device::map_dma`] takes the buffer by value
//! (`Vec<u8>`, `Box<[u8]>`) or `'static` (`&'static [u8]`, `&'static mut [u8]`)
//! and holds it until [`DmaMapping::unmap`](dma::DmaMapping::unmap) gives it
//! back: if the mapping is forgotten, leaked, or the kernel fails to unmap,
//! the buffer stays allocated forever and is never reused. Borrowed memory is
//! lent for a scope with [`Device::with_dma`] (or
//! [`Device::with_dma_to_device`]): the mapping exists only inside the
//! closure, is unmapped before the call returns or unwinds, and if the kernel
//! refuses that unmap the process aborts, because the borrow is ending and the
//! memory could no longer be handed back safely.
//!
//! **Memory the device shares.** [`DmaBuffer`](dma::DmaBuffer)s,
//! [`PoolBuffer`](dma::PoolBuffer)s and
//! [`PersistentBuffer`](dma::PersistentBuffer)s dereference to
//! [`DmaRegion`](dma::DmaRegion): every access is bounds-checked and
//! single-copy atomic (relaxed by default, any
//! [`Ordering`](std::sync::atomic::Ordering) with `load`/`store`), copies move
//! aligned 8-byte words, and plain-data types go in and out with
//! `read_obj`/`write_obj` (`zerocopy`'s traits prove them plain). No `&[u8]`
//! into such memory is ever handed out in safe code.
//!
//! Device structures are reached at whatever width each field has, so
//! accesses of different widths to the same bytes can race: a `u16` phase
//! tag stored while another thread copies the whole entry in 8-byte words,
//! or the in-process emulated device writing an entry the driver polls.
//! Between Rust atomics such a race is undefined behaviour (Rust's memory
//! model, like C++'s, has no mixed-size atomics). So on x86-64 usrdrv does
//! not use Rust atomics for this memory: each access is one `mov` (an
//! `xchg` for a sequentially consistent store) in inline assembly, which the
//! compiler treats as an opaque operation and the processor's memory model
//! (x86-TSO) defines for any mix of aligned sizes, as the device's own
//! accesses are. Races of any widths, between threads, processes and the
//! device, are then sound: a reader sees each access whole, old or new. On
//! other architectures the accesses are Rust atomics, and a mixed-width race
//! between this process's threads is the one thing the caller must still
//! avoid (keep one width per location across threads, as device protocols
//! do anyway).
//!
//! **Where the caller takes responsibility.** A device address is a plain
//! `u64` the driver has written into the device; nothing in the type system
//! knows when the device is done with it. So the one step that hands out
//! ordinary slices, [`DmaBuffer::into_cpu`](dma::DmaBuffer::into_cpu), is
//! `unsafe`: its contract is that no device reads or writes the buffer until
//! it is handed back with `into_device`, as the device's own protocol proves
//! (a reaped completion, an idle engine, a reset). Persistent buffers, which
//! other processes may map, have no CPU-owned state at all.
//!
//! **What the backends add.** With VFIO the IOMMU confines the device to what
//! is mapped, and unmapping revokes access: a stale address faults instead of
//! landing. Whole pages are mapped, so the rest of a page that a small buffer
//! shares with other heap objects is reachable too; which bytes the device
//! writes inside the mapped pages is the driver's contract with its device
//! (the scatter-gather list). With usrdma there is no IOMMU: the device can
//! reach all memory, so any wrong address a driver writes to a register can
//! corrupt the machine; usrdma keeps pinned pages and buffers allocated until
//! they are unmapped and stops the device when the process ends.
//!
//! **Between owners.** A device may still hold a transfer a previous owner
//! queued before it died. Bus mastering is off when a device is opened and
//! goes on only when the driver first allocates or maps DMA memory or enables
//! MSI; [`Device::quiesce`] runs the driver's own step to stop or drain the
//! device before that (needed for devices without a reset, such as QEMU's
//! edu). Devices with a reset (FLR, PM, bus) are reset between owners by
//! vfio-pci and by usrdma. With VFIO, a dead owner's mappings are gone with
//! its container and a new domain hands out addresses from a random page on,
//! so a stale transfer most likely faults in the IOMMU even without a quiesce
//! step (most likely: nothing but the quiesce step or a reset makes it
//! certain). With usrdma, whose device reaches all memory, the module keeps a
//! dead owner's buffers and pinned pages allocated (its quarantine) until the
//! device is reset, the next owner's `Device::quiesce` succeeds, or bus
//! mastering has stayed off for the module's grace period (`quarantine_ms`,
//! one second by default), so a late transfer lands in memory nobody else
//! has.
//!
//! **When the kernel asks for the device back** (unbind, hot-unplug), usrdrv
//! gives it back even if the driver is idle, so the unbind does not hang:
//! register accesses, new DMA and interrupt waits then fail with a `Revoked`
//! error ([`Error::is_revoked`]); BAR mappings are replaced by memory that
//! reads all-ones, so a [`BarView`](mmio::BarView) racing the revocation
//! reads what a vanished device would; DMA memory stays valid until dropped.
//! A driver that must finish in-flight I/O first asks for a bounded grace
//! period with [`Device::set_release_policy`].
//!
//! **Registers.** [`Bar`](mmio::Bar) accesses are volatile, bounds- and
//! alignment-checked, and never form a reference to device memory.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod device;
mod device_backend;
pub mod dma;
pub mod emulated;
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
pub use revocation::{MAX_RELEASE_GRACE, ReleasePolicy};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
pub use error::Error;
