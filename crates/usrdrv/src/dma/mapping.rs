//! The caller's own memory mapped for DMA: the seed's `usr_pci_mmap`.
//!
//! Two shapes, both sound whatever safe code does with the values:
//! - [`Device::map_dma`](crate::Device::map_dma) takes the buffer by value (or a
//!   `'static` one): the mapping owns it, so a mapping that is forgotten or
//!   leaked keeps the buffer leaked with it, never returned to the allocator.
//! - [`Device::with_dma`](crate::Device::with_dma) lends a borrowed buffer for
//!   the duration of a closure and unmaps before it returns (or unwinds); if
//!   the kernel refuses to unmap, the process aborts, because the memory could
//!   no longer be handed back safely.

#![allow(unsafe_code)] // `DmaBackend::map_user` is an `unsafe fn`: see `DmaMapping::new`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::backend::{DmaBackend, UserMapping};
use super::{Direction, DmaError, SgEntry};

/// Memory that [`Device::map_dma`](crate::Device::map_dma) can map: owned
/// buffers (`Vec<u8>`, `Box<[u8]>`) and `'static` ones (`&'static [u8]`,
/// `&'static mut [u8]`, for example from `Box::leak`).
///
/// The mapping holds the buffer until it is unmapped. Such memory can never be
/// freed or reused while the device may reach it: if the mapping value is
/// forgotten, leaked or its unmap fails, the buffer stays allocated with it.
/// Borrowed buffers are lent with [`Device::with_dma`](crate::Device::with_dma)
/// instead; they do not implement this trait:
///
/// ```compile_fail
/// # fn f(device: &usrdrv::Device) -> Result<(), usrdrv::dma::DmaError> {
/// let mut block = vec![0u8; 64];
/// let mapping = device.map_dma(&mut block[..], usrdrv::dma::Direction::FromDevice)?;
/// # Ok(()) }
/// ```
pub trait DmaTarget: sealed::Sealed {}

mod sealed {
    /// What a mapping needs of the memory it holds.
    pub trait Sealed {
        /// The address and length of the bytes to map.
        fn span(&self) -> (usize, usize);
        /// Whether the device may be allowed to write the bytes.
        fn writable(&self) -> bool;
        /// What to do with the memory when the kernel did not unmap it: the
        /// device may still reach it, so it must never be returned or reused.
        fn unmap_failed(self);
    }
}
use sealed::Sealed;

impl Sealed for Vec<u8> {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        true
    }
    fn unmap_failed(self) {
        std::mem::forget(self);
    }
}
impl DmaTarget for Vec<u8> {}

impl Sealed for Box<[u8]> {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        true
    }
    fn unmap_failed(self) {
        std::mem::forget(self);
    }
}
impl DmaTarget for Box<[u8]> {}

impl Sealed for &'static [u8] {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        false
    }
    fn unmap_failed(self) {
        // `'static` memory is never freed.
    }
}
impl DmaTarget for &'static [u8] {}

impl Sealed for &'static mut [u8] {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        true
    }
    fn unmap_failed(self) {
        // `'static` memory is never freed; dropping the reference gives up the
        // caller's access for good (it is not returned).
    }
}
impl DmaTarget for &'static mut [u8] {}

/// A caller's buffer lent for DMA by [`Device::with_dma`](crate::Device::with_dma)
/// or [`Device::with_dma_to_device`](crate::Device::with_dma_to_device): the
/// target type of the mapping the closure sees. It cannot be made outside
/// usrdrv, so such a mapping exists only inside the closure.
pub struct Borrowed<'a> {
    addr: usize,
    len: usize,
    writable: bool,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl fmt::Debug for Borrowed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Borrowed")
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl<'a> Borrowed<'a> {
    /// Lends `buffer`, which the device may write.
    pub(crate) fn exclusive(buffer: &'a mut [u8]) -> Self {
        Self {
            addr: buffer.as_ptr() as usize,
            len: buffer.len(),
            writable: true,
            _borrow: PhantomData,
        }
    }

    /// Lends `buffer` for the device to read only.
    pub(crate) fn shared(buffer: &'a [u8]) -> Self {
        Self {
            addr: buffer.as_ptr() as usize,
            len: buffer.len(),
            writable: false,
            _borrow: PhantomData,
        }
    }
}

impl Sealed for Borrowed<'_> {
    fn span(&self) -> (usize, usize) {
        (self.addr, self.len)
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn unmap_failed(self) {
        // The borrow ends when the scope returns, and the owner may then free
        // or reuse the memory the device can still reach: nothing safe is left
        // to do but stop the process.
        eprintln!(
            "usrdrv: the kernel refused to unmap a lent buffer of {} bytes; aborting so the device cannot write memory that is handed back",
            self.len
        );
        std::process::abort();
    }
}
impl DmaTarget for Borrowed<'_> {}

/// The caller's buffer, mapped for the device, with the scatter-gather list the
/// device needs.
///
/// The list covers exactly the caller's bytes, sub-page head and tail
/// included. The mapping holds the buffer, so it cannot be touched, moved or
/// freed until it is unmapped: by [`DmaMapping::unmap`], which returns the
/// buffer and reports a failed or partial unmap, or on drop. If the kernel
/// fails to unmap (or unmaps less than was mapped), the buffer is leaked rather
/// than freed, so the device can never reach memory that is reused; a lent
/// buffer ([`Device::with_dma`](crate::Device::with_dma)) aborts the process
/// instead.
///
/// Whole pages are mapped: the device can reach the rest of the first and last
/// page too, which may hold other heap objects. The IOMMU confines the device
/// to those pages; inside them, which bytes it writes is the driver's contract
/// with its device (the scatter-gather list). Page-aligned buffers (a
/// [`DmaBuffer`](super::DmaBuffer), or memory from `alloc` with a page-sized
/// layout) share their pages with nothing.
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::{Direction, DmaMask};
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let mapping = device.map_dma(vec![0u8; 512], Direction::FromDevice)?;
/// for entry in mapping.sg_list() {
///     println!("device writes {} bytes at {:#x}", entry.len, entry.device_addr);
/// }
/// // ... start the device, wait for it ...
/// let block = mapping.unmap()?;
/// println!("first byte: {}", block[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DmaMapping<B: DmaTarget> {
    /// `None` once unmapped (by `unmap`, before the drop).
    buffer: Option<B>,
    mapping: UserMapping,
    direction: Direction,
    backend: Arc<dyn DmaBackend>,
}

impl<B: DmaTarget> fmt::Debug for DmaMapping<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMapping")
            .field("direction", &self.direction)
            .field("sg_list", &self.sg_list())
            .finish()
    }
}

impl<B: DmaTarget> DmaMapping<B> {
    /// Maps `buffer` through `backend`.
    pub(crate) fn new(
        buffer: B,
        direction: Direction,
        backend: Arc<dyn DmaBackend>,
    ) -> Result<Self, DmaError> {
        let (addr, len) = buffer.span();
        if len == 0 {
            return Err(DmaError::Empty);
        }
        if direction.device_writes() && !buffer.writable() {
            return Err(DmaError::ReadOnly { direction });
        }
        // No fence needed here: the CPU's writes to the buffer are ordered before
        // the device can see it by the system call that maps it.
        // SAFETY: the bytes are `buffer`'s, which the mapping takes and holds:
        // owned and `'static` targets stay allocated while held, are released
        // only by `unmap`/drop after `unmap_user` succeeded, and are leaked
        // (`unmap_failed`) otherwise, including when this value is forgotten;
        // a `Borrowed` target exists only inside `Device::with_dma`, which drops
        // the mapping (unmapping it, or aborting) before the borrow ends.
        let mapping = unsafe { backend.map_user(addr, len, direction) }?;
        Ok(Self {
            buffer: Some(buffer),
            mapping,
            direction,
            backend,
        })
    }

    /// The scatter-gather list: device address and length of each contiguous run,
    /// in order, covering exactly the caller's bytes.
    pub fn sg_list(&self) -> &[SgEntry] {
        self.mapping.sg.as_slice()
    }

    /// The device address of the first byte when the list has one entry: always
    /// with an IOMMU; without one (usrdma), when the pages happen to be
    /// physically contiguous. Drivers that must work on both walk
    /// [`DmaMapping::sg_list`].
    pub fn device_addr(&self) -> Option<u64> {
        match self.mapping.sg.as_slice() {
            [one] => Some(one.device_addr),
            _ => None,
        }
    }

    /// The number of bytes mapped for the caller.
    pub fn len(&self) -> usize {
        self.sg_list().iter().map(|e| e.len).sum()
    }

    /// Whether no bytes are mapped (never: empty buffers are refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the device works on a bounce buffer rather than the caller's
    /// memory (usrdma, when the memory lies above the device's DMA mask): the
    /// data then moves only at [`DmaMapping::sync_for_device`],
    /// [`DmaMapping::sync_for_cpu`] and unmap.
    pub fn is_bounced(&self) -> bool {
        self.mapping.bounced
    }

    /// Which way the data moves.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Hands the buffer to the device: orders the CPU's writes before what
    /// follows for the device, and copies them to the bounce buffer when the
    /// backend bounces (usrdma, memory above the device's DMA mask). Call it
    /// after writing and before starting DMA that reads.
    pub fn sync_for_device(&self) -> Result<(), DmaError> {
        self.backend.sync_user(&self.mapping, false)
    }

    /// Hands the buffer back to the CPU: orders what the device wrote before
    /// the CPU's reads that follow, copying it from the bounce buffer when the
    /// backend bounces. Call it after DMA that writes, before reading.
    pub fn sync_for_cpu(&self) -> Result<(), DmaError> {
        self.backend.sync_user(&self.mapping, true)
    }

    /// Unmaps (verifying the kernel unmapped exactly what was mapped) and gives
    /// the buffer back. On error the buffer is leaked, never reused: the device
    /// might still reach it.
    pub fn unmap(mut self) -> Result<B, DmaError> {
        let buffer = self.buffer.take().ok_or(DmaError::Empty)?;
        // The unmapping system call orders the device's writes before what the
        // CPU reads next.
        match self.backend.unmap_user(&self.mapping) {
            Ok(()) => Ok(buffer),
            Err(err) => {
                buffer.unmap_failed();
                Err(err)
            }
        }
    }
}

impl<B: DmaTarget> Drop for DmaMapping<B> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take()
            && let Err(err) = self.backend.unmap_user(&self.mapping)
        {
            eprintln!("usrdrv: {err}");
            buffer.unmap_failed();
        }
    }
}

/// Maps `buffer` through `backend`, calls `f` with the mapping, and unmaps
/// before returning (also while unwinding from a panic in `f`); aborts the
/// process if the unmap fails (`Borrowed::unmap_failed`).
pub(crate) fn lend<'b, R>(
    backend: Arc<dyn DmaBackend>,
    buffer: Borrowed<'b>,
    direction: Direction,
    f: impl FnOnce(&DmaMapping<Borrowed<'b>>) -> R,
) -> Result<R, DmaError> {
    let mapping = DmaMapping::new(buffer, direction, backend)?;
    let result = f(&mapping);
    drop(mapping);
    Ok(result)
}
