//! The device's side of the machine, for a model: DMA through the emulated
//! IOMMU, and interrupts.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::atomic::fence;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::faults::DmaFault;
use super::session::Session;

/// What a [`DeviceModel`](super::DeviceModel) reaches the machine through:
/// DMA to and from the device addresses the driver mapped, checked by the
/// emulated IOMMU as hardware behind a real one is, and its interrupts.
///
/// A refused access ([`DmaFault`]) moves no data and is recorded, for the
/// test to see with [`EmulatedDevice::faults`](super::EmulatedDevice::faults):
/// an address nothing is mapped at (never mapped, unmapped, or the device
/// was revoked or closed), a write to memory mapped for the device to read,
/// or any DMA while bus mastering is off.
///
/// ```
/// # use usrdrv::emulated::{Bus, DmaFault};
/// /// A model's descriptor fetch: 16 bytes at the address the driver wrote.
/// fn fetch(bus: &Bus, addr: u64) -> Result<[u8; 16], DmaFault> {
///     let mut descriptor = [0u8; 16];
///     bus.read(addr, &mut descriptor)?;
///     Ok(descriptor)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Bus {
    session: Arc<Session>,
}

impl Bus {
    pub(crate) fn new(session: Arc<Session>) -> Self {
        Self { session }
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// Reads `out.len()` bytes of memory at device address `addr`.
    ///
    /// Like every access of the bus, it is made as the driver's own accesses
    /// to DMA memory are (so the two may race at any mix of widths): an
    /// aligned 2-, 4- or 8-byte access is one single-copy atomic access of
    /// that size (a descriptor's flag word, a
    /// completion's phase tag); anything longer moves aligned 8-byte words.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), DmaFault> {
        self.session.dma(addr, out.len(), false, |memory| {
            // In bounds: the window is exactly `out.len()` bytes.
            let word = match out.len() {
                2 => memory
                    .load::<u16>(0, SeqCst)
                    .map(|v| out.copy_from_slice(&v.to_le_bytes())),
                4 => memory
                    .load::<u32>(0, SeqCst)
                    .map(|v| out.copy_from_slice(&v.to_le_bytes())),
                8 => memory
                    .load::<u64>(0, SeqCst)
                    .map(|v| out.copy_from_slice(&v.to_le_bytes())),
                _ => None,
            };
            if word.is_none() {
                fence(Acquire);
                let _ = memory.copy_out(0, out);
            }
        })
    }

    /// Writes `data` to memory at device address `addr` (atomic as
    /// [`Bus::read`] says, and ordered after every earlier write of the
    /// model: write a completion's body first, then its phase tag).
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), DmaFault> {
        let corrupt = self.session.corrupt_this_write();
        let flipped: Vec<u8>;
        let data = if corrupt {
            flipped = data.iter().map(|b| !b).collect();
            &flipped[..]
        } else {
            data
        };
        self.session.dma(addr, data.len(), true, |memory| {
            let word = match *data {
                [a, b] => memory.store(0, u16::from_le_bytes([a, b]), SeqCst),
                [a, b, c, d] => memory.store(0, u32::from_le_bytes([a, b, c, d]), SeqCst),
                [a, b, c, d, e, f, g, h] => {
                    memory.store(0, u64::from_le_bytes([a, b, c, d, e, f, g, h]), SeqCst)
                }
                _ => None,
            };
            if word.is_none() {
                fence(Release);
                let _ = memory.copy_in(0, data);
            }
        })
    }

    /// Reads a plain-data `T` (a descriptor, a queue entry) at `addr`.
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, addr: u64) -> Result<T, DmaFault> {
        let mut value = T::new_zeroed();
        self.read(addr, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Writes a plain-data `T` (a completion entry) at `addr`.
    pub fn write_obj<T: IntoBytes + Immutable>(
        &self,
        addr: u64,
        value: &T,
    ) -> Result<(), DmaFault> {
        self.write(addr, value.as_bytes())
    }

    /// Raises interrupt `vector`: the MSI or MSI-X vector of that number, or
    /// the INTx line (any `vector`), whichever the driver enabled. Lost when
    /// none is, when bus mastering is off (MSI), when INTx is disabled in the
    /// command register, or when the device was revoked
    /// ([`EmulatedDevice::interrupts_lost`](super::EmulatedDevice::interrupts_lost)
    /// counts them). INTx is masked on delivery until the driver unmasks it,
    /// as the kernel does; one raised meanwhile is delivered at the unmask.
    pub fn interrupt(&self, vector: u32) {
        self.session.raise(vector);
    }

    /// Whether the driver let the device master the bus (DMA and MSI work).
    pub fn is_bus_master(&self) -> bool {
        self.session.function.command() & super::config::COMMAND_MASTER != 0
    }

    /// Whether this open of the device was revoked (or the whole device).
    pub fn is_revoked(&self) -> bool {
        self.session.is_revoked()
    }
}
