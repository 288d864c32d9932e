//! Interrupts through the usrdma module: what the function offers, read
//! from its configuration space, and eventfds bound with `USRDMA_SET_IRQ`.

use std::io;
use std::os::fd::BorrowedFd;

use super::Device;
use crate::irq::{IrqControl, IrqError, IrqInfo, IrqKind};
use crate::pci::PciAddress;
use crate::pci::capabilities;
use crate::sys::eventfd::EventFd;
use crate::sys::usrdma_ioctl as ioctl;

/// Offset of the interrupt pin register in configuration space.
const PCI_INTERRUPT_PIN: usize = 0x3d;

/// What the configuration space `config` says about `kind`.
pub(crate) fn info_from_config(config: &[u8], kind: IrqKind) -> IrqInfo {
    match kind {
        IrqKind::Intx => {
            let pin = config.get(PCI_INTERRUPT_PIN).copied().unwrap_or(0);
            IrqInfo {
                count: u32::from(pin != 0),
                maskable: true,
                automasked: true,
            }
        }
        IrqKind::Msi => IrqInfo {
            count: capabilities::msi(config).map_or(0, |m| m.vectors),
            maskable: false,
            automasked: false,
        },
        IrqKind::Msix => IrqInfo {
            count: capabilities::msix(config).map_or(0, |m| m.table_size),
            maskable: false,
            automasked: false,
        },
    }
}

impl IrqControl for Device {
    fn address(&self) -> PciAddress {
        Device::address(self)
    }

    fn info(&self, kind: IrqKind) -> Result<IrqInfo, IrqError> {
        let config = self.config_space().map_err(|e| IrqError::ConfigSpace {
            kind,
            address: self.address(),
            source: Box::new(e),
        })?;
        Ok(info_from_config(&config, kind))
    }

    fn set_eventfds(&self, kind: IrqKind, eventfds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let eventfds = crate::irq::raw_fds(eventfds);
        let kind = if eventfds.is_empty() {
            ioctl::IRQ_NONE
        } else {
            match kind {
                IrqKind::Intx => ioctl::IRQ_INTX,
                IrqKind::Msi => ioctl::IRQ_MSI,
                IrqKind::Msix => ioctl::IRQ_MSIX,
            }
        };
        let result = ioctl::set_irq(self.fd(), kind, &eventfds);
        if let Err(e) = &result
            && e.raw_os_error() == Some(libc::ENODEV)
        {
            self.mark_revoked();
        }
        result
    }

    fn unmask_intx(&self) -> io::Result<()> {
        ioctl::irq_unmask(self.fd())
    }

    fn is_revoked(&self) -> bool {
        Device::is_revoked(self)
    }

    fn revocation_event(&self) -> Option<&EventFd> {
        Device::revocation_event(self)
    }

    fn mark_revoked(&self) {
        Device::mark_revoked(self);
    }

    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        // The module marks the node hung up, then signals every eventfd once
        // (API 4; version 3 added USRDMA_IRQ_REVOKED and hung up the same way),
        // possibly before the revocation watcher sees the hang-up.
        Some(self.fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intx_follows_the_interrupt_pin() {
        let mut config = vec![0u8; 256];
        assert_eq!(info_from_config(&config, IrqKind::Intx).count, 0);
        config[PCI_INTERRUPT_PIN] = 1;
        let info = info_from_config(&config, IrqKind::Intx);
        assert_eq!(
            (info.count, info.maskable, info.automasked),
            (1, true, true)
        );
        assert_eq!(info_from_config(&config, IrqKind::Msi).count, 0);
        assert_eq!(info_from_config(&config, IrqKind::Msix).count, 0);
    }

    #[test]
    fn msi_vectors_come_from_the_capability() {
        let mut config = vec![0u8; 256];
        config[0x06] = 0x10; // status: capability list
        config[0x34] = 0x40;
        config[0x40] = 0x05; // MSI
        config[0x41] = 0x00;
        config[0x42] = 0x04; // multiple message capable: 2^2 = 4
        assert_eq!(info_from_config(&config, IrqKind::Msi).count, 4);
    }
}
