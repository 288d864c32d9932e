//! A VFIO group: the set of devices the IOMMU can isolate from the rest.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vfio_bindings::bindings::vfio::VFIO_GROUP_FLAGS_VIABLE;

use super::{Container, VfioError};
use crate::pci::{PciAddress, Sysfs, SysfsError, VFIO_PCI_DRIVER};
use crate::sys::dead_memory::retire_fd;
use crate::sys::vfio_ioctl;

/// How long a detach waits for the kernel to finish releasing the group's
/// last device (another thread may hold the device file for an instant).
const DETACH_PATIENCE: Duration = Duration::from_secs(1);

/// An open VFIO group (`/dev/vfio/<n>`), attached to a [`Container`].
///
/// The group keeps its container alive; devices keep their group alive.
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
    id: u32,
    container: Arc<Container>,
    /// Set once [`Group::detach`] gave the group back.
    detached: AtomicBool,
}

impl Group {
    /// Opens group `id`, checks it is viable (every member bound to vfio-pci or
    /// to no driver), and attaches it to `container`.
    pub fn open(id: u32, container: &Arc<Container>) -> Result<Arc<Self>, VfioError> {
        let path = PathBuf::from(format!("/dev/vfio/{id}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EBUSY) => VfioError::GroupBusy { group: id },
                _ => VfioError::open(path.clone(), source),
            })?;
        let fd = OwnedFd::from(file);
        let ioctl_error = |op, source| VfioError::Ioctl {
            op,
            target: path.display().to_string(),
            source,
        };
        let flags = vfio_ioctl::group_get_status(fd.as_fd())
            .map_err(|e| ioctl_error("VFIO_GROUP_GET_STATUS", e))?;
        if flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable {
                group: id,
                blockers: blockers(&Sysfs::system(), id).unwrap_or_default(),
            });
        }
        vfio_ioctl::group_set_container(fd.as_fd(), container.as_fd())
            .map_err(|e| ioctl_error("VFIO_GROUP_SET_CONTAINER", e))?;
        container.ensure_iommu(id)?;
        container.group_attached();
        Ok(Arc::new(Self {
            fd,
            id,
            container: Arc::clone(container),
            detached: AtomicBool::new(false),
        }))
    }

    /// Detaches the group from its container and closes it, once its devices
    /// are closed: the kernel then gives up the group's DMA ownership (so the
    /// device can be bound to a kernel driver) and, for the container's last
    /// group, every IOMMU mapping. The descriptor's number stays reserved
    /// (see `retire_fd`) until the group is dropped.
    ///
    /// Waits up to a second for the kernel to finish closing the devices; a
    /// device of the group still open in this process keeps the group attached
    /// (the error is the kernel's `EBUSY`).
    pub(crate) fn detach(&self) -> std::io::Result<()> {
        if self.detached.load(Ordering::SeqCst) {
            return Ok(());
        }
        let deadline = Instant::now() + DETACH_PATIENCE;
        loop {
            match vfio_ioctl::group_unset_container(self.fd.as_fd()) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        self.detached.store(true, Ordering::SeqCst);
        self.container.group_detached();
        retire_fd(self.fd.as_fd())
    }

    /// Whether [`Group::detach`] gave the group back.
    pub(crate) fn is_detached(&self) -> bool {
        self.detached.load(Ordering::SeqCst)
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The container the group is attached to.
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }
}

impl AsFd for Group {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Members of group `id` bound to a driver other than vfio-pci, with that driver.
pub(crate) fn blockers(sysfs: &Sysfs, id: u32) -> Result<Vec<(PciAddress, String)>, SysfsError> {
    let mut found = Vec::new();
    for member in sysfs.iommu_group_members(id)? {
        match sysfs.driver(member)? {
            Some(driver) if driver != VFIO_PCI_DRIVER => found.push((member, driver)),
            _ => {}
        }
    }
    Ok(found)
}

/// The IOMMU group of `address`, after checking the device is bound to vfio-pci
/// and no member of its group is bound to another driver (naming any that are):
/// whether VFIO can open it, and if not, the error that says what is missing.
///
/// ```no_run
/// use usrdrv::pci::Sysfs;
///
/// match usrdrv::vfio::usable_group(&Sysfs::system(), "0000:00:03.0".parse()?) {
///     Ok(group) => println!("ready: /dev/vfio/{group}"),
///     Err(why) => println!("not ready: {why}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn usable_group(sysfs: &Sysfs, address: PciAddress) -> Result<u32, VfioError> {
    let driver = sysfs.driver(address)?;
    if driver.as_deref() != Some(VFIO_PCI_DRIVER) {
        return Err(VfioError::NotBoundToVfio { address, driver });
    }
    let group = sysfs
        .iommu_group(address)?
        .ok_or(VfioError::NoIommu { address })?;
    let in_the_way = blockers(sysfs, group)?;
    if !in_the_way.is_empty() {
        return Err(VfioError::GroupNotViable {
            group,
            blockers: in_the_way,
        });
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake_sysfs::FakeSysfs;

    fn addr(text: &str) -> PciAddress {
        text.parse().unwrap()
    }

    #[test]
    fn a_bound_device_with_a_clean_group_is_usable() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:03.0",
            0x1234,
            0x11e8,
            0xff00,
            Some("vfio-pci"),
            Some(3),
        );
        assert_eq!(
            usable_group(&Sysfs::at(fake.root()), addr("0000:00:03.0")).unwrap(),
            3
        );
    }

    #[test]
    fn a_device_with_another_driver_is_refused_naming_it() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:02.0",
            0x1b36,
            0x0010,
            0x010802,
            Some("nvme"),
            Some(2),
        );
        let err = usable_group(&Sysfs::at(fake.root()), addr("0000:00:02.0")).unwrap_err();
        assert!(
            matches!(&err, VfioError::NotBoundToVfio { driver: Some(d), .. } if d == "nvme"),
            "{err:?}"
        );
        assert!(err.to_string().contains("driver_override"), "{err}");
    }

    #[test]
    fn no_iommu_group_means_no_iommu_with_the_fix() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:00:03.0",
            0x1234,
            0x11e8,
            0xff00,
            Some("vfio-pci"),
            None,
        );
        let err = usable_group(&Sysfs::at(fake.root()), addr("0000:00:03.0")).unwrap_err();
        assert!(matches!(err, VfioError::NoIommu { .. }), "{err:?}");
        assert!(err.to_string().contains("intel_iommu=on"), "{err}");
    }

    #[test]
    fn a_group_member_on_another_driver_makes_it_not_viable() {
        let fake = FakeSysfs::new();
        fake.add(
            "0000:03:00.0",
            0x8086,
            0x1533,
            0x020000,
            Some("vfio-pci"),
            Some(9),
        );
        fake.add(
            "0000:03:00.1",
            0x8086,
            0x1533,
            0x020000,
            Some("igb"),
            Some(9),
        );
        fake.add("0000:03:00.2", 0x8086, 0x1533, 0x020000, None, Some(9));
        let err = usable_group(&Sysfs::at(fake.root()), addr("0000:03:00.0")).unwrap_err();
        match &err {
            VfioError::GroupNotViable { group: 9, blockers } => {
                assert_eq!(blockers, &vec![(addr("0000:03:00.1"), "igb".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("0000:03:00.1 is bound to igb"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_device_is_named() {
        let fake = FakeSysfs::new();
        let err = usable_group(&Sysfs::at(fake.root()), addr("0000:0a:00.0")).unwrap_err();
        assert!(
            err.to_string().contains("no PCI device at 0000:0a:00.0"),
            "{err}"
        );
    }
}
