//! The usrdma backend: devices bound to the `usrdma` kernel module (machines
//! without an IOMMU), behind the same types as VFIO.

pub mod listing;
