//! A user-space NVMe driver on usrdrv's public API: controller bring-up,
//! Identify, I/O queue pairs and reads and writes with PRP lists, over VFIO
//! or usrdma alike.
//!
//! ```no_run
//! use usrdrv_nvme::Controller;
//!
//! let mut nvme = Controller::open("0000:00:02.0".parse()?)?;
//! println!("{} ({})", nvme.info().model, nvme.info().serial);
//! let ns = nvme.namespaces()?[0];
//! let mut queue = nvme.io_queue(64)?;
//! let buffer = nvme.device().alloc_dma(4096)?;
//! queue.read(&ns, 0, ns.blocks_in(4096), &buffer)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Safety model
//!
//! Reads and writes take the buffer by reference and return only once the
//! controller has completed the command, so the buffer is the controller's
//! for exactly as long as the call lasts. Queued commands
//! ([`IoQueue::submit`]) own their buffer until [`IoQueue::reap`] or
//! [`IoQueue::wait`] give it back: a [`DmaBuffer`], a pool chunk, or the
//! caller's own memory mapped for DMA (a `DmaMapping`, see [`IoBuffer`]),
//! which the caller can unmap to get its `Vec` back only once the command is
//! reaped. A queue forgotten with commands in flight leaks their buffers (and
//! a mapping's memory) instead of freeing what the controller may write.
//!
//! Every command has a deadline, the command timeout
//! ([`Controller::set_command_timeout`]) after its submission. Past it the
//! driver sends an Abort; an aborted command completes and is reported as
//! [`NvmeError::Timeout`]. If the controller does not abort it, or it still
//! does not complete, the driver resets the controller as the last resort:
//! CC.EN = 0 stops its DMA before any buffer is handed back, then the admin
//! queue and, on their next use, the I/O queues are created again. The
//! command that timed out comes back as [`NvmeError::Timeout`] and every
//! other command that was in flight, on any queue, as [`NvmeError::Reset`],
//! each with its buffer and tag, so the caller knows exactly which commands
//! to submit again. Only if the reset itself fails is the controller left
//! disabled ([`NvmeError::Disabled`]). usrdrv's own buffers are
//! [`DmaRegion`]s: device-shared memory with atomic accesses (see usrdrv's
//! safety model), never plain slices; a mapped `Vec` is the caller's to read
//! only after it is unmapped.

#![deny(unsafe_code)]

mod buffer;
pub mod command;
mod error;
pub mod identify;
mod io;
pub mod model;
pub mod prp;
mod queue;
mod recovery;
pub mod regs;
mod shadow;
mod slots;
mod spin;
pub mod status;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use usrdrv::Device;
use usrdrv::dma::{DmaBuffer, DmaMask, DmaRegion};
use usrdrv::irq::{Interrupts, IrqKind};
use usrdrv::mmio::Bar;
use usrdrv::pci::PciAddress;

use crate::shadow::ShadowDoorbells;
use crate::spin::Spin;

pub use error::NvmeError;
pub use identify::{ControllerInfo, Namespace};
pub use io::{Completed, IoBuffer, IoQueue, Op, Rejected};

use command::{Command, Completion};
use queue::QueuePair;
use regs::Capabilities;
use status::Status;

/// PCI class code of NVMe controllers (mass storage, NVM, NVMe).
pub const CLASS_NVME: u32 = 0x01_0802;

/// How long a command may take before the driver gives up on it.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The memory page size the driver programs (CC.MPS = 0).
const PAGE: usize = 4096;
/// Entries of the admin queue.
const ADMIN_DEPTH: u16 = 32;

/// What the controller, its admin queue and its I/O queues share.
#[derive(Debug)]
struct Shared {
    device: Device,
    bar: Bar,
    cap: Capabilities,
    admin: Mutex<Admin>,
    /// How long a command may take, in nanoseconds ([`Controller::set_command_timeout`]).
    timeout: AtomicU64,
    /// Counts controller resets: queues created before the last one no
    /// longer exist in the controller and are created again by their owners.
    generation: AtomicU64,
    /// MSI-X vectors (vector `q` for I/O queue `q`), enabled by the first
    /// queue that asks for interrupts.
    interrupts: Mutex<Option<Arc<Interrupts>>>,
    /// `Admin::disabled`, readable without the admin lock (every command
    /// checks it).
    disabled: AtomicBool,
}

/// The admin queue and a page for Identify data.
#[derive(Debug)]
struct Admin {
    queue: QueuePair,
    page: DmaBuffer,
    /// Set once the controller could not be brought back after a reset.
    disabled: bool,
    /// I/O queue identifiers in use (kept across resets: their owners
    /// create them again).
    qids: std::collections::BTreeSet<u16>,
    /// I/O queue pairs asked for with Set Features (asked again after a reset).
    queue_request: u16,
    /// Controller resets done to recover from a timeout.
    resets: u32,
    /// Abort commands sent for commands past their deadline.
    aborts: u32,
    /// The shadow doorbells the controller took (handed to it again after
    /// a reset), shared with every I/O queue.
    shadow: Option<Arc<ShadowDoorbells>>,
}

/// How [`Controller::open_with_options`] sets the controller up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControllerOptions {
    /// Use shadow doorbells where the controller offers them (Doorbell
    /// Buffer Config, OACS bit 8): I/O queues then write a doorbell register
    /// only when the controller's event index asks for one. Off by default:
    /// on QEMU 7.2's controller they save no register write (it asks for
    /// every one once it is idle, and a polled queue at depth already rings
    /// about once per 16 commands) and cost it two memory accesses per
    /// command, 8 to 17% of the IOPS at depth 32 (`docs/perf/nvme-doorbells.md`).
    /// Worth trying on virtual controllers that poll the shadow buffer.
    pub shadow_doorbells: bool,
}

/// An NVMe controller, enabled, with its admin queue.
#[derive(Debug)]
pub struct Controller {
    shared: Arc<Shared>,
    info: ControllerInfo,
    /// I/O queue pairs the controller granted (Set Features, Number of Queues).
    io_queues: u16,
}

impl Controller {
    /// Opens the controller at `address` (bound to vfio-pci or usrdma), resets
    /// it (CC.EN = 0, then enabled with an admin queue), and identifies it.
    pub fn open(address: PciAddress) -> Result<Self, NvmeError> {
        Self::open_with_options(address, ControllerOptions::default())
    }

    /// Like [`Controller::open`], set up as `options` say.
    pub fn open_with_options(
        address: PciAddress,
        options: ControllerOptions,
    ) -> Result<Self, NvmeError> {
        Self::from_device_with_options(Device::open(address, DmaMask::BITS_64)?, options)
    }

    /// Like [`Controller::open`], on a device already open: one opened
    /// through a particular backend, in a shared IOMMU domain, or an
    /// emulated one ([`model::NvmeModel`]).
    pub fn from_device(device: Device) -> Result<Self, NvmeError> {
        Self::from_device_with_options(device, ControllerOptions::default())
    }

    /// Like [`Controller::from_device`], set up as `options` say.
    pub fn from_device_with_options(
        device: Device,
        options: ControllerOptions,
    ) -> Result<Self, NvmeError> {
        let address = device.address();
        let bar = device.bar(0)?;
        let cap = Capabilities(bar.read64(regs::CAP)?);
        if cap.0 == u64::MAX {
            return Err(NvmeError::Gone { address });
        }
        let unsupported = |why: &str| NvmeError::Unsupported {
            address,
            why: why.to_owned(),
        };
        if !cap.nvm_command_set() {
            return Err(unsupported("no NVM command set (CAP.CSS)"));
        }
        if cap.min_page_shift() > 12 || cap.max_page_shift() < 12 {
            return Err(unsupported(
                "4 KiB memory pages are outside CAP.MPSMIN..MPSMAX",
            ));
        }
        // Disabling stops whatever a previous owner left running, before bus
        // mastering goes on.
        device.quiesce(|| disable(&bar, cap, address))?;
        // CAP.MQES + 1 may be 65536, which a u16 cannot hold.
        let admin_depth =
            u16::try_from(cap.max_queue_entries()).map_or(ADMIN_DEPTH, |max| ADMIN_DEPTH.min(max));
        // The admin queue's two rings are as long as each other (AQA): its
        // head doorbell is rung after every completion.
        let admin = QueuePair::new(
            &device,
            0,
            admin_depth,
            admin_depth,
            cap.doorbell_stride(),
            None,
        )?;
        let page = device.alloc_dma(PAGE)?;
        let depth = u32::from(admin.depth()) - 1;
        bar.write32(regs::AQA, depth << 16 | depth)?;
        bar.write64(regs::ASQ, admin.sq_addr())?;
        bar.write64(regs::ACQ, admin.cq_addr())?;
        bar.write32(regs::CC, regs::cc_enable(12))?;
        wait_ready(&bar, cap, address, true)?;
        let shared = Arc::new(Shared {
            device,
            bar,
            cap,
            admin: Mutex::new(Admin {
                queue: admin,
                page,
                disabled: false,
                qids: std::collections::BTreeSet::new(),
                queue_request: 0,
                resets: 0,
                aborts: 0,
                shadow: None,
            }),
            timeout: AtomicU64::new(duration_nanos(DEFAULT_COMMAND_TIMEOUT)),
            generation: AtomicU64::new(0),
            interrupts: Mutex::new(None),
            disabled: AtomicBool::new(false),
        });
        let info = {
            let mut admin = shared.lock_admin();
            let prp1 = admin.page.device_addr();
            shared.admin_command(
                &mut admin,
                "Identify Controller",
                Command::identify(1, 0, prp1),
            )?;
            ControllerInfo::parse(&read_page(&admin.page)?)
        };
        let mut controller = Self {
            shared,
            info,
            io_queues: 0,
        };
        controller.io_queues = controller.set_queue_count(u16::MAX - 1)?;
        if options.shadow_doorbells && controller.info.has_shadow_doorbells() {
            controller.set_up_shadow_doorbells()?;
        }
        Ok(controller)
    }

    /// Hands the controller shadow doorbells for its I/O queues. A
    /// controller that refuses them (an error status) keeps its registers.
    fn set_up_shadow_doorbells(&mut self) -> Result<(), NvmeError> {
        let Some(shadow) = ShadowDoorbells::new(
            &self.shared.device,
            self.shared.cap.doorbell_stride(),
            self.io_queues,
        )?
        else {
            return Ok(());
        };
        let mut admin = self.shared.lock_admin();
        match self.shared.admin_command(
            &mut admin,
            "Doorbell Buffer Config",
            shadow.config_command(),
        ) {
            Ok(_) => admin.shadow = Some(Arc::new(shadow)),
            Err(NvmeError::Command { .. }) => {}
            Err(other) => return Err(other),
        }
        Ok(())
    }

    /// Whether the I/O queues use shadow doorbells
    /// ([`ControllerOptions::shadow_doorbells`]).
    pub fn shadow_doorbells(&self) -> bool {
        self.shared.lock_admin().shadow.is_some()
    }

    /// What Identify Controller said.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    /// The usrdrv device underneath (for DMA buffers).
    pub fn device(&self) -> &Device {
        &self.shared.device
    }

    /// The largest transfer one command may carry, in bytes (MDTS; 0 in the
    /// controller means no limit, taken here as 2 MiB).
    pub fn max_transfer(&self) -> usize {
        match self.info.mdts {
            0 => 2 << 20,
            mdts => PAGE << mdts.min(20),
        }
    }

    /// How many I/O queue pairs the controller granted.
    pub fn io_queue_count(&self) -> u16 {
        self.io_queues
    }

    /// The active namespaces, identified.
    pub fn namespaces(&mut self) -> Result<Vec<Namespace>, NvmeError> {
        let mut admin = self.shared.lock_admin();
        let prp1 = admin.page.device_addr();
        self.shared.admin_command(
            &mut admin,
            "Identify Active Namespace List",
            Command::identify(2, 0, prp1),
        )?;
        let ids: Vec<u32> = identify::active_namespaces(&read_page(&admin.page)?);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            self.shared.admin_command(
                &mut admin,
                "Identify Namespace",
                Command::identify(0, id, prp1),
            )?;
            out.push(Namespace::parse(id, &read_page(&admin.page)?));
        }
        Ok(out)
    }

    /// Creates an I/O queue pair of `depth` entries (2 up to CAP.MQES + 1),
    /// polled for completions, whose queued commands own [`DmaBuffer`]s.
    /// Deleted when dropped.
    pub fn io_queue(&mut self, depth: u16) -> Result<IoQueue, NvmeError> {
        self.io_queue_for(depth)
    }

    /// Like [`Controller::io_queue`], for queued commands owning buffers of
    /// type `B` (pool chunks, for example).
    pub fn io_queue_for<B: IoBuffer>(&mut self, depth: u16) -> Result<IoQueue<B>, NvmeError> {
        self.create_io_queue(depth, false)
    }

    /// Like [`Controller::io_queue_for`], with completions signalled by an
    /// MSI-X vector of the queue's own: waits sleep instead of polling.
    pub fn io_queue_with_interrupts<B: IoBuffer>(
        &mut self,
        depth: u16,
    ) -> Result<IoQueue<B>, NvmeError> {
        self.create_io_queue(depth, true)
    }

    /// The controller's MSI-X vectors, enabled on first use: one for the
    /// admin queue and one for each I/O queue the controller granted.
    fn interrupts(&self) -> Result<Arc<Interrupts>, NvmeError> {
        let mut slot = self
            .shared
            .interrupts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(irqs) = slot.as_ref() {
            return Ok(Arc::clone(irqs));
        }
        let device = &self.shared.device;
        let available = device.irq_info(IrqKind::Msix)?.count;
        let wanted = (u32::from(self.io_queues) + 1).min(available);
        let irqs = Arc::new(device.enable_interrupts(IrqKind::Msix, wanted)?);
        *slot = Some(Arc::clone(&irqs));
        Ok(irqs)
    }

    fn create_io_queue<B: IoBuffer>(
        &mut self,
        depth: u16,
        with_interrupts: bool,
    ) -> Result<IoQueue<B>, NvmeError> {
        let irqs = if with_interrupts {
            Some(self.interrupts()?)
        } else {
            None
        };
        let most = self.shared.cap.max_queue_entries().min(65535);
        let depth = depth.clamp(2, most as u16);
        // A completion queue twice as long, where the controller allows it,
        // so its head doorbell is rung about once per `depth` completions
        // (see `QueuePair::ring_head`).
        let cq_depth = (2 * u32::from(depth)).min(most) as u16;
        let mut admin = self.shared.lock_admin();
        let Some(qid) = (1..=self.io_queues).find(|q| !admin.qids.contains(q)) else {
            return Err(NvmeError::NoFreeQueue {
                granted: self.io_queues,
            });
        };
        let queue = QueuePair::new(
            &self.shared.device,
            qid,
            depth,
            cq_depth,
            self.shared.cap.doorbell_stride(),
            admin.shadow.clone(),
        )?;
        // Interrupts on vector `qid`, or off (polled).
        let vector = match &irqs {
            Some(irqs) if usize::from(qid) < irqs.len() => Some(qid),
            Some(irqs) => {
                return Err(NvmeError::Transfer {
                    what: format!(
                        "queue {qid} has no MSI-X vector of its own ({} enabled)",
                        irqs.len()
                    ),
                });
            }
            None => None,
        };
        self.shared.create_queue(&mut admin, &queue, vector)?;
        let generation = self.shared.generation();
        admin.qids.insert(qid);
        drop(admin);
        IoQueue::new(
            Arc::clone(&self.shared),
            queue,
            io::Setup {
                max_transfer: self.max_transfer(),
                interrupts: irqs,
                vector,
                generation,
                oncs: self.info.oncs,
                sgl_support: self.info.sgls,
            },
        )
    }

    /// Set Features, Number of Queues: asks for `wanted` pairs, returns how
    /// many were granted.
    fn set_queue_count(&mut self, wanted: u16) -> Result<u16, NvmeError> {
        let mut admin = self.shared.lock_admin();
        admin.queue_request = wanted;
        let done = self.shared.admin_command(
            &mut admin,
            "Set Features (Number of Queues)",
            recovery::queue_count_command(wanted),
        )?;
        Ok(recovery::granted_queues(&done))
    }

    /// Sets how long each command may take from its submission: past it the
    /// driver aborts the command, and if the controller does not abort it,
    /// resets the controller (see [`IoQueue::wait`]). Applies to commands
    /// submitted from then on; the default is [`DEFAULT_COMMAND_TIMEOUT`].
    pub fn set_command_timeout(&self, timeout: Duration) {
        self.shared
            .timeout
            .store(duration_nanos(timeout), Ordering::Relaxed);
    }

    /// How many times the driver reset the controller to recover from a
    /// command that neither completed nor could be aborted.
    pub fn resets(&self) -> u32 {
        self.shared.lock_admin().resets
    }

    /// How many Abort commands the driver sent for commands past their
    /// deadline.
    pub fn aborts(&self) -> u32 {
        self.shared.lock_admin().aborts
    }
}

impl Drop for Shared {
    /// The last handle is gone (controller and queues): stop the controller
    /// before its queues' memory is freed.
    fn drop(&mut self) {
        let _ = disable(&self.bar, self.cap, self.device.address());
    }
}

impl Shared {
    fn lock_admin(&self) -> MutexGuard<'_, Admin> {
        self.admin.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives up on the controller: it could not be brought back.
    fn disable_for_good(&self, admin: &mut Admin) {
        admin.disabled = true;
        self.disabled.store(true, Ordering::Release);
    }

    /// Whether the driver gave up on the controller ([`NvmeError::Disabled`]).
    fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Acquire)
    }

    /// Runs one admin command to completion.
    fn admin_command(
        &self,
        admin: &mut Admin,
        name: &'static str,
        command: Command,
    ) -> Result<Completion, NvmeError> {
        if admin.disabled {
            return Err(NvmeError::Disabled);
        }
        let result = self.run(&mut admin.queue, name, command);
        if matches!(result, Err(NvmeError::Timeout { .. })) {
            // The admin queue is stuck: start the controller again (which
            // ends whatever it was doing), or give up on it.
            let generation = self.generation();
            if self.reset_from(admin, generation).is_err() {
                self.disable_for_good(admin);
            }
        }
        result
    }

    /// Submits `command` on `queue` and polls for its completion.
    fn run(
        &self,
        queue: &mut QueuePair,
        name: &'static str,
        command: Command,
    ) -> Result<Completion, NvmeError> {
        // One admin command at a time: the id needs only to match.
        const ADMIN_CID: u16 = 0;
        queue.submit(&self.bar, command, ADMIN_CID)?;
        let done = self.wait_for(queue, name, |done| done.cid == ADMIN_CID, &mut |_| ())?;
        status_of(name, done)
    }

    /// Polls the admin `queue` until a completion `wanted` accepts arrives,
    /// handing the others to `other`, for at most the admin timeout.
    fn wait_for(
        &self,
        queue: &mut QueuePair,
        name: &'static str,
        wanted: impl Fn(&Completion) -> bool,
        other: &mut dyn FnMut(Completion),
    ) -> Result<Completion, NvmeError> {
        let mut spin = Spin::new();
        loop {
            if let Some(done) = queue.poll(&self.bar)? {
                if wanted(&done) {
                    return Ok(done);
                }
                other(done);
                continue;
            }
            self.live()?;
            let Some(waited) = spin.turn() else {
                std::hint::spin_loop();
                continue;
            };
            let timeout = self.admin_timeout();
            if waited > timeout {
                self.check_alive()?;
                return Err(NvmeError::Timeout {
                    what: format!("{name} on queue {}", queue.qid()),
                    waited: timeout,
                });
            }
            std::hint::spin_loop();
        }
    }

    /// Fails with [`NvmeError::Revoked`] once the kernel took the device back
    /// (one atomic load: cheap enough for every turn of a polling loop).
    fn live(&self) -> Result<(), NvmeError> {
        if self.device.is_revoked() {
            return Err(NvmeError::Revoked {
                address: self.device.address(),
            });
        }
        Ok(())
    }

    /// Fails if the controller reads all-ones or reports a fatal error.
    fn check_alive(&self) -> Result<(), NvmeError> {
        let address = self.device.address();
        let csts = self.bar.read32(regs::CSTS)?;
        if csts == u32::MAX {
            return Err(NvmeError::Gone { address });
        }
        if csts & regs::CSTS_FATAL != 0 {
            return Err(NvmeError::Fatal { address });
        }
        Ok(())
    }
}

/// `done`, or the error its status says.
/// `d` in nanoseconds, saturating.
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn status_of(name: &'static str, done: Completion) -> Result<Completion, NvmeError> {
    let status = Status(done.status_field());
    if status.is_success() {
        Ok(done)
    } else {
        Err(NvmeError::Command {
            command: name,
            status,
        })
    }
}

/// Clears CC.EN and waits for CSTS.RDY to clear.
fn disable(bar: &Bar, cap: Capabilities, address: PciAddress) -> Result<(), NvmeError> {
    let cc = bar.read32(regs::CC)?;
    if cc == u32::MAX {
        return Err(NvmeError::Gone { address });
    }
    bar.write32(regs::CC, cc & !regs::CC_ENABLE)?;
    wait_ready(bar, cap, address, false)
}

/// Waits until CSTS.RDY is `ready`, within CAP.TO.
fn wait_ready(
    bar: &Bar,
    cap: Capabilities,
    address: PciAddress,
    ready: bool,
) -> Result<(), NvmeError> {
    let start = Instant::now();
    loop {
        let csts = bar.read32(regs::CSTS)?;
        if csts == u32::MAX {
            return Err(NvmeError::Gone { address });
        }
        if ready && csts & regs::CSTS_FATAL != 0 {
            return Err(NvmeError::Fatal { address });
        }
        if (csts & regs::CSTS_READY != 0) == ready {
            return Ok(());
        }
        if start.elapsed() > cap.timeout() {
            return Err(NvmeError::Timeout {
                what: format!("CSTS.RDY = {} on {address}", u8::from(ready)),
                waited: cap.timeout(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The Identify data in `page`.
fn read_page(page: &DmaRegion) -> Result<[u8; PAGE], NvmeError> {
    let mut data = [0u8; PAGE];
    page.sync_for_cpu();
    page.read_bytes(0, &mut data)?;
    Ok(data)
}
