//! PCI functions: addresses, and what sysfs says about them.

mod address;
pub mod capabilities;
#[cfg(test)]
pub(crate) mod fake_sysfs;
mod sysfs;

pub use address::{AddressError, PciAddress};
pub use capabilities::{Capability, MsiInfo, MsixInfo};
pub use sysfs::{PciFunction, Sysfs, SysfsError, VFIO_PCI_DRIVER};
