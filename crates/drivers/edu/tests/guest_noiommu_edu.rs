//! The edu suite of `guest_edu.rs`, unchanged, in the boot without an IOMMU:
//! edu is bound to the usrdma module and the same driver code runs over it.

#[path = "guest_edu.rs"]
mod suite;
