//! DMA: device addresses, memory the device can reach, and mappings of the
//! caller's buffers.

mod iova;

pub use iova::{IovaAllocator, IovaError, IovaRange};
