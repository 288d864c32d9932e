//! `usrdrv doctor` (alias `check`): can user-space drivers run here, and
//! what to fix.
//!
//! Each check reads what Linux exposes (sysfs, procfs and device nodes below
//! the `--sysfs`, `--procfs` and `--devfs` roots, never another program) and
//! reports one finding: `ok`, `warn` (drivers run, but something is worth
//! fixing) or `fail` (drivers cannot run until it is fixed), with the fix.
//! The exit status is 0 when no check failed, 1 otherwise.
//!
//! The checks, in report order: `iommu`, `usrdma`, `lockdown`,
//! `interrupt-remapping`, `vfio-modules`, `dev-vfio`, `user`, `memlock`, `hugepages`, `devices`.
//!
//! Drivers run through VFIO where there is an IOMMU, and through the usrdma
//! kernel module (`kmod/usrdma`; root only, devices not isolated) where there
//! is none. So:
//!
//! - IOMMU on: every VFIO check counts; `usrdma` never fails (not needed).
//! - No IOMMU, usrdma loaded (`bus/pci/drivers/usrdma` exists): `iommu` is
//!   a warning (a device can reach all memory), `usrdma` is `ok` with the
//!   devices bound to it, and the checks only VFIO needs
//!   (`interrupt-remapping`, `vfio-modules`, `dev-vfio`) cannot fail: they
//!   warn, or are `ok` when they merely find VFIO not loaded; `user` asks
//!   for CAP_SYS_RAWIO (root), which usrdma requires.
//! - No IOMMU and no usrdma: `iommu` and `usrdma` fail, each with its fix.
//!
//! `--json` prints (schema `usrdrv.doctor/1`; new checks may be added, the
//! fields stay):
//!
//! ```json
//! {
//!   "schema": "usrdrv.doctor/1",
//!   "ready": true,
//!   "findings": [
//!     {"check": "iommu", "status": "ok", "summary": "on: 5 IOMMU groups, ...", "fix": null},
//!     {"check": "hugepages", "status": "warn", "summary": "...", "fix": "as root: echo 512 > ..."}
//!   ]
//! }
//! ```
//!
//! `ready` is true exactly when no finding is `fail` (and the exit status 0).
//! `fix` is null for `ok` findings and a sentence otherwise.

use serde::Serialize;

use crate::context::Context;
use crate::error::CliError;
use crate::output::{self, Table, Tone};

mod checks;
mod system;

/// Arguments of `usrdrv doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// User-space drivers run, but something is worth fixing.
    Warn,
    /// User-space drivers cannot run until this is fixed.
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }

    fn tone(self) -> Tone {
        match self {
            Self::Ok => Tone::Good,
            Self::Warn => Tone::Warn,
            Self::Fail => Tone::Bad,
        }
    }
}

/// One finding (an element of `findings` in `usrdrv.doctor/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check: `iommu`, `usrdma`, `interrupt-remapping`, ...
    pub check: &'static str,
    /// `ok`, `warn` or `fail`.
    pub status: Status,
    /// What was found, in one line.
    pub summary: String,
    /// What to do about it (`None` when there is nothing to do).
    pub fix: Option<String>,
}

/// `usrdrv doctor --json`.
#[derive(Debug, Serialize)]
struct Report<'a> {
    schema: &'static str,
    ready: bool,
    findings: &'a [Finding],
}

/// Runs `usrdrv doctor`; exit status 0 when user-space drivers can run here.
pub fn run(ctx: &Context, _args: &DoctorArgs) -> Result<i32, CliError> {
    let findings = checks::all(ctx);
    let ready = !findings.iter().any(|f| f.status == Status::Fail);
    if ctx.json {
        output::print_json(&Report {
            schema: "usrdrv.doctor/1",
            ready,
            findings: &findings,
        })?;
    } else {
        output::print(&render(ctx, &findings, ready))?;
    }
    Ok(if ready { 0 } else { 1 })
}

/// The text report: STATUS, CHECK and FINDING columns, each fix on its own
/// line under the FINDING column, and a verdict.
fn render(ctx: &Context, findings: &[Finding], ready: bool) -> String {
    const HEADER: [&str; 3] = ["STATUS", "CHECK", "FINDING"];
    let mut table = Table::new(&HEADER);
    for f in findings {
        table.toned_row(vec![
            (f.status.word().to_owned(), f.status.tone()),
            (f.check.to_owned(), Tone::Plain),
            (one_line(&f.summary), Tone::Plain),
        ]);
    }
    // Where the FINDING column starts: the table pads each column to its
    // widest cell plus two spaces.
    let width = |column: usize, cell: fn(&Finding) -> usize| {
        findings
            .iter()
            .map(cell)
            .chain([HEADER[column].len()])
            .max()
            .unwrap_or(0)
    };
    let indent = " ".repeat(
        width(0, |f| f.status.word().len()) + 2 + width(1, |f| f.check.chars().count()) + 2,
    );
    let rendered = table.render(&ctx.style);
    let mut lines = rendered.lines();
    let mut out = String::new();
    if let Some(header) = lines.next() {
        out.push_str(header);
        out.push('\n');
    }
    for (line, f) in lines.zip(findings) {
        out.push_str(line);
        out.push('\n');
        if let Some(fix) = &f.fix {
            out.push_str(&indent);
            out.push_str(&ctx.style.paint(Tone::Dim, "fix: "));
            out.push_str(&one_line(fix));
            out.push('\n');
        }
    }
    let count = |s: Status| findings.iter().filter(|f| f.status == s).count();
    out.push('\n');
    if ready {
        let warnings = count(Status::Warn);
        let note = match warnings {
            0 => String::new(),
            1 => " (1 warning)".to_owned(),
            n => format!(" ({n} warnings)"),
        };
        out.push_str(&ctx.style.paint(
            Tone::Good,
            &format!("ready: user-space drivers can run here{note}"),
        ));
    } else {
        let failed = count(Status::Fail);
        out.push_str(&ctx.style.paint(
            Tone::Bad,
            &format!(
                "not ready: {failed} {} failed; apply the fixes and run `usrdrv doctor` again",
                if failed == 1 { "check" } else { "checks" }
            ),
        ));
    }
    out.push('\n');
    out
}

/// `text` on one line (the table and the fix lines depend on it).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
