//! The emulated IOMMU of one open: the device addresses handed out (from the
//! same allocator VFIO uses, under the declared mask), what process memory
//! each reaches and whether the device may write it. The model's DMA is
//! translated and copied under the table's lock, so an unmap that returned
//! has ended the device's access: a later access is a fault, never a write.

use std::collections::BTreeMap;

use super::faults::{DmaFault, Leak, LeakKind};
use crate::dma::{DmaError, DmaMask, IovaAllocator, IovaRange};
use crate::sys::dma_memory::DmaWindow;

/// The first device address handed out: low addresses stay unused, so a
/// driver writing 0 (or a small offset) as an address faults.
pub(crate) const IOVA_BASE: u64 = 0x10_0000;

/// The page size of the emulated IOMMU.
pub(crate) const PAGE: u64 = 4096;

/// One mapping: whole pages of device addresses, and the process memory
/// the device may reach in them (all of it for DMA memory; exactly the
/// caller's bytes for a mapped buffer, whose pages hold other data too).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The bytes mapped, whole pages.
    span: u64,
    /// Where in the span the reachable memory starts.
    start: u64,
    window: DmaWindow,
    device_may_write: bool,
    kind: LeakKind,
}

/// The table and its address space.
#[derive(Debug)]
pub(crate) struct Iommu {
    table: BTreeMap<u64, Entry>,
    iovas: IovaAllocator,
    mask: DmaMask,
    /// Set when the device was revoked or closed: the mappings no longer
    /// translate (the kernel dropped them with the container), unmaps still
    /// succeed.
    released: bool,
    /// Addresses handed out beyond the mask (a self-check; never expected).
    outside_mask: Vec<(u64, u64)>,
}

impl Iommu {
    /// An empty table handing out addresses under `mask`, from
    /// [`IOVA_BASE`] on, at most `space` bytes of them.
    pub(crate) fn new(mask: DmaMask, space: Option<u64>) -> Result<Self, DmaError> {
        let limit = mask.limit();
        let last = match space {
            Some(bytes) => IOVA_BASE.saturating_add(bytes).saturating_sub(1).min(limit),
            None => limit,
        };
        let ranges = [IovaRange {
            start: IOVA_BASE,
            last,
        }];
        Ok(Self {
            table: BTreeMap::new(),
            iovas: IovaAllocator::new(&ranges, mask.bits(), PAGE)?,
            mask,
            released: false,
            outside_mask: Vec::new(),
        })
    }

    /// Maps `span` bytes (whole pages) at a fresh device address, through
    /// which the device reaches `window`, starting `start` bytes in. Returns
    /// the device address of the first page.
    pub(crate) fn insert(
        &mut self,
        span: u64,
        start: u64,
        window: DmaWindow,
        device_may_write: bool,
        kind: LeakKind,
    ) -> Result<u64, DmaError> {
        let iova = self.iovas.alloc(span, PAGE)?;
        if iova
            .checked_add(span - 1)
            .is_none_or(|last| last > self.mask.limit())
        {
            self.outside_mask.push((iova, span));
        }
        self.table.insert(
            iova,
            Entry {
                span,
                start,
                window,
                device_may_write,
                kind,
            },
        );
        Ok(iova)
    }

    /// Unmaps what [`Iommu::insert`] mapped at `iova`.
    pub(crate) fn remove(&mut self, iova: u64) -> Result<(), DmaError> {
        if self.table.remove(&iova).is_none() {
            return Err(DmaError::Unmap {
                iova,
                size: 0,
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        self.iovas.free(iova)?;
        Ok(())
    }

    /// Drops every translation (a revocation or a close); unmaps still work.
    pub(crate) fn release(&mut self) {
        self.released = true;
    }

    /// The memory behind `len` bytes at `iova`, for a device access.
    pub(crate) fn translate(
        &self,
        iova: u64,
        len: usize,
        write: bool,
    ) -> Result<DmaWindow, DmaFault> {
        let not_mapped = DmaFault::NotMapped {
            addr: iova,
            len,
            write,
        };
        if self.released {
            return Err(not_mapped);
        }
        let (base, entry) = self.table.range(..=iova).next_back().ok_or(not_mapped)?;
        let offset = iova - base;
        let end = offset.checked_add(len as u64).ok_or(not_mapped)?;
        if end > entry.span {
            return Err(not_mapped);
        }
        if write && !entry.device_may_write {
            return Err(DmaFault::ReadOnly { addr: iova, len });
        }
        offset
            .checked_sub(entry.start)
            .and_then(|inner| usize::try_from(inner).ok())
            .and_then(|inner| entry.window.sub(inner, len))
            .ok_or(DmaFault::OutsideBuffer {
                addr: iova,
                len,
                write,
            })
    }

    /// What is still mapped, as leaks of open number `open`.
    pub(crate) fn leaks(&self, open: u32) -> Vec<Leak> {
        self.table
            .iter()
            .map(|(iova, entry)| Leak {
                kind: entry.kind,
                device_addr: *iova,
                len: entry.span,
                open,
            })
            .collect()
    }

    /// Addresses handed out beyond the mask.
    pub(crate) fn outside_mask(&self) -> &[(u64, u64)] {
        &self.outside_mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::dma_memory::DmaMemory;

    #[test]
    fn translations_stay_inside_mappings_respect_direction_and_end_at_unmap() {
        let memory = DmaMemory::new(2 * PAGE as usize, false).unwrap();
        let mut iommu = Iommu::new(DmaMask::new(28).unwrap(), None).unwrap();
        let iova = iommu
            .insert(2 * PAGE, 0, memory.window(), false, LeakKind::Buffer)
            .unwrap();
        assert!(iova >= IOVA_BASE && iova + 2 * PAGE <= 1 << 28);
        assert!(iommu.translate(iova + 8, 16, false).is_ok());
        assert_eq!(
            iommu.translate(iova, 16, true).err(),
            Some(DmaFault::ReadOnly {
                addr: iova,
                len: 16
            })
        );
        assert!(matches!(
            iommu.translate(iova + 2 * PAGE - 8, 16, false),
            Err(DmaFault::NotMapped { .. })
        ));
        assert!(matches!(
            iommu.translate(iova - 1, 1, false),
            Err(DmaFault::NotMapped { .. })
        ));
        assert_eq!(iommu.leaks(1).len(), 1);
        iommu.remove(iova).unwrap();
        assert!(matches!(
            iommu.translate(iova, 1, false),
            Err(DmaFault::NotMapped { .. })
        ));
        assert!(iommu.remove(iova).is_err(), "a second unmap misses");
        assert!(iommu.leaks(1).is_empty());
    }

    #[test]
    fn a_mapped_buffer_is_reachable_only_in_its_own_bytes() {
        let memory = DmaMemory::new(PAGE as usize, false).unwrap();
        let bytes = memory.window().sub(100, 50).unwrap();
        let mut iommu = Iommu::new(DmaMask::BITS_64, None).unwrap();
        let iova = iommu
            .insert(PAGE, 100, bytes, true, LeakKind::Mapping)
            .unwrap();
        assert!(iommu.translate(iova + 100, 50, true).is_ok());
        for (at, len) in [(99, 1), (99, 2), (149, 2), (150, 1), (0, 8)] {
            assert_eq!(
                iommu.translate(iova + at, len, true).err(),
                Some(DmaFault::OutsideBuffer {
                    addr: iova + at,
                    len,
                    write: true
                }),
                "{at} {len}"
            );
        }
        assert!(matches!(
            iommu.translate(iova + PAGE, 1, false),
            Err(DmaFault::NotMapped { .. })
        ));
        assert_eq!(iommu.leaks(1)[0].len, PAGE);
    }

    #[test]
    fn a_small_space_runs_out_and_a_released_table_translates_nothing() {
        let memory = DmaMemory::new(PAGE as usize, false).unwrap();
        let mut iommu = Iommu::new(DmaMask::BITS_64, Some(PAGE)).unwrap();
        let iova = iommu
            .insert(PAGE, 0, memory.window(), true, LeakKind::Buffer)
            .unwrap();
        assert!(matches!(
            iommu.insert(PAGE, 0, memory.window(), true, LeakKind::Buffer),
            Err(DmaError::Iova(_))
        ));
        iommu.release();
        assert!(iommu.translate(iova, 1, true).is_err());
        iommu.remove(iova).unwrap();
        assert!(iommu.outside_mask().is_empty());
    }
}
