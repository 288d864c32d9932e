//! Process memory for DMA: an anonymous mapping, zeroed, page-aligned, kept out
//! of child processes, optionally on 2 MiB hugepages. Unmapped on drop.

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use std::sync::atomic::Ordering;

use super::word::MmioValue;
use super::word::sealed::Word;
use super::word_access;

/// 2 MiB, the x86 huge page size used for DMA memory.
pub(crate) const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Anonymous memory that a device may be given access to.
///
/// While a device may access it, reach it only through a [`DmaWindow`]
/// (single-copy atomic accesses); the slice accessors are `unsafe`, for when the caller
/// can prove nothing else touches it (see `dma::DmaBuffer`'s typestate).
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

// SAFETY: the memory is process-wide and owned by this value, not tied to the
// thread that mapped it.
unsafe impl Send for DmaMemory {}
// SAFETY: `&DmaMemory` gives no access to the memory by itself: safe methods
// only report its address and length, and the slice accessors are `unsafe` with
// a contract that excludes concurrent writers.
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

    /// A window over the whole memory, for the atomic accessors.
    ///
    /// The window does not borrow `self`: whoever stores it must keep this
    /// memory alive (and not leak-free it) for as long as the window is
    /// reachable, as the `dma` types do by owning both.
    pub(crate) fn window(&self) -> DmaWindow {
        // INVARIANT: the whole live mapping.
        DmaWindow {
            ptr: self.ptr,
            len: self.len,
        }
    }

    /// Keeps the memory mapped for the rest of the process's life: for when the
    /// device's access to it could not be revoked.
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }

    /// The memory as a slice.
    ///
    /// # Safety
    ///
    /// For as long as the slice lives, nothing writes the memory: no device
    /// (no DMA to it in flight or started, by any device address that reaches
    /// it), no other process (memory shared with one), and no access through
    /// a [`DmaWindow`] of it.
    pub(crate) unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live, readable and `len` bytes long for as long
        // as `self` is borrowed (type invariant), and the caller guarantees
        // nothing writes it meanwhile, so a shared slice is sound.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The memory as a mutable slice.
    ///
    /// # Safety
    ///
    /// For as long as the slice lives, nothing else reads or writes the
    /// memory: no device, no other process, no [`DmaWindow`] access.
    pub(crate) unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` excludes other slices from this
        // value and the caller excludes every other access.
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

/// A window of DMA memory (all of a [`DmaMemory`] or part of it), reached only
/// by single-copy atomic accesses (`sys::word_access`): the memory a device,
/// other threads and other processes may all be touching.
///
/// Every accessor is bounds-checked and safe from any thread: single values are
/// one load or store (relaxed unless asked otherwise), and bulk copies are
/// sequences of relaxed loads or stores of aligned 8-byte words (bytes at an
/// unaligned head and tail). On x86-64 these are the plain `mov`s a C driver
/// would issue, as inline assembly, so accesses of any mix of widths may race.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DmaWindow {
    // INVARIANT: `[ptr, ptr + len)` lies inside a live `DmaMemory` mapping
    // (readable and writable) for as long as this value is reachable: holders
    // keep the memory alive (see `DmaMemory::window`), and nothing in this
    // process accesses it other than through `Word::load`/`Word::store` while
    // a window exists (slices
    // come only from the `unsafe` accessors whose contracts exclude that).
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: every access through a window is a single-copy atomic `Word` access;
// the memory is process-wide.
unsafe impl Send for DmaWindow {}
// SAFETY: as above: shared use from several threads is `Word` accesses only,
// defined for any mix of widths (`sys::word_access`).
unsafe impl Sync for DmaWindow {}

/// The width of the words bulk copies move.
const WORD: usize = std::mem::size_of::<u64>();

impl DmaWindow {
    /// A window over `len` bytes of process memory at `addr` that is not a
    /// [`DmaMemory`] (a caller's buffer mapped for DMA).
    ///
    /// # Safety
    ///
    /// `[addr, addr + len)` is readable and writable memory of this process
    /// that stays allocated, and that this process accesses only through
    /// `Word::load`/`Word::store` or not at all, for as long as the window is
    /// reachable.
    pub(crate) unsafe fn from_raw(addr: usize, len: usize) -> Option<DmaWindow> {
        // INVARIANT: the caller's guarantee is the type's.
        NonNull::new(addr as *mut u8).map(|ptr| DmaWindow { ptr, len })
    }

    /// The length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The `len` bytes at `offset`, if they lie inside this window.
    #[inline]
    pub(crate) fn sub(&self, offset: usize, len: usize) -> Option<DmaWindow> {
        if !self.in_bounds(offset, len) {
            return None;
        }
        // SAFETY: `offset <= self.len` (checked), so the result stays inside
        // (or one past the end of) the live mapping.
        let ptr = unsafe { self.ptr.add(offset) };
        // INVARIANT: `[ptr, ptr + len)` is inside this window, hence inside the
        // same live mapping, kept alive by the same holder.
        Some(DmaWindow { ptr, len })
    }

    #[inline]
    fn in_bounds(&self, offset: usize, size: usize) -> bool {
        offset.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// A pointer to a naturally aligned `T` at `offset`, if it lies inside.
    #[inline]
    fn word_ptr<T: MmioValue>(&self, offset: usize) -> Option<*mut T> {
        let size = std::mem::size_of::<T>();
        let at = (self.ptr.as_ptr() as usize).wrapping_add(offset);
        if !self.in_bounds(offset, size) || !at.is_multiple_of(size) {
            return None;
        }
        // SAFETY: `offset + size <= len` (checked): in bounds of the mapping.
        Some(unsafe { self.ptr.as_ptr().add(offset) }.cast::<T>())
    }

    /// Loads the little-endian `T` at `offset` (naturally aligned) in one access.
    #[inline]
    pub(crate) fn load<T: MmioValue>(&self, offset: usize, order: Ordering) -> Option<T> {
        let ptr = self.word_ptr::<T>(offset)?;
        // SAFETY: `ptr` is in bounds and aligned (`word_ptr`); the memory is
        // only accessed through `Word` in this process while the window exists
        // (type invariant).
        Some(T::from_le(unsafe { T::load(ptr, order) }))
    }

    /// Stores `value` little-endian at `offset` (naturally aligned) in one access.
    #[inline]
    pub(crate) fn store<T: MmioValue>(
        &self,
        offset: usize,
        value: T,
        order: Ordering,
    ) -> Option<()> {
        let ptr = self.word_ptr::<T>(offset)?;
        // SAFETY: as in `load`; the mapping is writable.
        unsafe { T::store(ptr, value.to_le(), order) };
        Some(())
    }

    /// Copies `out.len()` bytes from `offset` into `out`: relaxed loads
    /// of aligned words, bytes at the edges.
    #[inline]
    pub(crate) fn copy_out(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        if !self.in_bounds(offset, out.len()) {
            return None;
        }
        // SAFETY: `offset <= len` (checked): inside the live mapping.
        let start = unsafe { self.ptr.as_ptr().add(offset) };
        let head = start.align_offset(WORD).min(out.len());
        let (head_out, rest) = out.split_at_mut(head);
        let words = rest.len() / WORD;
        let (body_out, tail_out) = rest.split_at_mut(words * WORD);
        let mut at = start;
        for byte in head_out {
            // SAFETY: `at` stays within `[start, start + out.len())`, in bounds
            // (checked above); bytes need no alignment; accesses to the window
            // go through `Word` only (type invariant).
            *byte = unsafe { u8::load(at, Ordering::Relaxed) };
            // SAFETY: at most one past the checked range.
            at = unsafe { at.add(1) };
        }
        // SAFETY: `at` is aligned to 8 after the head and `words` words from it
        // lie in the checked range; `body_out` is this call's own buffer of as
        // many bytes; the window is reached through `Word` and the word copies
        // only (type invariant).
        unsafe { word_access::copy_words_out(at.cast::<u64>(), body_out.as_mut_ptr(), words) };
        // SAFETY: at most one past the checked range.
        at = unsafe { at.add(words * WORD) };
        for byte in tail_out {
            // SAFETY: in bounds as above.
            *byte = unsafe { u8::load(at, Ordering::Relaxed) };
            // SAFETY: at most one past the checked range.
            at = unsafe { at.add(1) };
        }
        Some(())
    }

    /// Copies `data` to `offset`: relaxed stores of aligned words, bytes
    /// at the edges.
    #[inline]
    pub(crate) fn copy_in(&self, offset: usize, data: &[u8]) -> Option<()> {
        if !self.in_bounds(offset, data.len()) {
            return None;
        }
        // SAFETY: `offset <= len` (checked): inside the live mapping.
        let start = unsafe { self.ptr.as_ptr().add(offset) };
        let head = start.align_offset(WORD).min(data.len());
        let (head_data, rest) = data.split_at(head);
        let words = rest.len() / WORD;
        let (body, tail) = rest.split_at(words * WORD);
        let mut at = start;
        for byte in head_data {
            // SAFETY: `at` stays within `[start, start + data.len())`, in bounds
            // and writable; accesses to the window go through `Word` only.
            unsafe { u8::store(at, *byte, Ordering::Relaxed) };
            // SAFETY: at most one past the checked range.
            at = unsafe { at.add(1) };
        }
        // SAFETY: `at` is aligned to 8 after the head and `words` words from it
        // lie in the checked, writable range; `body` is the caller's own bytes,
        // as many; the window is reached through `Word` and the word copies
        // only (type invariant).
        unsafe { word_access::copy_words_in(body.as_ptr(), at.cast::<u64>(), words) };
        // SAFETY: at most one past the checked range.
        at = unsafe { at.add(words * WORD) };
        for byte in tail {
            // SAFETY: in bounds as above.
            unsafe { u8::store(at, *byte, Ordering::Relaxed) };
            // SAFETY: at most one past the checked range.
            at = unsafe { at.add(1) };
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_zeroed_and_accessible_both_ways() {
        let mut m = DmaMemory::new(8192, false).unwrap();
        assert_eq!(m.addr() % 4096, 0);
        let w = m.window();
        w.store::<u32>(4, 0xaabb_ccdd, Ordering::Relaxed).unwrap();
        w.copy_in(8190, &[1, 2]).unwrap();
        let mut out = [0u8; 2];
        w.copy_out(8190, &mut out).unwrap();
        assert_eq!(out, [1, 2]);
        // SAFETY: no device and no window access while the slices live.
        let bytes = unsafe { m.as_slice() };
        assert_eq!(bytes[4..8], [0xdd, 0xcc, 0xbb, 0xaa]);
        assert!(bytes[8..8190].iter().all(|b| *b == 0));
        // SAFETY: as above.
        let bytes = unsafe { m.as_mut_slice() };
        bytes[100] = 7;
        assert_eq!(m.window().load::<u8>(100, Ordering::Acquire), Some(7));
    }

    #[test]
    fn bulk_copies_are_exact_at_every_alignment_and_length() {
        let m = DmaMemory::new(4096, false).unwrap();
        let w = m.window();
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..17 {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
                w.copy_in(0, &[0xee; 300]).unwrap();
                w.copy_in(offset, &data[..len]).unwrap();
                let mut back = vec![0u8; 300];
                w.copy_out(0, &mut back).unwrap();
                assert!(back[..offset].iter().all(|b| *b == 0xee), "{offset}/{len}");
                assert_eq!(&back[offset..offset + len], &data[..len], "{offset}/{len}");
                assert!(
                    back[offset + len..].iter().all(|b| *b == 0xee),
                    "{offset}/{len}"
                );
                let mut part = vec![0u8; len];
                w.copy_out(offset, &mut part).unwrap();
                assert_eq!(part, &data[..len]);
            }
        }
    }

    #[test]
    fn values_are_little_endian_in_memory() {
        let m = DmaMemory::new(4096, false).unwrap();
        let w = m.window();
        w.store::<u64>(8, 0x0102_0304_0506_0708, Ordering::Release)
            .unwrap();
        let mut raw = [0u8; 8];
        w.copy_out(8, &mut raw).unwrap();
        assert_eq!(raw, [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(w.load::<u16>(8, Ordering::Relaxed), Some(0x0708));
    }

    #[test]
    fn out_of_bounds_and_misaligned_accesses_are_refused() {
        let m = DmaMemory::new(4096, false).unwrap();
        let w = m.window();
        assert_eq!(w.load::<u64>(4092, Ordering::Relaxed), None);
        assert_eq!(w.store::<u16>(1, 0, Ordering::Relaxed), None);
        assert_eq!(w.copy_in(4095, &[1, 2]), None);
        assert_eq!(w.copy_out(usize::MAX, &mut [0u8; 1]), None);
        assert_eq!(w.load::<u8>(4095, Ordering::Relaxed), Some(0));
        let part = w.sub(4000, 96).unwrap();
        assert_eq!(part.len(), 96);
        assert!(w.sub(4000, 97).is_none());
        assert!(w.sub(usize::MAX, 2).is_none());
        assert_eq!(part.load::<u32>(96, Ordering::Relaxed), None);
        part.store::<u32>(92, 5, Ordering::Relaxed).unwrap();
        assert_eq!(w.load::<u32>(4092, Ordering::Relaxed), Some(5));
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(DmaMemory::new(0, false).is_err());
    }
}
