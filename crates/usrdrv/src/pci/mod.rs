//! PCI functions: addresses, and what sysfs says about them.

mod address;
mod sysfs;

pub use address::{AddressError, PciAddress};
pub use sysfs::{PciFunction, Sysfs, SysfsError, VFIO_PCI_DRIVER};
