//! The guest image: an uncompressed newc initramfs holding busybox, the
//! kernel modules, `/init`, the helper scripts, the command to run and the
//! workspace's static binaries.
//!
//! Layout in the guest:
//! - `/init`: [`INIT`], the boot script (PID 1)
//! - `/bin/busybox` and its applets (`/bin/sh`, ...), `/bin/vfio-bind`,
//!   `/bin/pci-find`
//! - `/lib/modules/<version>/`: the module closure and a trimmed `modules.dep`
//! - `/etc/usrdrv/modules`: modules to load, `/etc/usrdrv/command.sh`: the
//!   command
//! - `/usr/bin/`: workspace binaries and examples; `/tests/<crate>/`: guest
//!   test binaries (whatever [`GuestImage::files`] says)

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::cpio::CpioWriter;
use crate::error::{Error, IoContext, Result};
use crate::modules::{GUEST_MODULES, ModuleDb, OPTIONAL_GUEST_MODULES};
use crate::provision::Kernel;

/// `/init`: mounts, loads modules, prints the markers, runs the command.
pub const INIT: &str = include_str!("guest/init.sh");
/// `/bin/vfio-bind ADDR...`: binds PCI devices to vfio-pci.
pub const VFIO_BIND: &str = include_str!("guest/vfio-bind.sh");
/// `/bin/pci-find VENDOR DEVICE`: prints matching PCI addresses.
pub const PCI_FIND: &str = include_str!("guest/pci-find.sh");

/// Busybox applets linked into the image itself, so that `/init` works
/// even before `busybox --install` ran.
const EARLY_APPLETS: &[&str] = &["sh", "mount", "mkdir"];

/// A host file to copy into the guest.
#[derive(Debug, Clone)]
pub struct GuestFile {
    /// Absolute path in the guest, e.g. `/usr/bin/usrdrv`.
    pub guest_path: String,
    /// The file on the host.
    pub host_path: PathBuf,
}

/// What goes into one initramfs.
#[derive(Debug)]
pub struct GuestImage<'a> {
    /// The static busybox.
    pub busybox: &'a Path,
    /// A `pci.ids` to install as `/usr/share/misc/pci.ids`, if any.
    pub pci_ids: Option<&'a Path>,
    /// The kernel whose modules to include.
    pub kernel: &'a Kernel,
    /// Executables to add (mode 0755).
    pub files: Vec<GuestFile>,
    /// The shell script to run as `/etc/usrdrv/command.sh`.
    pub command: String,
}

/// Writes the initramfs to `out`; returns its size in bytes.
pub fn write(out: &Path, image: &GuestImage<'_>) -> Result<u64> {
    let modules_dir = &image.kernel.modules_dir;
    let dep_path = modules_dir.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path).ctx("read", &dep_path)?;
    let builtin_path = modules_dir.join("modules.builtin");
    // A kernel without modules.builtin simply has none built in that we need.
    let builtin = std::fs::read_to_string(&builtin_path).unwrap_or_default();
    let selection = ModuleDb::parse(&dep, &builtin)
        .resolve_with_optional(GUEST_MODULES, OPTIONAL_GUEST_MODULES)?;

    let file = File::create(out).ctx("create", out)?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let io = |e| Error::io("write", out, e);

    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
        "mnt",
    ] {
        w.dir(dir, 0o755).map_err(io)?;
    }
    w.char_device("dev/console", 0o600, 5, 1).map_err(io)?;
    add_host_file(&mut w, "bin/busybox", image.busybox, out)?;
    for applet in EARLY_APPLETS {
        w.symlink(&format!("bin/{applet}"), "busybox").map_err(io)?;
    }
    w.file("init", 0o755, INIT.as_bytes()).map_err(io)?;
    if let Some(pci_ids) = image.pci_ids {
        add_host_file(&mut w, "usr/share/misc/pci.ids", pci_ids, out)?;
    }
    w.file("bin/vfio-bind", 0o755, VFIO_BIND.as_bytes())
        .map_err(io)?;
    w.file("bin/pci-find", 0o755, PCI_FIND.as_bytes())
        .map_err(io)?;

    let guest_modules = format!("lib/modules/{}", image.kernel.version);
    for rel in &selection.files {
        add_host_file(
            &mut w,
            &format!("{guest_modules}/{rel}"),
            &modules_dir.join(rel),
            out,
        )?;
    }
    w.file(
        &format!("{guest_modules}/modules.dep"),
        0o644,
        selection.modules_dep.as_bytes(),
    )
    .map_err(io)?;
    w.file(
        &format!("{guest_modules}/modules.builtin"),
        0o644,
        builtin.as_bytes(),
    )
    .map_err(io)?;
    let mut load = selection.load.join("\n");
    load.push('\n');
    w.file("etc/usrdrv/modules", 0o644, load.as_bytes())
        .map_err(io)?;
    w.file("etc/usrdrv/command.sh", 0o644, image.command.as_bytes())
        .map_err(io)?;

    for f in &image.files {
        add_host_file(&mut w, &f.guest_path, &f.host_path, out)?;
    }
    let (mut writer, size) = w.finish().map_err(io)?;
    writer.flush().map_err(io)?;
    Ok(size)
}

/// Streams a host file into the archive as an executable.
fn add_host_file<W: Write>(
    w: &mut CpioWriter<W>,
    guest: &str,
    host: &Path,
    out: &Path,
) -> Result<()> {
    let mut file = File::open(host).ctx("open", host)?;
    let len = file.metadata().ctx("read the size of", host)?.len();
    let mode = if guest.ends_with(".ko") || guest.ends_with(".ids") {
        0o644
    } else {
        0o755
    };
    w.file_from(guest, mode, &mut file, len)
        .map_err(|e| Error::io("write", out, e))
}

/// A `sh` single-quoted word.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::parse::entries;
    use crate::guest_results::{EXIT_MARKER, READY_MARKER};

    #[test]
    fn init_prints_the_markers_the_host_reads() {
        assert!(INIT.contains(&format!("echo \"{READY_MARKER}")));
        assert!(INIT.contains(&format!("echo \"{EXIT_MARKER} $status\"")));
        assert!(INIT.starts_with("#!/bin/busybox sh\n"));
        assert!(INIT.contains("poweroff -f"));
    }

    #[test]
    fn image_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let modules_dir = root.join("lib/modules/6.1.0-test");
        let dep = "\
kernel/vfio.ko:
kernel/vfio_iommu_type1.ko: kernel/vfio.ko
kernel/vfio-pci.ko: kernel/vfio.ko
kernel/nvme.ko:
kernel/uio_pci_generic.ko: kernel/uio.ko
kernel/uio.ko:
kernel/other.ko:
";
        std::fs::create_dir_all(modules_dir.join("kernel")).expect("mkdir");
        std::fs::write(modules_dir.join("modules.dep"), dep).expect("write");
        for line in dep.lines() {
            let (path, _) = line.split_once(':').expect("colon");
            std::fs::write(modules_dir.join(path), path).expect("write");
        }
        let busybox = root.join("busybox");
        std::fs::write(&busybox, "BUSYBOX").expect("write");
        let tool = root.join("usrdrv");
        std::fs::write(&tool, "TOOL").expect("write");
        let kernel = Kernel {
            image: root.join("vmlinuz"),
            version: "6.1.0-test".to_string(),
            modules_dir,
            debian: None,
        };
        let image = GuestImage {
            busybox: &busybox,
            pci_ids: None,
            kernel: &kernel,
            files: vec![GuestFile {
                guest_path: "/usr/bin/usrdrv".to_string(),
                host_path: tool,
            }],
            command: "exit 3\n".to_string(),
        };
        let out = root.join("initramfs.cpio");
        let size = write(&out, &image).expect("writes");
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(size, bytes.len() as u64);
        let e = entries(&bytes);
        let find = |name: &str| {
            e.iter()
                .find(|x| x.name == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("init").mode, 0o100_755);
        assert_eq!(find("bin/busybox").data, b"BUSYBOX");
        assert_eq!(find("bin/sh").data, b"busybox");
        assert_eq!(find("dev/console").rdev, (5, 1));
        assert_eq!(find("usr/bin/usrdrv").data, b"TOOL");
        assert_eq!(find("usr/bin/usrdrv").mode, 0o100_755);
        assert_eq!(find("etc/usrdrv/command.sh").data, b"exit 3\n");
        assert_eq!(
            find("etc/usrdrv/modules").data,
            b"vfio\nvfio_iommu_type1\nvfio_pci\nnvme\nuio_pci_generic\n"
        );
        assert_eq!(
            find("lib/modules/6.1.0-test/kernel/vfio-pci.ko").mode,
            0o100_644
        );
        let trimmed = String::from_utf8(find("lib/modules/6.1.0-test/modules.dep").data.clone())
            .expect("utf-8");
        assert!(trimmed.contains("kernel/uio.ko:"));
        assert!(!trimmed.contains("other"));
        assert!(!e.iter().any(|x| x.name.ends_with("other.ko")));
        // Every entry's parent directory comes before it.
        for (i, entry) in e.iter().enumerate() {
            if let Some((parent, _)) = entry.name.rsplit_once('/') {
                let pos = e
                    .iter()
                    .position(|x| x.name == parent)
                    .expect("parent exists");
                assert!(pos < i, "{parent} after {}", entry.name);
            }
        }
    }

    #[test]
    fn quoting_for_sh() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
