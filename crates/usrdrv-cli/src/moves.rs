//! Driver moves that may wait on a process holding the device.
//!
//! Unbinding a device from vfio-pci blocks in the kernel, uninterruptibly,
//! until every process holding it lets go (a usrdrv driver does so at once
//! when asked; other programs may never). A forced move of a held device
//! therefore runs in a child `usrdrv` process: this command waits for it a
//! bounded time and, if the holders have not let go by then, says so and
//! returns, leaving the child to finish the move when they do.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use usrdrv::pci::{PciAddress, SysfsError};

use crate::context::Context;
use crate::error::CliError;
use crate::holders::Holder;

/// How long a forced move waits for holders by default: the longest grace
/// period a usrdrv driver may ask for, and a margin.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(15);

/// One change of driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// To the driver named.
    Bind(String),
    /// To no driver.
    Unbind,
    /// To whatever the kernel picks.
    Reprobe,
}

/// The kinds of [`Move`], as the hidden command takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// [`Move::Bind`].
    Bind,
    /// [`Move::Unbind`].
    Unbind,
    /// [`Move::Reprobe`].
    Reprobe,
}

/// Arguments of the hidden `usrdrv internal-move`, which performs one move
/// for a parent `usrdrv` waiting on it.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The device.
    pub address: PciAddress,
    /// The move.
    #[arg(long, value_enum)]
    pub op: Op,
    /// The driver, for `bind`.
    #[arg(long, required_if_eq("op", "bind"))]
    pub driver: Option<String>,
}

/// Performs `change` of `address` here (in the child, or when nothing holds
/// the device).
pub fn perform(ctx: &Context, address: PciAddress, change: &Move) -> Result<(), SysfsError> {
    match change {
        Move::Bind(driver) => ctx.sysfs.bind(address, driver),
        Move::Unbind => ctx.sysfs.unbind(address),
        Move::Reprobe => ctx.sysfs.reprobe(address).map(drop),
    }
}

/// Runs `usrdrv internal-move`.
pub fn run(ctx: &Context, args: &MoveArgs) -> Result<i32, CliError> {
    let change = match (args.op, &args.driver) {
        (Op::Bind, Some(driver)) => Move::Bind(driver.clone()),
        (Op::Bind, None) => {
            return Err(CliError::NoSuchDriver {
                driver: String::new(),
                drivers_dir: ctx.sysfs_path("bus/pci/drivers"),
            });
        }
        (Op::Unbind, _) => Move::Unbind,
        (Op::Reprobe, _) => Move::Reprobe,
    };
    perform(ctx, args.address, &change)?;
    Ok(0)
}

/// Performs the move of `address`; with `holders`, in a child process waited
/// for at most `wait` (the move's own error when it fails in time,
/// [`CliError::StillHeld`] when the holders did not let go).
pub fn bounded(
    ctx: &Context,
    address: PciAddress,
    change: &Move,
    holders: &[Holder],
    wait: Duration,
) -> Result<(), CliError> {
    if holders.is_empty() {
        return Ok(perform(ctx, address, change)?);
    }
    let mut child = spawn(ctx, address, change)?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(CliError::Spawn)? {
            if status.success() {
                return Ok(());
            }
            let mut said = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut said);
            }
            return Err(CliError::MoveFailed {
                address,
                message: said.trim().trim_start_matches("usrdrv: error: ").to_owned(),
            });
        }
        if started.elapsed() >= wait {
            return Err(CliError::StillHeld {
                address,
                holders: holders.iter().map(ToString::to_string).collect(),
                waited: wait,
                pid: child.id(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `usrdrv internal-move` for the move, seeing the same system.
fn spawn(ctx: &Context, address: PciAddress, change: &Move) -> Result<Child, CliError> {
    let exe = std::env::current_exe().map_err(CliError::Spawn)?;
    let mut command = Command::new(exe);
    command
        .arg("--sysfs")
        .arg(&ctx.sysfs_root)
        .arg("--procfs")
        .arg(&ctx.procfs)
        .arg("--devfs")
        .arg(&ctx.devfs)
        .arg("--state-dir")
        .arg(&ctx.state_dir)
        .arg("internal-move")
        .arg(address.to_string())
        .arg("--op");
    match change {
        Move::Bind(driver) => command.arg("bind").arg("--driver").arg(driver),
        Move::Unbind => command.arg("unbind"),
        Move::Reprobe => command.arg("reprobe"),
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(CliError::Spawn)
}
