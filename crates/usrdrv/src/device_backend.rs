//! The seam between [`Device`](crate::Device) and what is underneath it: one
//! trait for everything a backend does for an open device (registers,
//! configuration space, DMA, interrupts, reset, revocation). VFIO, usrdma and
//! the emulated backend each implement it in a file of their own, so adding a
//! backend touches one place.

use std::fmt;
use std::sync::Arc;

use crate::Error;
use crate::device::Backend;
use crate::dma::{DmaBackend, DmaError};
use crate::irq::IrqControl;
use crate::mmio::Bar;
use crate::pci::PciAddress;
use crate::revocation::ReleasePolicy;
use crate::usrdma::{self, dma::UsrdmaDma};
use crate::vfio::{self, IommuDomain};

/// What a backend does for one open device.
pub(crate) trait DeviceBackend: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> Backend;

    /// The device's PCI address.
    fn address(&self) -> PciAddress;

    /// The DMA side: allocations and mappings for this device.
    fn dma(&self) -> Arc<dyn DmaBackend>;

    /// BAR `index`, ready for register access.
    fn bar(&self, index: u8) -> Result<Bar, Error>;

    /// Reads configuration space at `offset` into `buf`.
    fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error>;

    /// Writes configuration space, refusing what would change the BARs'
    /// decoding (see [`crate::pci::ConfigError`]).
    fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), Error>;

    /// Writes configuration space, refusing nothing.
    fn write_config_raw(&self, offset: u64, buf: &[u8]) -> Result<(), Error>;

    /// The whole configuration space (256 bytes, or 4096 for PCI Express).
    fn config_space(&self) -> Result<Vec<u8>, Error>;

    /// Resets the device.
    fn reset(&self) -> Result<(), Error>;

    /// Whether the device was taken back.
    fn is_revoked(&self) -> bool;

    /// Sets what happens when the device is asked back (VFIO only).
    fn set_release_policy(&self, policy: ReleasePolicy) {
        let _ = policy;
    }

    /// Whether the device was asked back (during a grace period it still works).
    fn release_requested(&self) -> bool {
        self.is_revoked()
    }

    /// Ends a grace period now.
    fn release(&self) {}

    /// The interrupt side.
    fn irq_control(&self) -> Arc<dyn IrqControl>;

    /// Tells the backend the driver's quiesce step succeeded.
    fn quiesced(&self) -> Result<(), DmaError> {
        Ok(())
    }

    /// The IOMMU domain (VFIO only).
    fn domain(&self) -> Option<&IommuDomain> {
        None
    }

    /// The VFIO device (VFIO only).
    fn vfio(&self) -> Option<&vfio::Device> {
        None
    }

    /// The usrdma device (usrdma only).
    fn usrdma(&self) -> Option<&usrdma::Device> {
        None
    }

    /// The usrdma DMA context, for persistent buffers (usrdma only).
    fn usrdma_dma(&self) -> Option<&Arc<UsrdmaDma>> {
        None
    }
}
