//! `cargo xtask test`: host tests, then every guest test binary in one VM
//! boot, then a per-binary report and one `summary: N passed, N failed`
//! line.
//!
//! Guest tests are integration tests named `guest*` (`crates/*/tests/
//! guest_*.rs`) whose tests are all `#[ignore = "..."]`: a host `cargo test`
//! builds them and skips them; the guest runs them with
//! `--ignored --test-threads=1`.

use std::process::Command;

use crate::cargo_build::{self, Artifact};
use crate::error::{Error, Result};
use crate::guest_results::{
    self, BinaryReport, ExpectedBinary, TEST_BEGIN_MARKER, TEST_END_MARKER,
};
use crate::guest_vm::{self, VmOptions};
use crate::host_tests::{self, HostResults};
use crate::initramfs::{GuestFile, sh_quote};
use crate::process;

/// Default timeout of the guest test run, in seconds (boot included).
pub const DEFAULT_TIMEOUT: u64 = 900;

/// Arguments of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub vm: VmOptions,

    /// Run only the host tests (`cargo test --workspace`).
    #[arg(long, conflicts_with = "guest_only")]
    pub host_only: bool,

    /// Run only the guest tests.
    #[arg(long)]
    pub guest_only: bool,

    /// Arguments for every guest test binary, e.g. a test name filter or
    /// `--exact NAME`.
    #[arg(last = true, value_name = "TEST_ARGS")]
    pub test_args: Vec<String>,
}

/// What the guest half produced.
#[derive(Debug, Default)]
struct GuestResults {
    reports: Vec<BinaryReport>,
    /// Why the guest half could not run (or ran nothing).
    error: Option<String>,
    /// Why the VM stopped early.
    vm_problem: Option<String>,
    /// Boot and run times.
    timing: Option<String>,
}

/// Runs `cargo xtask test`; returns whether everything passed.
pub fn run(args: &TestArgs) -> Result<bool> {
    let host = if args.guest_only {
        None
    } else {
        Some(host_tests::run()?)
    };
    let guest = if args.host_only {
        None
    } else {
        Some(match run_guest(args) {
            Ok(results) => results,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => GuestResults {
                error: Some(e.to_string()),
                ..GuestResults::default()
            },
        })
    };
    Ok(report(host.as_ref(), guest.as_ref()))
}

/// Prints the report and the summary line; returns whether all passed.
fn report(host: Option<&HostResults>, guest: Option<&GuestResults>) -> bool {
    let mut passed = 0usize;
    let mut failed = 0usize;
    outln!();
    outln!("xtask test report");
    if let Some(host) = host {
        outln!("host tests: {}", host.describe());
        passed += usize::try_from(host.passed).unwrap_or(usize::MAX);
        failed += usize::try_from(host.failed_count()).unwrap_or(usize::MAX);
    }
    if let Some(guest) = guest {
        match &guest.timing {
            Some(timing) => outln!("guest tests ({timing}):"),
            None => outln!("guest tests:"),
        }
        out!("{}", guest_results::render(&guest.reports));
        if let Some(problem) = &guest.vm_problem {
            outln!("  the VM run failed: {problem}");
        }
        if let Some(error) = &guest.error {
            outln!("  could not run the guest tests: {error}");
            failed += 1;
        }
        for r in &guest.reports {
            passed += r.passed.len();
            failed += r.failed_count();
        }
    }
    outln!("{}", guest_results::summary_line(passed, failed));
    failed == 0
}

/// Builds, lists, boots once and judges the guest tests.
fn run_guest(args: &TestArgs) -> Result<GuestResults> {
    let prov = args.vm.provision()?;
    let tests = cargo_build::build_guest_tests()?;
    let binaries = cargo_build::build_binaries(cargo_build::Profile::Dev)?;
    let mut selected: Vec<(&Artifact, ExpectedBinary)> = Vec::new();
    for test in &tests {
        let names = list_tests(test, &args.test_args)?;
        if !names.is_empty() {
            selected.push((
                test,
                ExpectedBinary {
                    label: test.label(),
                    tests: names,
                },
            ));
        }
    }
    if selected.is_empty() {
        let error = if args.test_args.is_empty() {
            format!(
                "no guest tests found ({} guest test binaries built): write them in \
                 crates/*/tests/guest_*.rs and mark each test #[ignore = \"runs in the usrdrv VM\"]",
                tests.len()
            )
        } else {
            format!(
                "no guest test matches `{}` (in {} guest test binaries)",
                args.test_args.join(" "),
                tests.len()
            )
        };
        return Ok(GuestResults {
            error: Some(error),
            ..GuestResults::default()
        });
    }
    let count: usize = selected.iter().map(|(_, e)| e.tests.len()).sum();
    eprintln!(
        "xtask: {count} guest tests in {} binaries: {}",
        selected.len(),
        selected
            .iter()
            .map(|(_, e)| e.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut files = guest_vm::binary_files(&binaries);
    files.extend(selected.iter().map(|(a, _)| GuestFile {
        guest_path: guest_vm::test_path(a),
        host_path: a.executable.clone(),
    }));
    let artifacts: Vec<&Artifact> = selected.iter().map(|(a, _)| *a).collect();
    let script = guest_script(&artifacts, &args.test_args);
    let run = guest_vm::boot(&args.vm, &prov, files, script, DEFAULT_TIMEOUT)?;
    if run.ending == crate::qemu::Ending::Interrupted {
        return Err(Error::Interrupted);
    }
    let logs = guest_results::parse_guest_console(&run.transcript);
    let vm_problem = run.problem();
    let expected: Vec<ExpectedBinary> = selected.into_iter().map(|(_, e)| e).collect();
    Ok(GuestResults {
        reports: guest_results::evaluate(&expected, &logs, vm_problem.as_deref()),
        error: None,
        vm_problem,
        timing: Some(run.timing().replace("command:", "tests:")),
    })
}

/// The ignored tests of a guest test binary, from `--list --ignored` on the
/// host (the binary is static, so it runs here too).
fn list_tests(test: &Artifact, test_args: &[String]) -> Result<Vec<String>> {
    let mut cmd = Command::new(&test.executable);
    cmd.args(["--list", "--ignored"]).args(test_args);
    let out = process::output(&mut cmd)?;
    process::check_status(
        &cmd,
        out.status,
        ": could not list the tests of a guest test binary",
    )?;
    Ok(guest_results::parse_list(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

/// The guest script: each binary between begin/end markers.
fn guest_script(tests: &[&Artifact], test_args: &[String]) -> String {
    let extra: String = test_args
        .iter()
        .map(|a| format!(" {}", sh_quote(a)))
        .collect();
    let mut script = String::from("export RUST_BACKTRACE=1\ncd /tmp\n");
    for test in tests {
        let label = test.label();
        script.push_str(&format!(
            "echo \"{TEST_BEGIN_MARKER} {label}\"\n\
             {} --ignored --test-threads=1 --color never{extra}\n\
             status=$?\n\
             echo\n\
             echo \"{TEST_END_MARKER} {label} status=$status\"\n",
            guest_vm::test_path(test)
        ));
    }
    script.push_str("exit 0\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cargo_build::Kind;

    #[test]
    fn script_runs_each_binary_between_markers() {
        let a = Artifact {
            name: "guest_vfio".to_string(),
            package: "usrdrv".to_string(),
            kind: Kind::Test,
            executable: "/host/guest_vfio-123".into(),
        };
        let script = guest_script(&[&a], &["edu".to_string(), "it's".to_string()]);
        assert!(script.contains("echo \"usrdrv-test-begin: usrdrv/guest_vfio\"\n"));
        assert!(script.contains(
            "/tests/usrdrv/guest_vfio --ignored --test-threads=1 --color never 'edu' 'it'\\''s'\n"
        ));
        assert!(script.contains("echo \"usrdrv-test-end: usrdrv/guest_vfio status=$status\"\n"));
        let logs = guest_results::parse_guest_console(&[
            "usrdrv-test-begin: usrdrv/guest_vfio".to_string(),
            "usrdrv-test-end: usrdrv/guest_vfio status=0".to_string(),
        ]);
        assert_eq!(logs["usrdrv/guest_vfio"].exit_status, Some(0));
    }

    #[test]
    fn report_counts_host_and_guest() {
        let host = HostResults {
            passed: 10,
            failed: 0,
            ignored: 2,
            binaries: 3,
            cargo_failure: None,
        };
        let guest = GuestResults {
            reports: vec![BinaryReport {
                label: "usrdrv/guest_smoke".to_string(),
                passed: vec!["a".to_string()],
                failed: vec!["b".to_string()],
                did_not_run: vec!["c".to_string()],
                ..BinaryReport::default()
            }],
            ..GuestResults::default()
        };
        assert!(!report(Some(&host), Some(&guest)));
        assert!(report(Some(&host), None));
        let no_tests = GuestResults {
            error: Some("no guest tests found".to_string()),
            ..GuestResults::default()
        };
        assert!(!report(Some(&host), Some(&no_tests)));
    }
}
