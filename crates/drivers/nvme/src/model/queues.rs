//! The model's queues: submission queues it fetches from and completion
//! queues it posts to, in the driver's DMA memory, with phase tags.

use std::collections::{BTreeMap, VecDeque};

use usrdrv::emulated::Bus;
use zerocopy::IntoBytes;

use crate::command::{Command, Completion};

/// A queue's two slots in the shadow doorbell buffers (Doorbell Buffer
/// Config): where the driver writes its tail or head, and where the
/// controller writes the index it wants a doorbell at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShadowSlot {
    /// In the shadow doorbell buffer (the driver writes it).
    pub(super) doorbell: u64,
    /// In the event index buffer (the controller writes it).
    pub(super) event_index: u64,
}

impl ShadowSlot {
    /// The value the driver last wrote, if it is an index of a queue of
    /// `size` entries (anything else is ignored, as a register write
    /// would be).
    fn read(&self, bus: &Bus, size: u16) -> Option<u16> {
        let value: u32 = bus.read_obj(self.doorbell).ok()?;
        u16::try_from(value).ok().filter(|v| *v < size)
    }

    /// Tells the driver which index to ring the real doorbell at.
    fn ask_at(&self, bus: &Bus, index: u16) {
        let _ = bus.write(self.event_index, &u32::from(index).to_le_bytes());
    }
}

/// A submission queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sq {
    pub(super) base: u64,
    pub(super) size: u16,
    pub(super) head: u16,
    pub(super) tail: u16,
    pub(super) cqid: u16,
    /// Its shadow tail, when the driver configured shadow doorbells.
    pub(super) shadow: Option<ShadowSlot>,
}

impl Sq {
    /// Catches up with the shadow tail, as QEMU's controller does while it
    /// processes a queue: first it asks for a doorbell at the tail it has
    /// seen, then it reads the shadow again, so a tail the driver moved in
    /// between is either read here or rung for. Whether there is more to run.
    pub(super) fn refresh(&mut self, bus: &Bus) -> bool {
        if let Some(shadow) = self.shadow {
            shadow.ask_at(bus, self.tail);
            if let Some(tail) = shadow.read(bus, self.size) {
                self.tail = tail;
            }
        }
        self.head != self.tail
    }
}

/// A completion queue.
#[derive(Debug)]
pub(super) struct Cq {
    pub(super) base: u64,
    pub(super) size: u16,
    /// Where the next entry goes.
    tail: u16,
    /// What the driver consumed up to (its head doorbell).
    head: u16,
    phase: bool,
    /// MSI-X vector, when interrupts are enabled.
    pub(super) vector: Option<u16>,
    /// Completions waiting for room.
    waiting: VecDeque<Completion>,
    /// Its shadow head, when the driver configured shadow doorbells. As in
    /// QEMU 7.2 the model reads it for room and never writes the event
    /// index, so the driver rings the head register once per wrap.
    pub(super) shadow: Option<ShadowSlot>,
}

impl Cq {
    pub(super) fn new(base: u64, size: u16, vector: Option<u16>) -> Self {
        Self {
            base,
            size,
            tail: 0,
            head: 0,
            phase: true,
            vector,
            waiting: VecDeque::new(),
            shadow: None,
        }
    }

    fn is_full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }

    /// Posts `completion` (or keeps it until the driver makes room).
    pub(super) fn post(&mut self, bus: &Bus, completion: Completion) {
        self.waiting.push_back(completion);
        self.flush(bus);
    }

    /// The driver consumed entries up to `head`.
    pub(super) fn set_head(&mut self, bus: &Bus, head: u16) {
        if head < self.size {
            self.head = head;
            self.flush(bus);
        }
    }

    /// Writes what fits: each entry's body first, then its status word with
    /// the phase tag, so the driver never sees a half-written entry.
    fn flush(&mut self, bus: &Bus) {
        if let Some(head) = self.shadow.and_then(|s| s.read(bus, self.size)) {
            self.head = head;
        }
        let mut posted = false;
        while !self.is_full() {
            let Some(mut completion) = self.waiting.pop_front() else {
                break;
            };
            completion.status = completion.status << 1 | u16::from(self.phase);
            let at = self.base + u64::from(self.tail) * 16;
            let bytes = completion.as_bytes();
            let body = Completion::STATUS_OFFSET;
            if bus.write(at, &bytes[..body]).is_ok() {
                let _ = bus.write(at + body as u64, &bytes[body..]);
            }
            self.tail += 1;
            if self.tail == self.size {
                self.tail = 0;
                self.phase = !self.phase;
            }
            posted = true;
        }
        if posted && let Some(vector) = self.vector {
            bus.interrupt(u32::from(vector));
        }
    }
}

/// Every queue of the controller; queue 0 is the admin pair.
#[derive(Debug, Default)]
pub(super) struct Queues {
    pub(super) sqs: BTreeMap<u16, Sq>,
    pub(super) cqs: BTreeMap<u16, Cq>,
}

impl Queues {
    /// The next command of submission queue `qid`, if the driver rang for one.
    pub(super) fn fetch(&mut self, bus: &Bus, qid: u16) -> Option<(Command, Sq)> {
        let sq = self.sqs.get_mut(&qid)?;
        if sq.head == sq.tail && !sq.refresh(bus) {
            return None;
        }
        let at = sq.base + u64::from(sq.head) * 64;
        sq.head = (sq.head + 1) % sq.size;
        let snapshot = *sq;
        // A fetch the IOMMU refuses is a command that cannot run: it is lost,
        // as on hardware (which would report a controller fatal status).
        let command: Command = bus.read_obj(at).ok()?;
        Some((command, snapshot))
    }

    /// Completes command `cid` of `sq` with `status` and `result`.
    pub(super) fn complete(&mut self, bus: &Bus, sqid: u16, cid: u16, status: u16, result: u32) {
        let Some(sq) = self.sqs.get(&sqid).copied() else {
            return;
        };
        if let Some(cq) = self.cqs.get_mut(&sq.cqid) {
            cq.post(
                bus,
                Completion {
                    result,
                    dw1: 0,
                    sq_head: sq.head,
                    sq_id: sqid,
                    cid,
                    status,
                },
            );
        }
    }
}
