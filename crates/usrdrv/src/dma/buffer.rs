//! DMA buffers: memory with a device address, in a device-shared or CPU-owned state.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use super::backend::{Allocation, DmaBackend};
use super::{Backing, DmaRegion};

/// The state in which the device may access a buffer: the CPU reaches it only
/// through [`DmaRegion`]'s atomic accessors, and the device address is
/// available.
#[derive(Debug)]
pub enum Shared {}

/// The state in which the CPU owns a buffer exclusively: ordinary slices, and
/// no device address (hand it back with [`DmaBuffer::into_device`] first).
/// Entered only through the `unsafe` [`DmaBuffer::into_cpu`].
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
/// unmap, verified), then returns the memory; if the device's access cannot be
/// taken away, the memory is leaked, never reused. It keeps the IOMMU domain
/// alive on its own, so the device handle may be dropped first.
///
/// In the [`Shared`] state (what allocation gives) the buffer dereferences to a
/// [`DmaRegion`]: typed, atomic, bounds-checked accesses, safe from any thread
/// while the device works on the memory. No `&[u8]` into it exists, because
/// nothing in safe code can prove the device is not writing it: a device address
/// is a plain `u64` the driver has already given the device.
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let buffer = device.alloc_dma(4096)?;
/// buffer.write_bytes(0, b"hello")?;
/// buffer.write::<u32>(8, 0xfeed)?;
/// println!("the device finds it at {:#x}", buffer.device_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// When the driver knows the device is done with the buffer (it has reaped the
/// completion of the last command that used it, or reset the device), it may
/// take it into the [`CpuOwned`] state for ordinary slices: that step is
/// [`unsafe`](DmaBuffer::into_cpu), with the contract stated there.
pub struct DmaBuffer<S: BufferState = Shared> {
    // INVARIANT: `region` covers `inner.allocation.memory`, which `inner` keeps
    // mapped for as long as this value lives (and forever if it is leaked).
    region: DmaRegion,
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
            region: DmaRegion::new(allocation.memory.window(), allocation.device_addr),
            inner: Inner {
                allocation,
                backend,
                backing,
            },
            _state: PhantomData,
        }
    }

    /// Takes the buffer back from the device: after this the CPU may use
    /// ordinary slices ([`DmaBuffer::as_slice`], [`DmaBuffer::as_mut_slice`]).
    ///
    /// # Safety
    ///
    /// From this call until the buffer is handed back with
    /// [`DmaBuffer::into_device`] (or dropped), no device reads or writes any
    /// byte of it: every DMA that used its device address (or any address
    /// inside it) has completed, as the device's own protocol proves (a reaped
    /// completion, an idle status register, a reset), and none will be started.
    /// usrdrv cannot check this: the device address is a plain number the
    /// driver has given the device.
    #[allow(unsafe_code)] // the typestate's one unchecked step
    pub unsafe fn into_cpu(self) -> DmaBuffer<CpuOwned> {
        self.region.sync_for_cpu();
        DmaBuffer {
            region: self.region,
            inner: self.inner,
            _state: PhantomData,
        }
    }
}

impl Deref for DmaBuffer<Shared> {
    type Target = DmaRegion;

    #[inline]
    fn deref(&self) -> &DmaRegion {
        &self.region
    }
}

#[allow(unsafe_code)] // slices, on the proof `into_cpu`'s caller gave
impl DmaBuffer<CpuOwned> {
    /// The buffer's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the CpuOwned state is entered only through `into_cpu`, whose
        // caller guarantees no device touches the memory until `into_device`
        // consumes this value; the buffer is owned by this value alone (a
        // `DmaBuffer` is never cloned, and shared buffers such as persistent
        // ones have no CpuOwned state), and in this state no `DmaRegion` of it
        // is reachable, so nothing writes the memory while `&self` is borrowed.
        unsafe { self.inner.allocation.memory.as_slice() }
    }

    /// The buffer's bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` excludes every other slice.
        unsafe { self.inner.allocation.memory.as_mut_slice() }
    }

    /// Hands the buffer to the device: the CPU's writes become visible to it,
    /// and its device address becomes available again.
    pub fn into_device(self) -> DmaBuffer<Shared> {
        fence(Ordering::SeqCst);
        DmaBuffer {
            region: self.region,
            inner: self.inner,
            _state: PhantomData,
        }
    }
}

impl<S: BufferState> DmaBuffer<S> {
    /// The buffer's length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.inner.allocation.memory.len()
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

/// A persistent buffer of the usrdma module: named, kept by the kernel after
/// this process exits, and mapped by any process that attaches it
/// ([`Device::alloc_persistent`](crate::Device::alloc_persistent),
/// [`Device::attach_persistent`](crate::Device::attach_persistent)).
///
/// Several handles, in this process and others, may reach the same memory at
/// once, so it has no CPU-owned state: it dereferences to a [`DmaRegion`]
/// (atomic accesses) and nothing else. Dropping it unmaps it from this process
/// only.
///
/// ```no_run
/// # use usrdrv::{Device, dma::DmaMask};
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let log = device.alloc_persistent("fw-log", 64 * 1024)?;
/// log.write_bytes(0, b"boot ok")?;
/// println!("{} at {:#x}", log.name(), log.device_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PersistentBuffer {
    name: String,
    buffer: DmaBuffer<Shared>,
}

impl fmt::Debug for PersistentBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersistentBuffer")
            .field("name", &self.name)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl PersistentBuffer {
    pub(crate) fn new(name: &str, buffer: DmaBuffer<Shared>) -> Self {
        Self {
            name: name.to_owned(),
            buffer,
        }
    }

    /// The buffer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What memory backs the buffer.
    pub fn backing(&self) -> Backing {
        self.buffer.backing()
    }
}

impl Deref for PersistentBuffer {
    type Target = DmaRegion;

    #[inline]
    fn deref(&self) -> &DmaRegion {
        &self.buffer
    }
}
