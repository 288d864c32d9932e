//! `cargo xtask vm`: boot the VM, run one shell command line as root,
//! exit with its status.

use crate::cargo_build;
use crate::error::Result;
use crate::guest_vm::{self, VmOptions};
use crate::provision::Provisioned;
use crate::usrdma;

/// Default timeout of `vm`, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 300;

/// What runs when no command is given: a look at the machine.
pub const DEFAULT_COMMAND: &str = r#"uname -a
echo
echo "PCI devices (address vendor device class driver):"
for dev in /sys/bus/pci/devices/*; do
	driver=-
	[ -e "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
	echo "  $(basename "$dev") $(cat "$dev/vendor") $(cat "$dev/device") $(cat "$dev/class") $driver"
done
echo
echo "IOMMU groups: $(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)"
echo "/dev/vfio: $(ls /dev/vfio 2>/dev/null | tr '\n' ' ')"
echo "loaded modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
"#;

/// Arguments of `cargo xtask vm`.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    #[command(flatten)]
    pub vm: VmOptions,

    /// Do not build the workspace binaries (the guest then has only busybox
    /// and the helper scripts).
    #[arg(long)]
    pub no_build: bool,

    /// Build the workspace binaries with the release profile (what
    /// `cargo xtask bench` measures), for timing something by hand.
    #[arg(long, conflicts_with = "no_build")]
    pub release: bool,

    /// Also build the usrdma kernel module (kmod/usrdma) against the guest
    /// kernel and its test program: /lib/modules/usrdma.ko (insmod it) and
    /// /usr/bin/usrdma-test in the guest.
    #[arg(long)]
    pub usrdma: bool,

    /// The shell command line to run in the guest (by busybox sh, as root).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs `cargo xtask vm`; returns the guest command's exit status.
pub fn run(args: &VmArgs) -> Result<i32> {
    let prov = args.vm.provision()?;
    let mut files = if args.no_build {
        Vec::new()
    } else {
        let profile = if args.release {
            cargo_build::Profile::Release
        } else {
            cargo_build::Profile::Dev
        };
        guest_vm::binary_files(&cargo_build::build_binaries(profile)?)
    };
    // Kept alive until the image is written.
    let usrdma = usrdma_files(args, &prov)?;
    if let Some(built) = &usrdma {
        files.extend(built.files.iter().cloned());
    }
    let command = if args.command.is_empty() {
        DEFAULT_COMMAND.to_string()
    } else {
        args.command.join(" ")
    };
    let run = guest_vm::boot(
        &args.vm,
        &prov,
        files,
        format!("{command}\n"),
        DEFAULT_TIMEOUT,
    )?;
    let status = run.exit_status()?;
    eprintln!(
        "xtask: guest command exited with status {status} ({})",
        run.timing()
    );
    Ok(status)
}

/// With `--usrdma`: the module and its test program for the image.
fn usrdma_files(args: &VmArgs, prov: &Provisioned) -> Result<Option<usrdma::Built>> {
    if !args.usrdma {
        return Ok(None);
    }
    usrdma::build(prov).map(Some)
}
