//! The named-buffer suite of `guest_edu_names.rs`, unchanged, in the boot
//! without an IOMMU: edu is bound to the usrdma module.

#[path = "guest_edu_names.rs"]
mod suite;
