//! `usrdrv buffers`: named DMA buffers.
//!
//! Over VFIO, named buffers live in the process that made them
//! (`usrdrv::dma::NamedBuffers`) and vanish with it, so there is nothing
//! system-wide to list yet; the kernel companion for machines without an IOMMU
//! keeps system-wide names, and this command will list them from it.

use serde::Serialize;

use crate::context::Context;
use crate::error::CliError;
use crate::output::{self, Table};

/// One buffer (schema `usrdrv.buffers/1`).
#[derive(Debug, Serialize)]
struct Buffer {
    name: String,
    size: u64,
    device_addr: String,
    owner: Option<u32>,
}

#[derive(Debug, Serialize)]
struct Report {
    schema: &'static str,
    /// Where the names come from.
    source: &'static str,
    buffers: Vec<Buffer>,
}

/// Runs `usrdrv buffers`.
pub fn run(ctx: &Context) -> Result<i32, CliError> {
    let buffers: Vec<Buffer> = Vec::new();
    if ctx.json {
        output::print_json(&Report {
            schema: "usrdrv.buffers/1",
            source: "none",
            buffers,
        })?;
        return Ok(0);
    }
    let table = Table::new(&["NAME", "SIZE", "DEVICE ADDRESS", "OWNER"]);
    output::print(&table.render(&ctx.style))?;
    output::print(
        "No system-wide named buffers: over VFIO, named buffers (usrdrv::dma::NamedBuffers) belong to the process that made them.\n",
    )?;
    Ok(0)
}
