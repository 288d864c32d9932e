//! VFIO's device-request interrupt, which the kernel raises when it wants a
//! device back, armed as a [`Revocation`] watcher.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_PCI_REQ_IRQ_INDEX,
};

use super::release::Release;
use crate::revocation::Revocation;
use crate::sys::eventfd::{EventFd, Woken, wait_any};
use crate::sys::vfio_ioctl;

/// Arms the request interrupt of `device`, or returns `None` when the kernel
/// does not offer it (then revocation goes unnoticed until close). When the
/// kernel asks, the watcher waits out `release`'s grace period, marks the
/// device revoked, and gives it back.
pub(crate) fn arm(device: BorrowedFd<'_>, release: Arc<Release>) -> Option<Revocation> {
    let info = vfio_ioctl::device_get_irq_info(device, VFIO_PCI_REQ_IRQ_INDEX).ok()?;
    if info.count == 0 || info.flags & VFIO_IRQ_INFO_EVENTFD == 0 {
        return None;
    }
    let request = EventFd::new().ok()?;
    vfio_ioctl::device_set_irqs(
        device,
        VFIO_PCI_REQ_IRQ_INDEX,
        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        0,
        1,
        &[request.as_fd().as_raw_fd()],
    )
    .ok()?;
    let waiting = Arc::clone(&release);
    Revocation::watch(
        move |stop| {
            matches!(wait_any(&[&request, stop], None), Ok(Woken::Fd(0, _))) && waiting.grace(stop)
        },
        move || release.give_back(),
    )
}
