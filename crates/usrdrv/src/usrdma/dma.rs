//! DMA through the usrdma module: coherent buffers the kernel allocates below
//! the device's mask, and the caller's memory pinned (or bounced) by the
//! kernel, behind the same backend trait as VFIO.

use std::io;

use super::Device;
use crate::dma::backend::{Allocation, DmaBackend, SgList, UserMapping, page_span};
use crate::dma::{Direction, DmaError, DmaMask, SgEntry};
use crate::sys::dma_memory::DmaMemory;
use crate::sys::limits::page_size;
use crate::sys::usrdma_ioctl as ioctl;

/// The usrdma DMA backend of one open device.
#[derive(Debug)]
pub(crate) struct UsrdmaDma {
    device: Device,
    mask: DmaMask,
}

impl UsrdmaDma {
    /// DMA for `device`, telling the module the device drives `mask` bits.
    pub(crate) fn new(device: Device, mask: DmaMask) -> Result<Self, super::UsrdmaError> {
        device.set_dma_mask(mask.bits())?;
        Ok(Self { device, mask })
    }

    fn revoked(&self) -> DmaError {
        DmaError::Revoked {
            address: self.device.address(),
        }
    }

    /// A failed call: revocation, the memlock limit, or the kernel's error.
    fn failure(&self, source: io::Error, map: impl FnOnce(io::Error) -> DmaError) -> DmaError {
        match source.raw_os_error() {
            Some(libc::ENODEV) => {
                self.device.mark_revoked();
                self.revoked()
            }
            _ => map(source),
        }
    }

    /// Allocates through the module, with `name` ("" for none) and `flags`.
    pub(crate) fn alloc_with(
        &self,
        name: &str,
        size: usize,
        flags: u32,
    ) -> Result<Allocation, DmaError> {
        if size == 0 {
            return Err(DmaError::Empty);
        }
        let page = page_size();
        let rounded = size
            .checked_next_multiple_of(page)
            .ok_or(DmaError::TooLarge {
                what: "the buffer",
                size: size as u64,
            })?;
        let out = ioctl::alloc(self.device.fd(), rounded as u64, flags, name.as_bytes()).map_err(
            |e| {
                self.failure(e, |source| match source.raw_os_error() {
                    Some(libc::EEXIST) => DmaError::NameTaken {
                        name: name.to_owned(),
                    },
                    Some(libc::ENOMEM) => DmaError::NoMemoryBelowMask {
                        size: rounded as u64,
                        bits: self.mask.bits(),
                    },
                    // ABI 5: larger than this kernel can give.
                    Some(libc::EINVAL)
                        if self
                            .device
                            .max_buffer_size()
                            .is_some_and(|max| rounded as u64 > max) =>
                    {
                        DmaError::Memory {
                            size,
                            source: io::Error::new(
                                io::ErrorKind::InvalidInput,
                                super::UsrdmaError::BufferTooLarge {
                                    size: rounded as u64,
                                    max: self.device.max_buffer_size().unwrap_or(MAX_BUFFER),
                                    cma: self.device.cma(),
                                },
                            ),
                        }
                    }
                    Some(libc::EINVAL) if rounded as u64 > MAX_BUFFER => DmaError::TooLarge {
                        what: "a usrdma buffer (at most 1 GiB)",
                        size: rounded as u64,
                    },
                    _ => DmaError::Memory { size, source },
                })
            },
        )?;
        let entry = out_entry(&out);
        let end = entry.dma_addr.checked_add(entry.size.saturating_sub(1));
        if end.is_none_or(|end| end > self.mask.limit()) {
            // The module broke its promise; never hand such memory out.
            let _ = ioctl::free(self.device.fd(), entry.id, entry.generation);
            return Err(DmaError::Kernel {
                op: "USRDMA_ALLOC",
                source: io::Error::other(format!(
                    "the usrdma module returned {:#x} bytes at {:#x}, beyond the {}-bit mask",
                    entry.size,
                    entry.dma_addr,
                    self.mask.bits()
                )),
            });
        }
        self.attach(&entry, flags & ioctl::BUF_PERSISTENT != 0)
            .inspect_err(|_| {
                // Just made for this caller, persistent or not: take it back.
                let _ = ioctl::free(self.device.fd(), entry.id, entry.generation);
            })
    }

    /// Maps an existing buffer of the module into the process; `keep`: a
    /// persistent buffer, which dropping the handle does not free.
    pub(crate) fn attach(
        &self,
        entry: &ioctl::BufEntry,
        keep: bool,
    ) -> Result<Allocation, DmaError> {
        let len = usize::try_from(entry.size).map_err(|_| DmaError::TooLarge {
            what: "the buffer",
            size: entry.size,
        })?;
        let handle =
            buffer_handle(entry.id, entry.generation).ok_or_else(|| DmaError::Kernel {
                op: "USRDMA_ALLOC",
                source: io::Error::other(format!(
                    "the usrdma module returned buffer id {} of generation {}: usrdrv keeps ids below 2^{ID_BITS} and generations below 2^{} (rebind the device to start the generations again)",
                    entry.id,
                    entry.generation,
                    64 - ID_BITS
                )),
            })?;
        let memory = DmaMemory::map_shared(self.device.fd(), entry.mmap_offset, len)
            .map_err(|e| self.failure(e, |source| DmaError::Memory { size: len, source }))?;
        Ok(Allocation {
            memory,
            device_addr: entry.dma_addr,
            handle,
            keep,
        })
    }

    /// The module's buffers on this device.
    pub(crate) fn list(&self) -> Result<Vec<ioctl::BufEntry>, DmaError> {
        ioctl::list(self.device.fd()).map_err(|e| {
            self.failure(e, |source| DmaError::Kernel {
                op: "USRDMA_LIST",
                source,
            })
        })
    }

    /// Frees a persistent buffer of this device by name, whoever allocated it,
    /// provided no process maps it.
    pub(crate) fn free_by_name(&self, name: &str) -> Result<(), DmaError> {
        ioctl::free_by_name(self.device.fd(), name.as_bytes()).map_err(|e| {
            self.failure(e, |source| match source.raw_os_error() {
                Some(libc::ENOENT) => DmaError::NoSuchName {
                    name: name.to_owned(),
                },
                // Held by the opener (this process): freed when its handle drops.
                Some(libc::EPERM) => DmaError::NotPersistent {
                    name: name.to_owned(),
                },
                // A handle (here, or in a child that inherited it) still maps it.
                Some(libc::EBUSY) => DmaError::BufferInUse {
                    name: name.to_owned(),
                },
                Some(libc::EINVAL) => DmaError::BadName {
                    name: name.to_owned(),
                },
                _ => DmaError::Kernel {
                    op: "USRDMA_FREE",
                    source,
                },
            })
        })
    }
}

/// The largest buffer the module allocates.
const MAX_BUFFER: u64 = 1 << 30;

/// Bits of `Allocation.handle` that hold the buffer id; the generation is in
/// the rest. The module hands out the lowest free id and keeps at most 4096
/// buffers, and its generations count up from 1 per bound device: both fit
/// with room to spare.
const ID_BITS: u32 = 16;

/// `Allocation.handle` of buffer `id` of `generation`: both are needed to
/// free it (a stale id alone could name a newer buffer). `None` when they do
/// not fit (or are 0, which the module never returns).
fn buffer_handle(id: u32, generation: u64) -> Option<u64> {
    let fits = id != 0 && id < 1 << ID_BITS && generation != 0 && generation < 1 << (64 - ID_BITS);
    fits.then(|| (generation << ID_BITS) | u64::from(id))
}

/// The id and generation in an `Allocation.handle` made by [`buffer_handle`].
fn buffer_of(handle: u64) -> (u32, u64) {
    let id = u32::try_from(handle & ((1 << ID_BITS) - 1)).unwrap_or(0);
    (id, handle >> ID_BITS)
}

/// The listing entry of a freshly allocated buffer.
fn out_entry(out: &ioctl::Alloc) -> ioctl::BufEntry {
    ioctl::BufEntry {
        id: out.id,
        flags: out.flags,
        size: out.size,
        dma_addr: out.dma_addr,
        mmap_offset: out.mmap_offset,
        name: out.name,
        generation: out.generation,
        ..Default::default()
    }
}

impl DmaBackend for UsrdmaDma {
    fn mask(&self) -> DmaMask {
        self.mask
    }

    fn alloc(&self, size: usize, _huge: bool) -> Result<Allocation, DmaError> {
        // Coherent memory is physically contiguous already: no hugepages needed.
        self.alloc_with("", size, 0)
    }

    fn alloc_named(&self, name: &str, size: usize) -> Result<Allocation, DmaError> {
        self.alloc_with(name, size, 0)
    }

    fn free(&self, allocation: &Allocation) -> Result<(), DmaError> {
        if allocation.keep {
            return Ok(());
        }
        let (id, generation) = buffer_of(allocation.handle);
        // A stale pair (the buffer is gone) is refused, never another buffer freed.
        match ioctl::free(self.device.fd(), id, generation) {
            Ok(()) => Ok(()),
            // Revoked: the module already stopped the device and freed everything.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            Err(source) => Err(DmaError::Unmap {
                iova: allocation.device_addr,
                size: allocation.memory.len() as u64,
                source,
            }),
        }
    }

    #[allow(unsafe_code)] // implements the trait's unsafe method
    unsafe fn map_user(
        &self,
        addr: usize,
        len: usize,
        direction: Direction,
    ) -> Result<UserMapping, DmaError> {
        let page = page_size();
        let (_, span) = page_span(addr, len, page)?;
        let mut entries = vec![ioctl::SgEntryArg::default(); span / page];
        let mut flags = 0;
        if direction.device_reads() {
            flags |= ioctl::DIR_TO_DEVICE;
        }
        if direction.device_writes() {
            flags |= ioctl::DIR_FROM_DEVICE;
        }
        #[allow(
            unsafe_code,
            reason = "MAP_USER lets the device reach the caller's memory until unmap"
        )]
        // SAFETY: the caller of `DmaBackend::map_user` guarantees the memory
        // `[addr, addr + len)` stays put (allocated, and not handed back to safe
        // code) until `unmap_user` of the returned mapping succeeds, or is
        // leaked: the contract of `ioctl::map_user`.
        let out = unsafe { ioctl::map_user(self.device.fd(), addr, len, flags, &mut entries) }
            .map_err(|e| {
                self.failure(e, |source| {
                    if source
                        .get_ref()
                        .is_some_and(|inner| inner.is::<ioctl::NotPinnable>())
                    {
                        return DmaError::Map {
                            iova: 0,
                            size: len as u64,
                            source: io::Error::new(
                                io::ErrorKind::InvalidInput,
                                super::UsrdmaError::NotPinnable {
                                    addr: addr as u64,
                                    len: len as u64,
                                },
                            ),
                        };
                    }
                    match source.raw_os_error() {
                        // Not the locked-memory limit: no bounce buffer below the mask.
                        Some(libc::ENOMEM) if crate::dma::memlock_limit().is_none() => {
                            DmaError::NoMemoryBelowMask {
                                size: len as u64,
                                bits: self.mask.bits(),
                            }
                        }
                        _ => crate::dma::map_failure(addr as u64, len as u64, source),
                    }
                })
            })?;
        let mut sg: Vec<SgEntry> = entries
            .iter()
            .map(|e| SgEntry {
                device_addr: e.dma_addr,
                len: e.length as usize,
            })
            .collect();
        let total: u64 = entries.iter().map(|e| e.length).sum();
        let beyond_mask = entries
            .iter()
            .any(|e| e.dma_addr.saturating_add(e.length.saturating_sub(1)) > self.mask.limit());
        let mapping = UserMapping {
            sg: if sg.len() == 1 {
                SgList::One(sg.remove(0))
            } else {
                SgList::Many(sg)
            },
            handle: out.handle.into(),
            mapped_len: len as u64,
            bounced: out.out_flags & ioctl::MAP_BOUNCED != 0,
        };
        if total != len as u64 || beyond_mask {
            // The module broke its promise; never hand out such a list.
            let _ = self.unmap_user(&mapping);
            return Err(DmaError::Map {
                iova: 0,
                size: len as u64,
                source: io::Error::other(format!(
                    "the usrdma module returned a list of {total} bytes for {len} (or above the {}-bit mask)",
                    self.mask.bits()
                )),
            });
        }
        Ok(mapping)
    }

    fn unmap_user(&self, mapping: &UserMapping) -> Result<(), DmaError> {
        let handle = u32::try_from(mapping.handle).unwrap_or(0);
        match ioctl::unmap_user(self.device.fd(), handle) {
            Ok(()) => Ok(()),
            // Revoked: the module unmapped and unpinned everything already.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                self.device.mark_revoked();
                Ok(())
            }
            Err(source) => Err(DmaError::Unmap {
                iova: mapping.sg.as_slice().first().map_or(0, |e| e.device_addr),
                size: mapping.mapped_len,
                source,
            }),
        }
    }

    fn sync_user(&self, mapping: &UserMapping, for_cpu: bool) -> Result<(), DmaError> {
        let handle = u32::try_from(mapping.handle).unwrap_or(0);
        ioctl::sync(self.device.fd(), handle, mapping.mapped_len, for_cpu).map_err(|e| {
            self.failure(e, |source| DmaError::Kernel {
                op: if for_cpu {
                    "USRDMA_SYNC for the CPU"
                } else {
                    "USRDMA_SYNC for the device"
                },
                source,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_keep_the_id_and_the_generation() {
        for (id, generation) in [(1, 1), (4096, 7), (0xffff, (1 << 48) - 1), (3, 1 << 40)] {
            let handle = buffer_handle(id, generation).unwrap();
            assert_eq!(buffer_of(handle), (id, generation));
        }
        // Reusing an id gives another handle.
        assert_ne!(buffer_handle(5, 10), buffer_handle(5, 11));
    }

    #[test]
    fn what_does_not_fit_gets_no_handle() {
        assert_eq!(buffer_handle(0, 1), None);
        assert_eq!(buffer_handle(1, 0), None);
        assert_eq!(buffer_handle(1 << 16, 1), None);
        assert_eq!(buffer_handle(1, 1 << 48), None);
    }
}
