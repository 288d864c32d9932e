//! The crate-level error: any of the per-module errors.

/// Any usrdrv error. Each module has its own, more precise error type; this one
/// wraps them for calls that cross modules (such as opening a device).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PCI address did not parse.
    #[error(transparent)]
    Address(#[from] crate::pci::AddressError),
    /// Reading or changing sysfs failed.
    #[error(transparent)]
    Sysfs(#[from] crate::pci::SysfsError),
    /// A VFIO operation failed.
    #[error(transparent)]
    Vfio(#[from] crate::vfio::VfioError),
    /// A usrdma operation failed.
    #[error(transparent)]
    Usrdma(#[from] crate::usrdma::UsrdmaError),
    /// A DMA operation failed.
    #[error(transparent)]
    Dma(#[from] crate::dma::DmaError),
    /// A register access failed.
    #[error(transparent)]
    Mmio(#[from] crate::mmio::MmioError),
    /// An interrupt operation failed.
    #[error(transparent)]
    Irq(#[from] crate::irq::IrqError),
    /// An operation on an emulated device failed.
    #[error(transparent)]
    Emulated(#[from] crate::emulated::EmulatedError),
}

impl Error {
    /// Whether the operation failed because the kernel asked for the device
    /// back (unbind, hot-unplug): every later call on the device fails the same
    /// way, so drop every handle to it.
    pub fn is_revoked(&self) -> bool {
        match self {
            Self::Dma(e) => e.is_revoked(),
            Self::Mmio(e) => e.is_revoked(),
            Self::Usrdma(e) => matches!(e, crate::usrdma::UsrdmaError::Revoked { .. }),
            Self::Vfio(e) => matches!(e, crate::vfio::VfioError::Revoked { .. }),
            Self::Irq(e) => e.is_revoked(),
            Self::Emulated(e) => matches!(e, crate::emulated::EmulatedError::Revoked { .. }),
            _ => false,
        }
    }
}

impl crate::dma::DmaError {
    /// Whether the operation failed because the kernel asked for the device
    /// back (unbind, hot-unplug).
    pub fn is_revoked(&self) -> bool {
        matches!(self, Self::Revoked { .. })
    }
}

impl crate::mmio::MmioError {
    /// Whether the access failed because the kernel asked for the device
    /// back (unbind, hot-unplug).
    pub fn is_revoked(&self) -> bool {
        matches!(self, Self::Revoked { .. })
    }
}

impl crate::irq::IrqError {
    /// Whether the operation failed because the kernel asked for the device
    /// back (unbind, hot-unplug).
    pub fn is_revoked(&self) -> bool {
        matches!(self, Self::Revoked { .. })
    }
}
