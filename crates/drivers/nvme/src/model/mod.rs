//! A model of an NVMe controller (NVMe base specification 1.4, the NVM
//! command set) with one namespace in memory, for running the driver (or
//! any NVMe driver on usrdrv) in `cargo test` with [`usrdrv::emulated`]:
//! no VM, no root.
//!
//! It has what this driver uses and QEMU's controller has: the controller
//! registers and doorbells, the admin queue, Identify (controller,
//! namespace, active namespace list), Set Features (Number of Queues), I/O
//! queue creation and deletion with an MSI-X vector per completion queue,
//! Abort, Doorbell Buffer Config (shadow doorbells for the I/O queues, with
//! QEMU 7.2's event indexes: a submission queue asks for a doorbell at the
//! tail it has caught up with, a completion queue never asks), and Read,
//! Write (PRP entries and chained PRP lists), Flush, Write Zeroes and
//! Dataset Management (deallocate). Commands run when their
//! doorbell is rung, in the driver's thread; a completion's status word
//! (with the phase tag) is written after the rest of it.
//!
//! Faults a test can ask of it, on top of usrdrv's own: the next reads or
//! writes held in flight forever (a command that never completes, until an
//! Abort or a reset), the next ones failing with a chosen status, and Abort
//! supported or not (QEMU's never aborts).
//!
//! ```
//! use usrdrv::Device;
//! use usrdrv::dma::DmaMask;
//! use usrdrv::emulated::EmulatedDevice;
//! use usrdrv_nvme::Controller;
//! use usrdrv_nvme::model::NvmeModel;
//!
//! let emulated = EmulatedDevice::new(NvmeModel::new());
//! let mut nvme = Controller::from_device(Device::emulated(&emulated, DmaMask::BITS_64)?)?;
//! let ns = nvme.namespaces()?[0];
//! let mut queue = nvme.io_queue(16)?;
//! let buffer = nvme.device().alloc_dma(4096)?;
//! buffer.write_bytes(0, b"on the model's disk")?;
//! queue.write(&ns, 8, ns.blocks_in(4096), &buffer)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod commands;
mod queues;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use usrdrv::emulated::{Bus, DeviceModel, ModelInfo};

use crate::regs;
use commands::Outcome;
use queues::{Cq, Queues, Sq};

/// QEMU's NVMe controller's PCI vendor ID (Red Hat).
pub const VENDOR_ID: u16 = 0x1b36;
/// QEMU's NVMe controller's PCI device ID.
pub const DEVICE_ID: u16 = 0x0010;
/// NVMe 1.4.
const VERSION: u32 = 0x0001_0400;
/// BAR 0: registers and 1536 queue pairs' doorbells.
const BAR0_LEN: u64 = 16 * 1024;

/// What the modelled controller and its namespace look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeModelConfig {
    /// Namespace 1's size in logical blocks.
    pub blocks: u64,
    /// Logical block size, as a power of two (9: 512 bytes).
    pub block_shift: u32,
    /// Maximum Data Transfer Size, as a power of two of 4 KiB (7: 512 KiB).
    pub mdts: u8,
    /// The most I/O queue pairs Set Features grants, plus the admin pair.
    pub max_queue_pairs: u16,
    /// The largest queue, in entries (CAP.MQES + 1).
    pub max_queue_entries: u16,
    /// MSI-X vectors.
    pub msix_vectors: u32,
    /// Whether Abort aborts a command the model holds.
    pub abort: bool,
    /// Whether the controller offers Doorbell Buffer Config (OACS bit 8).
    pub doorbell_buffer: bool,
    /// Identify Controller's serial number.
    pub serial: String,
    /// Identify Controller's model number.
    pub model: String,
    /// Identify Controller's firmware revision.
    pub firmware: String,
}

impl Default for NvmeModelConfig {
    /// 8 MiB of 512-byte blocks, QEMU 7.2's limits (MDTS 7, 64 I/O queue
    /// pairs, 2048 entries, 65 MSI-X vectors), Abort and Doorbell Buffer
    /// Config supported.
    fn default() -> Self {
        Self {
            blocks: 16 * 1024,
            block_shift: 9,
            mdts: 7,
            max_queue_pairs: 65,
            max_queue_entries: 2048,
            msix_vectors: 65,
            abort: true,
            doorbell_buffer: true,
            serial: "usrdrv-model-0".into(),
            model: "usrdrv NVMe model".into(),
            firmware: "1.0".into(),
        }
    }
}

/// The controller's state.
#[derive(Debug)]
struct State {
    config: NvmeModelConfig,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    queues: Queues,
    /// I/O queue pairs granted by Set Features.
    granted: Option<u16>,
    /// The shadow doorbell and event index buffers, once configured.
    doorbell_buffers: Option<(u64, u64)>,
    storage: Vec<u8>,
    /// Commands in flight that the model will not complete: (queue, id).
    held: Vec<(u16, u16)>,
    /// Reads and writes still to hold.
    hold_io: u32,
    /// Statuses the next reads and writes complete with.
    fail_io: VecDeque<u16>,
    /// Commands aborted so far.
    aborted: u32,
    /// Controller resets (CC.EN cleared while enabled, or a function reset).
    resets: u32,
}

/// A modelled NVMe controller (see the [module documentation](self)).
/// Clones share the controller, so a test keeps one to look inside.
#[derive(Debug, Clone)]
pub struct NvmeModel {
    state: Arc<Mutex<State>>,
}

impl Default for NvmeModel {
    fn default() -> Self {
        Self::new()
    }
}

impl NvmeModel {
    /// A controller with the [default](NvmeModelConfig::default) configuration.
    pub fn new() -> Self {
        Self::with_config(NvmeModelConfig::default())
    }

    /// A controller configured by `config`.
    pub fn with_config(config: NvmeModelConfig) -> Self {
        let bytes = usize::try_from(config.blocks << config.block_shift).unwrap_or(0);
        Self {
            state: Arc::new(Mutex::new(State {
                config,
                cc: 0,
                csts: 0,
                aqa: 0,
                asq: 0,
                acq: 0,
                queues: Queues::default(),
                granted: None,
                doorbell_buffers: None,
                storage: vec![0; bytes],
                held: Vec::new(),
                hold_io: 0,
                fail_io: VecDeque::new(),
                aborted: 0,
                resets: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the next `n` reads or writes in flight: the controller never
    /// completes them (until an Abort, a queue deletion or a reset).
    pub fn hold_next_io(&self, n: u32) {
        self.lock().hold_io = n;
    }

    /// Completes the next read or write with `status` (status code type
    /// << 8 | status code, as [`Status`](crate::status::Status) holds it),
    /// moving no data.
    pub fn fail_next_io(&self, status: u16) {
        self.lock().fail_io.push_back(status);
    }

    /// Commands the model holds in flight now, as (queue, command id).
    pub fn held(&self) -> Vec<(u16, u16)> {
        self.lock().held.clone()
    }

    /// Commands aborted so far.
    pub fn aborted(&self) -> u32 {
        self.lock().aborted
    }

    /// Controller resets so far.
    pub fn resets(&self) -> u32 {
        self.lock().resets
    }

    /// Whether the driver has handed the controller shadow doorbell buffers
    /// (Doorbell Buffer Config) since its last reset.
    pub fn has_doorbell_buffers(&self) -> bool {
        self.lock().doorbell_buffers.is_some()
    }

    /// `len` bytes of the namespace from byte `offset`, as the disk holds them.
    pub fn disk(&self, offset: usize, len: usize) -> Vec<u8> {
        self.lock().storage[offset..offset + len].to_vec()
    }
}

impl State {
    /// Queue `qid`'s slots in the shadow buffers (`cq`: its head's), if the
    /// driver configured them; the admin queue keeps to its registers.
    fn shadow_slot(&self, qid: u16, cq: bool) -> Option<queues::ShadowSlot> {
        let (doorbells, event_indexes) = self.doorbell_buffers?;
        // CAP.DSTRD is 0: 4-byte slots in the registers' order.
        let at = (2 * u64::from(qid) + u64::from(cq)) * 4;
        (qid != 0).then_some(queues::ShadowSlot {
            doorbell: doorbells + at,
            event_index: event_indexes + at,
        })
    }

    fn cap(&self) -> u64 {
        u64::from(self.config.max_queue_entries - 1)
            | 1 << 16 // contiguous queues required
            | 15 << 24 // 7.5 s to become (not) ready
            | 1 << 37 // the NVM command set
            | 4 << 52 // pages of 4 KiB to 64 KiB
    }

    /// Back to disabled: every queue and every command in flight gone.
    fn disable(&mut self) {
        if self.csts & regs::CSTS_READY != 0 {
            self.resets += 1;
        }
        self.queues = Queues::default();
        self.held.clear();
        self.granted = None;
        self.doorbell_buffers = None;
        self.csts &= !regs::CSTS_READY;
    }

    fn set_cc(&mut self, value: u32) {
        let was = self.cc & regs::CC_ENABLE != 0;
        let now = value & regs::CC_ENABLE != 0;
        self.cc = value;
        match (was, now) {
            (false, true) => {
                let sq_size = (self.aqa & 0xfff) as u16 + 1;
                let cq_size = ((self.aqa >> 16) & 0xfff) as u16 + 1;
                if sq_size < 2
                    || cq_size < 2
                    || !self.asq.is_multiple_of(4096)
                    || !self.acq.is_multiple_of(4096)
                {
                    self.csts |= regs::CSTS_FATAL;
                    return;
                }
                self.queues
                    .cqs
                    .insert(0, Cq::new(self.acq, cq_size, Some(0)));
                self.queues.sqs.insert(
                    0,
                    Sq {
                        base: self.asq,
                        size: sq_size,
                        head: 0,
                        tail: 0,
                        cqid: 0,
                        shadow: None,
                    },
                );
                self.csts = regs::CSTS_READY;
            }
            (true, false) => self.disable(),
            _ => {}
        }
    }

    /// A doorbell write at `offset` (≥ 0x1000).
    fn doorbell(&mut self, bus: &Bus, offset: u64, value: u32) {
        if self.csts & regs::CSTS_READY == 0 {
            return;
        }
        let index = (offset - regs::DOORBELLS) / 4;
        let qid = u16::try_from(index / 2).unwrap_or(u16::MAX);
        if index % 2 == 1 {
            if let Some(cq) = self.queues.cqs.get_mut(&qid) {
                cq.set_head(bus, value as u16);
            }
            return;
        }
        match self.queues.sqs.get_mut(&qid) {
            Some(sq) if value < u32::from(sq.size) => {
                sq.tail = value as u16;
                sq.refresh(bus);
            }
            _ => return,
        }
        while let Some((command, _)) = self.queues.fetch(bus, qid) {
            let cid = (command.cdw0 >> 16) as u16;
            match self.execute(bus, qid, &command) {
                Outcome::Done(status, result) => {
                    self.queues.complete(bus, qid, cid, status, result);
                }
                Outcome::Held => {}
            }
        }
    }
}

/// The value of the 8-byte register `value` for a `width`-byte read at
/// `offset` (`base` is where the register starts).
fn part(value: u64, base: u64, offset: u64, width: usize) -> u64 {
    match (offset - base, width) {
        (0, 8) => value,
        (0, _) => value & 0xffff_ffff,
        (4, _) => value >> 32,
        _ => 0,
    }
}

/// `old` with the half (or the whole) written by a `width`-byte write at
/// `offset` of the 8-byte register starting at `base`.
fn merge(old: u64, base: u64, offset: u64, width: usize, value: u64) -> u64 {
    match (offset - base, width) {
        (0, 8) => value,
        (0, _) => old & !0xffff_ffff | value & 0xffff_ffff,
        (4, _) => old & 0xffff_ffff | value << 32,
        _ => old,
    }
}

impl DeviceModel for NvmeModel {
    fn info(&self) -> ModelInfo {
        let vectors = self.lock().config.msix_vectors;
        ModelInfo::new(VENDOR_ID, DEVICE_ID)
            .with_class(0x02, crate::CLASS_NVME)
            .with_bar(0, BAR0_LEN)
            .with_msix(vectors)
            .with_intx()
            .with_reset()
    }

    fn read(&self, _bus: &Bus, bar: u8, offset: u64, width: usize) -> u64 {
        if bar != 0 {
            return u64::MAX;
        }
        let state = self.lock();
        match offset {
            0x00..0x08 => part(state.cap(), 0x00, offset, width),
            regs::VS => u64::from(VERSION),
            regs::CC => u64::from(state.cc),
            regs::CSTS => u64::from(state.csts),
            regs::AQA => u64::from(state.aqa),
            0x28..0x30 => part(state.asq, regs::ASQ, offset, width),
            0x30..0x38 => part(state.acq, regs::ACQ, offset, width),
            _ => 0,
        }
    }

    fn write(&self, bus: &Bus, bar: u8, offset: u64, width: usize, value: u64) {
        if bar != 0 {
            return;
        }
        let mut state = self.lock();
        let low = (value & 0xffff_ffff) as u32;
        match offset {
            regs::CC => state.set_cc(low),
            regs::AQA => state.aqa = low,
            0x28..0x30 => state.asq = merge(state.asq, regs::ASQ, offset, width, value),
            0x30..0x38 => state.acq = merge(state.acq, regs::ACQ, offset, width, value),
            o if o >= regs::DOORBELLS && width == 4 => state.doorbell(bus, o, low),
            _ => {}
        }
    }

    fn reset(&self, _bus: &Bus) {
        let mut state = self.lock();
        state.disable();
        state.cc = 0;
        state.csts = 0;
        state.aqa = 0;
        state.asq = 0;
        state.acq = 0;
    }
}
