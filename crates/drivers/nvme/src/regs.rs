//! The NVMe controller registers (BAR 0; NVMe base specification,
//! "Controller Registers"), as offsets and typed values.

/// Controller Capabilities (64-bit, read-only).
pub const CAP: u64 = 0x00;
/// Version.
pub const VS: u64 = 0x08;
/// Interrupt Mask Set.
pub const INTMS: u64 = 0x0c;
/// Controller Configuration.
pub const CC: u64 = 0x14;
/// Controller Status.
pub const CSTS: u64 = 0x1c;
/// Admin Queue Attributes.
pub const AQA: u64 = 0x24;
/// Admin Submission Queue base address (64-bit).
pub const ASQ: u64 = 0x28;
/// Admin Completion Queue base address (64-bit).
pub const ACQ: u64 = 0x30;
/// Where the doorbells start.
pub const DOORBELLS: u64 = 0x1000;

/// CAP, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// The largest queue the controller takes, in entries (MQES + 1).
    pub fn max_queue_entries(self) -> u32 {
        (self.0 & 0xffff) as u32 + 1
    }

    /// How long the controller may take to become ready or not ready:
    /// CAP.TO in units of 500 ms.
    pub fn timeout(self) -> std::time::Duration {
        std::time::Duration::from_millis(((self.0 >> 24) & 0xff).max(1) * 500)
    }

    /// The doorbell stride in bytes (`4 << CAP.DSTRD`).
    pub fn doorbell_stride(self) -> u64 {
        4 << ((self.0 >> 32) & 0xf)
    }

    /// Whether the NVM command set is supported (CAP.CSS bit 0).
    pub fn nvm_command_set(self) -> bool {
        (self.0 >> 37) & 1 != 0
    }

    /// The smallest memory page size, as a power of two (12 + CAP.MPSMIN).
    pub fn min_page_shift(self) -> u32 {
        12 + ((self.0 >> 48) & 0xf) as u32
    }

    /// The largest memory page size, as a power of two (12 + CAP.MPSMAX).
    pub fn max_page_shift(self) -> u32 {
        12 + ((self.0 >> 52) & 0xf) as u32
    }
}

/// The offset of queue `qid`'s submission tail doorbell.
pub fn sq_tail_doorbell(qid: u16, stride: u64) -> u64 {
    DOORBELLS + 2 * u64::from(qid) * stride
}

/// The offset of queue `qid`'s completion head doorbell.
pub fn cq_head_doorbell(qid: u16, stride: u64) -> u64 {
    DOORBELLS + (2 * u64::from(qid) + 1) * stride
}

/// CC.EN.
pub const CC_ENABLE: u32 = 1;
/// CSTS.RDY.
pub const CSTS_READY: u32 = 1;
/// CSTS.CFS: the controller hit a fatal error.
pub const CSTS_FATAL: u32 = 1 << 1;

/// The CC value that enables the controller with the NVM command set,
/// `2^page_shift`-byte pages, round-robin arbitration and the queue entry
/// sizes of this driver (64-byte submissions, 16-byte completions).
pub fn cc_enable(page_shift: u32) -> u32 {
    let mps = page_shift - 12;
    let iosqes = 6 << 16;
    let iocqes = 4 << 20;
    CC_ENABLE | (mps << 7) | iosqes | iocqes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_of_qemus_nvme_decode() {
        // What QEMU 7.2's nvme reports: MQES 2047, CQR, TO 15, DSTRD 0,
        // CSS NVM (and more), MPSMIN 0, MPSMAX 4.
        let cap = Capabilities(0x0040_0020_0f01_07ff | 1 << 37);
        assert_eq!(cap.max_queue_entries(), 2048);
        assert_eq!(cap.timeout(), std::time::Duration::from_millis(7500));
        assert_eq!(cap.doorbell_stride(), 4);
        assert!(cap.nvm_command_set());
        assert_eq!(cap.min_page_shift(), 12);
        assert_eq!(cap.max_page_shift(), 16);
        assert_eq!(sq_tail_doorbell(0, 4), 0x1000);
        assert_eq!(cq_head_doorbell(0, 4), 0x1004);
        assert_eq!(sq_tail_doorbell(3, 16), 0x1000 + 6 * 16);
        assert_eq!(cc_enable(12), 0x0046_0001);
    }
}
