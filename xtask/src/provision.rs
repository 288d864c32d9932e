//! Provisioning: QEMU on the host, and a guest kernel, its modules and
//! busybox in the cache directory.
//!
//! The cache (`$USRDRV_VM_CACHE`, default `<workspace>/target/usrdrv-vm`)
//! is shared by concurrent runs: provisioning holds an exclusive lock on
//! `<cache>/lock`, unpacks into a `.tmp-*` directory inside the cache and
//! renames the finished tree into place, so a reader never sees half a tree.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Apt};
use crate::elf;
use crate::error::{Error, IoContext, Result};
use crate::process;

/// The environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "USRDRV_VM_CACHE";

/// Name of the marker file written into a finished kernel tree.
const KERNEL_STAMP: &str = "usrdrv-kernel.txt";

/// The Debian kernels the rig can provision: the kernel matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, clap::ValueEnum)]
pub enum GuestKernel {
    /// Linux 6.1, Debian 12's own kernel (from the system's apt sources).
    #[default]
    #[value(name = "6.1")]
    V6_1,
    /// Linux 6.12 from Debian 12's backports (the kernel of Debian 13).
    #[value(name = "6.12")]
    V6_12,
}

impl GuestKernel {
    /// Every kernel of the matrix, oldest first.
    pub const ALL: [GuestKernel; 2] = [GuestKernel::V6_1, GuestKernel::V6_12];

    /// The series, as given to `--guest-kernel`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// The suite it comes from, when not the system's own sources.
    fn suite(self) -> Option<&'static str> {
        match self {
            Self::V6_1 => None,
            Self::V6_12 => Some("bookworm-backports"),
        }
    }

    /// The name of a cache directory of this kernel: `base` for 6.1 (as the
    /// rig has always called it), `base-6.12` for the others.
    pub fn cache_name(self, base: &str) -> String {
        match self {
            Self::V6_1 => base.to_string(),
            other => format!("{base}-{}", other.name()),
        }
    }

    /// The apt helper that fetches this kernel's packages.
    pub fn apt(self, cache: &Path) -> Result<Apt> {
        match self.suite() {
            None => Ok(Apt::new()),
            Some(suite) => Apt::for_suite(suite, &cache.join(format!("apt-{suite}"))),
        }
    }
}

impl std::fmt::Display for GuestKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the user wants things from; `None` means "provision it".
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Which Debian kernel to provision when `kernel` is `None`.
    pub guest_kernel: GuestKernel,
    /// A kernel image (bzImage / vmlinuz).
    pub kernel: Option<PathBuf>,
    /// That kernel's `lib/modules/<version>` directory.
    pub modules: Option<PathBuf>,
    /// A static busybox.
    pub busybox: Option<PathBuf>,
    /// The `qemu-system-x86_64` to run.
    pub qemu: Option<PathBuf>,
}

/// A guest kernel and its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The kernel image to boot.
    pub image: PathBuf,
    /// `uname -r` of that kernel.
    pub version: String,
    /// Its `lib/modules/<version>` directory, with `modules.dep`.
    pub modules_dir: PathBuf,
    /// Which Debian kernel it is; `None` for the user's own.
    pub debian: Option<GuestKernel>,
}

/// Everything needed to build an image and boot it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The cache directory.
    pub cache: PathBuf,
    /// The guest kernel.
    pub kernel: Kernel,
    /// A static busybox.
    pub busybox: PathBuf,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// A `pci.ids` for device names in the guest, when one could be had.
    pub pci_ids: Option<PathBuf>,
}

/// The workspace root (the parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// The cache directory: `$USRDRV_VM_CACHE`, else `<target dir>/usrdrv-vm`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("usrdrv-vm")
}

/// Makes sure QEMU, a kernel with modules and busybox are at hand,
/// downloading what is missing into the cache.
pub fn provision(sources: &Sources) -> Result<Provisioned> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).ctx("create the cache directory", &cache)?;
    let _lock = lock_cache(&cache)?;
    remove_stale_temp_dirs(&cache);
    let mut apt = Apt::new();

    let qemu = match &sources.qemu {
        Some(path) => {
            require_file(path, "--qemu")?;
            path.clone()
        }
        None => apt.install_tool("qemu-system-x86_64", "qemu-system-x86")?,
    };
    let kernel = match (&sources.kernel, &sources.modules) {
        (Some(image), Some(modules)) => user_kernel(image, modules)?,
        (None, None) => debian_kernel(&cache, sources.guest_kernel, &mut apt)?,
        _ => {
            return Err(Error::Setup(
                "--kernel and --modules go together: pass the kernel image and its \
                 lib/modules/<version> directory"
                    .to_string(),
            ));
        }
    };
    let busybox = match &sources.busybox {
        Some(path) => {
            require_file(path, "--busybox")?;
            elf::require_static(path, "pass a statically linked busybox")?;
            path.clone()
        }
        None => debian_busybox(&cache, &mut apt)?,
    };
    let pci_ids = pci_ids(&cache, &mut apt);
    Ok(Provisioned {
        cache,
        kernel,
        busybox,
        qemu,
        pci_ids,
    })
}

/// Takes the exclusive cache lock, telling the user when it has to wait.
pub(crate) fn lock_cache(cache: &Path) -> Result<File> {
    let path = cache.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx("open the cache lock", &path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!(
                "xtask: waiting for another cargo xtask to finish provisioning {}",
                cache.display()
            );
            file.lock().ctx("lock", &path)?;
            Ok(file)
        }
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// Removes `.tmp-*` directories left by a provisioning that was killed.
/// Only called with the lock held, so none of them is in use.
fn remove_stale_temp_dirs(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            // Best effort: a leftover only costs disk space.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A temporary directory inside the cache, removed on drop.
pub(crate) fn temp_in(cache: &Path, what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!(".tmp-{what}-"))
        .tempdir_in(cache)
        .ctx("create a temporary directory in", cache)
}

fn require_file(path: &Path, option: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::Setup(format!(
            "{option} {}: no such file",
            path.display()
        )))
    }
}

/// A kernel the user supplied with `--kernel` and `--modules`.
fn user_kernel(image: &Path, modules: &Path) -> Result<Kernel> {
    require_file(image, "--kernel")?;
    let version = modules
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Setup(format!("--modules {}: not a directory", modules.display())))?;
    if !modules.join("modules.dep").is_file() {
        return Err(Error::Setup(format!(
            "{} has no modules.dep: pass the lib/modules/<version> directory of the kernel, \
             after running `depmod -b <root> {version}` for it",
            modules.display()
        )));
    }
    Ok(Kernel {
        image: image.to_path_buf(),
        version,
        modules_dir: modules.to_path_buf(),
        debian: None,
    })
}

/// The cached Debian kernel `which`, downloading and unpacking it on first
/// use. `host_apt` installs host tools (depmod, xz).
fn debian_kernel(cache: &Path, which: GuestKernel, host_apt: &mut Apt) -> Result<Kernel> {
    let root = cache.join(which.cache_name("kernel"));
    if root.join(KERNEL_STAMP).is_file() {
        return kernel_in(&root, which);
    }
    let mut apt = which.apt(cache)?;
    let package = apt.resolve_kernel_package()?;
    let prefix = format!("linux-image-{}.", which.name());
    if !package.starts_with(&prefix) {
        return Err(Error::Setup(format!(
            "the apt sources for the {which} guest kernel offer {package}, not Linux {which}: \
             on a Debian 12 host they offer it; elsewhere pass --kernel and --modules"
        )));
    }
    eprintln!(
        "xtask: provisioning the guest kernel {package} into {}",
        root.display()
    );
    let tmp = temp_in(cache, "kernel")?;
    let deb = apt.download(&package, tmp.path())?;
    let unpacked = tmp.path().join("root");
    apt::unpack(&deb, &unpacked)?;
    fs::remove_file(&deb).ctx("remove", &deb)?;
    let kernel = kernel_in(&unpacked, which)?;
    // busybox modprobe loads plain .ko files only: unpack compressed ones
    // (Debian's 6.12 ships .ko.xz), then index them.
    let decompressed = decompress_modules(&kernel.modules_dir, host_apt)?;
    if decompressed || !kernel.modules_dir.join("modules.dep").is_file() {
        let depmod = host_apt.install_tool("depmod", "kmod")?;
        let mut cmd = Command::new(depmod);
        cmd.arg("-b").arg(&unpacked).arg(&kernel.version);
        process::run(&mut cmd)?;
    }
    let stamp = unpacked.join(KERNEL_STAMP);
    fs::write(&stamp, format!("{package}\n{}\n", kernel.version)).ctx("write", &stamp)?;
    if root.exists() {
        // An unfinished tree from an older rig: replace it.
        fs::remove_dir_all(&root).ctx("remove", &root)?;
    }
    fs::rename(&unpacked, &root).ctx("move the kernel into", &root)?;
    kernel_in(&root, which)
}

/// Unpacks every `.ko.xz` under `dir` in place (to `.ko`); returns whether
/// there were any.
fn decompress_modules(dir: &Path, apt: &mut Apt) -> Result<bool> {
    let mut found = Vec::new();
    collect_xz_modules(dir, &mut found)?;
    if found.is_empty() {
        return Ok(false);
    }
    let xz = apt.install_tool("xz", "xz-utils")?;
    eprintln!(
        "xtask: decompressing {} kernel modules (.ko.xz)",
        found.len()
    );
    for chunk in found.chunks(512) {
        let mut cmd = Command::new(&xz);
        cmd.args(["--decompress", "--quiet"]).args(chunk);
        process::run(&mut cmd)?;
    }
    Ok(true)
}

fn collect_xz_modules(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).ctx("read", dir)?.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_xz_modules(&path, found)?;
        } else if kind.is_file() && path.to_string_lossy().ends_with(".ko.xz") {
            found.push(path);
        }
    }
    Ok(())
}

/// Finds `boot/vmlinuz-<version>` and `lib/modules/<version>` under `root`.
fn kernel_in(root: &Path, which: GuestKernel) -> Result<Kernel> {
    let boot = root.join("boot");
    let entries = fs::read_dir(&boot).ctx("read", &boot)?;
    let mut versions: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    versions.sort();
    let version = versions.pop().ok_or_else(|| {
        Error::Image(format!(
            "No boot/vmlinuz-* in the kernel package at {}",
            root.display()
        ))
    })?;
    let modules_dir = root.join("lib/modules").join(&version);
    if !modules_dir.is_dir() {
        return Err(Error::Image(format!(
            "The kernel package has no {}",
            modules_dir.display()
        )));
    }
    Ok(Kernel {
        image: boot.join(format!("vmlinuz-{version}")),
        version,
        modules_dir,
        debian: Some(which),
    })
}

/// Where distributions keep `pci.ids` (the host's is used when present).
const HOST_PCI_IDS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// A `pci.ids` for the guest: the host's, else Debian's `pci.ids` package in
/// the cache. Optional: without one the guest shows numbers, not names, so a
/// failure here is a warning.
fn pci_ids(cache: &Path, apt: &mut Apt) -> Option<PathBuf> {
    if let Some(host) = HOST_PCI_IDS.iter().map(Path::new).find(|p| p.is_file()) {
        return Some(host.to_path_buf());
    }
    let dir = cache.join("pci-ids");
    let file = dir.join("pci.ids");
    if file.is_file() {
        return Some(file);
    }
    let fetched = (|| -> Result<PathBuf> {
        eprintln!(
            "xtask: provisioning pci.ids (device names) into {}",
            dir.display()
        );
        let tmp = temp_in(cache, "pci-ids")?;
        let deb = apt.download("pci.ids", tmp.path())?;
        let unpacked = tmp.path().join("root");
        apt::unpack(&deb, &unpacked)?;
        let staged = tmp.path().join("pci-ids");
        fs::create_dir(&staged).ctx("create", &staged)?;
        let from = unpacked.join("usr/share/misc/pci.ids");
        fs::copy(&from, staged.join("pci.ids")).ctx("copy", &from)?;
        if dir.exists() {
            fs::remove_dir_all(&dir).ctx("remove", &dir)?;
        }
        fs::rename(&staged, &dir).ctx("move pci.ids into", &dir)?;
        Ok(file.clone())
    })();
    match fetched {
        Ok(file) => Some(file),
        Err(err) => {
            eprintln!("xtask: warning: no pci.ids for the guest ({err}); devices show as numbers");
            None
        }
    }
}

/// The cached static busybox, downloading it on first use.
fn debian_busybox(cache: &Path, apt: &mut Apt) -> Result<PathBuf> {
    let dir = cache.join("busybox");
    let busybox = dir.join("busybox");
    if busybox.is_file() {
        return Ok(busybox);
    }
    eprintln!("xtask: provisioning busybox-static into {}", dir.display());
    let tmp = temp_in(cache, "busybox")?;
    let deb = apt.download("busybox-static", tmp.path())?;
    let unpacked = tmp.path().join("root");
    apt::unpack(&deb, &unpacked)?;
    let staged = tmp.path().join("busybox");
    fs::create_dir(&staged).ctx("create", &staged)?;
    let from = unpacked.join("bin/busybox");
    fs::copy(&from, staged.join("busybox")).ctx("copy", &from)?;
    elf::require_static(
        &staged.join("busybox"),
        "the busybox-static package changed",
    )?;
    if dir.exists() {
        fs::remove_dir_all(&dir).ctx("remove", &dir)?;
    }
    fs::rename(&staged, &dir).ctx("move busybox into", &dir)?;
    Ok(busybox)
}
