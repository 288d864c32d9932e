//! The seam between the DMA types and the kernel interface underneath them.
//!
//! [`DmaBuffer`](super::DmaBuffer), [`DmaMapping`](super::DmaMapping), pools and
//! named buffers are written against this trait only. VFIO implements it with an
//! IOMMU; the no-IOMMU kernel companion and an in-process emulated device will
//! implement it too, without any driver code changing.

use std::fmt;

use super::{Direction, DmaError, SgEntry};
use crate::sys::dma_memory::{DmaMemory, HUGE_PAGE_SIZE};

/// Memory allocated for DMA by a backend, with the device address of its start.
#[derive(Debug)]
pub(crate) struct Allocation {
    /// The CPU's view.
    pub(crate) memory: DmaMemory,
    /// The device address of the first byte; the buffer is contiguous for the device.
    pub(crate) device_addr: u64,
    /// The backend's own identification of the memory (usrdma: the buffer id;
    /// VFIO: unused).
    pub(crate) handle: u64,
    /// Memory that outlives this process (a persistent usrdma buffer):
    /// dropping the handle unmaps it from the process but does not free it.
    pub(crate) keep: bool,
}

/// A scatter-gather list, without a heap allocation for the common single
/// entry (always the case with an IOMMU).
#[derive(Debug, Clone)]
pub(crate) enum SgList {
    /// One contiguous run.
    One(SgEntry),
    /// Several runs, in order.
    Many(Vec<SgEntry>),
}

impl SgList {
    pub(crate) fn as_slice(&self) -> &[SgEntry] {
        match self {
            Self::One(entry) => std::slice::from_ref(entry),
            Self::Many(entries) => entries,
        }
    }
}

/// A caller's memory mapped for DMA by a backend.
#[derive(Debug, Clone)]
pub(crate) struct UserMapping {
    /// Entries covering exactly the caller's bytes, in order.
    pub(crate) sg: SgList,
    /// The backend's own identification of the mapping (VFIO: the IOVA of the
    /// first mapped page).
    pub(crate) handle: u64,
    /// The bytes actually mapped (whole pages around the caller's bytes).
    pub(crate) mapped_len: u64,
    /// Whether the device sees a bounce buffer instead of the caller's memory
    /// (the data moves at the sync points).
    pub(crate) bounced: bool,
}

/// The whole pages around `len` bytes at `addr`: the first page's address
/// and the span in bytes, for `page`-byte pages.
pub(crate) fn page_span(addr: usize, len: usize, page: usize) -> Result<(usize, usize), DmaError> {
    let too_large = || DmaError::TooLarge {
        what: "the buffer",
        size: len as u64,
    };
    let end = addr.checked_add(len).ok_or_else(too_large)?;
    let first_page = addr - addr % page;
    let last_page_end = end.checked_next_multiple_of(page).ok_or_else(too_large)?;
    Ok((first_page, last_page_end - first_page))
}

/// Process memory for a `size`-byte DMA allocation: on 2 MiB hugepages when
/// `huge` is asked and the system has them free, otherwise on ordinary
/// `page`-byte pages; zeroed, and rounded up to whole pages of its kind.
pub(crate) fn alloc_memory(size: usize, huge: bool, page: usize) -> Result<DmaMemory, DmaError> {
    let memory_error = |source| DmaError::Memory { size, source };
    if huge
        && let Some(huge_len) = size.checked_next_multiple_of(HUGE_PAGE_SIZE)
        && let Ok(memory) = DmaMemory::new(huge_len, true)
    {
        return Ok(memory);
    }
    let len = size
        .checked_next_multiple_of(page)
        .ok_or_else(|| memory_error(std::io::Error::from(std::io::ErrorKind::OutOfMemory)))?;
    DmaMemory::new(len, false).map_err(memory_error)
}

/// What a DMA backend does.
///
/// Allocation and freeing are safe: the backend allocates the memory itself
/// and [`DmaBackend::free`] takes the device's access away before the caller
/// returns it (or the caller leaks it when freeing failed). Mapping the
/// caller's memory is `unsafe`: the backend cannot know how long the memory
/// stays put.
pub(crate) trait DmaBackend: Send + Sync + fmt::Debug {
    /// The DMA mask every device address must fit under.
    fn mask(&self) -> super::DmaMask;

    /// Allocates `size` bytes (rounded up to pages) of zeroed memory the device
    /// can read and write, preferring 2 MiB hugepages when `huge`.
    fn alloc(&self, size: usize, huge: bool) -> Result<Allocation, DmaError>;

    /// Like [`DmaBackend::alloc`] for a named buffer. Backends that keep names
    /// in the kernel register `name` there (refusing one in use).
    fn alloc_named(&self, name: &str, size: usize) -> Result<Allocation, DmaError> {
        let _ = name;
        self.alloc(size, false)
    }

    /// Takes the device's access to `allocation` away. On error the memory must
    /// not be reused (the caller leaks it).
    fn free(&self, allocation: &Allocation) -> Result<(), DmaError>;

    /// Maps the caller's `len` bytes at `addr` for the device, pinning them.
    ///
    /// # Safety
    ///
    /// The device may read (and, for a direction it writes, write) these bytes
    /// and the rest of their pages from the call on, so the caller guarantees
    /// that `[addr, addr + len)` is memory of this process that stays allocated,
    /// and is neither freed nor handed back to code that could form references
    /// to it, until [`DmaBackend::unmap_user`] of the returned mapping has
    /// succeeded; if that never happens, the memory must be leaked for the rest
    /// of the process's life.
    #[allow(unsafe_code)] // the contract above is the point of the seam
    unsafe fn map_user(
        &self,
        addr: usize,
        len: usize,
        direction: Direction,
    ) -> Result<UserMapping, DmaError>;

    /// Undoes [`DmaBackend::map_user`], verifying everything mapped was unmapped.
    fn unmap_user(&self, mapping: &UserMapping) -> Result<(), DmaError>;

    /// Hands a mapping to the CPU (`for_cpu`) or to the device. With an IOMMU
    /// on a cache-coherent machine only ordering is needed; a backend that
    /// bounces copies here.
    fn sync_user(&self, mapping: &UserMapping, for_cpu: bool) -> Result<(), DmaError> {
        let _ = (mapping, for_cpu);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_spans_cover_whole_pages() {
        assert_eq!(page_span(4096, 1, 4096).unwrap(), (4096, 4096));
        assert_eq!(page_span(4095, 2, 4096).unwrap(), (0, 8192));
        assert_eq!(page_span(8191, 4097, 4096).unwrap(), (4096, 8192));
        assert!(matches!(
            page_span(usize::MAX - 10, 100, 4096),
            Err(DmaError::TooLarge { .. })
        ));
        assert!(matches!(
            page_span(usize::MAX - 10, 5, 4096),
            Err(DmaError::TooLarge { .. })
        ));
    }
}
