//! The usrdma ioctls, each wrapped in a function taking the device file and
//! typed arguments: safe where the kernel only reads and writes the argument
//! and arrays this module allocates, `unsafe` where the caller's memory is
//! handed to the device ([`map_user`]).
//!
//! The structures mirror `kmod/usrdma/usrdma_uapi.h`, the one definition of
//! the ABI; a test compiles that header with the C compiler and checks every
//! size, field offset and request number here against it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `USRDMA_NAME_LEN`: a buffer name with its terminating NUL.
pub(crate) const NAME_LEN: usize = 32;
/// `USRDMA_API_VERSION`: the version of the header this side mirrors (5:
/// GET_INFO reports the largest buffer, MAP_USER says when memory may not be
/// pinned for the long term).
#[cfg(test)]
pub(crate) const API_VERSION: u32 = 5;
/// The version this side needs at least (3 added `USRDMA_QUIESCED`; 4 only
/// changed what revocation puts in the eventfds, which this side does not
/// read: it polls the node). Later modules keep every earlier call working.
pub(crate) const MIN_API_VERSION: u32 = 3;
/// `USRDMA_BAR_OFFSET(n)` is `n << BAR_SHIFT`.
pub(crate) const BAR_SHIFT: u32 = 40;

pub(crate) const BUF_PERSISTENT: u32 = 1 << 1;
pub(crate) const FREE_BY_NAME: u32 = 1 << 0;
pub(crate) const DIR_TO_DEVICE: u32 = 1 << 0;
pub(crate) const DIR_FROM_DEVICE: u32 = 1 << 1;
pub(crate) const MAP_BOUNCED: u32 = 1 << 0;
/// `USRDMA_MAP_NOT_PINNABLE`: with `EINVAL` (version 5), the memory is a
/// shared mapping of a regular file, which may not be pinned for the long term.
pub(crate) const MAP_NOT_PINNABLE: u32 = 1 << 1;
/// `USRDMA_INFO_CMA`: large buffers come from a CMA area (version 5).
pub(crate) const INFO_CMA: u32 = 1 << 0;
pub(crate) const SYNC_FOR_CPU: u32 = 1 << 0;
pub(crate) const SYNC_FOR_DEVICE: u32 = 1 << 1;
pub(crate) const IRQ_NONE: u32 = 0;
pub(crate) const IRQ_INTX: u32 = 1;
pub(crate) const IRQ_MSI: u32 = 2;
pub(crate) const IRQ_MSIX: u32 = 3;
/// `USRDMA_IRQ_REVOKED`: what API version 3 added to every eventfd at
/// revocation; never added since version 4, and never relied on here.
#[cfg(test)]
pub(crate) const IRQ_REVOKED: u64 = 1 << 48;

/// `struct usrdma_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Info {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) api_version: u32,
    pub(crate) pci_domain: u32,
    pub(crate) pci_bus: u8,
    pub(crate) pci_devfn: u8,
    pub(crate) reserved0: u16,
    pub(crate) dma_mask_bits: u32,
    pub(crate) num_buffers: u32,
    pub(crate) reserved1: u32,
    pub(crate) bar_size: [u64; 6],
    /// The largest buffer ALLOC can give (version 5; 0 from older modules).
    pub(crate) max_buf_size: u64,
    /// `INFO_CMA` (version 5).
    pub(crate) info_flags: u32,
    pub(crate) reserved2: u32,
}

/// `struct usrdma_dma_mask`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DmaMaskArg {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) bits: u32,
    pub(crate) reserved: u32,
}

/// `struct usrdma_alloc`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Alloc {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) size: u64,
    pub(crate) name: [u8; NAME_LEN],
    pub(crate) id: u32,
    pub(crate) reserved: u32,
    pub(crate) dma_addr: u64,
    pub(crate) mmap_offset: u64,
    /// Unique among the device's buffers while it stays bound; never 0.
    pub(crate) generation: u64,
}

/// `struct usrdma_free`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Free {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) id: u32,
    pub(crate) reserved: u32,
    pub(crate) name: [u8; NAME_LEN],
    /// By id: the buffer's generation (a stale id then gets `ESTALE`).
    pub(crate) generation: u64,
}

/// `struct usrdma_buf_entry`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BufEntry {
    pub(crate) id: u32,
    pub(crate) flags: u32,
    pub(crate) size: u64,
    pub(crate) dma_addr: u64,
    pub(crate) mmap_offset: u64,
    pub(crate) owner_pid: i32,
    pub(crate) reserved: u32,
    pub(crate) name: [u8; NAME_LEN],
    pub(crate) generation: u64,
}

/// `struct usrdma_list`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct List {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) capacity: u32,
    pub(crate) count: u32,
    pub(crate) entries: u64,
    /// The size of one `BufEntry` as this side knows it.
    pub(crate) entry_size: u32,
    pub(crate) reserved: u32,
}

/// `struct usrdma_sg_entry`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SgEntryArg {
    pub(crate) dma_addr: u64,
    pub(crate) length: u64,
}

/// `struct usrdma_map_user`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MapUser {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) addr: u64,
    pub(crate) length: u64,
    pub(crate) entries: u64,
    pub(crate) capacity: u32,
    pub(crate) count: u32,
    pub(crate) handle: u32,
    pub(crate) out_flags: u32,
}

/// `struct usrdma_unmap_user`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UnmapUser {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) handle: u32,
    pub(crate) reserved: u32,
}

/// `struct usrdma_sync`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sync {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) handle: u32,
    pub(crate) reserved: u32,
    pub(crate) offset: u64,
    pub(crate) length: u64,
}

/// `struct usrdma_irq`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Irq {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
    pub(crate) kind: u32,
    pub(crate) count: u32,
    pub(crate) eventfds: u64,
}

/// `struct usrdma_irq_unmask`, `struct usrdma_reset` and
/// `struct usrdma_quiesced`: only the header.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) argsz: u32,
    pub(crate) flags: u32,
}

/// `_IOWR(0xDA, nr, T)`.
const fn iowr<T>(nr: u32) -> libc::Ioctl {
    iowr_sized(nr, std::mem::size_of::<T>() as u32)
}

/// `_IOC(_IOC_READ | _IOC_WRITE, 0xDA, nr, size)`: the request numbers of
/// structures that grew keep their version-1 size.
const fn iowr_sized(nr: u32, size: u32) -> libc::Ioctl {
    const READ_WRITE: u32 = 3;
    ((READ_WRITE << 30) | (size << 16) | (0xDA << 8) | nr) as libc::Ioctl
}

/// `USRDMA_INFO_SIZE_V1`, `USRDMA_ALLOC_SIZE_V1`, `USRDMA_FREE_SIZE_V1`,
/// `USRDMA_LIST_SIZE_V1`.
const INFO_SIZE_V1: u32 = 80;
const ALLOC_SIZE_V1: u32 = 72;
const FREE_SIZE_V1: u32 = 48;
const LIST_SIZE_V1: u32 = 24;
/// `USRDMA_BUF_ENTRY_SIZE_V1`.
#[cfg(test)]
const BUF_ENTRY_SIZE_V1: u32 = 72;

pub(crate) const GET_INFO: libc::Ioctl = iowr_sized(0x00, INFO_SIZE_V1);
pub(crate) const SET_DMA_MASK: libc::Ioctl = iowr::<DmaMaskArg>(0x01);
pub(crate) const ALLOC: libc::Ioctl = iowr_sized(0x02, ALLOC_SIZE_V1);
pub(crate) const FREE: libc::Ioctl = iowr_sized(0x03, FREE_SIZE_V1);
pub(crate) const LIST: libc::Ioctl = iowr_sized(0x04, LIST_SIZE_V1);
pub(crate) const MAP_USER: libc::Ioctl = iowr::<MapUser>(0x05);
pub(crate) const UNMAP_USER: libc::Ioctl = iowr::<UnmapUser>(0x06);
pub(crate) const SYNC: libc::Ioctl = iowr::<Sync>(0x07);
pub(crate) const SET_IRQ: libc::Ioctl = iowr::<Irq>(0x08);
pub(crate) const IRQ_UNMASK: libc::Ioctl = iowr::<Header>(0x09);
pub(crate) const RESET: libc::Ioctl = iowr::<Header>(0x0a);
pub(crate) const QUIESCED: libc::Ioctl = iowr::<Header>(0x0b);

/// `argsz` of a structure: its whole size.
fn argsz<T>() -> u32 {
    // The usrdma structures are at most a few hundred bytes.
    std::mem::size_of::<T>() as u32
}

/// The argument structures of the usrdma ioctls.
///
/// # Safety
///
/// Implementors are `repr(C)` plain data (no references, no padding the
/// kernel could not write) whose first field is the `u32` `argsz`, and every
/// bit pattern is a valid value: [`call`] writes `argsz` through a `u32`
/// pointer and lets the kernel overwrite up to `size_of::<Self>()` bytes.
pub(crate) unsafe trait Arg: Copy + Default {}
// SAFETY: each of these is a `repr(C)` struct of integers (and byte arrays)
// starting with `argsz: u32`, mirroring usrdma_uapi.h (checked by the layout
// test below); any bit pattern is a valid value of it.
unsafe impl Arg for Info {}
// SAFETY: as for `Info`.
unsafe impl Arg for DmaMaskArg {}
// SAFETY: as for `Info`.
unsafe impl Arg for Alloc {}
// SAFETY: as for `Info`.
unsafe impl Arg for Free {}
// SAFETY: as for `Info`.
unsafe impl Arg for List {}
// SAFETY: as for `Info`.
unsafe impl Arg for MapUser {}
// SAFETY: as for `Info`.
unsafe impl Arg for UnmapUser {}
// SAFETY: as for `Info`.
unsafe impl Arg for Sync {}
// SAFETY: as for `Info`.
unsafe impl Arg for Irq {}
// SAFETY: as for `Info`.
unsafe impl Arg for Header {}

/// Issues `request` with `arg` (its `argsz` set here), returning the kernel's
/// output in place.
///
/// # Safety
///
/// `request` is the usrdma request whose argument is a `T`, and every
/// pointer field of `arg` (`entries`, `eventfds`, `addr`) points at live
/// memory of the capacity or length the structure states, writable where
/// the kernel writes (LIST and MAP_USER entries). A `MAP_USER` request
/// additionally carries the contract of [`map_user`].
unsafe fn call<T: Arg>(fd: BorrowedFd<'_>, request: libc::Ioctl, arg: &mut T) -> io::Result<()> {
    let size = argsz::<T>();
    // SAFETY: every `Arg` is a `repr(C)` structure whose first field is the u32
    // `argsz` (the trait's contract), so the pointer is valid and aligned for a
    // u32 write.
    unsafe { std::ptr::from_mut(arg).cast::<u32>().write(size) };
    // SAFETY: `arg` is a valid, exclusively borrowed `T` that may hold any bit
    // pattern; the kernel reads and writes at most `argsz` = `size_of::<T>()`
    // bytes of it. The memory its pointer fields name is live and large enough
    // (this function's contract); `fd` is open for the call's duration.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, std::ptr::from_mut(arg)) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `USRDMA_GET_INFO`.
pub(crate) fn get_info(fd: BorrowedFd<'_>) -> io::Result<Info> {
    let mut info = Info::default();
    // SAFETY: GET_INFO takes an `Info`, which has no pointer fields.
    unsafe { call(fd, GET_INFO, &mut info) }?;
    Ok(info)
}

/// `USRDMA_SET_DMA_MASK`.
pub(crate) fn set_dma_mask(fd: BorrowedFd<'_>, bits: u32) -> io::Result<()> {
    let mut arg = DmaMaskArg {
        bits,
        ..Default::default()
    };
    // SAFETY: SET_DMA_MASK takes a `DmaMaskArg`, which has no pointer fields.
    unsafe { call(fd, SET_DMA_MASK, &mut arg) }
}

/// `USRDMA_ALLOC`: `name` without its NUL (checked by the caller to fit).
pub(crate) fn alloc(fd: BorrowedFd<'_>, size: u64, flags: u32, name: &[u8]) -> io::Result<Alloc> {
    let mut arg = Alloc {
        size,
        flags,
        ..Default::default()
    };
    copy_name(&mut arg.name, name)?;
    // SAFETY: ALLOC takes an `Alloc`, which has no pointer fields.
    unsafe { call(fd, ALLOC, &mut arg) }?;
    Ok(arg)
}

/// `USRDMA_FREE` by id and generation (`ESTALE` when the id names a newer
/// buffer now).
pub(crate) fn free(fd: BorrowedFd<'_>, id: u32, generation: u64) -> io::Result<()> {
    let mut arg = Free {
        id,
        generation,
        ..Default::default()
    };
    // SAFETY: FREE takes a `Free`, which has no pointer fields.
    unsafe { call(fd, FREE, &mut arg) }
}

/// `USRDMA_FREE` by name.
pub(crate) fn free_by_name(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let mut arg = Free {
        flags: FREE_BY_NAME,
        ..Default::default()
    };
    copy_name(&mut arg.name, name)?;
    // SAFETY: FREE takes a `Free`, which has no pointer fields.
    unsafe { call(fd, FREE, &mut arg) }
}

/// `USRDMA_LIST`: every buffer of the device.
pub(crate) fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<BufEntry>> {
    let mut entries: Vec<BufEntry> = Vec::new();
    loop {
        let capacity = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let mut arg = List {
            capacity,
            entries: entries.as_mut_ptr() as u64,
            entry_size: argsz::<BufEntry>(),
            ..Default::default()
        };
        // SAFETY: `entries` points at `capacity` live, writable `BufEntry`s of
        // `entry_size` bytes each (a dangling but unused pointer when empty);
        // any bytes the kernel writes there are a valid `BufEntry`.
        unsafe { call(fd, LIST, &mut arg) }?;
        let count = arg.count as usize;
        if count <= entries.len() {
            entries.truncate(count);
            return Ok(entries);
        }
        // More buffers than room: grow and ask again (they may change between calls).
        entries = vec![BufEntry::default(); count + 4];
    }
}

/// `USRDMA_MAP_USER`: maps `[addr, addr + len)`; `entries` must hold one entry
/// per page the range touches. Memory the module may not pin for the long
/// term (a shared mapping of a regular file) is an `InvalidInput` error
/// carrying [`NotPinnable`].
///
/// # Safety
///
/// Once this returns `Ok`, the device may read (and, with
/// `DIR_FROM_DEVICE`, write) `[addr, addr + len)` at any time: that range
/// must stay allocated, and must not be handed back to safe code (freed,
/// reused, or reached through references the device's writes would
/// invalidate), until a successful [`unmap_user`] of the returned handle,
/// or be leaked for good. The module pins the pages, so the device keeps
/// reaching the same physical memory even after the range is unmapped from
/// the process: only `unmap_user` (or closing the device) ends it.
pub(crate) unsafe fn map_user(
    fd: BorrowedFd<'_>,
    addr: usize,
    len: usize,
    flags: u32,
    entries: &mut Vec<SgEntryArg>,
) -> io::Result<MapUser> {
    let mut arg = MapUser {
        flags,
        addr: addr as u64,
        length: len as u64,
        entries: entries.as_mut_ptr() as u64,
        capacity: u32::try_from(entries.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        ..Default::default()
    };
    // SAFETY: `entries` points at `capacity` live, writable `SgEntryArg`s, and
    // any bytes the kernel writes there are valid ones; the kernel only pins
    // and reads `[addr, addr + len)`, and what the device may do with it
    // afterwards is this function's own contract, passed on to its caller.
    unsafe { call(fd, MAP_USER, &mut arg) }.map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) && arg.out_flags & MAP_NOT_PINNABLE != 0 {
            io::Error::new(io::ErrorKind::InvalidInput, NotPinnable)
        } else {
            e
        }
    })?;
    entries.truncate(arg.count as usize);
    Ok(arg)
}

/// What `USRDMA_MAP_USER` says with `EINVAL` and `MAP_NOT_PINNABLE`: the
/// memory is a shared mapping of a regular file.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the usrdma module refused to pin a shared mapping of a regular file (EINVAL)")]
pub(crate) struct NotPinnable;

/// `USRDMA_UNMAP_USER`.
pub(crate) fn unmap_user(fd: BorrowedFd<'_>, handle: u32) -> io::Result<()> {
    let mut arg = UnmapUser {
        handle,
        ..Default::default()
    };
    // SAFETY: UNMAP_USER takes an `UnmapUser`, which has no pointer fields.
    unsafe { call(fd, UNMAP_USER, &mut arg) }
}

/// `USRDMA_SYNC` of a whole mapping.
pub(crate) fn sync(fd: BorrowedFd<'_>, handle: u32, len: u64, for_cpu: bool) -> io::Result<()> {
    let mut arg = Sync {
        flags: if for_cpu {
            SYNC_FOR_CPU
        } else {
            SYNC_FOR_DEVICE
        },
        handle,
        offset: 0,
        length: len,
        ..Default::default()
    };
    // SAFETY: SYNC takes a `Sync`, which has no pointer fields (the kernel
    // copies bounced data only within the mapping made by MAP_USER).
    unsafe { call(fd, SYNC, &mut arg) }
}

/// `USRDMA_SET_IRQ`: `kind` is one of `IRQ_*`; an empty `eventfds` disables.
pub(crate) fn set_irq(fd: BorrowedFd<'_>, kind: u32, eventfds: &[i32]) -> io::Result<()> {
    let mut arg = Irq {
        kind,
        count: u32::try_from(eventfds.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        eventfds: eventfds.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `eventfds` points at `count` live `i32`s, which the kernel only
    // reads.
    unsafe { call(fd, SET_IRQ, &mut arg) }
}

/// `USRDMA_IRQ_UNMASK`.
pub(crate) fn irq_unmask(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: IRQ_UNMASK takes a `Header`, which has no pointer fields.
    unsafe { call(fd, IRQ_UNMASK, &mut Header::default()) }
}

/// `USRDMA_RESET`.
pub(crate) fn reset(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: RESET takes a `Header`, which has no pointer fields.
    unsafe { call(fd, RESET, &mut Header::default()) }
}

/// `USRDMA_QUIESCED`: nothing a previous owner started still runs in the
/// device (`EBUSY` while bus mastering is on).
pub(crate) fn quiesced(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: QUIESCED takes a `Header`, which has no pointer fields.
    unsafe { call(fd, QUIESCED, &mut Header::default()) }
}

/// Copies `name` into a NUL-padded field, refusing what does not fit with its NUL.
fn copy_name(field: &mut [u8; NAME_LEN], name: &[u8]) -> io::Result<()> {
    if name.len() >= NAME_LEN || name.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    field[..name.len()].copy_from_slice(name);
    Ok(())
}

/// The name in a NUL-padded field.
pub(crate) fn name_of(field: &[u8; NAME_LEN]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// What the C compiler says about the header: `name value` lines.
    fn c_layout() -> String {
        let header_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kmod/usrdma");
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("layout.c");
        let binary = dir.path().join("layout");
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include \"usrdma_uapi.h\"\n\
             #define S(t) printf(#t \" %zu\\n\", sizeof(struct t));\n\
             #define O(t, f) printf(#t \".\" #f \" %zu\\n\", offsetof(struct t, f));\n\
             #define V(n) printf(#n \" %llu\\n\", (unsigned long long)(n));\n\
             int main(void) {\n",
        );
        c.push_str(C_CHECKS);
        c.push_str("return 0; }\n");
        std::fs::write(&source, c).unwrap();
        let compiled = Command::new("cc")
            .arg("-I")
            .arg(&header_dir)
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("the layout test needs a C compiler (`cc`) to read usrdma_uapi.h");
        assert!(
            compiled.status.success(),
            "usrdma_uapi.h did not compile: {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let run = Command::new(&binary).output().unwrap();
        String::from_utf8(run.stdout).unwrap()
    }

    const C_CHECKS: &str = "
        S(usrdma_info) O(usrdma_info, api_version) O(usrdma_info, pci_domain)
        O(usrdma_info, pci_bus) O(usrdma_info, pci_devfn) O(usrdma_info, dma_mask_bits)
        O(usrdma_info, num_buffers) O(usrdma_info, bar_size) O(usrdma_info, max_buf_size)
        O(usrdma_info, info_flags) V(USRDMA_INFO_SIZE_V1) V(USRDMA_INFO_CMA)
        V(USRDMA_MAP_NOT_PINNABLE)
        S(usrdma_dma_mask) O(usrdma_dma_mask, bits)
        S(usrdma_alloc) O(usrdma_alloc, size) O(usrdma_alloc, name) O(usrdma_alloc, id)
        O(usrdma_alloc, dma_addr) O(usrdma_alloc, mmap_offset) O(usrdma_alloc, generation)
        S(usrdma_free) O(usrdma_free, id) O(usrdma_free, name) O(usrdma_free, generation)
        S(usrdma_buf_entry) O(usrdma_buf_entry, size) O(usrdma_buf_entry, dma_addr)
        O(usrdma_buf_entry, mmap_offset) O(usrdma_buf_entry, owner_pid) O(usrdma_buf_entry, name)
        O(usrdma_buf_entry, generation)
        S(usrdma_list) O(usrdma_list, capacity) O(usrdma_list, count) O(usrdma_list, entries)
        O(usrdma_list, entry_size) O(usrdma_list, reserved)
        V(USRDMA_ALLOC_SIZE_V1) V(USRDMA_FREE_SIZE_V1) V(USRDMA_LIST_SIZE_V1)
        V(USRDMA_BUF_ENTRY_SIZE_V1)
        S(usrdma_sg_entry) O(usrdma_sg_entry, length)
        S(usrdma_map_user) O(usrdma_map_user, addr) O(usrdma_map_user, length)
        O(usrdma_map_user, entries) O(usrdma_map_user, capacity) O(usrdma_map_user, count)
        O(usrdma_map_user, handle) O(usrdma_map_user, out_flags)
        S(usrdma_unmap_user) O(usrdma_unmap_user, handle)
        S(usrdma_sync) O(usrdma_sync, handle) O(usrdma_sync, offset) O(usrdma_sync, length)
        S(usrdma_irq) O(usrdma_irq, type) O(usrdma_irq, count) O(usrdma_irq, eventfds)
        S(usrdma_irq_unmask) S(usrdma_reset) S(usrdma_quiesced)
        V(USRDMA_GET_INFO) V(USRDMA_SET_DMA_MASK) V(USRDMA_ALLOC) V(USRDMA_FREE)
        V(USRDMA_LIST) V(USRDMA_MAP_USER) V(USRDMA_UNMAP_USER) V(USRDMA_SYNC)
        V(USRDMA_SET_IRQ) V(USRDMA_IRQ_UNMASK) V(USRDMA_RESET) V(USRDMA_QUIESCED)
        V(USRDMA_API_VERSION) V(USRDMA_NAME_LEN) V(USRDMA_BAR_SHIFT) V(USRDMA_BUF_PERSISTENT)
        V(USRDMA_FREE_BY_NAME) V(USRDMA_DIR_TO_DEVICE) V(USRDMA_DIR_FROM_DEVICE)
        V(USRDMA_MAP_BOUNCED) V(USRDMA_SYNC_FOR_CPU) V(USRDMA_SYNC_FOR_DEVICE)
        V(USRDMA_IRQ_NONE) V(USRDMA_IRQ_INTX) V(USRDMA_IRQ_MSI) V(USRDMA_IRQ_MSIX)
        V(USRDMA_IRQ_REVOKED)
    ";

    /// A request number as the C compiler prints it (unsigned 32 bits; `Ioctl`
    /// is `c_ulong` with glibc and `c_int` with musl).
    fn req(request: libc::Ioctl) -> u64 {
        u64::from(request as u32)
    }

    fn rust_layout() -> Vec<(&'static str, u64)> {
        macro_rules! s {
            ($c:literal, $t:ty) => {
                ($c, size_of::<$t>() as u64)
            };
        }
        macro_rules! o {
            ($c:literal, $t:ty, $f:ident) => {
                ($c, offset_of!($t, $f) as u64)
            };
        }
        vec![
            s!("usrdma_info", Info),
            o!("usrdma_info.api_version", Info, api_version),
            o!("usrdma_info.pci_domain", Info, pci_domain),
            o!("usrdma_info.pci_bus", Info, pci_bus),
            o!("usrdma_info.pci_devfn", Info, pci_devfn),
            o!("usrdma_info.dma_mask_bits", Info, dma_mask_bits),
            o!("usrdma_info.num_buffers", Info, num_buffers),
            o!("usrdma_info.bar_size", Info, bar_size),
            o!("usrdma_info.max_buf_size", Info, max_buf_size),
            o!("usrdma_info.info_flags", Info, info_flags),
            ("USRDMA_INFO_SIZE_V1", INFO_SIZE_V1.into()),
            ("USRDMA_INFO_CMA", INFO_CMA.into()),
            ("USRDMA_MAP_NOT_PINNABLE", MAP_NOT_PINNABLE.into()),
            s!("usrdma_dma_mask", DmaMaskArg),
            o!("usrdma_dma_mask.bits", DmaMaskArg, bits),
            s!("usrdma_alloc", Alloc),
            o!("usrdma_alloc.size", Alloc, size),
            o!("usrdma_alloc.name", Alloc, name),
            o!("usrdma_alloc.id", Alloc, id),
            o!("usrdma_alloc.dma_addr", Alloc, dma_addr),
            o!("usrdma_alloc.mmap_offset", Alloc, mmap_offset),
            o!("usrdma_alloc.generation", Alloc, generation),
            s!("usrdma_free", Free),
            o!("usrdma_free.id", Free, id),
            o!("usrdma_free.name", Free, name),
            o!("usrdma_free.generation", Free, generation),
            s!("usrdma_buf_entry", BufEntry),
            o!("usrdma_buf_entry.size", BufEntry, size),
            o!("usrdma_buf_entry.dma_addr", BufEntry, dma_addr),
            o!("usrdma_buf_entry.mmap_offset", BufEntry, mmap_offset),
            o!("usrdma_buf_entry.owner_pid", BufEntry, owner_pid),
            o!("usrdma_buf_entry.name", BufEntry, name),
            o!("usrdma_buf_entry.generation", BufEntry, generation),
            s!("usrdma_list", List),
            o!("usrdma_list.capacity", List, capacity),
            o!("usrdma_list.count", List, count),
            o!("usrdma_list.entries", List, entries),
            o!("usrdma_list.entry_size", List, entry_size),
            o!("usrdma_list.reserved", List, reserved),
            ("USRDMA_ALLOC_SIZE_V1", ALLOC_SIZE_V1.into()),
            ("USRDMA_FREE_SIZE_V1", FREE_SIZE_V1.into()),
            ("USRDMA_LIST_SIZE_V1", LIST_SIZE_V1.into()),
            ("USRDMA_BUF_ENTRY_SIZE_V1", BUF_ENTRY_SIZE_V1.into()),
            s!("usrdma_sg_entry", SgEntryArg),
            o!("usrdma_sg_entry.length", SgEntryArg, length),
            s!("usrdma_map_user", MapUser),
            o!("usrdma_map_user.addr", MapUser, addr),
            o!("usrdma_map_user.length", MapUser, length),
            o!("usrdma_map_user.entries", MapUser, entries),
            o!("usrdma_map_user.capacity", MapUser, capacity),
            o!("usrdma_map_user.count", MapUser, count),
            o!("usrdma_map_user.handle", MapUser, handle),
            o!("usrdma_map_user.out_flags", MapUser, out_flags),
            s!("usrdma_unmap_user", UnmapUser),
            o!("usrdma_unmap_user.handle", UnmapUser, handle),
            s!("usrdma_sync", Sync),
            o!("usrdma_sync.handle", Sync, handle),
            o!("usrdma_sync.offset", Sync, offset),
            o!("usrdma_sync.length", Sync, length),
            s!("usrdma_irq", Irq),
            o!("usrdma_irq.type", Irq, kind),
            o!("usrdma_irq.count", Irq, count),
            o!("usrdma_irq.eventfds", Irq, eventfds),
            s!("usrdma_irq_unmask", Header),
            s!("usrdma_reset", Header),
            s!("usrdma_quiesced", Header),
            ("USRDMA_GET_INFO", req(GET_INFO)),
            ("USRDMA_SET_DMA_MASK", req(SET_DMA_MASK)),
            ("USRDMA_ALLOC", req(ALLOC)),
            ("USRDMA_FREE", req(FREE)),
            ("USRDMA_LIST", req(LIST)),
            ("USRDMA_MAP_USER", req(MAP_USER)),
            ("USRDMA_UNMAP_USER", req(UNMAP_USER)),
            ("USRDMA_SYNC", req(SYNC)),
            ("USRDMA_SET_IRQ", req(SET_IRQ)),
            ("USRDMA_IRQ_UNMASK", req(IRQ_UNMASK)),
            ("USRDMA_RESET", req(RESET)),
            ("USRDMA_QUIESCED", req(QUIESCED)),
            ("USRDMA_API_VERSION", API_VERSION.into()),
            ("USRDMA_NAME_LEN", NAME_LEN as u64),
            ("USRDMA_BAR_SHIFT", BAR_SHIFT.into()),
            ("USRDMA_BUF_PERSISTENT", BUF_PERSISTENT.into()),
            ("USRDMA_FREE_BY_NAME", FREE_BY_NAME.into()),
            ("USRDMA_DIR_TO_DEVICE", DIR_TO_DEVICE.into()),
            ("USRDMA_DIR_FROM_DEVICE", DIR_FROM_DEVICE.into()),
            ("USRDMA_MAP_BOUNCED", MAP_BOUNCED.into()),
            ("USRDMA_SYNC_FOR_CPU", SYNC_FOR_CPU.into()),
            ("USRDMA_SYNC_FOR_DEVICE", SYNC_FOR_DEVICE.into()),
            ("USRDMA_IRQ_NONE", IRQ_NONE.into()),
            ("USRDMA_IRQ_INTX", IRQ_INTX.into()),
            ("USRDMA_IRQ_MSI", IRQ_MSI.into()),
            ("USRDMA_IRQ_MSIX", IRQ_MSIX.into()),
            ("USRDMA_IRQ_REVOKED", IRQ_REVOKED),
        ]
    }

    #[test]
    fn layout_and_numbers_match_the_c_header() {
        let c = c_layout();
        let c: std::collections::HashMap<&str, u64> = c
            .lines()
            .map(|line| {
                let (name, value) = line.split_once(' ').unwrap();
                (name, value.parse().unwrap())
            })
            .collect();
        let rust = rust_layout();
        assert_eq!(c.len(), rust.len(), "the C and Rust check lists differ");
        for (name, value) in rust {
            assert_eq!(
                c.get(name),
                Some(&value),
                "{name}: C says {:?}",
                c.get(name)
            );
        }
    }

    #[test]
    fn names_must_fit_with_their_nul() {
        let mut field = [0u8; NAME_LEN];
        assert!(copy_name(&mut field, &[b'a'; NAME_LEN - 1]).is_ok());
        assert_eq!(name_of(&field).len(), NAME_LEN - 1);
        assert!(copy_name(&mut [0u8; NAME_LEN], &[b'a'; NAME_LEN]).is_err());
        assert!(copy_name(&mut [0u8; NAME_LEN], b"a\0b").is_err());
    }
}
