//! Physical Region Page (PRP) entries: how an NVMe command names the memory
//! of its transfer (NVMe base specification, "Physical Region Page Entry and
//! List").
//!
//! A transfer is a run of memory pages. PRP1 names the first byte (any
//! 4-byte aligned offset into its page); every later page is named by its
//! page-aligned address. Two pages fit in PRP1 and PRP2; more go in a PRP
//! list that PRP2 points to. A list page holds `page / 8` entries; when more
//! are needed its last entry points to the next list page (a chained list).

use usrdrv::dma::SgEntry;

/// Why a transfer cannot be described with PRPs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrpError {
    /// The transfer is empty.
    #[error("an empty transfer has no PRP entries")]
    Empty,
    /// The first byte is not 4-byte aligned (PRP offsets are dword aligned).
    #[error("the transfer starts at device address {addr:#x}, which is not 4-byte aligned")]
    Unaligned {
        /// The first device address.
        addr: u64,
    },
    /// A scatter-gather entry other than the first starts inside a page, or
    /// one other than the last ends inside one: PRPs cannot express the gap.
    #[error(
        "scatter-gather entry {index} ({addr:#x}, {len} bytes) does not start or end on a {page}-byte page boundary where PRPs need one: use page-aligned buffers (or SGLs)"
    )]
    Gap {
        /// The entry's index.
        index: usize,
        /// Its device address.
        addr: u64,
        /// Its length.
        len: usize,
        /// The page size.
        page: u64,
    },
    /// More list pages are needed than were provided.
    #[error("the transfer needs {needed} PRP list pages; {available} are available")]
    ListTooShort {
        /// List pages needed.
        needed: usize,
        /// List pages given.
        available: usize,
    },
}

/// PRP1 and PRP2 of a command, and the list pages to write before it is
/// submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prps {
    /// The first PRP entry: the transfer's first byte.
    pub prp1: u64,
    /// The second page, the first list page, or 0.
    pub prp2: u64,
    /// What each list page used must hold, in order (entry `i` of a page at
    /// byte `8 * i`); empty without a list.
    pub lists: Vec<ListPage>,
}

/// One PRP list page's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The device address of the list page.
    pub device_addr: u64,
    /// Its entries: page addresses, and, last, the next list page's address
    /// when the list goes on.
    pub entries: Vec<u64>,
}

/// The device addresses of the pages a transfer described by `segments`
/// touches (the first with its offset), checking PRPs can describe it.
pub fn pages(segments: &[SgEntry], page: u64) -> Result<Vec<u64>, PrpError> {
    let total: usize = segments.iter().map(|s| s.len).sum();
    let first = segments
        .first()
        .filter(|_| total > 0)
        .ok_or(PrpError::Empty)?;
    if !first.device_addr.is_multiple_of(4) {
        return Err(PrpError::Unaligned {
            addr: first.device_addr,
        });
    }
    let mask = page - 1;
    let mut out = Vec::new();
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        let gap = PrpError::Gap {
            index,
            addr: segment.device_addr,
            len: segment.len,
            page,
        };
        let end = segment.device_addr + segment.len as u64;
        if (index > 0 && segment.device_addr & mask != 0) || (index < last && end & mask != 0) {
            return Err(gap);
        }
        if segment.len == 0 {
            continue;
        }
        out.push(segment.device_addr);
        let mut next = (segment.device_addr & !mask) + page;
        while next < end {
            out.push(next);
            next += page;
        }
    }
    Ok(out)
}

/// The runs of device addresses of bytes `offset..offset + len` of a buffer
/// whose bytes lie in `segments`, in order (fewer bytes if it has fewer).
pub fn window(segments: &[SgEntry], offset: usize, len: usize) -> Vec<SgEntry> {
    let mut skip = offset;
    let mut left = len;
    let mut out = Vec::new();
    for segment in segments {
        if left == 0 {
            break;
        }
        if skip >= segment.len {
            skip -= segment.len;
            continue;
        }
        let take = (segment.len - skip).min(left);
        out.push(SgEntry {
            device_addr: segment.device_addr + skip as u64,
            len: take,
        });
        left -= take;
        skip = 0;
    }
    out
}

/// PRP1 and PRP2 of a transfer of `len` bytes from `first_byte` (one run of
/// device addresses) that touches at most two pages, computed without
/// building anything: what [`pages`] and [`build`] give for it. `None` when
/// it needs a list, is empty, or starts off a dword boundary (then [`pages`]
/// says why).
pub fn direct(first_byte: u64, len: usize, page: u64) -> Option<(u64, u64)> {
    if len == 0 || !first_byte.is_multiple_of(4) {
        return None;
    }
    let second = (first_byte & !(page - 1)) + page;
    let end = first_byte.checked_add(len as u64)?;
    if end <= second {
        Some((first_byte, 0))
    } else if end <= second + page {
        Some((first_byte, second))
    } else {
        None
    }
}

/// The PRP entries for `pages` (from [`pages`]), using list pages at the
/// device addresses in `list_pages` as needed.
pub fn build(pages: &[u64], page: u64, list_pages: &[u64]) -> Result<Prps, PrpError> {
    let (&prp1, rest) = pages.split_first().ok_or(PrpError::Empty)?;
    match rest {
        [] => Ok(Prps {
            prp1,
            prp2: 0,
            lists: Vec::new(),
        }),
        [second] => Ok(Prps {
            prp1,
            prp2: *second,
            lists: Vec::new(),
        }),
        _ => {
            let per_page = usize::try_from(page / 8).unwrap_or(usize::MAX);
            let needed = list_pages_needed(rest.len(), per_page);
            if needed > list_pages.len() {
                return Err(PrpError::ListTooShort {
                    needed,
                    available: list_pages.len(),
                });
            }
            let mut lists = Vec::with_capacity(needed);
            let mut left = rest;
            for (i, &device_addr) in list_pages[..needed].iter().enumerate() {
                let chained = i + 1 < needed;
                let take = if chained { per_page - 1 } else { left.len() };
                let mut entries = left[..take].to_vec();
                left = &left[take..];
                if chained {
                    entries.push(list_pages[i + 1]);
                }
                lists.push(ListPage {
                    device_addr,
                    entries,
                });
            }
            Ok(Prps {
                prp1,
                prp2: list_pages[0],
                lists,
            })
        }
    }
}

/// List pages needed for `entries` page addresses with `per_page` entries a
/// page (the last entry of each page but the final one chains to the next).
pub fn list_pages_needed(entries: usize, per_page: usize) -> usize {
    if entries <= per_page {
        1
    } else {
        1 + (entries - per_page).div_ceil(per_page - 1)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_window_cuts_the_runs_it_spans() {
        let runs = [
            SgEntry {
                device_addr: 0x1_0f00,
                len: 0x100,
            },
            SgEntry {
                device_addr: 0x5_0000,
                len: 0x1000,
            },
            SgEntry {
                device_addr: 0x9_0000,
                len: 0x800,
            },
        ];
        let entry = |device_addr, len| SgEntry { device_addr, len };
        assert_eq!(window(&runs, 0, 0x100), [entry(0x1_0f00, 0x100)]);
        assert_eq!(
            window(&runs, 0x80, 0x1100),
            [
                entry(0x1_0f80, 0x80),
                entry(0x5_0000, 0x1000),
                entry(0x9_0000, 0x80)
            ]
        );
        assert_eq!(window(&runs, 0x1100, 0x10), [entry(0x9_0000, 0x10)]);
        assert_eq!(window(&runs, 0x1900, 0x10), []);
        assert_eq!(window(&runs, 0, 0), []);
    }

    #[test]
    fn direct_prps_agree_with_the_general_builder_up_to_two_pages() {
        let page = 4096u64;
        for first in [0x10_0000u64, 0x10_0004, 0x10_0200, 0x10_0ffc] {
            for len in [4usize, 512, 4092, 4096, 4100, 8192 - 4, 8192, 12288] {
                let segments = [SgEntry {
                    device_addr: first,
                    len,
                }];
                let general = pages(&segments, page).and_then(|p| build(&p, page, &[0xdead_0000]));
                match direct(first, len, page) {
                    Some((prp1, prp2)) => {
                        let general = general.expect("the builder agrees it is possible");
                        assert_eq!(
                            (prp1, prp2),
                            (general.prp1, general.prp2),
                            "{first:#x}+{len}"
                        );
                        assert!(general.lists.is_empty(), "{first:#x}+{len}");
                    }
                    None => assert!(
                        general.is_err() || !general.expect("built").lists.is_empty(),
                        "{first:#x}+{len} needs a list"
                    ),
                }
            }
        }
        assert_eq!(direct(0x1000, 0, page), None);
        assert_eq!(direct(0x1002, 8, page), None);
    }

    use super::*;

    const PAGE: u64 = 4096;

    fn one(addr: u64, len: usize) -> Vec<SgEntry> {
        vec![SgEntry {
            device_addr: addr,
            len,
        }]
    }

    #[test]
    fn one_page_needs_only_prp1() {
        let p = pages(&one(0x10_0200, 512), PAGE).unwrap();
        assert_eq!(p, [0x10_0200]);
        let prps = build(&p, PAGE, &[]).unwrap();
        assert_eq!((prps.prp1, prps.prp2), (0x10_0200, 0));
        assert!(prps.lists.is_empty());
    }

    #[test]
    fn an_unaligned_start_crossing_a_page_needs_prp2() {
        let p = pages(&one(0x10_0e00, 1024), PAGE).unwrap();
        assert_eq!(p, [0x10_0e00, 0x10_1000]);
        let prps = build(&p, PAGE, &[]).unwrap();
        assert_eq!((prps.prp1, prps.prp2), (0x10_0e00, 0x10_1000));
    }

    #[test]
    fn three_pages_go_through_a_list() {
        let p = pages(&one(0x20_0000, 3 * 4096), PAGE).unwrap();
        let prps = build(&p, PAGE, &[0x9000]).unwrap();
        assert_eq!((prps.prp1, prps.prp2), (0x20_0000, 0x9000));
        assert_eq!(
            prps.lists,
            [ListPage {
                device_addr: 0x9000,
                entries: vec![0x20_1000, 0x20_2000]
            }]
        );
    }

    #[test]
    fn a_long_transfer_chains_list_pages() {
        // PRP1, then 1024 pages: 511 and a chain entry on the first list
        // page, 511 and a chain entry on the second, 2 on the third.
        let count = 1 + 1024;
        let p = pages(&one(0x100_0000, count * 4096), PAGE).unwrap();
        assert_eq!(p.len(), count);
        assert_eq!(list_pages_needed(count - 1, 512), 3);
        let prps = build(&p, PAGE, &[0xa000, 0xb000, 0xc000, 0xd000]).unwrap();
        assert_eq!(prps.prp2, 0xa000);
        assert_eq!(prps.lists.len(), 3);
        assert_eq!(prps.lists[0].entries.len(), 512);
        assert_eq!(prps.lists[0].entries[511], 0xb000, "chain entry");
        assert_eq!(prps.lists[1].entries[511], 0xc000, "chain entry");
        assert_eq!(prps.lists[2].entries, p[count - 2..]);
        // Every page appears once, in order, outside the chain entries.
        let listed: Vec<u64> = prps
            .lists
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let n = if i + 1 < prps.lists.len() {
                    l.entries.len() - 1
                } else {
                    l.entries.len()
                };
                l.entries[..n].to_vec()
            })
            .collect();
        assert_eq!(listed, p[1..]);
        // Exactly 512 entries fit one page; 1023 fit two.
        assert_eq!(list_pages_needed(512, 512), 1);
        assert_eq!(list_pages_needed(513, 512), 2);
        assert_eq!(list_pages_needed(1023, 512), 2);
    }

    #[test]
    fn too_few_list_pages_is_an_error() {
        let p = pages(&one(0, 3 * 4096), PAGE).unwrap();
        assert_eq!(
            build(&p, PAGE, &[]),
            Err(PrpError::ListTooShort {
                needed: 1,
                available: 0
            })
        );
    }

    #[test]
    fn scatter_gather_lists_need_page_boundaries_between_entries() {
        let ok = [
            SgEntry {
                device_addr: 0x1_0800,
                len: 0x800,
            },
            SgEntry {
                device_addr: 0x5_0000,
                len: 0x1800,
            },
        ];
        assert_eq!(pages(&ok, PAGE).unwrap(), [0x1_0800, 0x5_0000, 0x5_1000]);
        let gap = [
            SgEntry {
                device_addr: 0x1_0000,
                len: 0x800,
            },
            SgEntry {
                device_addr: 0x5_0000,
                len: 0x800,
            },
        ];
        assert!(matches!(
            pages(&gap, PAGE),
            Err(PrpError::Gap { index: 0, .. })
        ));
        let inside = [
            SgEntry {
                device_addr: 0x1_0000,
                len: 0x1000,
            },
            SgEntry {
                device_addr: 0x5_0200,
                len: 0x800,
            },
        ];
        assert!(matches!(
            pages(&inside, PAGE),
            Err(PrpError::Gap { index: 1, .. })
        ));
        assert_eq!(
            pages(&one(0x1002, 8), PAGE),
            Err(PrpError::Unaligned { addr: 0x1002 })
        );
        assert_eq!(pages(&[], PAGE), Err(PrpError::Empty));
    }
}
