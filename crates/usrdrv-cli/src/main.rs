//! `usrdrv`: see and prepare PCI devices for user-space drivers.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use usrdrv::pci::Sysfs;

/// See and prepare PCI devices for user-space drivers (VFIO).
#[derive(Debug, Parser)]
#[command(
    name = "usrdrv",
    version,
    after_help = "Examples:\n  usrdrv list        every PCI function with its driver and IOMMU group\n\nExit status: 0 on success, 1 on failure, 2 on a usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every PCI function: address, vendor:device, class, driver, IOMMU group.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List => list(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("usrdrv: {err}");
            ExitCode::FAILURE
        }
    }
}

fn list() -> Result<(), usrdrv::pci::SysfsError> {
    let sysfs = Sysfs::system();
    println!(
        "{:<13} {:<9} {:<6} {:<12} {:>5}",
        "ADDRESS", "ID", "CLASS", "DRIVER", "GROUP"
    );
    for address in sysfs.addresses()? {
        let f = sysfs.function(address)?;
        println!(
            "{:<13} {:04x}:{:04x} {:06x} {:<12} {:>5}",
            f.address.to_string(),
            f.vendor_id,
            f.device_id,
            f.class,
            f.driver.as_deref().unwrap_or("-"),
            f.iommu_group
                .map_or_else(|| "-".to_owned(), |g| g.to_string()),
        );
    }
    Ok(())
}
