//! What the model does with a command: the admin commands the driver uses,
//! the NVM command set's reads, writes, flush, write zeroes and deallocate,
//! with data moved through PRP entries and lists over the bus.

use usrdrv::emulated::Bus;

use super::State;
use super::queues::{Cq, Sq};
use crate::command::{Command, admin, nvm};

/// 4 KiB: the memory page size the model runs with.
const PAGE: u64 = 4096;

/// Status field values (SCT << 8 | SC).
pub(super) mod sc {
    pub const SUCCESS: u16 = 0x000;
    pub const INVALID_OPCODE: u16 = 0x001;
    pub const INVALID_FIELD: u16 = 0x002;
    pub const DATA_TRANSFER_ERROR: u16 = 0x004;
    pub const ABORT_REQUESTED: u16 = 0x007;
    pub const ABORTED_SQ_DELETION: u16 = 0x008;
    pub const INVALID_NAMESPACE: u16 = 0x00b;
    pub const PRP_OFFSET_INVALID: u16 = 0x013;
    pub const LBA_OUT_OF_RANGE: u16 = 0x080;
    pub const CQ_INVALID: u16 = 0x100;
    pub const INVALID_QUEUE_ID: u16 = 0x101;
    pub const INVALID_QUEUE_SIZE: u16 = 0x102;
    pub const INVALID_VECTOR: u16 = 0x108;
    pub const INVALID_QUEUE_DELETION: u16 = 0x10c;
}

/// What became of a command.
pub(super) enum Outcome {
    /// Complete it with this status and result (dword 0).
    Done(u16, u32),
    /// Keep it in flight: the model will not complete it on its own.
    Held,
}

use Outcome::Done;

fn status(code: u16) -> Outcome {
    Done(code, 0)
}

/// The memory segments `len` bytes at PRP1/PRP2 describe, or the status
/// that refuses them.
fn prp_segments(bus: &Bus, prp1: u64, prp2: u64, len: u64) -> Result<Vec<(u64, u64)>, u16> {
    let first = len.min(PAGE - prp1 % PAGE);
    let mut segments = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return Ok(segments);
    }
    if left <= PAGE {
        if !prp2.is_multiple_of(PAGE) {
            return Err(sc::PRP_OFFSET_INVALID);
        }
        segments.push((prp2, left));
        return Ok(segments);
    }
    // PRP2 points to a list; the last entry of a full list page points to
    // the next list page when more pages remain.
    if !prp2.is_multiple_of(8) {
        return Err(sc::PRP_OFFSET_INVALID);
    }
    let mut entry = prp2;
    // A list that points back into itself would never end: no transfer
    // needs more list pages than it has data pages.
    let mut hops = 0;
    while left > 0 {
        let last_in_page = (entry + 8).is_multiple_of(PAGE);
        let mut value = [0u8; 8];
        bus.read(entry, &mut value)
            .map_err(|_| sc::DATA_TRANSFER_ERROR)?;
        let value = u64::from_le_bytes(value);
        if last_in_page && left > PAGE {
            hops += 1;
            if !value.is_multiple_of(8) || hops > len / PAGE + 1 {
                return Err(sc::PRP_OFFSET_INVALID);
            }
            entry = value;
            continue;
        }
        if !value.is_multiple_of(PAGE) {
            return Err(sc::PRP_OFFSET_INVALID);
        }
        let n = left.min(PAGE);
        segments.push((value, n));
        left -= n;
        entry += 8;
    }
    Ok(segments)
}

impl State {
    /// Runs `command`, fetched from submission queue `sq` (`qid`).
    pub(super) fn execute(&mut self, bus: &Bus, qid: u16, command: &Command) -> Outcome {
        if qid == 0 {
            self.admin(bus, command)
        } else {
            self.nvm(bus, qid, command)
        }
    }

    fn admin(&mut self, bus: &Bus, c: &Command) -> Outcome {
        let cdw10 = c.cdw10[0];
        let cdw11 = c.cdw10[1];
        let qid = (cdw10 & 0xffff) as u16;
        let qsize = (cdw10 >> 16) + 1;
        match c.opcode() {
            admin::IDENTIFY => {
                let page = match cdw10 & 0xff {
                    0 if c.nsid == 1 => self.identify_namespace(),
                    0 => return status(sc::INVALID_NAMESPACE),
                    1 => self.identify_controller(),
                    2 => {
                        let mut list = vec![0u8; PAGE as usize];
                        if c.nsid < 1 {
                            list[..4].copy_from_slice(&1u32.to_le_bytes());
                        }
                        list
                    }
                    _ => return status(sc::INVALID_FIELD),
                };
                status(self.to_host(bus, c, &page))
            }
            admin::SET_FEATURES if cdw10 & 0xff == 0x07 => {
                // 0's based: as many I/O pairs as the controller has, less the admin pair.
                let most = u32::from(self.config.max_queue_pairs).saturating_sub(2);
                let sq = (cdw11 & 0xffff).min(most);
                let cq = (cdw11 >> 16).min(most);
                self.granted = Some((sq.min(cq) + 1) as u16);
                Done(sc::SUCCESS, cq << 16 | sq)
            }
            admin::CREATE_CQ => {
                let vector = (cdw11 & 0b10 != 0).then_some((cdw11 >> 16) as u16);
                if let Some(bad) = self.check_new_queue(qid, qsize, cdw11 & 1 != 0, false) {
                    return status(bad);
                }
                if vector.is_some_and(|v| u32::from(v) >= self.config.msix_vectors) {
                    return status(sc::INVALID_VECTOR);
                }
                let mut cq = Cq::new(c.prp1, qsize as u16, vector);
                cq.shadow = self.shadow_slot(qid, true);
                self.queues.cqs.insert(qid, cq);
                status(sc::SUCCESS)
            }
            admin::CREATE_SQ => {
                let cqid = (cdw11 >> 16) as u16;
                if let Some(bad) = self.check_new_queue(qid, qsize, cdw11 & 1 != 0, true) {
                    return status(bad);
                }
                if cqid == 0 || !self.queues.cqs.contains_key(&cqid) {
                    return status(sc::CQ_INVALID);
                }
                self.queues.sqs.insert(
                    qid,
                    Sq {
                        base: c.prp1,
                        size: qsize as u16,
                        head: 0,
                        tail: 0,
                        cqid,
                        shadow: self.shadow_slot(qid, false),
                    },
                );
                status(sc::SUCCESS)
            }
            admin::DELETE_SQ => {
                if qid == 0 || !self.queues.sqs.contains_key(&qid) {
                    return status(sc::INVALID_QUEUE_ID);
                }
                // What it still holds completes as aborted, then it goes.
                for cid in self.take_held(qid) {
                    self.queues
                        .complete(bus, qid, cid, sc::ABORTED_SQ_DELETION, 0);
                }
                self.queues.sqs.remove(&qid);
                status(sc::SUCCESS)
            }
            admin::DELETE_CQ => {
                if qid == 0 || !self.queues.cqs.contains_key(&qid) {
                    return status(sc::INVALID_QUEUE_ID);
                }
                if self.queues.sqs.values().any(|sq| sq.cqid == qid) {
                    return status(sc::INVALID_QUEUE_DELETION);
                }
                self.queues.cqs.remove(&qid);
                status(sc::SUCCESS)
            }
            admin::ABORT => {
                let cid = (cdw10 >> 16) as u16;
                let held = self.held.iter().position(|&h| h == (qid, cid));
                match held {
                    Some(at) if self.config.abort => {
                        self.held.remove(at);
                        self.aborted += 1;
                        self.queues.complete(bus, qid, cid, sc::ABORT_REQUESTED, 0);
                        // Dword 0 bit 0 clear: the command was aborted.
                        Done(sc::SUCCESS, 0)
                    }
                    _ => Done(sc::SUCCESS, 1),
                }
            }
            admin::DOORBELL_BUFFER_CONFIG if self.config.doorbell_buffer => {
                let page_aligned = |a: u64| a != 0 && a.is_multiple_of(PAGE);
                if !page_aligned(c.prp1) || !page_aligned(c.prp2) {
                    return status(sc::INVALID_FIELD);
                }
                self.doorbell_buffers = Some((c.prp1, c.prp2));
                // Queues that exist already take their slots now.
                let slots: Vec<(u16, bool)> = self
                    .queues
                    .sqs
                    .keys()
                    .map(|&q| (q, false))
                    .chain(self.queues.cqs.keys().map(|&q| (q, true)))
                    .collect();
                for (qid, cq) in slots {
                    let slot = self.shadow_slot(qid, cq);
                    if cq {
                        if let Some(queue) = self.queues.cqs.get_mut(&qid) {
                            queue.shadow = slot;
                        }
                    } else if let Some(queue) = self.queues.sqs.get_mut(&qid) {
                        queue.shadow = slot;
                    }
                }
                status(sc::SUCCESS)
            }
            _ => status(sc::INVALID_OPCODE),
        }
    }

    /// Why a queue `qid` of `qsize` entries cannot be created, if it cannot.
    fn check_new_queue(&self, qid: u16, qsize: u32, contiguous: bool, sq: bool) -> Option<u16> {
        let granted = self.granted.unwrap_or(1);
        let exists = if sq {
            self.queues.sqs.contains_key(&qid)
        } else {
            self.queues.cqs.contains_key(&qid)
        };
        if qid == 0 || qid > granted || exists {
            Some(sc::INVALID_QUEUE_ID)
        } else if !(2..=u32::from(self.config.max_queue_entries)).contains(&qsize) {
            Some(sc::INVALID_QUEUE_SIZE)
        } else if !contiguous {
            Some(sc::INVALID_FIELD)
        } else {
            None
        }
    }

    /// The commands of queue `qid` held in flight, taken out of the model.
    fn take_held(&mut self, qid: u16) -> Vec<u16> {
        let (taken, kept) = self.held.iter().partition(|&&(q, _)| q == qid);
        self.held = kept;
        taken.into_iter().map(|(_, cid)| cid).collect()
    }

    fn nvm(&mut self, bus: &Bus, qid: u16, c: &Command) -> Outcome {
        let opcode = c.opcode();
        if !matches!(
            opcode,
            nvm::FLUSH | nvm::READ | nvm::WRITE | nvm::WRITE_ZEROES | nvm::DATASET_MANAGEMENT
        ) {
            return status(sc::INVALID_OPCODE);
        }
        if c.nsid != 1 && !(opcode == nvm::FLUSH && c.nsid == u32::MAX) {
            return status(sc::INVALID_NAMESPACE);
        }
        let slba = u64::from(c.cdw10[0]) | u64::from(c.cdw10[1]) << 32;
        let blocks = u64::from(c.cdw10[2] & 0xffff) + 1;
        let in_range = |slba: u64, blocks: u64| {
            slba.checked_add(blocks)
                .is_some_and(|end| end <= self.config.blocks)
        };
        match opcode {
            nvm::FLUSH => status(sc::SUCCESS),
            nvm::READ | nvm::WRITE => {
                if self.hold_io > 0 {
                    self.hold_io -= 1;
                    let cid = (c.cdw0 >> 16) as u16;
                    self.held.push((qid, cid));
                    return Outcome::Held;
                }
                if let Some(code) = self.fail_io.pop_front() {
                    return status(code);
                }
                if (c.cdw0 >> 14) & 0b11 != 0 {
                    // SGLs: not offered (Identify's SGLS is 0).
                    return status(sc::INVALID_FIELD);
                }
                if !in_range(slba, blocks) {
                    return status(sc::LBA_OUT_OF_RANGE);
                }
                let len = blocks << self.config.block_shift;
                if len > PAGE << self.config.mdts {
                    return status(sc::INVALID_FIELD);
                }
                let segments = match prp_segments(bus, c.prp1, c.prp2, len) {
                    Ok(segments) => segments,
                    Err(code) => return status(code),
                };
                let mut at = usize::try_from(slba << self.config.block_shift).unwrap_or(usize::MAX);
                for (addr, n) in segments {
                    let n = n as usize;
                    let range = at..at + n;
                    let moved = if opcode == nvm::READ {
                        bus.write(addr, &self.storage[range])
                    } else {
                        bus.read(addr, &mut self.storage[range])
                    };
                    if moved.is_err() {
                        return status(sc::DATA_TRANSFER_ERROR);
                    }
                    at += n;
                }
                status(sc::SUCCESS)
            }
            nvm::WRITE_ZEROES => {
                if !in_range(slba, blocks) {
                    return status(sc::LBA_OUT_OF_RANGE);
                }
                self.zero(slba, blocks);
                status(sc::SUCCESS)
            }
            _ => {
                // Dataset Management: only deallocate does anything.
                let ranges = u64::from(c.cdw10[0] & 0xff) + 1;
                if c.cdw10[1] & (1 << 2) == 0 {
                    return status(sc::SUCCESS);
                }
                let segments = match prp_segments(bus, c.prp1, c.prp2, ranges * 16) {
                    Ok(segments) => segments,
                    Err(code) => return status(code),
                };
                let mut list = Vec::new();
                for (addr, n) in segments {
                    let mut part = vec![0u8; n as usize];
                    if bus.read(addr, &mut part).is_err() {
                        return status(sc::DATA_TRANSFER_ERROR);
                    }
                    list.extend(part);
                }
                let ranges: Vec<(u64, u64)> = list
                    .chunks_exact(16)
                    .map(|r| {
                        let word =
                            |i: usize| u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
                        (
                            u64::from(word(8)) | u64::from(word(12)) << 32,
                            u64::from(word(4)),
                        )
                    })
                    .collect();
                if ranges.iter().any(|&(lba, n)| !in_range(lba, n)) {
                    return status(sc::LBA_OUT_OF_RANGE);
                }
                for (lba, n) in ranges {
                    self.zero(lba, n);
                }
                status(sc::SUCCESS)
            }
        }
    }

    fn zero(&mut self, slba: u64, blocks: u64) {
        let shift = self.config.block_shift;
        let start = (slba << shift) as usize;
        let end = ((slba + blocks) << shift) as usize;
        self.storage[start..end].fill(0);
    }

    /// Moves a 4 KiB data structure to the host through PRP1/PRP2.
    fn to_host(&self, bus: &Bus, c: &Command, page: &[u8]) -> u16 {
        let segments = match prp_segments(bus, c.prp1, c.prp2, page.len() as u64) {
            Ok(segments) => segments,
            Err(code) => return code,
        };
        let mut at = 0;
        for (addr, n) in segments {
            let n = n as usize;
            if bus.write(addr, &page[at..at + n]).is_err() {
                return sc::DATA_TRANSFER_ERROR;
            }
            at += n;
        }
        sc::SUCCESS
    }

    fn identify_controller(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE as usize];
        let mut put = |at: usize, bytes: &[u8]| page[at..at + bytes.len()].copy_from_slice(bytes);
        let text = |s: &str, len: usize| {
            let mut field = vec![b' '; len];
            let n = s.len().min(len);
            field[..n].copy_from_slice(&s.as_bytes()[..n]);
            field
        };
        put(0, &crate::model::VENDOR_ID.to_le_bytes());
        put(2, &crate::model::VENDOR_ID.to_le_bytes());
        put(4, &text(&self.config.serial, 20));
        put(24, &text(&self.config.model, 40));
        put(64, &text(&self.config.firmware, 8));
        put(77, &[self.config.mdts]);
        put(80, &super::VERSION.to_le_bytes());
        // OACS: Doorbell Buffer Config, where offered.
        if self.config.doorbell_buffer {
            put(256, &(1u16 << 8).to_le_bytes());
        }
        // Abort Command Limit (0's based): four at a time.
        put(258, &[3]);
        // SQES, CQES: 64- and 16-byte entries.
        put(512, &[0x66, 0x44]);
        put(516, &1u32.to_le_bytes());
        // ONCS: Dataset Management and Write Zeroes.
        put(520, &0x000cu16.to_le_bytes());
        page
    }

    fn identify_namespace(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE as usize];
        for at in [0, 8, 16] {
            page[at..at + 8].copy_from_slice(&self.config.blocks.to_le_bytes());
        }
        // One LBA format, in use: 2^block_shift-byte blocks.
        page[128 + 2] = self.config.block_shift as u8;
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_values_are_the_specification_s() {
        use crate::status::Status;
        assert_eq!(Status(sc::LBA_OUT_OF_RANGE).name(), "LBA Out of Range");
        assert_eq!(
            Status(sc::INVALID_NAMESPACE).name(),
            "Invalid Namespace or Format"
        );
        assert_eq!(
            Status(sc::ABORT_REQUESTED).name(),
            "Command Abort Requested"
        );
        assert_eq!(
            Status(sc::INVALID_VECTOR).name(),
            "Invalid Interrupt Vector"
        );
        assert_eq!(
            Status(sc::INVALID_QUEUE_DELETION).name(),
            "Invalid Queue Deletion"
        );
        assert_eq!(Status(sc::CQ_INVALID).name(), "Completion Queue Invalid");
    }
}
