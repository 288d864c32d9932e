//! Device-address (IOVA) allocation inside what the IOMMU allows and the device
//! can reach.
//!
//! The usable space is the intersection of the ranges the kernel reports
//! (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`, which leaves out windows such as the
//! x86 MSI range) with the device's DMA mask. Page 0 is never handed out, so a
//! device that DMAs to a null address faults instead of hitting a buffer.

use std::collections::BTreeMap;

/// An inclusive range of device addresses, as VFIO reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// The first address in the range.
    pub start: u64,
    /// The last address in the range (inclusive).
    pub last: u64,
}

/// Why device addresses could not be given or taken back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IovaError {
    /// The DMA mask width is not between 1 and 64 bits.
    #[error("a DMA mask of {bits} bits is invalid: declare between 1 and 64 bits")]
    BadMask {
        /// The width given.
        bits: u32,
    },
    /// The IOMMU's ranges and the DMA mask leave no usable address.
    #[error(
        "no device address is usable: the IOMMU's ranges and the {mask_bits}-bit DMA mask do not overlap above page 0"
    )]
    NoUsableSpace {
        /// The device's DMA mask width.
        mask_bits: u32,
    },
    /// A zero-byte allocation.
    #[error("cannot allocate 0 bytes of device address space")]
    ZeroSize,
    /// The alignment is not a power of two.
    #[error("alignment {align:#x} is not a power of two")]
    BadAlignment {
        /// The alignment given.
        align: u64,
    },
    /// No free range is large enough.
    #[error(
        "device address space exhausted: no free {size:#x}-byte range aligned to {align:#x} below the {mask_bits}-bit DMA mask ({free:#x} bytes free in all): free buffers, or map fewer, larger ones"
    )]
    Exhausted {
        /// The size asked for, rounded up to pages.
        size: u64,
        /// The alignment asked for.
        align: u64,
        /// The device's DMA mask width.
        mask_bits: u32,
        /// Bytes still free, in pieces too small or misaligned.
        free: u64,
    },
    /// The address was not handed out by this allocator (or was freed already).
    #[error("device address {iova:#x} is not allocated: freed twice, or never allocated here")]
    NotAllocated {
        /// The address given.
        iova: u64,
    },
}

/// Hands out page-aligned device-address ranges, first fit, reusing freed space.
///
/// ```
/// use usrdrv::dma::{IovaAllocator, IovaRange};
///
/// // What VFIO reports on x86 (MSI window left out), for a 28-bit device.
/// let ranges = [
///     IovaRange { start: 0, last: 0xfedf_ffff },
///     IovaRange { start: 0xfef0_0000, last: 0x7f_ffff_ffff },
/// ];
/// let mut iovas = IovaAllocator::new(&ranges, 28, 4096)?;
/// let a = iovas.alloc(10_000, 4096)?;
/// assert!(a + 12_288 <= 1 << 28);
/// iovas.free(a)?;
/// # Ok::<(), usrdrv::dma::IovaError>(())
/// ```
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    page_size: u64,
    mask_bits: u32,
    // INVARIANT: `free` maps each free extent's first address to its last
    // (inclusive); extents are page-aligned, disjoint, non-adjacent (coalesced),
    // and never overlap an extent in `allocated`.
    free: BTreeMap<u64, u64>,
    /// Allocated extents: first address to length in bytes.
    allocated: BTreeMap<u64, u64>,
    /// Where searches for a free range start; addresses below it are used
    /// once nothing above fits (0 until [`IovaAllocator::start_at_random_page`]).
    search_start: u64,
}

impl IovaAllocator {
    /// Builds an allocator over `ranges` limited to addresses below `2^mask_bits`.
    ///
    /// `page_size` is the IOMMU's smallest page (a power of two); every range
    /// handed out starts and ends on one.
    pub fn new(ranges: &[IovaRange], mask_bits: u32, page_size: u64) -> Result<Self, IovaError> {
        if !(1..=64).contains(&mask_bits) {
            return Err(IovaError::BadMask { bits: mask_bits });
        }
        if !page_size.is_power_of_two() {
            return Err(IovaError::BadAlignment { align: page_size });
        }
        let mask_last = u64::MAX >> (64 - mask_bits);
        let mut free = BTreeMap::new();
        for range in ranges {
            // Skip page 0; clip to the mask; shrink to whole pages.
            let start = range.start.max(page_size);
            let last = range.last.min(mask_last);
            let Some(start) = align_up(start, page_size) else {
                continue;
            };
            // `last + 1` rounded down to a page, minus one; 2^64 is page-aligned.
            let last = match last.checked_add(1) {
                Some(end) => match (end & !(page_size - 1)).checked_sub(1) {
                    Some(l) => l,
                    None => continue,
                },
                None => u64::MAX,
            };
            if start <= last {
                free.insert(start, last);
            }
        }
        let mut allocator = Self {
            page_size,
            mask_bits,
            free: BTreeMap::new(),
            allocated: BTreeMap::new(),
            search_start: 0,
        };
        // Insert through `release` so overlapping or touching input ranges merge.
        for (start, last) in free {
            allocator.release(start, last);
        }
        if allocator.free.is_empty() {
            return Err(IovaError::NoUsableSpace { mask_bits });
        }
        Ok(allocator)
    }

    /// The smallest unit handed out.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> u64 {
        self.free
            .iter()
            .map(|(start, last)| (last - start).saturating_add(1))
            .fold(0, u64::saturating_add)
    }

    /// Allocates `size` bytes (rounded up to whole pages) aligned to `align`
    /// (a power of two; at least a page is used). Returns the first address.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<u64, IovaError> {
        if size == 0 {
            return Err(IovaError::ZeroSize);
        }
        if !align.is_power_of_two() {
            return Err(IovaError::BadAlignment { align });
        }
        let align = align.max(self.page_size);
        let exhausted = IovaError::Exhausted {
            size: align_up(size, self.page_size).unwrap_or(u64::MAX),
            align,
            mask_bits: self.mask_bits,
            free: self.free_bytes(),
        };
        let Some(size) = align_up(size, self.page_size) else {
            return Err(exhausted);
        };
        let Some((start, last, first, end)) = self.fit(size, align) else {
            return Err(exhausted);
        };
        self.free.remove(&start);
        if start < first {
            self.free.insert(start, first - 1);
        }
        if end < last {
            self.free.insert(end + 1, last);
        }
        self.allocated.insert(first, size);
        Ok(first)
    }

    /// The first free range of `size` bytes aligned to `align` at or above the
    /// search start, else the first below it: `(extent start, extent last,
    /// first address, last address)`.
    fn fit(&self, size: u64, align: u64) -> Option<(u64, u64, u64, u64)> {
        let fits = |start: u64, last: u64, from: u64| {
            let first = align_up(start.max(from), align)?;
            let end = first.checked_add(size - 1)?;
            (end <= last).then_some((start, last, first, end))
        };
        let base = self.search_start;
        // The extent holding the search start, from there on.
        let holding = self
            .free
            .range(..=base)
            .next_back()
            .and_then(|(&start, &last)| fits(start, last, base));
        holding
            .or_else(|| {
                let above = base.checked_add(1)?;
                self.free
                    .range(above..)
                    .find_map(|(&start, &last)| fits(start, last, start))
            })
            .or_else(|| {
                self.free
                    .range(..=base)
                    .find_map(|(&start, &last)| fits(start, last, start))
            })
    }

    /// Starts later searches at a free page chosen by `random` (uniformly over
    /// the free pages when `random` is uniform) instead of the lowest one, and
    /// returns that page.
    ///
    /// usrdrv does this for every new IOMMU domain: a transfer a previous
    /// owner of the device left queued then targets an address the new owner
    /// has most likely not mapped, so the IOMMU stops it instead of letting it
    /// land in a new buffer. Allocation costs the same: one ordered lookup.
    ///
    /// ```
    /// use usrdrv::dma::{IovaAllocator, IovaRange};
    ///
    /// let ranges = [IovaRange { start: 0, last: (1 << 28) - 1 }];
    /// let mut iovas = IovaAllocator::new(&ranges, 28, 4096)?;
    /// let start = iovas.start_at_random_page(0x1234_5678_9abc);
    /// assert_eq!(iovas.alloc(4096, 4096)?, start);
    /// # Ok::<(), usrdrv::dma::IovaError>(())
    /// ```
    pub fn start_at_random_page(&mut self, random: u64) -> u64 {
        let pages = self.free_bytes() / self.page_size;
        let mut skip = random.checked_rem(pages).unwrap_or(0);
        for (&start, &last) in &self.free {
            let here = (last - start) / self.page_size + 1;
            if skip < here {
                self.search_start = start + skip * self.page_size;
                return self.search_start;
            }
            skip -= here;
        }
        self.search_start
    }

    /// Gives back the range that starts at `iova`; returns its length.
    pub fn free(&mut self, iova: u64) -> Result<u64, IovaError> {
        let size = self
            .allocated
            .remove(&iova)
            .ok_or(IovaError::NotAllocated { iova })?;
        self.release(iova, iova + (size - 1));
        Ok(size)
    }

    /// Returns `[start, last]` to the free set, merging with its neighbours.
    fn release(&mut self, mut start: u64, mut last: u64) {
        if let Some((&prev_start, &prev_last)) = self.free.range(..start).next_back()
            && prev_last.checked_add(1).is_some_and(|after| after >= start)
        {
            self.free.remove(&prev_start);
            start = prev_start;
            last = last.max(prev_last);
        }
        while let Some((&next_start, &next_last)) = self.free.range(start..).next() {
            if last.checked_add(1).is_none_or(|after| next_start > after) {
                break;
            }
            self.free.remove(&next_start);
            last = last.max(next_last);
        }
        self.free.insert(start, last);
    }
}

/// `value` rounded up to a multiple of `align` (a power of two), if it fits.
fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    /// The ranges VFIO reports in the usrdrv VM (x86, MSI window excluded).
    fn x86_ranges() -> [IovaRange; 2] {
        [
            IovaRange {
                start: 0,
                last: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                last: 0x7f_ffff_ffff,
            },
        ]
    }

    #[test]
    fn a_random_start_is_used_first_then_everything_else_before_exhaustion() {
        // 16 pages under a 16-bit mask, page 0 excluded: 15 usable.
        let mut a = IovaAllocator::new(&x86_ranges(), 16, PAGE).unwrap();
        let start = a.start_at_random_page(9);
        assert_eq!(start, 10 * PAGE, "the tenth free page after page 0");
        let mut got: Vec<u64> = std::iter::from_fn(|| a.alloc(PAGE, PAGE).ok()).collect();
        assert_eq!(got[0], start);
        assert_eq!(got[..6], [10, 11, 12, 13, 14, 15].map(|p| p * PAGE));
        assert_eq!(got[6], PAGE, "then from the bottom");
        got.sort_unstable();
        assert_eq!(got, (1..16).map(|p| p * PAGE).collect::<Vec<_>>());
        // A range that does not fit above the start comes from below it.
        let mut b = IovaAllocator::new(&x86_ranges(), 16, PAGE).unwrap();
        b.start_at_random_page(13);
        assert_eq!(b.alloc(4 * PAGE, PAGE).unwrap(), PAGE);
        assert_eq!(b.alloc(2 * PAGE, PAGE).unwrap(), 14 * PAGE);
    }

    #[test]
    fn random_starts_spread_over_the_space_and_stay_inside_it() {
        let mut seen = std::collections::HashSet::new();
        for random in (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let mut a = IovaAllocator::new(&x86_ranges(), 28, PAGE).unwrap();
            let start = a.start_at_random_page(random);
            assert!((PAGE..1 << 28).contains(&start), "{start:#x}");
            assert_eq!(a.alloc(PAGE, PAGE).unwrap(), start);
            seen.insert(start);
        }
        assert!(seen.len() > 990, "{} distinct starts of 1000", seen.len());
    }

    #[test]
    fn every_address_stays_under_a_small_mask_until_a_clean_exhaustion() {
        // 16 bits = 64 KiB = 16 pages, minus page 0: 15 allocations fit.
        let mut a = IovaAllocator::new(&x86_ranges(), 16, PAGE).unwrap();
        let mut got = Vec::new();
        loop {
            match a.alloc(PAGE, PAGE) {
                Ok(iova) => {
                    assert!(iova >= PAGE && iova + PAGE <= 1 << 16, "{iova:#x}");
                    got.push(iova);
                }
                Err(IovaError::Exhausted {
                    mask_bits: 16,
                    free: 0,
                    ..
                }) => break,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(got.len(), 15);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 15, "no address handed out twice");
    }

    #[test]
    fn the_msi_window_is_never_handed_out() {
        let mut a = IovaAllocator::new(&x86_ranges(), 39, PAGE).unwrap();
        // Fill the space below the window, then take more: nothing may overlap it.
        let below = a.alloc(0xfedf_f000, PAGE).unwrap();
        assert_eq!(below, PAGE);
        let next = a.alloc(PAGE, PAGE).unwrap();
        assert_eq!(next, 0xfef0_0000);
    }

    #[test]
    fn alignment_is_honoured_and_the_gap_stays_free() {
        let mut a = IovaAllocator::new(&x86_ranges(), 32, PAGE).unwrap();
        let huge = 2 << 20;
        let iova = a.alloc(huge, huge).unwrap();
        assert_eq!(iova % huge, 0);
        assert_eq!(iova, huge, "first 2 MiB-aligned address above page 0");
        // The pages skipped for alignment are still usable.
        assert_eq!(a.alloc(PAGE, PAGE).unwrap(), PAGE);
    }

    #[test]
    fn sizes_round_up_to_pages() {
        let mut a = IovaAllocator::new(&x86_ranges(), 32, PAGE).unwrap();
        let first = a.alloc(1, 1).unwrap();
        let second = a.alloc(PAGE + 1, 1).unwrap();
        assert_eq!(second - first, PAGE);
        assert_eq!(a.free(second).unwrap(), 2 * PAGE);
    }

    #[test]
    fn freed_space_is_reused_and_coalesced() {
        let mut a = IovaAllocator::new(
            &[IovaRange {
                start: 0,
                last: 5 * PAGE - 1,
            }],
            64,
            PAGE,
        )
        .unwrap();
        let x = a.alloc(PAGE, PAGE).unwrap();
        let y = a.alloc(PAGE, PAGE).unwrap();
        let z = a.alloc(2 * PAGE, PAGE).unwrap();
        assert!(matches!(
            a.alloc(PAGE, PAGE),
            Err(IovaError::Exhausted { .. })
        ));
        a.free(y).unwrap();
        assert_eq!(a.alloc(PAGE, PAGE).unwrap(), y, "reuse after free");
        a.free(x).unwrap();
        a.free(y).unwrap();
        a.free(z).unwrap();
        assert_eq!(a.free_bytes(), 4 * PAGE);
        assert_eq!(
            a.alloc(4 * PAGE, PAGE).unwrap(),
            PAGE,
            "neighbours merged back into one range"
        );
    }

    #[test]
    fn double_free_and_foreign_addresses_are_errors() {
        let mut a = IovaAllocator::new(&x86_ranges(), 32, PAGE).unwrap();
        let x = a.alloc(PAGE, PAGE).unwrap();
        a.free(x).unwrap();
        assert_eq!(a.free(x), Err(IovaError::NotAllocated { iova: x }));
        assert_eq!(
            a.free(0xdead_0000),
            Err(IovaError::NotAllocated { iova: 0xdead_0000 })
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert_eq!(
            IovaAllocator::new(&x86_ranges(), 0, PAGE).unwrap_err(),
            IovaError::BadMask { bits: 0 }
        );
        assert_eq!(
            IovaAllocator::new(&x86_ranges(), 65, PAGE).unwrap_err(),
            IovaError::BadMask { bits: 65 }
        );
        assert!(matches!(
            IovaAllocator::new(&x86_ranges(), 32, 3000),
            Err(IovaError::BadAlignment { .. })
        ));
        let mut a = IovaAllocator::new(&x86_ranges(), 32, PAGE).unwrap();
        assert_eq!(a.alloc(0, PAGE), Err(IovaError::ZeroSize));
        assert_eq!(a.alloc(PAGE, 3), Err(IovaError::BadAlignment { align: 3 }));
        assert!(matches!(
            a.alloc(u64::MAX, PAGE),
            Err(IovaError::Exhausted { .. })
        ));
        assert!(matches!(
            a.alloc(1 << 33, PAGE),
            Err(IovaError::Exhausted { .. })
        ));
    }

    #[test]
    fn no_overlap_between_ranges_and_mask_is_an_error() {
        let high = [IovaRange {
            start: 1 << 32,
            last: (1 << 40) - 1,
        }];
        assert_eq!(
            IovaAllocator::new(&high, 32, PAGE).unwrap_err(),
            IovaError::NoUsableSpace { mask_bits: 32 }
        );
        let page_zero_only = [IovaRange {
            start: 0,
            last: PAGE - 1,
        }];
        assert!(IovaAllocator::new(&page_zero_only, 64, PAGE).is_err());
        assert!(IovaAllocator::new(&[], 64, PAGE).is_err());
    }

    #[test]
    fn full_64_bit_space_does_not_overflow() {
        let all = [IovaRange {
            start: 0,
            last: u64::MAX,
        }];
        let mut a = IovaAllocator::new(&all, 64, PAGE).unwrap();
        assert_eq!(a.free_bytes(), u64::MAX - PAGE + 1);
        let big = a.alloc(1 << 63, 1 << 63).unwrap();
        assert_eq!(big, 1 << 63);
        a.free(big).unwrap();
        assert_eq!(a.free_bytes(), u64::MAX - PAGE + 1);
    }

    #[test]
    fn overlapping_input_ranges_merge() {
        let ranges = [
            IovaRange {
                start: 0,
                last: 8 * PAGE - 1,
            },
            IovaRange {
                start: 4 * PAGE,
                last: 12 * PAGE - 1,
            },
        ];
        let mut a = IovaAllocator::new(&ranges, 64, PAGE).unwrap();
        assert_eq!(a.free_bytes(), 11 * PAGE);
        assert_eq!(a.alloc(11 * PAGE, PAGE).unwrap(), PAGE);
    }

    #[test]
    fn random_alloc_free_keeps_the_invariants() {
        let mut a = IovaAllocator::new(&x86_ranges(), 24, PAGE).unwrap();
        let total = a.free_bytes();
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            if live.is_empty() || next() % 3 != 0 {
                let size = (next() % 64 + 1) * PAGE / 2;
                let align = PAGE << (next() % 4);
                if let Ok(iova) = a.alloc(size, align) {
                    let len = size.div_ceil(PAGE) * PAGE;
                    assert_eq!(iova % align, 0);
                    assert!(iova >= PAGE && iova + len <= 1 << 24);
                    for &(o, olen) in &live {
                        assert!(iova + len <= o || o + olen <= iova, "overlap");
                    }
                    live.push((iova, len));
                }
            } else {
                let idx = (next() % live.len() as u64) as usize;
                let (iova, len) = live.swap_remove(idx);
                assert_eq!(a.free(iova).unwrap(), len);
            }
            let used: u64 = live.iter().map(|(_, l)| l).sum();
            assert_eq!(a.free_bytes() + used, total);
        }
        for (iova, _) in live.drain(..) {
            a.free(iova).unwrap();
        }
        assert_eq!(a.free_bytes(), total);
        assert_eq!(a.free.len(), 1, "everything merged back into one extent");
    }
}
