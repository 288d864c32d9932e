//! One open of an emulated function: its IOMMU table, its interrupt
//! bindings and its revocation, behind the same seams VFIO and usrdma
//! implement (device, DMA, interrupts, BARs).

#![allow(unsafe_code)] // `DmaBackend::map_user` is an `unsafe fn`; see its body.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::config::{self, COMMAND_INTX_DISABLE, COMMAND_MASTER};
use super::faults::{DmaFault, DmaOp, Leak, LeakKind};
use super::function::{Function, lock};
use super::iommu::{Iommu, PAGE};
use super::{Bus, EmulatedError};
use crate::Error;
use crate::device::Backend;
use crate::device_backend::DeviceBackend;
use crate::dma::backend::{Allocation, DmaBackend, SgList, UserMapping, alloc_memory, page_span};
use crate::dma::{Direction, DmaError, DmaMask, SgEntry, map_failure};
use crate::irq::{IrqControl, IrqError, IrqInfo, IrqKind};
use crate::mmio::{Bar, BarPort};
use crate::pci::PciAddress;
use crate::sys::dma_memory::DmaWindow;
use crate::sys::eventfd::{EventFd, Signaller};

/// The interrupt bindings of one open.
#[derive(Debug, Default)]
struct IrqState {
    kind: Option<IrqKind>,
    vectors: Vec<Arc<Signaller>>,
    /// INTx was delivered and not unmasked yet.
    intx_masked: bool,
    /// INTx was raised while masked: delivered at the unmask.
    intx_pending: bool,
}

/// One open of an emulated function.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) function: Arc<Function>,
    open: u32,
    mask: DmaMask,
    iommu: Mutex<Iommu>,
    revoked: Arc<AtomicBool>,
    /// Signalled (and left signalled) at revocation, for interrupt waits.
    revocation: EventFd,
    irq: Mutex<IrqState>,
}

impl Session {
    /// Opens `function` with device addresses under `mask`.
    pub(crate) fn open(function: Arc<Function>, mask: DmaMask) -> Result<Arc<Self>, Error> {
        let iommu = Iommu::new(mask, function.iova_space)?;
        let revocation = EventFd::new().map_err(|source| DmaError::Kernel {
            op: "creating the emulated device's revocation eventfd",
            source,
        })?;
        let session = Arc::new(Self {
            open: function.next_open(),
            function,
            mask,
            iommu: Mutex::new(iommu),
            revoked: Arc::new(AtomicBool::new(false)),
            revocation,
            irq: Mutex::new(IrqState::default()),
        });
        session.function.register(&session);
        Ok(session)
    }

    fn address(&self) -> PciAddress {
        self.function.address
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Takes the device back: every access and new DMA fails, interrupt
    /// waiters wake, the IOMMU translates nothing more.
    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        lock(&self.iommu).release();
        let _ = self.revocation.signal(1);
    }

    /// Counts a driver operation: `false` when the device is (now) revoked.
    fn operation(&self) -> bool {
        if self.is_revoked() {
            return false;
        }
        self.function.count_operation();
        !self.is_revoked()
    }

    fn revoked_error(&self) -> DmaError {
        DmaError::Revoked {
            address: self.address(),
        }
    }

    /// What this open leaves mapped, and addresses it gave out beyond the mask.
    pub(crate) fn leaks(&self) -> (Vec<Leak>, Vec<(u64, u64)>) {
        let iommu = lock(&self.iommu);
        (iommu.leaks(self.open), iommu.outside_mask().to_vec())
    }

    /// The model's DMA of `len` bytes at `addr`: `f` runs on the memory
    /// under the table's lock, so no unmap completes meanwhile.
    pub(crate) fn dma(
        &self,
        addr: u64,
        len: usize,
        write: bool,
        f: impl FnOnce(DmaWindow),
    ) -> Result<(), DmaFault> {
        let delay = lock(&self.function.plan).dma_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let result = if self.function.command() & COMMAND_MASTER == 0 {
            Err(DmaFault::NoBusMaster { addr, len, write })
        } else {
            let iommu = lock(&self.iommu);
            iommu.translate(addr, len, write).map(f)
        };
        if let Err(fault) = result {
            self.function.record(fault);
        }
        result
    }

    /// Whether the next DMA write should land corrupted.
    pub(crate) fn corrupt_this_write(&self) -> bool {
        let mut plan = lock(&self.function.plan);
        let corrupt = plan.corrupt_writes > 0;
        plan.corrupt_writes = plan.corrupt_writes.saturating_sub(1);
        corrupt
    }

    /// The model raising interrupt `vector` (of whatever kind is bound).
    pub(crate) fn raise(&self, vector: u32) {
        let lost = || {
            self.function
                .interrupts_lost
                .fetch_add(1, Ordering::Relaxed);
        };
        if self.is_revoked() {
            return lost();
        }
        let (times, delay) = {
            let mut plan = lock(&self.function.plan);
            if plan.drop_interrupts > 0 {
                plan.drop_interrupts -= 1;
                return lost();
            }
            let twice = plan.duplicate_interrupts > 0;
            plan.duplicate_interrupts = plan.duplicate_interrupts.saturating_sub(1);
            (if twice { 2 } else { 1 }, plan.interrupt_delay)
        };
        let command = self.function.command();
        let target = {
            let mut irq = lock(&self.irq);
            match irq.kind {
                Some(IrqKind::Intx) if command & COMMAND_INTX_DISABLE == 0 => {
                    if irq.intx_masked {
                        irq.intx_pending = true;
                        None
                    } else {
                        irq.intx_masked = true;
                        irq.vectors.first().cloned()
                    }
                }
                Some(IrqKind::Msi | IrqKind::Msix) if command & COMMAND_MASTER != 0 => {
                    match usize::try_from(vector)
                        .ok()
                        .and_then(|v| irq.vectors.get(v).cloned())
                    {
                        Some(target) => Some(target),
                        // A vector the driver did not enable.
                        None => {
                            drop(irq);
                            return lost();
                        }
                    }
                }
                _ => {
                    // Disabled, INTx disabled, or an MSI with bus mastering
                    // off (the bus drops the message write).
                    drop(irq);
                    return lost();
                }
            }
        };
        if let Some(target) = target {
            deliver(target, times, delay);
        }
    }
}

/// Signals `target` `times` times, after `delay`.
fn deliver(target: Arc<Signaller>, times: u32, delay: std::time::Duration) {
    let send = move || {
        for _ in 0..times {
            let _ = target.signal();
        }
    };
    if delay.is_zero() {
        send();
    } else {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            send();
        });
    }
}

impl DmaBackend for Session {
    fn mask(&self) -> DmaMask {
        self.mask
    }

    fn alloc(&self, size: usize, huge: bool) -> Result<Allocation, DmaError> {
        if size == 0 {
            return Err(DmaError::Empty);
        }
        if !self.operation() {
            return Err(self.revoked_error());
        }
        if let Some(errno) = lock(&self.function.plan).failure(DmaOp::Alloc) {
            return Err(map_failure(
                0,
                size as u64,
                io::Error::from_raw_os_error(errno),
            ));
        }
        let memory = alloc_memory(size, huge, PAGE as usize)?;
        // The window stays valid while the entry exists: the `Allocation`'s
        // holder calls `free` (removing the entry) before unmapping the memory.
        let window = memory.window();
        let span = window.len() as u64;
        let iova = lock(&self.iommu).insert(span, 0, window, true, LeakKind::Buffer)?;
        Ok(Allocation {
            memory,
            device_addr: iova,
            handle: iova,
            keep: false,
        })
    }

    fn free(&self, allocation: &Allocation) -> Result<(), DmaError> {
        lock(&self.iommu).remove(allocation.handle)
    }

    unsafe fn map_user(
        &self,
        addr: usize,
        len: usize,
        direction: Direction,
    ) -> Result<UserMapping, DmaError> {
        if !self.operation() {
            return Err(self.revoked_error());
        }
        if let Some(errno) = lock(&self.function.plan).failure(DmaOp::Map) {
            return Err(map_failure(
                0,
                len as u64,
                io::Error::from_raw_os_error(errno),
            ));
        }
        let (first, span) = page_span(addr, len, PAGE as usize)?;
        // Only the caller's bytes: the rest of their pages is other memory
        // of this process, which Rust code uses without atomics.
        // SAFETY: the caller of `map_user` guarantees `[addr, addr + len)`
        // stays allocated, and out of reach of code forming references,
        // until `unmap_user` of this mapping succeeded (which removes the
        // entry, under the lock every device access holds), or forever.
        let window = unsafe { DmaWindow::from_raw(addr, len) }.ok_or(DmaError::Empty)?;
        let iova = lock(&self.iommu).insert(
            span as u64,
            (addr - first) as u64,
            window,
            direction.device_writes(),
            LeakKind::Mapping,
        )?;
        Ok(UserMapping {
            sg: SgList::One(SgEntry {
                device_addr: iova + (addr - first) as u64,
                len,
            }),
            handle: iova,
            mapped_len: span as u64,
            bounced: false,
        })
    }

    fn unmap_user(&self, mapping: &UserMapping) -> Result<(), DmaError> {
        if let Some(errno) = lock(&self.function.plan).failure(DmaOp::Unmap) {
            return Err(DmaError::Unmap {
                iova: mapping.handle,
                size: mapping.mapped_len,
                source: io::Error::from_raw_os_error(errno),
            });
        }
        lock(&self.iommu).remove(mapping.handle)
    }
}

impl IrqControl for Session {
    fn address(&self) -> PciAddress {
        self.function.address
    }

    fn info(&self, kind: IrqKind) -> Result<IrqInfo, IrqError> {
        let info = &self.function.info;
        Ok(match kind {
            IrqKind::Intx => IrqInfo {
                count: u32::from(info.intx),
                maskable: true,
                automasked: true,
            },
            IrqKind::Msi => IrqInfo {
                count: info.msi_vectors,
                maskable: false,
                automasked: false,
            },
            IrqKind::Msix => IrqInfo {
                count: info.msix_vectors,
                maskable: false,
                automasked: false,
            },
        })
    }

    fn set_eventfds(&self, kind: IrqKind, eventfds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if eventfds.is_empty() {
            *lock(&self.irq) = IrqState::default();
            return Ok(());
        }
        if !self.operation() {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        let mut irq = lock(&self.irq);
        if irq.kind.is_some_and(|k| k != kind) {
            // As vfio-pci: one kind at a time.
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let vectors = eventfds
            .iter()
            .map(|fd| Signaller::duplicate(*fd).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        *irq = IrqState {
            kind: Some(kind),
            vectors,
            ..IrqState::default()
        };
        Ok(())
    }

    fn unmask_intx(&self) -> io::Result<()> {
        if !self.operation() {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        let mut irq = lock(&self.irq);
        if irq.kind != Some(IrqKind::Intx) {
            return Ok(());
        }
        if irq.intx_pending {
            irq.intx_pending = false;
            if let Some(target) = irq.vectors.first().cloned() {
                drop(irq);
                deliver(target, 1, std::time::Duration::ZERO);
            }
        } else {
            irq.intx_masked = false;
        }
        Ok(())
    }

    fn is_revoked(&self) -> bool {
        Session::is_revoked(self)
    }

    fn revocation_event(&self) -> Option<&EventFd> {
        Some(&self.revocation)
    }

    fn mark_revoked(&self) {
        self.revoked.store(true, Ordering::Release);
        // The waiter that saw the event took its count: keep it readable
        // for the others.
        let _ = self.revocation.signal(1);
    }
}

/// A BAR of an open, answered by the model.
#[derive(Debug)]
struct EmulatedBar {
    bus: Bus,
    index: u8,
}

impl BarPort for EmulatedBar {
    fn read(&self, offset: u64, width: usize) -> Option<u64> {
        let session = self.bus.session();
        if !session.operation() {
            return None;
        }
        Some(
            session
                .function
                .model
                .read(&self.bus, self.index, offset, width),
        )
    }

    fn write(&self, offset: u64, width: usize, value: u64) -> Option<()> {
        let session = self.bus.session();
        if !session.operation() {
            return None;
        }
        session
            .function
            .model
            .write(&self.bus, self.index, offset, width, value);
        Some(())
    }
}

/// The device seam over one open.
#[derive(Debug)]
pub(crate) struct EmulatedBackend(pub(crate) Arc<Session>);

impl EmulatedBackend {
    fn live(&self) -> Result<(), Error> {
        if self.0.operation() {
            Ok(())
        } else {
            Err(EmulatedError::Revoked {
                address: self.0.address(),
            }
            .into())
        }
    }

    fn config_range(offset: u64, len: usize) -> Result<std::ops::Range<usize>, Error> {
        let start = usize::try_from(offset).ok();
        match start.and_then(|s| Some(s..s.checked_add(len)?)) {
            Some(range) if range.end <= config::CONFIG_SIZE => Ok(range),
            _ => Err(EmulatedError::ConfigRange { offset, len }.into()),
        }
    }

    /// Writes the bytes of `buf` the function lets a driver change.
    fn apply_config(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        let range = Self::config_range(offset, buf.len())?;
        let mut config = lock(&self.0.function.config);
        for (at, byte) in range.zip(buf) {
            if config::writable(at) {
                config[at] = *byte;
            }
        }
        Ok(())
    }
}

impl DeviceBackend for EmulatedBackend {
    fn kind(&self) -> Backend {
        Backend::Emulated
    }

    fn address(&self) -> PciAddress {
        self.0.address()
    }

    fn dma(&self) -> Arc<dyn DmaBackend> {
        Arc::clone(&self.0) as Arc<dyn DmaBackend>
    }

    fn bar(&self, index: u8) -> Result<Bar, Error> {
        self.live()?;
        let size = self
            .0
            .function
            .info
            .bars
            .get(usize::from(index))
            .copied()
            .filter(|size| *size > 0)
            .ok_or(EmulatedError::NoSuchBar {
                address: self.0.address(),
                index,
            })?;
        let port = Arc::new(EmulatedBar {
            bus: Bus::new(Arc::clone(&self.0)),
            index,
        });
        Ok(Bar::emulated(
            index,
            size,
            port,
            Arc::clone(&self.0) as Arc<dyn crate::mmio::KeepAlive>,
            Arc::clone(&self.0.revoked),
        ))
    }

    fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.live()?;
        let range = Self::config_range(offset, buf.len())?;
        buf.copy_from_slice(&lock(&self.0.function.config)[range]);
        Ok(())
    }

    fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        self.live()?;
        crate::pci::config::filtered_write(
            offset,
            buf,
            || Ok::<_, EmulatedError>(self.0.function.command()),
            || Ok(()),
        )?;
        self.apply_config(offset, buf)
    }

    fn write_config_raw(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        self.live()?;
        self.apply_config(offset, buf)
    }

    fn config_space(&self) -> Result<Vec<u8>, Error> {
        self.live()?;
        Ok(lock(&self.0.function.config).clone())
    }

    fn reset(&self) -> Result<(), Error> {
        self.live()?;
        let function = &self.0.function;
        if !function.info.resettable {
            return Err(EmulatedError::NoReset {
                address: function.address,
            }
            .into());
        }
        function.model.reset(&Bus::new(Arc::clone(&self.0)));
        function.reset_config();
        Ok(())
    }

    fn is_revoked(&self) -> bool {
        self.0.is_revoked()
    }

    fn irq_control(&self) -> Arc<dyn IrqControl> {
        Arc::clone(&self.0) as Arc<dyn IrqControl>
    }
}
