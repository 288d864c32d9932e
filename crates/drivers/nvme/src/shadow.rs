//! Shadow doorbells (NVMe Doorbell Buffer Config, OACS bit 8): the driver
//! writes each I/O queue's new tail or head to a page of DMA memory the
//! controller reads, and rings the real doorbell register only when the
//! controller's event index (a second page, which the controller writes)
//! says it would not otherwise look. It pays where a register write is dear
//! and the controller polls the shadow page while busy (virtual controllers
//! mostly); QEMU 7.2's asks for a doorbell whenever it has caught up, so
//! there it saves nothing (`docs/perf/nvme-doorbells.md`).
//!
//! The admin queue keeps to its registers, as the Linux driver does: the
//! controller copies what they are told into its shadow slot itself.

use std::sync::atomic::{Ordering, fence};

use usrdrv::Device;
use usrdrv::dma::DmaBuffer;

use crate::command::{Command, admin};
use crate::error::NvmeError;

/// Bytes of each of the two buffers (one memory page: room for the slots of
/// 512 queue pairs at the smallest doorbell stride).
const BUFFER: usize = 4096;

/// The shadow doorbell buffer and the event index buffer of one controller.
#[derive(Debug)]
pub(crate) struct ShadowDoorbells {
    /// What the driver writes: the shadow of each doorbell register.
    doorbells: DmaBuffer,
    /// What the controller writes: the index past which it wants a doorbell.
    event_indexes: DmaBuffer,
    /// The doorbell stride in bytes (the buffers mirror the registers' layout).
    stride: u64,
}

/// One doorbell of one queue, in the shadow buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(usize);

impl ShadowDoorbells {
    /// Allocates both buffers, zeroed, for a controller with doorbell
    /// `stride` (bytes). `None` when the stride leaves no room for `queues`
    /// I/O queue pairs in one page.
    pub(crate) fn new(
        device: &Device,
        stride: u64,
        queues: u16,
    ) -> Result<Option<Self>, NvmeError> {
        let needed = (u64::from(queues) + 1) * 2 * stride;
        if needed > BUFFER as u64 {
            return Ok(None);
        }
        let shadow = Self {
            doorbells: device.alloc_dma(BUFFER)?,
            event_indexes: device.alloc_dma(BUFFER)?,
            stride,
        };
        shadow.clear()?;
        Ok(Some(shadow))
    }

    /// The Doorbell Buffer Config command that hands both buffers to the
    /// controller.
    pub(crate) fn config_command(&self) -> Command {
        let mut command = Command::new(admin::DOORBELL_BUFFER_CONFIG, 0);
        command.prp1 = self.doorbells.device_addr();
        command.prp2 = self.event_indexes.device_addr();
        command
    }

    /// Zeroes both buffers, before handing them to a controller (again,
    /// after a reset made it forget them).
    pub(crate) fn clear(&self) -> Result<(), NvmeError> {
        self.doorbells.fill(0, BUFFER, 0)?;
        self.event_indexes.fill(0, BUFFER, 0)?;
        Ok(())
    }

    /// The slots of queue `qid`'s submission tail and completion head.
    pub(crate) fn slots(&self, qid: u16) -> (Slot, Slot) {
        let sq = 2 * u64::from(qid) * self.stride;
        // The constructor checked that every granted queue fits in the page.
        (Slot(sq as usize), Slot((sq + self.stride) as usize))
    }

    /// Zeroes a queue's slots before the controller creates it (a new queue
    /// starts at index 0; the slots may hold a deleted queue's last values).
    pub(crate) fn reset(&self, qid: u16) -> Result<(), NvmeError> {
        let (sq, cq) = self.slots(qid);
        for slot in [sq, cq] {
            self.doorbells.store::<u32>(slot.0, 0, Ordering::Relaxed)?;
            self.event_indexes
                .store::<u32>(slot.0, 0, Ordering::Relaxed)?;
        }
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Publishes `new` (a tail or head moved on from `old`) in `slot`, and
    /// says whether the real doorbell must be rung too: whether the
    /// controller's event index lies in `[old, new)`, so it asked to be told
    /// of the entries from it on.
    pub(crate) fn update(&self, slot: Slot, old: u16, new: u16) -> Result<bool, NvmeError> {
        // Release: the entries written before are visible to a controller
        // that reads the new value.
        self.doorbells
            .store::<u32>(slot.0, u32::from(new), Ordering::Release)?;
        // The shadow store is visible before the event index is read: the
        // controller writes its event index and then reads the shadow again,
        // so either it sees the new value or this sees its new index.
        fence(Ordering::SeqCst);
        let event = self.event_indexes.load::<u32>(slot.0, Ordering::Acquire)?;
        // The event index is a queue index, below 65536.
        Ok(needs_event(event as u16, new, old))
    }
}

/// Whether moving an index from `old` to `new` passes `event` (the
/// spec's and Linux's `nvme_dbbuf_need_event`, on 16-bit indexes): true when
/// `event` lies in `[old, new)`, counting around the ring.
pub(crate) fn needs_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::needs_event;

    #[test]
    fn an_event_index_inside_the_moved_range_asks_for_a_doorbell() {
        // The controller processed up to 3 and waits there.
        assert!(needs_event(3, 5, 3));
        assert!(needs_event(4, 5, 3));
        // It is still behind (it will read the shadow again), or ahead.
        assert!(!needs_event(2, 5, 3));
        assert!(!needs_event(5, 5, 3));
        // Nothing moved.
        assert!(!needs_event(3, 3, 3));
    }

    #[test]
    fn wrapping_around_a_queue_counts_the_indexes_it_passes() {
        // Depth 32: from 30 to 2 passes 30, 31, 0 and 1.
        for event in [30, 31, 0, 1] {
            assert!(needs_event(event, 2, 30), "event {event}");
        }
        for event in [2, 5, 29] {
            assert!(!needs_event(event, 2, 30), "event {event}");
        }
    }

    #[test]
    fn a_controller_that_never_moves_its_event_index_is_told_once_per_wrap() {
        // QEMU 7.2 writes no completion-queue event index: it stays 0, and a
        // head doorbell is rung only when the head passes index 0.
        let mut rung = 0;
        let (mut old, depth) = (0u16, 32u16);
        for step in 1..=320u16 {
            let new = step % depth;
            rung += u32::from(needs_event(0, new, old));
            old = new;
        }
        assert_eq!(rung, 10);
    }
}
