//! `cargo xtask`: the usrdrv VM rig.
//!
//! It provisions QEMU, a Debian kernel and busybox, builds the workspace's
//! programs as static executables, packs them into an initramfs, boots a
//! QEMU q35 guest with an emulated Intel IOMMU, the `edu` device and an
//! NVMe controller, runs commands or tests in it as root, and reports.

/// `println!` that ignores a closed stdout (`cargo xtask test | head`)
/// instead of panicking.
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod apt;
mod bench_cmd;
mod cargo_build;
mod cpio;
mod demo;
mod elf;
mod error;
mod fio;
mod guest_results;
mod guest_vm;
mod host_tests;
mod initramfs;
mod interrupt;
mod modules;
mod nvme_bench;
mod nvme_report;
mod process;
mod provision;
mod qemu;
mod test_cmd;
mod usrdma;
mod vm_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Error;

const ABOUT: &str = "The usrdrv VM rig: provision, build, boot QEMU, run guest tests, report";

const LONG_ABOUT: &str = "\
The usrdrv VM rig: provision, build, boot QEMU, run guest tests, report.

The guest is a Linux VM in QEMU (q35, TCG by default) with an emulated Intel
IOMMU, QEMU's edu device and an NVMe controller. It boots from an initramfs
holding busybox, the VFIO/NVMe/UIO kernel modules and the workspace's
binaries and examples built static (in /usr/bin). Commands run as root.

Kernel, modules and busybox are downloaded once with apt into the cache
directory ($USRDRV_VM_CACHE, default target/usrdrv-vm); QEMU and kmod are
installed with apt when missing (as root). The guest kernel is Debian 12's
Linux 6.1 or, with --guest-kernel 6.12, Linux 6.12 from Debian 12's
backports (read through an apt sources file of the rig's own in the cache,
from the mirror the system's sources use); --kernel and --modules boot your
own.";

const EXAMPLES: &str = "\
Examples:
  cargo xtask vm                                  Boot and show the PCI devices
  cargo xtask vm -- 'vfio-bind $(pci-find 1234 11e8)'
  cargo xtask test                                Host tests + guest tests
  cargo xtask test --guest-only -- edu            Guest tests whose names contain 'edu'
  cargo xtask demo                                The edu first-light demo
  cargo xtask bench                               usrdrv against raw VFIO and the kernel's NVMe driver; writes docs/perf/
  cargo xtask provision                           Fetch everything, print where it is";

const VM_EXAMPLES: &str = "\
Examples:
  cargo xtask vm
  cargo xtask vm -- 'ls /sys/bus/pci/devices; ls /dev/vfio; cat /proc/cmdline'
  cargo xtask vm -- 'vfio-bind $(pci-find 1234 11e8)'      Bind the edu device to vfio-pci
  cargo xtask vm -- usrdrv --help                          Workspace binaries are in /usr/bin
  cargo xtask vm --no-iommu --timeout 60 -- 'exit 3'       Exits with status 3
  cargo xtask vm --guest-kernel 6.12 --no-iommu --usrdma -- 'insmod /lib/modules/usrdma.ko'
                                                           Linux 6.12 (Debian 12's backports)
  cargo xtask vm --kernel PATH --modules DIR               Your own kernel
  cargo xtask vm --qemu-arg=-s -- 'sleep 600'              gdb stub on :1234

The guest has busybox (sh, ls, cat, modprobe, ...) and two helpers:
  pci-find VENDOR DEVICE    print the addresses of matching PCI devices
  vfio-bind ADDR...         bind devices to vfio-pci and show /dev/vfio/<group>

Exit status: the guest command's, 124 on timeout, 130 on Ctrl-C, 1 when the
rig itself fails.";

const TEST_HELP: &str = "\
Steps: (1) cargo test --workspace on the host; (2) build the guest test
binaries (integration tests whose name starts with guest, such as
crates/*/tests/guest_*.rs) static, and list their ignored tests on the host;
(3) boot the VM once and run each binary with --ignored --test-threads=1,
then, if there are guest_noiommu* binaries, boot again without the IOMMU
(as with --no-iommu) and run those the same way, all on Linux 6.1; then
boot Linux 6.12 without the IOMMU and run the guest_noiommu* binaries
(with the usrdma module built for 6.12) again; (4) print a per-binary
report naming the kernel of each run and a last line 'summary: N passed,
N failed' counting every kernel. --guest-kernel 6.1|6.12 runs every boot
on that kernel only; --kernel and --modules every boot on yours.
A test that reported nothing counts as failed (did not run). Exits non-zero
if anything failed or if there were no guest tests.

Writing a guest test: put it in crates/<crate>/tests/guest_<topic>.rs and
mark every test #[ignore = \"runs in the usrdrv VM\"]. In the guest it runs
as root, with the edu device (1234:11e8, no kernel driver) and an NVMe
controller (1b36:0010, serial usrdrv-nvme0, 64 MiB, bound to the nvme
driver); find devices by vendor and device ID, not by address. All binaries
share one boot, one after another: leave devices usable for the next one.
Tests of a machine without an IOMMU go in crates/<crate>/tests/
guest_noiommu_<topic>.rs: they run in the second boot.

Examples:
  cargo xtask test
  cargo xtask test --guest-only -- edu_reads_id --exact
  cargo xtask test --guest-only --guest-kernel 6.12
  cargo xtask test --host-only";

const DEMO_HELP: &str = "\
Builds the workspace's binaries and examples, boots the VM and runs the demo
steps (today: the edu_first_light example), then says how long booting and
the demo took.

Example:
  cargo xtask demo";

const BENCH_HELP: &str = "\
Builds the workspace for the guest with the dev profile optimized like
release (opt-level 3, no debug assertions: the benchmark measures the library,
not unoptimized code), boots the VM once, binds the edu device to vfio-pci and
runs the edu_bench example. It measures usrdrv's hot paths, each next to a raw
VFIO baseline on the same device, container and interrupt in the same process,
alternating API and raw runs over several rounds:
  - 32-bit MMIO read and write: Bar, and BarView (offsets checked at compile
    time), against a volatile pointer (target ratio <= 1.05)
  - map + unmap of a 4 KiB caller page: map_dma + unmap (what drop does) against
    the MAP_DMA and UNMAP_DMA ioctls (target ratio <= 1.10)
  - a 4 KiB DmaPool chunk taken and returned (target median <= 1 us, no system call)
  - 16 MiB mapped in one call against 4096 calls of 4 KiB
  - MSI wake-up latency, p50 and p99, with the interrupt on the waiter's CPU and
    on the other: Interrupts::wait against a blocking eventfd read (target
    ratio <= 1.2)
  - 100,000 MSIs through the edu driver with no lost wake-up

It streams the guest console, prints a table (API, raw, API/raw, target,
pass/MISS) and writes it with the date, guest kernel, QEMU version, accelerator
and host core count to docs/perf/guest-bench.md (skipped with --no-write or
when the benchmark fails). Targets are reported, not asserted: the exit status
is edu_bench's, non-zero only when something failed. About a minute under
TCG on two cores, boot included (default --timeout 600). Figures vary between
boots; compare ratios within one run.

The NVMe part (--only nvme runs it alone, --only edu skips it) boots again,
with a second NVMe controller at 0000:00:04.0 on a null-co drive and
nvme.poll_queues=1 on the kernel command line (this boot only), and measures
the kernel's nvme driver with fio (Debian 12's package and the libraries it
needs, fetched once into the cache) and with usrdrv-nvme perf /dev/nvme*n1,
then rebinds both controllers to vfio-pci and measures usrdrv-nvme perf:
QD1 latency, QD32 IOPS, guest CPU per I/O, two queues against one, 128 KiB
sequential reads and the emulator's floor, as ratios to the kernel in the
same boot against the targets of the NVMe issue. It writes
docs/perf/nvme-bench.md. --nvme-time sets the seconds per case (8; 26
cases, about 5 minutes in all under TCG).

Examples:
  cargo xtask bench
  cargo xtask bench --only nvme --nvme-time 4
  cargo xtask bench --no-write
  cargo xtask bench --accel kvm";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot the VM and run a shell command line in it as root; exit with its status
    #[command(after_help = VM_EXAMPLES)]
    Vm(vm_cmd::VmArgs),

    /// Run the host tests and the guest tests in the VM, and report
    #[command(after_help = TEST_HELP)]
    Test(test_cmd::TestArgs),

    /// Boot the VM and run the usrdrv demo
    #[command(after_help = DEMO_HELP)]
    Demo(demo::DemoArgs),

    /// Benchmark usrdrv against raw VFIO and the kernel's NVMe driver in the VM; write docs/perf/
    #[command(after_help = BENCH_HELP)]
    Bench(bench_cmd::BenchArgs),

    /// Fetch QEMU, the guest kernel and busybox, and print where they are
    Provision(ProvisionArgs),
}

/// Arguments of `cargo xtask provision`.
#[derive(Debug, clap::Args)]
struct ProvisionArgs {
    #[command(flatten)]
    sources: guest_vm::SourceArgs,
}

fn main() -> ExitCode {
    interrupt::install();
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Vm(args) => vm_cmd::run(args),
        Cmd::Test(args) => test_cmd::run(args).map(|ok| if ok { 0 } else { 1 }),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Bench(args) => bench_cmd::run(args),
        Cmd::Provision(args) => provision(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Error::Interrupted) => {
            eprintln!("xtask: interrupted");
            ExitCode::from(130)
        }
        Err(Error::Guest {
            reason,
            tail,
            timed_out,
        }) => {
            eprintln!("xtask: error: {reason}");
            if !tail.is_empty() {
                eprintln!("xtask: last console lines:");
                for line in tail {
                    eprintln!("  | {line}");
                }
            }
            ExitCode::from(if timed_out { 124 } else { 1 })
        }
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `cargo xtask provision`.
fn provision(args: &ProvisionArgs) -> error::Result<()> {
    let p = provision::provision(&args.sources.sources())?;
    outln!("cache:   {}", p.cache.display());
    outln!("qemu:    {}", p.qemu.display());
    outln!(
        "kernel:  {} ({})",
        p.kernel.image.display(),
        p.kernel.version
    );
    outln!("modules: {}", p.kernel.modules_dir.display());
    outln!("busybox: {}", p.busybox.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn vm_takes_a_command_after_dashes() {
        let cli = Cli::try_parse_from([
            "xtask",
            "vm",
            "--no-iommu",
            "--qemu-arg=-s",
            "--",
            "exit",
            "3",
        ])
        .expect("parses");
        let Cmd::Vm(args) = cli.command else {
            panic!("not vm")
        };
        assert!(args.vm.no_iommu);
        assert_eq!(args.vm.qemu_args, ["-s"]);
        assert_eq!(args.command, ["exit", "3"]);
    }

    #[test]
    fn kernel_needs_modules() {
        assert!(Cli::try_parse_from(["xtask", "vm", "--kernel", "/k"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "vm", "--kernel", "/k", "--modules", "/m"]).is_ok());
    }

    #[test]
    fn guest_kernel_names_a_kernel_of_the_matrix() {
        let cli = Cli::try_parse_from(["xtask", "vm", "--guest-kernel", "6.12"]).expect("parses");
        let Cmd::Vm(args) = cli.command else {
            panic!("not vm")
        };
        assert_eq!(
            args.vm.sources.guest_kernel,
            Some(provision::GuestKernel::V6_12)
        );
        assert!(Cli::try_parse_from(["xtask", "vm", "--guest-kernel", "5.10"]).is_err());
        assert!(
            Cli::try_parse_from([
                "xtask",
                "vm",
                "--guest-kernel",
                "6.1",
                "--kernel",
                "/k",
                "--modules",
                "/m"
            ])
            .is_err(),
            "a Debian kernel and the user's own exclude each other"
        );
    }

    #[test]
    fn bench_takes_the_vm_options_and_no_write() {
        let cli = Cli::try_parse_from(["xtask", "bench", "--no-write", "--timeout", "60"])
            .expect("parses");
        let Cmd::Bench(args) = cli.command else {
            panic!("not bench")
        };
        assert!(args.no_write);
        assert_eq!(args.vm.timeout, Some(60));
        assert!(Cli::try_parse_from(["xtask", "bench", "--", "x"]).is_err());
    }

    #[test]
    fn test_passes_args_through() {
        let cli = Cli::try_parse_from(["xtask", "test", "--guest-only", "--", "edu", "--exact"])
            .expect("parses");
        let Cmd::Test(args) = cli.command else {
            panic!("not test")
        };
        assert!(args.guest_only);
        assert_eq!(args.test_args, ["edu", "--exact"]);
        assert!(Cli::try_parse_from(["xtask", "test", "--guest-only", "--host-only"]).is_err());
    }
}
