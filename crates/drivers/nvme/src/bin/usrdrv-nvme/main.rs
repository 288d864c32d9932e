//! `usrdrv-nvme`: identify, read, write and benchmark an NVMe controller
//! through the usrdrv NVMe driver.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use usrdrv::pci::PciAddress;
use usrdrv_nvme::{Controller, Namespace, NvmeError};

mod kernel;
mod perf;
mod report;

const AFTER_HELP: &str = "\
The controller must be bound to vfio-pci (with an IOMMU) or usrdma (without):
`usrdrv bind ADDR` first, `usrdrv restore ADDR` to give it back to the kernel.
`perf` also takes a block device (/dev/nvme0n1) instead of an address: the
same workload through the kernel's driver, with io_uring and O_DIRECT.
Writes overwrite the namespace's data.

Examples:
  usrdrv-nvme identify 0000:00:02.0 --json
  usrdrv-nvme read 0000:00:02.0 --lba 0 --count 8 --file first.bin
  usrdrv-nvme perf 0000:00:02.0 --queue-depth 32 --io-size 4096 --pattern randread --time 10
  usrdrv-nvme perf /dev/nvme0n1 --queue-depth 1 --poll --time 10   (the kernel's driver, io_uring)";

#[derive(Debug, Parser)]
#[command(name = "usrdrv-nvme", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The controller and its namespaces.
    Identify {
        /// The controller, DDDD:BB:DD.F.
        address: PciAddress,
    },
    /// Reads blocks to a file (or standard output).
    Read(BlockArgs),
    /// Writes blocks from a file (or standard input).
    Write(BlockArgs),
    /// Measures IOPS, bandwidth and latency.
    Perf(perf::PerfArgs),
}

#[derive(Debug, clap::Args)]
struct BlockArgs {
    /// The controller, DDDD:BB:DD.F.
    address: PciAddress,
    /// The first logical block.
    #[arg(long)]
    lba: u64,
    /// How many blocks.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// The namespace.
    #[arg(long, default_value_t = 1)]
    namespace: u32,
    /// The file to read into or write from (standard output or input if absent).
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error(transparent)]
    Nvme(#[from] NvmeError),
    #[error(transparent)]
    Dma(#[from] usrdrv::dma::DmaError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

#[derive(Debug, Serialize)]
struct IdentifyReport {
    schema: &'static str,
    address: String,
    vendor: String,
    model: String,
    serial: String,
    firmware: String,
    version: String,
    max_transfer_bytes: usize,
    io_queue_pairs: u16,
    namespaces: Vec<NamespaceReport>,
}

#[derive(Debug, Serialize)]
struct NamespaceReport {
    id: u32,
    blocks: u64,
    block_size: usize,
    bytes: u64,
}

fn namespace(controller: &mut Controller, id: u32) -> Result<Namespace, ToolError> {
    controller
        .namespaces()?
        .into_iter()
        .find(|ns| ns.id == id)
        .ok_or_else(|| {
            ToolError::Usage(format!(
                "no active namespace {id}: see `usrdrv-nvme identify`"
            ))
        })
}

fn identify(address: PciAddress, json: bool) -> Result<(), ToolError> {
    let mut c = Controller::open(address)?;
    let info = c.info().clone();
    let report = IdentifyReport {
        schema: "usrdrv-nvme.identify/1",
        address: address.to_string(),
        vendor: format!("{:04x}", info.vendor),
        model: info.model,
        serial: info.serial,
        firmware: info.firmware,
        version: format!(
            "{}.{}.{}",
            info.version >> 16,
            (info.version >> 8) & 0xff,
            info.version & 0xff
        ),
        max_transfer_bytes: c.max_transfer(),
        io_queue_pairs: c.io_queue_count(),
        namespaces: c
            .namespaces()?
            .into_iter()
            .map(|ns| NamespaceReport {
                id: ns.id,
                blocks: ns.blocks,
                block_size: ns.block_size,
                bytes: ns.bytes(),
            })
            .collect(),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{} {} (serial {}, firmware {})",
        report.address, report.model, report.serial, report.firmware
    );
    println!(
        "  NVMe {}, vendor {}, {} I/O queue pairs, {} KiB per command at most",
        report.version,
        report.vendor,
        report.io_queue_pairs,
        report.max_transfer_bytes / 1024
    );
    for ns in &report.namespaces {
        println!(
            "  namespace {}: {} blocks of {} bytes ({} MiB)",
            ns.id,
            ns.blocks,
            ns.block_size,
            ns.bytes >> 20
        );
    }
    Ok(())
}

fn read(args: &BlockArgs) -> Result<(), ToolError> {
    let mut c = Controller::open(args.address)?;
    let ns = namespace(&mut c, args.namespace)?;
    let len = args.count as usize * ns.block_size;
    let buffer = c.device().alloc_dma(len.max(1))?;
    let mut queue = c.io_queue(2)?;
    let mut data = vec![0u8; len];
    let per_command = ns.blocks_in(c.max_transfer()).max(1);
    let mut done = 0u32;
    while done < args.count {
        let n = per_command.min(args.count - done);
        queue.read(&ns, args.lba + u64::from(done), n, &buffer)?;
        let at = done as usize * ns.block_size;
        buffer.read_bytes(0, &mut data[at..at + n as usize * ns.block_size])?;
        done += n;
    }
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| ToolError::Io { what, source }
    };
    match &args.file {
        Some(path) => {
            std::fs::write(path, &data).map_err(io(&format!("writing {}", path.display())))
        }
        None => std::io::stdout()
            .write_all(&data)
            .map_err(io("writing standard output")),
    }
}

fn write(args: &BlockArgs) -> Result<(), ToolError> {
    let io = |what: String| move |source| ToolError::Io { what, source };
    let data = match &args.file {
        Some(path) => std::fs::read(path).map_err(io(format!("reading {}", path.display())))?,
        None => {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)
                .map_err(io("reading standard input".into()))?;
            data
        }
    };
    let mut c = Controller::open(args.address)?;
    let ns = namespace(&mut c, args.namespace)?;
    let len = args.count as usize * ns.block_size;
    if data.len() != len {
        return Err(ToolError::Usage(format!(
            "{} bytes given for {} blocks of {} bytes ({len} bytes)",
            data.len(),
            args.count,
            ns.block_size
        )));
    }
    let buffer = c.device().alloc_dma(c.max_transfer())?;
    let mut queue = c.io_queue(2)?;
    let per_command = ns.blocks_in(c.max_transfer()).max(1);
    let mut done = 0u32;
    while done < args.count {
        let n = per_command.min(args.count - done);
        let at = done as usize * ns.block_size;
        buffer.write_bytes(0, &data[at..at + n as usize * ns.block_size])?;
        queue.write(&ns, args.lba + u64::from(done), n, &buffer)?;
        done += n;
    }
    queue.flush(&ns)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Identify { address } => identify(*address, cli.json),
        Command::Read(args) => read(args),
        Command::Write(args) => write(args),
        Command::Perf(args) => perf::run(args, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("usrdrv-nvme: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
