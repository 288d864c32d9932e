//! Small DMA buffers for the hot path, carved out of one premapped region:
//! allocating and freeing one makes no system call.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use super::{DmaBuffer, DmaError, DmaRegion};

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
/// chunk.write_bytes(0, b"descriptor")?;   // a DmaRegion of its own
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
        let size = self.inner.chunk_size;
        // In bounds: the pool was carved from a buffer of `chunks * chunk_size`
        // bytes and `index < chunks`.
        let region = self
            .inner
            .buffer
            .slice(index * size, size)
            .map(|chunk| DmaRegion::new(chunk.window(), chunk.device_addr()))?;
        Ok(PoolBuffer {
            region,
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

/// One chunk of a [`DmaPool`], returned to it on drop. It dereferences to a
/// [`DmaRegion`] of the chunk: atomic accesses, bounds-checked within it, and
/// the chunk's own device address.
pub struct PoolBuffer {
    // INVARIANT: the chunk's part of `pool.buffer`, which `pool` keeps alive.
    region: DmaRegion,
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

impl Deref for PoolBuffer {
    type Target = DmaRegion;

    #[inline]
    fn deref(&self) -> &DmaRegion {
        &self.region
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
