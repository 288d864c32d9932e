//! PCI functions: addresses, and what sysfs says about them.

mod address;
pub mod capabilities;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod fake_sysfs;
mod sysfs;

pub use address::{AddressError, PciAddress};
pub use capabilities::{Capability, MsiInfo, MsixInfo};
pub use config::{ConfigError, ProtectedRegister};
pub use sysfs::{PciFunction, Resource, Sysfs, SysfsError, Usage, VFIO_PCI_DRIVER};
