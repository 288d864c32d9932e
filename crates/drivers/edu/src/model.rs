//! A model of QEMU's edu device, written from its specification (QEMU's
//! `docs/specs/edu.rst`), for running the driver (or any edu driver) in
//! `cargo test` with [`usrdrv::emulated`]: no VM, no root.
//!
//! ```
//! use usrdrv::Device;
//! use usrdrv::emulated::EmulatedDevice;
//! use usrdrv_edu::{Edu, model::EduModel};
//!
//! let emulated = EmulatedDevice::new(EduModel::new());
//! let edu = Edu::from_device(Device::emulated(&emulated, usrdrv::dma::DmaMask::new(28)?)?)?;
//! assert_eq!(edu.factorial(5)?, 120);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! By default the model is the device the specification describes. QEMU
//! 7.2's quirks can be turned on one by one ([`Quirks`]), to test that a
//! driver copes with them: device addresses truncated to 28 bits, a fixed
//! completion delay, and the transfer ending exactly at the end of the
//! window that aborts QEMU.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use usrdrv::emulated::{Bus, DeviceModel, ModelInfo};

use crate::regs::{self, DmaCommand};
use crate::{DEVICE_ID, VENDOR_ID};

/// The identification register: version 1.0.
const IDENTIFICATION: u32 = 0x0100_00ed;
/// The DMA command bits.
const CMD_START: u64 = 0x1;
const CMD_FROM_DEVICE: u64 = 0x2;
const CMD_IRQ: u64 = 0x4;

/// Which of QEMU 7.2's behaviours beyond the specification the model has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quirks {
    /// Device addresses are cut to 28 bits before the DMA (QEMU's default
    /// `dma_mask`): an address above lands at the wrong place.
    pub truncate_to_28_bits: bool,
    /// How long a factorial or a DMA takes to complete (QEMU: 100 ms of
    /// virtual time per DMA). Zero completes them during the register write.
    pub completion_delay: Duration,
    /// A transfer ending exactly at the end of the window kills the device
    /// (QEMU aborts); afterwards every register reads all-ones.
    pub abort_at_window_end: bool,
}

impl Quirks {
    /// QEMU 7.2's edu: all of them, with its 100 ms per DMA.
    pub fn qemu_7_2() -> Self {
        Self {
            truncate_to_28_bits: true,
            completion_delay: Duration::from_millis(100),
            abort_at_window_end: true,
        }
    }
}

/// The DMA engine's registers.
#[derive(Debug, Default, Clone, Copy)]
struct Dma {
    src: u64,
    dst: u64,
    count: u64,
    cmd: u64,
}

/// The model's state (shared with its completion threads).
#[derive(Debug)]
struct State {
    liveness: AtomicU32,
    factorial: AtomicU32,
    status: AtomicU32,
    irq_status: AtomicU32,
    dma: Mutex<Dma>,
    window: Mutex<[u8; regs::WINDOW_LEN as usize]>,
    /// Set by the abort quirk: the device is gone.
    dead: AtomicBool,
    quirks: Quirks,
}

/// QEMU's edu device: identification, liveness, factorial, interrupts
/// (one MSI vector and INTx) and a DMA engine with a 4 KiB window at
/// device address 0x40000.
#[derive(Debug, Clone)]
pub struct EduModel {
    state: Arc<State>,
}

impl Default for EduModel {
    fn default() -> Self {
        Self::new()
    }
}

impl EduModel {
    /// The device as specified, completing everything at once.
    pub fn new() -> Self {
        Self::with_quirks(Quirks::default())
    }

    /// The device with `quirks`.
    pub fn with_quirks(quirks: Quirks) -> Self {
        Self {
            state: Arc::new(State {
                liveness: AtomicU32::new(0),
                factorial: AtomicU32::new(1),
                status: AtomicU32::new(0),
                irq_status: AtomicU32::new(0),
                dma: Mutex::new(Dma::default()),
                window: Mutex::new([0; regs::WINDOW_LEN as usize]),
                dead: AtomicBool::new(false),
                quirks,
            }),
        }
    }

    /// The device's 4 KiB buffer, as a test sees it.
    pub fn window(&self) -> Vec<u8> {
        self.state
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .to_vec()
    }

    /// Whether the abort quirk killed the device.
    pub fn is_dead(&self) -> bool {
        self.state.dead.load(Ordering::Relaxed)
    }
}

impl State {
    fn raise(&self, bus: &Bus, bits: u32) {
        self.irq_status.fetch_or(bits, Ordering::SeqCst);
        bus.interrupt(0);
    }

    /// Runs `work` now, or after the completion delay on a thread of its own.
    fn complete(self: &Arc<Self>, bus: &Bus, work: fn(&State, &Bus)) {
        let delay = self.quirks.completion_delay;
        if delay.is_zero() {
            work(self, bus);
        } else {
            let (state, bus) = (Arc::clone(self), bus.clone());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                work(&state, &bus);
            });
        }
    }

    fn finish_factorial(&self, bus: &Bus) {
        let n = self.factorial.load(Ordering::SeqCst);
        let result = (1..=n).fold(1u32, u32::wrapping_mul);
        self.factorial.store(result, Ordering::SeqCst);
        let status = self
            .status
            .fetch_and(!regs::STATUS_COMPUTING, Ordering::SeqCst);
        if status & regs::STATUS_IRQ_ON_FACTORIAL != 0 {
            self.raise(bus, regs::IRQ_FACTORIAL);
        }
    }

    /// The part of the window a transfer of `count` bytes at device address
    /// `addr` covers, if it lies inside (an abort when the quirk says so).
    fn window_range(&self, addr: u64, count: u64) -> Option<std::ops::Range<usize>> {
        let start = addr.checked_sub(regs::WINDOW_BASE)?;
        let end = start.checked_add(count)?;
        if self.quirks.abort_at_window_end && end == regs::WINDOW_LEN {
            self.dead.store(true, Ordering::SeqCst);
            return None;
        }
        if end > regs::WINDOW_LEN {
            return None;
        }
        Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    fn ram_address(&self, addr: u64) -> u64 {
        if self.quirks.truncate_to_28_bits {
            addr & ((1 << 28) - 1)
        } else {
            addr
        }
    }

    fn finish_dma(&self, bus: &Bus) {
        let dma = *self.dma.lock().unwrap_or_else(PoisonError::into_inner);
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        // A refused DMA (the IOMMU's fault) moves nothing; the engine still
        // finishes, as QEMU's does.
        if dma.cmd & CMD_FROM_DEVICE != 0 {
            if let Some(range) = self.window_range(dma.src, dma.count) {
                let _ = bus.write(self.ram_address(dma.dst), &window[range]);
            }
        } else if let Some(range) = self.window_range(dma.dst, dma.count) {
            let _ = bus.read(self.ram_address(dma.src), &mut window[range]);
        }
        drop(window);
        self.dma.lock().unwrap_or_else(PoisonError::into_inner).cmd &= !CMD_START;
        if dma.cmd & CMD_IRQ != 0 {
            self.raise(bus, regs::IRQ_DMA);
        }
    }
}

/// Whether edu takes a `width`-byte access at `offset`: 4 bytes below 0x80,
/// 4 or 8 from there on.
fn width_ok(offset: u64, width: usize) -> bool {
    width == 4 || (offset >= 0x80 && width == 8)
}

impl DeviceModel for EduModel {
    fn info(&self) -> ModelInfo {
        ModelInfo::new(VENDOR_ID, DEVICE_ID)
            .with_class(0x10, 0x00ff_0000)
            .with_bar(0, regs::BAR0_LEN)
            .with_msi(1)
            .with_intx()
    }

    fn read(&self, _bus: &Bus, bar: u8, offset: u64, width: usize) -> u64 {
        let state = &self.state;
        if bar != 0 || state.dead.load(Ordering::SeqCst) || !width_ok(offset, width) {
            return u64::MAX;
        }
        let dma = || *state.dma.lock().unwrap_or_else(PoisonError::into_inner);
        let value = match offset {
            0x00 => u64::from(IDENTIFICATION),
            0x04 => u64::from(!state.liveness.load(Ordering::SeqCst)),
            0x08 => u64::from(state.factorial.load(Ordering::SeqCst)),
            0x20 => u64::from(state.status.load(Ordering::SeqCst)),
            0x24 => u64::from(state.irq_status.load(Ordering::SeqCst)),
            0x80 => dma().src,
            0x88 => dma().dst,
            0x90 => dma().count,
            0x98 => dma().cmd,
            _ => u64::MAX,
        };
        if width == 4 {
            value & u64::from(u32::MAX)
        } else {
            value
        }
    }

    fn write(&self, bus: &Bus, bar: u8, offset: u64, width: usize, value: u64) {
        let state = &self.state;
        if bar != 0 || state.dead.load(Ordering::SeqCst) || !width_ok(offset, width) {
            return;
        }
        // Registers below 0x80 are 32 bits wide.
        let low = (value & u64::from(u32::MAX)) as u32;
        match offset {
            0x04 => state.liveness.store(low, Ordering::SeqCst),
            0x08 => {
                let status = state.status.load(Ordering::SeqCst);
                if status & regs::STATUS_COMPUTING == 0 {
                    state.factorial.store(low, Ordering::SeqCst);
                    state
                        .status
                        .fetch_or(regs::STATUS_COMPUTING, Ordering::SeqCst);
                    state.complete(bus, State::finish_factorial);
                }
            }
            0x20 => {
                if low & regs::STATUS_IRQ_ON_FACTORIAL != 0 {
                    state
                        .status
                        .fetch_or(regs::STATUS_IRQ_ON_FACTORIAL, Ordering::SeqCst);
                } else {
                    state
                        .status
                        .fetch_and(!regs::STATUS_IRQ_ON_FACTORIAL, Ordering::SeqCst);
                }
            }
            0x60 => state.raise(bus, low),
            0x64 => {
                state.irq_status.fetch_and(!low, Ordering::SeqCst);
            }
            0x80..=0x98 => {
                let mut dma = state.dma.lock().unwrap_or_else(PoisonError::into_inner);
                // The engine ignores its registers while it runs.
                if DmaCommand::running(dma.cmd) {
                    return;
                }
                match offset {
                    0x80 => dma.src = value,
                    0x88 => dma.dst = value,
                    0x90 => dma.count = value,
                    0x98 if value & CMD_START != 0 => {
                        dma.cmd = value;
                        drop(dma);
                        state.complete(bus, State::finish_dma);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}
