//! Process memory for DMA: an anonymous mapping, zeroed, page-aligned, kept out
//! of child processes, optionally on 2 MiB hugepages. Unmapped on drop.

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use crate::mmio::MmioValue;

/// 2 MiB, the x86 huge page size used for DMA memory.
pub(crate) const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Anonymous memory that a device may be given access to.
///
/// While a device may access it, use only the volatile accessors; the slice
/// accessors are for when the CPU owns it (see `dma::DmaBuffer`'s typestate).
#[derive(Debug)]
pub(crate) struct DmaMemory {
    // INVARIANT: `ptr` is the start of a live private anonymous mapping (or,
    // when `coherent`, a shared mapping of a kernel DMA buffer) of `len`
    // bytes (a multiple of the page size, or of 2 MiB when `huge`), owned by this
    // value and unmapped only by its `Drop`.
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
    /// Kernel coherent memory mapped through a driver's file (usrdma).
    coherent: bool,
    /// Set when a device may still reach the memory: then it is never unmapped.
    leaked: bool,
}

// SAFETY: the memory is process-wide and owned by this value; shared access
// (`&self`) is limited to volatile single-value or byte-wise accesses, which are
// sound from any thread. Slices need `&mut self` or are handed out only for the
// CPU-owned state, which the `dma` module keeps exclusive.
unsafe impl Send for DmaMemory {}
// SAFETY: as above.
unsafe impl Sync for DmaMemory {}

impl DmaMemory {
    /// Maps `len` bytes (a non-zero multiple of the page size, or of 2 MiB for
    /// `huge`) of zeroed memory.
    pub(crate) fn new(len: usize, huge: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if huge {
            flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses
        // aliases nothing; the result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        // INVARIANT: `ptr`/`len` describe the mapping just made.
        let memory = Self {
            ptr,
            len,
            huge,
            coherent: false,
            leaked: false,
        };
        memory.keep_out_of_children()?;
        Ok(memory)
    }

    /// Maps `len` bytes (a non-zero page multiple) of memory a kernel driver
    /// allocated for DMA, exposed by `fd` at `offset` (a usrdma buffer).
    pub(crate) fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Self> {
        let ptr = super::mmap::map_shared_raw(fd, offset, len, true)?;
        // INVARIANT: `ptr`/`len` describe the mapping just made; `Drop` unmaps
        // it with munmap as for anonymous memory.
        let memory = Self {
            ptr,
            len,
            huge: false,
            coherent: true,
            leaked: false,
        };
        // A child holding the mapping would also hold the driver's file open.
        memory.keep_out_of_children()?;
        Ok(memory)
    }

    /// Keeps the mapping out of children: after fork() the device must keep
    /// reaching the parent's pages, and a child must not see them change.
    fn keep_out_of_children(&self) -> io::Result<()> {
        // SAFETY: the range is exactly our live mapping; MADV_DONTFORK changes
        // only what fork() does with it.
        let ret = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTFORK) };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The start address in this process (what the IOMMU is told to map).
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the memory is a kernel driver's coherent DMA buffer.
    pub(crate) fn is_coherent(&self) -> bool {
        self.coherent
    }

    /// Whether the memory is on 2 MiB hugepages.
    pub(crate) fn is_huge(&self) -> bool {
        self.huge
    }

    fn in_bounds(&self, offset: usize, size: usize) -> bool {
        offset.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// Reads the little-endian `T` at `offset` (naturally aligned), volatile.
    pub(crate) fn read<T: MmioValue>(&self, offset: usize) -> Option<T> {
        let size = std::mem::size_of::<T>();
        if !self.in_bounds(offset, size) || !offset.is_multiple_of(size) {
            return None;
        }
        // SAFETY: in bounds of the live mapping (checked) and aligned for `T`
        // (page-aligned base, offset a multiple of the size).
        let ptr = unsafe { self.ptr.as_ptr().add(offset) }.cast::<T>();
        // SAFETY: valid, aligned, and read without forming a reference; any bit
        // pattern is a valid integer.
        Some(T::from_le(unsafe { ptr.read_volatile() }))
    }

    /// Writes `value` little-endian at `offset` (naturally aligned), volatile.
    pub(crate) fn write<T: MmioValue>(&self, offset: usize, value: T) -> Option<()> {
        let size = std::mem::size_of::<T>();
        if !self.in_bounds(offset, size) || !offset.is_multiple_of(size) {
            return None;
        }
        // SAFETY: as in `read`.
        let ptr = unsafe { self.ptr.as_ptr().add(offset) }.cast::<T>();
        // SAFETY: valid and aligned; no reference to this memory is live while a
        // device may access it (typestate), so a volatile store is sound.
        unsafe { ptr.write_volatile(value.to_le()) };
        Some(())
    }

    /// Copies `out.len()` bytes from `offset` into `out`, with volatile reads.
    pub(crate) fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        if !self.in_bounds(offset, out.len()) {
            return None;
        }
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: `offset + i < offset + out.len() <= len`: in bounds; u8 has
            // no alignment requirement.
            let ptr = unsafe { self.ptr.as_ptr().add(offset + i) };
            // SAFETY: valid pointer, no reference formed.
            *byte = unsafe { ptr.read_volatile() };
        }
        Some(())
    }

    /// Copies `data` to `offset`, with volatile writes.
    pub(crate) fn write_bytes(&self, offset: usize, data: &[u8]) -> Option<()> {
        if !self.in_bounds(offset, data.len()) {
            return None;
        }
        for (i, byte) in data.iter().enumerate() {
            // SAFETY: in bounds as in `read_bytes`.
            let ptr = unsafe { self.ptr.as_ptr().add(offset + i) };
            // SAFETY: valid pointer, no reference formed.
            unsafe { ptr.write_volatile(*byte) };
        }
        Some(())
    }

    /// Keeps the memory mapped for the rest of the process's life: for when the
    /// device's access to it could not be revoked.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }

    /// The memory as a slice, for the CPU-owned state only.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live, readable and `len` bytes long for as long
        // as `self` is borrowed. Callers hand this out only while the CPU owns the
        // buffer (no DMA in flight), which is the DMA ownership contract.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The memory as a mutable slice, for the CPU-owned state only.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow exclusive
        // within the process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for DmaMemory {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: exactly the mapping made in `new` (type invariant), unused after
        // this. Pages a device still has pinned stay allocated in the kernel
        // until the IOMMU mapping goes, so this never frees memory under DMA.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_zeroed_and_accessible_both_ways() {
        let mut m = DmaMemory::new(8192, false).unwrap();
        assert_eq!(m.addr() % 4096, 0);
        assert!(m.as_slice().iter().all(|b| *b == 0));
        m.write::<u32>(4, 0xaabb_ccdd).unwrap();
        assert_eq!(m.as_slice()[4..8], [0xdd, 0xcc, 0xbb, 0xaa]);
        m.as_mut_slice()[100] = 7;
        assert_eq!(m.read::<u8>(100), Some(7));
        m.write_bytes(8190, &[1, 2]).unwrap();
        let mut out = [0u8; 2];
        m.read_bytes(8190, &mut out).unwrap();
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn out_of_bounds_accesses_are_refused() {
        let m = DmaMemory::new(4096, false).unwrap();
        assert_eq!(m.read::<u64>(4092), None);
        assert_eq!(m.write::<u16>(1, 0), None);
        assert_eq!(m.write_bytes(4095, &[1, 2]), None);
        assert_eq!(m.read_bytes(usize::MAX, &mut [0u8; 1]), None);
        assert_eq!(m.read::<u8>(4095), Some(0));
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(DmaMemory::new(0, false).is_err());
    }
}
