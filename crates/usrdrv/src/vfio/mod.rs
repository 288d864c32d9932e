//! Devices through the kernel's VFIO interface (machines with an IOMMU).
//!
//! One type per kernel object, each owning its descriptor:
//! [`Container`] (`/dev/vfio/vfio`, one IOMMU address space), [`Group`]
//! (`/dev/vfio/<n>`, the unit of isolation the IOMMU gives) and [`Device`]
//! (a descriptor for one PCI function). Children keep their parents alive, so
//! handles can be dropped in any order.
//!
//! ```no_run
//! use usrdrv::vfio::Device;
//!
//! // The device must be bound to vfio-pci (see `Sysfs::bind`).
//! let device = Device::open("0000:00:03.0".parse()?)?;
//! let bar0 = device.bar(0)?;
//! println!("{}: id register {:#010x}", device.address(), bar0.read32(0)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod backend;
mod cap_chain;
mod container;
mod device;
mod domain;
mod error;
mod group;
mod iommu_info;
mod region;
mod release;
mod revocation;

pub use container::Container;
pub use device::{Device, RegionInfo};
pub use domain::IommuDomain;
pub use error::VfioError;
pub use group::Group;
pub use group::usable_group;
pub use iommu_info::IommuInfo;
