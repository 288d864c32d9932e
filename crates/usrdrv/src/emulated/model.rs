//! What a device model is: its identity and layout ([`ModelInfo`]) and how it
//! answers register accesses ([`DeviceModel`]).

use std::sync::Arc;

use super::Bus;

/// The number of BARs a PCI function has.
pub const BAR_COUNT: usize = 6;

/// What an emulated PCI function looks like from outside: the identity in its
/// configuration space, its memory BARs and its interrupts. usrdrv builds
/// the configuration space (with MSI and MSI-X capabilities) from it.
///
/// ```
/// use usrdrv::emulated::ModelInfo;
///
/// let info = ModelInfo::new(0x1234, 0x11e8)
///     .with_bar(0, 1 << 20)
///     .with_msi(1)
///     .with_intx();
/// assert_eq!(info.bars[0], 1 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// PCI vendor ID.
    pub vendor_id: u16,
    /// PCI device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code: base class, subclass and programming interface
    /// (`0x00ff_0000`: "unclassified, other").
    pub class: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// The size in bytes of each memory BAR (a power of two, at least 16);
    /// 0 where there is none.
    pub bars: [u64; BAR_COUNT],
    /// MSI vectors (0 for none; 1, 2, 4, ... 32).
    pub msi_vectors: u32,
    /// MSI-X vectors (0 for none, up to 2048).
    pub msix_vectors: u32,
    /// Whether the function has an INTx line.
    pub intx: bool,
    /// Whether the function can be reset (`Device::reset` calls
    /// [`DeviceModel::reset`]); otherwise reset is refused, as for real
    /// devices without FLR.
    pub resettable: bool,
}

impl ModelInfo {
    /// A function with this vendor and device ID and nothing else yet.
    pub fn new(vendor_id: u16, device_id: u16) -> Self {
        Self {
            vendor_id,
            device_id,
            revision: 0,
            class: 0x00ff_0000,
            subsystem_vendor_id: vendor_id,
            subsystem_id: 0,
            bars: [0; BAR_COUNT],
            msi_vectors: 0,
            msix_vectors: 0,
            intx: false,
            resettable: false,
        }
    }

    /// With memory BAR `index` of `size` bytes.
    pub fn with_bar(mut self, index: usize, size: u64) -> Self {
        if let Some(bar) = self.bars.get_mut(index) {
            *bar = size;
        }
        self
    }

    /// With `vectors` MSI vectors.
    pub fn with_msi(mut self, vectors: u32) -> Self {
        self.msi_vectors = vectors;
        self
    }

    /// With `vectors` MSI-X vectors.
    pub fn with_msix(mut self, vectors: u32) -> Self {
        self.msix_vectors = vectors;
        self
    }

    /// With an INTx line.
    pub fn with_intx(mut self) -> Self {
        self.intx = true;
        self
    }

    /// With a reset ([`DeviceModel::reset`]).
    pub fn with_reset(mut self) -> Self {
        self.resettable = true;
        self
    }

    /// With this revision and class code.
    pub fn with_class(mut self, revision: u8, class: u32) -> Self {
        self.revision = revision;
        self.class = class & 0x00ff_ffff;
        self
    }
}

/// A PCI device written in Rust, for a driver to run against in-process.
///
/// usrdrv calls it for every register access the driver makes through a
/// [`Bar`](crate::mmio::Bar) or [`BarView`](crate::mmio::BarView) (offsets
/// in bounds, naturally aligned, `width` 1, 2, 4 or 8 bytes, values in the
/// CPU's order), from the driver's thread. The [`Bus`] it is given is the
/// device's side of the machine: DMA through the emulated IOMMU and
/// interrupts. A model that works in the background (a DMA engine with a
/// completion delay, a queue processor) may clone the `Bus` into a thread of
/// its own; DMA through a bus whose device was closed or revoked faults,
/// as it would through a real IOMMU.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use usrdrv::emulated::{Bus, DeviceModel, ModelInfo};
///
/// /// A scratch register at 0x0 and a doorbell at 0x4 that raises MSI 0.
/// #[derive(Default)]
/// struct Scratch(AtomicU32);
///
/// impl DeviceModel for Scratch {
///     fn info(&self) -> ModelInfo {
///         ModelInfo::new(0x1af4, 0x10ff).with_bar(0, 4096).with_msi(1)
///     }
///     fn read(&self, _bus: &Bus, _bar: u8, offset: u64, _width: usize) -> u64 {
///         if offset == 0 { self.0.load(Ordering::Relaxed).into() } else { 0 }
///     }
///     fn write(&self, bus: &Bus, _bar: u8, offset: u64, _width: usize, value: u64) {
///         match offset {
///             0 => self.0.store(value as u32, Ordering::Relaxed),
///             4 => bus.interrupt(0),
///             _ => {}
///         }
///     }
/// }
/// ```
pub trait DeviceModel: Send + Sync + 'static {
    /// The function's identity, BARs and interrupts. Called once, when the
    /// emulated device is created.
    fn info(&self) -> ModelInfo;

    /// The value of the `width`-byte register at `offset` of BAR `bar`.
    fn read(&self, bus: &Bus, bar: u8, offset: u64, width: usize) -> u64;

    /// A write of the low `width` bytes of `value` to `offset` of BAR `bar`.
    fn write(&self, bus: &Bus, bar: u8, offset: u64, width: usize, value: u64);

    /// A function-level reset ([`ModelInfo::resettable`] functions only):
    /// back to the power-on state, everything in flight abandoned.
    fn reset(&self, bus: &Bus) {
        let _ = bus;
    }
}

/// A shared model is a model: a test keeps an `Arc` to look inside it.
impl<M: DeviceModel> DeviceModel for Arc<M> {
    fn info(&self) -> ModelInfo {
        M::info(self)
    }

    fn read(&self, bus: &Bus, bar: u8, offset: u64, width: usize) -> u64 {
        M::read(self, bus, bar, offset, width)
    }

    fn write(&self, bus: &Bus, bar: u8, offset: u64, width: usize, value: u64) {
        M::write(self, bus, bar, offset, width, value);
    }

    fn reset(&self, bus: &Bus) {
        M::reset(self, bus);
    }
}
