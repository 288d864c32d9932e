//! Building the workspace's programs for the guest: static executables for
//! `x86_64-unknown-linux-gnu`, found through cargo's JSON messages.
//!
//! `--target` keeps these artifacts apart from the host build (they land in
//! `target/x86_64-unknown-linux-gnu/`) and keeps build scripts and proc
//! macros, which run on the host, out of the static flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::{elf, process};

/// The guest's target triple (the host's own: x86_64 Linux with glibc).
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The target-specific rustflags variable cargo reads.
const RUSTFLAGS_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS";
/// Links glibc statically: the guest has no dynamic loader.
const STATIC_FLAGS: &str = "-C target-feature=+crt-static";
/// The rig itself is not needed in the guest.
const EXCLUDED_PACKAGE: &str = "xtask";
/// Guest test targets are integration tests named `guest*`.
pub const GUEST_TEST_PREFIX: &str = "guest";
/// Guest test targets named `guest_noiommu*` run in a boot without the IOMMU.
pub const NO_IOMMU_TEST_PREFIX: &str = "guest_noiommu";

/// What kind of target an artifact was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `[[bin]]`.
    Bin,
    /// An example.
    Example,
    /// An integration test.
    Test,
}

/// A built executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The target's name (`usrdrv`, `edu_first_light`, `guest_vfio`).
    pub name: String,
    /// The package it belongs to.
    pub package: String,
    /// What kind of target it is.
    pub kind: Kind,
    /// The executable file.
    pub executable: PathBuf,
}

impl Artifact {
    /// `package/name`, the label used in reports and guest paths.
    pub fn label(&self) -> String {
        format!("{}/{}", self.package, self.name)
    }

    /// Whether this guest test binary runs in the boot without the IOMMU
    /// (its target name starts with `guest_noiommu`).
    pub fn wants_no_iommu(&self) -> bool {
        self.name.starts_with(NO_IOMMU_TEST_PREFIX)
    }
}

/// Builds every binary and example of the workspace, static.
pub fn build_binaries(profile: Profile) -> Result<Vec<Artifact>> {
    let mut args = vec!["build", "--bins", "--examples"];
    if profile == Profile::Release {
        args.push("--release");
    }
    let artifacts = cargo_json(&args)?;
    let wanted: Vec<Artifact> = artifacts
        .into_iter()
        .filter(|a| matches!(a.kind, Kind::Bin | Kind::Example))
        .collect();
    check_static(&wanted)?;
    Ok(wanted)
}

/// Which cargo profile guest binaries are built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The dev profile: what tests and the demo run.
    Dev,
    /// The release profile: what benchmarks measure.
    Release,
}

/// Builds the test binaries of the workspace, static, and returns the
/// guest ones (integration tests named `guest*`).
pub fn build_guest_tests() -> Result<Vec<Artifact>> {
    let artifacts = cargo_json(&["test", "--no-run"])?;
    let wanted: Vec<Artifact> = artifacts
        .into_iter()
        .filter(|a| a.kind == Kind::Test && a.name.starts_with(GUEST_TEST_PREFIX))
        .collect();
    check_static(&wanted)?;
    Ok(wanted)
}

/// Runs `cargo <args> --workspace ... --message-format=json-render-diagnostics`
/// for the guest target; diagnostics and progress go to the terminal.
fn cargo_json(args: &[&str]) -> Result<Vec<Artifact>> {
    let mut cmd = process::cargo();
    cmd.args(args)
        .args([
            "--workspace",
            "--exclude",
            EXCLUDED_PACKAGE,
            "--target",
            GUEST_TARGET,
        ])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(crate::provision::workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    add_static_flags(&mut cmd);
    process::announce(&cmd);
    let out = process::spawn_err(cmd.output(), &cmd)?;
    process::check_status(&cmd, out.status, ": see the compiler output above")?;
    Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout)))
}

/// Sets the static flags, keeping flags the user set. (`RUSTFLAGS` would
/// override the target variable, so it gets them too.)
fn add_static_flags(cmd: &mut Command) {
    let join = |var: &str, sep: &str, flags: &str| match std::env::var(var) {
        Ok(existing) if !existing.trim().is_empty() => Some(format!("{existing}{sep}{flags}")),
        _ => None,
    };
    let target = join(RUSTFLAGS_VAR, " ", STATIC_FLAGS).unwrap_or_else(|| STATIC_FLAGS.to_string());
    cmd.env(RUSTFLAGS_VAR, target);
    if let Some(flags) = join("RUSTFLAGS", " ", STATIC_FLAGS) {
        cmd.env("RUSTFLAGS", flags);
    }
    let encoded = STATIC_FLAGS.replace(' ', "\x1f");
    if let Some(flags) = join("CARGO_ENCODED_RUSTFLAGS", "\x1f", &encoded) {
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    }
}

/// Fails unless every artifact is a static executable.
fn check_static(artifacts: &[Artifact]) -> Result<()> {
    for a in artifacts {
        elf::require_static(
            &a.executable,
            "it must be built with `-C target-feature=+crt-static`; check RUSTFLAGS and \
             .cargo/config.toml",
        )?;
    }
    Ok(())
}

/// Picks the executables out of cargo's JSON messages.
pub fn parse_artifacts(json_lines: &str) -> Vec<Artifact> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        let kinds: Vec<&str> = msg["target"]["kind"]
            .as_array()
            .map(|k| k.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let kind = if kinds.contains(&"test") {
            Kind::Test
        } else if kinds.contains(&"example") {
            Kind::Example
        } else if kinds.contains(&"bin") && msg["profile"]["test"] != true {
            Kind::Bin
        } else {
            continue;
        };
        let (Some(name), Some(package_id)) =
            (msg["target"]["name"].as_str(), msg["package_id"].as_str())
        else {
            continue;
        };
        out.push(Artifact {
            name: name.to_string(),
            package: package_name(package_id, msg["manifest_path"].as_str()),
            kind,
            executable: PathBuf::from(executable),
        });
    }
    out
}

/// The package name in a cargo package id, in either the old
/// (`name 0.1.0 (path+file:///...)`) or the new
/// (`path+file:///.../dir#name@0.1.0`, `path+file:///.../name#0.1.0`) form.
fn package_name(id: &str, manifest_path: Option<&str>) -> String {
    if (!id.contains("://") || id.contains(" ("))
        && let Some(first) = id.split_whitespace().next()
    {
        return first.to_string();
    }
    if let Some((url, fragment)) = id.rsplit_once('#') {
        if let Some((name, _version)) = fragment.split_once('@') {
            return name.to_string();
        }
        if let Some(last) = url.trim_end_matches('/').rsplit('/').next() {
            return last.to_string();
        }
    }
    manifest_path
        .and_then(|m| Path::new(m).parent())
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| id.to_string())
}

/// Fails with a clear message when `name` was not among the built examples.
pub fn find<'a>(artifacts: &'a [Artifact], name: &str, source_hint: &str) -> Result<&'a Artifact> {
    artifacts.iter().find(|a| a.name == name).ok_or_else(|| {
        Error::Build(format!(
            "The workspace has no binary or example named {name}: expected {source_hint}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/usrdrv#0.1.0","manifest_path":"/w/crates/usrdrv/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"usrdrv","src_path":"/w/crates/usrdrv/src/lib.rs","edition":"2024","doc":true,"doctest":true,"test":true},"profile":{"test":false},"filenames":["/w/target/x/debug/libusrdrv.rlib"],"executable":null,"fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/usrdrv-cli#0.1.0","manifest_path":"/w/crates/usrdrv-cli/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"usrdrv","src_path":"/w/crates/usrdrv-cli/src/main.rs"},"profile":{"test":false},"executable":"/w/target/x/debug/usrdrv","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/usrdrv-cli#0.1.0","manifest_path":"/w/crates/usrdrv-cli/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"usrdrv","src_path":"/w/crates/usrdrv-cli/src/main.rs"},"profile":{"test":true},"executable":"/w/target/x/debug/deps/usrdrv-abc","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/usrdrv#0.1.0","manifest_path":"/w/crates/usrdrv/Cargo.toml","target":{"kind":["example"],"crate_types":["bin"],"name":"edu_first_light"},"profile":{"test":false},"executable":"/w/target/x/debug/examples/edu_first_light","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/usrdrv#0.1.0","manifest_path":"/w/crates/usrdrv/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"guest_vfio"},"profile":{"test":true},"executable":"/w/target/x/debug/deps/guest_vfio-0123","fresh":false}
{"reason":"compiler-message","message":{}}
not json at all
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn artifacts_from_json() {
        let a = parse_artifacts(MESSAGES);
        let summary: Vec<(String, Kind)> = a.iter().map(|a| (a.label(), a.kind)).collect();
        assert_eq!(
            summary,
            [
                ("usrdrv-cli/usrdrv".to_string(), Kind::Bin),
                ("usrdrv/edu_first_light".to_string(), Kind::Example),
                ("usrdrv/guest_vfio".to_string(), Kind::Test),
            ]
        );
        assert_eq!(
            a[2].executable,
            Path::new("/w/target/x/debug/deps/guest_vfio-0123")
        );
        assert!(find(&a, "edu_first_light", "x").is_ok());
        assert!(find(&a, "nope", "crates/x/examples/nope.rs").is_err());
    }

    #[test]
    fn package_ids() {
        assert_eq!(
            package_name("path+file:///w/crates/usrdrv#0.1.0", None),
            "usrdrv"
        );
        assert_eq!(
            package_name("path+file:///w/crates/cli#usrdrv-cli@0.1.0", None),
            "usrdrv-cli"
        );
        assert_eq!(
            package_name("usrdrv 0.1.0 (path+file:///w/crates/usrdrv)", None),
            "usrdrv"
        );
        assert_eq!(
            package_name("registry+https://example.invalid/index#clap@4.5.0", None),
            "clap"
        );
    }
}
