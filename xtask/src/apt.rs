//! Debian packages: look-ups, downloads (never installed) and installs of
//! the host tools the rig needs.
//!
//! A fresh machine has empty package lists, so a look-up that finds nothing
//! runs `apt-get update` once (as root) and tries again.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::process;

/// The metapackage that names the current Debian kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// Talks to apt, remembering whether the lists were already updated.
///
/// The default helper uses the system's sources. One made by
/// [`Apt::for_suite`] reads another suite through its own sources file and
/// package lists in the rig's cache (`-o Dir::Etc::sourcelist=...`): the
/// system's sources and lists are never touched.
#[derive(Debug, Default)]
pub struct Apt {
    updated: bool,
    /// `-o` options that point apt at private sources and lists.
    options: Vec<String>,
}

/// The Debian release whose archive the system's sources must serve for
/// [`Apt::for_suite`] to find the mirror to use.
const MIRROR_RELEASE: &str = "bookworm";

impl Apt {
    /// A new helper for the system's sources; nothing is run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A helper for the Debian `suite` (e.g. `bookworm-backports`, main),
    /// from the same mirror as the system's own Debian sources, with its
    /// sources file and lists in `dir` (created).
    pub fn for_suite(suite: &str, dir: &Path) -> Result<Self> {
        Self::require_apt()?;
        let mirror = Self::new().system_mirror()?;
        let lists = dir.join("lists");
        let cache = dir.join("cache");
        for d in [lists.join("partial"), cache.join("archives/partial")] {
            std::fs::create_dir_all(&d).ctx("create", &d)?;
        }
        let sources = dir.join("sources.list");
        let line = format!("deb {mirror} {suite} main\n");
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&sources, &line).ctx("write", &sources)?;
        }
        let options = [
            format!("Dir::Etc::sourcelist={}", sources.display()),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={}", lists.display()),
            format!("Dir::Cache={}", cache.display()),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect();
        Ok(Self {
            updated: false,
            options,
        })
    }

    /// Makes apt ignore the packages installed on this machine (an empty
    /// status file in `dir`), so that a download picks the private lists'
    /// version even when the host has another one installed.
    pub fn ignoring_installed(mut self, dir: &Path) -> Result<Self> {
        let status = dir.join("status");
        if !status.is_file() {
            std::fs::write(&status, "").ctx("write", &status)?;
        }
        self.options.push("-o".to_string());
        self.options
            .push(format!("Dir::State::status={}", status.display()));
        Ok(self)
    }

    /// Whether this helper reads private lists (no root needed to update them).
    fn private(&self) -> bool {
        !self.options.is_empty()
    }

    /// `apt-get` or `apt-cache` with this helper's options.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(&self.options);
        cmd
    }

    /// The URI of the system's Debian archive: the one serving
    /// [`MIRROR_RELEASE`], else the first that looks like a Debian archive.
    fn system_mirror(&mut self) -> Result<String> {
        loop {
            let mut cmd = Command::new("apt-cache");
            cmd.arg("policy");
            let out = process::output(&mut cmd)?;
            if let Some(uri) = parse_mirror(&String::from_utf8_lossy(&out.stdout)) {
                return Ok(uri);
            }
            self.update_once(
                "the system's apt sources name no Debian archive to fetch the guest kernel from",
            )?;
        }
    }

    /// Fails with a clear message when this is not a Debian-like host.
    fn require_apt() -> Result<()> {
        if process::which("apt-get").is_some() && process::which("dpkg-deb").is_some() {
            Ok(())
        } else {
            Err(Error::Setup(
                "apt-get and dpkg-deb were not found: the rig downloads a Debian kernel and busybox \
                 with apt; on other distributions pass --kernel, --modules and --busybox"
                    .to_string(),
            ))
        }
    }

    /// Runs `apt-get update` once per process. Without root it fails with
    /// the command to run.
    fn update_once(&mut self, why: &str) -> Result<()> {
        if self.updated {
            return Err(Error::Setup(format!(
                "{why}, even after apt-get update: check the apt sources of this machine"
            )));
        }
        if !self.private() && !process::is_root() {
            return Err(Error::Setup(format!(
                "{why}: the package lists may be empty; run `sudo apt-get update` and try again"
            )));
        }
        self.updated = true;
        process::run(self.command("apt-get").arg("update"))
    }

    /// Whether the package lists know `package` (they are empty on a
    /// fresh machine).
    fn knows(&self, package: &str) -> Result<bool> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["show", "--no-all-versions", package]);
        let out = process::output(&mut cmd)?;
        Ok(out.status.success() && !out.stdout.is_empty())
    }

    /// Resolves the real kernel package behind [`KERNEL_METAPACKAGE`], e.g.
    /// `linux-image-6.1.0-56-amd64`.
    pub fn resolve_kernel_package(&mut self) -> Result<String> {
        Self::require_apt()?;
        loop {
            let mut cmd = self.command("apt-cache");
            cmd.args(["depends", KERNEL_METAPACKAGE]);
            let out = process::output(&mut cmd)?;
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(pkg) = parse_kernel_dependency(&text) {
                return Ok(pkg);
            }
            self.update_once(&format!(
                "apt-cache found no kernel package behind {KERNEL_METAPACKAGE}"
            ))?;
        }
    }

    /// Downloads the `.deb` of `package` (or `package=version`) into `dir`
    /// (nothing is installed) and returns its path.
    pub fn download(&mut self, package: &str, dir: &Path) -> Result<PathBuf> {
        Self::require_apt()?;
        loop {
            let mut cmd = self.command("apt-get");
            cmd.args(["download", package]).current_dir(dir);
            let out = process::output(&mut cmd)?;
            if out.status.success() {
                // `name=version` downloads `name_version_arch.deb`.
                let name = package.split('=').next().unwrap_or(package);
                return find_deb(dir, name);
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Old lists may name a version the mirror no longer has (404).
            let not_found = stderr.contains("Unable to locate")
                || stderr.contains("Can't select")
                || stderr.contains("has no installation candidate")
                || stderr.contains("404");
            if !not_found {
                // Show apt's own words, minus its harmless warning about root downloads.
                let details: Vec<&str> = stderr
                    .lines()
                    .filter(|l| !l.contains("unsandboxed"))
                    .collect();
                return Err(Error::CommandFailed {
                    command: process::describe(&cmd),
                    status: process::describe_status(out.status),
                    hint: format!(": {}", details.join(" ").trim()),
                });
            }
            self.update_once(&format!("apt-get could not find the package {package}"))?;
        }
    }

    /// The packages `package` depends on directly (`Depends:` and
    /// `PreDepends:`, each alternative; virtual packages left out).
    pub fn depends(&mut self, package: &str) -> Result<Vec<String>> {
        Self::require_apt()?;
        let mut cmd = self.command("apt-cache");
        cmd.args(["depends", "--no-recommends", "--no-suggests", package]);
        let out = process::output(&mut cmd)?;
        Ok(parse_depends(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Installs `package` so that `tool` exists; as non-root, fails with the
    /// exact command to run.
    pub fn install_tool(&mut self, tool: &str, package: &str) -> Result<PathBuf> {
        self.ensure(tool, || process::which(tool).is_some(), package)?;
        process::which(tool).ok_or_else(|| Error::Setup(format!("{tool} vanished")))
    }

    /// Installs `package` so that `file` exists (a library, a header).
    pub fn install_file(&mut self, file: &Path, package: &str) -> Result<()> {
        self.ensure(&file.display().to_string(), || file.exists(), package)
    }

    /// Installs `package` unless `present` says `what` is there already.
    fn ensure(&mut self, what: &str, present: impl Fn() -> bool, package: &str) -> Result<()> {
        if present() {
            return Ok(());
        }
        let fix = format!(
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {package}"
        );
        if !process::is_root() || process::which("apt-get").is_none() {
            return Err(Error::Setup(format!(
                "{what} is not installed: run `{fix}` (or your distribution's equivalent) and try again"
            )));
        }
        eprintln!("xtask: {what} is missing; installing the package {package}");
        if !self.knows(package)? {
            self.update_once(&format!("apt-cache does not know the package {package}"))?;
        }
        let mut cmd = Command::new("apt-get");
        // Wait for another apt or dpkg instead of failing at once.
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "--no-install-recommends",
            package,
        ]);
        process::run(&mut cmd)?;
        if present() {
            Ok(())
        } else {
            Err(Error::Setup(format!(
                "{what} is still missing after installing {package}: run `{fix}` by hand to see why"
            )))
        }
    }
}

/// Unpacks a `.deb` into `dest` with `dpkg-deb -x`.
pub fn unpack(deb: &Path, dest: &Path) -> Result<()> {
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("-x").arg(deb).arg(dest);
    process::run(&mut cmd)
}

/// Picks the `Depends: linux-image-...` line out of `apt-cache depends`.
fn parse_kernel_dependency(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

/// The real package names on the `Depends:` and `PreDepends:` lines of
/// `apt-cache depends` output (`|Depends:` alternatives included).
fn parse_depends(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('|');
        let Some(name) = line
            .strip_prefix("Depends:")
            .or_else(|| line.strip_prefix("PreDepends:"))
            .map(str::trim)
        else {
            continue;
        };
        let name = name.split(':').next().unwrap_or(name);
        if !name.starts_with('<') && !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// The archive URI in `apt-cache policy` output that serves
/// [`MIRROR_RELEASE`]'s main component, else the first one whose path is a
/// Debian archive's (`.../debian`).
fn parse_mirror(policy: &str) -> Option<String> {
    let entries: Vec<(&str, &str)> = policy
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let _priority = words.next()?.parse::<i32>().ok()?;
            let uri = words.next()?;
            let suite = words.next()?;
            (uri.contains("://") && words.last() == Some("Packages")).then_some((uri, suite))
        })
        .collect();
    let wanted = format!("{MIRROR_RELEASE}/main");
    entries
        .iter()
        .find(|(_, suite)| *suite == wanted)
        .or_else(|| {
            entries
                .iter()
                .find(|(uri, _)| uri.trim_end_matches('/').ends_with("/debian"))
        })
        .map(|(uri, _)| uri.trim_end_matches('/').to_string())
}

/// Finds the single `.deb` that `apt-get download` left in `dir`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).ctx("read the directory", dir)?;
    let prefix = format!("{package}_");
    for entry in entries {
        let path = entry.ctx("read the directory", dir)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name
            && name.starts_with(&prefix)
            && name.ends_with(".deb")
        {
            return Ok(path);
        }
    }
    Err(Error::Setup(format!(
        "apt-get download {package} succeeded but left no {package}_*.deb in {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_of_the_system_sources() {
        let policy = "Package files:\n 100 /var/lib/dpkg/status\n     release a=now\n \
            500 http://mirror.example/debian-security bookworm-security/main amd64 Packages\n \
            500 http://mirror.example/debian bookworm-updates/main amd64 Packages\n \
            500 http://mirror.example/debian bookworm/main amd64 Packages\n     \
            release v=12.14,o=Debian,n=bookworm\nPinned packages:\n";
        assert_eq!(
            parse_mirror(policy).as_deref(),
            Some("http://mirror.example/debian")
        );
        let other = " 500 https://local.example/debian/ trixie/main amd64 Packages\n";
        assert_eq!(
            parse_mirror(other).as_deref(),
            Some("https://local.example/debian")
        );
        assert_eq!(
            parse_mirror("Package files:\n 100 /var/lib/dpkg/status\n"),
            None
        );
    }

    #[test]
    fn depends_lines() {
        let text = "fio\n  Depends: libaio1\n  Depends: libc6\n |Depends: libz1\n  Depends: zlib1g\n  \
            Depends: <python3:any>\n  PreDepends: dpkg\n  Suggests: gnuplot\n  Depends: libc6\n  \
            Depends: libgcc-s1:amd64\n";
        assert_eq!(
            parse_depends(text),
            ["libaio1", "libc6", "libz1", "zlib1g", "dpkg", "libgcc-s1"]
        );
    }

    #[test]
    fn kernel_dependency() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n"), None);
        assert_eq!(parse_kernel_dependency(""), None);
    }
}
