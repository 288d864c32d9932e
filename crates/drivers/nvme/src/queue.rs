//! One submission queue and its completion queue in DMA memory, with their
//! doorbells: submitting commands and reaping completions by phase tag.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use usrdrv::Device;
use usrdrv::dma::DmaBuffer;
use usrdrv::mmio::Bar;

use crate::command::{Command, Completion};
use crate::error::NvmeError;
use crate::regs;
use crate::shadow::{ShadowDoorbells, Slot};

/// Bytes of a submission queue entry.
const SQE: usize = 64;
/// Bytes of a completion queue entry.
const CQE: usize = 16;

/// A submission/completion queue pair (the admin queue, or an I/O queue).
#[derive(Debug)]
pub(crate) struct QueuePair {
    qid: u16,
    /// Entries of the submission queue.
    depth: u16,
    /// Entries of the completion queue: `depth` or more. Beyond `depth`
    /// they are slack that lets the head doorbell wait (see `ring_head`).
    cq_depth: u16,
    sq: DmaBuffer,
    cq: DmaBuffer,
    sq_tail: u16,
    /// The tail the controller was last told of: entries from here to
    /// `sq_tail` are written but not rung yet.
    rung_tail: u16,
    /// Where the controller's head of the submission queue was, as the last
    /// completion reported it.
    sq_head: u16,
    cq_head: u16,
    /// The head the controller was last told of.
    rung_head: u16,
    /// The phase tag a new completion carries.
    phase: bool,
    sq_doorbell: u64,
    cq_doorbell: u64,
    /// The controller's shadow doorbells and this queue's slots in them, if
    /// it takes them (I/O queues only).
    shadow: Option<(Arc<ShadowDoorbells>, Slot, Slot)>,
    /// Doorbell registers written (shadow updates that needed none are not
    /// counted).
    doorbell_writes: u64,
}

impl QueuePair {
    /// Allocates queue `qid` with `depth` submission entries (2 to 65535)
    /// and `cq_depth` completion entries (at least `depth`) on `device`,
    /// rung through `shadow` doorbells if given.
    pub(crate) fn new(
        device: &Device,
        qid: u16,
        depth: u16,
        cq_depth: u16,
        stride: u64,
        shadow: Option<Arc<ShadowDoorbells>>,
    ) -> Result<Self, NvmeError> {
        let cq_depth = cq_depth.max(depth);
        let sq = device.alloc_dma(usize::from(depth) * SQE)?;
        let cq = device.alloc_dma(usize::from(cq_depth) * CQE)?;
        let shadow = match shadow {
            Some(shadow) => {
                shadow.reset(qid)?;
                let (sq_slot, cq_slot) = shadow.slots(qid);
                Some((shadow, sq_slot, cq_slot))
            }
            None => None,
        };
        Ok(Self {
            qid,
            depth,
            cq_depth,
            sq,
            cq,
            sq_tail: 0,
            rung_tail: 0,
            sq_head: 0,
            cq_head: 0,
            rung_head: 0,
            phase: true,
            sq_doorbell: regs::sq_tail_doorbell(qid, stride),
            cq_doorbell: regs::cq_head_doorbell(qid, stride),
            shadow,
            doorbell_writes: 0,
        })
    }

    /// The queue's identifier.
    pub(crate) fn qid(&self) -> u16 {
        self.qid
    }

    /// The number of submission queue entries.
    pub(crate) fn depth(&self) -> u16 {
        self.depth
    }

    /// The number of completion queue entries.
    pub(crate) fn cq_depth(&self) -> u16 {
        self.cq_depth
    }

    /// The device address of the submission queue.
    pub(crate) fn sq_addr(&self) -> u64 {
        self.sq.device_addr()
    }

    /// The device address of the completion queue.
    pub(crate) fn cq_addr(&self) -> u64 {
        self.cq.device_addr()
    }

    /// Whether the queue is rung through shadow doorbells.
    pub(crate) fn has_shadow_doorbells(&self) -> bool {
        self.shadow.is_some()
    }

    /// How many doorbell registers this queue wrote.
    pub(crate) fn doorbell_writes(&self) -> u64 {
        self.doorbell_writes
    }

    /// Empties the queue, for a controller that no longer has it (after a
    /// reset): both rings zeroed (so no old completion's phase tag can look
    /// new) and the indexes back to the start.
    pub(crate) fn clear(&mut self) -> Result<(), NvmeError> {
        self.sq.fill(0, self.sq.len(), 0)?;
        self.cq.fill(0, self.cq.len(), 0)?;
        self.sq_tail = 0;
        self.rung_tail = 0;
        self.sq_head = 0;
        self.cq_head = 0;
        self.rung_head = 0;
        self.phase = true;
        if let Some((shadow, _, _)) = &self.shadow {
            shadow.reset(self.qid)?;
        }
        Ok(())
    }

    /// Whether another command fits (one slot always stays empty).
    pub(crate) fn is_full(&self) -> bool {
        (self.sq_tail + 1) % self.depth == self.sq_head
    }

    /// Writes `command` at the tail with command id `cid`, and rings the
    /// doorbell (for it and for any entry pushed before it).
    pub(crate) fn submit(
        &mut self,
        bar: &Bar,
        command: Command,
        cid: u16,
    ) -> Result<(), NvmeError> {
        let before = self.sq_tail;
        self.push(command, cid)?;
        // Only a doorbell that reached the controller keeps the entry: after
        // a failed one, the next command overwrites it before any doorbell
        // can show it, so a rejected command never runs.
        if let Err(error) = self.ring_tail(bar) {
            self.sq_tail = before;
            return Err(error);
        }
        Ok(())
    }

    /// Writes `command` at the tail with command id `cid` without telling
    /// the controller: [`QueuePair::ring_tail`] does, once for every entry
    /// pushed since the last doorbell.
    pub(crate) fn push(&mut self, mut command: Command, cid: u16) -> Result<(), NvmeError> {
        if self.is_full() {
            return Err(NvmeError::QueueFull { qid: self.qid });
        }
        command.set_cid(cid);
        self.sq
            .write_obj(usize::from(self.sq_tail) * SQE, &command)?;
        self.sq_tail = (self.sq_tail + 1) % self.depth;
        Ok(())
    }

    /// Whether entries were pushed that the controller was not told of.
    pub(crate) fn has_unrung(&self) -> bool {
        self.rung_tail != self.sq_tail
    }

    /// Rings the submission doorbell with the tail, if entries are waiting.
    pub(crate) fn ring_tail(&mut self, bar: &Bar) -> Result<(), NvmeError> {
        if !self.has_unrung() {
            return Ok(());
        }
        // The entries are in memory before the controller learns of them.
        self.sq.sync_for_device();
        let ring = match &self.shadow {
            Some((shadow, slot, _)) => shadow.update(*slot, self.rung_tail, self.sq_tail)?,
            None => true,
        };
        if ring {
            bar.write32(self.sq_doorbell, u32::from(self.sq_tail))?;
            self.doorbell_writes += 1;
        }
        self.rung_tail = self.sq_tail;
        Ok(())
    }

    /// The next completion, if the controller has posted one: checked by its
    /// phase tag (an acquire load, so the rest of the entry is read after it),
    /// then consumed and the head doorbell rung.
    pub(crate) fn poll(&mut self, bar: &Bar) -> Result<Option<Completion>, NvmeError> {
        let completion = self.take()?;
        if completion.is_some() {
            self.ring_head(bar)?;
        }
        Ok(completion)
    }

    /// The next completion, if the controller has posted one, consumed
    /// without telling the controller: [`QueuePair::ring_head`] does, once
    /// for as many as were taken.
    pub(crate) fn take(&mut self) -> Result<Option<Completion>, NvmeError> {
        let at = usize::from(self.cq_head) * CQE;
        let status: u16 = self
            .cq
            .load(at + Completion::STATUS_OFFSET, Ordering::Acquire)?;
        if (status & 1 != 0) != self.phase {
            return Ok(None);
        }
        self.cq.sync_for_cpu();
        let completion: Completion = self.cq.read_obj(at)?;
        self.cq_head += 1;
        if self.cq_head == self.cq_depth {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        self.sq_head = completion.sq_head % self.depth;
        Ok(Some(completion))
    }

    /// Tells the controller how far completions were consumed, when it
    /// must know: with a completion queue `slack` entries longer than the
    /// submission queue, the controller has room for every command that can
    /// be in flight as long as at most `slack` consumed entries go untold,
    /// so the register is written once per `slack` or so completions, not
    /// once per reap (each write can cost a virtual controller more than
    /// many commands). Shadow doorbells are updated every time.
    pub(crate) fn ring_head(&mut self, bar: &Bar) -> Result<(), NvmeError> {
        let ring = match &self.shadow {
            Some((shadow, _, slot)) => shadow.update(*slot, self.rung_head, self.cq_head)?,
            None => self.untold_heads() > self.cq_depth - self.depth,
        };
        if ring {
            bar.write32(self.cq_doorbell, u32::from(self.cq_head))?;
            self.doorbell_writes += 1;
        }
        if ring || self.shadow.is_some() {
            self.rung_head = self.cq_head;
        }
        Ok(())
    }

    /// Completions consumed that the controller was not told of.
    fn untold_heads(&self) -> u16 {
        let (head, told, size) = (
            u32::from(self.cq_head),
            u32::from(self.rung_head),
            u32::from(self.cq_depth),
        );
        // Below `cq_depth`, so it fits.
        ((head + size - told) % size) as u16
    }
}
