//! What a queued command can own as its data buffer: DMA memory from usrdrv
//! (a [`DmaBuffer`] or a pool chunk) or the caller's own memory mapped for
//! DMA (a [`DmaMapping`]), described to the driver by its device addresses.

use usrdrv::dma::{DmaBuffer, DmaError, DmaMapping, DmaRegion, DmaTarget, PoolBuffer, SgEntry};

/// Memory a queued command can own: a [`DmaBuffer`], a [`PoolBuffer`], or
/// the caller's memory mapped with [`Device::map_dma`](usrdrv::Device::map_dma)
/// (a [`DmaMapping`] of a `Vec<u8>`, a boxed slice or a `'static` slice).
///
/// The queue holds the buffer from submission until the command is reaped,
/// so whichever it is, safe code cannot touch it while the controller may.
/// A mapping's scatter-gather list may have several runs (without an IOMMU,
/// where the pages are not contiguous): transfers on it are described with
/// PRPs, whose rules (every run but the first starting on a page, every run
/// but the last ending on one) a mapping of whole pages always meets.
pub trait IoBuffer: Send + std::fmt::Debug + 'static {
    /// Calls `f` with the device addresses of the buffer's bytes, in order.
    fn with_segments<R>(&self, f: impl FnOnce(&[SgEntry]) -> R) -> R;

    /// Whether the controller may write it (so it can take a read's data).
    fn device_writable(&self) -> bool {
        true
    }

    /// Hands what the CPU wrote to the device, before a write command.
    fn sync_for_device(&self) -> Result<(), DmaError>;

    /// Hands what the device wrote to the CPU, after a read command.
    fn sync_for_cpu(&self) -> Result<(), DmaError>;
}

/// usrdrv's own DMA memory: one run of device addresses, and syncs that
/// only order memory (they cannot fail).
macro_rules! region_io_buffer {
    ($($buffer:ty),*) => {$(
        impl IoBuffer for $buffer {
            fn with_segments<R>(&self, f: impl FnOnce(&[SgEntry]) -> R) -> R {
                f(&[SgEntry {
                    device_addr: self.device_addr(),
                    len: self.len(),
                }])
            }

            fn sync_for_device(&self) -> Result<(), DmaError> {
                DmaRegion::sync_for_device(self);
                Ok(())
            }

            fn sync_for_cpu(&self) -> Result<(), DmaError> {
                DmaRegion::sync_for_cpu(self);
                Ok(())
            }
        }
    )*};
}

region_io_buffer!(DmaBuffer, PoolBuffer);

impl<T: DmaTarget + Send + 'static> IoBuffer for DmaMapping<T> {
    fn with_segments<R>(&self, f: impl FnOnce(&[SgEntry]) -> R) -> R {
        f(self.sg_list())
    }

    fn device_writable(&self) -> bool {
        self.direction().device_writes()
    }

    fn sync_for_device(&self) -> Result<(), DmaError> {
        DmaMapping::sync_for_device(self)
    }

    fn sync_for_cpu(&self) -> Result<(), DmaError> {
        DmaMapping::sync_for_cpu(self)
    }
}
