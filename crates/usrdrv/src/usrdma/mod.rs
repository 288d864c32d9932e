//! The usrdma backend: devices bound to the `usrdma` kernel module, for
//! machines without an IOMMU, behind the same types as VFIO.
//!
//! Without an IOMMU a device's DMA reaches physical memory directly, and VFIO
//! offers no DMA mapping. The module (in `kmod/usrdma`) gives one privileged
//! process per function what VFIO would: BARs, coherent buffers below the DMA
//! mask, the caller's memory pinned and mapped (or bounced when it lies above
//! the mask), interrupts as eventfds, and clean-up on close, process death
//! and unplug. [`crate::Device::open`] picks this backend when the device is
//! bound to `usrdma`; this module is the low-level handle and the system-wide
//! listing of the module's buffers.

pub(crate) mod backend;
mod device;
pub(crate) mod dma;
mod error;
mod irq;
pub mod listing;

pub use device::{Device, USRDMA_DRIVER, node_path};
pub use error::UsrdmaError;
