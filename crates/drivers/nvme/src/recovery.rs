//! Getting a controller back from a command that does not complete: Abort
//! first, then a controller reset as the last resort. A reset ends every
//! command in flight on every queue (CC.EN = 0 stops the controller's DMA
//! before anything is handed back), brings the admin queue back and asks for
//! the I/O queues again; each I/O queue notices the new generation on its
//! next use, fails what it had in flight with [`NvmeError::Reset`] (the
//! command that timed out with [`NvmeError::Timeout`]) and creates itself
//! again in the controller.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::command::{Command, Completion, admin};
use crate::queue::QueuePair;
use crate::{Admin, NvmeError, Shared, disable, regs, wait_ready};

/// Set Features, Number of Queues, asking for `wanted` pairs.
pub(crate) fn queue_count_command(wanted: u16) -> Command {
    let mut c = Command::new(admin::SET_FEATURES, 0);
    c.cdw10[0] = 0x07;
    let n = u32::from(wanted.max(1) - 1);
    c.cdw10[1] = n << 16 | n;
    c
}

/// The I/O queue pairs a Set Features (Number of Queues) completion grants.
pub(crate) fn granted_queues(done: &Completion) -> u16 {
    let sq = (done.result & 0xffff) as u16;
    let cq = (done.result >> 16) as u16;
    sq.min(cq).saturating_add(1)
}

impl Shared {
    /// The command timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout.load(Ordering::Relaxed))
    }

    /// How long an admin command may take: the command timeout, but never
    /// less than CAP.TO, so a short I/O timeout does not make the recovery
    /// itself (Abort, the reset's Set Features) time out.
    pub(crate) fn admin_timeout(&self) -> Duration {
        self.timeout().max(self.cap.timeout())
    }

    /// The controller's current generation (resets so far).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Creates `queue` in the controller: its completion queue (interrupts on
    /// `vector`, or polled), then its submission queue.
    pub(crate) fn create_queue(
        &self,
        admin: &mut Admin,
        queue: &QueuePair,
        vector: Option<u16>,
    ) -> Result<(), NvmeError> {
        let qid = queue.qid();
        let mut cq = Command::new(admin::CREATE_CQ, 0);
        cq.prp1 = queue.cq_addr();
        cq.cdw10[0] = u32::from(queue.cq_depth() - 1) << 16 | u32::from(qid);
        // Physically contiguous, and the interrupt vector if any.
        cq.cdw10[1] = match vector {
            Some(v) => u32::from(v) << 16 | 0b11,
            None => 1,
        };
        self.admin_command(admin, "Create I/O Completion Queue", cq)?;
        let mut sq = Command::new(admin::CREATE_SQ, 0);
        sq.prp1 = queue.sq_addr();
        sq.cdw10[0] = u32::from(queue.depth() - 1) << 16 | u32::from(qid);
        sq.cdw10[1] = u32::from(qid) << 16 | 1;
        if let Err(e) = self.admin_command(admin, "Create I/O Submission Queue", sq) {
            let mut delete = Command::new(admin::DELETE_CQ, 0);
            delete.cdw10[0] = u32::from(qid);
            let _ = self.admin_command(admin, "Delete I/O Completion Queue", delete);
            return Err(e);
        }
        Ok(())
    }

    /// Asks the controller to abort command `cid` of queue `qid`: `true` when
    /// it says it did (the command then completes with "Command Abort
    /// Requested"), `false` when it did not (it may still complete, or never).
    pub(crate) fn abort(&self, qid: u16, cid: u16) -> Result<bool, NvmeError> {
        let mut admin = self.lock_admin();
        admin.aborts += 1;
        let mut c = Command::new(admin::ABORT, 0);
        c.cdw10[0] = u32::from(cid) << 16 | u32::from(qid);
        let done = self.admin_command(&mut admin, "Abort", c)?;
        Ok(done.result & 1 == 0)
    }

    /// Resets the controller, unless it was reset since `generation` already
    /// (another queue's recovery got there first).
    pub(crate) fn reset_after(&self, generation: u64) -> Result<(), NvmeError> {
        let mut admin = self.lock_admin();
        self.reset_from(&mut admin, generation)
    }

    /// The reset itself, with the admin queue held: disable (stopping every
    /// transfer), bring the admin queue back, enable, ask for the I/O queues
    /// again. On failure the controller stays disabled.
    pub(crate) fn reset_from(&self, admin: &mut Admin, generation: u64) -> Result<(), NvmeError> {
        if self.generation() != generation {
            return Ok(());
        }
        let address = self.device.address();
        self.live()?;
        disable(&self.bar, self.cap, address)?;
        // From here nothing the controller had can reach memory: every queue
        // created before is gone.
        self.generation.fetch_add(1, Ordering::AcqRel);
        admin.resets += 1;
        admin.queue.clear()?;
        let depth = u32::from(admin.queue.depth()) - 1;
        self.bar.write32(regs::AQA, depth << 16 | depth)?;
        self.bar.write64(regs::ASQ, admin.queue.sq_addr())?;
        self.bar.write64(regs::ACQ, admin.queue.cq_addr())?;
        self.bar.write32(regs::CC, regs::cc_enable(12))?;
        wait_ready(&self.bar, self.cap, address, true)?;
        if let Some(shadow) = &admin.shadow {
            // The reset made the controller forget them; every queue starts
            // again at index 0.
            shadow.clear()?;
            let command = shadow.config_command();
            self.run(&mut admin.queue, "Doorbell Buffer Config", command)?;
        }
        if admin.queue_request > 0 {
            let done = self.run(
                &mut admin.queue,
                "Set Features (Number of Queues)",
                queue_count_command(admin.queue_request),
            )?;
            let granted = granted_queues(&done);
            if admin.qids.last().is_some_and(|q| *q > granted) {
                return Err(NvmeError::Unsupported {
                    address,
                    why: format!("after a reset the controller grants only {granted} I/O queues"),
                });
            }
        }
        Ok(())
    }
}
