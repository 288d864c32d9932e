//! The usrdma implementation of the device seam: a function bound to the
//! usrdma module, and its DMA context.

use std::sync::Arc;

use super::Device;
use super::dma::UsrdmaDma;
use crate::Error;
use crate::device::Backend;
use crate::device_backend::DeviceBackend;
use crate::dma::{DmaBackend, DmaError};
use crate::irq::IrqControl;
use crate::mmio::Bar;
use crate::pci::PciAddress;

/// A device opened through the usrdma module.
#[derive(Debug)]
pub(crate) struct UsrdmaBackend {
    pub(crate) device: Device,
    pub(crate) dma: Arc<UsrdmaDma>,
}

impl DeviceBackend for UsrdmaBackend {
    fn kind(&self) -> Backend {
        Backend::Usrdma
    }

    fn address(&self) -> PciAddress {
        self.device.address()
    }

    fn dma(&self) -> Arc<dyn DmaBackend> {
        Arc::clone(&self.dma) as Arc<dyn DmaBackend>
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
        Ok(self.device.config_space()?)
    }

    fn reset(&self) -> Result<(), Error> {
        Ok(self.device.reset()?)
    }

    fn is_revoked(&self) -> bool {
        self.device.is_revoked()
    }

    fn irq_control(&self) -> Arc<dyn IrqControl> {
        Arc::new(self.device.clone())
    }

    fn quiesced(&self) -> Result<(), DmaError> {
        let address = self.address();
        self.device
            .quiesced()
            .map_err(|source| DmaError::quiesce_refused(address, source))
    }

    fn usrdma(&self) -> Option<&Device> {
        Some(&self.device)
    }

    fn usrdma_dma(&self) -> Option<&Arc<UsrdmaDma>> {
        Some(&self.dma)
    }
}
