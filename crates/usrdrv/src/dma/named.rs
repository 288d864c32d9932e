//! Named DMA buffers: allocate by name, find, list, free by name (the second
//! seed's `/dev/cma_mem`, with owners, errors and cleanup done properly).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Backing, DmaBuffer, DmaError};

/// The longest name accepted: what the usrdma module keeps with its NUL.
pub const MAX_NAME_LEN: usize = 31;

/// One entry of [`NamedBuffers::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedBufferInfo {
    /// The name.
    pub name: String,
    /// The size in bytes.
    pub size: usize,
    /// The device address of the first byte.
    pub device_addr: u64,
    /// What memory backs it.
    pub backing: Backing,
}

/// Allocates a buffer for a name: how the table gets memory.
type Allocator = dyn Fn(&str, usize) -> Result<DmaBuffer, DmaError> + Send + Sync;

/// A table of DMA buffers by name.
///
/// Buffers are shared: [`NamedBuffers::get`] returns another handle to the same
/// memory, which stays valid while any handle lives, even after
/// [`NamedBuffers::free`] removes the name. Dropping the table frees every
/// buffer no one else holds. Over VFIO the names belong to this process; over
/// the usrdma module they are also registered in the kernel, so `usrdrv
/// buffers` lists them system-wide and a name taken by another process is
/// refused.
///
/// ```no_run
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let buffers = device.named_buffers()?;
/// buffers.alloc("rx-ring", 64 * 1024)?;
/// let ring = buffers.get("rx-ring").expect("just made");
/// for info in buffers.list() {
///     println!("{} {} bytes at {:#x} ({})", info.name, info.size, info.device_addr, info.backing);
/// }
/// buffers.free("rx-ring")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NamedBuffers {
    allocate: Box<Allocator>,
    table: Mutex<BTreeMap<String, Arc<DmaBuffer>>>,
}

impl std::fmt::Debug for NamedBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedBuffers")
            .field("names", &self.table().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NamedBuffers {
    pub(crate) fn new(allocate: Box<Allocator>) -> Self {
        Self {
            allocate,
            table: Mutex::new(BTreeMap::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Arc<DmaBuffer>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Allocates `size` bytes under `name` (1 to 31 characters from `A-Z a-z
    /// 0-9 . _ -`); a name in use is an error.
    pub fn alloc(&self, name: &str, size: usize) -> Result<Arc<DmaBuffer>, DmaError> {
        check_name(name)?;
        let mut table = self.table();
        if table.contains_key(name) {
            return Err(DmaError::NameTaken {
                name: name.to_owned(),
            });
        }
        let buffer = Arc::new((self.allocate)(name, size)?);
        table.insert(name.to_owned(), Arc::clone(&buffer));
        Ok(buffer)
    }

    /// The buffer named `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<DmaBuffer>> {
        self.table().get(name).cloned()
    }

    /// Every buffer: name, size, device address, backing; sorted by name.
    pub fn list(&self) -> Vec<NamedBufferInfo> {
        self.table()
            .iter()
            .map(|(name, buffer)| NamedBufferInfo {
                name: name.clone(),
                size: buffer.len(),
                device_addr: buffer.device_addr(),
                backing: buffer.backing(),
            })
            .collect()
    }

    /// Removes `name`; its memory is freed once no handle to it remains.
    pub fn free(&self, name: &str) -> Result<(), DmaError> {
        self.table()
            .remove(name)
            .map(drop)
            .ok_or_else(|| DmaError::NoSuchName {
                name: name.to_owned(),
            })
    }

    /// Removes every name.
    pub fn free_all(&self) {
        self.table().clear();
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), DmaError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DmaError::BadName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "rx-ring.0", "NVMe_queue_1", &"x".repeat(31)] {
            check_name(good).unwrap();
        }
        for bad in ["", "has space", "a/b", "ünï", &"x".repeat(32), "tab\t"] {
            assert!(
                matches!(check_name(bad), Err(DmaError::BadName { .. })),
                "{bad:?}"
            );
        }
    }
}
