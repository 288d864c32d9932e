//! The VFIO ioctls, each wrapped in a safe function taking the descriptor it
//! applies to and typed arguments. Structures come from `vfio-bindings`.
//!
//! Request numbers follow `include/uapi/linux/vfio.h`: every VFIO ioctl is
//! `_IO(VFIO_TYPE, VFIO_BASE + n)` and passes its argument by pointer.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use vfio_bindings::bindings::vfio::{
    VFIO_BASE, VFIO_TYPE, vfio_device_info, vfio_group_status, vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap, vfio_iommu_type1_info, vfio_irq_info, vfio_irq_set,
    vfio_region_info,
};

/// `_IO(VFIO_TYPE, VFIO_BASE + nr)`: no direction or size bits are encoded.
const fn vfio_io(nr: u32) -> libc::Ioctl {
    ((VFIO_TYPE as u32) << 8 | (VFIO_BASE + nr)) as libc::Ioctl
}

const VFIO_GET_API_VERSION: libc::Ioctl = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::Ioctl = vfio_io(1);
const VFIO_SET_IOMMU: libc::Ioctl = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::Ioctl = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::Ioctl = vfio_io(4);
const VFIO_GROUP_UNSET_CONTAINER: libc::Ioctl = vfio_io(5);
const VFIO_GROUP_GET_DEVICE_FD: libc::Ioctl = vfio_io(6);
const VFIO_DEVICE_GET_INFO: libc::Ioctl = vfio_io(7);
const VFIO_DEVICE_GET_REGION_INFO: libc::Ioctl = vfio_io(8);
const VFIO_DEVICE_GET_IRQ_INFO: libc::Ioctl = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: libc::Ioctl = vfio_io(10);
const VFIO_DEVICE_RESET: libc::Ioctl = vfio_io(11);
const VFIO_IOMMU_GET_INFO: libc::Ioctl = vfio_io(12);
const VFIO_IOMMU_MAP_DMA: libc::Ioctl = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: libc::Ioctl = vfio_io(14);

/// `argsz` for a structure: the size the kernel must not read or write past.
fn argsz<T>() -> u32 {
    // VFIO argument structures are a few dozen bytes.
    std::mem::size_of::<T>() as u32
}

/// Turns an ioctl return value into a result, reading `errno` on failure.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Issues an ioctl whose argument is a plain integer.
fn ioctl_with_value(
    fd: BorrowedFd<'_>,
    request: libc::Ioctl,
    value: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: the VFIO ioctls issued through here (GET_API_VERSION, CHECK_EXTENSION,
    // SET_IOMMU, GROUP_UNSET_CONTAINER, DEVICE_RESET) take their argument by value and touch no user
    // memory; `fd` is a valid open descriptor for the call's duration.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, value) })
}

/// Issues an ioctl that reads and writes `*arg`, a VFIO structure whose first
/// field is `argsz`.
fn ioctl_with_mut<T>(
    fd: BorrowedFd<'_>,
    request: libc::Ioctl,
    arg: &mut T,
) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a valid, exclusively borrowed `T` for the call; callers set
    // its `argsz` to `size_of::<T>()`, so the kernel reads and writes no more than
    // `T` holds; `fd` is a valid open descriptor for the call's duration.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(arg)) })
}

/// `VFIO_GET_API_VERSION` on a container.
pub(crate) fn get_api_version(container: BorrowedFd<'_>) -> io::Result<i32> {
    ioctl_with_value(container, VFIO_GET_API_VERSION, 0)
}

/// `VFIO_CHECK_EXTENSION` on a container: whether IOMMU model `extension` exists.
pub(crate) fn check_extension(container: BorrowedFd<'_>, extension: u32) -> io::Result<bool> {
    ioctl_with_value(container, VFIO_CHECK_EXTENSION, extension.into()).map(|r| r > 0)
}

/// `VFIO_SET_IOMMU` on a container that has at least one group.
pub(crate) fn set_iommu(container: BorrowedFd<'_>, iommu_type: u32) -> io::Result<()> {
    ioctl_with_value(container, VFIO_SET_IOMMU, iommu_type.into()).map(drop)
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags (`VFIO_GROUP_FLAGS_*`).
pub(crate) fn group_get_status(group: BorrowedFd<'_>) -> io::Result<u32> {
    let mut status = vfio_group_status {
        argsz: argsz::<vfio_group_status>(),
        flags: 0,
    };
    ioctl_with_mut(group, VFIO_GROUP_GET_STATUS, &mut status)?;
    Ok(status.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`: attaches the group to the container.
pub(crate) fn group_set_container(
    group: BorrowedFd<'_>,
    container: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut container_fd: libc::c_int = container.as_raw_fd();
    // SAFETY: the kernel reads one `int` (the container's descriptor) through the
    // pointer, which points at a live local; both descriptors are open for the
    // call's duration.
    check(unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            VFIO_GROUP_SET_CONTAINER,
            std::ptr::from_mut(&mut container_fd),
        )
    })
    .map(drop)
}

/// `VFIO_GROUP_UNSET_CONTAINER`: detaches the group from its container (the
/// kernel refuses with `EBUSY` while a device of the group is open). When it
/// was the container's last group, the container's IOMMU mappings are gone.
pub(crate) fn group_unset_container(group: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_with_value(group, VFIO_GROUP_UNSET_CONTAINER, 0).map(drop)
}

/// `VFIO_GROUP_GET_DEVICE_FD`: a new descriptor for the device named `name`
/// (for PCI, its address such as `0000:00:03.0`).
pub(crate) fn group_get_device_fd(group: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string through the pointer, which
    // `name` guarantees and keeps alive for the call; `group` is open.
    let fd =
        check(unsafe { libc::ioctl(group.as_raw_fd(), VFIO_GROUP_GET_DEVICE_FD, name.as_ptr()) })?;
    // SAFETY: on success the ioctl returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO`.
pub(crate) fn device_get_info(device: BorrowedFd<'_>) -> io::Result<vfio_device_info> {
    let mut info = vfio_device_info {
        argsz: argsz::<vfio_device_info>(),
        ..Default::default()
    };
    ioctl_with_mut(device, VFIO_DEVICE_GET_INFO, &mut info)?;
    Ok(info)
}

/// `VFIO_DEVICE_GET_IRQ_INFO` for interrupt index `index`.
pub(crate) fn device_get_irq_info(device: BorrowedFd<'_>, index: u32) -> io::Result<vfio_irq_info> {
    let mut info = vfio_irq_info {
        argsz: argsz::<vfio_irq_info>(),
        index,
        ..Default::default()
    };
    ioctl_with_mut(device, VFIO_DEVICE_GET_IRQ_INFO, &mut info)?;
    Ok(info)
}

/// `VFIO_DEVICE_SET_IRQS`: applies `flags` (`VFIO_IRQ_SET_DATA_*` |
/// `VFIO_IRQ_SET_ACTION_*`) to vectors `start..start + count` of interrupt
/// `index`. With `DATA_EVENTFD`, `eventfds` holds one descriptor (or -1 to
/// detach) per vector; otherwise it is empty.
pub(crate) fn device_set_irqs(
    device: BorrowedFd<'_>,
    index: u32,
    flags: u32,
    start: u32,
    count: u32,
    eventfds: &[i32],
) -> io::Result<()> {
    let header = std::mem::size_of::<vfio_irq_set>();
    let data = std::mem::size_of_val(eventfds);
    let total = header + data;
    let argsz = u32::try_from(total).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // u32 words keep the buffer aligned for the header's u32 fields and the i32 data.
    let mut words = vec![0u32; total.div_ceil(4)];
    words[0] = argsz;
    words[1] = flags;
    words[2] = index;
    words[3] = start;
    words[4] = count;
    for (slot, fd) in words[header / 4..].iter_mut().zip(eventfds) {
        *slot = *fd as u32;
    }
    // SAFETY: the buffer holds a `vfio_irq_set` header followed by `eventfds`,
    // `argsz` bytes in all, which is all the kernel reads; it stays alive for the
    // call and `device` is open.
    check(unsafe { libc::ioctl(device.as_raw_fd(), VFIO_DEVICE_SET_IRQS, words.as_mut_ptr()) })
        .map(drop)
}

/// `VFIO_DEVICE_RESET`.
pub(crate) fn device_reset(device: BorrowedFd<'_>) -> io::Result<()> {
    ioctl_with_value(device, VFIO_DEVICE_RESET, 0).map(drop)
}

/// `VFIO_IOMMU_GET_INFO` with its capability chain: the raw bytes of a
/// `vfio_iommu_type1_info` followed by the capabilities its `cap_offset` points to.
pub(crate) fn iommu_get_info(container: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    info_with_caps(
        container,
        VFIO_IOMMU_GET_INFO,
        "VFIO_IOMMU_GET_INFO",
        argsz::<vfio_iommu_type1_info>(),
        None,
    )
}

/// `VFIO_DEVICE_GET_REGION_INFO` for region `index` with its capability
/// chain: the raw bytes of a `vfio_region_info` followed by the capabilities
/// its `cap_offset` points to (such as the sparse-mmap areas).
pub(crate) fn device_get_region_info_caps(
    device: BorrowedFd<'_>,
    index: u32,
) -> io::Result<Vec<u8>> {
    info_with_caps(
        device,
        VFIO_DEVICE_GET_REGION_INFO,
        "VFIO_DEVICE_GET_REGION_INFO",
        argsz::<vfio_region_info>(),
        Some(index),
    )
}

/// An info ioctl whose structure starts with `argsz` and may be followed by a
/// capability chain: asks with `header` bytes, and again with what the kernel
/// says it needs. `index`, if any, is the `u32` at byte 8 (the region index).
fn info_with_caps(
    fd: BorrowedFd<'_>,
    request: libc::Ioctl,
    name: &str,
    header: u32,
    index: Option<u32>,
) -> io::Result<Vec<u8>> {
    let mut argsz = header;
    // The kernel raises `argsz` when the capabilities do not fit; ask again once
    // with room for them (twice in case they grew in between).
    for _ in 0..3 {
        // u64 words keep the buffer aligned for the structure's u64 fields.
        let mut words = vec![0u64; (argsz as usize).div_ceil(8)];
        // Two native-endian u32 fields per word: `argsz`, then (after `flags`)
        // the index.
        let pair = |first: u32| {
            let mut bytes = [0u8; 8];
            bytes[..4].copy_from_slice(&first.to_ne_bytes());
            u64::from_ne_bytes(bytes)
        };
        words[0] = pair(argsz);
        if let Some(index) = index {
            words[1] = pair(index);
        }
        let buf = words.as_mut_ptr().cast::<u8>();
        // SAFETY: `buf` points at `words.len() * 8 >= argsz` writable, 8-byte
        // aligned bytes holding `argsz` (and the index) in their first fields;
        // the kernel writes at most `argsz` bytes into the live buffer; `fd` is
        // open for the call.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), request, buf) })?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let wanted = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if wanted <= argsz {
            return Ok(bytes);
        }
        argsz = wanted;
    }
    Err(io::Error::other(format!(
        "{name} kept asking for a larger buffer"
    )))
}

/// `VFIO_IOMMU_MAP_DMA`: maps `size` bytes of this process at `vaddr` to device
/// address `iova`, with `flags` (`VFIO_DMA_MAP_FLAG_READ`/`WRITE`).
///
/// The kernel validates the values and pins the pages, which stay allocated
/// (even if unmapped from the process) until unmapped here.
///
/// # Safety
///
/// From this call until [`iommu_unmap_dma`] of the whole range succeeds, the
/// device can read (and with `VFIO_DMA_MAP_FLAG_WRITE`, write) the memory at
/// `[vaddr, vaddr + size)`. The caller guarantees that memory stays allocated
/// and is never handed back to code that could free it or form references to
/// it while the mapping lasts (it is leaked if the unmap never succeeds).
pub(crate) unsafe fn iommu_map_dma(
    container: BorrowedFd<'_>,
    vaddr: usize,
    iova: u64,
    size: u64,
    flags: u32,
) -> io::Result<()> {
    let mut map = vfio_iommu_type1_dma_map {
        argsz: argsz::<vfio_iommu_type1_dma_map>(),
        flags,
        vaddr: vaddr as u64,
        iova,
        size,
    };
    ioctl_with_mut(container, VFIO_IOMMU_MAP_DMA, &mut map).map(drop)
}

/// `VFIO_IOMMU_UNMAP_DMA`: unmaps `[iova, iova + size)`; returns how many bytes
/// the kernel says it unmapped (callers must check it is all of them).
pub(crate) fn iommu_unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: argsz::<vfio_iommu_type1_dma_unmap>(),
        flags: 0,
        iova,
        size,
        ..Default::default()
    };
    ioctl_with_mut(container, VFIO_IOMMU_UNMAP_DMA, &mut unmap)?;
    Ok(unmap.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_uapi_header() {
        // Values of the _IO(';', 100 + n) macros in include/uapi/linux/vfio.h.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(VFIO_DEVICE_RESET, 0x3b6f);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    }
}
