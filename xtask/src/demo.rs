//! `cargo xtask demo`: boot the VM and show usrdrv driving real (emulated)
//! hardware. The steps are listed in [`STEPS`]; add to it as the project
//! grows.

use crate::cargo_build;
use crate::error::Result;
use crate::guest_vm::{self, VmOptions};
use crate::initramfs::sh_quote;
use crate::usrdma;

/// Default timeout of the demo, in seconds (boot included).
pub const DEFAULT_TIMEOUT: u64 = 300;

/// One step of the demo, run in the guest as root.
#[derive(Debug, Clone, Copy)]
pub struct DemoStep {
    /// What the step shows, for the header and the console.
    pub title: &'static str,
    /// The shell command line to run.
    pub command: &'static str,
    /// Workspace binaries or examples it needs, with where they should live.
    pub needs: &'static [(&'static str, &'static str)],
}

/// The demo, in order. A failing step stops it.
pub const STEPS: &[DemoStep] = &[
    DemoStep {
        title: "the usrdrv command: every PCI device with its driver, IOMMU group and VFIO \
                readiness, then edu handed to vfio-pci",
        command: "usrdrv list && usrdrv bind $(pci-find 1234 11e8) && usrdrv list --vendor 1234",
        needs: &[("usrdrv", "crates/usrdrv-cli/src/main.rs")],
    },
    DemoStep {
        title: "edu first light: find the edu device, bind it to vfio-pci, open it through VFIO \
                and read its ID register",
        command: "edu_first_light",
        needs: &[(
            "edu_first_light",
            "crates/usrdrv/examples/edu_first_light.rs",
        )],
    },
    DemoStep {
        title: "the edu driver: interrupts, DMA buffers, your own memory mapped for the device, \
                the IOMMU blocking a stale address, a DMA pool",
        command: "edu_demo",
        needs: &[("edu_demo", "crates/drivers/edu/examples/edu_demo.rs")],
    },
    DemoStep {
        title: "the same driver code over the usrdma kernel module (what machines without an \
                IOMMU use): edu handed to usrdma, the demo again, the module's buffers listed",
        command: "insmod /lib/modules/usrdma.ko && usrdrv bind $(pci-find 1234 11e8) --driver usrdma \
                  && edu_demo --usrdma && usrdrv buffers",
        needs: &[("edu_demo", "crates/drivers/edu/examples/edu_demo.rs")],
    },
];

/// Arguments of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub vm: VmOptions,
}

/// Runs the demo; returns the guest's exit status.
pub fn run(args: &DemoArgs) -> Result<i32> {
    print_header();
    let prov = args.vm.provision()?;
    let binaries = cargo_build::build_binaries(cargo_build::Profile::Dev)?;
    for step in STEPS {
        for (name, source) in step.needs {
            cargo_build::find(&binaries, name, source)?;
        }
    }
    let module = usrdma::build(&prov)?;
    let mut files = guest_vm::binary_files(&binaries);
    files.extend(module.files.iter().cloned());
    let run = guest_vm::boot(&args.vm, &prov, files, script(STEPS), DEFAULT_TIMEOUT)?;
    let status = run.exit_status()?;
    let secs = |d: Option<std::time::Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "n/a".to_string())
    };
    outln!();
    if status == 0 {
        outln!(
            "The demo finished. Booting the VM took {}; the demo ran {}.",
            secs(run.boot_time),
            secs(run.command_time)
        );
    } else {
        outln!(
            "The demo failed (exit status {status}). Booting the VM took {}; the demo ran {}.",
            secs(run.boot_time),
            secs(run.command_time)
        );
    }
    Ok(status)
}

fn print_header() {
    outln!("usrdrv demo");
    outln!();
    outln!("This boots a Linux VM in QEMU: an emulated PC (q35) with an Intel IOMMU,");
    outln!("QEMU's \"edu\" teaching device and an NVMe controller. Inside it, as root:");
    for (i, step) in STEPS.iter().enumerate() {
        outln!("  {}. {}", i + 1, step.title);
    }
    outln!("Nothing touches this machine's own devices. The first run downloads a Debian");
    outln!("kernel, its headers (to build the usrdma module) and busybox into the cache");
    outln!("(target/usrdrv-vm); later runs reuse them.");
    outln!();
}

/// The guest script: each step with a heading; the first failure stops it.
fn script(steps: &[DemoStep]) -> String {
    let mut s = String::new();
    for (i, step) in steps.iter().enumerate() {
        let heading = format!("==> step {}/{}: {}", i + 1, steps.len(), step.title);
        s.push_str(&format!(
            "echo\necho {}\n{}\nstatus=$?\nif [ $status -ne 0 ]; then echo \"==> step {} failed with exit status $status\"; exit $status; fi\n",
            sh_quote(&heading),
            step.command,
            i + 1
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_stops_at_the_first_failure() {
        let s = script(STEPS);
        assert!(s.contains("\nedu_first_light\nstatus=$?\n"));
        assert!(s.contains("exit $status"));
        let n = STEPS.len();
        assert!(s.contains(&format!("==> step 1/{n}: the usrdrv command")));
        assert!(s.contains(": edu first light"));
        assert!(s.contains(&format!("==> step {n}/{n}: ")));
        assert!(s.contains("\nedu_demo\nstatus=$?\n"));
    }
}
