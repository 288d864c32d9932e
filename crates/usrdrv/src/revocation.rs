//! Revocation: the kernel asking for a device back (unbind, hot-unplug). A
//! watcher thread turns the kernel's signal (VFIO's request interrupt, the
//! usrdma node hanging up) into a flag that register accesses and interrupt
//! waits check, so they fail with an error instead of blocking the kernel or
//! touching a device that is going away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys::eventfd::EventFd;

/// What a device does when the kernel asks for it back (an unbind, a
/// hot-unplug), set with [`Device::set_release_policy`](crate::Device::set_release_policy).
///
/// Over VFIO the kernel's unbind waits until the process lets go of the device;
/// usrdrv lets go for the driver, even an idle one, so nobody's unbind hangs.
/// Letting go means: register accesses and new DMA fail with a `Revoked`
/// error, interrupt waits wake with one, the BAR mappings are replaced by
/// memory that reads all-ones (a [`BarView`](crate::mmio::BarView) taken
/// earlier keeps working, on that memory), interrupts are torn down, the device
/// file is closed, and, when no other device of its IOMMU group is open, the
/// group is handed back too (the kernel then drops its IOMMU mappings and the
/// device can be bound to a kernel driver). DMA memory stays allocated until
/// its handles are dropped.
///
/// The usrdma module takes its device back at once, whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReleasePolicy {
    /// Let go as soon as the kernel asks (the default).
    #[default]
    Immediate,
    /// Keep the device for up to this long (at most [`MAX_RELEASE_GRACE`]) so
    /// in-flight I/O can complete: [`Device::release_requested`](crate::Device::release_requested)
    /// turns true when the kernel asks; everything keeps working until the
    /// time is up or the driver calls [`Device::release`](crate::Device::release).
    Grace(Duration),
}

/// The longest grace period a [`ReleasePolicy`] may ask for: the kernel's
/// unbind (and whoever runs it) waits that long.
pub const MAX_RELEASE_GRACE: Duration = Duration::from_secs(10);

impl ReleasePolicy {
    /// How long to keep the device once asked, capped at [`MAX_RELEASE_GRACE`].
    pub fn grace(self) -> Duration {
        match self {
            Self::Immediate => Duration::ZERO,
            Self::Grace(d) => d.min(MAX_RELEASE_GRACE),
        }
    }
}

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
    /// (returns `false`). Once revoked the thread sets the flag, runs `then`
    /// (giving the device back), and then signals the event. `None` when no thread or eventfd
    /// can be had.
    pub(crate) fn watch(
        wait: impl FnOnce(&EventFd) -> bool + Send + 'static,
        then: impl FnOnce() + Send + 'static,
    ) -> Option<Self> {
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
                        // Waiters learn of it once the device is given back,
                        // so one that sees `Revoked` finds it released.
                        then();
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
        let (done, seen) = std::sync::mpsc::channel();
        let revocation = Revocation::watch(
            move |stop| matches!(wait_any(&[&fire, stop], None), Ok(Woken::Fd(0, _))),
            move || done.send(()).unwrap(),
        )
        .unwrap();
        assert!(!revocation.is_revoked());
        trigger.signal(1).unwrap();
        let woken = wait_any(
            &[revocation.event()],
            Some(std::time::Duration::from_secs(5)),
        );
        assert!(matches!(woken, Ok(Woken::Fd(0, 1))), "{woken:?}");
        assert!(revocation.is_revoked());
        seen.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the action after revocation ran");
    }

    #[test]
    fn dropping_stops_the_watcher_without_revoking() {
        let trigger = Arc::new(EventFd::new().unwrap());
        let flag = {
            let fire = Arc::clone(&trigger);
            let revocation = Revocation::watch(
                move |stop| matches!(wait_any(&[&fire, stop], None), Ok(Woken::Fd(0, _))),
                || panic!("not revoked"),
            )
            .unwrap();
            revocation.flag()
        };
        assert!(!flag.load(Ordering::SeqCst));
    }
}
