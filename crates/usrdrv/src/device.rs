//! The device handle drivers use: registers, configuration space and DMA,
//! whatever kernel interface is underneath.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Error;
use crate::device_backend::DeviceBackend;
use crate::dma::{
    Borrowed, Direction, DmaBackend, DmaBuffer, DmaError, DmaMapping, DmaMask, DmaPool, DmaTarget,
    NamedBuffers, PersistentBuffer,
};
use crate::irq::{Interrupts, IrqControl, IrqError, IrqInfo, IrqKind};
use crate::mmio::Bar;
use crate::pci::capabilities::{self, Capability};
use crate::pci::{PciAddress, Sysfs};
use crate::revocation::ReleasePolicy;
use crate::usrdma::backend::UsrdmaBackend;
use crate::usrdma::{self, dma::UsrdmaDma};
use crate::vfio::backend::VfioBackend;
use crate::vfio::{self, IommuDomain};

/// Offset of the PCI command register in configuration space.
const PCI_COMMAND: u64 = 0x04;
/// The command register's bus-master enable bit.
const PCI_COMMAND_MASTER: u16 = 0x0004;

/// A PCI device opened for a user-space driver.
///
/// Opening declares the device's DMA mask: every device address usrdrv gives
/// the driver fits under it. Handles derived from the device (BARs, DMA buffers,
/// mappings) keep what they need alive, so they can outlive it.
///
/// The kernel interface underneath is chosen by the driver the device is bound
/// to: VFIO (`vfio-pci`) on machines with an IOMMU, the usrdma module
/// (`usrdma`) on machines without one. Driver code is the same for both.
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let regs = device.bar(0)?;
/// let buffer = device.alloc_dma(4096)?;
/// regs.write64(0x80, buffer.device_addr())?;
/// # Ok::<(), usrdrv::Error>(())
/// ```
#[derive(Debug)]
pub struct Device {
    backend: Box<dyn DeviceBackend>,
    dma: Arc<dyn DmaBackend>,
    /// Set once bus mastering is on (the fast path of `enable_bus_master`).
    bus_master: AtomicBool,
    /// Held while bus mastering changes and during [`Device::quiesce`], so
    /// no thread turns it on while the driver's quiesce step runs.
    bus_master_change: Mutex<()>,
    /// The thread running [`Device::quiesce`]'s step, if one is: its own
    /// requests for DMA fail instead of waiting for itself.
    quiescer: Mutex<Option<std::thread::ThreadId>>,
}

/// Marks the current thread as running a quiesce step until dropped (also
/// when the step panics).
struct QuiesceStep<'a>(&'a Mutex<Option<std::thread::ThreadId>>);

impl<'a> QuiesceStep<'a> {
    fn enter(slot: &'a Mutex<Option<std::thread::ThreadId>>) -> Self {
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(std::thread::current().id());
        Self(slot)
    }
}

impl Drop for QuiesceStep<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The kernel interface a [`Device`] is driven through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// VFIO with an IOMMU (`vfio-pci`).
    Vfio,
    /// The usrdma module, without an IOMMU (`usrdma`).
    Usrdma,
    /// An in-process device model ([`crate::emulated`]), for tests without
    /// hardware.
    Emulated,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Vfio => "VFIO",
            Self::Usrdma => "usrdma",
            Self::Emulated => "emulated",
        })
    }
}

impl Device {
    /// Opens the device at `address` with device addresses below `mask`,
    /// through whichever backend its driver is: `usrdma` → the usrdma module;
    /// otherwise VFIO, in an IOMMU domain of its own (the device must be bound
    /// to vfio-pci; the error says how).
    pub fn open(address: PciAddress, mask: DmaMask) -> Result<Self, Error> {
        let sysfs = Sysfs::system();
        match sysfs.driver(address)?.as_deref() {
            Some(usrdma::USRDMA_DRIVER) => Self::open_usrdma(address, mask),
            _ => Self::open_vfio(&sysfs, address, mask),
        }
    }

    /// Opens the device at `address` through `backend`, whatever it is bound
    /// to (a device on the wrong driver is an error that says how to rebind).
    pub fn open_with(backend: Backend, address: PciAddress, mask: DmaMask) -> Result<Self, Error> {
        match backend {
            Backend::Vfio => Self::open_vfio(&Sysfs::system(), address, mask),
            Backend::Usrdma => Self::open_usrdma(address, mask),
            Backend::Emulated => Err(crate::emulated::EmulatedError::NeedsModel.into()),
        }
    }

    fn open_vfio(sysfs: &Sysfs, address: PciAddress, mask: DmaMask) -> Result<Self, Error> {
        vfio::usable_group(sysfs, address)?;
        let domain = IommuDomain::new(mask)?;
        Self::open_in(&domain, address)
    }

    fn open_usrdma(address: PciAddress, mask: DmaMask) -> Result<Self, Error> {
        let device = usrdma::Device::open(address)?;
        let dma = Arc::new(UsrdmaDma::new(device.clone(), mask)?);
        Self::new(Box::new(UsrdmaBackend { device, dma }))
    }

    /// Opens the device at `address` (bound to vfio-pci) in `domain`, sharing
    /// its device address space (and DMA mask) with the other devices there.
    pub fn open_in(domain: &IommuDomain, address: PciAddress) -> Result<Self, Error> {
        let group = vfio::usable_group(&Sysfs::system(), address)?;
        let group = domain.group(group)?;
        let vfio = vfio::Device::open_in_group(&group, address)?;
        Self::new(Box::new(VfioBackend {
            device: vfio,
            domain: domain.clone(),
        }))
    }

    /// The device with bus mastering off, whatever the previous owner or
    /// the kernel left: nothing may master the bus before the driver asks
    /// for DMA (and has had the chance to [`quiesce`](Device::quiesce) it).
    pub(crate) fn new(backend: Box<dyn DeviceBackend>) -> Result<Self, Error> {
        let device = Self {
            dma: backend.dma(),
            backend,
            bus_master: AtomicBool::new(false),
            bus_master_change: Mutex::new(()),
            quiescer: Mutex::new(None),
        };
        let command = device.command()?;
        if command & PCI_COMMAND_MASTER != 0 {
            device.write_config(PCI_COMMAND, &(command & !PCI_COMMAND_MASTER).to_le_bytes())?;
        }
        Ok(device)
    }

    /// The PCI command register.
    fn command(&self) -> Result<u16, Error> {
        let mut command = [0u8; 2];
        self.read_config(PCI_COMMAND, &mut command)?;
        Ok(u16::from_le_bytes(command))
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.backend.address()
    }

    /// The kernel interface underneath.
    pub fn backend(&self) -> Backend {
        self.backend.kind()
    }

    /// The IOMMU domain the device is in (VFIO only).
    pub fn domain(&self) -> Option<&IommuDomain> {
        self.backend.domain()
    }

    /// The DMA mask device addresses are kept under.
    pub fn dma_mask(&self) -> DmaMask {
        self.dma.mask()
    }

    /// The VFIO device underneath, for what this type does not cover (VFIO only).
    pub fn vfio(&self) -> Option<&vfio::Device> {
        self.backend.vfio()
    }

    /// The usrdma device underneath (usrdma only).
    pub fn usrdma(&self) -> Option<&usrdma::Device> {
        self.backend.usrdma()
    }

    /// BAR `index` (`0..=5`), ready for register access.
    pub fn bar(&self, index: u8) -> Result<Bar, Error> {
        self.backend.bar(index)
    }

    /// Reads configuration space at `offset` into `buf`.
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.backend.read_config(offset, buf)
    }

    /// Writes `buf` to configuration space at `offset`.
    ///
    /// Writes that would change what the BARs usrdrv hands out rely on are
    /// refused with an error that says what to use instead
    /// ([`crate::pci::ConfigError`], inside the backend's error): the I/O and
    /// memory decode bits of the command register (bits 0 and 1 at 0x04), the
    /// base address registers (0x10..0x28) and the expansion ROM BAR
    /// (0x30..0x34). The command register's other bits (bus master, INTx
    /// disable, ...) may change: write it whole with the decode bits as read.
    ///
    /// ```no_run
    /// # let device = usrdrv::Device::open("0000:00:03.0".parse()?, usrdrv::dma::DmaMask::new(28)?)?;
    /// let mut command = [0u8; 2];
    /// device.read_config(0x04, &mut command)?;
    /// let intx_disabled = u16::from_le_bytes(command) | 1 << 10;
    /// device.write_config(0x04, &intx_disabled.to_le_bytes())?;
    /// assert!(device.write_config(0x10, &[0xff; 4]).is_err(), "BAR 0 is refused");
    /// # Ok::<(), usrdrv::Error>(())
    /// ```
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        self.backend.write_config(offset, buf)
    }

    /// Writes `buf` to configuration space at `offset`, refusing nothing
    /// (unlike [`Device::write_config`]): for BAR sizing, or turning decoding
    /// off around a step that needs it.
    ///
    /// # Safety
    ///
    /// The caller guarantees that for as long as the write's effect lasts:
    ///
    /// - if it clears I/O or memory decoding (command register bits 0-1), no
    ///   register access is made through a [`Bar`] or
    ///   [`BarView`](crate::mmio::BarView) of this device (a mapped access
    ///   would fault with `SIGBUS`) until the bits are set again;
    /// - if it changes a base address register or the expansion ROM BAR, the
    ///   original value is written back before any access through a `Bar` of
    ///   this device, and the address written decodes to no other device or
    ///   memory in the meantime (on usrdma the module's mappings keep pointing
    ///   at the old bus address, so an access through them would reach
    ///   whatever decodes there: another device, or RAM).
    // `unsafe` for its contract only: the body is safe code (no system call).
    #[allow(unsafe_code)]
    pub unsafe fn write_config_unchecked(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        self.backend.write_config_raw(offset, buf)
    }

    /// The device's configuration space: 256 bytes, or 4096 for PCI Express.
    pub fn config_space(&self) -> Result<Vec<u8>, Error> {
        self.backend.config_space()
    }

    /// The device's capabilities (standard and extended), in list order.
    ///
    /// ```no_run
    /// # let device = usrdrv::Device::open("0000:00:03.0".parse()?, usrdrv::dma::DmaMask::new(28)?)?;
    /// for capability in device.capabilities()? {
    ///     println!("{capability}"); // e.g. "[0x040] MSI (0x05)"
    /// }
    /// # Ok::<(), usrdrv::Error>(())
    /// ```
    pub fn capabilities(&self) -> Result<Vec<Capability>, Error> {
        Ok(capabilities::capabilities(&self.config_space()?))
    }

    /// Resets the device, if it supports reset.
    pub fn reset(&self) -> Result<(), Error> {
        self.backend.reset()
    }

    /// Whether the kernel has asked for the device back (unbind, hot-unplug):
    /// register accesses and new DMA fail from then on; drop every handle.
    pub fn is_revoked(&self) -> bool {
        self.backend.is_revoked()
    }

    /// Sets what happens when the kernel asks for the device back (an unbind,
    /// a hot-unplug): by default usrdrv lets go at once, so the unbind
    /// completes even if the driver is idle, and the driver's next call fails
    /// with a `Revoked` error ([`Error::is_revoked`]). A driver that must
    /// finish in-flight I/O first can ask for a bounded grace period.
    /// [`ReleasePolicy`] says what letting go does. (VFIO only: the usrdma
    /// module takes its device back at once.)
    ///
    /// ```no_run
    /// # use usrdrv::{Device, ReleasePolicy, dma::DmaMask};
    /// # use std::time::Duration;
    /// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
    /// device.set_release_policy(ReleasePolicy::Grace(Duration::from_millis(500)));
    /// // ... in the I/O loop:
    /// if device.release_requested() {
    ///     // stop submitting, reap what is in flight, then:
    ///     device.release();
    /// }
    /// # Ok::<(), usrdrv::Error>(())
    /// ```
    pub fn set_release_policy(&self, policy: ReleasePolicy) {
        self.backend.set_release_policy(policy);
    }

    /// Whether the kernel has asked for the device back (during a grace
    /// period the device still works; afterwards it is revoked).
    pub fn release_requested(&self) -> bool {
        self.backend.release_requested()
    }

    /// Ends a grace period now: gives the device back if the kernel has asked,
    /// or as soon as it asks.
    pub fn release(&self) {
        self.backend.release();
    }

    fn irq_control(&self) -> Arc<dyn IrqControl> {
        self.backend.irq_control()
    }

    /// What the kernel says about interrupts of `kind` on this device.
    pub fn irq_info(&self, kind: IrqKind) -> Result<IrqInfo, IrqError> {
        self.irq_control().info(kind)
    }

    /// Enables `count` vectors of `kind`, each signalling its own eventfd.
    ///
    /// MSI and MSI-X are memory writes by the device, dropped unless it may
    /// master the bus, so this turns bus mastering on for them.
    pub fn enable_interrupts(&self, kind: IrqKind, count: u32) -> Result<Interrupts, IrqError> {
        let address = self.address();
        if self.is_revoked() {
            return Err(IrqError::Revoked { address });
        }
        if kind != IrqKind::Intx {
            self.enable_bus_master().map_err(|e| match e {
                DmaError::Revoked { address } => IrqError::Revoked { address },
                e => IrqError::BusMaster {
                    kind,
                    address,
                    source: Box::new(e),
                },
            })?;
        }
        Interrupts::enable(self.irq_control(), kind, count)
    }

    /// Turns on bus mastering (the device may start DMA), once. Allocations,
    /// mappings and MSI/MSI-X turn it on themselves.
    pub fn enable_bus_master(&self) -> Result<(), DmaError> {
        if self.is_revoked() {
            return Err(DmaError::Revoked {
                address: self.address(),
            });
        }
        if self.bus_master.load(Ordering::Acquire) {
            return Ok(());
        }
        if *self.quiescer.lock().unwrap_or_else(PoisonError::into_inner)
            == Some(std::thread::current().id())
        {
            // From the quiesce step itself: waiting would wait for ourselves.
            return Err(DmaError::DuringQuiesce {
                address: self.address(),
            });
        }
        // Another thread's quiesce step holds this until it is done.
        let _change = self
            .bus_master_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.bus_master.load(Ordering::Acquire) {
            return Ok(());
        }
        let address = self.address();
        let fail = |e: Error| {
            if e.is_revoked() {
                DmaError::Revoked { address }
            } else {
                DmaError::BusMaster {
                    source: Box::new(e),
                }
            }
        };
        let value = self.command().map_err(fail)? | PCI_COMMAND_MASTER;
        self.write_config(PCI_COMMAND, &value.to_le_bytes())
            .map_err(fail)?;
        self.bus_master.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs the driver's quiesce step `f` with bus mastering off, before the
    /// device may master the bus in this process.
    ///
    /// A previous owner of the device may have died with a transfer queued
    /// (a descriptor ring, a DMA engine programmed with its addresses).
    /// Where the device has a reset, the kernel resets it between owners;
    /// where it has none, only the driver knows how to stop or drain its
    /// engine: do that in `f` (abort, or wait until the engine reports idle).
    /// While `f` runs bus mastering stays off, so whatever the old transfer
    /// does cannot reach memory, and no other thread can turn it on; a
    /// transfer that completes then is dropped by the PCI bus.
    ///
    /// Call it right after opening: once an allocation, a mapping or MSI has
    /// turned bus mastering on, it is [`DmaError::QuiesceTooLate`] and `f`
    /// does not run. On usrdma, a successful `f` also tells the module that
    /// the memory it kept back from the previous owner (see the safety model)
    /// can be freed now rather than after its grace period.
    ///
    /// ```no_run
    /// # use usrdrv::{Device, dma::DmaMask};
    /// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
    /// let regs = device.bar(0)?;
    /// device.quiesce(|| {
    ///     // edu: wait until the DMA engine's "running" bit (0x98, bit 0) clears.
    ///     while regs.read32(0x98)? & 1 != 0 {
    ///         std::thread::sleep(std::time::Duration::from_millis(10));
    ///     }
    ///     Ok::<(), usrdrv::Error>(())
    /// })?;
    /// let buffer = device.alloc_dma(4096)?; // bus mastering goes on here
    /// # Ok::<(), usrdrv::Error>(())
    /// ```
    pub fn quiesce<T, E: From<DmaError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let address = self.address();
        if self.is_revoked() {
            return Err(DmaError::Revoked { address }.into());
        }
        let _change = self
            .bus_master_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.bus_master.load(Ordering::Acquire) {
            return Err(DmaError::QuiesceTooLate { address }.into());
        }
        let value = {
            let _step = QuiesceStep::enter(&self.quiescer);
            f()?
        };
        self.backend.quiesced()?;
        Ok(value)
    }

    /// Allocates `size` bytes (rounded up to pages) of zeroed memory the device
    /// can read and write, with its device address.
    ///
    /// Like every call that turns bus mastering on, it fails with
    /// [`DmaError::DuringQuiesce`] from inside [`Device::quiesce`]'s step.
    pub fn alloc_dma(&self, size: usize) -> Result<DmaBuffer, DmaError> {
        self.alloc(size, false)
    }

    /// Like [`Device::alloc_dma`], on 2 MiB hugepages when the system has them
    /// free (see [`DmaBuffer::backing`] for what you got); the size is rounded up
    /// to 2 MiB then.
    pub fn alloc_dma_huge(&self, size: usize) -> Result<DmaBuffer, DmaError> {
        self.alloc(size, true)
    }

    fn alloc(&self, size: usize, huge: bool) -> Result<DmaBuffer, DmaError> {
        self.enable_bus_master()?;
        let allocation = self.dma.alloc(size, huge)?;
        Ok(DmaBuffer::new(allocation, Arc::clone(&self.dma)))
    }

    /// A pool of `count` chunks of `chunk_size` bytes (rounded up to 64) carved
    /// from one DMA buffer: taking and returning a chunk makes no system call.
    pub fn dma_pool(&self, chunk_size: usize, count: usize) -> Result<DmaPool, DmaError> {
        let too_large = || DmaError::TooLarge {
            what: "the pool",
            size: u64::MAX,
        };
        let chunk_size = DmaPool::chunk_size_for(chunk_size).ok_or_else(too_large)?;
        let total = chunk_size.checked_mul(count).ok_or_else(too_large)?;
        let buffer = self.alloc(total, false)?;
        Ok(DmaPool::new(buffer, chunk_size, count))
    }

    /// A table of named DMA buffers allocated through this device.
    pub fn named_buffers(&self) -> Result<NamedBuffers, DmaError> {
        self.enable_bus_master()?;
        let backend = Arc::clone(&self.dma);
        Ok(NamedBuffers::new(Box::new(move |name, size| {
            Ok(DmaBuffer::new(
                backend.alloc_named(name, size)?,
                Arc::clone(&backend),
            ))
        })))
    }

    fn usrdma_dma(&self, what: &'static str) -> Result<&Arc<UsrdmaDma>, DmaError> {
        self.backend
            .usrdma_dma()
            .ok_or(DmaError::NeedsUsrdma { what })
    }

    /// Allocates a persistent named buffer (usrdma only): it outlives this
    /// process and stays listed (`usrdrv buffers`) until
    /// [`Device::free_persistent`] or until the module is unloaded; a later
    /// process maps it with [`Device::attach_persistent`]. Dropping the
    /// returned handle only unmaps it from this process.
    ///
    /// ```no_run
    /// # use usrdrv::{Device, dma::DmaMask};
    /// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
    /// let log = device.alloc_persistent("fw-log", 64 * 1024)?;
    /// // ... later, in another process:
    /// let again = device.attach_persistent("fw-log")?;
    /// assert_eq!(again.device_addr(), log.device_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alloc_persistent(&self, name: &str, size: usize) -> Result<PersistentBuffer, DmaError> {
        let dma = self.usrdma_dma("persistent buffers")?;
        crate::dma::check_name(name)?;
        let allocation = dma.alloc_with(name, size, crate::sys::usrdma_ioctl::BUF_PERSISTENT)?;
        Ok(PersistentBuffer::new(
            name,
            DmaBuffer::new(allocation, Arc::clone(dma) as Arc<dyn DmaBackend>),
        ))
    }

    /// Maps the persistent buffer `name` of this device, which an earlier
    /// process allocated (usrdma only).
    pub fn attach_persistent(&self, name: &str) -> Result<PersistentBuffer, DmaError> {
        let dma = self.usrdma_dma("persistent buffers")?;
        let entry = dma
            .list()?
            .into_iter()
            .find(|e| crate::sys::usrdma_ioctl::name_of(&e.name) == name)
            .ok_or_else(|| DmaError::NoSuchName {
                name: name.to_owned(),
            })?;
        let keep = entry.flags & crate::sys::usrdma_ioctl::BUF_PERSISTENT != 0;
        if !keep {
            // Another process's private buffer: freed when it exits.
            return Err(DmaError::NotPersistent {
                name: name.to_owned(),
            });
        }
        let allocation = dma.attach(&entry, true)?;
        Ok(PersistentBuffer::new(
            name,
            DmaBuffer::new(allocation, Arc::clone(dma) as Arc<dyn DmaBackend>),
        ))
    }

    /// Frees the persistent buffer `name` (usrdma only), which no process
    /// may still map: a handle to it (from [`Device::alloc_persistent`] or
    /// [`Device::attach_persistent`]) that is alive here or in a child is
    /// [`DmaError::BufferInUse`], and a buffer that is not persistent (a
    /// named buffer of this process) is [`DmaError::NotPersistent`]; neither
    /// is freed.
    pub fn free_persistent(&self, name: &str) -> Result<(), DmaError> {
        self.usrdma_dma("persistent buffers")?.free_by_name(name)
    }

    /// Maps the caller's `buffer` for DMA in `direction`; the result holds the
    /// buffer and its scatter-gather list until unmapped
    /// ([`DmaMapping::unmap`] gives it back).
    ///
    /// The buffer is taken by value (`Vec<u8>`, `Box<[u8]>`) or must be
    /// `'static`, so that forgetting or leaking the mapping leaks the buffer
    /// with it instead of handing memory the device can reach back to the
    /// allocator. To map a borrowed buffer, use [`Device::with_dma`].
    ///
    /// ```no_run
    /// # use usrdrv::{Device, dma::{Direction, DmaMask}};
    /// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
    /// let mapping = device.map_dma(vec![0u8; 4096], Direction::FromDevice)?;
    /// let first = mapping.sg_list()[0];
    /// // ... program the device with first.device_addr, wait for it ...
    /// let data: Vec<u8> = mapping.unmap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_dma<B: DmaTarget>(
        &self,
        buffer: B,
        direction: Direction,
    ) -> Result<DmaMapping<B>, DmaError> {
        self.enable_bus_master()?;
        DmaMapping::new(buffer, direction, Arc::clone(&self.dma))
    }

    /// Lends the caller's `buffer` to the device for the duration of `f`: maps
    /// it in `direction`, calls `f` with the mapping, and unmaps before
    /// returning `f`'s result, also when `f` panics (the unmap runs while
    /// unwinding). The mapping cannot escape `f`, so whatever safe code does,
    /// the device's access ends before `buffer` is usable again.
    ///
    /// If the kernel refuses to unmap, the process is aborted: the memory could
    /// no longer be handed back safely. (With [`Device::map_dma`], which owns
    /// its buffer, a failed unmap leaks the buffer instead.)
    ///
    /// ```no_run
    /// # use usrdrv::{Device, dma::{Direction, DmaMask}};
    /// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
    /// let regs = device.bar(0)?;
    /// let mut block = [0u8; 1000];
    /// device.with_dma(&mut block, Direction::FromDevice, |mapping| {
    ///     let entry = mapping.sg_list()[0];
    ///     regs.write64(0x88, entry.device_addr)
    ///     // ... start the transfer and wait for its completion in here ...
    /// })??;
    /// println!("{:?}", &block[..8]); // unmapped: ours again
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The mapping cannot be kept past the closure:
    ///
    /// ```compile_fail
    /// # use usrdrv::{Device, dma::{Direction, DmaMask}};
    /// # let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
    /// let mut block = [0u8; 64];
    /// let mut kept = None;
    /// device.with_dma(&mut block, Direction::FromDevice, |mapping| kept = Some(mapping))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_dma<R>(
        &self,
        buffer: &mut [u8],
        direction: Direction,
        f: impl FnOnce(&DmaMapping<Borrowed<'_>>) -> R,
    ) -> Result<R, DmaError> {
        self.lend(Borrowed::exclusive(buffer), direction, f)
    }

    /// Like [`Device::with_dma`] for a buffer the device only reads
    /// ([`Direction::ToDevice`]); the caller may keep reading it meanwhile.
    pub fn with_dma_to_device<R>(
        &self,
        buffer: &[u8],
        f: impl FnOnce(&DmaMapping<Borrowed<'_>>) -> R,
    ) -> Result<R, DmaError> {
        self.lend(Borrowed::shared(buffer), Direction::ToDevice, f)
    }

    fn lend<'b, R>(
        &self,
        buffer: Borrowed<'b>,
        direction: Direction,
        f: impl FnOnce(&DmaMapping<Borrowed<'b>>) -> R,
    ) -> Result<R, DmaError> {
        self.enable_bus_master()?;
        crate::dma::lend(Arc::clone(&self.dma), buffer, direction, f)
    }
}
