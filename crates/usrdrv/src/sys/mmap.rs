//! An owned shared memory mapping of a file (a device region), unmapped on drop,
//! accessed only through bounds-checked volatile reads and writes.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use super::dead_memory::MappingRegistry;
use super::word::MmioValue;

/// A `MAP_SHARED` mapping of part of a file.
///
/// No Rust reference to the mapped memory ever exists: device memory can change
/// under us and reads can have side effects, so every access is a volatile
/// read or write of one naturally aligned value.
#[derive(Debug)]
pub(crate) struct Mapping {
    // INVARIANT: `ptr` is the page-aligned start of a live mapping of `len` bytes
    // created by `mmap` in `map_shared`, owned by this value and unmapped only by
    // its `Drop` (or through `registry`, which may first have replaced what
    // backs the range with dead memory, keeping it mapped).
    ptr: NonNull<u8>,
    len: usize,
    /// The device's registry, when the mapping must be replaceable at
    /// revocation; unmapping then goes through it.
    registry: Option<Arc<MappingRegistry>>,
}

// SAFETY: the mapping is process-wide memory, not tied to the thread that made
// it, and the only accesses are volatile reads and writes of whole values, which
// are sound from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` allows only volatile single-value accesses, which
// need no exclusion between threads (the device sees them in program order per
// thread, as it would from a kernel driver).
unsafe impl Sync for Mapping {}

/// Creates a fresh shared mapping of `len` bytes of `fd` from `offset`
/// (readable, and writable if asked) and returns its start; the caller owns
/// it and must `munmap` exactly `len` bytes from there.
pub(crate) fn map_shared_raw(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: usize,
    writable: bool,
) -> io::Result<NonNull<u8>> {
    if len == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh mapping at an address the kernel chooses cannot alias any
    // existing Rust object; `fd` is a valid open descriptor for the call's
    // duration; the result is checked before use.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(addr.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))
}

/// Marks `len` bytes from `ptr` `MADV_DONTFORK`: a child made by `fork` gets
/// no mapping there.
fn dont_fork(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: madvise only changes the kernel's bookkeeping for the range, which
    // is a live mapping owned by the caller; MADV_DONTFORK does not touch its
    // contents or this process's view of it.
    let ret = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTFORK) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset`, readable and, if `writable`,
    /// writable, and not inherited by children the process forks.
    pub(crate) fn map_shared(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> io::Result<Self> {
        let ptr = map_shared_raw(fd, offset, len, writable)?;
        // INVARIANT: `ptr` and `len` describe the mapping just created.
        let mapping = Self {
            ptr,
            len,
            registry: None,
        };
        // Device registers must not be reachable from a forked child: it would
        // share them with no handle keeping the device, and outlive revocation.
        // On failure `mapping` drops and unmaps.
        dont_fork(mapping.ptr, mapping.len)?;
        Ok(mapping)
    }

    /// Like [`Mapping::map_shared`], recorded in `registry`, which can replace
    /// it with dead memory when the device is taken away.
    pub(crate) fn map_shared_registered(
        registry: &Arc<MappingRegistry>,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> io::Result<Self> {
        let mut mapping = Self::map_shared(fd, offset, len, writable)?;
        // On failure `mapping` drops (unregistered) and unmaps.
        registry.register(mapping.ptr, mapping.len)?;
        mapping.registry = Some(Arc::clone(registry));
        Ok(mapping)
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The byte offset of a `T` at `offset` if it lies wholly inside the mapping
    /// and is naturally aligned.
    #[inline]
    fn checked<T: MmioValue>(&self, offset: usize) -> Option<usize> {
        let size = std::mem::size_of::<T>();
        let end = offset.checked_add(size)?;
        (end <= self.len && offset.is_multiple_of(size)).then_some(offset)
    }

    /// Reads the little-endian `T` at `offset`, or `None` if it is out of bounds
    /// or misaligned.
    #[inline]
    pub(crate) fn read<T: MmioValue>(&self, offset: usize) -> Option<T> {
        let offset = self.checked::<T>(offset)?;
        // SAFETY: `checked` proved `offset + size_of::<T>() <= len`, so the pointer
        // stays inside the live mapping (type invariant); the mapping is
        // page-aligned and `offset` a multiple of the size, so it is aligned for
        // `T` (a primitive integer whose alignment equals its size).
        let ptr = unsafe { self.ptr.as_ptr().add(offset) }.cast::<T>();
        // SAFETY: `ptr` is in bounds and aligned (above); a volatile read of a
        // plain integer from mapped memory is always defined, whatever it holds.
        let raw = unsafe { ptr.read_volatile() };
        Some(T::from_le(raw))
    }

    /// Writes `value` little-endian at `offset`, or returns `None` (writing
    /// nothing) if it is out of bounds or misaligned.
    #[inline]
    pub(crate) fn write<T: MmioValue>(&self, offset: usize, value: T) -> Option<()> {
        let offset = self.checked::<T>(offset)?;
        // SAFETY: in bounds and aligned, as in `read`.
        let ptr = unsafe { self.ptr.as_ptr().add(offset) }.cast::<T>();
        // SAFETY: `ptr` is in bounds and aligned; no Rust reference to this memory
        // exists anywhere, so a volatile write cannot break aliasing rules.
        unsafe { ptr.write_volatile(value.to_le()) };
        Some(())
    }
}

/// The first `SIZE` bytes of a [`Mapping`], proven to exist when the view is
/// made: accesses at constant offsets are checked at compile time and cost
/// nothing at run time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SizedMapping<'a, const SIZE: usize> {
    // INVARIANT: `ptr` is the page-aligned start of a live mapping of at least
    // `SIZE` bytes, borrowed for `'a` so it cannot be unmapped meanwhile.
    ptr: NonNull<u8>,
    _mapping: PhantomData<&'a Mapping>,
}

// SAFETY: as for `Mapping`: only volatile single-value accesses.
unsafe impl<const SIZE: usize> Send for SizedMapping<'_, SIZE> {}
// SAFETY: as for `Mapping`.
unsafe impl<const SIZE: usize> Sync for SizedMapping<'_, SIZE> {}

impl Mapping {
    /// A view of the first `SIZE` bytes, if the mapping is that long.
    pub(crate) fn sized<const SIZE: usize>(&self) -> Option<SizedMapping<'_, SIZE>> {
        // INVARIANT: checked here that the mapping holds `SIZE` bytes.
        (SIZE <= self.len).then_some(SizedMapping {
            ptr: self.ptr,
            _mapping: PhantomData,
        })
    }
}

impl<const SIZE: usize> SizedMapping<'_, SIZE> {
    /// Reads the little-endian `T` at `OFFSET`, volatile.
    #[inline(always)]
    pub(crate) fn read<T: MmioValue, const OFFSET: usize>(&self) -> T {
        const {
            assert!(
                OFFSET.is_multiple_of(std::mem::size_of::<T>())
                    && OFFSET + std::mem::size_of::<T>() <= SIZE,
                "register outside the BAR view or misaligned"
            )
        };
        // SAFETY: `OFFSET + size_of::<T>() <= SIZE <= len` (compile-time check
        // above and the type invariant), so the pointer is in the live mapping;
        // the base is page-aligned and `OFFSET` a multiple of the size, so it is
        // aligned for `T`.
        let ptr = unsafe { self.ptr.as_ptr().add(OFFSET) }.cast::<T>();
        // SAFETY: in bounds and aligned; no reference to the memory is formed.
        T::from_le(unsafe { ptr.read_volatile() })
    }

    /// Writes `value` little-endian at `OFFSET`, volatile.
    #[inline(always)]
    pub(crate) fn write<T: MmioValue, const OFFSET: usize>(&self, value: T) {
        const {
            assert!(
                OFFSET.is_multiple_of(std::mem::size_of::<T>())
                    && OFFSET + std::mem::size_of::<T>() <= SIZE,
                "register outside the BAR view or misaligned"
            )
        };
        // SAFETY: as in `read`.
        let ptr = unsafe { self.ptr.as_ptr().add(OFFSET) }.cast::<T>();
        // SAFETY: in bounds and aligned; no reference to the memory exists.
        unsafe { ptr.write_volatile(value.to_le()) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(registry) = &self.registry {
            registry.unmap(self.ptr, self.len);
            return;
        }
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map_shared` (type
        // invariant) and nothing can use it after drop. munmap of a valid
        // mapping only fails on invalid arguments, which the invariant excludes.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn mapped_file(bytes: &[u8]) -> (tempfile::NamedTempFile, Mapping) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file.flush().unwrap();
        let map = Mapping::map_shared(file.as_file().as_fd(), 0, bytes.len(), true).unwrap();
        (file, map)
    }

    #[test]
    fn reads_and_writes_every_width_little_endian() {
        let bytes: Vec<u8> = (0u8..16).collect();
        let (_file, map) = mapped_file(&bytes);
        assert_eq!(map.read::<u8>(3), Some(3));
        assert_eq!(map.read::<u16>(2), Some(0x0302));
        assert_eq!(map.read::<u32>(4), Some(0x0706_0504));
        assert_eq!(map.read::<u64>(8), Some(0x0f0e_0d0c_0b0a_0908));
        map.write::<u32>(0, 0xdead_beef).unwrap();
        assert_eq!(map.read::<u8>(0), Some(0xef));
        assert_eq!(map.read::<u32>(0), Some(0xdead_beef));
    }

    #[test]
    fn refuses_out_of_bounds_and_misaligned_accesses() {
        let (_file, map) = mapped_file(&[0u8; 16]);
        assert_eq!(map.read::<u32>(16), None);
        assert_eq!(map.read::<u64>(12), None);
        assert_eq!(map.read::<u32>(2), None);
        assert_eq!(map.read::<u16>(usize::MAX), None);
        assert_eq!(map.write::<u64>(9, 1), None);
        assert_eq!(map.write::<u8>(16, 1), None);
        assert_eq!(
            map.read::<u64>(8),
            Some(0),
            "a refused write must not write"
        );
    }

    #[test]
    fn sized_views_exist_only_when_the_mapping_is_long_enough() {
        let bytes: Vec<u8> = (0u8..16).collect();
        let (_file, map) = mapped_file(&bytes);
        // The view is bounded by the length mapped, not the page around it.
        assert!(map.sized::<32>().is_none());
        let view = map.sized::<16>().unwrap();
        assert_eq!(view.read::<u32, 4>(), 0x0706_0504);
        view.write::<u16, 14>(0xbeef);
        assert_eq!(map.read::<u16>(14), Some(0xbeef));
    }

    #[test]
    fn a_forked_child_does_not_inherit_the_mapping() {
        let (_file, map) = mapped_file(&[7u8; 16]);
        let addr = map.ptr.as_ptr() as usize;
        // SAFETY: the child only calls async-signal-safe functions (mincore,
        // _exit) before exiting.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut vec = 0u8;
            // SAFETY: mincore writes one byte for one page into a live local;
            // it fails with ENOMEM when nothing is mapped at `addr`.
            let ret = unsafe { libc::mincore(addr as *mut libc::c_void, 1, &mut vec) };
            let unmapped =
                ret != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(if unmapped { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked, writing its status to a local.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child still had the mapping (status {status:#x})"
        );
        assert_eq!(map.read::<u8>(0), Some(7), "the parent keeps it");
    }

    #[test]
    fn empty_mapping_is_refused() {
        let file = tempfile::tempfile().unwrap();
        let err = Mapping::map_shared(file.as_fd(), 0, 0, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
