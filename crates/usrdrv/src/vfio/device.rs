//! A PCI function opened through VFIO: its regions (BARs, config space) and reset.

use std::ffi::CString;
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_BAR5_REGION_INDEX,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};

use super::group::usable_group;
use super::region;
use super::release::Release;
use super::revocation;
use super::{Container, Group, VfioError};
use crate::mmio::{Bar, FileRegion};
use crate::pci::{PciAddress, Sysfs, config};
use crate::revocation::{DeviceRevocation, ReleasePolicy};
use crate::sys::eventfd::EventFd;
use crate::sys::mmap::Mapping;
use crate::sys::vfio_ioctl;

/// What VFIO says about one region of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region index (`0..=5` for BARs, 7 for config space).
    pub index: u32,
    /// Its size in bytes (0 when the BAR is not implemented).
    pub size: u64,
    /// Where it lives in the device file (for `pread`/`pwrite`/`mmap`).
    pub offset: u64,
    flags: u32,
}

impl RegionInfo {
    /// Whether the region can be read.
    pub fn readable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_READ != 0
    }

    /// Whether the region can be written.
    pub fn writable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_WRITE != 0
    }

    /// Whether the region (or part of it) can be mapped into the process.
    pub fn mappable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

/// The state shared by a device and the BARs taken from it.
#[derive(Debug)]
struct Shared {
    /// Dropped first: stops the watcher before the descriptor closes.
    revocation: DeviceRevocation,
    /// How the device is given back when the kernel asks.
    release: Arc<Release>,
    file: Arc<File>,
    address: PciAddress,
    flags: u32,
    num_regions: u32,
    num_irqs: u32,
    /// Keeps the group (and so the container) open while the device is.
    group: Arc<Group>,
}

/// One PCI function opened through VFIO.
///
/// The device keeps its [`Group`] and [`Container`] alive, and so does every
/// [`Bar`] taken from it: drop them in any order.
#[derive(Debug, Clone)]
pub struct Device {
    shared: Arc<Shared>,
}

impl Device {
    /// Opens the function at `address`, which must be bound to vfio-pci, in a
    /// container of its own.
    ///
    /// Finds the IOMMU group in sysfs, checks every member of the group is bound
    /// to vfio-pci or to no driver (naming those that are not), opens a new
    /// container with the Type1 v2 IOMMU, and gets the device descriptor.
    pub fn open(address: PciAddress) -> Result<Self, VfioError> {
        let group = usable_group(&Sysfs::system(), address)?;
        let container = Container::open()?;
        let group = Group::open(group, &container)?;
        Self::open_in_group(&group, address)
    }

    /// Opens the function at `address` in an already open `group`.
    pub fn open_in_group(group: &Arc<Group>, address: PciAddress) -> Result<Self, VfioError> {
        let target = || format!("/dev/vfio/{}", group.id());
        let get_fd_error = |source| VfioError::Ioctl {
            op: "VFIO_GROUP_GET_DEVICE_FD",
            target: format!("{} for {address}", target()),
            source,
        };
        // A formatted address never holds a NUL byte; the error path is for form's sake.
        let name = CString::new(address.to_string())
            .map_err(|e| get_fd_error(std::io::Error::other(e)))?;
        let fd = vfio_ioctl::group_get_device_fd(group.as_fd(), &name).map_err(get_fd_error)?;
        let file = Arc::new(File::from(fd));
        let info =
            vfio_ioctl::device_get_info(file.as_fd()).map_err(|source| VfioError::Ioctl {
                op: "VFIO_DEVICE_GET_INFO",
                target: address.to_string(),
                source,
            })?;
        if info.flags & VFIO_DEVICE_FLAGS_PCI == 0 {
            return Err(VfioError::NotPci { address });
        }
        let release = Release::new(Arc::clone(&file), Arc::clone(group)).map_err(|source| {
            VfioError::Ioctl {
                op: "eventfd",
                target: format!("the release event of {address}"),
                source,
            }
        })?;
        let release = Arc::new(release);
        let revocation = DeviceRevocation::new(revocation::arm(file.as_fd(), Arc::clone(&release)));
        Ok(Self {
            shared: Arc::new(Shared {
                revocation,
                release,
                file,
                address,
                flags: info.flags,
                num_regions: info.num_regions,
                num_irqs: info.num_irqs,
                group: Arc::clone(group),
            }),
        })
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.shared.address
    }

    /// Whether the kernel has asked for the device back (unbind, hot-unplug).
    /// Register accesses fail from then on; drop every handle to the device so
    /// the kernel can complete the unbind.
    pub fn is_revoked(&self) -> bool {
        self.shared.revocation.is_revoked()
    }

    /// Fails with [`VfioError::Revoked`] once the device was revoked.
    fn live(&self) -> Result<(), VfioError> {
        if self.is_revoked() {
            return Err(VfioError::Revoked {
                address: self.address(),
            });
        }
        Ok(())
    }

    /// `error`, or [`VfioError::Revoked`] if the device was revoked meanwhile
    /// (its descriptor then fails every call).
    fn or_revoked(&self, error: VfioError) -> VfioError {
        match self.live() {
            Ok(()) => error,
            Err(revoked) => revoked,
        }
    }

    /// Sets what happens when the kernel asks for the device back (see
    /// [`ReleasePolicy`]; the default lets go at once).
    pub fn set_release_policy(&self, policy: ReleasePolicy) {
        self.shared.release.set_policy(policy);
    }

    /// Whether the kernel has asked for the device back: during a grace
    /// period ([`ReleasePolicy::Grace`]) the device still works; finish or
    /// abandon in-flight I/O and call [`Device::release`].
    pub fn release_requested(&self) -> bool {
        self.shared.release.requested() || self.is_revoked()
    }

    /// Gives the device back now if the kernel has asked (ending a grace
    /// period), or at once when it asks later, whatever the policy.
    pub fn release(&self) {
        self.shared.release.release_now();
    }

    /// The event a wait polls to learn of revocation, if the kernel offers it.
    pub(crate) fn revocation_event(&self) -> Option<&EventFd> {
        self.shared.revocation.event()
    }

    /// Records a revocation a waiter saw.
    pub(crate) fn mark_revoked(&self) {
        self.shared.revocation.mark();
    }

    /// The group the device belongs to.
    pub fn group(&self) -> &Arc<Group> {
        &self.shared.group
    }

    /// How many regions VFIO exposes (BARs, ROM, config space, ...).
    pub fn num_regions(&self) -> u32 {
        self.shared.num_regions
    }

    /// How many interrupt types VFIO exposes (INTx, MSI, MSI-X, error, request).
    pub fn num_irqs(&self) -> u32 {
        self.shared.num_irqs
    }

    /// Whether VFIO can reset the device ([`Device::reset`]).
    pub fn supports_reset(&self) -> bool {
        self.shared.flags & VFIO_DEVICE_FLAGS_RESET != 0
    }

    /// What the kernel says about interrupts of `kind` on this device.
    pub fn irq_info(
        &self,
        kind: crate::irq::IrqKind,
    ) -> Result<crate::irq::IrqInfo, crate::irq::IrqError> {
        crate::irq::IrqControl::info(self, kind)
    }

    /// What VFIO says about region `index`.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo, VfioError> {
        let region = self.region(index)?;
        Ok(RegionInfo {
            index: region.index,
            size: region.size,
            offset: region.offset,
            flags: region.flags,
        })
    }

    /// Region `index` with its capability chain parsed.
    fn region(&self, index: u32) -> Result<region::Region, VfioError> {
        let op = "VFIO_DEVICE_GET_REGION_INFO";
        let target = || format!("{} region {index}", self.address());
        self.live()?;
        let bytes = vfio_ioctl::device_get_region_info_caps(self.shared.file.as_fd(), index)
            .map_err(|source| {
                self.or_revoked(VfioError::Ioctl {
                    op,
                    target: target(),
                    source,
                })
            })?;
        region::parse(&bytes).map_err(|why| VfioError::BadReply {
            op,
            target: target(),
            why,
        })
    }

    /// BAR `index` (`0..=5`) ready for register access: mapped into the process
    /// where VFIO allows it (all of it, or the areas its sparse-mmap capability
    /// lists), and reached through the device file elsewhere, or everywhere when
    /// mapping fails ([`Bar::is_mapped`] says which). A BAR VFIO reports
    /// read-only refuses writes with [`crate::mmio::MmioError::ReadOnly`].
    pub fn bar(&self, index: u8) -> Result<Bar, VfioError> {
        let address = self.address();
        let no_bar = |why| VfioError::NoSuchBar {
            address,
            bar: index,
            why,
        };
        if u32::from(index) > VFIO_PCI_BAR5_REGION_INDEX {
            return Err(no_bar("BARs are numbered 0 to 5"));
        }
        let region = self.region(index.into())?;
        let info = RegionInfo {
            index: region.index,
            size: region.size,
            offset: region.offset,
            flags: region.flags,
        };
        if info.size == 0 {
            return Err(no_bar("the device does not implement it"));
        }
        if !info.readable() {
            return Err(no_bar("VFIO does not allow reading it (an I/O port BAR?)"));
        }
        let windows = if info.mappable() {
            let areas = region
                .sparse
                .unwrap_or_else(|| std::iter::once(0..info.size).collect());
            self.map_areas(&info, &areas)
        } else {
            Vec::new()
        };
        Ok(Bar::windowed(
            index,
            info.size,
            info.writable(),
            windows,
            FileRegion {
                device: Arc::clone(&self.shared.file),
                offset: info.offset,
            },
            self.shared.clone(),
            self.shared.revocation.flag(),
        ))
    }

    /// Maps each of `areas` (offset ranges in the region) that can be mapped;
    /// the others are left to the device file.
    fn map_areas(&self, region: &RegionInfo, areas: &[Range<u64>]) -> Vec<(u64, Mapping)> {
        areas
            .iter()
            .filter_map(|area| {
                let len = usize::try_from(area.end - area.start).ok()?;
                let at = region.offset.checked_add(area.start)?;
                Mapping::map_shared_registered(
                    self.shared.release.bars(),
                    self.shared.file.as_fd(),
                    at,
                    len,
                    region.writable(),
                )
                .ok()
                .map(|map| (area.start, map))
            })
            .collect()
    }

    /// Reads `buf.len()` bytes of PCI configuration space from `offset`.
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<(), VfioError> {
        let region = self.region_info(VFIO_PCI_CONFIG_REGION_INDEX)?;
        self.shared
            .file
            .read_exact_at(buf, region.offset + offset)
            .map_err(|source| self.config_error("config space read", offset, source))
    }

    /// Writes `buf` to PCI configuration space at `offset` (VFIO filters what a
    /// user may change). Writes that would change the I/O or memory decode
    /// bits of the command register, a BAR or the expansion ROM BAR are refused
    /// ([`VfioError::ProtectedConfig`], which says what to use instead); other
    /// bits of the command register, such as bus master, may change.
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<(), VfioError> {
        let read_command = || {
            let mut command = [0u8; 2];
            self.read_config(0x04, &mut command)?;
            Ok(u16::from_le_bytes(command))
        };
        config::filtered_write(offset, buf, read_command, || {
            self.write_config_raw(offset, buf)
        })
    }

    /// Writes `buf` to PCI configuration space at `offset` without refusing
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
    ///   memory in the meantime.
    // `unsafe` for its contract only: the body is safe code (no system call).
    #[allow(unsafe_code)]
    pub unsafe fn write_config_unchecked(&self, offset: u64, buf: &[u8]) -> Result<(), VfioError> {
        self.write_config_raw(offset, buf)
    }

    /// The write, unfiltered (the safe core of `write_config_unchecked`).
    pub(crate) fn write_config_raw(&self, offset: u64, buf: &[u8]) -> Result<(), VfioError> {
        let region = self.region_info(VFIO_PCI_CONFIG_REGION_INDEX)?;
        self.shared
            .file
            .write_all_at(buf, region.offset + offset)
            .map_err(|source| self.config_error("config space write", offset, source))
    }

    fn config_error(&self, op: &'static str, offset: u64, source: std::io::Error) -> VfioError {
        self.or_revoked(VfioError::Ioctl {
            op,
            target: format!("{} at offset {offset:#x}", self.address()),
            source,
        })
    }

    /// Resets the device (function-level reset or whatever VFIO can do).
    pub fn reset(&self) -> Result<(), VfioError> {
        if !self.supports_reset() {
            return Err(VfioError::ResetUnsupported {
                address: self.address(),
            });
        }
        self.live()?;
        vfio_ioctl::device_reset(self.shared.file.as_fd()).map_err(|source| {
            self.or_revoked(VfioError::Ioctl {
                op: "VFIO_DEVICE_RESET",
                target: self.address().to_string(),
                source,
            })
        })
    }
}

/// The VFIO device descriptor, for ioctls usrdrv does not wrap (and for raw
/// baselines in benchmarks). Closing it is the device's job.
impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.file.as_fd()
    }
}
