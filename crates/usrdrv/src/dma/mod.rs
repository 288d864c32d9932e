//! DMA: device addresses, memory the device can reach, and the caller's buffers
//! mapped for the device.
//!
//! - [`DmaBuffer`]: memory with a device address (the seed's
//!   `usr_pci_get_consistent`), with a [`Shared`]/[`CpuOwned`] typestate.
//! - [`DmaRegion`]: how the CPU reaches device-shared memory (typed, atomic,
//!   bounds-checked; [`DmaSlice`] for a part of it).
//! - [`DmaMapping`]: the caller's buffer mapped for the device, with its
//!   scatter-gather list (the seed's `usr_pci_mmap`): owned buffers with
//!   `Device::map_dma`, borrowed ones for a scope with `Device::with_dma`.
//! - [`PersistentBuffer`]: a usrdma buffer that outlives the process.
//! - [`DmaPool`]: small buffers for the hot path, no system call each.
//! - [`NamedBuffers`]: buffers found, listed and freed by name.
//! - [`IovaAllocator`]: device addresses within the IOMMU's ranges and the
//!   device's [`DmaMask`].

mod buffer;
mod error;
mod iova;
mod mapping;
mod named;
mod pool;
mod region;
mod types;

pub(crate) mod backend;
pub(crate) use backend::DmaBackend;
pub use buffer::{BufferState, CpuOwned, DmaBuffer, PersistentBuffer, Shared};
pub use error::DmaError;
pub(crate) use error::{map_failure, memlock_limit};
pub use iova::{IovaAllocator, IovaError, IovaRange};
pub(crate) use mapping::lend;
pub use mapping::{Borrowed, DmaMapping, DmaTarget};
pub(crate) use named::check_name;
pub use named::{MAX_NAME_LEN, NamedBufferInfo, NamedBuffers};
pub use pool::{DmaPool, PoolBuffer};
pub use region::{DmaRegion, DmaSlice};
pub use types::{Backing, Direction, DmaMask, SgEntry};
