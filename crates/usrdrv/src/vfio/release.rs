//! Giving a VFIO device back when the kernel asks for it (its device-request
//! interrupt), whether or not the driver is doing anything with it.
//!
//! The kernel's unbind waits, uninterruptibly, until every reference the
//! process holds to the device file is gone: the descriptor and every BAR
//! mapping. A driver that is idle would never let go, so the revocation
//! watcher does it: BAR mappings replaced in place by dead memory, the
//! descriptor retired (its number kept, the file closed, which also makes the
//! kernel tear the interrupts down and reset the device), then the group
//! detached from its container so the kernel hands the device's DMA back.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Group;
use crate::revocation::ReleasePolicy;
use crate::sys::dead_memory::{MappingRegistry, retire_fd};
use crate::sys::eventfd::{EventFd, Woken, wait_any};

/// What the watcher needs to give one device back, shared with the device.
#[derive(Debug)]
pub(crate) struct Release {
    device: Arc<File>,
    group: Arc<Group>,
    /// The device's BAR mappings.
    bars: Arc<MappingRegistry>,
    policy: Mutex<ReleasePolicy>,
    /// Set when the kernel asks for the device.
    requested: AtomicBool,
    /// Signalled by the driver to end a grace period early.
    early: EventFd,
}

impl Release {
    /// The release state of the device open as `device` in `group`.
    pub(crate) fn new(device: Arc<File>, group: Arc<Group>) -> io::Result<Self> {
        Ok(Self {
            device,
            group,
            bars: Arc::default(),
            policy: Mutex::default(),
            requested: AtomicBool::new(false),
            early: EventFd::new()?,
        })
    }

    /// The registry BAR mappings of the device go in.
    pub(crate) fn bars(&self) -> &Arc<MappingRegistry> {
        &self.bars
    }

    /// Sets what happens when the kernel asks.
    pub(crate) fn set_policy(&self, policy: ReleasePolicy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Whether the kernel has asked for the device.
    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Ends a grace period now (or makes the next one end at once).
    pub(crate) fn release_now(&self) {
        let _ = self.early.signal(1);
    }

    /// Called by the watcher when the kernel asks: waits out the policy's
    /// grace period, ended early by [`Release::release_now`]. `false` when
    /// `stop` (the device being dropped) came first.
    pub(crate) fn grace(&self, stop: &EventFd) -> bool {
        self.requested.store(true, Ordering::SeqCst);
        let grace = self
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .grace();
        if grace.is_zero() {
            return true;
        }
        !matches!(
            wait_any(&[stop, &self.early], Some(grace)),
            Ok(Woken::Fd(0, _))
        )
    }

    /// Lets go of the device (see the module docs), once accesses already
    /// fail. Each step is safe on its own: one that fails leaves the device
    /// held, and the kernel keeps waiting, as it would have without it.
    pub(crate) fn give_back(&self) {
        if self.bars.kill().is_err() {
            // The device memory is still mapped; unmapping it outright could
            // let a later mapping land under a live BarView.
            return;
        }
        if retire_fd(self.device.as_fd()).is_err() {
            return;
        }
        let _ = self.group.detach();
    }
}
