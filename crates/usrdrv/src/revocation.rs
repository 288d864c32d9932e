//! Revocation: the kernel asking for a device back (unbind, hot-unplug). A
//! watcher thread turns the kernel's signal (VFIO's request interrupt, the
//! usrdma node hanging up) into a flag that register accesses and interrupt
//! waits check, so they fail with an error instead of blocking the kernel or
//! touching a device that is going away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::sys::eventfd::EventFd;

/// Watches one device for revocation.
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
    /// Starts a watcher thread running `wait`, which blocks until the kernel
    /// revokes the device (returns `true`) or the given stop event is signalled
    /// (returns `false`). `None` when no thread or eventfd can be had.
    pub(crate) fn watch(wait: impl FnOnce(&EventFd) -> bool + Send + 'static) -> Option<Self> {
        let revoked = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(EventFd::new().ok()?);
        let stop = Arc::new(EventFd::new().ok()?);
        let watcher = {
            let (revoked, notify, stop) =
                (Arc::clone(&revoked), Arc::clone(&notify), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("usrdrv-revoke".into())
                .spawn(move || {
                    if wait(&stop) {
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

    /// Records a revocation seen by a waiter or a failed call, keeping the
    /// event readable for others.
    pub(crate) fn mark(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        let _ = self.notify.signal(1);
    }

    /// The event waits poll alongside their own.
    pub(crate) fn event(&self) -> &EventFd {
        &self.notify
    }
}

/// What a device handle keeps of revocation: the watcher when the kernel offers
/// a signal to watch, nothing otherwise (then revocation goes unnoticed until
/// the device is closed). Shared by the VFIO and usrdma device types.
#[derive(Debug)]
pub(crate) struct DeviceRevocation(Option<Revocation>);

impl DeviceRevocation {
    /// Wraps the watcher, if one could be armed.
    pub(crate) fn new(watcher: Option<Revocation>) -> Self {
        Self(watcher)
    }

    /// Whether the kernel has asked for the device back.
    pub(crate) fn is_revoked(&self) -> bool {
        self.0.as_ref().is_some_and(Revocation::is_revoked)
    }

    /// The event a wait polls to learn of revocation, if there is a watcher.
    pub(crate) fn event(&self) -> Option<&EventFd> {
        self.0.as_ref().map(Revocation::event)
    }

    /// Records a revocation seen by a waiter or a failed call (nothing without
    /// a watcher).
    pub(crate) fn mark(&self) {
        if let Some(r) = &self.0 {
            r.mark();
        }
    }

    /// The flag the BARs taken from the device check, if there is a watcher.
    pub(crate) fn flag(&self) -> Option<Arc<AtomicBool>> {
        self.0.as_ref().map(Revocation::flag)
    }
}

impl Drop for Revocation {
    fn drop(&mut self) {
        let _ = self.stop.signal(1);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd::{Woken, wait_any};

    #[test]
    fn a_watcher_that_sees_revocation_sets_the_flag_and_the_event() {
        let trigger = Arc::new(EventFd::new().unwrap());
        let fire = Arc::clone(&trigger);
        let revocation = Revocation::watch(move |stop| {
            matches!(wait_any(&[&fire, stop], None), Ok(Woken::Fd(0, _)))
        })
        .unwrap();
        assert!(!revocation.is_revoked());
        trigger.signal(1).unwrap();
        let woken = wait_any(
            &[revocation.event()],
            Some(std::time::Duration::from_secs(5)),
        );
        assert!(matches!(woken, Ok(Woken::Fd(0, 1))), "{woken:?}");
        assert!(revocation.is_revoked());
    }

    #[test]
    fn dropping_stops_the_watcher_without_revoking() {
        let trigger = Arc::new(EventFd::new().unwrap());
        let flag = {
            let fire = Arc::clone(&trigger);
            let revocation = Revocation::watch(move |stop| {
                matches!(wait_any(&[&fire, stop], None), Ok(Woken::Fd(0, _)))
            })
            .unwrap();
            revocation.flag()
        };
        assert!(!flag.load(Ordering::SeqCst));
    }
}
