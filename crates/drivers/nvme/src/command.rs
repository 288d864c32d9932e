//! Submission and completion queue entries, as plain data for DMA memory.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Admin command opcodes used by this driver.
pub mod admin {
    /// Delete I/O Submission Queue.
    pub const DELETE_SQ: u8 = 0x00;
    /// Create I/O Submission Queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Delete I/O Completion Queue.
    pub const DELETE_CQ: u8 = 0x04;
    /// Create I/O Completion Queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Doorbell Buffer Config (shadow doorbells).
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7C;
}

/// NVM command set opcodes.
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// A 64-byte submission queue entry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Command {
    /// Opcode (bits 7:0), fused operation, PRP or SGL (15:14), command id (31:16).
    pub cdw0: u32,
    /// Namespace.
    pub nsid: u32,
    /// Command dwords 2 and 3.
    pub cdw2: [u32; 2],
    /// Metadata pointer.
    pub mptr: u64,
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2.
    pub prp2: u64,
    /// Command dwords 10 to 15.
    pub cdw10: [u32; 6],
}

impl Command {
    /// A command with `opcode` for namespace `nsid`, everything else zero.
    pub fn new(opcode: u8, nsid: u32) -> Self {
        Self {
            cdw0: u32::from(opcode),
            nsid,
            ..Self::default()
        }
    }

    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        (self.cdw0 & 0xff) as u8
    }

    /// Sets the command identifier the completion will carry.
    pub fn set_cid(&mut self, cid: u16) {
        self.cdw0 = (self.cdw0 & 0xffff) | (u32::from(cid) << 16);
    }

    /// Identify with the given CNS value (CDW10) into the page at `prp1`.
    pub fn identify(cns: u8, nsid: u32, prp1: u64) -> Self {
        let mut c = Self::new(admin::IDENTIFY, nsid);
        c.prp1 = prp1;
        c.cdw10[0] = u32::from(cns);
        c
    }

    /// A read or write of `blocks` (1 to 65536) logical blocks from `lba`.
    pub fn io(opcode: u8, nsid: u32, lba: u64, blocks: u32, prp1: u64, prp2: u64) -> Self {
        let mut c = Self::new(opcode, nsid);
        c.prp1 = prp1;
        c.prp2 = prp2;
        c.cdw10[0] = lba as u32;
        c.cdw10[1] = (lba >> 32) as u32;
        c.cdw10[2] = blocks.saturating_sub(1) & 0xffff;
        c
    }
}

/// A 16-byte completion queue entry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Completion {
    /// Command specific result.
    pub result: u32,
    /// Reserved.
    pub dw1: u32,
    /// Submission queue head pointer.
    pub sq_head: u16,
    /// Submission queue identifier.
    pub sq_id: u16,
    /// The identifier of the command completed.
    pub cid: u16,
    /// Phase tag (bit 0) and status field (bits 15:1).
    pub status: u16,
}

impl Completion {
    /// The byte offset of [`Completion::status`] in the entry.
    pub const STATUS_OFFSET: usize = 14;

    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.status & 1 != 0
    }

    /// The status field, without the phase tag.
    pub fn status_field(&self) -> u16 {
        self.status >> 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_have_the_sizes_and_layout_of_the_specification() {
        assert_eq!(std::mem::size_of::<Command>(), 64);
        assert_eq!(std::mem::size_of::<Completion>(), 16);
        let mut read = Command::io(nvm::READ, 1, 0x1_0000_0002, 8, 0x1000, 0x2000);
        read.set_cid(0xbeef);
        let bytes = read.as_bytes();
        assert_eq!(bytes[0], nvm::READ);
        assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), 0xbeef);
        assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 1);
        assert_eq!(
            u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
            0x1000
        );
        assert_eq!(
            u64::from_le_bytes(bytes[32..40].try_into().unwrap()),
            0x2000
        );
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(bytes[44..48].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(bytes[48..52].try_into().unwrap()), 7);
        let done = Completion {
            status: 0x0002 << 1 | 1,
            ..Completion::default()
        };
        assert!(done.phase());
        assert_eq!(done.status_field(), 2);
    }
}
