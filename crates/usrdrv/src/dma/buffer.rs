//! DMA buffers: memory with a device address, in a device-shared or CPU-owned state.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use super::backend::{Allocation, DmaBackend};
use super::{Backing, DmaError};
use crate::mmio::MmioValue;

/// The state in which the device may access a buffer: only volatile accesses
/// from the CPU, and the device address is available.
#[derive(Debug)]
pub enum Shared {}

/// The state in which the CPU owns a buffer: ordinary slices, and no device
/// address (hand it back with [`DmaBuffer::into_device`] first).
#[derive(Debug)]
pub enum CpuOwned {}

/// A buffer state: [`Shared`] or [`CpuOwned`].
pub trait BufferState: sealed::Sealed {}
impl BufferState for Shared {}
impl BufferState for CpuOwned {}
mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Shared {}
    impl Sealed for super::CpuOwned {}
}

/// The allocation and what keeps it reachable; frees it on drop.
struct Inner {
    allocation: Allocation,
    backend: Arc<dyn DmaBackend>,
    backing: Backing,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(err) = self.backend.free(&self.allocation) {
            // The device may still reach this memory: never hand it back to the
            // process. Report it; a destructor cannot return the error.
            eprintln!("usrdrv: {err}");
            self.allocation.memory.leak();
        }
    }
}

/// Memory the device can reach, with its device address: the seed's
/// `usr_pci_get_consistent`, without its one-page limit.
///
/// Zeroed, page-aligned, contiguous in device address space and below the
/// device's DMA mask. Dropping it first takes the device's access away (IOMMU
/// unmap, verified), then returns the memory; it keeps the IOMMU domain alive
/// on its own, so the device handle may be dropped first.
///
/// The state parameter enforces the DMA ownership rule: while [`Shared`], no
/// `&[u8]` into the memory exists and the CPU uses volatile accessors; in
/// [`CpuOwned`] the CPU gets ordinary slices and the device address is hidden.
/// Transitions are the synchronisation points ([`DmaBuffer::into_cpu`],
/// [`DmaBuffer::into_device`]).
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let mut buffer = device.alloc_dma(4096)?.into_cpu();
/// buffer.as_mut_slice()[..5].copy_from_slice(b"hello");
/// let buffer = buffer.into_device();
/// println!("the device finds it at {:#x}", buffer.device_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DmaBuffer<S: BufferState = Shared> {
    inner: Inner,
    _state: PhantomData<S>,
}

impl<S: BufferState> fmt::Debug for DmaBuffer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("len", &self.len())
            .field("device_addr", &self.inner.allocation.device_addr)
            .field("backing", &self.inner.backing)
            .finish()
    }
}

impl DmaBuffer<Shared> {
    pub(crate) fn new(allocation: Allocation, backend: Arc<dyn DmaBackend>) -> Self {
        let backing = if allocation.memory.is_coherent() {
            Backing::Coherent
        } else if allocation.memory.is_huge() {
            Backing::HugePages2M
        } else {
            Backing::Anonymous
        };
        Self {
            inner: Inner {
                allocation,
                backend,
                backing,
            },
            _state: PhantomData,
        }
    }

    /// The device address of the first byte.
    pub fn device_addr(&self) -> u64 {
        self.allocation().device_addr
    }

    /// Reads one naturally aligned little-endian value at `offset`, volatile.
    pub fn read<T: MmioValue>(&self, offset: usize) -> Result<T, DmaError> {
        let memory = &self.allocation().memory;
        memory
            .read(offset)
            .ok_or_else(|| access_error::<T>(offset, memory.len()))
    }

    /// Writes one naturally aligned little-endian value at `offset`, volatile.
    pub fn write<T: MmioValue>(&self, offset: usize, value: T) -> Result<(), DmaError> {
        let memory = &self.allocation().memory;
        memory
            .write(offset, value)
            .ok_or_else(|| access_error::<T>(offset, memory.len()))
    }

    /// Copies bytes out of the buffer from `offset`, with volatile reads.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), DmaError> {
        let memory = &self.allocation().memory;
        memory.read_bytes(offset, out).ok_or(DmaError::OutOfBounds {
            offset,
            len: out.len(),
            size: memory.len(),
        })
    }

    /// Copies `data` into the buffer at `offset`, with volatile writes.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), DmaError> {
        let memory = &self.allocation().memory;
        memory
            .write_bytes(offset, data)
            .ok_or(DmaError::OutOfBounds {
                offset,
                len: data.len(),
                size: memory.len(),
            })
    }

    /// Orders the CPU's earlier writes to DMA memory before what follows (the
    /// doorbell write that starts the device). A fence on cache-coherent x86;
    /// the place for cache maintenance on non-coherent platforms.
    pub fn sync_for_device(&self) {
        fence(Ordering::SeqCst);
    }

    /// Orders what the device wrote (as seen after its completion interrupt or
    /// status read) before the CPU's reads that follow.
    pub fn sync_for_cpu(&self) {
        fence(Ordering::SeqCst);
    }

    /// Takes the buffer back from the device: after this the CPU may use slices.
    /// The driver must have no DMA to it in flight.
    pub fn into_cpu(self) -> DmaBuffer<CpuOwned> {
        self.sync_for_cpu();
        DmaBuffer {
            inner: self.inner,
            _state: PhantomData,
        }
    }
}

impl DmaBuffer<CpuOwned> {
    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.allocation().memory.as_slice()
    }

    /// The buffer's bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.inner.allocation.memory.as_mut_slice()
    }

    /// Hands the buffer to the device: the CPU's writes become visible to it,
    /// and its device address becomes available again.
    pub fn into_device(self) -> DmaBuffer<Shared> {
        fence(Ordering::SeqCst);
        DmaBuffer {
            inner: self.inner,
            _state: PhantomData,
        }
    }
}

impl<S: BufferState> DmaBuffer<S> {
    fn allocation(&self) -> &Allocation {
        &self.inner.allocation
    }

    /// The buffer's length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.allocation().memory.len()
    }

    /// Whether the buffer is empty (never: allocation refuses size 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What memory backs the buffer.
    pub fn backing(&self) -> Backing {
        self.inner.backing
    }
}

fn access_error<T>(offset: usize, size: usize) -> DmaError {
    let width = std::mem::size_of::<T>();
    if offset.checked_add(width).is_none_or(|end| end > size) {
        DmaError::OutOfBounds {
            offset,
            len: width,
            size,
        }
    } else {
        DmaError::Misaligned { offset, width }
    }
}
