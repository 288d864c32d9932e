//! Taking a device's mappings and descriptor away from a process that may still
//! be using them: what releasing a revoked device needs.
//!
//! A device mapping cannot simply be unmapped while other threads may hold
//! pointers into it (a `BarView` is one volatile access, with no check): the
//! address range could be handed to an unrelated mapping. Instead the range is
//! replaced in place, atomically, by private memory that reads as all-ones
//! (what a vanished PCI device returns) and absorbs writes. A descriptor is
//! replaced the same way (`dup3` over its number), so no other file can take
//! the number while code that still holds it is about to use it.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Bytes of all-ones memory mapped at a time over a dead device mapping.
const DEAD_CHUNK: usize = 2 << 20;

/// The device mappings of one device that may have to be replaced by dead
/// memory, and whether that has happened.
#[derive(Debug, Default)]
pub(crate) struct MappingRegistry {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Live mappings: start address and length.
    live: Vec<(usize, usize)>,
    /// Set once the mappings were replaced: later ones are replaced at once.
    dead: bool,
}

impl MappingRegistry {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the mapping of `len` bytes at `ptr`; replaces it at once if the
    /// device is already dead. Fails only if that replacement fails.
    pub(crate) fn register(&self, ptr: NonNull<u8>, len: usize) -> io::Result<()> {
        let mut registry = self.lock();
        if registry.dead {
            replace_with_dead_memory(dead_file().as_ref(), ptr.as_ptr() as usize, len)?;
        }
        registry.live.push((ptr.as_ptr() as usize, len));
        Ok(())
    }

    /// Unmaps the mapping of `len` bytes at `ptr` and forgets it, under the
    /// lock, so it never races its replacement.
    pub(crate) fn unmap(&self, ptr: NonNull<u8>, len: usize) {
        let mut registry = self.lock();
        let start = ptr.as_ptr() as usize;
        registry.live.retain(|&entry| entry != (start, len));
        // SAFETY: the caller owns the mapping of `len` bytes at `ptr` (whatever
        // backs it now: the device, or dead memory put in the same range) and
        // gives it up; holding the lock keeps `kill` from mapping over the
        // range after it is gone.
        unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    }

    /// Replaces every registered mapping, and every later one, with dead
    /// memory. The device's memory is then mapped nowhere in this process.
    pub(crate) fn kill(&self) -> io::Result<()> {
        let mut registry = self.lock();
        registry.dead = true;
        let dead = dead_file();
        for &(start, len) in &registry.live {
            replace_with_dead_memory(dead.as_ref(), start, len)?;
        }
        // `dead` closes here: the mappings keep the file itself alive, and
        // it goes with the last of them.
        Ok(())
    }
}

/// A new file of `DEAD_CHUNK` bytes of 0xff, or `None` if one cannot be made
/// (dead memory then reads zeros).
fn dead_file() -> Option<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags and returns
    // a new descriptor or -1; nothing else is touched.
    let fd = unsafe { libc::memfd_create(c"usrdrv-dead-device".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by no one else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&vec![0xff; DEAD_CHUNK]).ok()?;
    Some(OwnedFd::from(file))
}

/// Maps private dead memory over `[start, start + len)`, in place: copies of
/// `dead` (all-ones) where given, zeros otherwise. Either way the range stays
/// mapped (readable and writable) throughout.
fn replace_with_dead_memory(dead: Option<&OwnedFd>, start: usize, len: usize) -> io::Result<()> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let fixed = libc::MAP_PRIVATE | libc::MAP_FIXED;
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(DEAD_CHUNK);
        let at = start + done;
        let (flags, fd) = match dead {
            Some(fd) => (fixed, fd.as_raw_fd()),
            None => (fixed | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: `[at, at + chunk)` lies inside a mapping the registry owns
        // (its caller holds the lock, so it is not being unmapped); MAP_FIXED
        // swaps what backs it in one step, so the range is never unmapped, and
        // no Rust reference into device memory exists to be invalidated.
        let mut addr = unsafe { libc::mmap(at as *mut libc::c_void, chunk, prot, flags, fd, 0) };
        if addr == libc::MAP_FAILED && fd >= 0 {
            // SAFETY: as above, with anonymous memory.
            addr = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    chunk,
                    prot,
                    fixed | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
        }
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        done += chunk;
    }
    Ok(())
}

/// Closes the file behind `fd` while keeping the number open: the number now
/// names an eventfd, on which reads, writes and ioctls fail, until its owner
/// closes it as usual. Code racing the release thus gets errors, never
/// another file that happened to reuse the number.
pub(crate) fn retire_fd(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: eventfd takes an initial count and flags and returns a new
    // descriptor or -1.
    let stand_in = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if stand_in < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `stand_in` is fresh and owned here.
    let stand_in = unsafe { OwnedFd::from_raw_fd(stand_in) };
    // SAFETY: both descriptors are open. dup3 atomically makes `fd`'s number
    // refer to the eventfd, closing the file it named; the number stays open
    // and still belongs to `fd`'s owner, which closes it later as before.
    let ret = unsafe { libc::dup3(stand_in.as_raw_fd(), fd.as_raw_fd(), libc::O_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mmap::Mapping;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    #[test]
    fn a_killed_mapping_reads_all_ones_and_absorbs_writes() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(3 << 20).unwrap();
        file.write_all_at(&[0x11; 64], 0).unwrap();
        let registry = Arc::new(MappingRegistry::default());
        let map =
            Mapping::map_shared_registered(&registry, file.as_fd(), 0, 3 << 20, true).unwrap();
        assert_eq!(map.read::<u32>(0), Some(0x1111_1111));
        registry.kill().unwrap();
        assert_eq!(map.read::<u32>(0), Some(u32::MAX));
        assert_eq!(
            map.read::<u64>((3 << 20) - 8),
            Some(u64::MAX),
            "past the first chunk"
        );
        map.write::<u32>(0, 5).unwrap();
        assert_eq!(map.read::<u32>(0), Some(5), "a private page took the write");
        let mut on_disk = [0u8; 4];
        file.read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(on_disk, [0x11; 4], "nothing reached the file");
        // A mapping made after the kill is dead from the start.
        let late = Mapping::map_shared_registered(&registry, file.as_fd(), 0, 4096, true).unwrap();
        assert_eq!(late.read::<u8>(0), Some(0xff));
        drop(map);
        drop(late);
        assert!(registry.lock().live.is_empty());
    }

    #[test]
    fn a_retired_descriptor_keeps_its_number_and_fails_every_call() {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(b"data", 0).unwrap();
        let number = file.as_raw_fd();
        retire_fd(file.as_fd()).unwrap();
        assert_eq!(file.as_raw_fd(), number);
        let mut buf = [0u8; 4];
        assert!(file.read_exact_at(&mut buf, 0).is_err());
        assert!(file.write_all_at(b"more", 0).is_err());
    }
}
