//! What can go wrong driving an NVMe controller.

use std::time::Duration;

use usrdrv::dma::DmaError;
use usrdrv::mmio::MmioError;
use usrdrv::pci::PciAddress;

use crate::prp::PrpError;
use crate::status::Status;

/// Errors from the NVMe driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NvmeError {
    /// Opening the device failed.
    #[error(transparent)]
    Open(#[from] usrdrv::Error),
    /// A register access failed.
    #[error(transparent)]
    Mmio(#[from] MmioError),
    /// A DMA operation failed.
    #[error(transparent)]
    Dma(#[from] DmaError),
    /// An interrupt operation failed.
    #[error(transparent)]
    Irq(#[from] usrdrv::irq::IrqError),
    /// A register read all-ones: the controller is gone (removed, or dead).
    #[error("the NVMe controller at {address} reads all-ones: it is gone (removed or dead)")]
    Gone {
        /// The controller.
        address: PciAddress,
    },
    /// CSTS.CFS: the controller reported a fatal error.
    #[error("the NVMe controller at {address} reports a fatal error (CSTS.CFS): reset it")]
    Fatal {
        /// The controller.
        address: PciAddress,
    },
    /// The controller does not do what this driver needs.
    #[error("the NVMe controller at {address} is unsupported: {why}")]
    Unsupported {
        /// The controller.
        address: PciAddress,
        /// What is missing.
        why: String,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {waited:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A command completed with an error status.
    #[error("{command} failed: {status}")]
    Command {
        /// The command, by name.
        command: &'static str,
        /// The status the controller returned.
        status: Status,
    },
    /// The queue has no free entry.
    #[error("queue {qid} is full: reap completions first")]
    QueueFull {
        /// The queue.
        qid: u16,
    },
    /// Every I/O queue pair the controller granted is in use.
    #[error("the controller granted {granted} I/O queue pairs, all in use: drop one first")]
    NoFreeQueue {
        /// How many the controller granted.
        granted: u16,
    },
    /// A transfer's memory cannot be described with PRPs.
    #[error(transparent)]
    Prp(#[from] PrpError),
    /// A transfer does not fit its buffer, or the controller's limits.
    #[error("{what}")]
    Transfer {
        /// What is wrong.
        what: String,
    },
    /// The kernel took the controller back (unbind, hot-unplug): every
    /// command in flight and every later one fails this way. Buffers of
    /// commands in flight stay with their queue until it is dropped.
    #[error(
        "the NVMe controller at {address} was revoked (unbound or removed): drop every handle to it"
    )]
    Revoked {
        /// The controller.
        address: PciAddress,
    },
    /// A reset to recover from a command timeout failed, so the controller
    /// was left disabled (its memory is safe to reuse); open it again.
    #[error("the controller could not be brought back after a reset: open it again")]
    Disabled,
    /// The controller was reset while the command was in flight, to recover
    /// from another command that neither completed nor could be aborted: the
    /// command may or may not have run; submit it again.
    #[error(
        "{command} was in flight when the controller was reset (another command timed out): it may not have run; submit it again"
    )]
    Reset {
        /// The command's name.
        command: &'static str,
    },
}

impl NvmeError {
    /// Whether the device was revoked (unbound, removed).
    pub fn is_revoked(&self) -> bool {
        match self {
            Self::Open(e) => e.is_revoked(),
            Self::Mmio(e) => matches!(e, MmioError::Revoked { .. }),
            Self::Dma(e) => e.is_revoked(),
            Self::Irq(e) => matches!(e, usrdrv::irq::IrqError::Revoked { .. }),
            Self::Revoked { .. } => true,
            _ => false,
        }
    }
}
