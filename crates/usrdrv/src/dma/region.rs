//! Device-shared DMA memory as the CPU reaches it: typed, atomic, bounds-checked
//! accesses, never a Rust reference.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{Ordering, fence};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::DmaError;
use crate::mmio::MmioValue;
use crate::sys::dma_memory::DmaWindow;

/// Memory the device can reach, with its device address: what a
/// [`DmaBuffer`](super::DmaBuffer), a [`PoolBuffer`](super::PoolBuffer), a
/// [`PersistentBuffer`](super::PersistentBuffer) or a [`DmaSlice`] of one of
/// them dereferences to.
///
/// The device, other threads and (for shared buffers) other processes may be
/// accessing this memory at any moment, so no `&[u8]` into it is ever handed
/// out. Every access is bounds-checked and single-copy atomic (a reader sees
/// each access whole, old or new):
///
/// - [`read`](Self::read) / [`write`](Self::write): one naturally aligned
///   little-endian `u8`..`u64`, relaxed;
/// - [`load`](Self::load) / [`store`](Self::store): the same with an explicit
///   [`Ordering`], for phase bits, ring indices and flags that the CPU and the
///   device hand back and forth;
/// - [`read_obj`](Self::read_obj) / [`write_obj`](Self::write_obj) and the
///   array forms: any plain-data type (`zerocopy`'s `FromBytes`/`IntoBytes`),
///   such as a descriptor or a 64-byte NVMe command, copied in 8-byte words;
/// - [`read_bytes`](Self::read_bytes) / [`write_bytes`](Self::write_bytes):
///   bulk copies, in 8-byte words;
/// - [`slice`](Self::slice): a part (a ring slot, a PRP list page) with its own
///   device address and bounds.
///
/// Copies are sequences of atomic words, not one atomic transaction: a
/// structure the device writes while the CPU reads it can be read half old and
/// half new, as in C. Order them with the device's own protocol (a phase bit
/// read with [`Ordering::Acquire`], a doorbell after
/// [`sync_for_device`](Self::sync_for_device)).
///
/// Accesses of different widths may race on the same bytes, from threads of
/// this process as from the device: on x86-64 each access is a machine
/// instruction outside Rust's memory model (which has no mixed-size atomics),
/// so such a race is defined. On other architectures keep one width per
/// location across threads (see the crate's DMA safety model).
///
/// ```no_run
/// use std::sync::atomic::Ordering;
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
/// use zerocopy::{FromBytes, Immutable, IntoBytes};
///
/// #[derive(FromBytes, IntoBytes, Immutable, Default)]
/// #[repr(C)]
/// struct Descriptor { addr: u64, len: u32, flags: u32 }
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let ring = device.alloc_dma(4096)?;
/// let slot = ring.slice(16, 16)?;               // the second descriptor
/// slot.write_obj(0, &Descriptor { addr: 0x1000, len: 512, flags: 1 })?;
/// ring.sync_for_device();                        // then ring the doorbell
/// let done: u32 = ring.load(4092, Ordering::Acquire)?;
/// let back: Descriptor = slot.read_obj(0)?;
/// println!("slot at {:#x}, done {done}, len {}", slot.device_addr(), back.len);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DmaRegion {
    // INVARIANT: `window` lies in DMA memory that the value holding this region
    // keeps alive for as long as the region can be reached; regions are never
    // handed out by value, only as `&DmaRegion` borrowed from their holder.
    window: DmaWindow,
    device_addr: u64,
}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("device_addr", &format_args!("{:#x}", self.device_addr))
            .field("len", &self.window.len())
            .finish()
    }
}

impl DmaRegion {
    /// A region over `window`, whose first byte the device sees at
    /// `device_addr`. The caller (a holder type) keeps the memory alive.
    pub(crate) fn new(window: DmaWindow, device_addr: u64) -> Self {
        Self {
            window,
            device_addr,
        }
    }

    /// The memory this region covers (for holders carving their own regions).
    pub(crate) fn window(&self) -> DmaWindow {
        self.window
    }

    /// The device address of the first byte.
    #[inline]
    pub fn device_addr(&self) -> u64 {
        self.device_addr
    }

    /// The length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the region has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn out_of_bounds(&self, offset: usize, len: usize) -> DmaError {
        DmaError::OutOfBounds {
            offset,
            len,
            size: self.len(),
        }
    }

    #[cold]
    fn access_error<T>(&self, offset: usize) -> DmaError {
        let width = std::mem::size_of::<T>();
        if offset.checked_add(width).is_none_or(|end| end > self.len()) {
            self.out_of_bounds(offset, width)
        } else {
            DmaError::Misaligned { offset, width }
        }
    }

    /// Reads one naturally aligned little-endian value at `offset`: one relaxed
    /// single-copy atomic load.
    #[inline]
    pub fn read<T: MmioValue>(&self, offset: usize) -> Result<T, DmaError> {
        self.load(offset, Ordering::Relaxed)
    }

    /// Writes one naturally aligned little-endian value at `offset`: one relaxed
    /// single-copy atomic store.
    #[inline]
    pub fn write<T: MmioValue>(&self, offset: usize, value: T) -> Result<(), DmaError> {
        self.store(offset, value, Ordering::Relaxed)
    }

    /// Loads one naturally aligned little-endian value at `offset` with
    /// `order` (`Acquire` to read a completion flag before its payload).
    /// `Release` and `AcqRel`, which mean nothing for a load, load as
    /// `Acquire`.
    #[inline]
    pub fn load<T: MmioValue>(&self, offset: usize, order: Ordering) -> Result<T, DmaError> {
        self.window
            .load(offset, order)
            .ok_or_else(|| self.access_error::<T>(offset))
    }

    /// Stores one naturally aligned little-endian value at `offset` with
    /// `order` (`Release` to publish a descriptor written before it).
    /// `Acquire` and `AcqRel`, which mean nothing for a store, store as
    /// `SeqCst`.
    #[inline]
    pub fn store<T: MmioValue>(
        &self,
        offset: usize,
        value: T,
        order: Ordering,
    ) -> Result<(), DmaError> {
        self.window
            .store(offset, value, order)
            .ok_or_else(|| self.access_error::<T>(offset))
    }

    /// Copies `out.len()` bytes from `offset` into `out`.
    #[inline]
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), DmaError> {
        self.window
            .copy_out(offset, out)
            .ok_or_else(|| self.out_of_bounds(offset, out.len()))
    }

    /// Copies `data` into the region at `offset`.
    #[inline]
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), DmaError> {
        self.window
            .copy_in(offset, data)
            .ok_or_else(|| self.out_of_bounds(offset, data.len()))
    }

    /// Reads a plain-data `T` (any offset; its bytes as they lie in memory).
    #[inline]
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, DmaError> {
        let mut value = T::new_zeroed();
        self.read_bytes(offset, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Writes a plain-data `T` at `offset` (its bytes as they lie in memory).
    #[inline]
    pub fn write_obj<T: IntoBytes + Immutable>(
        &self,
        offset: usize,
        value: &T,
    ) -> Result<(), DmaError> {
        self.write_bytes(offset, value.as_bytes())
    }

    /// Fills `out` with consecutive `T`s from `offset`.
    pub fn read_array<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
        out: &mut [T],
    ) -> Result<(), DmaError> {
        self.read_bytes(offset, out.as_mut_bytes())
    }

    /// Writes `values` consecutively from `offset`.
    pub fn write_array<T: IntoBytes + Immutable>(
        &self,
        offset: usize,
        values: &[T],
    ) -> Result<(), DmaError> {
        self.write_bytes(offset, values.as_bytes())
    }

    /// Sets `len` bytes from `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), DmaError> {
        let part = self.slice(offset, len)?;
        let chunk = [byte; 256];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(chunk.len());
            part.write_bytes(at, &chunk[..n])?;
            at += n;
        }
        Ok(())
    }

    /// The `len` bytes at `offset`, as a region of their own: bounds relative to
    /// the part, and the device address of its first byte.
    pub fn slice(&self, offset: usize, len: usize) -> Result<DmaSlice<'_>, DmaError> {
        let window = self
            .window
            .sub(offset, len)
            .ok_or_else(|| self.out_of_bounds(offset, len))?;
        Ok(DmaSlice {
            // INVARIANT: inside this region's window, kept alive by the same
            // holder for `'_`, which the slice borrows.
            region: DmaRegion::new(window, self.device_addr + offset as u64),
            _borrow: PhantomData,
        })
    }

    /// Orders the CPU's earlier writes to DMA memory before what follows (the
    /// doorbell write that starts the device). A fence on cache-coherent x86;
    /// the place for cache maintenance on non-coherent platforms.
    #[inline]
    pub fn sync_for_device(&self) {
        fence(Ordering::SeqCst);
    }

    /// Orders what the device wrote (as seen after its completion interrupt or
    /// status read) before the CPU's reads that follow.
    #[inline]
    pub fn sync_for_cpu(&self) {
        fence(Ordering::SeqCst);
    }
}

/// Part of a [`DmaRegion`], borrowed from it: a ring slot, a PRP list page, a
/// header. It dereferences to a region of its own, whose offsets start at the
/// part's first byte and whose [`device_addr`](DmaRegion::device_addr) is that
/// byte's.
///
/// ```no_run
/// # let device = usrdrv::Device::open("0000:00:03.0".parse()?, usrdrv::dma::DmaMask::new(28)?)?;
/// let queue = device.alloc_dma(64 * 1024)?;
/// let entry = queue.slice(3 * 64, 64)?;
/// entry.write::<u32>(0, 0x02)?;                    // bytes 192..196 of `queue`
/// assert_eq!(entry.device_addr(), queue.device_addr() + 192);
/// assert!(entry.write::<u32>(64, 0).is_err());    // outside the part
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DmaSlice<'a> {
    region: DmaRegion,
    _borrow: PhantomData<&'a DmaRegion>,
}

impl fmt::Debug for DmaSlice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.region.fmt(f)
    }
}

impl Deref for DmaSlice<'_> {
    type Target = DmaRegion;

    fn deref(&self) -> &DmaRegion {
        &self.region
    }
}
