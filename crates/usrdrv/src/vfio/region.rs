//! What `VFIO_DEVICE_GET_REGION_INFO` says about a region, parsed from its
//! bytes and capability chain: the header fields, and the sparse-mmap areas
//! when the kernel allows only parts of the region to be mapped.

use std::ops::Range;

use vfio_bindings::bindings::vfio::{VFIO_REGION_INFO_CAP_SPARSE_MMAP, VFIO_REGION_INFO_FLAG_CAPS};

use super::cap_chain::{self, read_u32, read_u64};

/// The parsed answer for one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Region {
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub(crate) flags: u32,
    /// The region index.
    pub(crate) index: u32,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Where it lives in the device file.
    pub(crate) offset: u64,
    /// The parts that may be mapped, as offset ranges in the region, when the
    /// kernel lists them (`None`: all of it, if the region is mappable at all).
    pub(crate) sparse: Option<Vec<Range<u64>>>,
}

/// Parses `struct vfio_region_info` and its capability chain.
///
/// Returns a description of the problem when the bytes are not what the UAPI
/// header documents (truncated, a looping chain, areas past the buffer).
pub(crate) fn parse(bytes: &[u8]) -> Result<Region, String> {
    let truncated = "the region info structure is truncated";
    let flags = read_u32(bytes, 4).ok_or(truncated)?;
    let mut region = Region {
        flags,
        index: read_u32(bytes, 8).ok_or(truncated)?,
        size: read_u64(bytes, 16).ok_or(truncated)?,
        offset: read_u64(bytes, 24).ok_or(truncated)?,
        sparse: None,
    };
    let next = if flags & VFIO_REGION_INFO_FLAG_CAPS != 0 {
        read_u32(bytes, 12).ok_or(truncated)? as usize
    } else {
        0
    };
    for (id, at) in cap_chain::walk(bytes, next)? {
        if id != VFIO_REGION_INFO_CAP_SPARSE_MMAP {
            // Region types, MSI-X mappability and the like do not concern us.
            continue;
        }
        let count = read_u32(bytes, at + 8).ok_or("the sparse-mmap area count is truncated")?;
        let mut areas = Vec::new();
        for i in 0..count as usize {
            let entry = at + 16 + i * 16;
            let (Some(start), Some(size)) = (read_u64(bytes, entry), read_u64(bytes, entry + 8))
            else {
                return Err(format!(
                    "sparse-mmap area {i} of {count} is past the buffer"
                ));
            };
            let end = start
                .checked_add(size)
                .filter(|end| *end <= region.size)
                .ok_or_else(|| {
                    format!(
                        "sparse-mmap area {i} ({size:#x} bytes at {start:#x}) is outside the {:#x}-byte region",
                        region.size
                    )
                })?;
            if size != 0 {
                areas.push(start..end);
            }
        }
        region.sparse = Some(areas);
    }
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the kernel returns for a region of `size` bytes, with a
    /// sparse-mmap capability listing `areas` (after an unrelated one) if given.
    fn region_bytes(size: u64, areas: Option<&[(u64, u64)]>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes()); // argsz, patched below
        let flags = if areas.is_some() {
            VFIO_REGION_INFO_FLAG_CAPS | 0x7
        } else {
            0x7
        };
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&2u32.to_ne_bytes()); // index
        b.extend_from_slice(&(if areas.is_some() { 32u32 } else { 0 }).to_ne_bytes());
        b.extend_from_slice(&size.to_ne_bytes());
        b.extend_from_slice(&(2u64 << 40).to_ne_bytes());
        if let Some(areas) = areas {
            // An MSI-X-mappable capability (id 3), header only, then the areas.
            b.extend_from_slice(&3u16.to_ne_bytes());
            b.extend_from_slice(&1u16.to_ne_bytes());
            b.extend_from_slice(&40u32.to_ne_bytes());
            b.extend_from_slice(&(VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16).to_ne_bytes());
            b.extend_from_slice(&1u16.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&(areas.len() as u32).to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            for (offset, size) in areas {
                b.extend_from_slice(&offset.to_ne_bytes());
                b.extend_from_slice(&size.to_ne_bytes());
            }
        }
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_ne_bytes());
        b
    }

    #[test]
    fn a_region_without_capabilities_is_mapped_whole() {
        let region = parse(&region_bytes(1 << 20, None)).unwrap();
        assert_eq!(region.index, 2);
        assert_eq!(region.size, 1 << 20);
        assert_eq!(region.offset, 2 << 40);
        assert_eq!(region.flags & 0x7, 0x7);
        assert_eq!(region.sparse, None);
    }

    #[test]
    fn sparse_areas_are_listed_and_empty_ones_dropped() {
        // The usual shape: everything but the page holding the MSI-X table.
        let areas = [(0, 0x2000), (0x3000, 0), (0x3000, 0xd000)];
        let region = parse(&region_bytes(0x10000, Some(&areas))).unwrap();
        assert_eq!(region.sparse, Some(vec![0..0x2000, 0x3000..0x10000]));
        let none = parse(&region_bytes(0x10000, Some(&[]))).unwrap();
        assert_eq!(none.sparse, Some(vec![]), "listed, but nothing mappable");
    }

    #[test]
    fn bad_chains_and_areas_are_errors() {
        let bytes = region_bytes(0x10000, Some(&[(0x8000, 0x9000)]));
        assert!(parse(&bytes).unwrap_err().contains("outside"));
        let bytes = region_bytes(0x10000, Some(&[(0, 0x1000), (0x1000, 0x1000)]));
        assert!(
            parse(&bytes[..bytes.len() - 8])
                .unwrap_err()
                .contains("past the buffer")
        );
        let mut looping = region_bytes(0x10000, Some(&[]));
        looping[36..40].copy_from_slice(&32u32.to_ne_bytes());
        assert!(parse(&looping).unwrap_err().contains("loops"));
        assert!(parse(&[0u8; 20]).unwrap_err().contains("truncated"));
    }
}
