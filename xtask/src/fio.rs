//! fio for the guest, the baseline load generator of the NVMe benchmark:
//! Debian 12's `fio` package with the shared libraries it needs and glibc's
//! loader, unpacked once into `<cache>/fio`.
//!
//! The packages come through an apt sources file and package lists of the
//! rig's own in the cache (Debian 12 main, from the mirror the system's
//! sources use); nothing is installed on the host. The libraries are the
//! closure of the `NEEDED` entries of the unpacked binary (read with
//! `readelf -d`): the rig fetches fio's direct dependencies, then those of
//! each package that supplied a library of the closure, until every
//! library is found. In the guest, which has no loader of its own,
//! `/usr/bin/fio` runs `/opt/fio/bin/fio` through `/opt/fio/lib`'s loader.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, Apt};
use crate::error::{Error, IoContext, Result};
use crate::initramfs::GuestFile;
use crate::process;
use crate::provision::{lock_cache, temp_in};

/// Where fio and its libraries live in the guest.
pub const GUEST_DIR: &str = "/opt/fio";
/// The Debian suite fio comes from.
const SUITE: &str = "bookworm";
/// Written last into a finished `<cache>/fio`: the packages it came from.
const STAMP: &str = "usrdrv-fio.txt";
/// glibc's loader, which the closure must contain.
const LOADER: &str = "ld-linux-x86-64.so.2";
/// Rounds of dependency fetching before giving up.
const MAX_ROUNDS: usize = 6;
/// Where a package keeps shared libraries.
const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "usr/lib64",
    "lib",
    "usr/lib",
];

/// fio unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Fio {
    dir: PathBuf,
}

impl Fio {
    /// The files to put into the guest: the binary, its libraries and the
    /// `/usr/bin/fio` wrapper.
    pub fn guest_files(&self) -> Result<Vec<GuestFile>> {
        let mut files = vec![
            GuestFile {
                guest_path: format!("{GUEST_DIR}/bin/fio"),
                host_path: self.dir.join("bin/fio"),
            },
            GuestFile {
                guest_path: "/usr/bin/fio".to_string(),
                host_path: self.dir.join("fio.sh"),
            },
        ];
        let lib = self.dir.join("lib");
        let mut names: Vec<String> = fs::read_dir(&lib)
            .ctx("read the directory", &lib)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|name| GuestFile {
            guest_path: format!("{GUEST_DIR}/lib/{name}"),
            host_path: lib.join(&name),
        }));
        Ok(files)
    }
}

/// The `/usr/bin/fio` wrapper.
fn wrapper() -> String {
    format!(
        "#!/bin/sh\n# fio from Debian's package, with the libraries it needs (see cargo xtask bench).\n\
         exec {GUEST_DIR}/lib/{LOADER} --library-path {GUEST_DIR}/lib {GUEST_DIR}/bin/fio \"$@\"\n"
    )
}

/// fio in the cache, fetching it on first use.
pub fn provision(cache: &Path) -> Result<Fio> {
    let dir = cache.join("fio");
    if dir.join(STAMP).is_file() {
        return Ok(Fio { dir });
    }
    let _lock = lock_cache(cache)?;
    if dir.join(STAMP).is_file() {
        return Ok(Fio { dir });
    }
    eprintln!(
        "xtask: provisioning fio ({SUITE}) and its libraries into {}",
        dir.display()
    );
    let readelf = match process::which("readelf") {
        Some(path) => path,
        None => Apt::new().install_tool("readelf", "binutils")?,
    };
    let apt_dir = cache.join(format!("apt-{SUITE}"));
    let mut apt = Apt::for_suite(SUITE, &apt_dir)?.ignoring_installed(&apt_dir)?;
    let tmp = temp_in(cache, "fio")?;
    let mut fetcher = Fetcher {
        apt: &mut apt,
        dir: tmp.path().to_path_buf(),
        roots: BTreeMap::new(),
        tried: BTreeSet::new(),
        debs: Vec::new(),
    };
    fetcher.fetch("fio")?;
    let binary = fetcher.roots["fio"].join("usr/bin/fio");
    let mut depends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..MAX_ROUNDS {
        let index = fetcher.index()?;
        let closure = closure(&readelf, &binary, &index)?;
        if closure.missing.is_empty() {
            if !closure.found.contains_key(LOADER) {
                return Err(Error::Setup(format!(
                    "fio's libraries were found, but not glibc's loader {LOADER}"
                )));
            }
            let staged = tmp.path().join("staged");
            stage(&staged, &binary, &closure.found, &fetcher.debs)?;
            if dir.exists() {
                fs::remove_dir_all(&dir).ctx("remove", &dir)?;
            }
            fs::rename(&staged, &dir).ctx("move fio into", &dir)?;
            return Ok(Fio { dir });
        }
        // Expand from the packages that supplied part of the closure.
        let mut useful: BTreeSet<String> = closure.found.values().map(|(p, _)| p.clone()).collect();
        useful.insert("fio".to_string());
        let mut next = Vec::new();
        for package in &useful {
            if !depends.contains_key(package) {
                let deps = fetcher.apt.depends(package)?;
                depends.insert(package.clone(), deps);
            }
            for dep in &depends[package] {
                if !fetcher.tried.contains(dep) && !next.contains(dep) {
                    next.push(dep.clone());
                }
            }
        }
        if next.is_empty() {
            break;
        }
        for package in next {
            if let Err(err) = fetcher.fetch(&package) {
                eprintln!("xtask: warning: {package} (a dependency of fio's libraries): {err}");
            }
        }
    }
    let index = fetcher.index()?;
    let missing = closure(&readelf, &binary, &index)?.missing;
    Err(Error::Setup(format!(
        "fio needs {}, which no package it depends on provides",
        missing.into_iter().collect::<Vec<_>>().join(", ")
    )))
}

/// Downloads and unpacks packages, each into its own directory.
struct Fetcher<'a> {
    apt: &'a mut Apt,
    dir: PathBuf,
    /// Package name to the directory it was unpacked into.
    roots: BTreeMap<String, PathBuf>,
    /// Every package asked for, found or not.
    tried: BTreeSet<String>,
    /// The `.deb` file names, for the stamp.
    debs: Vec<String>,
}

impl Fetcher<'_> {
    fn fetch(&mut self, package: &str) -> Result<()> {
        self.tried.insert(package.to_string());
        let debs = self.dir.join("debs");
        fs::create_dir_all(&debs).ctx("create", &debs)?;
        let deb = self.apt.download(package, &debs)?;
        let root = self.dir.join("roots").join(package);
        fs::create_dir_all(&root).ctx("create", &root)?;
        apt::unpack(&deb, &root)?;
        if let Some(name) = deb.file_name() {
            self.debs.push(name.to_string_lossy().into_owned());
        }
        fs::remove_file(&deb).ctx("remove", &deb)?;
        self.roots.insert(package.to_string(), root);
        Ok(())
    }

    /// Every shared library of the unpacked packages: file name to the
    /// package and the real file (symbolic links followed inside the root).
    fn index(&self) -> Result<BTreeMap<String, (String, PathBuf)>> {
        let mut index = BTreeMap::new();
        for (package, root) in &self.roots {
            // The library directories and their subdirectories (librados
            // keeps libceph-common in .../ceph, found through its RUNPATH).
            let mut dirs: Vec<PathBuf> = LIB_DIRS.iter().map(|d| root.join(d)).collect();
            for d in LIB_DIRS {
                if let Ok(entries) = fs::read_dir(root.join(d)) {
                    dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
            }
            for dir in dirs {
                let Ok(entries) = fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.contains(".so") {
                        continue;
                    }
                    if let Some(real) = resolve_in(root, &entry.path())
                        && real.is_file()
                    {
                        index.entry(name).or_insert((package.clone(), real));
                    }
                }
            }
        }
        Ok(index)
    }
}

/// Follows symbolic links from `path`, reading absolute targets as inside
/// `root` (an unpacked package is not the host's `/`).
fn resolve_in(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..16 {
        let Ok(target) = fs::read_link(&path) else {
            return Some(path);
        };
        path = if target.is_absolute() {
            root.join(target.strip_prefix("/").ok()?)
        } else {
            path.parent()?.join(target)
        };
    }
    None
}

/// The libraries a binary needs, transitively.
#[derive(Debug, Default)]
struct Closure {
    /// Soname to its package and file.
    found: BTreeMap<String, (String, PathBuf)>,
    /// Sonames no unpacked package has.
    missing: BTreeSet<String>,
}

fn closure(
    readelf: &Path,
    binary: &Path,
    index: &BTreeMap<String, (String, PathBuf)>,
) -> Result<Closure> {
    let mut result = Closure::default();
    let mut queue = vec![binary.to_path_buf()];
    while let Some(file) = queue.pop() {
        for soname in needed(readelf, &file)? {
            if result.found.contains_key(&soname) || result.missing.contains(&soname) {
                continue;
            }
            match index.get(&soname) {
                Some((package, path)) => {
                    queue.push(path.clone());
                    result.found.insert(soname, (package.clone(), path.clone()));
                }
                None => {
                    result.missing.insert(soname);
                }
            }
        }
    }
    Ok(result)
}

/// The `NEEDED` entries of an ELF file.
fn needed(readelf: &Path, file: &Path) -> Result<Vec<String>> {
    let mut cmd = Command::new(readelf);
    cmd.arg("-d").arg(file);
    let out = process::output(&mut cmd)?;
    process::check_status(&cmd, out.status, "")?;
    Ok(parse_needed(&String::from_utf8_lossy(&out.stdout)))
}

/// Picks the library names out of `readelf -d` output.
fn parse_needed(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l[start..].find(']')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// Lays out `staged`: `bin/fio`, `lib/<soname>`, `fio.sh` and the stamp.
fn stage(
    staged: &Path,
    binary: &Path,
    libs: &BTreeMap<String, (String, PathBuf)>,
    debs: &[String],
) -> Result<()> {
    let bin = staged.join("bin");
    let lib = staged.join("lib");
    for d in [&bin, &lib] {
        fs::create_dir_all(d).ctx("create", d)?;
    }
    fs::copy(binary, bin.join("fio")).ctx("copy", binary)?;
    for (soname, (_, path)) in libs {
        fs::copy(path, lib.join(soname)).ctx("copy", path)?;
    }
    let script = staged.join("fio.sh");
    fs::write(&script, wrapper()).ctx("write", &script)?;
    let mut used: Vec<&str> = debs.iter().map(String::as_str).collect();
    used.sort_unstable();
    let stamp = staged.join(STAMP);
    let text = format!(
        "fio for the usrdrv guest, from Debian {SUITE}; libraries: {}\npackages fetched:\n{}\n",
        libs.keys().cloned().collect::<Vec<_>>().join(" "),
        used.join("\n")
    );
    fs::write(&stamp, text).ctx("write", &stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_entries() {
        let text = "Dynamic section at offset 0x1b8d88 contains 33 entries:\n  \
            Tag        Type                         Name/Value\n \
            0x0000000000000001 (NEEDED)             Shared library: [libnuma.so.1]\n \
            0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n \
            0x000000000000000c (INIT)               0x9000\n";
        assert_eq!(parse_needed(text), ["libnuma.so.1", "libc.so.6"]);
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let lib = root.join("lib/x86_64-linux-gnu");
        fs::create_dir_all(&lib).expect("mkdir");
        fs::create_dir_all(root.join("lib64")).expect("mkdir");
        fs::write(lib.join("libz.so.1.2.13"), "ELF").expect("write");
        std::os::unix::fs::symlink("libz.so.1.2.13", lib.join("libz.so.1")).expect("link");
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/libz.so.1",
            root.join("lib64/libz.so.1"),
        )
        .expect("link");
        assert_eq!(
            resolve_in(root, &root.join("lib64/libz.so.1")),
            Some(lib.join("libz.so.1.2.13"))
        );
        assert!(wrapper().contains("--library-path /opt/fio/lib /opt/fio/bin/fio \"$@\""));
    }
}
