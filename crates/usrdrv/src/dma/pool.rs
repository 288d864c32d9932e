//! Small DMA buffers for the hot path, carved out of one premapped region:
//! allocating and freeing one makes no system call.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::{DmaBuffer, DmaError};
use crate::mmio::MmioValue;

/// Chunk sizes are rounded up to this, so every chunk starts cache-line aligned.
const CHUNK_ALIGN: usize = 64;

/// A fixed set of equal chunks of one DMA buffer, handed out and taken back
/// without system calls (a lock and a free list).
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let pool = device.dma_pool(4096, 256)?; // one 1 MiB mapping
/// let chunk = pool.alloc()?;               // no system call
/// chunk.write_bytes(0, b"descriptor")?;
/// println!("chunk at device address {:#x}", chunk.device_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DmaPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    buffer: DmaBuffer,
    chunk_size: usize,
    chunks: usize,
    /// Indices of free chunks; the last one is handed out next.
    free: Mutex<Vec<usize>>,
}

impl fmt::Debug for DmaPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaPool")
            .field("chunk_size", &self.inner.chunk_size)
            .field("chunks", &self.inner.chunks)
            .field("available", &self.available())
            .finish()
    }
}

impl DmaPool {
    /// The chunk size `requested` rounds up to.
    pub(crate) fn chunk_size_for(requested: usize) -> Option<usize> {
        requested.max(1).checked_next_multiple_of(CHUNK_ALIGN)
    }

    /// Carves `buffer` into chunks of `chunk_size` (already rounded).
    pub(crate) fn new(buffer: DmaBuffer, chunk_size: usize, chunks: usize) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                buffer,
                chunk_size,
                chunks,
                free: Mutex::new((0..chunks).rev().collect()),
            }),
        }
    }

    /// Takes a free chunk.
    pub fn alloc(&self) -> Result<PoolBuffer, DmaError> {
        let index = self
            .inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or(DmaError::PoolExhausted {
                chunks: self.inner.chunks,
                chunk_size: self.inner.chunk_size,
            })?;
        Ok(PoolBuffer {
            pool: Arc::clone(&self.inner),
            index,
        })
    }

    /// The size of each chunk.
    pub fn chunk_size(&self) -> usize {
        self.inner.chunk_size
    }

    /// How many chunks the pool has.
    pub fn capacity(&self) -> usize {
        self.inner.chunks
    }

    /// How many chunks are free now.
    pub fn available(&self) -> usize {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One chunk of a [`DmaPool`], returned to it on drop. Accessed like a shared
/// [`DmaBuffer`]: volatile, bounds-checked within the chunk.
pub struct PoolBuffer {
    pool: Arc<PoolInner>,
    index: usize,
}

impl fmt::Debug for PoolBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuffer")
            .field("device_addr", &self.device_addr())
            .field("len", &self.len())
            .finish()
    }
}

impl PoolBuffer {
    fn base(&self) -> usize {
        self.index * self.pool.chunk_size
    }

    fn check(&self, offset: usize, len: usize) -> Result<usize, DmaError> {
        let size = self.pool.chunk_size;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(DmaError::OutOfBounds { offset, len, size });
        }
        Ok(self.base() + offset)
    }

    /// The device address of the chunk's first byte.
    pub fn device_addr(&self) -> u64 {
        self.pool.buffer.device_addr() + self.base() as u64
    }

    /// The chunk's size.
    pub fn len(&self) -> usize {
        self.pool.chunk_size
    }

    /// Whether the chunk is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads one naturally aligned value at `offset` in the chunk, volatile.
    pub fn read<T: MmioValue>(&self, offset: usize) -> Result<T, DmaError> {
        let at = self.check(offset, std::mem::size_of::<T>())?;
        self.pool.buffer.read(at)
    }

    /// Writes one naturally aligned value at `offset` in the chunk, volatile.
    pub fn write<T: MmioValue>(&self, offset: usize, value: T) -> Result<(), DmaError> {
        let at = self.check(offset, std::mem::size_of::<T>())?;
        self.pool.buffer.write(at, value)
    }

    /// Copies bytes out of the chunk from `offset`.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) -> Result<(), DmaError> {
        let at = self.check(offset, out.len())?;
        self.pool.buffer.read_bytes(at, out)
    }

    /// Copies `data` into the chunk at `offset`.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), DmaError> {
        let at = self.check(offset, data.len())?;
        self.pool.buffer.write_bytes(at, data)
    }
}

impl Drop for PoolBuffer {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
    }
}
