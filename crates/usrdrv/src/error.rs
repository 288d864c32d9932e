//! The crate-level error: any of the per-module errors.

/// Any usrdrv error. Each module has its own, more precise error type; this one
/// wraps them for calls that cross modules (such as opening a device).
#[derive(Debug, thiserror::Error)]
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
}
