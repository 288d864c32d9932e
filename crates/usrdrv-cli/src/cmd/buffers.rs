//! `usrdrv buffers [ADDR]`: the DMA buffers the usrdma module holds, on
//! every device bound to it (or one), from its read-only sysfs attributes:
//! the devices are not opened, so this works while a driver has them.
//!
//! Over VFIO there is nothing system-wide to list: named buffers
//! (`usrdrv::dma::NamedBuffers`) live in the process that made them. The
//! text output says so when no device is bound to usrdma.
//!
//! `--json` prints schema `usrdrv.buffers/2` (see JSON.md).

use serde::Serialize;
use usrdrv::pci::{PciAddress, SysfsError};
use usrdrv::usrdma::listing::{self, ListingError};

use crate::context::Context;
use crate::error::{CliError, LOAD_HINT};
use crate::output::{self, human_size};
use crate::usrdma_view::{self, BufferJson};

/// The JSON schema name.
const SCHEMA: &str = "usrdrv.buffers/2";

/// Arguments of `usrdrv buffers`.
#[derive(Debug, clap::Args)]
pub struct BuffersArgs {
    /// Only this device (DDDD:BB:DD.F or BB:DD.F), which must be bound to usrdma.
    pub address: Option<String>,
}

/// `usrdrv buffers --json`.
#[derive(Debug, Serialize)]
struct Report {
    schema: &'static str,
    /// Where the buffers come from: always `usrdma`.
    source: &'static str,
    /// Whether the usrdma driver is registered.
    usrdma_loaded: bool,
    /// The devices bound to usrdma that were read.
    devices: Vec<String>,
    buffers: Vec<BufferJson>,
}

/// Runs `usrdrv buffers`.
pub fn run(ctx: &Context, args: &BuffersArgs) -> Result<i32, CliError> {
    let (devices, buffers) = match &args.address {
        Some(text) => {
            let address: PciAddress = text.parse()?;
            let buffers = listing::buffers(&ctx.sysfs, address)?;
            (vec![address], json(ctx, address, &buffers))
        }
        None => all(ctx)?,
    };
    let report = Report {
        schema: SCHEMA,
        source: "usrdma",
        usrdma_loaded: usrdma_view::loaded(ctx),
        devices: devices.iter().map(ToString::to_string).collect(),
        buffers,
    };
    if ctx.json {
        output::print_json(&report)?;
    } else {
        output::print(&render(ctx, &report))?;
    }
    Ok(0)
}

/// Every device bound to usrdma and its buffers. A device unbound or removed
/// while being read is left out; any other failure is an error.
fn all(ctx: &Context) -> Result<(Vec<PciAddress>, Vec<BufferJson>), CliError> {
    let mut devices = Vec::new();
    let mut buffers = Vec::new();
    for address in listing::bound_devices(&ctx.sysfs)? {
        match listing::buffers(&ctx.sysfs, address) {
            Ok(found) => {
                devices.push(address);
                buffers.extend(json(ctx, address, &found));
            }
            Err(ListingError::NotBound { .. })
            | Err(ListingError::Sysfs(SysfsError::NoSuchDevice { .. })) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok((devices, buffers))
}

fn json(ctx: &Context, address: PciAddress, buffers: &[listing::UsrdmaBuffer]) -> Vec<BufferJson> {
    buffers
        .iter()
        .map(|b| BufferJson::new(ctx, address, b))
        .collect()
}

/// The text output: a table of buffers and a summary, or why there is none.
fn render(ctx: &Context, r: &Report) -> String {
    if r.devices.is_empty() {
        let load = if r.usrdma_loaded {
            String::new()
        } else {
            format!("{LOAD_HINT}, then ")
        };
        return format!(
            "No device is bound to usrdma, so there are no system-wide DMA buffers to list.\n\
             To drive a device through the usrdma module (for machines without an IOMMU): \
             {load}`usrdrv bind ADDR --driver usrdma`.\n\
             Over VFIO, named buffers (usrdrv::dma::NamedBuffers) belong to the process that made them and are not listed here.\n"
        );
    }
    let list = r.devices.join(", ");
    if r.buffers.is_empty() {
        return format!("No DMA buffers on {list} (bound to usrdma).\n");
    }
    let mut out = usrdma_view::buffer_table(&r.buffers, true).render(&ctx.style);
    let total: u64 = r.buffers.iter().map(|b| b.size).sum();
    out.push_str(&format!(
        "\n{}, {}, on {} bound to usrdma ({list})\n",
        plural(r.buffers.len(), "buffer", "buffers"),
        human_size(total),
        plural(r.devices.len(), "device", "devices"),
    ));
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
