//! I/O queue pairs: reads and writes, waited for one at a time on borrowed
//! memory, or queued many at a time on owned buffers.
//!
//! A queued command owns its buffer: [`IoQueue::submit`] takes it by value
//! and only [`IoQueue::reap`] or [`IoQueue::wait`] give it back, once the
//! controller has completed the command or can no longer touch the memory
//! (the queue was deleted, or the controller reset). Safe code therefore
//! cannot read, reuse or free a buffer the controller may still write. A
//! queue forgotten with commands in flight leaks their buffers with it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use usrdrv::dma::{DmaBuffer, DmaRegion, SgEntry};
use usrdrv::irq::{Interrupts, IrqError};

pub use crate::buffer::IoBuffer;
use crate::command::{Command, Completion, admin, nvm};
use crate::queue::QueuePair;
use crate::slots::Slots;
use crate::spin::Spin;
use crate::{Namespace, NvmeError, PAGE, Shared, disable, prp, status_of};

/// Which way a command moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// From the namespace into memory.
    Read,
    /// From memory to the namespace.
    Write,
}

impl Op {
    fn opcode(self) -> u8 {
        match self {
            Self::Read => nvm::READ,
            Self::Write => nvm::WRITE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
        }
    }
}

/// A queued command that finished, with its buffer back.
#[derive(Debug)]
pub struct Completed<B> {
    /// The tag given at submission.
    pub tag: u64,
    /// The buffer, the caller's again.
    pub buffer: B,
    /// How the command ended.
    pub result: Result<(), NvmeError>,
}

/// A command the queue did not take, with its buffer back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Rejected<B: std::fmt::Debug> {
    /// Why.
    #[source]
    pub error: NvmeError,
    /// The buffer, still the caller's.
    pub buffer: B,
}

/// A command in flight: the buffer it owns and the caller's tag.
#[derive(Debug)]
struct InFlight<B> {
    buffer: B,
    tag: u64,
    op: Op,
    /// When the driver stops waiting: the command timeout after a wait first
    /// saw it in flight, and again after an Abort the controller accepted.
    deadline: Option<Instant>,
    /// Whether an Abort was sent for it.
    aborted: bool,
    /// Whether it timed out and was ended by a controller reset.
    timed_out: bool,
}

/// What a queue is created with.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) max_transfer: usize,
    pub(crate) interrupts: Option<Arc<Interrupts>>,
    /// The MSI-X vector of its completion queue, if it has interrupts.
    pub(crate) vector: Option<u16>,
    /// The controller generation it was created in.
    pub(crate) generation: u64,
    pub(crate) oncs: u16,
    pub(crate) sgl_support: u32,
}

/// A completion's status meaning the command was aborted as asked.
const ABORT_REQUESTED: u16 = 0x007;

/// The command id of a command waited for at once (queued ones use their
/// slot number, below the queue depth; 0xFFFF is kept out, as error log
/// entries use it for "no command").
const WAITED: u16 = u16::MAX - 1;

/// An I/O queue pair, polled, for one thread at a time (`Send`, not `Sync`).
/// Deleted from the controller when dropped (submission queue first), which
/// ends the commands still in flight before their buffers are freed.
#[derive(Debug)]
pub struct IoQueue<B: IoBuffer = DmaBuffer> {
    shared: Arc<Shared>,
    queue: QueuePair,
    /// PRP list pages: `pages_per_command` for each slot, and for a waited
    /// command after them.
    lists: DmaBuffer,
    pages_per_command: usize,
    /// Commands in flight, by command id.
    slots: Slots<InFlight<B>>,
    /// Completions seen while waiting for something else.
    finished: VecDeque<Completed<B>>,
    max_transfer: usize,
    /// The controller's MSI-X vectors, when this queue's completions raise
    /// vector `qid`.
    interrupts: Option<Arc<Interrupts>>,
    /// The MSI-X vector of its completion queue, if it has interrupts.
    vector: Option<u16>,
    /// The controller generation its queues exist in (see `recovery`).
    generation: u64,
    /// Optional NVM Command Support (Identify Controller).
    oncs: u16,
    /// SGL Support (Identify Controller).
    sgl_support: u32,
    /// Whether transfers are described with SGLs instead of PRPs.
    sgls: bool,
    _not_sync: std::marker::PhantomData<std::cell::Cell<()>>,
}

/// CDW0 PSDT = 01b: the data pointer is an SGL (Data Block descriptor).
const PSDT_SGL: u32 = 1 << 14;

/// ONCS: Dataset Management.
const ONCS_DSM: u16 = 1 << 2;
/// ONCS: Write Zeroes.
const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// Ranges one Dataset Management command takes (16 bytes each, one page).
const MAX_RANGES: usize = 256;

impl<B: IoBuffer> IoQueue<B> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        queue: QueuePair,
        setup: Setup,
    ) -> Result<Self, NvmeError> {
        let Setup {
            max_transfer,
            interrupts,
            vector,
            generation,
            oncs,
            sgl_support,
        } = setup;
        let pages_per_command = prp::list_pages_needed(max_transfer / PAGE, PAGE / 8);
        // One slot stays empty in a full queue: depth - 1 queued, and one waited.
        let slots = usize::from(queue.depth()) - 1;
        let lists = shared
            .device
            .alloc_dma((slots + 1) * pages_per_command * PAGE)?;
        Ok(Self {
            shared,
            queue,
            lists,
            pages_per_command,
            slots: Slots::new(slots),
            finished: VecDeque::new(),
            max_transfer,
            interrupts,
            vector,
            generation,
            oncs,
            sgl_support,
            sgls: false,
            _not_sync: std::marker::PhantomData,
        })
    }

    /// Describes this queue's transfers with SGLs (one Data Block descriptor
    /// each) instead of PRPs, where the controller supports them (Identify's
    /// SGLS); a buffer may then start at any byte the controller allows,
    /// dword-aligned or not. [`NvmeError::Unsupported`] otherwise.
    pub fn use_sgls(&mut self, on: bool) -> Result<(), NvmeError> {
        if on && self.sgl_support & 0b11 == 0 {
            return Err(NvmeError::Unsupported {
                address: self.shared.device.address(),
                why: "the controller does not support SGLs for NVM commands (SGLS)".into(),
            });
        }
        self.sgls = on;
        Ok(())
    }

    /// Whether the controller accepts SGL data blocks at any byte address
    /// (SGLS bits 1:0 = 01b) rather than dword-aligned ones only (10b).
    pub fn sgls_any_alignment(&self) -> bool {
        self.sgl_support & 0b11 == 0b01
    }

    /// Whether completions raise an interrupt (waits sleep) rather than
    /// being polled.
    pub fn uses_interrupts(&self) -> bool {
        self.interrupts.is_some()
    }

    /// Commands queued and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.slots.busy() + self.finished.len()
    }

    /// How many commands can be queued at once (the depth minus one).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Whether the queue is rung through shadow doorbells
    /// ([`ControllerOptions::shadow_doorbells`](crate::ControllerOptions)).
    pub fn has_shadow_doorbells(&self) -> bool {
        self.queue.has_shadow_doorbells()
    }

    /// How many doorbell registers this queue has written (submission tail
    /// and completion head), a figure to compare with the commands it ran:
    /// with shadow doorbells most updates need none.
    pub fn doorbell_writes(&self) -> u64 {
        self.queue.doorbell_writes()
    }

    /// Reads `blocks` logical blocks of `ns` from `lba` into the start of
    /// `buffer`, and waits for the completion.
    pub fn read(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: &DmaRegion,
    ) -> Result<(), NvmeError> {
        self.transfer_now(Op::Read, ns, lba, blocks, buffer, 0)
    }

    /// Writes `blocks` logical blocks of `ns` at `lba` from the start of
    /// `buffer`, and waits for the completion.
    pub fn write(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: &DmaRegion,
    ) -> Result<(), NvmeError> {
        self.transfer_now(Op::Write, ns, lba, blocks, buffer, 0)
    }

    /// Like [`IoQueue::read`], into `buffer` from byte `offset` (a multiple
    /// of 4: PRP offsets are dword aligned).
    pub fn read_at(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: &DmaRegion,
        offset: usize,
    ) -> Result<(), NvmeError> {
        self.transfer_now(Op::Read, ns, lba, blocks, buffer, offset)
    }

    /// Like [`IoQueue::write`], from `buffer` at byte `offset`.
    pub fn write_at(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: &DmaRegion,
        offset: usize,
    ) -> Result<(), NvmeError> {
        self.transfer_now(Op::Write, ns, lba, blocks, buffer, offset)
    }

    /// Flushes namespace `ns`'s volatile write cache, and waits.
    pub fn flush(&mut self, ns: &Namespace) -> Result<(), NvmeError> {
        self.wait_now("Flush", Command::new(nvm::FLUSH, ns.id))
    }

    /// Sets `blocks` blocks of `ns` from `lba` to zeroes without moving data
    /// (Write Zeroes), and waits; [`NvmeError::Unsupported`] when the
    /// controller does not offer it.
    pub fn write_zeroes(&mut self, ns: &Namespace, lba: u64, blocks: u32) -> Result<(), NvmeError> {
        self.supports(ONCS_WRITE_ZEROES, "Write Zeroes")?;
        if blocks == 0 || blocks > 65536 {
            return Err(NvmeError::Transfer {
                what: format!("{blocks} blocks: Write Zeroes takes 1 to 65536"),
            });
        }
        let command = Command::io(nvm::WRITE_ZEROES, ns.id, lba, blocks, 0, 0);
        self.wait_now("Write Zeroes", command)
    }

    /// Tells the controller the blocks of `ranges` (first block, count) of
    /// `ns` hold nothing worth keeping (Dataset Management, deallocate), and
    /// waits; [`NvmeError::Unsupported`] when the controller does not offer
    /// it. Up to 256 ranges a call.
    pub fn deallocate(&mut self, ns: &Namespace, ranges: &[(u64, u32)]) -> Result<(), NvmeError> {
        self.supports(ONCS_DSM, "Dataset Management")?;
        if ranges.is_empty() || ranges.len() > MAX_RANGES {
            return Err(NvmeError::Transfer {
                what: format!(
                    "{} ranges: deallocate takes 1 to {MAX_RANGES}",
                    ranges.len()
                ),
            });
        }
        // The range list goes in the waited command's PRP list page.
        let at = self.slots.len() * self.pages_per_command * PAGE;
        let entries: Vec<[u32; 4]> = ranges
            .iter()
            .map(|&(lba, blocks)| [0, blocks, lba as u32, (lba >> 32) as u32])
            .collect();
        self.lists.write_array(at, &entries)?;
        DmaRegion::sync_for_device(&self.lists);
        let mut command = Command::new(nvm::DATASET_MANAGEMENT, ns.id);
        command.prp1 = self.lists.device_addr() + at as u64;
        command.cdw10[0] = (ranges.len() - 1) as u32;
        // Attribute: deallocate.
        command.cdw10[1] = 1 << 2;
        self.wait_now("Dataset Management", command)
    }

    fn supports(&self, bit: u16, what: &str) -> Result<(), NvmeError> {
        if self.oncs & bit == 0 {
            return Err(NvmeError::Unsupported {
                address: self.shared.device.address(),
                why: format!("the controller does not offer {what} (ONCS)"),
            });
        }
        Ok(())
    }

    /// Queues `op` of `blocks` blocks of `ns` at `lba` on the start of
    /// `buffer`, which the command owns until it is reaped; `tag` comes back
    /// with it. Returns at once; the buffer comes back in the error if the
    /// command could not be queued.
    ///
    /// ```no_run
    /// # use usrdrv_nvme::{Controller, Op};
    /// # let mut nvme = Controller::open("0000:00:02.0".parse()?)?;
    /// # let ns = nvme.namespaces()?[0];
    /// let mut queue = nvme.io_queue(32)?;
    /// for i in 0..8 {
    ///     let buffer = nvme.device().alloc_dma(4096)?;
    ///     queue.submit(Op::Read, &ns, i * 8, 8, buffer, i)?;
    /// }
    /// while queue.in_flight() > 0 {
    ///     let done = queue.wait()?;
    ///     done.result?;
    ///     // done.buffer holds blocks done.tag * 8 ..
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit(
        &mut self,
        op: Op,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        tag: u64,
    ) -> Result<(), Rejected<B>> {
        self.queue_command(op, ns, lba, blocks, buffer, tag, true)
    }

    /// Queues a command as [`IoQueue::submit`] does, but does not ring the
    /// submission doorbell: [`IoQueue::ring`] does, once for every command
    /// queued this way since the last doorbell (one register write for a
    /// batch, which an emulated controller pays dearly for), and so do
    /// [`IoQueue::reap`], [`IoQueue::wait`] and the next `submit`, so a
    /// command is never left unseen by a thread that waits for it. Until
    /// then the controller does not know of the command; it owns its buffer
    /// all the same.
    pub fn submit_deferred(
        &mut self,
        op: Op,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        tag: u64,
    ) -> Result<(), Rejected<B>> {
        self.queue_command(op, ns, lba, blocks, buffer, tag, false)
    }

    /// Rings the submission doorbell for the commands queued with
    /// [`IoQueue::submit_deferred`], if there are any.
    pub fn ring(&mut self) -> Result<(), NvmeError> {
        self.shared.live()?;
        // After a reset the queue is new: what was queued comes back failed.
        self.recover()?;
        self.queue.ring_tail(&self.shared.bar)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one transfer's whole description, and whether to ring"
    )]
    fn queue_command(
        &mut self,
        op: Op,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: B,
        tag: u64,
        ring: bool,
    ) -> Result<(), Rejected<B>> {
        if let Err(error) = self.shared.live().and_then(|()| self.recover()) {
            return Err(Rejected { error, buffer });
        }
        let Some(slot) = self.slots.next_free() else {
            return Err(Rejected {
                error: NvmeError::QueueFull {
                    qid: self.queue.qid(),
                },
                buffer,
            });
        };
        let prepared = self.check_buffer(op, &buffer).and_then(|()| {
            buffer.with_segments(|segments| self.prepare(op, ns, lba, blocks, segments, 0, slot))
        });
        let command = match prepared {
            Ok(command) => command,
            Err(error) => return Err(Rejected { error, buffer }),
        };
        let cid = slot as u16;
        let queued = if ring {
            self.queue.submit(&self.shared.bar, command, cid)
        } else {
            self.queue.push(command, cid)
        };
        if let Err(error) = queued {
            return Err(Rejected { error, buffer });
        }
        // The deadline starts when a wait first reads the clock (soon after,
        // and without a clock read per command; see `spin`).
        self.slots.occupy(InFlight {
            buffer,
            tag,
            op,
            deadline: None,
            aborted: false,
            timed_out: false,
        });
        Ok(())
    }

    /// A finished queued command, if one has completed: does not wait.
    pub fn reap(&mut self) -> Result<Option<Completed<B>>, NvmeError> {
        if let Some(done) = self.finished.pop_front() {
            return Ok(Some(done));
        }
        self.recover()?;
        if let Some(done) = self.finished.pop_front() {
            return Ok(Some(done));
        }
        if self.queue.has_unrung() {
            self.ring()?;
        }
        // Every completion posted so far, then the head told once for all
        // (if the completion queue's slack needs it: see `QueuePair::ring_head`).
        let mut taken = false;
        while let Some(done) = self.queue.take()? {
            taken = true;
            if let Some(done) = self.finish(done) {
                self.finished.push_back(done);
            }
        }
        if taken {
            self.queue.ring_head(&self.shared.bar)?;
        }
        Ok(self.finished.pop_front())
    }

    /// The next finished queued command, waiting for it. A command past its
    /// deadline is aborted, and if that does not end it the controller is
    /// reset, which ends every command in flight: each comes back failed
    /// ([`NvmeError::Timeout`] or [`NvmeError::Reset`]) with its buffer,
    /// safe to reuse (see the crate's safety model).
    pub fn wait(&mut self) -> Result<Completed<B>, NvmeError> {
        if self.in_flight() == 0 {
            return Err(NvmeError::Transfer {
                what: "nothing is queued to wait for".into(),
            });
        }
        let mut spin = Spin::new();
        loop {
            if let Some(done) = self.reap()? {
                return Ok(done);
            }
            // Revoked: the buffers in flight stay here until the queue is
            // dropped (the controller is no longer there to complete them).
            self.shared.live()?;
            // Polled, the clock is read once in many turns; on interrupts
            // every wake-up reads it (the wait itself cost far more).
            if self.interrupts.is_none() && spin.turn().is_none() {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            let Some((slot, deadline)) = self.next_deadline(now) else {
                continue;
            };
            if now >= deadline {
                self.expire(slot)?;
                continue;
            }
            self.sleep_until(deadline)?;
        }
    }

    /// The command in flight whose deadline comes first, and the deadline;
    /// commands without one yet get theirs from `now`.
    fn next_deadline(&mut self, now: Instant) -> Option<(usize, Instant)> {
        let timeout = self.shared.timeout();
        self.slots
            .iter_mut()
            .map(|(i, s)| (i, *s.deadline.get_or_insert(now + timeout)))
            .min_by_key(|&(_, deadline)| deadline)
    }

    /// Waits for this queue's interrupt until `deadline` (polled queues
    /// just spin once).
    fn sleep_until(&self, deadline: Instant) -> Result<(), NvmeError> {
        let Some(irqs) = &self.interrupts else {
            std::hint::spin_loop();
            return Ok(());
        };
        // A completion posted since the last poll has raised the vector
        // already: the wait returns at once then.
        let left = deadline.saturating_duration_since(Instant::now());
        match irqs.wait(usize::from(self.queue.qid()), Some(left)) {
            Ok(_) => Ok(()),
            Err(IrqError::Revoked { .. }) => self.shared.live(),
            Err(e) => Err(NvmeError::Irq(e)),
        }
    }

    /// Command `slot` is past its deadline: abort it, or if it was aborted
    /// and still has not completed (or the controller would not abort it),
    /// reset the controller, which ends it and everything else in flight.
    fn expire(&mut self, slot: usize) -> Result<(), NvmeError> {
        let qid = self.queue.qid();
        let Some(entry) = self.slots.get_mut(slot) else {
            return Ok(());
        };
        if !entry.aborted {
            entry.aborted = true;
            match self.shared.abort(qid, slot as u16) {
                Ok(true) => {
                    // Aborted: its completion comes, with "Command Abort
                    // Requested"; give it one more timeout to arrive.
                    entry.deadline = Some(Instant::now() + self.shared.timeout());
                    return Ok(());
                }
                Err(e) if e.is_revoked() => return Err(e),
                _ => {}
            }
        }
        entry.timed_out = true;
        // It may have completed while the Abort ran.
        while let Some(done) = self.queue.poll(&self.shared.bar)? {
            if let Some(completed) = self.finish(done) {
                self.finished.push_back(completed);
            }
        }
        if self.slots.is_free(slot) {
            return Ok(());
        }
        self.shared.check_alive()?;
        self.shared.reset_after(self.generation)?;
        self.recover()
    }

    /// After a controller reset: everything that was in flight comes back
    /// failed (the command that timed out with [`NvmeError::Timeout`], the
    /// others with [`NvmeError::Reset`]), since the reset stopped the
    /// controller's DMA first; then the queue is created again, empty.
    fn recover(&mut self) -> Result<(), NvmeError> {
        if self.shared.generation() == self.generation {
            return Ok(());
        }
        let qid = self.queue.qid();
        let timeout = self.shared.timeout();
        for (
            cid,
            InFlight {
                buffer,
                tag,
                op,
                timed_out,
                ..
            },
        ) in self.slots.take_all()
        {
            let result = Err(if timed_out {
                NvmeError::Timeout {
                    what: format!(
                        "{} (command {cid}) on queue {qid}, neither completed nor aborted: the controller was reset",
                        op.name()
                    ),
                    waited: timeout,
                }
            } else {
                NvmeError::Reset { command: op.name() }
            });
            self.finished.push_back(Completed {
                tag,
                buffer,
                result,
            });
        }
        self.queue.clear()?;
        let mut admin = self.shared.lock_admin();
        if admin.disabled {
            return Err(NvmeError::Disabled);
        }
        self.shared
            .create_queue(&mut admin, &self.queue, self.vector)?;
        // Read with the admin queue held: no reset can come in between.
        self.generation = self.shared.generation();
        Ok(())
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one transfer's whole description"
    )]
    fn prepare(
        &self,
        op: Op,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        segments: &[SgEntry],
        offset: usize,
        slot: usize,
    ) -> Result<Command, NvmeError> {
        if self.shared.is_disabled() {
            return Err(NvmeError::Disabled);
        }
        let len = usize::try_from(blocks)
            .unwrap_or(usize::MAX)
            .saturating_mul(ns.block_size);
        if blocks == 0 || blocks > 65536 || len > self.max_transfer {
            return Err(NvmeError::Transfer {
                what: format!(
                    "{blocks} blocks of {} bytes: one command moves 1 to 65536 blocks and at most {} bytes (MDTS)",
                    ns.block_size, self.max_transfer
                ),
            });
        }
        let size: usize = segments.iter().map(|s| s.len).sum();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(NvmeError::Transfer {
                what: format!("{len} bytes at offset {offset} do not fit the {size}-byte buffer"),
            });
        }
        // The common case: the bytes lie in one run of device addresses.
        let one_run = segments
            .first()
            .filter(|first| offset + len <= first.len)
            .map(|first| first.device_addr + offset as u64);
        if let Some(first_byte) = one_run {
            // One or two pages (a 4 KiB command, aligned or not): no list,
            // and nothing to build or allocate on the hot path.
            if !self.sgls
                && let Some((prp1, prp2)) = prp::direct(first_byte, len, PAGE as u64)
            {
                return Ok(Command::io(op.opcode(), ns.id, lba, blocks, prp1, prp2));
            }
            if self.sgls {
                // One SGL Data Block descriptor (address, length, type 0)
                // in place of PRP1/PRP2.
                let mut command = Command::io(op.opcode(), ns.id, lba, blocks, first_byte, 0);
                command.prp2 = u64::from(u32::try_from(len).unwrap_or(u32::MAX));
                command.cdw0 |= PSDT_SGL;
                return Ok(command);
            }
        }
        // Several runs (a mapping without an IOMMU) are described with PRPs,
        // also on a queue that uses SGLs for the rest.
        let runs = prp::window(segments, offset, len);
        let pages = prp::pages(&runs, PAGE as u64)?;
        let first = slot * self.pages_per_command;
        let list_pages: Vec<u64> = (first..first + self.pages_per_command)
            .map(|i| self.lists.device_addr() + (i * PAGE) as u64)
            .collect();
        let prps = prp::build(&pages, PAGE as u64, &list_pages)?;
        for list in &prps.lists {
            let at =
                usize::try_from(list.device_addr - self.lists.device_addr()).unwrap_or(usize::MAX);
            self.lists.write_array(at, &list.entries)?;
        }
        Ok(Command::io(
            op.opcode(),
            ns.id,
            lba,
            blocks,
            prps.prp1,
            prps.prp2,
        ))
    }

    /// Whether `buffer` can carry `op`, and handed to the device if it is a
    /// write's.
    fn check_buffer(&self, op: Op, buffer: &B) -> Result<(), NvmeError> {
        match op {
            Op::Read if !buffer.device_writable() => Err(NvmeError::Transfer {
                what: "a read's buffer must let the device write it: map it FromDevice or \
                       Bidirectional"
                    .into(),
            }),
            Op::Read => Ok(()),
            Op::Write => Ok(buffer.sync_for_device()?),
        }
    }

    fn transfer_now(
        &mut self,
        op: Op,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        buffer: &DmaRegion,
        offset: usize,
    ) -> Result<(), NvmeError> {
        let whole = [SgEntry {
            device_addr: buffer.device_addr(),
            len: buffer.len(),
        }];
        if op == Op::Write {
            buffer.sync_for_device();
        }
        let command = self.prepare(op, ns, lba, blocks, &whole, offset, self.slots.len())?;
        self.wait_now(op.name(), command)?;
        if op == Op::Read {
            buffer.sync_for_cpu();
        }
        Ok(())
    }

    /// Submits `command` and waits for it, keeping the completions of queued
    /// commands that arrive meanwhile for `reap`. Past the command timeout it
    /// is aborted, and if that does not end it, the controller is reset.
    fn wait_now(&mut self, name: &'static str, command: Command) -> Result<(), NvmeError> {
        self.recover()?;
        let qid = self.queue.qid();
        self.queue.submit(&self.shared.bar, command, WAITED)?;
        let generation = self.generation;
        let timeout = self.shared.timeout();
        // From the submission: one clock read per command waited for (the
        // queued ones get theirs at a wait's first clock read, see `spin`).
        let mut deadline = Some(Instant::now() + timeout);
        let mut spin = Spin::new();
        let mut aborted = false;
        loop {
            if let Some(done) = self.queue.poll(&self.shared.bar)? {
                if done.cid != WAITED {
                    if let Some(completed) = finish(&mut self.slots, done, timeout) {
                        self.finished.push_back(completed);
                    }
                    continue;
                }
                if aborted && done.status_field() == ABORT_REQUESTED {
                    return Err(NvmeError::Timeout {
                        what: format!("{name} on queue {qid}, aborted"),
                        waited: timeout,
                    });
                }
                return status_of(name, done).map(drop);
            }
            self.shared.live()?;
            if self.shared.generation() != generation {
                // Another queue's recovery reset the controller: the
                // command is gone with everything else.
                self.recover()?;
                return Err(NvmeError::Reset { command: name });
            }
            if self.interrupts.is_none() && spin.turn().is_none() {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            let due = *deadline.get_or_insert(now + timeout);
            if now < due {
                self.sleep_until(due)?;
                continue;
            }
            if !aborted {
                aborted = true;
                match self.shared.abort(qid, WAITED) {
                    // Aborted, or perhaps completed while the Abort ran:
                    // one more timeout for its completion to show.
                    Ok(true) => {
                        deadline = Some(Instant::now() + timeout);
                        continue;
                    }
                    Err(e) if e.is_revoked() => return Err(e),
                    _ => {
                        if let Some(done) = self.drain_for(WAITED)? {
                            return status_of(name, done).map(drop);
                        }
                    }
                }
            }
            self.shared.check_alive()?;
            self.shared.reset_after(generation)?;
            self.recover()?;
            return Err(NvmeError::Timeout {
                what: format!(
                    "{name} on queue {qid}, neither completed nor aborted: the controller was reset"
                ),
                waited: timeout,
            });
        }
    }

    /// Reaps what the completion queue holds, keeping queued commands'
    /// completions for `reap`; returns command `cid`'s if it is there.
    fn drain_for(&mut self, cid: u16) -> Result<Option<Completion>, NvmeError> {
        let mut wanted = None;
        while let Some(done) = self.queue.poll(&self.shared.bar)? {
            if done.cid == cid {
                wanted = Some(done);
            } else if let Some(completed) = self.finish(done) {
                self.finished.push_back(completed);
            }
        }
        Ok(wanted)
    }

    /// The queued command `done` completes, with its buffer.
    fn finish(&mut self, done: Completion) -> Option<Completed<B>> {
        finish(&mut self.slots, done, self.shared.timeout())
    }
}

/// Takes the command `done` completes out of `slots`.
fn finish<B: IoBuffer>(
    slots: &mut Slots<InFlight<B>>,
    done: Completion,
    timeout: Duration,
) -> Option<Completed<B>> {
    let InFlight {
        buffer,
        tag,
        op,
        aborted,
        ..
    } = slots.take(usize::from(done.cid))?;
    // A read's data, copied back from a bounce buffer where there is one:
    // if that fails the read did not deliver.
    let synced = match op {
        Op::Read => buffer.sync_for_cpu(),
        Op::Write => Ok(()),
    };
    let result = if aborted && done.status_field() == ABORT_REQUESTED {
        Err(NvmeError::Timeout {
            what: format!(
                "{} (command {}) on queue {}, aborted",
                op.name(),
                done.cid,
                done.sq_id
            ),
            waited: timeout,
        })
    } else {
        status_of(op.name(), done)
            .map(drop)
            .and_then(|()| Ok(synced?))
    };
    Some(Completed {
        tag,
        buffer,
        result,
    })
}

impl<B: IoBuffer> Drop for IoQueue<B> {
    fn drop(&mut self) {
        let mut admin = self.shared.lock_admin();
        let qid = self.queue.qid();
        admin.qids.remove(&qid);
        if self.shared.generation() != self.generation {
            // Reset since: the controller no longer has this queue.
            return;
        }
        let mut sq = Command::new(admin::DELETE_SQ, 0);
        sq.cdw10[0] = u32::from(qid);
        let deleted = self
            .shared
            .admin_command(&mut admin, "Delete I/O Submission Queue", sq);
        if deleted.is_err() && self.slots.busy() > 0 {
            // Commands may still be live: stop them (a reset) before their
            // buffers are freed, or stop the controller for good.
            if self.shared.reset_from(&mut admin, self.generation).is_err() {
                self.shared.disable_for_good(&mut admin);
                let _ = disable(
                    &self.shared.bar,
                    self.shared.cap,
                    self.shared.device.address(),
                );
            }
            return;
        }
        let mut cq = Command::new(admin::DELETE_CQ, 0);
        cq.cdw10[0] = u32::from(qid);
        let _ = self
            .shared
            .admin_command(&mut admin, "Delete I/O Completion Queue", cq);
    }
}
