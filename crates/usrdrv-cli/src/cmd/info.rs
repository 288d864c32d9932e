//! `usrdrv info ADDR`: one device in detail: identity, BARs, capabilities,
//! interrupt support, NUMA node, IOMMU group members and, when the device is
//! bound to vfio-pci and can be opened, what VFIO reports about it; when it is
//! bound to the usrdma module, its node, counters and buffers.
//!
//! Everything is gathered into one [`Report`] first; the text and the JSON
//! (schema `usrdrv.info/1`) are both printed from it.

use std::path::Path;

use serde::Serialize;
use usrdrv::irq::{IrqInfo, IrqKind};
use usrdrv::pci::capabilities::{self, Capability};
use usrdrv::pci::{PciAddress, Resource, SysfsError, VFIO_PCI_DRIVER};
use usrdrv::vfio::{Device, VfioError, usable_group};

use crate::context::Context;
use crate::error::CliError;
use crate::names::PciNames;
use crate::output::{self, Table, Tone, human_size};
use crate::usrdma_view::USRDMA_DRIVER;

mod usrdma;

/// Arguments of `usrdrv info`.
#[derive(Debug, clap::Args)]
// The variant's doc comment in main.rs sets the about text and the short
// examples; `--help` shows this instead of those examples, so it repeats them.
#[command(after_long_help = "\
Examples:
  usrdrv info 0000:03:00.0
  usrdrv info 03:00.0 --json

Everything but the VFIO section comes from sysfs. The capability list (and so MSI and MSI-X)
needs the whole configuration space, which sysfs gives only to root (others see 64 bytes).

When the device is bound to vfio-pci, info opens it through VFIO (as root, or with access to
/dev/vfio/N) to show the regions, interrupt counts and reset support VFIO reports, then closes
it: vfio-pci may reset the device on that open and close. A device whose IOMMU group another
process has open is left alone (the VFIO section says the group is busy).

When the device is bound to usrdma (the module for machines without an IOMMU), a usrdma section
shows its node, counters and DMA buffers, read from the module's sysfs attributes without
opening the device.")]
pub struct InfoArgs {
    /// The device, DDDD:BB:DD.F or BB:DD.F.
    pub address: String,
}

/// The JSON schema name (bump it when a field changes meaning or disappears).
const SCHEMA: &str = "usrdrv.info/1";

/// Configuration space sysfs gives to users other than root.
const UNPRIVILEGED_CONFIG: usize = 64;

/// Where the interrupt pin register is in configuration space.
const INTERRUPT_PIN: usize = 0x3d;

/// Indexes of the BARs and the ROM among a function's resources and VFIO's regions.
const BARS: std::ops::RangeInclusive<usize> = 0..=5;
const ROM_INDEX: usize = 6;

/// `usrdrv info --json`.
#[derive(Debug, Serialize)]
struct Report {
    schema: &'static str,
    address: String,
    vendor_id: String,
    device_id: String,
    class: String,
    vendor_name: Option<String>,
    device_name: Option<String>,
    class_name: Option<String>,
    driver: Option<String>,
    numa_node: Option<u32>,
    iommu_group: Option<u32>,
    /// Bytes of configuration space read (64 for non-root), `None` if unreadable.
    config_size: Option<usize>,
    bars: Vec<Bar>,
    rom: Option<Rom>,
    /// `None` when the configuration space read is too short to hold the list.
    capabilities: Option<Vec<Cap>>,
    interrupts: Interrupts,
    /// `None` when the device has no IOMMU group.
    iommu_group_members: Option<Vec<Member>>,
    vfio: Vfio,
    /// `None` unless the device is bound to usrdma.
    usrdma: Option<usrdma::Usrdma>,
}

#[derive(Debug, Serialize)]
struct Bar {
    index: usize,
    /// `memory` or `io`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// 32 or 64 for memory BARs, `None` for I/O.
    address_bits: Option<u8>,
    prefetchable: bool,
    start: u64,
    size: u64,
    /// From VFIO's region flags; `None` unless VFIO was asked.
    mmap: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Rom {
    start: u64,
    size: u64,
}

#[derive(Debug, Serialize)]
struct Cap {
    offset: u16,
    /// 2 hex digits (standard) or 4 (extended).
    id: String,
    extended: bool,
    /// Extended capabilities only.
    version: Option<u8>,
    name: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct Interrupts {
    /// `INTA`..`INTD`, `none`, or `None` when unknown.
    intx_pin: Option<&'static str>,
    /// 0: no MSI capability; `None`: unknown.
    msi_vectors: Option<u32>,
    /// `None` when there is no MSI or it is unknown.
    msi_address_64: Option<bool>,
    msi_per_vector_masking: Option<bool>,
    /// 0: no MSI-X capability; `None`: unknown.
    msix_table_size: Option<u32>,
    msix_table: Option<BarOffset>,
    msix_pba: Option<BarOffset>,
}

#[derive(Debug, Serialize)]
struct BarOffset {
    bar: u8,
    offset: u32,
}

#[derive(Debug, Serialize)]
struct Member {
    address: String,
    vendor_id: Option<String>,
    device_id: Option<String>,
    driver: Option<String>,
}

#[derive(Debug, Serialize)]
struct Vfio {
    /// Whether the device was opened through VFIO (the rest is filled then).
    available: bool,
    /// Why not, as a stable code (see [`Unavailable`]); `None` when available.
    reason: Option<&'static str>,
    /// Why not, in words.
    message: Option<String>,
    regions: Option<Vec<Region>>,
    irqs: Option<Irqs>,
    reset_supported: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Region {
    index: u32,
    name: String,
    size: u64,
    offset: u64,
    readable: bool,
    writable: bool,
    mmap: bool,
}

#[derive(Debug, Serialize)]
struct Irqs {
    intx: Option<Irq>,
    msi: Option<Irq>,
    msix: Option<Irq>,
}

#[derive(Debug, Serialize)]
struct Irq {
    count: u32,
    maskable: bool,
    automasked: bool,
}

impl From<IrqInfo> for Irq {
    fn from(info: IrqInfo) -> Self {
        Self {
            count: info.count,
            maskable: info.maskable,
            automasked: info.automasked,
        }
    }
}

/// Why VFIO was not asked, or could not answer.
struct Unavailable {
    reason: &'static str,
    message: String,
}

impl Vfio {
    fn unavailable(why: Unavailable) -> Self {
        Self {
            available: false,
            reason: Some(why.reason),
            message: Some(why.message),
            regions: None,
            irqs: None,
            reset_supported: None,
        }
    }
}

/// Runs `usrdrv info`.
pub fn run(ctx: &Context, args: &InfoArgs) -> Result<i32, CliError> {
    let address: PciAddress = args.address.parse()?;
    let report = gather(ctx, address)?;
    if ctx.json {
        output::print_json(&report)?;
    } else {
        output::print(&render(ctx, &report))?;
    }
    Ok(0)
}

fn gather(ctx: &Context, address: PciAddress) -> Result<Report, CliError> {
    let sysfs = &ctx.sysfs;
    let function = sysfs.function(address)?;
    let names = ctx.names();
    let resources = sysfs.resources(address)?;
    let numa_node = sysfs.numa_node(address)?;
    let config = match sysfs.config(address) {
        Ok(config) => Some(config),
        // A device that disappears between the two reads is gone: say so.
        Err(err @ SysfsError::NoSuchDevice { .. }) => return Err(err.into()),
        Err(_) => None,
    };
    let vfio = vfio(ctx, address, function.iommu_group);
    let mmap = |index: usize| -> Option<bool> {
        let regions = vfio.regions.as_ref()?;
        regions
            .iter()
            .find(|r| r.index as usize == index)
            .map(|r| r.mmap)
    };
    let bars = resources
        .iter()
        .filter(|r| BARS.contains(&r.index) && r.size() > 0)
        .map(|r| bar(r, mmap(r.index)))
        .collect();
    let rom = resources
        .iter()
        .find(|r| r.index == ROM_INDEX && r.size() > 0)
        .map(|r| Rom {
            start: r.start,
            size: r.size(),
        });
    // Capabilities start at 0x40: 64 bytes (what non-root gets) cannot hold any.
    let full_config = config.as_deref().filter(|c| c.len() > UNPRIVILEGED_CONFIG);
    let capabilities = full_config.map(|c| capabilities::capabilities(c).iter().map(cap).collect());
    let interrupts = interrupts(config.as_deref(), full_config);
    let iommu_group_members = match function.iommu_group {
        Some(group) => Some(members(ctx, group)?),
        None => None,
    };
    let usrdma = usrdma::gather(ctx, address, function.driver.as_deref());
    Ok(Report {
        schema: SCHEMA,
        address: address.to_string(),
        vendor_id: format!("{:04x}", function.vendor_id),
        device_id: format!("{:04x}", function.device_id),
        class: format!("{:06x}", function.class),
        vendor_name: names.vendor(function.vendor_id).map(str::to_owned),
        device_name: names
            .device(function.vendor_id, function.device_id)
            .map(str::to_owned),
        class_name: names.class(function.class).map(str::to_owned),
        driver: function.driver,
        numa_node,
        iommu_group: function.iommu_group,
        config_size: config.as_ref().map(Vec::len),
        bars,
        rom,
        capabilities,
        interrupts,
        iommu_group_members,
        vfio,
        usrdma,
    })
}

fn bar(r: &Resource, mmap: Option<bool>) -> Bar {
    let memory = !r.is_io();
    Bar {
        index: r.index,
        kind: if memory { "memory" } else { "io" },
        address_bits: memory.then_some(if r.is_64bit() { 64 } else { 32 }),
        prefetchable: memory && r.is_prefetchable(),
        start: r.start,
        size: r.size(),
        mmap,
    }
}

fn cap(c: &Capability) -> Cap {
    match *c {
        Capability::Standard { id, offset } => Cap {
            offset,
            id: format!("{id:02x}"),
            extended: false,
            version: None,
            name: c.name(),
        },
        Capability::Extended {
            id,
            version,
            offset,
        } => Cap {
            offset,
            id: format!("{id:04x}"),
            extended: true,
            version: Some(version),
            name: c.name(),
        },
    }
}

/// Interrupt support from the configuration space: the pin from the header
/// (`config`), MSI and MSI-X from the capability list (`full`, when readable).
fn interrupts(config: Option<&[u8]>, full: Option<&[u8]>) -> Interrupts {
    let intx_pin = config
        .and_then(|c| c.get(INTERRUPT_PIN))
        .map(|pin| match pin {
            0 => "none",
            1 => "INTA",
            2 => "INTB",
            3 => "INTC",
            4 => "INTD",
            // Reserved values: the device claims a pin the spec does not name.
            _ => "invalid",
        });
    let msi = full.map(capabilities::msi);
    let msix = full.map(capabilities::msix);
    Interrupts {
        intx_pin,
        msi_vectors: msi.map(|m| m.map_or(0, |m| m.vectors)),
        msi_address_64: msi.flatten().map(|m| m.address_64),
        msi_per_vector_masking: msi.flatten().map(|m| m.per_vector_masking),
        msix_table_size: msix.map(|m| m.map_or(0, |m| m.table_size)),
        msix_table: msix.flatten().map(|m| BarOffset {
            bar: m.table.0,
            offset: m.table.1,
        }),
        msix_pba: msix.flatten().map(|m| BarOffset {
            bar: m.pba.0,
            offset: m.pba.1,
        }),
    }
}

fn members(ctx: &Context, group: u32) -> Result<Vec<Member>, CliError> {
    let mut members = Vec::new();
    for address in ctx.sysfs.iommu_group_members(group)? {
        // A member that vanishes or reads oddly is still listed, with what is known.
        let function = ctx.sysfs.function(address).ok();
        members.push(Member {
            address: address.to_string(),
            vendor_id: function.as_ref().map(|f| format!("{:04x}", f.vendor_id)),
            device_id: function.as_ref().map(|f| format!("{:04x}", f.device_id)),
            driver: match function {
                Some(f) => f.driver,
                None => ctx.sysfs.driver(address).ok().flatten(),
            },
        });
    }
    Ok(members)
}

/// What VFIO reports, when the device is bound to vfio-pci and can be opened.
fn vfio(ctx: &Context, address: PciAddress, group: Option<u32>) -> Vfio {
    // Without an IOMMU, binding to vfio-pci would not help: say that first.
    let usable = match group {
        None => Err(VfioError::NoIommu { address }),
        Some(_) => usable_group(&ctx.sysfs, address),
    };
    if let Err(err) = usable {
        return Vfio::unavailable(unavailable(address, &err));
    }
    // `Device::open` reads the system's sysfs: with another tree (tests), the
    // device asked about is not the one it would open.
    if ctx.sysfs_root != Path::new("/sys") {
        return Vfio::unavailable(Unavailable {
            reason: "not_system_sysfs",
            message: format!(
                "not asked: {} is not the system's sysfs",
                ctx.sysfs_root.display()
            ),
        });
    }
    let device = match Device::open(address) {
        Ok(device) => device,
        Err(err) => return Vfio::unavailable(unavailable(address, &err)),
    };
    let regions = (0..device.num_regions())
        // Regions the device lacks (VGA on most devices) are refused: skip them.
        .filter_map(|index| device.region_info(index).ok())
        .map(|r| Region {
            index: r.index,
            name: region_name(r.index),
            size: r.size,
            offset: r.offset,
            readable: r.readable(),
            writable: r.writable(),
            mmap: r.mappable(),
        })
        .collect();
    let irq = |kind| device.irq_info(kind).ok().map(Irq::from);
    Vfio {
        available: true,
        reason: None,
        message: None,
        regions: Some(regions),
        irqs: Some(Irqs {
            intx: irq(IrqKind::Intx),
            msi: irq(IrqKind::Msi),
            msix: irq(IrqKind::Msix),
        }),
        reset_supported: Some(device.supports_reset()),
    }
}

fn unavailable(address: PciAddress, err: &VfioError) -> Unavailable {
    let (reason, message) = match err {
        VfioError::NotBoundToVfio { driver, .. } if driver.as_deref() == Some(USRDMA_DRIVER) => (
            "not_bound_to_vfio_pci",
            format!(
                "bound to {USRDMA_DRIVER}, not {VFIO_PCI_DRIVER}: see the usrdma section (`usrdrv bind {address}` moves it to VFIO)"
            ),
        ),
        VfioError::NotBoundToVfio { driver, .. } => (
            "not_bound_to_vfio_pci",
            format!(
                "not bound to {VFIO_PCI_DRIVER} ({}): `usrdrv bind {address}`, then ask again",
                driver
                    .as_deref()
                    .map_or_else(|| "no driver".to_owned(), |d| format!("bound to {d}"))
            ),
        ),
        VfioError::NoIommu { .. } => (
            "no_iommu_group",
            "no IOMMU group: no IOMMU translates for the device, so VFIO cannot open it".to_owned(),
        ),
        VfioError::GroupNotViable { .. } => ("group_not_viable", err.to_string()),
        VfioError::GroupBusy { group } => (
            "group_busy",
            format!(
                "IOMMU group {group} is busy: another process has it open (VFIO allows one opener per group)"
            ),
        ),
        VfioError::PermissionDenied { path } => (
            "permission_denied",
            format!(
                "cannot open {}: not root (run as root, or give your user the group's device node)",
                path.display()
            ),
        ),
        VfioError::NotPresent { .. } => ("vfio_not_loaded", err.to_string()),
        other => ("error", with_sources(other)),
    };
    Unavailable { reason, message }
}

/// An error and its causes on one line.
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn region_name(index: u32) -> String {
    match index {
        0..=5 => format!("BAR{index}"),
        6 => "ROM".to_owned(),
        7 => "config".to_owned(),
        8 => "VGA".to_owned(),
        n => format!("region {n}"),
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The text output.
fn render(ctx: &Context, r: &Report) -> String {
    let style = &ctx.style;
    let mut out = String::new();
    let name = match (&r.vendor_name, &r.device_name) {
        (Some(v), Some(d)) => format!("  {v} {d}"),
        (Some(v), None) => format!("  {v}"),
        _ => String::new(),
    };
    out.push_str(&format!(
        "{}  {}:{}{name}\n",
        r.address, r.vendor_id, r.device_id
    ));
    let field = |label: &str, value: String| format!("{label:<14}{value}\n");
    let class_name = r
        .class_name
        .as_ref()
        .map_or_else(String::new, |n| format!(" ({n})"));
    out.push_str(&field("class", format!("{}{class_name}", r.class)));
    out.push_str(&field(
        "driver",
        r.driver.clone().unwrap_or_else(|| "none".to_owned()),
    ));
    out.push_str(&field(
        "NUMA node",
        r.numa_node
            .map_or_else(|| "none".to_owned(), |n| n.to_string()),
    ));
    out.push_str(&field(
        "IOMMU group",
        r.iommu_group
            .map_or_else(|| "none (no IOMMU)".to_owned(), |g| g.to_string()),
    ));
    match r.config_size {
        Some(size) if size <= UNPRIVILEGED_CONFIG => out.push_str(&field(
            "config space",
            format!(
                "{size} bytes readable (all of it needs root): capabilities, MSI and MSI-X unknown"
            ),
        )),
        Some(_) => {}
        None => out.push_str(&field(
            "config space",
            "unreadable: capabilities and interrupts unknown".to_owned(),
        )),
    }

    out.push_str("\nBARs\n");
    if r.bars.is_empty() && r.rom.is_none() {
        out.push_str("  none\n");
    } else {
        let mut table = Table::new(&["BAR", "TYPE", "SIZE", "START", "PREFETCHABLE", "MMAP"]);
        for b in &r.bars {
            let kind = match b.address_bits {
                Some(bits) => format!("memory {bits}-bit"),
                None => "I/O".to_owned(),
            };
            table.row(vec![
                b.index.to_string(),
                kind,
                human_size(b.size),
                format!("{:#x}", b.start),
                yes_no(b.prefetchable),
                b.mmap.map_or_else(|| "unknown".to_owned(), yes_no),
            ]);
        }
        if let Some(rom) = &r.rom {
            table.row(vec![
                "ROM".to_owned(),
                "expansion ROM".to_owned(),
                human_size(rom.size),
                format!("{:#x}", rom.start),
                "-".to_owned(),
                "-".to_owned(),
            ]);
        }
        out.push_str(&indent(&table.render(style)));
        if r.bars.iter().any(|b| b.mmap.is_none()) {
            out.push_str(
                "  (MMAP comes from VFIO: unknown unless the device is open through vfio-pci)\n",
            );
        }
    }

    out.push_str("\nCapabilities\n");
    match &r.capabilities {
        None => out.push_str("  unknown: the capability list is not readable (needs root)\n"),
        Some(caps) if caps.is_empty() => out.push_str("  none\n"),
        Some(caps) => {
            let mut table = Table::new(&["OFFSET", "ID", "NAME"]);
            for c in caps {
                let id = match c.version {
                    Some(v) => format!("0x{} v{v}", c.id),
                    None => format!("0x{}", c.id),
                };
                table.row(vec![
                    format!("{:#05x}", c.offset),
                    id,
                    c.name.unwrap_or("unknown").to_owned(),
                ]);
            }
            out.push_str(&indent(&table.render(style)));
        }
    }

    out.push_str("\nInterrupts\n");
    let i = &r.interrupts;
    let mut table = Table::new(&["KIND", "SUPPORTED", "DETAIL"]);
    let unknown = || ("unknown".to_owned(), String::new());
    let (intx, intx_detail) = match i.intx_pin {
        None => unknown(),
        Some("none") => ("no".to_owned(), "interrupt pin 0".to_owned()),
        Some(pin) => ("yes".to_owned(), format!("pin {pin}")),
    };
    table.row(vec!["INTx".to_owned(), intx, intx_detail]);
    let (msi, msi_detail) = match i.msi_vectors {
        None => unknown(),
        Some(0) => ("no".to_owned(), String::new()),
        Some(n) => (
            "yes".to_owned(),
            format!(
                "{n} vector{}, {}-bit address, {}per-vector masking",
                if n == 1 { "" } else { "s" },
                if i.msi_address_64 == Some(true) {
                    64
                } else {
                    32
                },
                if i.msi_per_vector_masking == Some(true) {
                    ""
                } else {
                    "no "
                },
            ),
        ),
    };
    table.row(vec!["MSI".to_owned(), msi, msi_detail]);
    let (msix, msix_detail) = match (i.msix_table_size, &i.msix_table, &i.msix_pba) {
        (None, ..) => unknown(),
        (Some(0), ..) => ("no".to_owned(), String::new()),
        (Some(n), Some(table), Some(pba)) => (
            "yes".to_owned(),
            format!(
                "table size {n}, table in BAR{} at {:#x}, PBA in BAR{} at {:#x}",
                table.bar, table.offset, pba.bar, pba.offset
            ),
        ),
        (Some(n), ..) => ("yes".to_owned(), format!("table size {n}")),
    };
    table.row(vec!["MSI-X".to_owned(), msix, msix_detail]);
    out.push_str(&indent(&table.render(style)));

    match (&r.iommu_group, &r.iommu_group_members) {
        (Some(group), Some(members)) => {
            out.push_str(&format!("\nIOMMU group {group}\n"));
            let names = ctx.names();
            let mut table = Table::new(&["ADDRESS", "ID", "DRIVER", "NAME"]);
            for m in members {
                let id = match (&m.vendor_id, &m.device_id) {
                    (Some(v), Some(d)) => format!("{v}:{d}"),
                    _ => "?".to_owned(),
                };
                let note = if m.address == r.address {
                    "(this device)".to_owned()
                } else {
                    member_name(&names, m)
                };
                table.toned_row(vec![
                    (m.address.clone(), Tone::Plain),
                    (id, Tone::Plain),
                    (
                        m.driver.clone().unwrap_or_else(|| "none".to_owned()),
                        Tone::Plain,
                    ),
                    (note, Tone::Dim),
                ]);
            }
            out.push_str(&indent(&table.render(style)));
        }
        _ => out.push_str("\nIOMMU group\n  none: no IOMMU translates for this device\n"),
    }

    out.push_str("\nVFIO\n");
    let v = &r.vfio;
    match (&v.regions, &v.irqs, v.reset_supported) {
        (Some(regions), Some(irqs), Some(reset)) if v.available => {
            out.push_str(&format!(
                "  opened through {VFIO_PCI_DRIVER}; reset {}\n",
                if reset { "supported" } else { "not supported" }
            ));
            let mut table = Table::new(&["REGION", "SIZE", "READ", "WRITE", "MMAP"]);
            for region in regions.iter().filter(|r| r.size > 0) {
                table.row(vec![
                    region.name.clone(),
                    human_size(region.size),
                    yes_no(region.readable),
                    yes_no(region.writable),
                    yes_no(region.mmap),
                ]);
            }
            out.push_str(&indent(&table.render(style)));
            let mut table = Table::new(&["IRQ", "COUNT", "MASKABLE", "AUTOMASKED"]);
            for (kind, irq) in [
                (IrqKind::Intx, &irqs.intx),
                (IrqKind::Msi, &irqs.msi),
                (IrqKind::Msix, &irqs.msix),
            ] {
                let cells = match irq {
                    Some(irq) => vec![
                        kind.to_string(),
                        irq.count.to_string(),
                        yes_no(irq.maskable),
                        yes_no(irq.automasked),
                    ],
                    None => vec![kind.to_string(), "unknown".to_owned()],
                };
                table.row(cells);
            }
            out.push('\n');
            out.push_str(&indent(&table.render(style)));
        }
        _ => {
            let message = v.message.as_deref().unwrap_or("not available");
            out.push_str(&format!("  {}\n", style.paint(Tone::Dim, message)));
        }
    }
    if let Some(u) = &r.usrdma {
        out.push_str(&usrdma::render(style, u));
    }
    out
}

fn member_name(names: &PciNames, m: &Member) -> String {
    let parse = |id: &Option<String>| id.as_deref().and_then(|t| u16::from_str_radix(t, 16).ok());
    match (parse(&m.vendor_id), parse(&m.device_id)) {
        (Some(v), Some(d)) => match (names.vendor(v), names.device(v, d)) {
            (Some(vn), Some(dn)) => format!("{vn} {dn}"),
            (Some(vn), None) => vn.to_owned(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_distinguish_absent_from_unknown() {
        let mut config = vec![0u8; 256];
        config[INTERRUPT_PIN] = 1;
        let i = interrupts(Some(&config), Some(&config));
        assert_eq!(i.intx_pin, Some("INTA"));
        assert_eq!((i.msi_vectors, i.msix_table_size), (Some(0), Some(0)));
        let i = interrupts(Some(&config[..64]), None);
        assert_eq!(i.intx_pin, Some("INTA"));
        assert_eq!((i.msi_vectors, i.msix_table_size), (None, None));
        let i = interrupts(None, None);
        assert_eq!(i.intx_pin, None);
    }
}
