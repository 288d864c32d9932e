//! How the command shows the usrdma module's view of a device: its node,
//! buffers and counters, as JSON (shared by `usrdrv.buffers/2` and the
//! `usrdma` section of `usrdrv.info/1`) and as table rows.

use std::path::PathBuf;

use serde::Serialize;
use usrdrv::pci::PciAddress;
use usrdrv::usrdma::listing::{UsrdmaBuffer, UsrdmaStats};

use crate::context::Context;
use crate::output::{Table, human_size};

pub use usrdrv::usrdma::USRDMA_DRIVER;

/// The device node of `address` when bound to usrdma (`/dev/usrdma/ADDR`).
pub fn node(ctx: &Context, address: PciAddress) -> PathBuf {
    ctx.devfs.join("usrdma").join(address.to_string())
}

/// Whether the usrdma driver is registered (its module loaded).
pub fn loaded(ctx: &Context) -> bool {
    ctx.sysfs.driver_exists(USRDMA_DRIVER)
}

/// One buffer, as JSON.
#[derive(Debug, Serialize)]
pub struct BufferJson {
    /// The device it belongs to.
    pub device: String,
    /// Its id on that device.
    pub id: u32,
    /// `None` for an anonymous buffer.
    pub name: Option<String>,
    /// Bytes.
    pub size: u64,
    /// `0x…`: the address the device uses.
    pub device_addr: String,
    /// Mapped write-combining for the CPU.
    pub write_combining: bool,
    /// Survives the close of the file that allocated it.
    pub persistent: bool,
    /// The allocating process, `None` when it has exited.
    pub owner: Option<u32>,
    /// Its command name (`/proc/PID/comm`), `None` when unknown.
    pub owner_command: Option<String>,
}

impl BufferJson {
    /// The JSON of `buffer` on `device`; the owner's name from procfs.
    pub fn new(ctx: &Context, device: PciAddress, buffer: &UsrdmaBuffer) -> Self {
        Self {
            device: device.to_string(),
            id: buffer.id,
            name: buffer.name.clone(),
            size: buffer.size,
            device_addr: format!("{:#x}", buffer.dma_addr),
            write_combining: buffer.flags.write_combining,
            persistent: buffer.flags.persistent,
            owner: buffer.owner_pid,
            owner_command: buffer.owner_pid.and_then(|pid| command(ctx, pid)),
        }
    }
}

/// The counters, as JSON (the fields of `usrdma_stats`).
#[derive(Debug, Serialize)]
pub struct StatsJson {
    /// A process has the node open.
    pub opened: bool,
    /// Buffers on the device, of every owner.
    pub buffers: u64,
    /// Their total size.
    pub buffer_bytes: u64,
    /// Mappings of user memory for DMA.
    pub user_mappings: u64,
    /// Pages those pin.
    pub pinned_pages: u64,
    /// Bytes of bounce buffers.
    pub bounce_bytes: u64,
    /// Interrupt vectors set up.
    pub irqs: u64,
    /// Interrupts signalled since the module was loaded.
    pub irq_count: u64,
    /// Released owners' memory the module keeps (null from a module
    /// without the quarantine).
    pub quarantine: Option<QuarantineJson>,
}

/// The quarantine's counters, as JSON.
#[derive(Debug, Serialize)]
pub struct QuarantineJson {
    /// Buffers kept.
    pub buffers: u64,
    /// Their bytes and those of kept bounce buffers.
    pub bytes: u64,
    /// Pinned pages kept.
    pub pages: u64,
}

impl From<&UsrdmaStats> for StatsJson {
    fn from(s: &UsrdmaStats) -> Self {
        Self {
            opened: s.opened,
            buffers: s.buffers,
            buffer_bytes: s.buffer_bytes,
            user_mappings: s.user_mappings,
            pinned_pages: s.pinned_pages,
            bounce_bytes: s.bounce_bytes,
            irqs: s.irqs,
            irq_count: s.irq_count,
            quarantine: s.quarantine.map(|q| QuarantineJson {
                buffers: q.buffers,
                bytes: q.bytes,
                pages: q.pages,
            }),
        }
    }
}

/// The command name of process `pid`, if procfs shows it.
fn command(ctx: &Context, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(ctx.procfs.join(pid.to_string()).join("comm")).ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// A table of buffers; the DEVICE column only when `with_device`.
pub fn buffer_table(buffers: &[BufferJson], with_device: bool) -> Table {
    let mut header = vec!["ID", "NAME", "SIZE", "DEVICE ADDRESS", "FLAGS", "OWNER"];
    if with_device {
        header.insert(0, "DEVICE");
    }
    let mut table = Table::new(&header);
    for b in buffers {
        let mut cells = vec![
            b.id.to_string(),
            b.name.clone().unwrap_or_else(|| "-".to_owned()),
            human_size(b.size),
            b.device_addr.clone(),
            flags_text(b),
            owner_text(b),
        ];
        if with_device {
            cells.insert(0, b.device.clone());
        }
        table.row(cells);
    }
    table
}

/// `persistent,wc`, or `-` for none.
fn flags_text(b: &BufferJson) -> String {
    let mut words = Vec::new();
    if b.persistent {
        words.push("persistent");
    }
    if b.write_combining {
        words.push("wc");
    }
    if words.is_empty() {
        "-".to_owned()
    } else {
        words.join(",")
    }
}

/// `4242 (edu-demo)`, `4242`, or `exited` (the module reports 0).
fn owner_text(b: &BufferJson) -> String {
    match (b.owner, &b.owner_command) {
        (Some(pid), Some(command)) => format!("{pid} ({command})"),
        (Some(pid), None) => pid.to_string(),
        (None, _) => "exited".to_owned(),
    }
}
