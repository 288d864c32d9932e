//! Errors of the emulated backend.

use crate::pci::PciAddress;

/// Why an operation on an emulated device failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatedError {
    /// The model has no BAR of this index.
    #[error("the emulated device {address} has no BAR {index}")]
    NoSuchBar {
        /// The device.
        address: PciAddress,
        /// The BAR asked for.
        index: u8,
    },
    /// The model cannot be reset.
    #[error(
        "the emulated device {address} has no reset (its model does not set ModelInfo::resettable)"
    )]
    NoReset {
        /// The device.
        address: PciAddress,
    },
    /// The device was revoked (by the test, as an unbind would).
    #[error("the emulated device {address} was revoked: drop every handle to it")]
    Revoked {
        /// The device.
        address: PciAddress,
    },
    /// A configuration access outside the configuration space.
    #[error(
        "a {len}-byte configuration access at {offset:#x} is outside the emulated device's 256 bytes"
    )]
    ConfigRange {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: usize,
    },
    /// A configuration write the checks refuse (decoding bits, BARs).
    #[error(transparent)]
    Config(#[from] crate::pci::ConfigError),
    /// `Device::open_with(Backend::Emulated, ..)`: an emulated device has no
    /// PCI address to open; it comes from its model.
    #[error(
        "an emulated device is opened with Device::emulated(&EmulatedDevice, mask), not by PCI address"
    )]
    NeedsModel,
}
