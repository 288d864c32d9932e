//! A user-space driver for QEMU's `edu` teaching device, built only on usrdrv's
//! public API: typed registers, identification and liveness, factorial, and DMA
//! in both directions through DMA buffers and mapped caller buffers.
//!
//! ```no_run
//! use usrdrv_edu::Edu;
//!
//! let edu = Edu::open(Edu::find()?)?;
//! let (major, minor) = edu.identification()?;
//! println!("edu {major}.{minor}, 5! = {}", edu.factorial(5)?);
//! # Ok::<(), usrdrv_edu::EduError>(())
//! ```
//!
//! The device's quirks (QEMU 7.2) are part of the contract: it truncates DMA
//! addresses to 28 bits, so the driver declares a 28-bit DMA mask; and a
//! transfer that ends exactly at the end of its 4 KiB window aborts QEMU, so
//! the driver refuses those.

#![deny(unsafe_code)]

pub mod model;
pub mod regs;

use std::time::{Duration, Instant};

use usrdrv::Device;
use usrdrv::dma::{DmaError, DmaMapping, DmaMask, DmaRegion, DmaTarget};
use usrdrv::irq::{Interrupts, IrqError, IrqKind};
use usrdrv::mmio::{Bar, MmioError};
use usrdrv::pci::{PciAddress, Sysfs, SysfsError};

use regs::{DmaCommand, Reg32, Reg64};

/// PCI vendor ID of the edu device.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device ID of the edu device.
pub const DEVICE_ID: u16 = 0x11e8;
/// The address bits edu's DMA engine keeps (QEMU's default `dma_mask`).
pub const DMA_MASK_BITS: u32 = 28;

/// How long to wait for the device before giving up. A DMA takes 100 ms of
/// virtual time in QEMU, a factorial far less.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from the edu driver.
#[derive(Debug, thiserror::Error)]
pub enum EduError {
    /// No edu device exists.
    #[error(
        "no edu device (PCI {VENDOR_ID:04x}:{DEVICE_ID:04x}) found: start QEMU with `-device edu`"
    )]
    NotFound,
    /// The device is not an edu (wrong identification).
    #[error("the device at {address} is not an edu: identification {id:#010x}")]
    NotEdu {
        /// The device.
        address: PciAddress,
        /// What its identification register said.
        id: u32,
    },
    /// A transfer would not stay strictly inside the device's window.
    #[error(
        "a {len}-byte transfer at window offset {offset:#x} does not fit: transfers are 1 to 4095 bytes and must end before offset 0x1000 (QEMU 7.2 aborts on a transfer ending exactly there)"
    )]
    Window {
        /// The window offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
    },
    /// A DMA buffer range is outside the buffer.
    #[error("{len} bytes at offset {offset:#x} are outside the {size}-byte DMA buffer")]
    BufferRange {
        /// The offset asked for.
        offset: usize,
        /// The length asked for.
        len: usize,
        /// The buffer's size.
        size: usize,
    },
    /// A device address does not fit the device's 28-bit DMA engine.
    #[error("device address {addr:#x} is beyond edu's 28-bit DMA reach")]
    Unreachable {
        /// The address.
        addr: u64,
    },
    /// The device did not finish in time.
    #[error("the edu {what} did not finish within {waited:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        waited: Duration,
    },
    /// Opening the device failed.
    #[error(transparent)]
    Open(#[from] usrdrv::Error),
    /// Finding the device failed.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// A register access failed.
    #[error(transparent)]
    Mmio(#[from] MmioError),
    /// A DMA operation failed.
    #[error(transparent)]
    Dma(#[from] DmaError),
    /// An interrupt operation failed.
    #[error(transparent)]
    Irq(#[from] IrqError),
    /// An interrupt-driven operation was asked for before interrupts were enabled.
    #[error("interrupts are not enabled: call Edu::enable_interrupts first")]
    NoInterrupts,
    /// The interrupt fired but the device did not say why.
    #[error("an interrupt arrived with status {status:#x}, not the expected {expected:#x}")]
    UnexpectedInterrupt {
        /// The interrupt status register.
        status: u32,
        /// The bits expected.
        expected: u32,
    },
}

impl EduError {
    /// Whether the device was taken back (an unbind, a hot-unplug, or an
    /// emulated device's revocation): every later call fails the same way,
    /// so drop the [`Edu`] and open it again once it is back.
    pub fn is_revoked(&self) -> bool {
        match self {
            Self::Open(e) => e.is_revoked(),
            Self::Mmio(e) => e.is_revoked(),
            Self::Dma(e) => e.is_revoked(),
            Self::Irq(e) => e.is_revoked(),
            _ => false,
        }
    }
}

/// Which way a transfer moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// From RAM into the device's window.
    ToDevice,
    /// From the device's window into RAM.
    FromDevice,
}

/// An open edu device.
#[derive(Debug)]
pub struct Edu {
    /// Dropped before the device: interrupts are disabled first.
    irqs: Option<Interrupts>,
    regs: Bar,
    device: Device,
    timeout: Duration,
}

impl Edu {
    /// The address of the first edu device in the system.
    pub fn find() -> Result<PciAddress, EduError> {
        Sysfs::system()
            .find(VENDOR_ID, DEVICE_ID)?
            .first()
            .copied()
            .ok_or(EduError::NotFound)
    }

    /// Opens the edu at `address` (bound to vfio-pci or usrdma), declaring its
    /// 28-bit DMA mask, checks its identification, and waits for a transfer a
    /// previous owner may have left running (see [`Device::quiesce`]).
    pub fn open(address: PciAddress) -> Result<Self, EduError> {
        let mask = DmaMask::new(DMA_MASK_BITS)?;
        Self::from_device(Device::open(address, mask).map_err(EduError::Open)?)
    }

    /// Wraps an already open device (for example one opened in a shared IOMMU
    /// domain); its DMA mask must be at most 28 bits.
    pub fn from_device(device: Device) -> Result<Self, EduError> {
        let regs = device.bar(0)?;
        let edu = Self {
            irqs: None,
            regs,
            device,
            timeout: DEFAULT_TIMEOUT,
        };
        let id = edu.read(regs::ID)?;
        if id & 0xff != 0xed {
            return Err(EduError::NotEdu {
                address: edu.device.address(),
                id,
            });
        }
        edu.quiesce()?;
        Ok(edu)
    }

    /// Waits, with bus mastering still off, until the DMA engine is idle: edu
    /// has no reset, so a transfer a previous owner started (and died before
    /// it completed) is still queued. It completes within 100 ms into a bus
    /// that drops it, instead of into memory this process allocates next.
    /// A device handed in already mastering the bus cannot be protected that
    /// way; the engine is still waited for before it is used.
    fn quiesce(&self) -> Result<(), EduError> {
        let idle = || {
            self.wait("the previous owner's DMA", || {
                Ok(!DmaCommand::running(self.read64(regs::DMA_CMD)?))
            })
        };
        match self.device.quiesce(idle) {
            Err(EduError::Dma(DmaError::QuiesceTooLate { .. })) => idle(),
            other => other,
        }
    }

    /// Sets how long operations wait for the device.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The usrdrv device underneath (for DMA allocation and mapping).
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn read(&self, reg: Reg32) -> Result<u32, MmioError> {
        self.regs.read32(reg.offset())
    }

    fn write(&self, reg: Reg32, value: u32) -> Result<(), MmioError> {
        self.regs.write32(reg.offset(), value)
    }

    fn read64(&self, reg: Reg64) -> Result<u64, MmioError> {
        self.regs.read64(reg.offset())
    }

    fn write64(&self, reg: Reg64, value: u64) -> Result<(), MmioError> {
        self.regs.write64(reg.offset(), value)
    }

    /// The device version, `(major, minor)`.
    pub fn identification(&self) -> Result<(u8, u8), EduError> {
        let id = self.read(regs::ID)?;
        Ok(((id >> 24) as u8, (id >> 16) as u8))
    }

    /// Writes `probe` to the liveness register and returns what it reads back
    /// (the bitwise inverse when the device is alive).
    pub fn liveness(&self, probe: u32) -> Result<u32, EduError> {
        self.write(regs::LIVENESS, probe)?;
        Ok(self.read(regs::LIVENESS)?)
    }

    /// Computes `n!` on the device (modulo 2^32), polling for completion.
    pub fn factorial(&self, n: u32) -> Result<u32, EduError> {
        self.write(regs::STATUS, 0)?;
        self.write(regs::FACTORIAL, n)?;
        self.wait("factorial", || {
            Ok(self.read(regs::STATUS)? & regs::STATUS_COMPUTING == 0)
        })?;
        Ok(self.read(regs::FACTORIAL)?)
    }

    /// Enables the device's interrupt of `kind` (edu has one MSI vector and INTx)
    /// for [`Edu::factorial_with_interrupt`] and [`Edu::raise_interrupt`].
    pub fn enable_interrupts(&mut self, kind: IrqKind) -> Result<(), EduError> {
        // Disable any previous kind before enabling another.
        self.irqs = None;
        self.irqs = Some(self.device.enable_interrupts(kind, 1)?);
        Ok(())
    }

    /// Disables the device's interrupts (back to polling).
    pub fn disable_interrupts(&mut self) {
        self.irqs = None;
    }

    /// The enabled interrupts, if any (for their eventfd).
    pub fn interrupts(&self) -> Option<&Interrupts> {
        self.irqs.as_ref()
    }

    /// Waits for the interrupt, checks the device raised `expected`, and
    /// acknowledges it (and unmasks INTx).
    fn wait_interrupt(&self, expected: u32) -> Result<(), EduError> {
        let irqs = self.irqs.as_ref().ok_or(EduError::NoInterrupts)?;
        if irqs.wait(0, Some(self.timeout))?.is_none() {
            return Err(EduError::Timeout {
                what: "interrupt",
                waited: self.timeout,
            });
        }
        let status = self.read(regs::IRQ_STATUS)?;
        self.write(regs::IRQ_ACK, status)?;
        irqs.unmask()?;
        if status & expected != expected {
            return Err(EduError::UnexpectedInterrupt { status, expected });
        }
        Ok(())
    }

    /// Computes `n!` on the device and waits for its completion interrupt.
    pub fn factorial_with_interrupt(&self, n: u32) -> Result<u32, EduError> {
        if self.irqs.is_none() {
            return Err(EduError::NoInterrupts);
        }
        self.write(regs::STATUS, regs::STATUS_IRQ_ON_FACTORIAL)?;
        self.write(regs::FACTORIAL, n)?;
        self.wait_interrupt(regs::IRQ_FACTORIAL)?;
        Ok(self.read(regs::FACTORIAL)?)
    }

    /// Has the device raise interrupt status `bits` and waits for the interrupt.
    pub fn raise_interrupt(&self, bits: u32) -> Result<(), EduError> {
        if self.irqs.is_none() {
            return Err(EduError::NoInterrupts);
        }
        self.write(regs::IRQ_RAISE, bits)?;
        self.wait_interrupt(bits)
    }

    /// Has the device raise interrupt status `bits` without waiting (the caller
    /// waits on [`Edu::interrupts`] and acknowledges with [`Edu::acknowledge`]).
    pub fn trigger_interrupt(&self, bits: u32) -> Result<(), EduError> {
        Ok(self.write(regs::IRQ_RAISE, bits)?)
    }

    /// Acknowledges interrupt status `bits` (and unmasks INTx).
    pub fn acknowledge(&self, bits: u32) -> Result<(), EduError> {
        self.write(regs::IRQ_ACK, bits)?;
        if let Some(irqs) = &self.irqs {
            irqs.unmask()?;
        }
        Ok(())
    }

    /// Polls `done` until it says yes or the timeout passes.
    fn wait(
        &self,
        what: &'static str,
        mut done: impl FnMut() -> Result<bool, EduError>,
    ) -> Result<(), EduError> {
        let start = Instant::now();
        loop {
            if done()? {
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                return Err(EduError::Timeout {
                    what,
                    waited: self.timeout,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Moves `len` bytes between RAM at device address `ram` and the device's
    /// window at `window_offset`, and waits for it to finish.
    ///
    /// `ram` must be mapped for the device (from a [`DmaRegion`] or
    /// [`DmaMapping`]): the IOMMU blocks anything else. Prefer the typed
    /// methods, which check the range lies in the buffer.
    pub fn transfer(
        &self,
        direction: Transfer,
        ram: u64,
        window_offset: u64,
        len: u64,
    ) -> Result<(), EduError> {
        let fits = (1..regs::WINDOW_LEN).contains(&len)
            && window_offset
                .checked_add(len)
                .is_some_and(|end| end < regs::WINDOW_LEN);
        if !fits {
            return Err(EduError::Window {
                offset: window_offset,
                len,
            });
        }
        let reach = (1u64 << DMA_MASK_BITS) - 1;
        if ram.checked_add(len - 1).is_none_or(|last| last > reach) {
            return Err(EduError::Unreachable { addr: ram });
        }
        // edu ignores writes to its DMA registers while a transfer runs, and one
        // may still run for a previous owner (a process killed mid-transfer).
        self.wait("previous DMA", || {
            Ok(!DmaCommand::running(self.read64(regs::DMA_CMD)?))
        })?;
        let window = regs::WINDOW_BASE + window_offset;
        let (src, dst, cmd) = match direction {
            Transfer::ToDevice => (ram, window, DmaCommand::to_device()),
            Transfer::FromDevice => (window, ram, DmaCommand::from_device()),
        };
        self.write64(regs::DMA_SRC, src)?;
        self.write64(regs::DMA_DST, dst)?;
        self.write64(regs::DMA_COUNT, len)?;
        self.write64(regs::DMA_CMD, cmd.bits())?;
        self.wait("DMA", || {
            Ok(!DmaCommand::running(self.read64(regs::DMA_CMD)?))
        })
    }

    /// Copies `len` bytes of `buffer` from `offset` into the window at `window_offset`.
    pub fn buffer_to_window(
        &self,
        buffer: &DmaRegion,
        offset: usize,
        window_offset: u64,
        len: usize,
    ) -> Result<(), EduError> {
        let ram = buffer_range(buffer, offset, len)?;
        buffer.sync_for_device();
        self.transfer(Transfer::ToDevice, ram, window_offset, len as u64)
    }

    /// Copies `len` bytes of the window at `window_offset` into `buffer` at `offset`.
    pub fn window_to_buffer(
        &self,
        window_offset: u64,
        buffer: &DmaRegion,
        offset: usize,
        len: usize,
    ) -> Result<(), EduError> {
        let ram = buffer_range(buffer, offset, len)?;
        self.transfer(Transfer::FromDevice, ram, window_offset, len as u64)?;
        buffer.sync_for_cpu();
        Ok(())
    }

    /// Copies the whole of a mapped caller buffer into the window at `window_offset`.
    pub fn mapping_to_window<B: DmaTarget>(
        &self,
        mapping: &DmaMapping<B>,
        window_offset: u64,
    ) -> Result<(), EduError> {
        mapping.sync_for_device()?;
        let mut at = window_offset;
        for entry in mapping.sg_list() {
            self.transfer(Transfer::ToDevice, entry.device_addr, at, entry.len as u64)?;
            at += entry.len as u64;
        }
        Ok(())
    }

    /// Fills the whole of a mapped caller buffer from the window at `window_offset`.
    pub fn window_to_mapping<B: DmaTarget>(
        &self,
        window_offset: u64,
        mapping: &DmaMapping<B>,
    ) -> Result<(), EduError> {
        let mut at = window_offset;
        for entry in mapping.sg_list() {
            self.transfer(
                Transfer::FromDevice,
                entry.device_addr,
                at,
                entry.len as u64,
            )?;
            at += entry.len as u64;
        }
        mapping.sync_for_cpu()?;
        Ok(())
    }
}

/// The device address of `len` bytes at `offset` in `buffer`, if they lie in it.
fn buffer_range(buffer: &DmaRegion, offset: usize, len: usize) -> Result<u64, EduError> {
    if offset.checked_add(len).is_none_or(|end| end > buffer.len()) {
        return Err(EduError::BufferRange {
            offset,
            len,
            size: buffer.len(),
        });
    }
    Ok(buffer.device_addr() + offset as u64)
}
