//! `cargo xtask vm --usrdma`: the no-IOMMU kernel companion in the guest.
//!
//! Builds `kmod/usrdma` against the guest kernel's headers and its test
//! programs (`kmod/usrdma/test/usrdma_test.c`, `usrdma_fuzz.c` and
//! `usrdma_hard.c`) with the host's `gcc -static`, for the image:
//! `/lib/modules/usrdma.ko` (not loaded; `insmod` it), `/usr/bin/usrdma-test`,
//! `/usr/bin/usrdma-fuzz` and `/usr/bin/usrdma-hard`. Nothing
//! here runs unless `--usrdma` is given.
//!
//! The headers of the provisioned Debian kernel (`linux-headers-<version>`
//! and the `linux-headers-*-common` and `linux-kbuild-*` packages it
//! depends on, at the same package version) are downloaded and unpacked
//! into `<cache>/kernel-headers`, never installed. Their Makefile includes
//! the common tree by absolute path, and absolute symlinks point into
//! `/usr`: both are rewritten to point inside the unpacked tree.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Apt};
use crate::error::{Error, IoContext, Result};
use crate::initramfs::GuestFile;
use crate::process;
use crate::provision::{self, GuestKernel, Provisioned};

/// Where the module lands in the guest.
pub const GUEST_MODULE: &str = "/lib/modules/usrdma.ko";
/// Where the test program lands in the guest.
pub const GUEST_TEST: &str = "/usr/bin/usrdma-test";
/// Where the fuzzer lands in the guest.
pub const GUEST_FUZZ: &str = "/usr/bin/usrdma-fuzz";
/// Where the hard-case races land in the guest.
pub const GUEST_HARD: &str = "/usr/bin/usrdma-hard";

/// Marker written into a finished headers tree: the kernel version.
const HEADERS_STAMP: &str = "usrdrv-headers.txt";

/// The built module and test programs; the files live as long as this.
#[derive(Debug)]
pub struct Built {
    _dir: tempfile::TempDir,
    /// The guest files to add to the image.
    pub files: Vec<GuestFile>,
}

/// Builds the module against the guest kernel and the test programs. For a
/// provisioned Debian kernel its headers are fetched; for the user's
/// (`--modules DIR`) `DIR/build` must be its kbuild tree.
pub fn build(prov: &Provisioned) -> Result<Built> {
    let source = provision::workspace_root().join("kmod/usrdma");
    let kdir = if let Some(which) = prov.kernel.debian {
        debian_headers(&prov.cache, which, &prov.kernel.version)?
    } else {
        let build = prov.kernel.modules_dir.join("build");
        if !build.join("Makefile").is_file() {
            return Err(Error::Setup(format!(
                "--usrdma needs the kernel's kbuild tree at {}",
                build.display()
            )));
        }
        build
    };
    install_build_tools(kernel_cc(&kdir).as_deref(), needs_pahole(&kdir))?;
    let dir = tempfile::Builder::new()
        .prefix("usrdrv-usrdma-")
        .tempdir()
        .ctx("create a temporary directory for", &source)?;
    // Build a copy: kbuild writes its objects next to the sources.
    let build_dir = dir.path().join("usrdma");
    fs::create_dir(&build_dir).ctx("create", &build_dir)?;
    copy_sources(&source, &build_dir)?;
    eprintln!(
        "xtask: building usrdma.ko for Linux {}",
        prov.kernel.version
    );
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", build_dir.display()))
        .arg("modules");
    process::run(&mut make)?;

    let mut files = vec![GuestFile {
        guest_path: GUEST_MODULE.to_string(),
        host_path: build_dir.join("usrdma.ko"),
    }];
    for (program, guest_path) in [
        ("usrdma_test", GUEST_TEST),
        ("usrdma_fuzz", GUEST_FUZZ),
        ("usrdma_hard", GUEST_HARD),
    ] {
        let binary = dir.path().join(program);
        let mut gcc = Command::new("gcc");
        gcc.args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(&source)
            .arg("-o")
            .arg(&binary)
            .arg(source.join(format!("test/{program}.c")));
        process::run(&mut gcc)?;
        files.push(GuestFile {
            guest_path: guest_path.to_string(),
            host_path: binary,
        });
    }
    Ok(Built { _dir: dir, files })
}

/// Copies the module's sources (with `probes/`, the feature tests the
/// Makefile compiles) from `from` into `to`.
fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).ctx("read", from)?.flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            fs::create_dir(&dest).ctx("create", &dest)?;
            copy_sources(&path, &dest)?;
        } else if path.is_file() {
            fs::copy(&path, &dest).ctx("copy", &path)?;
        }
    }
    Ok(())
}

/// What building the module and the static test programs needs on the host:
/// make, gcc, the compiler the kernel's kbuild tree names (Debian's name a
/// versioned one, such as `gcc-12`), and the static C library. Installed
/// with apt when missing and we are root.
fn install_build_tools(kernel_cc: Option<&str>, pahole: bool) -> Result<()> {
    let mut apt = Apt::new();
    apt.install_tool("make", "make")?;
    apt.install_tool("gcc", "gcc")?;
    if let Some(cc) = kernel_cc {
        apt.install_tool(cc, cc)?;
    }
    if pahole {
        apt.install_tool("pahole", "dwarves")?;
    }
    apt.install_file(Path::new(STATIC_LIBC), "libc6-dev")
}

/// Whether kbuild will make BTF for the module with `pahole`: the kernel
/// has BTF for modules and the tree ships the `vmlinux` it is split from
/// (without it kbuild skips BTF by itself).
fn needs_pahole(kdir: &Path) -> bool {
    kdir.join("vmlinux").is_file()
        && fs::read_to_string(kdir.join(".config"))
            .is_ok_and(|c| c.lines().any(|l| l == "CONFIG_DEBUG_INFO_BTF_MODULES=y"))
}

/// The versioned compiler a Debian kbuild tree calls (`CC = ... gcc-12` in
/// its `.kernelvariables`), if it names one.
fn kernel_cc(kdir: &Path) -> Option<String> {
    let vars = fs::read_to_string(kdir.join(".kernelvariables")).ok()?;
    parse_kernel_cc(&vars)
}

fn parse_kernel_cc(vars: &str) -> Option<String> {
    let line = vars
        .lines()
        .find(|l| l.split('=').next().is_some_and(|k| k.trim() == "CC"))?;
    let last = line.split_whitespace().last()?;
    let cc = last.rsplit(')').next()?;
    (cc.starts_with("gcc-") && cc[4..].chars().all(|c| c.is_ascii_digit())).then(|| cc.to_owned())
}

/// The static C library `gcc -static` links.
const STATIC_LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.a";

/// The kbuild tree of the provisioned Debian kernel `version`, fetched on
/// first use into `<cache>/kernel-headers` (`kernel-headers-6.12` for 6.12).
fn debian_headers(cache: &Path, which: GuestKernel, version: &str) -> Result<PathBuf> {
    let root = cache.join(which.cache_name("kernel-headers"));
    let kdir = root.join(format!("usr/src/linux-headers-{version}"));
    let fresh = |root: &Path| {
        fs::read_to_string(root.join(HEADERS_STAMP)).is_ok_and(|s| s.trim() == version)
    };
    if fresh(&root) {
        return Ok(kdir);
    }
    let _lock = provision::lock_cache(cache)?;
    if fresh(&root) {
        return Ok(kdir);
    }
    let package = format!("linux-headers-{version}");
    eprintln!(
        "xtask: provisioning the kernel headers {package} into {}",
        root.display()
    );
    let mut apt = which.apt(cache)?;
    let tmp = provision::temp_in(cache, "headers")?;
    let unpacked = tmp.path().join("root");
    let main_dir = tmp.path().join("main");
    fs::create_dir(&main_dir).ctx("create", &main_dir)?;
    let deb = apt.download(&package, &main_dir)?;
    let depends = deb_field(&deb, "Depends")?;
    let deb_version = deb_field(&deb, "Version")?;
    apt::unpack(&deb, &unpacked)?;
    // The common headers and kbuild come from the same source package:
    // take exactly the same version.
    for name in header_dependencies(&depends) {
        let dir = tmp.path().join(&name);
        fs::create_dir(&dir).ctx("create", &dir)?;
        let deb = apt.download(&format!("{name}={deb_version}"), &dir)?;
        apt::unpack(&deb, &unpacked)?;
    }
    fix_up_headers(&unpacked, version)?;
    let stamp = unpacked.join(HEADERS_STAMP);
    fs::write(&stamp, format!("{version}\n")).ctx("write", &stamp)?;
    if root.exists() {
        fs::remove_dir_all(&root).ctx("remove", &root)?;
    }
    fs::rename(&unpacked, &root).ctx("move the kernel headers into", &root)?;
    Ok(kdir)
}

/// One control field of a `.deb`.
fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-f").arg(deb).arg(field);
    let out = process::output(&mut cmd)?;
    process::check_status(&cmd, out.status, "")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The header and kbuild packages in a `Depends:` field (the compiler
/// package only pulls in gcc, which the host has).
fn header_dependencies(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| name.starts_with("linux-headers-") || name.starts_with("linux-kbuild-"))
        .map(str::to_string)
        .collect()
}

/// Makes the unpacked headers self-contained: the Makefile's absolute
/// `include /usr/src/...` becomes relative (make runs in that directory),
/// and absolute symlinks to paths inside the tree become relative.
fn fix_up_headers(unpacked: &Path, version: &str) -> Result<()> {
    let makefile = unpacked.join(format!("usr/src/linux-headers-{version}/Makefile"));
    let text = fs::read_to_string(&makefile).ctx("read", &makefile)?;
    let fixed: String = text
        .lines()
        .map(|line| match line.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include ../{rest}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    fs::write(&makefile, fixed).ctx("write", &makefile)?;
    relativize_symlinks(unpacked, unpacked)
}

/// Rewrites absolute symlinks under `dir` whose targets exist in `root`.
fn relativize_symlinks(root: &Path, dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).ctx("read", dir)?.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            relativize_symlinks(root, &path)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).ctx("read the link", &path)?;
            let Ok(inside) = target.strip_prefix("/") else {
                continue;
            };
            if !root.join(inside).exists() {
                continue;
            }
            let link_dir = path
                .parent()
                .and_then(|p| p.strip_prefix(root).ok())
                .unwrap_or(Path::new(""));
            let ups = link_dir
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count();
            let mut relative = PathBuf::new();
            for _ in 0..ups {
                relative.push("..");
            }
            relative.push(inside);
            fs::remove_file(&path).ctx("remove", &path)?;
            std::os::unix::fs::symlink(&relative, &path).ctx("create the link", &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernel_compiler_is_read_from_kernelvariables() {
        let vars =
            "ARCH = x86\nCC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-12\n";
        assert_eq!(super::parse_kernel_cc(vars).as_deref(), Some("gcc-12"));
        assert_eq!(super::parse_kernel_cc("CC = gcc\n"), None);
        assert_eq!(super::parse_kernel_cc("CCACHE = ccache\n"), None);
    }
}
