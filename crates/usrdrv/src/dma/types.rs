//! Small value types of the DMA API: masks, directions, scatter-gather entries.

use std::fmt;

use super::DmaError;

/// How many address bits a device can drive: every device address usrdrv hands
/// it is below `2^bits`.
///
/// ```
/// use usrdrv::dma::DmaMask;
///
/// let edu = DmaMask::new(28)?;
/// assert_eq!(edu.limit(), 0x0fff_ffff);
/// assert!(DmaMask::new(0).is_err());
/// # Ok::<(), usrdrv::dma::DmaError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DmaMask(u32);

impl DmaMask {
    /// A mask of `bits` bits, `1..=64`.
    pub fn new(bits: u32) -> Result<Self, DmaError> {
        if (1..=64).contains(&bits) {
            Ok(Self(bits))
        } else {
            Err(DmaError::BadMask { bits })
        }
    }

    /// The full 64-bit mask.
    pub const BITS_64: Self = Self(64);

    /// The 32-bit mask of many older devices.
    pub const BITS_32: Self = Self(32);

    /// The number of bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The highest address the device can reach.
    pub fn limit(self) -> u64 {
        u64::MAX >> (64 - self.0)
    }
}

/// Which way data moves: decides the IOMMU permissions of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The device reads the memory (e.g. a packet to transmit).
    ToDevice,
    /// The device writes the memory (e.g. a block read from disk).
    FromDevice,
    /// The device reads and writes it.
    Bidirectional,
}

impl Direction {
    /// Whether the device may read the memory.
    pub fn device_reads(self) -> bool {
        matches!(self, Self::ToDevice | Self::Bidirectional)
    }

    /// Whether the device may write the memory.
    pub fn device_writes(self) -> bool {
        matches!(self, Self::FromDevice | Self::Bidirectional)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ToDevice => "to the device",
            Self::FromDevice => "from the device",
            Self::Bidirectional => "bidirectionally",
        })
    }
}

/// One scatter-gather entry: a run of bytes contiguous in device address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SgEntry {
    /// The device address of the first byte.
    pub device_addr: u64,
    /// The number of bytes.
    pub len: usize,
}

/// What memory backs a DMA buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backing {
    /// Ordinary 4 KiB pages.
    Anonymous,
    /// 2 MiB hugepages (fewer IOMMU entries and TLB misses).
    HugePages2M,
    /// Coherent memory a kernel driver allocated below the DMA mask
    /// (the usrdma backend), physically contiguous.
    Coherent,
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Anonymous => "4 KiB pages",
            Self::HugePages2M => "2 MiB hugepages",
            Self::Coherent => "kernel coherent memory",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_limits() {
        assert_eq!(DmaMask::new(1).unwrap().limit(), 1);
        assert_eq!(DmaMask::new(28).unwrap().limit(), (1 << 28) - 1);
        assert_eq!(DmaMask::BITS_32.limit(), u64::from(u32::MAX));
        assert_eq!(DmaMask::BITS_64.limit(), u64::MAX);
        assert!(matches!(
            DmaMask::new(65),
            Err(DmaError::BadMask { bits: 65 })
        ));
    }

    #[test]
    fn directions_give_permissions() {
        assert!(Direction::ToDevice.device_reads() && !Direction::ToDevice.device_writes());
        assert!(!Direction::FromDevice.device_reads() && Direction::FromDevice.device_writes());
        assert!(
            Direction::Bidirectional.device_reads() && Direction::Bidirectional.device_writes()
        );
    }
}
