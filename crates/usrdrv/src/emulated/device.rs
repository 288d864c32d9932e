//! The test's handle to an emulated device: opening it for a driver,
//! injecting faults, and the end-of-test check.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::DeviceModel;
use super::faults::{DmaFault, DmaOp, Leak, LeakReport};
use super::function::{Function, lock};
use super::session::{EmulatedBackend, Session};
use crate::dma::DmaMask;
use crate::pci::PciAddress;
use crate::{Device, Error};

/// The PCI address emulated devices have unless told otherwise: a bus no
/// machine has, so it is never mistaken for a real device.
pub const DEFAULT_ADDRESS: PciAddress = PciAddress::first_on_bus(0, 0xee);

/// A PCI device emulated in-process by a [`DeviceModel`], for running a
/// driver in `cargo test` with no hardware, no VM and no privileges.
///
/// [`Device::emulated`] (or [`EmulatedDevice::open`]) gives the driver a
/// [`Device`] whose BARs, DMA buffers, mappings, pools, named buffers and
/// interrupts behave as on a real device behind an IOMMU: the model's DMA
/// reaches only what the driver mapped, with the direction it mapped it for,
/// and nothing after the unmap. It can be opened again after the driver
/// dropped it (the model keeps its state, as hardware does), or while
/// another handle is open.
///
/// The test injects faults through this handle (revocation, failing
/// allocations and mappings, lost, late and duplicated interrupts, slow or
/// corrupted DMA) and reads what the model did wrong ([`faults`]).
///
/// **The leak check.** When this handle is dropped, every DMA buffer the
/// driver allocated must have been freed and every mapping unmapped, or the
/// drop panics naming each (failing the test); [`finish`] returns the same
/// report instead. Declare the handle before the driver's values, so they
/// are dropped first.
///
/// [`faults`]: EmulatedDevice::faults
/// [`finish`]: EmulatedDevice::finish
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use usrdrv::Device;
/// use usrdrv::dma::{DmaError, DmaMask};
/// use usrdrv::emulated::{Bus, DeviceModel, DmaOp, EmulatedDevice, ModelInfo};
///
/// /// Writes the 8 bytes of register 0 to the device address written to 8.
/// #[derive(Default)]
/// struct Echo(AtomicU64);
///
/// impl DeviceModel for Echo {
///     fn info(&self) -> ModelInfo {
///         ModelInfo::new(0x1af4, 0x10ff).with_bar(0, 4096)
///     }
///     fn read(&self, _: &Bus, _: u8, _: u64, _: usize) -> u64 {
///         self.0.load(Ordering::Relaxed)
///     }
///     fn write(&self, bus: &Bus, _: u8, offset: u64, _: usize, value: u64) {
///         match offset {
///             0 => self.0.store(value, Ordering::Relaxed),
///             _ => { let _ = bus.write(value, &self.0.load(Ordering::Relaxed).to_le_bytes()); }
///         }
///     }
/// }
///
/// let emulated = EmulatedDevice::new(Echo::default());
/// let device = Device::emulated(&emulated, DmaMask::new(32)?)?;
/// let regs = device.bar(0)?;
/// let buffer = device.alloc_dma(4096)?;
/// regs.write64(0, 0x1122_3344)?;
/// regs.write64(8, buffer.device_addr())?;                // the model DMAs
/// assert_eq!(buffer.read::<u64>(0)?, 0x1122_3344);
///
/// regs.write64(8, 0x10)?;                                // a stray address
/// assert_eq!(emulated.faults().len(), 1, "the IOMMU refused it");
///
/// emulated.fail_next(DmaOp::Alloc, libc::ENOSPC);
/// assert!(matches!(device.alloc_dma(4096), Err(DmaError::MappingLimit)));
/// drop((regs, buffer, device));
/// emulated.finish()?;                                    // nothing leaked
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct EmulatedDevice {
    function: Arc<Function>,
    finished: bool,
}

impl EmulatedDevice {
    /// A device at [`DEFAULT_ADDRESS`] run by `model`.
    pub fn new(model: impl DeviceModel) -> Self {
        Self::with_address(model, DEFAULT_ADDRESS)
    }

    /// A device at `address` run by `model`.
    pub fn with_address(model: impl DeviceModel, address: PciAddress) -> Self {
        Self::build(model, address, None)
    }

    /// A device whose opens may hand out at most `bytes` of device addresses
    /// (rounded down to pages): a small IOVA space, for testing what a driver
    /// does when it runs out ([`DmaError::Iova`](crate::dma::DmaError::Iova)).
    pub fn with_iova_space(model: impl DeviceModel, bytes: u64) -> Self {
        Self::build(model, DEFAULT_ADDRESS, Some(bytes))
    }

    fn build(model: impl DeviceModel, address: PciAddress, iova_space: Option<u64>) -> Self {
        Self {
            function: Arc::new(Function::new(Box::new(model), address, iova_space)),
            finished: false,
        }
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.function.address
    }

    /// Opens the device for a driver, with device addresses below `mask`
    /// (what [`Device::emulated`] does).
    pub fn open(&self, mask: DmaMask) -> Result<Device, Error> {
        let session = Session::open(Arc::clone(&self.function), mask)?;
        Device::new(Box::new(EmulatedBackend(session)))
    }

    /// Takes the device back from every open, now, as an unbind or a
    /// hot-unplug would: register accesses, new DMA and interrupt setup fail
    /// with `Revoked`, interrupt waits wake with it, the model's DMA faults.
    /// Callable from any thread. A later [`open`](EmulatedDevice::open) gets
    /// the device again (as a rebind would).
    pub fn revoke(&self) {
        self.function.revoke_all();
    }

    /// Revokes the device at the `n`-th driver operation from now (`n` ≥ 1;
    /// that operation fails). Operations are what the driver asks of the
    /// device: register and configuration accesses, DMA allocations and
    /// mappings, interrupt setup and INTx unmasks ([`operations`] counts
    /// them), so a test can revoke at every step of a workload in turn.
    ///
    /// [`operations`]: EmulatedDevice::operations
    pub fn revoke_after(&self, n: u64) {
        lock(&self.function.plan).revoke_at = Some(self.function.operations() + n.max(1));
    }

    /// Driver operations so far (see [`EmulatedDevice::revoke_after`]).
    pub fn operations(&self) -> u64 {
        self.function.operations()
    }

    /// Makes the next `op` fail with `errno`, as the kernel's mapping call
    /// would: `ENOMEM` (the locked-memory limit), `ENOSPC` (VFIO's limit on
    /// the number of mappings), `EPERM`, ... The driver sees the same typed
    /// error a real backend gives. (See [`DmaOp::Unmap`] for what a failed
    /// unmap does.)
    pub fn fail_next(&self, op: DmaOp, errno: i32) {
        self.fail_nth(op, 1, errno);
    }

    /// Makes the `n`-th `op` from now (`n` ≥ 1) fail with `errno`; the ones
    /// before it succeed.
    pub fn fail_nth(&self, op: DmaOp, n: u32, errno: i32) {
        lock(&self.function.plan)
            .failures
            .push((op, n.saturating_sub(1), errno));
    }

    /// Loses the next `n` interrupts the model raises (an interrupt that
    /// never comes).
    pub fn drop_interrupts(&self, n: u32) {
        lock(&self.function.plan).drop_interrupts = n;
    }

    /// Delivers each of the next `n` interrupts twice (a spurious one).
    pub fn duplicate_interrupts(&self, n: u32) {
        lock(&self.function.plan).duplicate_interrupts = n;
    }

    /// Delivers every interrupt `delay` after the model raised it
    /// (`Duration::ZERO`: at once).
    pub fn delay_interrupts(&self, delay: Duration) {
        lock(&self.function.plan).interrupt_delay = delay;
    }

    /// Makes every DMA access of the model take `delay` first (a slow
    /// device: completions come late).
    pub fn delay_dma(&self, delay: Duration) {
        lock(&self.function.plan).dma_delay = delay;
    }

    /// Corrupts the next `n` DMA writes of the model: every byte lands
    /// inverted.
    pub fn corrupt_dma_writes(&self, n: u32) {
        lock(&self.function.plan).corrupt_writes = n;
    }

    /// Every DMA access the IOMMU refused so far, in order.
    pub fn faults(&self) -> Vec<DmaFault> {
        lock(&self.function.faults).clone()
    }

    /// Like [`EmulatedDevice::faults`], and forgets them.
    pub fn take_faults(&self) -> Vec<DmaFault> {
        std::mem::take(&mut *lock(&self.function.faults))
    }

    /// Interrupts the model raised that reached no eventfd (none enabled,
    /// bus mastering off for MSI, INTx disabled, revoked, or dropped by
    /// [`EmulatedDevice::drop_interrupts`]).
    pub fn interrupts_lost(&self) -> u64 {
        self.function.interrupts_lost.load(Ordering::Relaxed)
    }

    /// What the driver still has allocated or mapped, over every open.
    pub fn leaks(&self) -> Vec<Leak> {
        self.function.report().leaks
    }

    /// The end-of-test check, without the panic of the drop: `Err` names
    /// every buffer not freed and mapping not unmapped (and any device
    /// address handed out beyond the mask).
    pub fn finish(mut self) -> Result<(), LeakReport> {
        self.finished = true;
        let report = self.function.report();
        if report.leaks.is_empty() && report.outside_mask.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    }
}

impl Drop for EmulatedDevice {
    fn drop(&mut self) {
        if self.finished || std::thread::panicking() {
            return;
        }
        let report = self.function.report();
        if !report.leaks.is_empty() || !report.outside_mask.is_empty() {
            panic!("{report}");
        }
    }
}

impl Device {
    /// Opens the emulated device `emulated` for a driver, with device
    /// addresses below `mask`: the driver code is the same as for
    /// [`Device::open`]. See [`EmulatedDevice`].
    pub fn emulated(emulated: &EmulatedDevice, mask: DmaMask) -> Result<Self, Error> {
        emulated.open(mask)
    }
}
