//! The NVMe driver's guest suite (`guest_nvme.rs`), run unchanged over usrdma
//! in the boot without an IOMMU.

#[path = "guest_nvme.rs"]
mod suite;
