//! What the Type1 IOMMU says about a container: page sizes, usable IOVA ranges
//! and how many more DMA mappings it allows. Parsed from the bytes of
//! `VFIO_IOMMU_GET_INFO` and its capability chain.

use vfio_bindings::bindings::vfio::{
    VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
};

use super::cap_chain::{self, read_u32, read_u64};
use crate::dma::IovaRange;

/// The IOMMU's properties for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuInfo {
    /// Bitmap of supported IOMMU page sizes (bit n set: 2^n bytes).
    pub page_sizes: u64,
    /// The device addresses the IOMMU can translate (holes such as the MSI
    /// window left out). The whole 64-bit space when the kernel is too old to say.
    pub iova_ranges: Vec<IovaRange>,
    /// How many more DMA mappings the container accepts, when the kernel says.
    pub mappings_available: Option<u32>,
}

impl IommuInfo {
    /// The smallest IOMMU page size (4 KiB when the kernel does not say).
    pub fn min_page_size(&self) -> u64 {
        if self.page_sizes == 0 {
            4096
        } else {
            1 << self.page_sizes.trailing_zeros()
        }
    }
}

/// Parses `struct vfio_iommu_type1_info` and its capability chain.
///
/// Returns a description of the problem when the bytes are not what the UAPI
/// header documents (truncated, a looping chain, ranges past the buffer).
pub(crate) fn parse(bytes: &[u8]) -> Result<IommuInfo, String> {
    let flags = read_u32(bytes, 4).ok_or("the info structure is truncated")?;
    let page_sizes = if flags & VFIO_IOMMU_INFO_PGSIZES != 0 {
        read_u64(bytes, 8).ok_or("the page-size field is truncated")?
    } else {
        0
    };
    let mut info = IommuInfo {
        page_sizes,
        iova_ranges: Vec::new(),
        mappings_available: None,
    };
    let mut saw_ranges = false;
    let next = if flags & VFIO_IOMMU_INFO_CAPS != 0 {
        read_u32(bytes, 16).ok_or("the capability offset is truncated")? as usize
    } else {
        0
    };
    for (id, at) in cap_chain::walk(bytes, next)? {
        match id {
            VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                saw_ranges = true;
                let count = read_u32(bytes, at + 8).ok_or("the IOVA range count is truncated")?;
                for i in 0..count as usize {
                    let entry = at + 16 + i * 16;
                    let (Some(start), Some(last)) =
                        (read_u64(bytes, entry), read_u64(bytes, entry + 8))
                    else {
                        return Err(format!("IOVA range {i} of {count} is past the buffer"));
                    };
                    if start > last {
                        return Err(format!(
                            "IOVA range {i} ends ({last:#x}) before it starts ({start:#x})"
                        ));
                    }
                    info.iova_ranges.push(IovaRange { start, last });
                }
            }
            VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
                info.mappings_available =
                    Some(read_u32(bytes, at + 8).ok_or("the DMA-available count is truncated")?);
            }
            // Migration and later capabilities do not concern us.
            _ => {}
        }
    }
    if !saw_ranges {
        info.iova_ranges.push(IovaRange {
            start: 0,
            last: u64::MAX,
        });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the bytes the kernel returns: header, then capabilities in order.
    fn info_bytes(page_sizes: u64, ranges: &[(u64, u64)], avail: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes()); // argsz, patched below
        b.extend_from_slice(&(VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS).to_ne_bytes());
        b.extend_from_slice(&page_sizes.to_ne_bytes());
        b.extend_from_slice(&24u32.to_ne_bytes()); // cap_offset
        b.extend_from_slice(&0u32.to_ne_bytes()); // pad
        let ranges_len = 16 + 16 * ranges.len();
        let next = if avail.is_some() {
            24 + ranges_len as u32
        } else {
            0
        };
        b.extend_from_slice(&(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16).to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&next.to_ne_bytes());
        b.extend_from_slice(&(ranges.len() as u32).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        for (start, end) in ranges {
            b.extend_from_slice(&start.to_ne_bytes());
            b.extend_from_slice(&end.to_ne_bytes());
        }
        if let Some(avail) = avail {
            b.extend_from_slice(&(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16).to_ne_bytes());
            b.extend_from_slice(&1u16.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&avail.to_ne_bytes());
        }
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_ne_bytes());
        b
    }

    #[test]
    fn parses_what_the_vm_reports() {
        let bytes = info_bytes(
            0x4020_1000,
            &[(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)],
            Some(65535),
        );
        let info = parse(&bytes).unwrap();
        assert_eq!(info.page_sizes, 0x4020_1000);
        assert_eq!(info.min_page_size(), 4096);
        assert_eq!(
            info.iova_ranges,
            vec![
                IovaRange {
                    start: 0,
                    last: 0xfedf_ffff
                },
                IovaRange {
                    start: 0xfef0_0000,
                    last: 0x7f_ffff_ffff
                }
            ]
        );
        assert_eq!(info.mappings_available, Some(65535));
    }

    #[test]
    fn no_capabilities_means_the_whole_space() {
        let mut bytes = info_bytes(0x1000, &[], None);
        bytes[4..8].copy_from_slice(&VFIO_IOMMU_INFO_PGSIZES.to_ne_bytes());
        let info = parse(&bytes[..24]).unwrap();
        assert_eq!(
            info.iova_ranges,
            vec![IovaRange {
                start: 0,
                last: u64::MAX
            }]
        );
        assert_eq!(info.mappings_available, None);
    }

    #[test]
    fn corrupt_chains_are_errors_not_panics() {
        let good = info_bytes(0x1000, &[(0, 0xffff_ffff)], Some(7));
        for cut in 0..good.len() {
            // Every truncation either parses (the cut fell after what is read) or fails cleanly.
            let _ = parse(&good[..cut]);
        }
        assert!(parse(&good[..20]).is_err());
        assert!(parse(&good[..40]).unwrap_err().contains("past the buffer"));

        let mut looping = good.clone();
        looping[28..32].copy_from_slice(&24u32.to_ne_bytes()); // first cap's next -> itself
        assert!(parse(&looping).unwrap_err().contains("loops"));

        let backwards = info_bytes(0x1000, &[(0x2000, 0x1000)], None);
        assert!(parse(&backwards).unwrap_err().contains("before it starts"));
    }
}
