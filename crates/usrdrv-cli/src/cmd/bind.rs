//! `usrdrv bind`, `unbind` and `restore`: moving a device between drivers
//! through `driver_override` and `drivers_probe`, remembering where it came
//! from, refusing to break what the kernel visibly uses, and never leaving a
//! device without a driver when something fails.
//!
//! Binding to vfio-pci checks the device's IOMMU group (VFIO needs all of
//! it); binding to usrdma (the module for machines without an IOMMU) does
//! not, but says when the module is missing. Both report the device node a
//! driver then opens.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use usrdrv::pci::{PciAddress, SysfsError, VFIO_PCI_DRIVER};

use crate::context::Context;
use crate::error::CliError;
use crate::holders::{self, Holder};
use crate::moves::{self, Move};
use crate::output;
use crate::state::Remembered;
use crate::usrdma_view::{self, USRDMA_DRIVER};

/// Arguments of `usrdrv bind`.
#[derive(Debug, clap::Args)]
pub struct BindArgs {
    /// The device, DDDD:BB:DD.F or BB:DD.F.
    pub address: String,
    /// The driver to bind to: vfio-pci (with an IOMMU), usrdma (without
    /// one: the kmod/usrdma module), or any other PCI driver.
    #[arg(long, default_value = VFIO_PCI_DRIVER)]
    pub driver: String,
    /// Bind every device of the IOMMU group (VFIO needs the whole group;
    /// other drivers ignore this).
    #[arg(long)]
    pub group: bool,
    /// Bind even if other group members are on other drivers or the device is
    /// in use (mounted filesystems, interfaces up, a process holding it).
    #[arg(long)]
    pub force: bool,
    /// With --force, how many seconds to wait for processes holding the
    /// device over VFIO to let go before reporting them.
    #[arg(long, value_name = "SECS", default_value_t = moves::DEFAULT_WAIT.as_secs())]
    pub wait: u64,
}

/// Arguments of `usrdrv unbind` and `usrdrv restore`.
#[derive(Debug, clap::Args)]
pub struct AddressArgs {
    /// The device, DDDD:BB:DD.F or BB:DD.F.
    pub address: String,
    /// Move the device even if it is in use (mounted filesystems, interfaces
    /// up, a process holding its device node open).
    #[arg(long)]
    pub force: bool,
    /// With --force, how many seconds to wait for processes holding the
    /// device over VFIO to let go before reporting them.
    #[arg(long, value_name = "SECS", default_value_t = moves::DEFAULT_WAIT.as_secs())]
    pub wait: u64,
}

/// The processes holding `address` over VFIO that a forced move waits on
/// (usrdma takes its device back without waiting; nothing waits unforced,
/// because the move is refused).
fn forced_holders(
    ctx: &Context,
    force: bool,
    address: PciAddress,
    from: Option<&str>,
) -> Vec<Holder> {
    match node(ctx, address, from) {
        Some(node) if force && from == Some(VFIO_PCI_DRIVER) => holders::holders(ctx, &node),
        _ => Vec::new(),
    }
}

/// Refuses to take `address` from its driver (`driver`) while it is visibly in
/// use: a mounted filesystem or an interface that is up on it, or a process
/// holding its device node (`/dev/vfio/GROUP`, `/dev/usrdma/ADDR`) open.
fn check_not_in_use(
    ctx: &Context,
    address: PciAddress,
    driver: Option<&str>,
    mounts: &str,
) -> Result<(), CliError> {
    let mut usages: Vec<String> = ctx
        .sysfs
        .usages(address, mounts)?
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(node) = node(ctx, address, driver) {
        for holder in holders::holders(ctx, &node) {
            usages.push(format!("{holder} holds {} open", node.display()));
        }
    }
    if usages.is_empty() {
        Ok(())
    } else {
        Err(CliError::InUse { address, usages })
    }
}

/// Whether `name` can be a driver's directory name under
/// `/sys/bus/pci/drivers` (not a path: no `/`, not `.` or `..`).
fn plausible_driver_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// One driver change, as reported (schema `usrdrv.bind/1`).
#[derive(Debug, Serialize)]
struct Change {
    address: String,
    from: Option<String>,
    to: Option<String>,
    /// The node a driver opens now: `/dev/usrdma/ADDR` on usrdma,
    /// `/dev/vfio/GROUP` on vfio-pci; `None` otherwise.
    node: Option<String>,
}

impl Change {
    fn new(ctx: &Context, address: PciAddress, from: Option<String>, to: Option<String>) -> Self {
        let node = node(ctx, address, to.as_deref()).map(|p| p.display().to_string());
        Self {
            address: address.to_string(),
            from,
            to,
            node,
        }
    }
}

/// The device node of `address` on `driver`, when the driver has one usrdrv knows.
fn node(ctx: &Context, address: PciAddress, driver: Option<&str>) -> Option<PathBuf> {
    match driver? {
        USRDMA_DRIVER => Some(usrdma_view::node(ctx, address)),
        VFIO_PCI_DRIVER => {
            let group = ctx.sysfs.iommu_group(address).ok().flatten()?;
            Some(ctx.devfs.join("vfio").join(group.to_string()))
        }
        _ => None,
    }
}

#[derive(Debug, Serialize)]
struct Report {
    schema: &'static str,
    changes: Vec<Change>,
}

fn report(ctx: &Context, changes: Vec<Change>) -> Result<i32, CliError> {
    if ctx.json {
        output::print_json(&Report {
            schema: "usrdrv.bind/1",
            changes,
        })?;
        return Ok(0);
    }
    let mut text = String::new();
    for c in &changes {
        let from = c.from.as_deref().unwrap_or("no driver");
        let to = c.to.as_deref().unwrap_or("no driver");
        if c.from == c.to {
            text.push_str(&format!("{}: already on {to}\n", c.address));
        } else {
            text.push_str(&format!("{}: {from} -> {to}\n", c.address));
        }
        if let Some(node) = &c.node {
            let missing = if PathBuf::from(node).exists() {
                ""
            } else if c.to.as_deref() == Some(USRDMA_DRIVER) {
                " (not there: is devtmpfs mounted on /dev? `dmesg | grep usrdma` shows what the module did)"
            } else {
                " (not there yet)"
            };
            text.push_str(&format!("  device node: {node}{missing}\n"));
        }
    }
    output::print(&text)?;
    Ok(0)
}

/// Runs `usrdrv bind`.
pub fn bind(ctx: &Context, args: &BindArgs) -> Result<i32, CliError> {
    let address: PciAddress = args.address.parse()?;
    let sysfs = &ctx.sysfs;
    let function = sysfs.function(address)?;
    if args.driver == USRDMA_DRIVER && !usrdma_view::loaded(ctx) {
        return Err(CliError::UsrdmaNotLoaded {
            driver_dir: ctx.sysfs_path("bus/pci/drivers").join(USRDMA_DRIVER),
        });
    }
    if !plausible_driver_name(&args.driver) || !sysfs.driver_exists(&args.driver) {
        return Err(CliError::NoSuchDriver {
            driver: args.driver.clone(),
            drivers_dir: ctx.sysfs_path("bus/pci/drivers"),
        });
    }
    let mut targets = vec![address];
    if let Some(group) = function.iommu_group
        && args.driver == VFIO_PCI_DRIVER
    {
        let mut others = Vec::new();
        for member in sysfs.iommu_group_members(group)? {
            if member == address {
                continue;
            }
            match sysfs.driver(member)? {
                Some(driver) if driver != VFIO_PCI_DRIVER => others.push((member, driver)),
                _ => {}
            }
        }
        if args.group {
            targets.extend(others.iter().map(|(a, _)| *a));
        } else if !others.is_empty() && !args.force {
            return Err(CliError::GroupInUse {
                address,
                group,
                members: others,
            });
        }
    }
    let mut moves = Vec::new();
    for target in targets {
        let from = sysfs.driver(target)?;
        moves.push((target, from));
    }
    if !args.force {
        let mounts = ctx.mounts();
        for (target, from) in &moves {
            if from.as_deref() != Some(args.driver.as_str()) {
                check_not_in_use(ctx, *target, from.as_deref(), &mounts)?;
            }
        }
    }
    let mut remembered = Remembered::load(&ctx.state_dir)?;
    // A record that cannot be written stops the command while nothing changed.
    remembered.check_writable()?;
    let mut changes = Vec::new();
    for (target, from) in moves {
        if from.as_deref() == Some(args.driver.as_str()) {
            changes.push(Change::new(ctx, target, from.clone(), from));
            continue;
        }
        remembered.remember(target, from.clone());
        let held = forced_holders(ctx, args.force, target, from.as_deref());
        let moved = if held.is_empty() {
            sysfs.bind(target, &args.driver).map_err(|err| match err {
                SysfsError::BindFailed { address, now, .. } if args.driver == USRDMA_DRIVER => {
                    CliError::UsrdmaRefused { address, now }
                }
                other => other.into(),
            })
        } else {
            let wait = Duration::from_secs(args.wait);
            moves::bounded(ctx, target, &Move::Bind(args.driver.clone()), &held, wait)
        };
        if let Err(err) = moved {
            if matches!(err, CliError::StillHeld { .. }) {
                // The move goes on: keep its record for `usrdrv restore`.
                remembered.save()?;
                return Err(err);
            }
            // The library already put this one back; put back the ones changed before it.
            for done in &changes {
                if let Ok(done_address) = done.address.parse::<PciAddress>()
                    && done.from != done.to
                {
                    let _ = sysfs.reprobe(done_address);
                }
            }
            return Err(err);
        }
        changes.push(Change::new(ctx, target, from, Some(args.driver.clone())));
    }
    remembered.save()?;
    let code = report(ctx, changes)?;
    if args.driver == USRDMA_DRIVER
        && let Some(group) = function.iommu_group
        && !ctx.json
    {
        output::print(&format!(
            "note: {address} is in IOMMU group {group}: with an IOMMU, vfio-pci (`usrdrv bind {address}`) isolates the device's DMA; usrdma does not\n"
        ))?;
    }
    Ok(code)
}

/// Runs `usrdrv unbind`.
pub fn unbind(ctx: &Context, args: &AddressArgs) -> Result<i32, CliError> {
    let address: PciAddress = args.address.parse()?;
    let from = ctx.sysfs.driver(address)?;
    if from.is_some() && !args.force {
        check_not_in_use(ctx, address, from.as_deref(), &ctx.mounts())?;
    }
    let mut remembered = Remembered::load(&ctx.state_dir)?;
    if from.is_some() {
        remembered.remember(address, from.clone());
        remembered.save()?;
        let held = forced_holders(ctx, args.force, address, from.as_deref());
        let wait = Duration::from_secs(args.wait);
        moves::bounded(ctx, address, &Move::Unbind, &held, wait)?;
    }
    report(ctx, vec![Change::new(ctx, address, from, None)])
}

/// Runs `usrdrv restore`.
pub fn restore(ctx: &Context, args: &AddressArgs) -> Result<i32, CliError> {
    let address: PciAddress = args.address.parse()?;
    let from = ctx.sysfs.driver(address)?;
    let mut remembered = Remembered::load(&ctx.state_dir)?;
    let Some(original) = remembered.get(address) else {
        return Err(CliError::NothingToRestore {
            address,
            state: remembered.path().to_owned(),
        });
    };
    if from.is_some() && from != original && !args.force {
        check_not_in_use(ctx, address, from.as_deref(), &ctx.mounts())?;
    }
    let held = forced_holders(ctx, args.force, address, from.as_deref());
    let wait = Duration::from_secs(args.wait);
    let now = match &original {
        // Back to whatever the kernel picks, which is the driver it had.
        Some(driver) if from.as_deref() != Some(driver.as_str()) => {
            moves::bounded(ctx, address, &Move::Reprobe, &held, wait)?;
            if ctx.sysfs.driver(address)?.as_deref() != Some(driver.as_str()) {
                // The kernel chose otherwise (or nothing): ask for it by name.
                ctx.sysfs.bind(address, driver)?;
            }
            ctx.sysfs.driver(address)?
        }
        Some(_) => from.clone(),
        None => {
            moves::bounded(ctx, address, &Move::Unbind, &held, wait)?;
            None
        }
    };
    remembered.forget(address);
    remembered.save()?;
    report(ctx, vec![Change::new(ctx, address, from, now)])
}
