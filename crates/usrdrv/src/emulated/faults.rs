//! Faults: the ones a test injects (the plan), the ones the model caused
//! (DMA the IOMMU refused), and what was left allocated (leaks).

use std::fmt;
use std::time::Duration;

/// A DMA access by the device model that the emulated IOMMU refused. The
/// access did not happen: nothing was read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmaFault {
    /// Nothing is mapped at (some of) the addresses: never mapped, unmapped
    /// already, or the device was revoked or closed (its mappings are gone).
    #[error("DMA {} {len} bytes at {addr:#x}: not mapped", if *.write { "write of" } else { "read of" })]
    NotMapped {
        /// The first device address of the access.
        addr: u64,
        /// Its length in bytes.
        len: usize,
        /// Whether it was a write (device to memory).
        write: bool,
    },
    /// A write to memory mapped for the device to read only.
    #[error("DMA write of {len} bytes at {addr:#x}: mapped read-only for the device")]
    ReadOnly {
        /// The first device address of the access.
        addr: u64,
        /// Its length in bytes.
        len: usize,
    },
    /// An access to a mapped page of the caller's memory, outside the bytes
    /// the driver mapped (the rest of the page holds other data of the
    /// process). A real IOMMU maps whole pages and would let it through; the
    /// emulated one refuses it, since it is a driver bug (a wrong length or
    /// offset) that hardware would silently turn into corruption.
    #[error("DMA {} {len} bytes at {addr:#x}: outside the mapped buffer, in its page", if *.write { "write of" } else { "read of" })]
    OutsideBuffer {
        /// The first device address of the access.
        addr: u64,
        /// Its length in bytes.
        len: usize,
        /// Whether it was a write.
        write: bool,
    },
    /// DMA while bus mastering was off: a real bus drops it (a master abort).
    #[error("DMA {} {len} bytes at {addr:#x} with bus mastering off", if *.write { "write of" } else { "read of" })]
    NoBusMaster {
        /// The first device address of the access.
        addr: u64,
        /// Its length in bytes.
        len: usize,
        /// Whether it was a write.
        write: bool,
    },
}

/// The DMA operations a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaOp {
    /// Allocating DMA memory (`alloc_dma`, pools, named buffers).
    Alloc,
    /// Mapping the caller's memory (`map_dma`, `with_dma`).
    Map,
    /// Unmapping it, as a kernel refusing the unmap would: the mapping stays
    /// (the device can still reach the memory), so usrdrv leaks an owned
    /// buffer instead of returning it, and aborts the process rather than end
    /// the borrow of a lent one (`with_dma`). The leak check then reports
    /// the mapping.
    Unmap,
}

/// What a test asked to go wrong, and how much of it is left.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    /// Revoke when the operation counter reaches this.
    pub(crate) revoke_at: Option<u64>,
    /// `(operation, how many more of it succeed first, errno)`.
    pub(crate) failures: Vec<(DmaOp, u32, i32)>,
    /// Interrupts still to lose.
    pub(crate) drop_interrupts: u32,
    /// Interrupts still to deliver twice.
    pub(crate) duplicate_interrupts: u32,
    /// How late every interrupt arrives.
    pub(crate) interrupt_delay: Duration,
    /// How long every DMA access of the model takes.
    pub(crate) dma_delay: Duration,
    /// DMA writes still to corrupt.
    pub(crate) corrupt_writes: u32,
}

impl FaultPlan {
    /// The errno `op` must fail with now, if the plan says so.
    pub(crate) fn failure(&mut self, op: DmaOp) -> Option<i32> {
        let at = self.failures.iter().position(|(o, _, _)| *o == op)?;
        let (_, before, errno) = &mut self.failures[at];
        if *before > 0 {
            *before -= 1;
            return None;
        }
        let errno = *errno;
        self.failures.remove(at);
        Some(errno)
    }
}

/// What a [`Leak`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeakKind {
    /// DMA memory (a buffer, a pool, a named buffer) never freed.
    Buffer,
    /// The caller's memory mapped for DMA and never unmapped.
    Mapping,
}

/// Something a driver left behind: still reachable by the device when the
/// emulated device was finished or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// What it is.
    pub kind: LeakKind,
    /// Its device address.
    pub device_addr: u64,
    /// The bytes the device can reach.
    pub len: u64,
    /// Which open of the device made it (1 for the first).
    pub open: u32,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            LeakKind::Buffer => "DMA buffer never freed",
            LeakKind::Mapping => "mapping never unmapped",
        };
        write!(
            f,
            "{what}: {} bytes at device address {:#x} (open #{})",
            self.len, self.device_addr, self.open
        )
    }
}

/// What the end-of-test check found: leaks, and device addresses handed out
/// beyond the declared DMA mask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LeakReport {
    /// What was left allocated or mapped.
    pub leaks: Vec<Leak>,
    /// Device addresses (and lengths) handed out that did not fit the mask.
    pub outside_mask: Vec<(u64, u64)>,
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the driver left {} leak(s) and {} address(es) outside the DMA mask",
            self.leaks.len(),
            self.outside_mask.len()
        )?;
        for leak in &self.leaks {
            write!(f, "\n  {leak}")?;
        }
        for (addr, len) in &self.outside_mask {
            write!(f, "\n  {len} bytes at {addr:#x}: beyond the mask")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_waits_for_its_turn_and_fires_once() {
        let mut plan = FaultPlan::default();
        plan.failures.push((DmaOp::Map, 2, libc::ENOMEM));
        plan.failures.push((DmaOp::Alloc, 0, libc::EPERM));
        assert_eq!(plan.failure(DmaOp::Alloc), Some(libc::EPERM));
        assert_eq!(plan.failure(DmaOp::Alloc), None);
        assert_eq!(plan.failure(DmaOp::Map), None);
        assert_eq!(plan.failure(DmaOp::Map), None);
        assert_eq!(plan.failure(DmaOp::Map), Some(libc::ENOMEM));
        assert_eq!(plan.failure(DmaOp::Map), None);
    }

    #[test]
    fn reports_name_what_leaked() {
        let report = LeakReport {
            leaks: vec![Leak {
                kind: LeakKind::Mapping,
                device_addr: 0x10_0000,
                len: 4096,
                open: 2,
            }],
            outside_mask: vec![],
        };
        let text = report.to_string();
        assert!(text.contains("mapping never unmapped"), "{text}");
        assert!(
            text.contains("0x100000") && text.contains("open #2"),
            "{text}"
        );
    }
}
