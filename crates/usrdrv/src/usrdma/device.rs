//! A PCI function opened through the usrdma module: its node, BARs,
//! configuration space, reset and revocation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use super::UsrdmaError;
use crate::mmio::Bar;
use crate::pci::{PciAddress, Sysfs, config};
use crate::revocation::{DeviceRevocation, Revocation};
use crate::sys::eventfd::{EventFd, wait_hangup};
use crate::sys::mmap::Mapping;
use crate::sys::usrdma_ioctl as ioctl;

/// The name the module's PCI driver registers.
pub const USRDMA_DRIVER: &str = "usrdma";

/// The device node of the function at `address`.
pub fn node_path(address: PciAddress) -> PathBuf {
    PathBuf::from(format!("/dev/usrdma/{address}"))
}

/// The state shared by a device and everything taken from it.
#[derive(Debug)]
struct Shared {
    /// Dropped first: stops the watcher before the node closes.
    revocation: DeviceRevocation,
    file: File,
    address: PciAddress,
    config: PathBuf,
    bar_size: [u64; 6],
    /// The largest buffer the module can give (0: a module before ABI 5).
    max_buf_size: u64,
    /// Large buffers come from a CMA area.
    cma: bool,
}

/// A PCI function bound to the usrdma module, opened through its node
/// `/dev/usrdma/DDDD:BB:DD.F`: the low-level handle under
/// [`crate::Device`] on machines without an IOMMU.
///
/// The module allows one open file per function; cloning this handle shares
/// it. Opening leaves bus mastering off (and resets the function when it has
/// a reset method). Closing the last clone (and dropping every BAR and
/// buffer taken from it) releases the device: bus mastering off,
/// interrupts freed, the function reset if it can be; mappings of the
/// caller's memory undone and non-persistent buffers freed, or, when the
/// function could not be reset, kept by the module until nothing started
/// before can land in them (see [`crate::Device::quiesce`]).
///
/// ```no_run
/// use usrdrv::usrdma;
///
/// let device = usrdma::Device::open("0000:00:03.0".parse()?)?;
/// let bar0 = device.bar(0)?;
/// println!("id {:#010x}", bar0.read32(0)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Device {
    shared: Arc<Shared>,
}

impl Device {
    /// Opens the function at `address`, which must be bound to usrdma.
    pub fn open(address: PciAddress) -> Result<Self, UsrdmaError> {
        Self::open_with(&Sysfs::system(), address)
    }

    pub(crate) fn open_with(sysfs: &Sysfs, address: PciAddress) -> Result<Self, UsrdmaError> {
        let driver = sysfs.driver(address)?;
        if driver.as_deref() != Some(USRDMA_DRIVER) {
            return Err(UsrdmaError::NotBound { address, driver });
        }
        let path = node_path(address);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOENT) => UsrdmaError::NoNode { path: path.clone() },
                // With CAP_SYS_RAWIO, EPERM is the module's lockdown check.
                Some(libc::EPERM) if has_cap_sys_rawio() => {
                    UsrdmaError::LockedDown { path: path.clone() }
                }
                Some(libc::EPERM | libc::EACCES) => UsrdmaError::Permission { path: path.clone() },
                Some(libc::EBUSY) => UsrdmaError::Busy {
                    address,
                    path: path.clone(),
                },
                Some(libc::ENODEV) => UsrdmaError::Revoked { address },
                _ => UsrdmaError::Sys {
                    op: "opening the usrdma node",
                    address,
                    source,
                },
            })?;
        let info = ioctl::get_info(file.as_fd()).map_err(|source| UsrdmaError::Sys {
            op: "USRDMA_GET_INFO",
            address,
            source,
        })?;
        if info.api_version < ioctl::MIN_API_VERSION {
            return Err(UsrdmaError::ApiVersion {
                found: info.api_version,
                expected: ioctl::MIN_API_VERSION,
            });
        }
        let revocation = DeviceRevocation::new(file.try_clone().ok().and_then(|watched| {
            Revocation::watch(
                move |stop| wait_hangup(watched.as_fd(), stop).unwrap_or(false),
                || {},
            )
        }));
        Ok(Self {
            shared: Arc::new(Shared {
                revocation,
                file,
                address,
                config: sysfs.device_dir(address).join("config"),
                bar_size: info.bar_size,
                max_buf_size: info.max_buf_size,
                cma: info.info_flags & ioctl::INFO_CMA != 0,
            }),
        })
    }

    /// The largest DMA buffer the module can allocate for this device on
    /// this kernel, in bytes, or `None` from a module older than ABI 5
    /// (which said 1 GiB and gave 4 MiB). Without an IOMMU and without CMA
    /// this is one block of the page allocator (4 MiB on x86); larger DMA
    /// memory is the caller's own, mapped with `map_dma` (hugetlb pages for
    /// large contiguous runs).
    pub fn max_buffer_size(&self) -> Option<u64> {
        (self.shared.max_buf_size != 0).then_some(self.shared.max_buf_size)
    }

    /// Whether the kernel takes large buffers from a CMA area.
    pub(crate) fn cma(&self) -> bool {
        self.shared.cma
    }

    /// The function's PCI address.
    pub fn address(&self) -> PciAddress {
        self.shared.address
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.shared.file.as_fd()
    }

    /// Whether the kernel has taken the device back (unbind, hot-unplug):
    /// everything fails from then on; drop every handle.
    pub fn is_revoked(&self) -> bool {
        self.shared.revocation.is_revoked()
    }

    /// The event waits poll to learn of revocation.
    pub(crate) fn revocation_event(&self) -> Option<&EventFd> {
        self.shared.revocation.event()
    }

    /// Records a revocation seen by a waiter or a call that got `ENODEV`.
    pub(crate) fn mark_revoked(&self) {
        self.shared.revocation.mark();
    }

    /// The error for a failed call: revocation when the module said `ENODEV`.
    pub(crate) fn error(&self, op: &'static str, source: io::Error) -> UsrdmaError {
        if source.raw_os_error() == Some(libc::ENODEV) {
            self.mark_revoked();
            UsrdmaError::Revoked {
                address: self.address(),
            }
        } else {
            UsrdmaError::Sys {
                op,
                address: self.address(),
                source,
            }
        }
    }

    /// Memory BAR `index` (`0..=5`), mapped for register access.
    pub fn bar(&self, index: u8) -> Result<Bar, UsrdmaError> {
        let address = self.address();
        let size = self
            .shared
            .bar_size
            .get(usize::from(index))
            .copied()
            .unwrap_or(0);
        let len = usize::try_from(size).unwrap_or(0);
        if len == 0 {
            return Err(UsrdmaError::NoSuchBar {
                address,
                bar: index,
            });
        }
        if self.is_revoked() {
            return Err(UsrdmaError::Revoked { address });
        }
        let offset = u64::from(index) << ioctl::BAR_SHIFT;
        let mapping = Mapping::map_shared(self.fd(), offset, len, true)
            .map_err(|e| self.error("mapping a BAR", e))?;
        Ok(Bar::mapped(
            index,
            mapping,
            self.shared.clone(),
            self.shared.revocation.flag(),
        ))
    }

    /// The number of address bits the module currently keeps device
    /// addresses under.
    pub fn dma_mask_bits(&self) -> Result<u32, UsrdmaError> {
        ioctl::get_info(self.fd())
            .map(|info| info.dma_mask_bits)
            .map_err(|e| self.error("USRDMA_GET_INFO", e))
    }

    /// Tells the module how many address bits the device drives; buffers and
    /// mappings from then on lie below `2^bits`.
    pub fn set_dma_mask(&self, bits: u32) -> Result<(), UsrdmaError> {
        ioctl::set_dma_mask(self.fd(), bits).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL | libc::EIO) => UsrdmaError::BadMask { bits },
            _ => self.error("USRDMA_SET_DMA_MASK", e),
        })
    }

    /// Reads configuration space at `offset` into `buf` (through sysfs).
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), UsrdmaError> {
        let config = File::open(&self.shared.config)
            .map_err(|e| self.error("opening the configuration space in sysfs", e))?;
        config
            .read_exact_at(buf, offset)
            .map_err(|e| self.error("reading configuration space", e))
    }

    /// Writes `buf` to configuration space at `offset` (through sysfs).
    /// Writes that would change the I/O or memory decode bits of the command
    /// register, a BAR (which the module maps at the address it had at bind)
    /// or the expansion ROM BAR are refused ([`UsrdmaError::ProtectedConfig`],
    /// which says what to use instead); other bits of the command register,
    /// such as bus master, may change.
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), UsrdmaError> {
        let read_command = || {
            let mut command = [0u8; 2];
            self.read_config(0x04, &mut command)?;
            Ok(u16::from_le_bytes(command))
        };
        config::filtered_write(offset, buf, read_command, || {
            self.write_config_raw(offset, buf)
        })
    }

    /// Writes `buf` to configuration space at `offset` without refusing
    /// anything ([`Device::write_config`] says what it refuses).
    ///
    /// # Safety
    ///
    /// The caller guarantees that for as long as the write's effect lasts:
    ///
    /// - if it clears I/O or memory decoding (command register bits 0-1), no
    ///   register access is made through a [`Bar`] or `BarView` of this device
    ///   (a mapped access would fault with `SIGBUS`) until the bits are set
    ///   again;
    /// - if it changes a base address register or the expansion ROM BAR, the
    ///   original value is written back before any access through a `Bar` of
    ///   this device, and the address written decodes to no other device or
    ///   memory in the meantime: the module's
    ///   mappings of the BAR keep pointing at the old bus address, so an access
    ///   through them reaches whatever decodes there (another device, or RAM).
    // `unsafe` for its contract only: the body is safe code (no system call).
    #[allow(unsafe_code)]
    pub unsafe fn write_config_unchecked(
        &self,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), UsrdmaError> {
        self.write_config_raw(offset, buf)
    }

    /// The write, unfiltered (the safe core of `write_config_unchecked`).
    pub(crate) fn write_config_raw(&self, offset: u64, buf: &[u8]) -> Result<(), UsrdmaError> {
        let config = OpenOptions::new()
            .write(true)
            .open(&self.shared.config)
            .map_err(|e| self.error("opening the configuration space in sysfs", e))?;
        config
            .write_all_at(buf, offset)
            .map_err(|e| self.error("writing configuration space", e))
    }

    /// The whole configuration space: 256 bytes, or 4096 for PCI Express.
    pub fn config_space(&self) -> Result<Vec<u8>, UsrdmaError> {
        std::fs::read(&self.shared.config).map_err(|e| self.error("reading configuration space", e))
    }

    /// Tells the module that nothing a previous owner started still runs in
    /// the device (the driver stopped or drained it with bus mastering off),
    /// so the memory it kept back from that owner is freed now instead of
    /// after its grace period. Refused while bus mastering is on
    /// ([`UsrdmaError::BusMasterOn`]).
    pub(crate) fn quiesced(&self) -> Result<(), UsrdmaError> {
        ioctl::quiesced(self.fd()).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => UsrdmaError::BusMasterOn {
                address: self.address(),
                source: e,
            },
            _ => self.error("USRDMA_QUIESCED", e),
        })
    }

    /// Resets the function (the kernel saves and restores its configuration).
    pub fn reset(&self) -> Result<(), UsrdmaError> {
        ioctl::reset(self.fd()).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTTY) => UsrdmaError::ResetUnsupported {
                address: self.address(),
            },
            _ => self.error("USRDMA_RESET", e),
        })
    }
}

/// `CAP_SYS_RAWIO`, which the module requires of openers.
const CAP_SYS_RAWIO: u32 = 17;

/// Whether this process has `CAP_SYS_RAWIO` in its effective set: then an
/// `EPERM` from opening the node is the module's lockdown check.
fn has_cap_sys_rawio() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(cap_eff)
        .is_some_and(|caps| caps & (1 << CAP_SYS_RAWIO) != 0)
}

/// The effective capability set in `/proc/PID/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}
