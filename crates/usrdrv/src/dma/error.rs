//! What can go wrong with DMA memory and mappings, and what to do about it.

use std::io;

use super::{Direction, IovaError};

/// Errors from DMA buffers, mappings, pools and named buffers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmaError {
    /// The DMA mask width is invalid.
    #[error("a DMA mask of {bits} bits is invalid: declare between 1 and 64 bits")]
    BadMask {
        /// The width given.
        bits: u32,
    },
    /// Device addresses could not be allocated or freed.
    #[error(transparent)]
    Iova(#[from] IovaError),
    /// Process memory for a buffer could not be had.
    #[error("cannot allocate {size} bytes of memory for DMA")]
    Memory {
        /// The size asked for.
        size: usize,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// Pinning the memory would exceed the locked-memory limit.
    #[error(
        "mapping {size} bytes for DMA exceeds the locked-memory limit (RLIMIT_MEMLOCK = {limit}): raise it with `ulimit -l unlimited`, `LimitMEMLOCK=infinity` in a systemd unit, or a memlock line in /etc/security/limits.conf; or run as root"
    )]
    MemlockLimit {
        /// The bytes being pinned.
        size: u64,
        /// The soft limit, as text (`unlimited` or bytes).
        limit: String,
    },
    /// The IOMMU container holds as many mappings as VFIO allows.
    #[error(
        "the kernel holds the most DMA mappings it allows (VFIO: vfio_iommu_type1's dma_entry_limit, 65535 by default, a module parameter you can raise; usrdma: 65536 per open device): map fewer, larger buffers (a DmaPool carves small ones from one mapping)"
    )]
    MappingLimit,
    /// The kernel refused a DMA mapping.
    #[error("mapping {size:#x} bytes at device address {iova:#x} failed")]
    Map {
        /// The device address.
        iova: u64,
        /// The length.
        size: u64,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to unmap.
    #[error(
        "unmapping {size:#x} bytes at device address {iova:#x} failed; the memory is kept (leaked) so the device cannot reach reused memory"
    )]
    Unmap {
        /// The device address.
        iova: u64,
        /// The length.
        size: u64,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The kernel unmapped a different amount than was mapped.
    #[error(
        "unmapping device address {iova:#x}: the kernel unmapped {unmapped:#x} of {expected:#x} bytes; the memory is kept (leaked) so the device cannot reach reused memory"
    )]
    PartialUnmap {
        /// The device address.
        iova: u64,
        /// Bytes that were mapped.
        expected: u64,
        /// Bytes the kernel reported unmapped.
        unmapped: u64,
    },
    /// A read-only buffer was offered for the device to write.
    #[error(
        "a shared (read-only) buffer cannot be mapped {direction}: the device would write into it; pass `&mut [u8]` or an owned buffer"
    )]
    ReadOnly {
        /// The direction asked for.
        direction: Direction,
    },
    /// An empty buffer.
    #[error("cannot map or allocate an empty buffer for DMA")]
    Empty,
    /// A size that does not fit the address space.
    #[error(
        "{what} is too large ({size:#x} bytes or more do not fit the address space): ask for less"
    )]
    TooLarge {
        /// What was asked for.
        what: &'static str,
        /// The size, or `u64::MAX` when it overflowed.
        size: u64,
    },
    /// DMA through an IOMMU domain before any device was opened in it.
    #[error("the IOMMU domain has no device yet: open a device in it (Device::open_in) before DMA")]
    NoDevice,
    /// An access outside a DMA buffer.
    #[error("{len}-byte access at offset {offset:#x} is outside the {size:#x}-byte DMA buffer")]
    OutOfBounds {
        /// The offset asked for.
        offset: usize,
        /// The access length.
        len: usize,
        /// The buffer's size.
        size: usize,
    },
    /// A misaligned single-value access.
    #[error("{width}-byte access at offset {offset:#x} is misaligned: use a multiple of {width}")]
    Misaligned {
        /// The offset asked for.
        offset: usize,
        /// The access width.
        width: usize,
    },
    /// Every chunk of a pool is in use.
    #[error(
        "all {chunks} chunks of {chunk_size} bytes in the DMA pool are in use: drop some, or make a larger pool"
    )]
    PoolExhausted {
        /// How many chunks the pool has.
        chunks: usize,
        /// Their size.
        chunk_size: usize,
    },
    /// A named buffer with this name exists.
    #[error("a DMA buffer named '{name}' already exists: free it first or pick another name")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// A name with characters or a length that is not accepted.
    #[error("'{name}' is not a valid buffer name: use 1 to 31 characters from A-Z a-z 0-9 . _ -")]
    BadName {
        /// The name.
        name: String,
    },
    /// No named buffer has this name.
    #[error("no DMA buffer is named '{name}'")]
    NoSuchName {
        /// The name.
        name: String,
    },
    /// The kernel asked for the device back: no new DMA.
    #[error("{address} was revoked (unbound or removed): no new DMA; drop every handle to it")]
    Revoked {
        /// The device.
        address: crate::pci::PciAddress,
    },
    /// No memory the device can reach is free: without an IOMMU, device
    /// addresses are physical addresses and must lie below the DMA mask.
    #[error(
        "no {size} bytes of memory below the device's {bits}-bit DMA mask are free: without an IOMMU the device reaches only physical addresses below 2^{bits}; ask for less, or declare a wider mask if the device drives more address bits"
    )]
    NoMemoryBelowMask {
        /// The size asked for.
        size: u64,
        /// The mask width.
        bits: u32,
    },
    /// A request to the kernel failed.
    #[error("{op} failed")]
    Kernel {
        /// What was asked (the ioctl, in words).
        op: &'static str,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// The operation exists only with the usrdma backend.
    #[error(
        "{what} need the usrdma backend (a device bound to the usrdma module); with VFIO, keep the buffer in a long-lived process instead"
    )]
    NeedsUsrdma {
        /// What was asked for.
        what: &'static str,
    },
    /// The named buffer is not persistent: it belongs to the process that
    /// has the device open, which frees it when its handle drops or it exits.
    #[error(
        "the buffer '{name}' is not persistent: it belongs to the process that allocated it and is freed when that process drops its handle or exits; only persistent buffers can be attached or freed by name (drop the handle, or NamedBuffers::free the name, instead)"
    )]
    NotPersistent {
        /// The name.
        name: String,
    },
    /// The persistent buffer is still mapped by a process, which may be using
    /// it (and may have given its device address to the device).
    #[error(
        "the persistent buffer '{name}' is still mapped (attached) by a process: drop every handle to it, here and in child processes, then free it"
    )]
    BufferInUse {
        /// The name.
        name: String,
    },
    /// [`crate::Device::quiesce`] was called after bus mastering was turned
    /// on (by an allocation, a mapping or MSI/MSI-X), too late to keep a
    /// previous owner's transfer from landing.
    #[error(
        "{address} already masters the bus: call Device::quiesce right after opening, before any DMA allocation, mapping or MSI"
    )]
    QuiesceTooLate {
        /// The device.
        address: crate::pci::PciAddress,
    },
    /// The driver's quiesce step succeeded but the usrdma module did not
    /// take the device as quiesced: it keeps the previous owner's memory
    /// until its grace period ends (nothing is unsafe, memory is held longer).
    #[error(
        "the driver quiesced {address}, but the usrdma module did not accept it and keeps the previous owner's memory until its grace period ends: nothing may turn bus mastering on inside the quiesce step"
    )]
    QuiesceRefused {
        /// The device.
        address: crate::pci::PciAddress,
        /// What the module said.
        #[source]
        source: Box<crate::usrdma::UsrdmaError>,
    },
    /// DMA was asked for from inside [`crate::Device::quiesce`]'s step, where
    /// bus mastering stays off.
    #[error(
        "{address}: bus mastering stays off while Device::quiesce runs the driver's step: allocate, map and enable MSI after it returns"
    )]
    DuringQuiesce {
        /// The device.
        address: crate::pci::PciAddress,
    },
    /// Turning on bus mastering failed.
    #[error("cannot enable bus mastering (PCI command register)")]
    BusMaster {
        /// What failed underneath.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DmaError {
    /// What a refused `USRDMA_QUIESCED` means for [`crate::Device::quiesce`]:
    /// a revoked device is [`DmaError::Revoked`], anything else
    /// [`DmaError::QuiesceRefused`].
    pub(crate) fn quiesce_refused(
        address: crate::pci::PciAddress,
        source: crate::usrdma::UsrdmaError,
    ) -> Self {
        match source {
            crate::usrdma::UsrdmaError::Revoked { address } => Self::Revoked { address },
            source => Self::QuiesceRefused {
                address,
                source: Box::new(source),
            },
        }
    }
}

/// Turns a failed `VFIO_IOMMU_MAP_DMA` into the error that says what to do.
pub(crate) fn map_failure(iova: u64, size: u64, source: io::Error) -> DmaError {
    match (source.raw_os_error(), memlock_limit()) {
        (Some(libc::ENOMEM), Some(limit)) => DmaError::MemlockLimit {
            size,
            limit: format!("{limit} bytes"),
        },
        (Some(libc::ENOSPC), _) => DmaError::MappingLimit,
        _ => DmaError::Map { iova, size, source },
    }
}

/// The locked-memory limit that applies to this process, if one does: a
/// finite `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK` to lift it.
pub(crate) fn memlock_limit() -> Option<u64> {
    let limit = crate::sys::limits::memlock().ok().flatten()?;
    (!crate::sys::limits::memlock_unlimited_by_capability()).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usrdma::UsrdmaError;

    #[test]
    fn a_refused_quiesce_says_what_the_module_keeps_and_a_revoked_device_stays_revoked() {
        let address: crate::pci::PciAddress = "0000:00:03.0".parse().unwrap();
        let busy = UsrdmaError::BusMasterOn {
            address,
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let err = DmaError::quiesce_refused(address, busy);
        assert!(matches!(err, DmaError::QuiesceRefused { .. }), "{err:?}");
        assert!(err.to_string().contains("grace period"), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("Device::quiesce"), "{source}");

        let revoked = DmaError::quiesce_refused(address, UsrdmaError::Revoked { address });
        assert!(matches!(revoked, DmaError::Revoked { .. }), "{revoked:?}");
    }
}
