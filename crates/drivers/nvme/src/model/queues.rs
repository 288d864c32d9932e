//! The model's queues: submission queues it fetches from and completion
//! queues it posts to, in the driver's DMA memory, with phase tags.

use std::collections::{BTreeMap, VecDeque};

use usrdrv::emulated::Bus;
use zerocopy::IntoBytes;

use crate::command::{Command, Completion};

/// A submission queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sq {
    pub(super) base: u64,
    pub(super) size: u16,
    pub(super) head: u16,
    pub(super) tail: u16,
    pub(super) cqid: u16,
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
        if sq.head == sq.tail {
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
