//! The VFIO container: one IOMMU address space shared by the groups attached to it.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vfio_bindings::bindings::vfio::{VFIO_API_VERSION, VFIO_TYPE1v2_IOMMU};

use super::VfioError;
use crate::sys::vfio_ioctl;

/// The container device node.
const CONTAINER_PATH: &str = "/dev/vfio/vfio";

/// A VFIO container (`/dev/vfio/vfio`): one IOMMU address space.
///
/// Groups attached to the same container share its IOVA space, so devices in
/// them can DMA to the same buffers. The Type1 v2 IOMMU model is selected when
/// the first group is attached.
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
    groups: Mutex<Attached>,
    /// Set when the last attached group was detached (a revoked device given
    /// back): the kernel then dropped every IOMMU mapping of the container.
    mappings_gone: AtomicBool,
}

/// Which groups are attached, as far as usrdrv attached and detached them.
#[derive(Debug, Default)]
struct Attached {
    /// Whether `VFIO_SET_IOMMU` has been done (it must follow the first group).
    iommu_set: bool,
    /// Groups attached and not detached since.
    count: usize,
}

impl Container {
    /// Opens a new container and checks the kernel speaks VFIO API version 0 with
    /// the Type1 v2 IOMMU backend.
    pub fn open() -> Result<Arc<Self>, VfioError> {
        let path = Path::new(CONTAINER_PATH);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| VfioError::open(path.to_owned(), source))?;
        let fd = OwnedFd::from(file);
        let ioctl_error = |op, source| VfioError::Ioctl {
            op,
            target: CONTAINER_PATH.to_owned(),
            source,
        };
        let version = vfio_ioctl::get_api_version(fd.as_fd())
            .map_err(|e| ioctl_error("VFIO_GET_API_VERSION", e))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(VfioError::ApiVersion { found: version });
        }
        let type1v2 = vfio_ioctl::check_extension(fd.as_fd(), VFIO_TYPE1v2_IOMMU)
            .map_err(|e| ioctl_error("VFIO_CHECK_EXTENSION", e))?;
        if !type1v2 {
            return Err(VfioError::NoType1v2);
        }
        Ok(Arc::new(Self {
            fd,
            groups: Mutex::default(),
            mappings_gone: AtomicBool::new(false),
        }))
    }

    fn groups(&self) -> MutexGuard<'_, Attached> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a group attached with `VFIO_GROUP_SET_CONTAINER`.
    pub(crate) fn group_attached(&self) {
        self.groups().count += 1;
    }

    /// Records a group detached with `VFIO_GROUP_UNSET_CONTAINER`: when none
    /// is left, the kernel has released the IOMMU and every mapping in it.
    pub(crate) fn group_detached(&self) {
        let mut groups = self.groups();
        groups.count = groups.count.saturating_sub(1);
        if groups.count == 0 {
            self.mappings_gone.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the kernel dropped every mapping (its last group detached after
    /// a revocation): nothing is left to unmap, and nothing can be mapped.
    pub(crate) fn mappings_gone(&self) -> bool {
        self.mappings_gone.load(Ordering::SeqCst)
    }

    /// Selects the Type1 v2 IOMMU once a group is attached; later calls do nothing.
    pub(crate) fn ensure_iommu(&self, group: u32) -> Result<(), VfioError> {
        let mut groups = self.groups();
        if groups.iommu_set {
            return Ok(());
        }
        vfio_ioctl::set_iommu(self.fd.as_fd(), VFIO_TYPE1v2_IOMMU).map_err(|source| {
            if source.raw_os_error() == Some(libc::EPERM) {
                VfioError::UnsafeInterrupts { group }
            } else {
                VfioError::Ioctl {
                    op: "VFIO_SET_IOMMU",
                    target: CONTAINER_PATH.to_owned(),
                    source,
                }
            }
        })?;
        groups.iommu_set = true;
        Ok(())
    }
}

impl AsFd for Container {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
