//! The device handle drivers use: registers, configuration space and DMA,
//! whatever kernel interface is underneath.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;
use crate::dma::{
    Direction, DmaBackend, DmaBuffer, DmaError, DmaMapping, DmaMask, DmaPool, DmaTarget,
    NamedBuffers,
};
use crate::irq::{Interrupts, IrqError, IrqInfo, IrqKind};
use crate::mmio::Bar;
use crate::pci::capabilities::{self, Capability};
use crate::pci::{PciAddress, Sysfs};
use crate::vfio::{self, IommuDomain, VfioError};

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
    vfio: vfio::Device,
    domain: IommuDomain,
    dma: Arc<dyn DmaBackend>,
    bus_master: AtomicBool,
}

impl Device {
    /// Opens the device at `address` (bound to vfio-pci) in an IOMMU domain of
    /// its own, with device addresses below `mask`.
    pub fn open(address: PciAddress, mask: DmaMask) -> Result<Self, Error> {
        vfio::usable_group(&Sysfs::system(), address)?;
        let domain = IommuDomain::new(mask)?;
        Self::open_in(&domain, address)
    }

    /// Opens the device at `address` in `domain`, sharing its device address
    /// space (and DMA mask) with the other devices there.
    pub fn open_in(domain: &IommuDomain, address: PciAddress) -> Result<Self, Error> {
        let group = vfio::usable_group(&Sysfs::system(), address)?;
        let group = domain.group(group)?;
        let vfio = vfio::Device::open_in_group(&group, address)?;
        Ok(Self {
            vfio,
            domain: domain.clone(),
            dma: domain.backend(),
            bus_master: AtomicBool::new(false),
        })
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.vfio.address()
    }

    /// The IOMMU domain the device is in.
    pub fn domain(&self) -> &IommuDomain {
        &self.domain
    }

    /// The DMA mask device addresses are kept under.
    pub fn dma_mask(&self) -> DmaMask {
        self.dma.mask()
    }

    /// The VFIO device underneath, for what this type does not cover.
    pub fn vfio(&self) -> &vfio::Device {
        &self.vfio
    }

    /// BAR `index` (`0..=5`), ready for register access.
    pub fn bar(&self, index: u8) -> Result<Bar, Error> {
        Ok(self.vfio.bar(index)?)
    }

    /// Reads configuration space at `offset` into `buf`.
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        Ok(self.vfio.read_config(offset, buf)?)
    }

    /// Writes `buf` to configuration space at `offset`.
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        Ok(self.vfio.write_config(offset, buf)?)
    }

    /// The device's configuration space: 256 bytes, or 4096 for PCI Express.
    pub fn config_space(&self) -> Result<Vec<u8>, Error> {
        let size = self
            .vfio
            .region_info(vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX)?
            .size;
        let mut config = vec![0u8; usize::try_from(size.min(4096)).unwrap_or(256)];
        self.vfio.read_config(0, &mut config)?;
        Ok(config)
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
        Ok(self.vfio.reset()?)
    }

    /// Whether the kernel has asked for the device back (unbind, hot-unplug):
    /// register accesses and new DMA fail from then on; drop every handle.
    pub fn is_revoked(&self) -> bool {
        self.vfio.is_revoked()
    }

    /// What the kernel says about interrupts of `kind` on this device.
    pub fn irq_info(&self, kind: IrqKind) -> Result<IrqInfo, IrqError> {
        self.vfio.irq_info(kind)
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
            self.enable_bus_master().map_err(|e| IrqError::Sys {
                op: "enabling bus mastering (MSI messages are DMA writes)",
                kind,
                address,
                source: std::io::Error::other(e),
            })?;
        }
        Interrupts::enable(&self.vfio, kind, count)
    }

    /// Turns on bus mastering (the device may start DMA), once.
    pub fn enable_bus_master(&self) -> Result<(), DmaError> {
        if self.is_revoked() {
            return Err(DmaError::Revoked {
                address: self.address(),
            });
        }
        if self.bus_master.load(Ordering::Acquire) {
            return Ok(());
        }
        let fail = |e: VfioError| DmaError::BusMaster {
            source: Box::new(e),
        };
        let mut command = [0u8; 2];
        self.vfio
            .read_config(PCI_COMMAND, &mut command)
            .map_err(fail)?;
        let value = u16::from_le_bytes(command) | PCI_COMMAND_MASTER;
        self.vfio
            .write_config(PCI_COMMAND, &value.to_le_bytes())
            .map_err(fail)?;
        self.bus_master.store(true, Ordering::Release);
        Ok(())
    }

    /// Allocates `size` bytes (rounded up to pages) of zeroed memory the device
    /// can read and write, with its device address.
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
        Ok(NamedBuffers::new(Box::new(move |size| {
            Ok(DmaBuffer::new(
                backend.alloc(size, false)?,
                Arc::clone(&backend),
            ))
        })))
    }

    /// Maps the caller's `buffer` for DMA in `direction`; the result holds the
    /// buffer and its scatter-gather list until unmapped.
    pub fn map_dma<B: DmaTarget>(
        &self,
        buffer: B,
        direction: Direction,
    ) -> Result<DmaMapping<B>, DmaError> {
        self.enable_bus_master()?;
        DmaMapping::new(buffer, direction, Arc::clone(&self.dma))
    }
}
