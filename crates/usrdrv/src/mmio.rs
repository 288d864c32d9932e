//! Device memory (BAR) access: volatile, bounds-checked, and never through a
//! Rust reference.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::mmap::{Mapping, SizedMapping};

pub use crate::sys::word::MmioValue;

/// Why a device memory access was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MmioError {
    /// The access does not lie wholly inside the BAR.
    #[error("BAR {bar}: a {width}-byte access at offset {offset:#x} is outside its {len:#x} bytes")]
    OutOfBounds {
        /// The BAR index.
        bar: u8,
        /// The offset asked for.
        offset: u64,
        /// The access width in bytes.
        width: usize,
        /// The BAR's length in bytes.
        len: u64,
    },
    /// The offset is not a multiple of the access width.
    #[error(
        "BAR {bar}: a {width}-byte access at offset {offset:#x} is misaligned: use a multiple of {width}"
    )]
    Misaligned {
        /// The BAR index.
        bar: u8,
        /// The offset asked for.
        offset: u64,
        /// The access width in bytes.
        width: usize,
    },
    /// The BAR may be read but not written (VFIO reports it read-only).
    #[error(
        "BAR {bar} is read-only (the kernel does not allow writes to it): the {width}-byte write at offset {offset:#x} was refused; registers there can only be read"
    )]
    ReadOnly {
        /// The BAR index.
        bar: u8,
        /// The offset asked for.
        offset: u64,
        /// The access width in bytes.
        width: usize,
    },
    /// The kernel asked for the device back (unbind or hot-unplug).
    #[error("BAR {bar}: the device was revoked (unbound or removed): drop every handle to it")]
    Revoked {
        /// The BAR index.
        bar: u8,
    },
    /// A sized view was asked of a BAR that is not mapped or is too small.
    #[error("BAR {bar} cannot give a {size:#x}-byte view: {why}")]
    NoView {
        /// The BAR index.
        bar: u8,
        /// The view size asked for.
        size: usize,
        /// Why not.
        why: &'static str,
    },
    /// A read or write through the device file failed (BARs that cannot be mapped).
    #[error("BAR {bar}: {width}-byte access at offset {offset:#x} through the device file failed")]
    Io {
        /// The BAR index.
        bar: u8,
        /// The offset asked for.
        offset: u64,
        /// The access width in bytes.
        width: usize,
        /// The error the kernel returned.
        #[source]
        source: std::io::Error,
    },
}

/// Whatever must stay alive while a [`Bar`] is in use (the device handle it
/// came from, and through it the group and container).
pub(crate) trait KeepAlive: Send + Sync + std::fmt::Debug {}
impl<T: Send + Sync + std::fmt::Debug> KeepAlive for T {}

/// A BAR whose accesses a device model answers (the emulated backend).
/// Offsets are in bounds and naturally aligned when these are called.
pub(crate) trait BarPort: Send + Sync + std::fmt::Debug {
    /// Reads the `width`-byte register at `offset`; `None` once the device
    /// was revoked.
    fn read(&self, offset: u64, width: usize) -> Option<u64>;
    /// Writes the low `width` bytes of `value` at `offset`; `None` once the
    /// device was revoked.
    fn write(&self, offset: u64, width: usize, value: u64) -> Option<()>;
}

/// Where the device file holds a BAR, for accesses outside mapped memory.
#[derive(Debug)]
pub(crate) struct FileRegion {
    /// The device file (VFIO performs the access in the kernel).
    pub(crate) device: Arc<File>,
    /// Where the BAR starts in it.
    pub(crate) offset: u64,
}

/// How a BAR is reached.
#[derive(Debug)]
enum Access {
    /// Wholly mapped, readable and writable: each access is one volatile load
    /// or store, after one bounds check (the hot path; nothing else is checked).
    Mapped(Mapping),
    /// Anything else (read-only, not mappable, or mappable only in parts):
    /// every access takes the out-of-line path.
    Windowed(Box<Windowed>),
    /// Answered by a device model, in process (no memory is mapped).
    Emulated(Arc<dyn BarPort>),
}

/// A BAR reached through mapped windows where there are some, and through the
/// device file elsewhere.
#[derive(Debug)]
struct Windowed {
    /// Mapped parts of the BAR, each at its offset in the BAR; they do not
    /// overlap. Empty when the BAR could not be mapped at all.
    windows: Vec<Window>,
    /// Reaches every byte of the BAR with `pread`/`pwrite`.
    file: FileRegion,
    /// Whether the BAR may be written.
    writable: bool,
}

/// One mapped part of a BAR.
#[derive(Debug)]
struct Window {
    /// Its offset in the BAR.
    start: u64,
    map: Mapping,
}

impl Windowed {
    /// The window holding all `width` bytes at `offset`, and the offset in it.
    fn window(&self, offset: u64, width: u64) -> Option<(&Mapping, usize)> {
        self.windows.iter().find_map(|w| {
            let inner = offset.checked_sub(w.start)?;
            let end = inner.checked_add(width)?;
            (end <= w.map.len() as u64)
                .then(|| usize::try_from(inner).ok())
                .flatten()
                .map(|inner| (&w.map, inner))
        })
    }
}

/// One memory BAR of a device, ready for register access.
///
/// Offsets are bytes from the start of the BAR. Every access is bounds-checked
/// and must be naturally aligned; values are little-endian on the device and
/// returned in CPU order. No `&`/`&mut` into device memory is ever formed.
///
/// ```no_run
/// use usrdrv::vfio::Device;
///
/// let device = Device::open("0000:00:03.0".parse()?)?;
/// let bar0 = device.bar(0)?;
/// let id = bar0.read32(0x00)?;
/// bar0.write32(0x04, 0x1234_5678)?;
/// println!("id {id:#010x}, liveness {:#010x}", bar0.read32(0x04)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Bar {
    index: u8,
    len: u64,
    access: Access,
    /// Set when the kernel asks for the device back: accesses fail from then on.
    revoked: Arc<AtomicBool>,
    /// Dropped after `access`, so the mapping goes before the device does.
    _owner: Arc<dyn KeepAlive>,
}

impl Bar {
    /// A BAR wholly mapped, readable and writable.
    pub(crate) fn mapped(
        index: u8,
        mapping: Mapping,
        owner: Arc<dyn KeepAlive>,
        revoked: Option<Arc<AtomicBool>>,
    ) -> Self {
        Self {
            index,
            len: mapping.len() as u64,
            access: Access::Mapped(mapping),
            revoked: revoked.unwrap_or_default(),
            _owner: owner,
        }
    }

    /// A BAR of `len` bytes reached through `file`, except for the parts in
    /// `windows` (mapped from their offset in the BAR), and written only if
    /// `writable`. Windows outside the BAR or overlapping an earlier one are
    /// dropped. A writable BAR with one window covering it all is
    /// [`Bar::mapped`].
    pub(crate) fn windowed(
        index: u8,
        len: u64,
        writable: bool,
        windows: Vec<(u64, Mapping)>,
        file: FileRegion,
        owner: Arc<dyn KeepAlive>,
        revoked: Option<Arc<AtomicBool>>,
    ) -> Self {
        let mut kept: Vec<Window> = Vec::with_capacity(windows.len());
        for (start, map) in windows {
            let end = start.checked_add(map.len() as u64);
            let inside = end.is_some_and(|end| end <= len);
            let overlaps = kept
                .iter()
                .any(|w| start < w.start + w.map.len() as u64 && end.is_none_or(|e| w.start < e));
            if inside && !overlaps {
                kept.push(Window { start, map });
            }
        }
        if writable
            && let [only] = kept.as_slice()
            && only.start == 0
            && only.map.len() as u64 == len
            && let Some(Window { map, .. }) = kept.pop()
        {
            return Self::mapped(index, map, owner, revoked);
        }
        Self {
            index,
            len,
            access: Access::Windowed(Box::new(Windowed {
                windows: kept,
                file,
                writable,
            })),
            revoked: revoked.unwrap_or_default(),
            _owner: owner,
        }
    }

    /// A BAR of `len` bytes a device model answers through `port`.
    pub(crate) fn emulated(
        index: u8,
        len: u64,
        port: Arc<dyn BarPort>,
        owner: Arc<dyn KeepAlive>,
        revoked: Arc<AtomicBool>,
    ) -> Self {
        Self {
            index,
            len,
            access: Access::Emulated(port),
            revoked,
            _owner: owner,
        }
    }

    /// The BAR's index, `0..=5`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The BAR's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the BAR is empty (never true for a BAR that exists).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the whole BAR is mapped, so every access is a load or store of
    /// mapped memory (`true`), or some accesses take a system call on the
    /// device file (`false`: the kernel would not map the BAR, or only parts
    /// of it; see [`Bar::mapped_ranges`]).
    pub fn is_mapped(&self) -> bool {
        match &self.access {
            Access::Mapped(_) => true,
            Access::Windowed(w) => {
                w.windows.iter().map(|w| w.map.len() as u64).sum::<u64>() == self.len
            }
            // Every access is a call into the model, none a system call.
            Access::Emulated(_) => true,
        }
    }

    /// The parts of the BAR that are mapped, as offset ranges in the BAR, in
    /// order: all of it for a mapped BAR, the areas the kernel allows for a
    /// BAR it maps only in parts (VFIO's sparse mmap), none when it could not
    /// be mapped. Accesses elsewhere go through the device file.
    pub fn mapped_ranges(&self) -> Vec<std::ops::Range<u64>> {
        match &self.access {
            Access::Mapped(map) => std::iter::once(0..map.len() as u64).collect(),
            Access::Emulated(_) => std::iter::once(0..self.len).collect(),
            Access::Windowed(w) => {
                let mut ranges: Vec<_> = w
                    .windows
                    .iter()
                    .map(|w| w.start..w.start + w.map.len() as u64)
                    .collect();
                ranges.sort_by_key(|r| r.start);
                ranges
            }
        }
    }

    /// Whether the BAR may be written (`false` when the kernel reports it
    /// read-only; writes are then [`MmioError::ReadOnly`]).
    pub fn is_writable(&self) -> bool {
        match &self.access {
            Access::Mapped(_) | Access::Emulated(_) => true,
            Access::Windowed(w) => w.writable,
        }
    }

    #[inline(always)]
    fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Why an access of a `T` at `offset` is refused (out of the hot path).
    #[cold]
    #[inline(never)]
    fn refusal<T: MmioValue>(&self, offset: u64) -> MmioError {
        let width = std::mem::size_of::<T>();
        if self.is_revoked() {
            MmioError::Revoked { bar: self.index }
        } else if offset
            .checked_add(width as u64)
            .is_none_or(|end| end > self.len)
        {
            MmioError::OutOfBounds {
                bar: self.index,
                offset,
                width,
                len: self.len,
            }
        } else {
            MmioError::Misaligned {
                bar: self.index,
                offset,
                width,
            }
        }
    }

    /// Checks an access off the hot path (a whole mapping checks its own).
    fn check<T: MmioValue>(&self, offset: u64) -> Result<(), MmioError> {
        let width = std::mem::size_of::<T>() as u64;
        let fits = offset.checked_add(width).is_some_and(|end| end <= self.len);
        if fits && offset.is_multiple_of(width) && !self.is_revoked() {
            Ok(())
        } else {
            Err(self.refusal::<T>(offset))
        }
    }

    /// Reads one value of type `T` at `offset`.
    #[inline(always)]
    pub fn read<T: MmioValue>(&self, offset: u64) -> Result<T, MmioError> {
        match &self.access {
            // One bounds and alignment check, the mapping's own.
            Access::Mapped(map) if !self.is_revoked() => usize::try_from(offset)
                .ok()
                .and_then(|off| map.read::<T>(off))
                .ok_or_else(|| self.refusal::<T>(offset)),
            Access::Mapped(_) => Err(self.refusal::<T>(offset)),
            Access::Windowed(windowed) => self.read_windowed(windowed, offset),
            Access::Emulated(port) => self.read_emulated(port.as_ref(), offset),
        }
    }

    /// A read a device model answers, out of line like `read_windowed`.
    #[inline(never)]
    fn read_emulated<T: MmioValue>(&self, port: &dyn BarPort, offset: u64) -> Result<T, MmioError> {
        self.check::<T>(offset)?;
        port.read(offset, std::mem::size_of::<T>())
            .map(T::from_u64_truncating)
            .ok_or(MmioError::Revoked { bar: self.index })
    }

    /// A write a device model takes, out of line like `write_windowed`.
    #[inline(never)]
    fn write_emulated<T: MmioValue>(
        &self,
        port: &dyn BarPort,
        offset: u64,
        value: T,
    ) -> Result<(), MmioError> {
        self.check::<T>(offset)?;
        port.write(offset, std::mem::size_of::<T>(), value.to_u64())
            .ok_or(MmioError::Revoked { bar: self.index })
    }

    /// A read of a BAR that is not wholly mapped: through a mapped window when
    /// one holds the value, otherwise a system call on the device file. Kept
    /// out of line so the mapped path stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn read_windowed<T: MmioValue>(
        &self,
        windowed: &Windowed,
        offset: u64,
    ) -> Result<T, MmioError> {
        self.check::<T>(offset)?;
        let width = std::mem::size_of::<T>();
        if let Some(value) = windowed
            .window(offset, width as u64)
            .and_then(|(map, inner)| map.read::<T>(inner))
        {
            return Ok(value);
        }
        let mut buf = [0u8; 8];
        let buf = &mut buf[..width];
        windowed
            .file
            .device
            .read_exact_at(buf, windowed.file.offset + offset)
            .map_err(|source| self.io_error::<T>(offset, source))?;
        Ok(T::from_le_slice(buf))
    }

    /// Writes one value of type `T` at `offset`.
    #[inline(always)]
    pub fn write<T: MmioValue>(&self, offset: u64, value: T) -> Result<(), MmioError> {
        match &self.access {
            Access::Mapped(map) if !self.is_revoked() => usize::try_from(offset)
                .ok()
                .and_then(|off| map.write(off, value))
                .ok_or_else(|| self.refusal::<T>(offset)),
            Access::Mapped(_) => Err(self.refusal::<T>(offset)),
            Access::Windowed(windowed) => self.write_windowed(windowed, offset, value),
            Access::Emulated(port) => self.write_emulated(port.as_ref(), offset, value),
        }
    }

    /// A write of a BAR that is not wholly mapped (or is read-only), out of
    /// line like `read_windowed`.
    #[cold]
    #[inline(never)]
    fn write_windowed<T: MmioValue>(
        &self,
        windowed: &Windowed,
        offset: u64,
        value: T,
    ) -> Result<(), MmioError> {
        self.check::<T>(offset)?;
        let width = std::mem::size_of::<T>();
        if !windowed.writable {
            return Err(MmioError::ReadOnly {
                bar: self.index,
                offset,
                width,
            });
        }
        if let Some(()) = windowed
            .window(offset, width as u64)
            .and_then(|(map, inner)| map.write(inner, value))
        {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(width);
        value.extend_le(&mut buf);
        windowed
            .file
            .device
            .write_all_at(&buf, windowed.file.offset + offset)
            .map_err(|source| self.io_error::<T>(offset, source))
    }

    /// A view of the first `SIZE` bytes for hot paths: register offsets become
    /// constants checked at compile time, so an access is one volatile load or
    /// store and cannot fail. Needs a writable BAR whose first `SIZE` bytes
    /// are mapped.
    ///
    /// Revocation is checked when the view is taken, as a guard: take a view
    /// per batch of accesses (it is free) and drop it before waiting. Accesses
    /// through a view taken before a revocation stay safe (the mapping lives
    /// until every handle is dropped); they just reach a device the kernel is
    /// waiting to take back.
    ///
    /// ```no_run
    /// # let device = usrdrv::Device::open("0000:00:03.0".parse()?, usrdrv::dma::DmaMask::new(28)?)?;
    /// let bar0 = device.bar(0)?;
    /// let regs = bar0.view::<0x100>()?;
    /// let id = regs.read32::<0x00>();
    /// regs.write32::<0x04>(!id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A register outside the view, or misaligned, does not compile:
    ///
    /// ```compile_fail
    /// # let device = usrdrv::Device::open("0000:00:03.0".parse()?, usrdrv::dma::DmaMask::new(28)?)?;
    /// # let bar0 = device.bar(0)?;
    /// let regs = bar0.view::<0x100>()?;
    /// regs.read32::<0x100>();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn view<const SIZE: usize>(&self) -> Result<BarView<'_, SIZE>, MmioError> {
        let no_view = |why| MmioError::NoView {
            bar: self.index,
            size: SIZE,
            why,
        };
        if self.is_revoked() {
            return Err(MmioError::Revoked { bar: self.index });
        }
        let map = match &self.access {
            Access::Mapped(map) => map,
            Access::Emulated(port) => {
                if (SIZE as u64) > self.len {
                    return Err(no_view("the BAR is smaller"));
                }
                return Ok(BarView {
                    access: ViewAccess::Emulated(port.as_ref()),
                });
            }
            Access::Windowed(w) if !w.writable => {
                return Err(no_view(
                    "the BAR is read-only (a view's writes cannot fail); use Bar::read",
                ));
            }
            Access::Windowed(w) => match w.windows.iter().find(|w| w.start == 0) {
                Some(first) => &first.map,
                None => {
                    return Err(no_view(
                        "the start of the BAR is not mapped (accesses go through the device file); use Bar::read and Bar::write",
                    ));
                }
            },
        };
        Ok(BarView {
            access: ViewAccess::Mapped(
                map.sized::<SIZE>()
                    .ok_or_else(|| no_view("the BAR, or the part of it mapped, is smaller"))?,
            ),
        })
    }

    fn io_error<T>(&self, offset: u64, source: std::io::Error) -> MmioError {
        // Revoked between the check and the call: the file is gone.
        if self.is_revoked() {
            return MmioError::Revoked { bar: self.index };
        }
        MmioError::Io {
            bar: self.index,
            offset,
            width: std::mem::size_of::<T>(),
            source,
        }
    }

    /// Reads the byte at `offset`.
    #[inline(always)]
    pub fn read8(&self, offset: u64) -> Result<u8, MmioError> {
        self.read(offset)
    }

    /// Reads the 16-bit value at `offset` (2-byte aligned).
    #[inline(always)]
    pub fn read16(&self, offset: u64) -> Result<u16, MmioError> {
        self.read(offset)
    }

    /// Reads the 32-bit value at `offset` (4-byte aligned).
    #[inline(always)]
    pub fn read32(&self, offset: u64) -> Result<u32, MmioError> {
        self.read(offset)
    }

    /// Reads the 64-bit value at `offset` (8-byte aligned), in one access.
    #[inline(always)]
    pub fn read64(&self, offset: u64) -> Result<u64, MmioError> {
        self.read(offset)
    }

    /// Writes the byte at `offset`.
    #[inline(always)]
    pub fn write8(&self, offset: u64, value: u8) -> Result<(), MmioError> {
        self.write(offset, value)
    }

    /// Writes the 16-bit value at `offset` (2-byte aligned).
    #[inline(always)]
    pub fn write16(&self, offset: u64, value: u16) -> Result<(), MmioError> {
        self.write(offset, value)
    }

    /// Writes the 32-bit value at `offset` (4-byte aligned).
    #[inline(always)]
    pub fn write32(&self, offset: u64, value: u32) -> Result<(), MmioError> {
        self.write(offset, value)
    }

    /// Writes the 64-bit value at `offset` (8-byte aligned), in one access.
    #[inline(always)]
    pub fn write64(&self, offset: u64, value: u64) -> Result<(), MmioError> {
        self.write(offset, value)
    }
}

/// The first `SIZE` bytes of a mapped [`Bar`], with register offsets as
/// constants checked at compile time ([`Bar::view`]).
///
/// On an emulated device ([`crate::emulated`]) each access is a call into the
/// device model; once the device is revoked reads return all-ones and writes
/// are dropped, as through the all-ones memory a real device's view is left on.
#[derive(Debug, Clone, Copy)]
pub struct BarView<'a, const SIZE: usize> {
    access: ViewAccess<'a, SIZE>,
}

/// What a [`BarView`] reaches: mapped device memory (one volatile access per
/// register) or a device model.
#[derive(Debug, Clone, Copy)]
enum ViewAccess<'a, const SIZE: usize> {
    Mapped(SizedMapping<'a, SIZE>),
    Emulated(&'a dyn BarPort),
}

impl<const SIZE: usize> BarView<'_, SIZE> {
    /// Reads the `T` at `OFFSET`.
    #[inline(always)]
    pub fn read<T: MmioValue, const OFFSET: usize>(&self) -> T {
        match self.access {
            ViewAccess::Mapped(map) => map.read::<T, OFFSET>(),
            ViewAccess::Emulated(port) => view_read::<T, SIZE, OFFSET>(port),
        }
    }

    /// Writes the `T` at `OFFSET`.
    #[inline(always)]
    pub fn write<T: MmioValue, const OFFSET: usize>(&self, value: T) {
        match self.access {
            ViewAccess::Mapped(map) => map.write::<T, OFFSET>(value),
            ViewAccess::Emulated(port) => view_write::<T, SIZE, OFFSET>(port, value),
        }
    }

    /// Reads the 32-bit register at `OFFSET`.
    #[inline(always)]
    pub fn read32<const OFFSET: usize>(&self) -> u32 {
        self.read::<u32, OFFSET>()
    }

    /// Writes the 32-bit register at `OFFSET`.
    #[inline(always)]
    pub fn write32<const OFFSET: usize>(&self, value: u32) {
        self.write::<u32, OFFSET>(value);
    }

    /// Reads the 64-bit register at `OFFSET`.
    #[inline(always)]
    pub fn read64<const OFFSET: usize>(&self) -> u64 {
        self.read::<u64, OFFSET>()
    }

    /// Writes the 64-bit register at `OFFSET`.
    #[inline(always)]
    pub fn write64<const OFFSET: usize>(&self, value: u64) {
        self.write::<u64, OFFSET>(value);
    }
}

/// A view's read from a device model: all-ones once revoked.
#[inline(never)]
fn view_read<T: MmioValue, const SIZE: usize, const OFFSET: usize>(port: &dyn BarPort) -> T {
    const {
        assert!(
            OFFSET.is_multiple_of(std::mem::size_of::<T>())
                && OFFSET + std::mem::size_of::<T>() <= SIZE,
            "register outside the BAR view or misaligned"
        )
    };
    let width = std::mem::size_of::<T>();
    T::from_u64_truncating(port.read(OFFSET as u64, width).unwrap_or(u64::MAX))
}

/// A view's write to a device model: dropped once revoked.
#[inline(never)]
fn view_write<T: MmioValue, const SIZE: usize, const OFFSET: usize>(port: &dyn BarPort, value: T) {
    const {
        assert!(
            OFFSET.is_multiple_of(std::mem::size_of::<T>())
                && OFFSET + std::mem::size_of::<T>() <= SIZE,
            "register outside the BAR view or misaligned"
        )
    };
    let _ = port.write(OFFSET as u64, std::mem::size_of::<T>(), value.to_u64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    /// A file standing in for a device region: both access paths must agree on it.
    fn region(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file.flush().unwrap();
        let handle = Arc::new(file.reopen().unwrap());
        (file, handle)
    }

    fn file_region(handle: &Arc<File>) -> FileRegion {
        FileRegion {
            device: Arc::clone(handle),
            offset: 0,
        }
    }

    fn through_file(
        index: u8,
        len: u64,
        handle: &Arc<File>,
        revoked: Option<Arc<AtomicBool>>,
    ) -> Bar {
        Bar::windowed(
            index,
            len,
            true,
            Vec::new(),
            file_region(handle),
            Arc::new(()),
            revoked,
        )
    }

    fn both_bars(bytes: &[u8]) -> (tempfile::NamedTempFile, Vec<Bar>) {
        let (file, handle) = region(bytes);
        let map = Mapping::map_shared(handle.as_fd(), 0, bytes.len(), true).unwrap();
        let owner: Arc<dyn KeepAlive> = Arc::new(());
        let bars = vec![
            Bar::mapped(0, map, Arc::clone(&owner), None),
            through_file(0, bytes.len() as u64, &handle, None),
        ];
        (file, bars)
    }

    #[test]
    fn mapped_and_file_access_agree() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let (_file, bars) = both_bars(&bytes);
        for bar in &bars {
            assert_eq!(bar.read8(1).unwrap(), 1);
            assert_eq!(bar.read16(2).unwrap(), 0x0302);
            assert_eq!(bar.read32(4).unwrap(), 0x0706_0504);
            assert_eq!(bar.read64(8).unwrap(), 0x0f0e_0d0c_0b0a_0908);
        }
        bars[0].write32(16, 0xcafe_f00d).unwrap();
        assert_eq!(bars[1].read32(16).unwrap(), 0xcafe_f00d);
        bars[1].write64(24, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(bars[0].read64(24).unwrap(), 0x1122_3344_5566_7788);
        assert!(bars[0].is_mapped() && !bars[1].is_mapped());
    }

    #[test]
    fn revoked_bars_refuse_every_access() {
        let (_file, handle) = region(&[0u8; 16]);
        let flag = Arc::new(AtomicBool::new(false));
        let bar = through_file(2, 16, &handle, Some(Arc::clone(&flag)));
        bar.write32(0, 7).unwrap();
        flag.store(true, Ordering::SeqCst);
        assert!(matches!(bar.read32(0), Err(MmioError::Revoked { bar: 2 })));
        assert!(matches!(
            bar.write32(0, 1),
            Err(MmioError::Revoked { bar: 2 })
        ));
    }

    #[test]
    fn views_need_a_mapped_bar_of_the_size_and_see_revocation() {
        let (_file, bars) = both_bars(&(0u8..64).collect::<Vec<_>>());
        let view = bars[0].view::<64>().unwrap();
        assert_eq!(view.read32::<8>(), 0x0b0a_0908);
        view.write64::<56>(7);
        assert_eq!(bars[1].read64(56).unwrap(), 7);
        assert!(
            matches!(bars[0].view::<8192>(), Err(MmioError::NoView { .. })),
            "larger than the mapping"
        );
        assert!(
            matches!(bars[1].view::<64>(), Err(MmioError::NoView { .. })),
            "not mapped"
        );
        bars[0].revoked.store(true, Ordering::SeqCst);
        assert!(
            matches!(bars[0].view::<64>(), Err(MmioError::Revoked { .. })),
            "checked when the view is taken"
        );
    }

    #[test]
    fn out_of_bounds_and_misaligned_are_errors_on_both_paths() {
        let (_file, bars) = both_bars(&[0u8; 16]);
        for bar in &bars {
            assert!(matches!(bar.read32(16), Err(MmioError::OutOfBounds { .. })));
            assert!(matches!(bar.read64(12), Err(MmioError::OutOfBounds { .. })));
            assert!(matches!(
                bar.read32(u64::MAX - 1),
                Err(MmioError::OutOfBounds { .. })
            ));
            assert!(matches!(
                bar.write16(3, 1),
                Err(MmioError::Misaligned { .. })
            ));
            assert!(matches!(
                bar.write8(16, 1),
                Err(MmioError::OutOfBounds { .. })
            ));
        }
        let msg = bars[0].read32(16).unwrap_err().to_string();
        assert!(
            msg.contains("offset 0x10") && msg.contains("0x10 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn one_writable_window_over_the_whole_bar_is_the_mapped_fast_path() {
        let (_file, handle) = region(&[0u8; 4096]);
        let map = Mapping::map_shared(handle.as_fd(), 0, 4096, true).unwrap();
        let bar = Bar::windowed(
            0,
            4096,
            true,
            vec![(0, map)],
            file_region(&handle),
            Arc::new(()),
            None,
        );
        assert!(matches!(bar.access, Access::Mapped(_)));
        assert!(bar.is_mapped() && bar.is_writable());
        assert_eq!(bar.mapped_ranges(), vec![0..4096]);
    }

    #[test]
    fn writes_to_a_read_only_bar_are_refused_on_both_paths() {
        let (_file, handle) = region(&(0u8..16).collect::<Vec<_>>());
        let map = Mapping::map_shared(handle.as_fd(), 0, 16, false).unwrap();
        let mapped = Bar::windowed(
            3,
            16,
            false,
            vec![(0, map)],
            file_region(&handle),
            Arc::new(()),
            None,
        );
        let unmapped = Bar::windowed(
            3,
            16,
            false,
            Vec::new(),
            file_region(&handle),
            Arc::new(()),
            None,
        );
        assert!(mapped.is_mapped() && !unmapped.is_mapped());
        for bar in [&mapped, &unmapped] {
            assert!(!bar.is_writable());
            assert_eq!(bar.read32(4).unwrap(), 0x0706_0504);
            let err = bar.write32(4, 1).unwrap_err();
            assert!(
                matches!(
                    err,
                    MmioError::ReadOnly {
                        bar: 3,
                        offset: 4,
                        width: 4
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("read-only"), "{err}");
            // Bounds and alignment are still reported as such.
            assert!(matches!(
                bar.write32(16, 1),
                Err(MmioError::OutOfBounds { .. })
            ));
            assert!(matches!(bar.view::<16>(), Err(MmioError::NoView { .. })));
        }
        assert_eq!(
            mapped.read32(4).unwrap(),
            0x0706_0504,
            "nothing was written"
        );
    }

    #[test]
    fn sparse_windows_are_mapped_and_the_rest_goes_through_the_file() {
        // The window is mapped from one file and the BAR's file is another, so
        // each access shows which way it went.
        let page = 4096;
        let (_window_file, window_handle) = region(&vec![0xaa; page]);
        let (_bar_file, bar_handle) = region(&vec![0x55; 3 * page]);
        let window = Mapping::map_shared(window_handle.as_fd(), 0, page, true).unwrap();
        let bar = Bar::windowed(
            1,
            3 * page as u64,
            true,
            vec![(page as u64, window)],
            file_region(&bar_handle),
            Arc::new(()),
            None,
        );
        assert!(!bar.is_mapped());
        assert_eq!(bar.mapped_ranges(), vec![4096..8192]);
        assert_eq!(
            bar.read32(0).unwrap(),
            0x5555_5555,
            "before the window: the file"
        );
        assert_eq!(
            bar.read32(4096).unwrap(),
            0xaaaa_aaaa,
            "inside: the mapping"
        );
        assert_eq!(bar.read32(8188).unwrap(), 0xaaaa_aaaa);
        assert_eq!(bar.read32(8192).unwrap(), 0x5555_5555, "after: the file");
        bar.write64(4096 + 8, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(
            window_handle.read_at(&mut [0u8; 1], 4096 + 8).unwrap(),
            0,
            "past the window file's end"
        );
        let mut eight = [0u8; 8];
        window_handle.read_exact_at(&mut eight, 8).unwrap();
        assert_eq!(
            u64::from_le_bytes(eight),
            0x0102_0304_0506_0708,
            "written through the window"
        );
        bar.write32(12, 0xdead_beef).unwrap();
        let mut four = [0u8; 4];
        bar_handle.read_exact_at(&mut four, 12).unwrap();
        assert_eq!(
            u32::from_le_bytes(four),
            0xdead_beef,
            "written through the file"
        );
        // No view: the start of the BAR is not mapped.
        assert!(matches!(bar.view::<16>(), Err(MmioError::NoView { .. })));
        assert!(matches!(
            bar.read32(3 * 4096),
            Err(MmioError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn a_window_at_the_start_gives_views_and_bad_windows_are_dropped() {
        let page = 4096;
        let (_file, handle) = region(&vec![0u8; 2 * page]);
        let first = Mapping::map_shared(handle.as_fd(), 0, page, true).unwrap();
        let overlapping = Mapping::map_shared(handle.as_fd(), 0, page, true).unwrap();
        let outside = Mapping::map_shared(handle.as_fd(), 0, page, true).unwrap();
        let bar = Bar::windowed(
            0,
            2 * page as u64,
            true,
            vec![(0, first), (2048, overlapping), (2 * page as u64, outside)],
            file_region(&handle),
            Arc::new(()),
            None,
        );
        assert_eq!(bar.mapped_ranges(), vec![0..4096]);
        let view = bar.view::<64>().unwrap();
        view.write32::<0>(9);
        assert_eq!(bar.read32(0).unwrap(), 9);
        assert!(matches!(bar.view::<8192>(), Err(MmioError::NoView { .. })));
    }
}
