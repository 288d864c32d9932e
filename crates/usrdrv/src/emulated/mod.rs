//! Emulated devices: the same driver code, run in `cargo test` against a
//! device model written in Rust, with faults a test can inject.
//!
//! Hardware and the QEMU rig test a driver against real devices; neither can
//! make the device vanish in the middle of a transfer, an allocation fail at
//! the worst moment, or an interrupt never come. Here a test writes (or
//! reuses) a [`DeviceModel`], opens it with [`Device::emulated`](crate::Device::emulated)
//! and runs the driver unchanged: its [`Bar`](crate::mmio::Bar)s call the
//! model, its DMA memory and mappings go into an emulated IOMMU that the
//! model's DMA ([`Bus`]) goes through, and its interrupts are eventfds the
//! model signals. The [`EmulatedDevice`] handle injects faults, records the
//! DMA the IOMMU refused ([`DmaFault`]), and fails the test if the driver
//! leaked a buffer or a mapping.
//!
//! What is checked that hardware cannot show:
//! - the model reaches only mapped device addresses, writes only memory
//!   mapped for the device to write, and nothing once it is unmapped, the
//!   device revoked, or bus mastering off: each such access is a recorded
//!   fault, never a write;
//! - in a mapped caller's buffer it reaches only the buffer's bytes, not the
//!   rest of their pages (which a real IOMMU would let through, into
//!   whatever else the process keeps there);
//! - every device address handed out fits the declared DMA mask;
//! - at the end, everything allocated was freed and everything mapped was
//!   unmapped (or the drop of the handle panics, naming what leaked).
//!
//! Queue-based devices are natural to write: a doorbell write in
//! [`DeviceModel::write`] reads submission entries with
//! [`Bus::read_obj`], writes completions with [`Bus::write_obj`] and raises
//! the queue's MSI-X vector with [`Bus::interrupt`], from the driver's
//! thread or a thread of the model's own.

mod bus;
mod config;
mod device;
mod error;
mod faults;
mod function;
mod iommu;
mod model;
mod session;

pub use bus::Bus;
pub use device::{DEFAULT_ADDRESS, EmulatedDevice};
pub use error::EmulatedError;
pub use faults::{DmaFault, DmaOp, Leak, LeakKind, LeakReport};
pub use model::{BAR_COUNT, DeviceModel, ModelInfo};
