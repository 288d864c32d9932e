//! The device-request interrupt: the kernel asking for a device back (unbind,
//! hot-unplug). A watcher thread turns it into a flag that register accesses
//! and interrupt waits check, so they fail with an error instead of blocking
//! the kernel or touching a device that is going away.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_PCI_REQ_IRQ_INDEX,
};

use crate::sys::eventfd::{EventFd, Woken, wait_any};
use crate::sys::vfio_ioctl;

/// Watches one device's request interrupt.
#[derive(Debug)]
pub(crate) struct Revocation {
    /// Set once the kernel has asked for the device.
    revoked: Arc<AtomicBool>,
    /// Signalled (and kept signalled) once revoked, for waits to poll.
    notify: Arc<EventFd>,
    stop: Arc<EventFd>,
    watcher: Option<JoinHandle<()>>,
}

impl Revocation {
    /// Arms the request interrupt of `device`, or returns `None` when the
    /// kernel does not offer it (then revocation goes unnoticed until close).
    pub(crate) fn arm(device: BorrowedFd<'_>) -> Option<Self> {
        let info = vfio_ioctl::device_get_irq_info(device, VFIO_PCI_REQ_IRQ_INDEX).ok()?;
        if info.count == 0 || info.flags & VFIO_IRQ_INFO_EVENTFD == 0 {
            return None;
        }
        let request = EventFd::new().ok()?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&request_fd(&request));
        vfio_ioctl::device_set_irqs(
            device,
            VFIO_PCI_REQ_IRQ_INDEX,
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &[raw],
        )
        .ok()?;
        let revoked = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(EventFd::new().ok()?);
        let stop = Arc::new(EventFd::new().ok()?);
        let watcher = {
            let (revoked, notify, stop) =
                (Arc::clone(&revoked), Arc::clone(&notify), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("usrdrv-revoke".into())
                .spawn(move || {
                    if let Ok(Woken::Fd(0, _)) = wait_any(&[&request, &stop], None) {
                        revoked.store(true, Ordering::SeqCst);
                        let _ = notify.signal(1);
                    }
                })
                .ok()?
        };
        Some(Self {
            revoked,
            notify,
            stop,
            watcher: Some(watcher),
        })
    }

    /// The flag register accesses check.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.revoked)
    }

    /// Whether the kernel has asked for the device.
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Records a revocation seen by a waiter, keeping the event readable for others.
    pub(crate) fn mark(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        let _ = self.notify.signal(1);
    }

    /// The event waits poll alongside their own.
    pub(crate) fn event(&self) -> &EventFd {
        &self.notify
    }
}

fn request_fd(request: &EventFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(request)
}

impl Drop for Revocation {
    fn drop(&mut self) {
        let _ = self.stop.signal(1);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}
