//! The VFIO implementation of the device seam: a VFIO device in an IOMMU
//! domain.

use std::sync::Arc;

use vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;

use super::{Device, IommuDomain};
use crate::Error;
use crate::device::Backend;
use crate::device_backend::DeviceBackend;
use crate::dma::DmaBackend;
use crate::irq::IrqControl;
use crate::mmio::Bar;
use crate::pci::PciAddress;
use crate::revocation::ReleasePolicy;

/// A device opened through VFIO, with the domain its DMA goes through.
#[derive(Debug)]
pub(crate) struct VfioBackend {
    pub(crate) device: Device,
    pub(crate) domain: IommuDomain,
}

impl DeviceBackend for VfioBackend {
    fn kind(&self) -> Backend {
        Backend::Vfio
    }

    fn address(&self) -> PciAddress {
        self.device.address()
    }

    fn dma(&self) -> Arc<dyn DmaBackend> {
        self.domain.backend()
    }

    fn bar(&self, index: u8) -> Result<Bar, Error> {
        Ok(self.device.bar(index)?)
    }

    fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        Ok(self.device.read_config(offset, buf)?)
    }

    fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        Ok(self.device.write_config(offset, buf)?)
    }

    fn write_config_raw(&self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        Ok(self.device.write_config_raw(offset, buf)?)
    }

    fn config_space(&self) -> Result<Vec<u8>, Error> {
        let size = self.device.region_info(VFIO_PCI_CONFIG_REGION_INDEX)?.size;
        let mut config = vec![0u8; usize::try_from(size.min(4096)).unwrap_or(256)];
        self.device.read_config(0, &mut config)?;
        Ok(config)
    }

    fn reset(&self) -> Result<(), Error> {
        Ok(self.device.reset()?)
    }

    fn is_revoked(&self) -> bool {
        self.device.is_revoked()
    }

    fn set_release_policy(&self, policy: ReleasePolicy) {
        self.device.set_release_policy(policy);
    }

    fn release_requested(&self) -> bool {
        self.device.release_requested()
    }

    fn release(&self) {
        self.device.release();
    }

    fn irq_control(&self) -> Arc<dyn IrqControl> {
        Arc::new(self.device.clone())
    }

    fn domain(&self) -> Option<&IommuDomain> {
        Some(&self.domain)
    }

    fn vfio(&self) -> Option<&Device> {
        Some(&self.device)
    }
}
