//! The emulated PCI function: what persists across opens (the model, its
//! configuration space, the fault plan and what was recorded), as a real
//! device persists while drivers come and go.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::config;
use super::faults::{DmaFault, FaultPlan, LeakReport};
use super::session::Session;
use super::{DeviceModel, ModelInfo};
use crate::pci::PciAddress;

/// Locks `mutex`, also after a thread panicked holding it (the state is
/// plain data, valid at every step).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One emulated function.
pub(crate) struct Function {
    pub(crate) address: PciAddress,
    pub(crate) model: Box<dyn DeviceModel>,
    pub(crate) info: ModelInfo,
    /// The configuration space at power-on.
    initial_config: Vec<u8>,
    pub(crate) config: Mutex<Vec<u8>>,
    pub(crate) plan: Mutex<FaultPlan>,
    /// Driver operations so far (register and configuration accesses,
    /// allocations, mappings, interrupt setup).
    operations: AtomicU64,
    /// DMA the IOMMU refused.
    pub(crate) faults: Mutex<Vec<DmaFault>>,
    /// Interrupts raised that reached no eventfd.
    pub(crate) interrupts_lost: AtomicU64,
    /// The opens whose handles are still alive somewhere.
    sessions: Mutex<Vec<Weak<Session>>>,
    opens: AtomicU32,
    /// How many bytes of device addresses each open may hand out.
    pub(crate) iova_space: Option<u64>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("address", &self.address)
            .field("vendor_id", &self.info.vendor_id)
            .field("device_id", &self.info.device_id)
            .finish_non_exhaustive()
    }
}

impl Function {
    pub(crate) fn new(
        model: Box<dyn DeviceModel>,
        address: PciAddress,
        iova_space: Option<u64>,
    ) -> Self {
        let info = model.info();
        let initial_config = config::build(&info);
        Self {
            address,
            model,
            info,
            config: Mutex::new(initial_config.clone()),
            initial_config,
            plan: Mutex::new(FaultPlan::default()),
            operations: AtomicU64::new(0),
            faults: Mutex::new(Vec::new()),
            interrupts_lost: AtomicU64::new(0),
            sessions: Mutex::new(Vec::new()),
            opens: AtomicU32::new(0),
            iova_space,
        }
    }

    /// Numbers a new open and remembers it.
    pub(crate) fn next_open(&self) -> u32 {
        self.opens.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Remembers `session` for revocation and the leak check.
    pub(crate) fn register(&self, session: &Arc<Session>) {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|s| s.strong_count() > 0);
        sessions.push(Arc::downgrade(session));
    }

    fn live_sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Counts one driver operation; revokes every open when the plan says
    /// this is the one.
    pub(crate) fn count_operation(&self) {
        let count = self.operations.fetch_add(1, Ordering::Relaxed) + 1;
        let revoke = {
            let mut plan = lock(&self.plan);
            match plan.revoke_at {
                Some(at) if count >= at => {
                    plan.revoke_at = None;
                    true
                }
                _ => false,
            }
        };
        if revoke {
            self.revoke_all();
        }
    }

    /// Driver operations so far.
    pub(crate) fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// Takes the device from every open, as an unbind would.
    pub(crate) fn revoke_all(&self) {
        for session in self.live_sessions() {
            session.revoke();
        }
    }

    /// The command register.
    pub(crate) fn command(&self) -> u16 {
        config::command(&lock(&self.config))
    }

    /// Records a refused DMA.
    pub(crate) fn record(&self, fault: DmaFault) {
        lock(&self.faults).push(fault);
    }

    /// Back to the power-on configuration space, keeping the command
    /// register (the kernel saves and restores it around a reset).
    pub(crate) fn reset_config(&self) {
        let mut config = lock(&self.config);
        let command = [config[0x04], config[0x05]];
        config.clone_from(&self.initial_config);
        config[0x04..0x06].copy_from_slice(&command);
    }

    /// What every open still holds.
    pub(crate) fn report(&self) -> LeakReport {
        let mut report = LeakReport {
            leaks: Vec::new(),
            outside_mask: Vec::new(),
        };
        for session in self.live_sessions() {
            let (leaks, outside) = session.leaks();
            report.leaks.extend(leaks);
            report.outside_mask.extend(outside);
        }
        report.leaks.sort_by_key(|l| (l.open, l.device_addr));
        report
    }
}
