//! One VM run, shared by `vm`, `test` and `demo`: the common options,
//! provisioning, the per-run image and disk in a temporary directory, and
//! the boot itself.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cargo_build::Artifact;
use crate::error::{IoContext, Result};
use crate::initramfs::{self, GuestFile, GuestImage};
use crate::provision::{self, GuestKernel, Provisioned, Sources};
use crate::qemu::{self, Accel, QemuConfig, VmRun};

/// Size of the sparse raw image behind the emulated NVMe controller.
const NVME_DISK_BYTES: u64 = 64 << 20;

/// Where workspace binaries and examples land in the guest.
pub const GUEST_BIN_DIR: &str = "/usr/bin";
/// Where guest test binaries land: `/tests/<package>/<name>`.
pub const GUEST_TEST_DIR: &str = "/tests";

/// Options of every command that boots the VM.
#[derive(Debug, Clone, clap::Args)]
pub struct VmOptions {
    /// Boot without the emulated IOMMU (no intel-iommu device, intel_iommu=off).
    #[arg(long)]
    pub no_iommu: bool,

    /// QEMU accelerator. KVM needs /dev/kvm.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,

    /// Guest memory, in QEMU's syntax.
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub memory: String,

    /// Guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub smp: u32,

    /// Stop QEMU and fail after this many seconds (boot included).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// Extra QEMU argument, appended last (repeatable; use --qemu-arg=-s for
    /// arguments starting with a dash).
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,

    /// Extra kernel command line word (repeatable).
    #[arg(long, value_name = "WORD")]
    pub append: Vec<String>,

    /// Stop the guest when, once ready, it prints nothing for this many
    /// seconds (set by `cargo xtask test`, whose tests print as they go).
    #[arg(skip)]
    pub silence_limit: Option<u64>,

    #[command(flatten)]
    pub sources: SourceArgs,
}

/// Where the VM's parts come from; by default they are provisioned.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Boot this Debian kernel: 6.1 (Debian 12's) or 6.12 (Debian 12's
    /// backports), fetched once into the cache. Default: 6.1; `cargo xtask
    /// test` runs both unless one is named.
    #[arg(long, value_enum, value_name = "SERIES", conflicts_with = "kernel")]
    pub guest_kernel: Option<GuestKernel>,

    /// Boot this kernel image instead of Debian's (needs --modules).
    #[arg(long, value_name = "PATH", requires = "modules")]
    pub kernel: Option<PathBuf>,

    /// The lib/modules/VERSION directory of --kernel, with modules.dep.
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,

    /// Use this static busybox instead of Debian's busybox-static.
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,

    /// Use this QEMU instead of qemu-system-x86_64 from PATH.
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
}

impl SourceArgs {
    /// What to provision from.
    pub fn sources(&self) -> Sources {
        Sources {
            guest_kernel: self.guest_kernel.unwrap_or_default(),
            kernel: self.kernel.clone(),
            modules: self.modules.clone(),
            busybox: self.busybox.clone(),
            qemu: self.qemu.clone(),
        }
    }
}

impl VmOptions {
    /// Provisions QEMU, kernel and busybox.
    pub fn provision(&self) -> Result<Provisioned> {
        provision::provision(&self.sources.sources())
    }
}

/// Workspace binaries and examples as `/usr/bin/<name>`.
pub fn binary_files(artifacts: &[Artifact]) -> Vec<GuestFile> {
    artifacts
        .iter()
        .map(|a| GuestFile {
            guest_path: format!("{GUEST_BIN_DIR}/{}", a.name),
            host_path: a.executable.clone(),
        })
        .collect()
}

/// The guest path of a guest test binary.
pub fn test_path(artifact: &Artifact) -> String {
    format!("{GUEST_TEST_DIR}/{}", artifact.label())
}

/// Creates this run's directory under `<cache>/runs`, locked while the run
/// lives, after removing the directories of runs that were killed (their
/// lock is free).
fn run_dir(cache: &Path) -> Result<(tempfile::TempDir, File)> {
    let runs = cache.join("runs");
    fs::create_dir_all(&runs).ctx("create", &runs)?;
    remove_stale_runs(&runs);
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&runs)
        .ctx("create a temporary directory in", &runs)?;
    // Lock under another name, then rename: whoever finds `lock` finds it
    // locked (the lock belongs to the open file, which the rename keeps).
    let new_path = dir.path().join(".lock-new");
    let lock = File::create(&new_path).ctx("create", &new_path)?;
    lock.lock().ctx("lock", &new_path)?;
    let lock_path = dir.path().join("lock");
    fs::rename(&new_path, &lock_path).ctx("rename", &new_path)?;
    Ok((dir, lock))
}

/// Removes run directories whose lock nobody holds. A directory without a
/// lock file may be in the making; it is left alone unless it is old.
fn remove_stale_runs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let stale = match File::options().write(true).open(dir.join("lock")) {
            Ok(lock) => lock.try_lock().is_ok(),
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(600)),
        };
        if stale {
            // Best effort: a leftover only costs disk space.
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Builds the image, boots it and runs `command` (a `sh` script) as root.
/// Per-run files (initramfs, disk) live in a temporary directory under
/// `<cache>/runs`, removed on return.
pub fn boot(
    opts: &VmOptions,
    prov: &Provisioned,
    files: Vec<GuestFile>,
    command: String,
    default_timeout: u64,
) -> Result<VmRun> {
    let (run_dir, _run_lock) = run_dir(&prov.cache)?;
    let initramfs = run_dir.path().join("initramfs.cpio");
    let image = GuestImage {
        busybox: &prov.busybox,
        pci_ids: prov.pci_ids.as_deref(),
        kernel: &prov.kernel,
        files,
        command,
    };
    let size = initramfs::write(&initramfs, &image)?;
    let disk = run_dir.path().join("nvme.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(NVME_DISK_BYTES))
        .ctx("create the NVMe disk image", &disk)?;
    let config = QemuConfig {
        qemu: prov.qemu.clone(),
        kernel: prov.kernel.image.clone(),
        initramfs,
        disk,
        iommu: !opts.no_iommu,
        accel: opts.accel,
        memory: opts.memory.clone(),
        smp: opts.smp,
        append: opts.append.clone(),
        extra_args: opts.qemu_args.clone(),
        silence_limit: opts.silence_limit.map(Duration::from_secs),
    };
    let timeout = opts.timeout.unwrap_or(default_timeout);
    eprintln!(
        "xtask: booting Linux {} ({}, {} CPUs, {}, {}, edu + nvme; image {:.1} MiB; timeout {} s)",
        prov.kernel.version,
        opts.accel,
        opts.smp,
        opts.memory,
        if opts.no_iommu {
            "no IOMMU"
        } else {
            "intel-iommu"
        },
        size as f64 / (1024.0 * 1024.0),
        timeout,
    );
    let run = qemu::run(&config, Duration::from_secs(timeout))?;
    drop(run_dir);
    Ok(run)
}
