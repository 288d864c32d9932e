//! The caller's own memory mapped for DMA: the seed's `usr_pci_mmap`.

use std::fmt;
use std::sync::Arc;

use super::backend::{DmaBackend, UserMapping};
use super::{Direction, DmaError, SgEntry};

/// Memory that can be mapped for DMA: it must not move or be freed while mapped,
/// which holding it (owned, or borrowed for the mapping's life) guarantees.
///
/// Implemented for `&[u8]` (the device may only read it), `&mut [u8]`,
/// `Vec<u8>` and `Box<[u8]>`: the heap memory of an owned buffer stays put when
/// the mapping that owns it moves.
pub trait DmaTarget: sealed::Sealed {
    /// The address and length of the bytes to map.
    #[doc(hidden)]
    fn span(&self) -> (usize, usize);
    /// Whether the device may be allowed to write the bytes.
    #[doc(hidden)]
    fn writable(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &[u8] {}
    impl Sealed for &mut [u8] {}
    impl Sealed for Vec<u8> {}
    impl Sealed for Box<[u8]> {}
}

impl DmaTarget for &[u8] {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        false
    }
}

impl DmaTarget for &mut [u8] {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        true
    }
}

impl DmaTarget for Vec<u8> {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        true
    }
}

impl DmaTarget for Box<[u8]> {
    fn span(&self) -> (usize, usize) {
        (self.as_ptr() as usize, self.len())
    }
    fn writable(&self) -> bool {
        true
    }
}

/// The caller's buffer, mapped for the device, with the scatter-gather list the
/// device needs.
///
/// The list covers exactly the caller's bytes, sub-page head and tail
/// included. The mapping holds the buffer (owned or borrowed), so the buffer
/// cannot be touched, moved or freed until it is unmapped: by
/// [`DmaMapping::unmap`], which returns the buffer and reports a failed or
/// partial unmap, or on drop.
///
/// Whole pages are mapped: the device can reach the rest of the first and last
/// page too, so do not share those pages with unrelated secrets.
///
/// If the kernel fails to unmap (or unmaps less than was mapped), an owned
/// buffer is leaked rather than freed, so the device can never reach memory
/// that is reused. A borrowed buffer goes back to its owner whatever happens:
/// map owned buffers where that matters.
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::{Direction, DmaMask};
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let mut block = vec![0u8; 512];
/// let mapping = device.map_dma(&mut block[..], Direction::FromDevice)?;
/// for entry in mapping.sg_list() {
///     println!("device writes {} bytes at {:#x}", entry.len, entry.device_addr);
/// }
/// // ... start the device, wait for it ...
/// mapping.unmap()?;
/// println!("first byte: {}", block[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DmaMapping<B: DmaTarget> {
    /// `None` once unmapped (by `unmap`, before the drop).
    buffer: Option<B>,
    mapping: UserMapping,
    direction: Direction,
    backend: Arc<dyn DmaBackend>,
}

impl<B: DmaTarget> fmt::Debug for DmaMapping<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMapping")
            .field("direction", &self.direction)
            .field("sg_list", &self.sg_list())
            .finish()
    }
}

impl<B: DmaTarget> DmaMapping<B> {
    /// Maps `buffer` through `backend`.
    pub(crate) fn new(
        buffer: B,
        direction: Direction,
        backend: Arc<dyn DmaBackend>,
    ) -> Result<Self, DmaError> {
        let (addr, len) = buffer.span();
        if len == 0 {
            return Err(DmaError::Empty);
        }
        if direction.device_writes() && !buffer.writable() {
            return Err(DmaError::ReadOnly { direction });
        }
        // No fence needed here: the CPU's writes to the buffer are ordered before
        // the device can see it by the system call that maps it.
        let mapping = backend.map_user(addr, len, direction)?;
        Ok(Self {
            buffer: Some(buffer),
            mapping,
            direction,
            backend,
        })
    }

    /// The scatter-gather list: device address and length of each contiguous run,
    /// in order, covering exactly the caller's bytes.
    pub fn sg_list(&self) -> &[SgEntry] {
        self.mapping.sg.as_slice()
    }

    /// The device address of the first byte when the list has one entry (always
    /// so with an IOMMU).
    pub fn device_addr(&self) -> Option<u64> {
        match self.mapping.sg.as_slice() {
            [one] => Some(one.device_addr),
            _ => None,
        }
    }

    /// The number of bytes mapped for the caller.
    pub fn len(&self) -> usize {
        self.sg_list().iter().map(|e| e.len).sum()
    }

    /// Whether no bytes are mapped (never: empty buffers are refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the device works on a bounce buffer rather than the caller's
    /// memory (usrdma, when the memory lies above the device's DMA mask): the
    /// data then moves only at [`DmaMapping::sync_for_device`],
    /// [`DmaMapping::sync_for_cpu`] and unmap.
    pub fn is_bounced(&self) -> bool {
        self.mapping.bounced
    }

    /// Which way the data moves.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Hands the buffer to the device: orders the CPU's writes before what
    /// follows for the device, and copies them to the bounce buffer when the
    /// backend bounces (usrdma, memory above the device's DMA mask). Call it
    /// after writing and before starting DMA that reads.
    pub fn sync_for_device(&self) -> Result<(), DmaError> {
        self.backend.sync_user(&self.mapping, false)
    }

    /// Hands the buffer back to the CPU: orders what the device wrote before
    /// the CPU's reads that follow, copying it from the bounce buffer when the
    /// backend bounces. Call it after DMA that writes, before reading.
    pub fn sync_for_cpu(&self) -> Result<(), DmaError> {
        self.backend.sync_user(&self.mapping, true)
    }

    /// Unmaps (verifying the kernel unmapped exactly what was mapped) and gives
    /// the buffer back. On error an owned buffer is leaked, never reused: the
    /// device might still reach it.
    pub fn unmap(mut self) -> Result<B, DmaError> {
        let buffer = self.buffer.take();
        // The unmapping system call orders the device's writes before what the
        // CPU reads next.
        match (self.backend.unmap_user(&self.mapping), buffer) {
            (Ok(()), Some(buffer)) => Ok(buffer),
            (Err(err), buffer) => {
                std::mem::forget(buffer);
                Err(err)
            }
            (Ok(()), None) => Err(DmaError::Empty),
        }
    }
}

impl<B: DmaTarget> Drop for DmaMapping<B> {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            match self.backend.unmap_user(&self.mapping) {
                Ok(()) => {}
                Err(err) => {
                    eprintln!("usrdrv: {err}");
                    std::mem::forget(buffer);
                }
            }
        }
    }
}
