//! The raw baselines: what a driver does without usrdrv, straight on the VFIO
//! descriptors usrdrv opened (same device, same container, same IRQ), plus the
//! few system-level helpers the benchmark needs (page-aligned memory, the TSC,
//! CPU pinning). Every `unsafe` block of the benchmark lives here.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use vfio_bindings::bindings::vfio::{
    VFIO_BASE, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_TYPE, vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_irq_set,
};

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`, as in `include/uapi/linux/vfio.h`.
const fn vfio_io(n: u32) -> libc::Ioctl {
    ((VFIO_TYPE as u32) << 8 | (VFIO_BASE + n)) as libc::Ioctl
}
const VFIO_DEVICE_SET_IRQS: libc::Ioctl = vfio_io(10);
const VFIO_IOMMU_MAP_DMA: libc::Ioctl = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: libc::Ioctl = vfio_io(14);

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `len` bytes mapped into the process: a descriptor's (a BAR through the VFIO
/// device file), shared, or private anonymous memory.
#[derive(Debug)]
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    fn new(fd: Option<BorrowedFd<'_>>, offset: u64, len: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let (flags, raw_fd) = match fd {
            Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address hint, no
        // MAP_FIXED) cannot overlap anything Rust owns; `raw_fd` is open (or -1
        // for anonymous memory) for the duration of the call.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw_fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>()).ok_or(io::ErrorKind::AddrNotAvailable)?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and every borrow
        // of the memory (slices, registers) borrows `self`, so none outlives it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// BAR 0 mapped by hand from the VFIO device file at the region's offset.
#[derive(Debug)]
pub struct RawBar {
    map: Mmap,
}

impl RawBar {
    /// Maps `len` bytes of the device file at `offset` (from `region_info`).
    pub fn map(device: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Self> {
        Ok(Self {
            map: Mmap::new(Some(device), offset, len)?,
        })
    }

    /// The 32-bit register at `offset`, checked once here, the way C code
    /// computes `volatile uint32_t *reg = bar + offset` once.
    pub fn reg32(&self, offset: usize) -> Option<RawReg32<'_>> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.map.len {
            return None;
        }
        // SAFETY: `offset + 4 <= len`, so the pointer stays inside the mapping.
        let ptr = unsafe { self.map.ptr.as_ptr().add(offset) };
        Some(RawReg32 {
            ptr: ptr.cast::<u32>(),
            _bar: PhantomData,
        })
    }
}

/// One mapped 32-bit device register: each access is one volatile load or store.
#[derive(Debug, Clone, Copy)]
pub struct RawReg32<'a> {
    ptr: *mut u32,
    _bar: PhantomData<&'a RawBar>,
}

impl RawReg32<'_> {
    /// One volatile 32-bit load.
    #[inline(always)]
    pub fn read(self) -> u32 {
        // SAFETY: the pointer is 4-byte aligned and inside the live BAR mapping
        // (checked by `RawBar::reg32`, which this borrows); device memory is
        // never referenced, only accessed volatile.
        unsafe { self.ptr.read_volatile() }
    }

    /// One volatile 32-bit store.
    #[inline(always)]
    pub fn write(self, value: u32) {
        // SAFETY: as in `read`.
        unsafe { self.ptr.write_volatile(value) }
    }
}

/// Page-aligned, zeroed anonymous memory, to map for DMA whole pages at a time.
#[derive(Debug)]
pub struct PageMemory {
    map: Mmap,
}

impl PageMemory {
    /// `len` bytes (a multiple of the page size), touched so every page exists.
    pub fn new(len: usize) -> io::Result<Self> {
        let mut memory = Self {
            map: Mmap::new(None, 0, len)?,
        };
        for page in memory.as_mut_slice().chunks_mut(4096) {
            page[0] = 1;
        }
        Ok(memory)
    }

    /// The memory, shared.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes owned by `self` and
        // initialized (anonymous memory is zeroed); the borrow ties the slice
        // to `self`.
        unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr(), self.map.len) }
    }

    /// The memory, exclusive.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr(), self.map.len) }
    }
}

/// `VFIO_IOMMU_MAP_DMA` on the container: `size` bytes at `vaddr` to `iova`.
pub fn map_dma(
    container: BorrowedFd<'_>,
    vaddr: usize,
    iova: u64,
    size: u64,
    flags: u32,
) -> io::Result<()> {
    let mut map = vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<vfio_iommu_type1_dma_map>() as u32,
        flags,
        vaddr: vaddr as u64,
        iova,
        size,
    };
    // SAFETY: the argument is a complete `vfio_iommu_type1_dma_map` whose
    // `argsz` is its size; the kernel pins the pages it names (the caller keeps
    // them alive until `unmap_dma`) and writes nothing back.
    check(unsafe { libc::ioctl(container.as_raw_fd(), VFIO_IOMMU_MAP_DMA, &mut map) })?;
    Ok(())
}

/// `VFIO_IOMMU_UNMAP_DMA` on the container; returns the bytes unmapped.
pub fn unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64> {
    let mut unmap = vfio_iommu_type1_dma_unmap {
        argsz: std::mem::size_of::<vfio_iommu_type1_dma_unmap>() as u32,
        flags: 0,
        iova,
        size,
        ..Default::default()
    };
    // SAFETY: a complete `vfio_iommu_type1_dma_unmap` (no bitmap flag, so no
    // trailing data) with `argsz` its size; the kernel writes back `size` only.
    check(unsafe { libc::ioctl(container.as_raw_fd(), VFIO_IOMMU_UNMAP_DMA, &mut unmap) })?;
    Ok(unmap.size)
}

/// `VFIO_DEVICE_SET_IRQS` for vector 0 of `index`: attach `eventfd`, or
/// detach all vectors with `None`.
fn set_irqs(device: BorrowedFd<'_>, index: u32, eventfd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    const HEADER: usize = std::mem::size_of::<vfio_irq_set>();
    // u32 words: aligned for the header's fields and the i32 descriptor after it.
    let mut words = [0u32; HEADER / 4 + 1];
    let (flags, count, len) = match eventfd {
        Some(fd) => {
            words[HEADER / 4] = fd.as_raw_fd() as u32;
            (VFIO_IRQ_SET_DATA_EVENTFD, 1, HEADER + 4)
        }
        None => (VFIO_IRQ_SET_DATA_NONE, 0, HEADER),
    };
    words[0] = len as u32; // argsz
    words[1] = flags | VFIO_IRQ_SET_ACTION_TRIGGER;
    words[2] = index;
    words[3] = 0; // start
    words[4] = count;
    // SAFETY: `words` holds a `vfio_irq_set` header followed by the descriptor
    // when there is one: `argsz` bytes, all of which live through the call.
    check(unsafe { libc::ioctl(device.as_raw_fd(), VFIO_DEVICE_SET_IRQS, words.as_mut_ptr()) })?;
    Ok(())
}

/// An interrupt vector routed by hand to a blocking eventfd.
#[derive(Debug)]
pub struct RawIrq<'a> {
    device: BorrowedFd<'a>,
    index: u32,
    eventfd: OwnedFd,
}

impl<'a> RawIrq<'a> {
    /// Creates a blocking eventfd and attaches it to vector 0 of `index`.
    pub fn enable(device: BorrowedFd<'a>, index: u32) -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_irqs(device, index, Some(std::os::fd::AsFd::as_fd(&eventfd)))?;
        Ok(Self {
            device,
            index,
            eventfd,
        })
    }

    /// One blocking `read`: returns the count of interrupts since the last one.
    #[inline]
    pub fn read(&self) -> io::Result<u64> {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a live, aligned u64.
        let n = unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                std::ptr::from_mut(&mut count).cast(),
                8,
            )
        };
        if n == 8 {
            Ok(count)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Adds `value` to the counter from another thread: the watchdog's way of
    /// ending a blocking read when an interrupt never comes.
    pub fn poke(&self, value: u64) -> io::Result<()> {
        // SAFETY: writes 8 bytes from a live u64.
        let n = unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                std::ptr::from_ref(&value).cast(),
                8,
            )
        };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for RawIrq<'_> {
    fn drop(&mut self) {
        // Detach before the eventfd closes; nothing to do if it fails.
        let _ = set_irqs(self.device, self.index, None);
    }
}

/// Whether `fd` is readable right now (`poll` with a zero timeout).
pub fn readable(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1, no waiting.
    check(unsafe { libc::poll(&mut pollfd, 1, 0) })?;
    Ok(pollfd.revents & libc::POLLIN != 0)
}

/// The time-stamp counter: one instruction, no exit to the hypervisor, unlike
/// `clock_gettime` on a guest whose clock source is the HPET.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is available on every x86_64 CPU and has no operands.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of_val(&set) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: `cpu` is inside the set (checked above) and `set` is valid.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a live cpu_set_t and its exact size; 0 is this thread.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) })?;
    Ok(())
}

/// The CPU the calling thread runs on.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}
