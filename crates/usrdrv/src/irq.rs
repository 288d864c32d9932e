//! Interrupts as event file descriptors: INTx, MSI and MSI-X through
//! `VFIO_DEVICE_SET_IRQS`, with waits that time out and descriptors for epoll
//! or an async runtime.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
    VFIO_PCI_MSIX_IRQ_INDEX,
};

use crate::pci::PciAddress;
use crate::sys::eventfd::{EventFd, Woken, hung_up, wait_any_or_hangup};
use crate::vfio;

/// The kinds of interrupt a PCI function can raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqKind {
    /// The legacy shared line; masked by the kernel when it fires, so call
    /// [`Interrupts::unmask`] once the device's cause is cleared.
    Intx,
    /// Message-signalled interrupts (up to 32 vectors).
    Msi,
    /// MSI-X (up to 2048 vectors).
    Msix,
}

impl IrqKind {
    pub(crate) fn vfio_index(self) -> u32 {
        match self {
            Self::Intx => VFIO_PCI_INTX_IRQ_INDEX,
            Self::Msi => VFIO_PCI_MSI_IRQ_INDEX,
            Self::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
        }
    }
}

impl fmt::Display for IrqKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Intx => "INTx",
            Self::Msi => "MSI",
            Self::Msix => "MSI-X",
        })
    }
}

/// What the kernel says one kind of interrupt can do on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// How many vectors exist (0: the device does not have this kind).
    pub count: u32,
    /// Whether the kernel can mask it.
    pub maskable: bool,
    /// Whether the kernel masks it when it fires (INTx).
    pub automasked: bool,
}

/// Errors from interrupt setup and waits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IrqError {
    /// The device has fewer vectors of this kind than asked for.
    #[error("{address} has {available} {kind} vector(s); {asked} were asked for")]
    NotEnoughVectors {
        /// The device.
        address: PciAddress,
        /// The kind.
        kind: IrqKind,
        /// How many were asked for.
        asked: u32,
        /// How many it has.
        available: u32,
    },
    /// No such vector in this set.
    #[error("vector {vector} does not exist: {count} are enabled")]
    NoSuchVector {
        /// The vector asked for.
        vector: usize,
        /// How many are enabled.
        count: usize,
    },
    /// The kernel asked for the device back (unbind or hot-unplug).
    #[error(
        "{address} was revoked: the kernel wants it back (unbind or removal); drop every handle to it"
    )]
    Revoked {
        /// The device.
        address: PciAddress,
    },
    /// Reading the configuration space (to learn the vectors) failed.
    #[error("reading the configuration space of {address} to learn its {kind} vectors failed")]
    ConfigSpace {
        /// The kind.
        kind: IrqKind,
        /// The device.
        address: PciAddress,
        /// Why (the usrdma backend reads it through sysfs).
        #[source]
        source: Box<crate::usrdma::UsrdmaError>,
    },
    /// Bus mastering, which MSI and MSI-X need (their messages are DMA
    /// writes), could not be turned on.
    #[error("cannot turn on bus mastering of {address} for {kind} (MSI messages are DMA writes)")]
    BusMaster {
        /// The kind.
        kind: IrqKind,
        /// The device.
        address: PciAddress,
        /// Why.
        #[source]
        source: Box<crate::dma::DmaError>,
    },
    /// A system call failed.
    #[error("{op} for {kind} on {address} failed")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The kind.
        kind: IrqKind,
        /// The device.
        address: PciAddress,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
}

/// Enabled interrupt vectors of one kind, each signalling an eventfd.
///
/// Dropping it disables the interrupts again.
///
/// ```no_run
/// use std::time::Duration;
/// use usrdrv::Device;
/// use usrdrv::dma::DmaMask;
/// use usrdrv::irq::IrqKind;
///
/// let device = Device::open("0000:00:03.0".parse()?, DmaMask::new(28)?)?;
/// let irqs = device.enable_interrupts(IrqKind::Msi, 1)?;
/// // ... tell the device to raise one ...
/// match irqs.wait(0, Some(Duration::from_secs(1)))? {
///     Some(count) => println!("{count} interrupt(s)"),
///     None => println!("timed out"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Interrupts {
    device: Arc<dyn IrqControl>,
    kind: IrqKind,
    vectors: Vec<EventFd>,
}

/// What a kernel interface offers for interrupts: the seam between
/// [`Interrupts`] and VFIO or usrdma.
pub(crate) trait IrqControl: Send + Sync + fmt::Debug {
    /// The device.
    fn address(&self) -> PciAddress;
    /// What the kernel says about `kind`.
    fn info(&self, kind: IrqKind) -> Result<IrqInfo, IrqError>;
    /// Makes vector `i` of `kind` signal `eventfds[i]`; an empty list disables.
    fn set_eventfds(&self, kind: IrqKind, eventfds: &[BorrowedFd<'_>]) -> io::Result<()>;
    /// Unmasks INTx after the kernel masked it on delivery.
    fn unmask_intx(&self) -> io::Result<()>;
    /// Whether the device was taken back.
    fn is_revoked(&self) -> bool;
    /// The event a wait polls to learn of revocation, if any.
    fn revocation_event(&self) -> Option<&EventFd>;
    /// Records a revocation a waiter saw.
    fn mark_revoked(&self);
    /// A descriptor that hangs up once the device is revoked, before the
    /// kernel signals the interrupt eventfds as it revokes (so a wake-up
    /// that finds it hung up is the revocation, not an interrupt), if any.
    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl fmt::Debug for Interrupts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interrupts")
            .field("device", &self.device.address())
            .field("kind", &self.kind)
            .field("vectors", &self.vectors.len())
            .finish()
    }
}

impl Interrupts {
    /// Enables `count` vectors of `kind` on `device`.
    pub(crate) fn enable(
        device: Arc<dyn IrqControl>,
        kind: IrqKind,
        count: u32,
    ) -> Result<Self, IrqError> {
        let address = device.address();
        let sys = |op| {
            move |source| IrqError::Sys {
                op,
                kind,
                address,
                source,
            }
        };
        if device.is_revoked() {
            return Err(IrqError::Revoked { address });
        }
        let info = device.info(kind)?;
        if count == 0 || count > info.count {
            return Err(IrqError::NotEnoughVectors {
                address,
                kind,
                asked: count,
                available: info.count,
            });
        }
        let vectors = (0..count)
            .map(|_| EventFd::new())
            .collect::<io::Result<Vec<_>>>()
            .map_err(sys("creating an eventfd"))?;
        let fds: Vec<BorrowedFd<'_>> = vectors.iter().map(EventFd::as_fd).collect();
        device.set_eventfds(kind, &fds).map_err(|source| {
            if device.is_revoked() {
                IrqError::Revoked { address }
            } else {
                sys("binding the eventfds")(source)
            }
        })?;
        Ok(Self {
            device,
            kind,
            vectors,
        })
    }

    /// The kind of interrupt.
    pub fn kind(&self) -> IrqKind {
        self.kind
    }

    /// How many vectors are enabled.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether none are (never: enabling zero vectors is refused).
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    fn vector(&self, vector: usize) -> Result<&EventFd, IrqError> {
        self.vectors.get(vector).ok_or(IrqError::NoSuchVector {
            vector,
            count: self.vectors.len(),
        })
    }

    /// Waits for `vector` to fire, at most `timeout` (`None`: forever). Returns
    /// how many times it fired since the last wait, or `None` on timeout. Fails
    /// with [`IrqError::Revoked`] when the kernel asks for the device back.
    pub fn wait(&self, vector: usize, timeout: Option<Duration>) -> Result<Option<u64>, IrqError> {
        let fd = self.vector(vector)?;
        let revoked = IrqError::Revoked {
            address: self.device.address(),
        };
        if self.device.is_revoked() {
            return Err(revoked);
        }
        let sys = |source| IrqError::Sys {
            op: "waiting",
            kind: self.kind,
            address: self.device.address(),
            source,
        };
        let hangup = self.device.hangup_fd();
        let woken = match self.device.revocation_event() {
            Some(req) => wait_any_or_hangup(&[fd, req], hangup, timeout),
            None => wait_any_or_hangup(&[fd], hangup, timeout),
        }
        .map_err(sys)?;
        match woken {
            Woken::Fd(0, count) => Ok(Some(count)),
            Woken::Fd(_, _) | Woken::HungUp => {
                self.device.mark_revoked();
                Err(revoked)
            }
            Woken::TimedOut => Ok(None),
        }
    }

    /// Returns how many times `vector` fired since the last wait, without waiting.
    pub fn try_wait(&self, vector: usize) -> Result<Option<u64>, IrqError> {
        let count = self
            .vector(vector)?
            .take()
            .map_err(|source| IrqError::Sys {
                op: "reading",
                kind: self.kind,
                address: self.device.address(),
                source,
            })?;
        let hung_up = match (count, self.device.hangup_fd()) {
            (Some(_), Some(fd)) => hung_up(fd).map_err(|source| IrqError::Sys {
                op: "polling the device node",
                kind: self.kind,
                address: self.device.address(),
                source,
            })?,
            _ => false,
        };
        if hung_up {
            self.device.mark_revoked();
            return Err(IrqError::Revoked {
                address: self.device.address(),
            });
        }
        Ok(count)
    }

    /// Unmasks INTx after the kernel masked it on delivery; do it once the
    /// device's interrupt cause is acknowledged. Harmless for MSI/MSI-X.
    pub fn unmask(&self) -> Result<(), IrqError> {
        if self.kind != IrqKind::Intx {
            return Ok(());
        }
        self.device.unmask_intx().map_err(|source| IrqError::Sys {
            op: "unmasking",
            kind: self.kind,
            address: self.device.address(),
            source,
        })
    }

    /// The eventfd of `vector`, for epoll or an async runtime: readable when the
    /// vector fired; reading it (8 bytes) returns and resets the count.
    pub fn fd(&self, vector: usize) -> Result<BorrowedFd<'_>, IrqError> {
        Ok(self.vector(vector)?.as_fd())
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        // Disable: no more eventfd signalling, the device's vectors torn down.
        let _ = self.device.set_eventfds(self.kind, &[]);
    }
}

/// The descriptor numbers of `fds`, for the kernel's interfaces.
pub(crate) fn raw_fds(fds: &[BorrowedFd<'_>]) -> Vec<i32> {
    fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect()
}

impl IrqControl for vfio::Device {
    fn address(&self) -> PciAddress {
        vfio::Device::address(self)
    }

    fn info(&self, kind: IrqKind) -> Result<IrqInfo, IrqError> {
        let info = crate::sys::vfio_ioctl::device_get_irq_info(self.as_fd(), kind.vfio_index())
            .map_err(|source| IrqError::Sys {
                op: "VFIO_DEVICE_GET_IRQ_INFO",
                kind,
                address: self.address(),
                source,
            })?;
        let usable = info.flags & VFIO_IRQ_INFO_EVENTFD != 0;
        Ok(IrqInfo {
            count: if usable { info.count } else { 0 },
            maskable: info.flags & VFIO_IRQ_INFO_MASKABLE != 0,
            automasked: info.flags & VFIO_IRQ_INFO_AUTOMASKED != 0,
        })
    }

    fn set_eventfds(&self, kind: IrqKind, eventfds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let eventfds = raw_fds(eventfds);
        let action = if eventfds.is_empty() {
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
        } else {
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER
        };
        let count = u32::try_from(eventfds.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        crate::sys::vfio_ioctl::device_set_irqs(
            self.as_fd(),
            kind.vfio_index(),
            action,
            0,
            count,
            &eventfds,
        )
    }

    fn unmask_intx(&self) -> io::Result<()> {
        crate::sys::vfio_ioctl::device_set_irqs(
            self.as_fd(),
            IrqKind::Intx.vfio_index(),
            VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
            0,
            1,
            &[],
        )
    }

    fn is_revoked(&self) -> bool {
        vfio::Device::is_revoked(self)
    }

    fn revocation_event(&self) -> Option<&EventFd> {
        vfio::Device::revocation_event(self)
    }

    fn mark_revoked(&self) {
        vfio::Device::mark_revoked(self);
    }
}
