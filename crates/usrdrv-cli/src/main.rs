//! `usrdrv`: see, bind, check and diagnose PCI devices for user-space drivers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use usrdrv::pci::Sysfs;

mod cmd;
mod context;
mod error;
mod holders;
mod moves;
mod names;
mod output;
mod state;
mod usrdma_view;

use context::Context;
use output::{ColorChoice, Style};

const AFTER_HELP: &str = "\
Examples:
  usrdrv list                               every PCI function, its driver, IOMMU group, VFIO readiness
  usrdrv list --class 01 --json             storage controllers, as JSON
  usrdrv info 0000:03:00.0                  BARs, capabilities, interrupts, group, what VFIO reports
  usrdrv bind 0000:03:00.0                  hand a device to vfio-pci (remembering its driver)
  usrdrv bind 0000:03:00.0 --driver usrdma  no IOMMU: hand it to the usrdma module instead
  usrdrv restore 0000:03:00.0               give it back to the driver it had
  usrdrv buffers                            DMA buffers the usrdma module holds, on every device
  usrdrv doctor                             can user-space drivers run here? what to fix

Addresses are DDDD:BB:DD.F (0000:03:00.0) or BB:DD.F (domain 0).
Exit status: 0 success, 1 failure (or, for doctor, a blocking finding), 2 usage error.
--json output is described in JSON.md (every object carries its \"schema\" name).";

/// See, bind, check and diagnose PCI devices for user-space drivers.
#[derive(Debug, Parser)]
#[command(name = "usrdrv", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Print JSON (schema in JSON.md) instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// Colour the text output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    /// Where sysfs is (for tests).
    #[arg(long, global = true, hide = true, default_value = "/sys")]
    sysfs: PathBuf,

    /// Where procfs is (for tests).
    #[arg(long, global = true, hide = true, default_value = "/proc")]
    procfs: PathBuf,

    /// Where device nodes are (for tests).
    #[arg(long, global = true, hide = true, default_value = "/dev")]
    devfs: PathBuf,

    /// Where usrdrv remembers the drivers it replaced.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "USRDRV_STATE_DIR",
        default_value = "/run/usrdrv"
    )]
    state_dir: PathBuf,

    /// A pci.ids file for names (default: the system's, if any).
    #[arg(long, global = true, hide = true)]
    pci_ids: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every PCI function: address, IDs, class, driver, IOMMU group, VFIO readiness.
    #[command(
        after_help = "Examples:\n  usrdrv list\n  usrdrv list --vendor 8086 --class 02\n  usrdrv list --driver vfio-pci --json"
    )]
    List(cmd::list::ListArgs),
    /// Show one device: BARs, capabilities, interrupts, NUMA node, IOMMU group, VFIO's view.
    #[command(after_help = "Examples:\n  usrdrv info 0000:03:00.0\n  usrdrv info 03:00.0 --json")]
    Info(cmd::info::InfoArgs),
    /// Hand a device to vfio-pci (or another driver), remembering the one it had.
    #[command(
        after_help = "Examples:\n  usrdrv bind 0000:03:00.0\n  usrdrv bind --group 0000:03:00.0          every device of its IOMMU group\n  usrdrv bind --driver usrdma 0000:03:00.0  no IOMMU: the usrdma module (`modprobe usrdma` first)\n  usrdrv bind --driver uio_pci_generic 0000:03:00.0"
    )]
    Bind(cmd::bind::BindArgs),
    /// Release a device from its driver, remembering the driver.
    #[command(after_help = "Example:\n  usrdrv unbind 0000:03:00.0")]
    Unbind(cmd::bind::AddressArgs),
    /// Give a device back to the driver it had before usrdrv changed it.
    #[command(after_help = "Example:\n  usrdrv restore 0000:03:00.0")]
    Restore(cmd::bind::AddressArgs),
    /// Check whether user-space drivers can run here, and say how to fix what is missing.
    #[command(
        visible_alias = "check",
        after_help = "Examples:\n  usrdrv doctor\n  usrdrv doctor --json"
    )]
    Doctor(cmd::doctor::DoctorArgs),
    /// List the DMA buffers the usrdma module holds (devices bound to usrdma, no IOMMU).
    #[command(
        after_help = "Examples:\n  usrdrv buffers                    every device bound to usrdma\n  usrdrv buffers 0000:03:00.0 --json\n\nRead from /sys/bus/pci/devices/ADDR/usrdma_buffers: the devices are not opened.\nOver VFIO, named buffers belong to the process that made them and are not listed."
    )]
    Buffers(cmd::buffers::BuffersArgs),
    /// Performs one driver move for a parent `usrdrv` that waits on it.
    #[command(hide = true)]
    InternalMove(moves::MoveArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let pci_ids = match &cli.pci_ids {
        Some(path) => vec![path.clone()],
        None => names::PCI_IDS_PATHS.iter().map(PathBuf::from).collect(),
    };
    let ctx = Context {
        sysfs: Sysfs::at(&cli.sysfs),
        sysfs_root: cli.sysfs.clone(),
        procfs: cli.procfs.clone(),
        devfs: cli.devfs.clone(),
        state_dir: cli.state_dir.clone(),
        pci_ids,
        json: cli.json,
        style: Style::new(cli.color),
    };
    let result = match &cli.command {
        Command::List(args) => cmd::list::run(&ctx, args),
        Command::Info(args) => cmd::info::run(&ctx, args),
        Command::Bind(args) => cmd::bind::bind(&ctx, args),
        Command::Unbind(args) => cmd::bind::unbind(&ctx, args),
        Command::Restore(args) => cmd::bind::restore(&ctx, args),
        Command::Doctor(args) => cmd::doctor::run(&ctx, args),
        Command::Buffers(args) => cmd::buffers::run(&ctx, args),
        Command::InternalMove(args) => moves::run(&ctx, args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            let mut message = format!("usrdrv: error: {err}");
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
