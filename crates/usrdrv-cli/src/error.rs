//! The command's errors: one line that says what failed and what to do.

use std::path::PathBuf;

use usrdrv::pci::{AddressError, PciAddress, SysfsError};
use usrdrv::usrdma::listing::ListingError;

/// How to get the usrdma module, for messages (here, at the bottom of the
/// module graph, so every module that prints it can depend on it).
pub const LOAD_HINT: &str = "load the usrdma module (`modprobe usrdma`, or build and install it from kmod/usrdma with DKMS as its README says)";

/// Why a command failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A PCI address did not parse (shows the accepted forms).
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Reading or changing sysfs failed (names the file).
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// A DMA operation failed.
    #[error(transparent)]
    Usrdrv(#[from] usrdrv::Error),
    /// No such driver is registered.
    #[error("no PCI driver named '{driver}' is loaded: check the name (`ls {}`), or load its module (`modprobe {driver}`)", .drivers_dir.display())]
    NoSuchDriver {
        /// The name given.
        driver: String,
        /// Where drivers are listed.
        drivers_dir: PathBuf,
    },
    /// Reading the usrdma module's sysfs attributes failed (names the file
    /// and, for bad content, the line).
    #[error(transparent)]
    Usrdma(#[from] ListingError),
    /// `bind --driver usrdma` without the module loaded.
    #[error("the usrdma driver is not loaded ({} does not exist): {LOAD_HINT}, then bind again", .driver_dir.display())]
    UsrdmaNotLoaded {
        /// Where the driver would be registered.
        driver_dir: PathBuf,
    },
    /// The usrdma module is loaded but did not take the device.
    #[error(
        "{address} did not bind to usrdma (its driver is now {}): the module refused it; `dmesg | grep usrdma` says why",
        .now.as_deref().unwrap_or("none")
    )]
    UsrdmaRefused {
        /// The device.
        address: PciAddress,
        /// The driver bound after the attempt and the restore.
        now: Option<String>,
    },
    /// The device's group has members on other drivers.
    #[error(
        "{address} shares IOMMU group {group} with {}: VFIO needs the whole group. Bind them too (`usrdrv bind --group {address}`), or use --force to bind this one anyway",
        describe(.members)
    )]
    GroupInUse {
        /// The device.
        address: PciAddress,
        /// Its group.
        group: u32,
        /// The other members and their drivers.
        members: Vec<(PciAddress, String)>,
    },
    /// The kernel is visibly using the device.
    #[error("{address} is in use: {}. Stop using it first (unmount, `ip link set ... down`, stop the process), or use --force", .usages.join("; "))]
    InUse {
        /// The device.
        address: PciAddress,
        /// What uses it.
        usages: Vec<String>,
    },
    /// A forced move of a held device did not complete in time: the holders
    /// have not let go, and the kernel's unbind is still waiting for them.
    #[error(
        "{address} is still held by {} after {waited:?}: the kernel's unbind waits until the device is let go (a usrdrv driver lets go at once; stop or kill the others). The move goes on in the background (process {pid}) and completes when they let go", .holders.join(", ")
    )]
    StillHeld {
        /// The device.
        address: PciAddress,
        /// Who holds it.
        holders: Vec<String>,
        /// How long this command waited.
        waited: std::time::Duration,
        /// The process still performing the move.
        pid: u32,
    },
    /// A move performed in a child process failed.
    #[error("moving {address} failed: {message}")]
    MoveFailed {
        /// The device.
        address: PciAddress,
        /// What the child said.
        message: String,
    },
    /// Starting the child process for a move failed.
    #[error("cannot start a usrdrv process to move the device")]
    Spawn(#[source] std::io::Error),
    /// Nothing is remembered about the device's previous driver.
    #[error("nothing to restore for {address}: usrdrv did not change its driver (or the record in {} is gone); use `usrdrv bind --driver NAME {address}`", .state.display())]
    NothingToRestore {
        /// The device.
        address: PciAddress,
        /// The state file.
        state: PathBuf,
    },
    /// The remembered-drivers file could not be read or written.
    #[error("cannot {action} {}", .path.display())]
    State {
        /// read or write.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

fn describe(members: &[(PciAddress, String)]) -> String {
    members
        .iter()
        .map(|(a, d)| format!("{a} (bound to {d})"))
        .collect::<Vec<_>>()
        .join(", ")
}
