//! `cargo xtask test`: host tests, then every guest test binary in one VM
//! boot (and the `guest_noiommu*` ones in a second boot without the IOMMU),
//! then a per-binary report and one `summary: N passed, N failed` line.
//!
//! Guest tests are integration tests named `guest*` (`crates/*/tests/
//! guest_*.rs`) whose tests are all `#[ignore = "..."]`: a host `cargo test`
//! builds them and skips them; the guest runs them with
//! `--ignored --test-threads=1`.

use std::collections::BTreeMap;
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
use crate::provision::{self, GuestKernel};
use crate::usrdma;

/// Default timeout of the guest test run, in seconds (boot included).
pub const DEFAULT_TIMEOUT: u64 = 900;

/// Boots of one plan a lost guest timer interrupt may cost before its tests
/// count as failed ([`crate::qemu::Ending::TimerStall`]).
const TIMER_STALL_ATTEMPTS: u32 = 2;
/// A test boot whose guest prints nothing for this long is stopped
/// ([`crate::qemu::Ending::Silent`]) and, like a timer stall, runs again:
/// the slowest guest test prints within a minute or two, and a guest whose
/// timers stopped can hang without a word until the whole boot's timeout.
const SILENCE_LIMIT_SECS: u64 = 300;

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
    /// Why the guest half, or a kernel's part of it, could not run (or ran
    /// nothing).
    errors: Vec<String>,
    /// Why a VM run stopped early (one line per boot that did).
    vm_problems: Vec<String>,
    /// Boots that ran a second time after the emulator lost a guest timer
    /// interrupt (why, one line each).
    vm_retries: Vec<String>,
    /// Boot and run times.
    timing: Option<String>,
}

/// One VM boot of the guest test run and the binaries it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Boot<T> {
    /// Boot without the emulated IOMMU.
    no_iommu: bool,
    binaries: Vec<T>,
}

impl<T> Boot<T> {
    fn name(&self) -> &'static str {
        if self.no_iommu {
            "no-IOMMU boot"
        } else {
            "IOMMU boot"
        }
    }
}

/// Whether a guest test binary runs after the others of its boot: its name
/// ends in `_last` (it changes the boot for good, as locking the kernel down
/// does). The order is otherwise cargo's.
fn runs_last(name: &str) -> bool {
    name.ends_with("_last")
}

/// Splits the guest test binaries into boots: the `guest_noiommu*` ones
/// (`wants_no_iommu`) into a boot without the IOMMU, the others into the
/// usual boot (`no_iommu` is `--no-iommu`: then one boot serves both).
/// Boots without binaries are left out; the usual boot comes first.
fn plan_boots<T>(
    binaries: Vec<T>,
    wants_no_iommu: impl Fn(&T) -> bool,
    no_iommu: bool,
) -> Vec<Boot<T>> {
    let (without, with): (Vec<T>, Vec<T>) = binaries.into_iter().partition(|b| wants_no_iommu(b));
    let boots = if no_iommu {
        let mut all = with;
        all.extend(without);
        vec![Boot {
            no_iommu: true,
            binaries: all,
        }]
    } else {
        vec![
            Boot {
                no_iommu: false,
                binaries: with,
            },
            Boot {
                no_iommu: true,
                binaries: without,
            },
        ]
    };
    boots
        .into_iter()
        .filter(|b| !b.binaries.is_empty())
        .collect()
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
                errors: vec![e.to_string()],
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
        for problem in &guest.vm_problems {
            outln!("  the VM run failed: {problem}");
        }
        for retry in &guest.vm_retries {
            outln!("  a boot ran again (its first run's results are not counted): {retry}");
        }
        for error in &guest.errors {
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

/// Which kernels the guest suite runs on, and with which boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelPlan {
    /// A Debian kernel of the matrix; `None`: the user's `--kernel`.
    kernel: Option<GuestKernel>,
    /// Only the no-IOMMU boot (the usrdma suites), not the IOMMU one.
    no_iommu_only: bool,
}

/// The kernel matrix: the user's kernel or the one named with
/// `--guest-kernel`, with every boot; by default 6.1 with every boot and
/// the other kernels with the no-IOMMU boot, where the usrdma module's
/// portability is what there is to test (VFIO is the kernel's own).
fn plan_kernels(args: &TestArgs) -> Vec<KernelPlan> {
    if args.vm.sources.kernel.is_some() {
        return vec![KernelPlan {
            kernel: None,
            no_iommu_only: false,
        }];
    }
    if let Some(kernel) = args.vm.sources.guest_kernel {
        return vec![KernelPlan {
            kernel: Some(kernel),
            no_iommu_only: false,
        }];
    }
    GuestKernel::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| KernelPlan {
            kernel: Some(*k),
            no_iommu_only: i > 0,
        })
        .collect()
}

/// Builds and lists the guest tests, then for each kernel of the matrix
/// boots (once, or twice when there are `guest_noiommu*` binaries) and
/// judges them.
fn run_guest(args: &TestArgs) -> Result<GuestResults> {
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
            errors: vec![error],
            ..GuestResults::default()
        });
    }
    // Binaries that change the boot for good (lockdown) run after the others.
    selected.sort_by_key(|(a, _)| runs_last(&a.name));
    let kernels = plan_kernels(args);
    let mut plans = Vec::new();
    for plan in &kernels {
        let mut boots = plan_boots(
            selected.clone(),
            |(a, _)| a.wants_no_iommu(),
            args.vm.no_iommu,
        );
        if plan.no_iommu_only {
            boots.retain(|b| b.no_iommu);
        }
        if !boots.is_empty() {
            plans.push((*plan, boots));
        }
    }
    let total: usize = plans.iter().map(|(_, b)| b.len()).sum();
    let mut results = GuestResults::default();
    let mut timings = Vec::new();
    let mut n = 0;
    for (plan, boots) in plans {
        let mut sources = args.vm.sources.clone();
        sources.guest_kernel = plan.kernel;
        // One kernel that cannot be had does not stop the others.
        let prepared = provision::provision(&sources.sources()).and_then(|prov| {
            // The usrdma module, for the suites that run over it (every boot).
            let module = usrdma::build(&prov)?;
            Ok((prov, module))
        });
        let kernel_name = match plan.kernel {
            Some(k) => k.name().to_string(),
            None => "--kernel".to_string(),
        };
        let (prov, module) = match prepared {
            Ok(p) => p,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                results.errors.push(format!("Linux {kernel_name}: {e}"));
                n += boots.len();
                continue;
            }
        };
        let kernel_name = match plan.kernel {
            Some(k) => k.name().to_string(),
            None => prov.kernel.version.clone(),
        };
        for boot in boots {
            n += 1;
            let name = format!("{kernel_name} {}", boot.name());
            let count: usize = boot.binaries.iter().map(|(_, e)| e.tests.len()).sum();
            eprintln!(
                "xtask: {count} guest tests in {} binaries ({name}, {n} of {total}): {}",
                boot.binaries.len(),
                boot.binaries
                    .iter()
                    .map(|(_, e)| e.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut files = guest_vm::binary_files(&binaries);
            files.extend(module.files.iter().cloned());
            files.extend(boot.binaries.iter().map(|(a, _)| GuestFile {
                guest_path: guest_vm::test_path(a),
                host_path: a.executable.clone(),
            }));
            let artifacts: Vec<&Artifact> = boot.binaries.iter().map(|(a, _)| *a).collect();
            let script = guest_script(&artifacts, &args.test_args);
            let expected: Vec<ExpectedBinary> = boot.binaries.into_iter().map(|(_, e)| e).collect();
            let opts = VmOptions {
                no_iommu: boot.no_iommu,
                silence_limit: Some(SILENCE_LIMIT_SECS),
                ..args.vm.clone()
            };
            let label = |text: String| format!("{name}: {text}");
            let mut attempt = 1;
            let (logs, vm_problem) = loop {
                match guest_vm::boot(&opts, &prov, files.clone(), script.clone(), DEFAULT_TIMEOUT) {
                    Ok(run) if run.ending == crate::qemu::Ending::Interrupted => {
                        return Err(Error::Interrupted);
                    }
                    // The emulator lost a guest CPU's timer interrupt: not
                    // the tests' doing, and the boot would only have hung.
                    // The whole boot runs once more, and the report says so.
                    Ok(run)
                        if matches!(
                            run.ending,
                            crate::qemu::Ending::TimerStall(_) | crate::qemu::Ending::Silent(_)
                        ) && attempt < TIMER_STALL_ATTEMPTS =>
                    {
                        let problem = run.problem().unwrap_or_default();
                        eprintln!("xtask: {name}: {problem}; running the boot again");
                        results.vm_retries.push(label(problem));
                        attempt += 1;
                    }
                    Ok(run) => {
                        timings.push(label(run.timing().replace("command:", "tests:")));
                        break (
                            guest_results::parse_guest_console(&run.transcript),
                            run.problem(),
                        );
                    }
                    Err(Error::Interrupted) => return Err(Error::Interrupted),
                    // Its binaries count as not run; the other boots still run.
                    Err(e) => break (BTreeMap::new(), Some(format!("could not boot: {e}"))),
                }
            };
            let reports = guest_results::evaluate(&expected, &logs, vm_problem.as_deref());
            results.reports.extend(reports.into_iter().map(|mut r| {
                r.label = format!("{} [Linux {kernel_name}]", r.label);
                r
            }));
            if let Some(problem) = vm_problem {
                results.vm_problems.push(label(problem));
            }
        }
    }
    if !timings.is_empty() {
        results.timing = Some(timings.join("; "));
    }
    Ok(results)
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
    let mut script = format!(
        "export RUST_BACKTRACE=1\ncd /tmp\n\
         insmod {} || echo 'xtask: the usrdma module did not load'\n",
        usrdma::GUEST_MODULE
    );
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
    use clap::Parser;

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

    fn artifact(name: &str) -> Artifact {
        Artifact {
            name: name.to_string(),
            package: "usrdrv-cli".to_string(),
            kind: Kind::Test,
            executable: format!("/host/{name}-123").into(),
        }
    }

    fn names<'a>(boot: &Boot<&'a Artifact>) -> Vec<&'a str> {
        boot.binaries.iter().map(|a| a.name.as_str()).collect()
    }

    #[test]
    fn binaries_named_last_run_after_the_others() {
        let mut names = vec![
            "guest_noiommu_lockdown_last",
            "guest_noiommu_edu",
            "guest_vfio",
        ];
        names.sort_by_key(|n| runs_last(n));
        assert_eq!(
            names,
            [
                "guest_noiommu_edu",
                "guest_vfio",
                "guest_noiommu_lockdown_last"
            ]
        );
        assert!(!runs_last("guest_last_but_not_least"));
    }

    #[test]
    fn noiommu_binaries_get_their_own_boot_without_the_iommu() {
        let all = [
            artifact("guest_vfio"),
            artifact("guest_noiommu_doctor"),
            artifact("guest_cli_doctor"),
            artifact("guest_noiommu_list"),
        ];
        assert!(all[1].wants_no_iommu() && !all[0].wants_no_iommu());
        // `guest_noiommu` is a prefix of the target name, not a substring.
        assert!(!artifact("guest_cli_noiommu").wants_no_iommu());
        assert!(!artifact("guest_no_iommu").wants_no_iommu());

        let boots = plan_boots(all.iter().collect(), |a| a.wants_no_iommu(), false);
        assert_eq!(boots.len(), 2);
        assert!(!boots[0].no_iommu);
        assert_eq!(names(&boots[0]), ["guest_vfio", "guest_cli_doctor"]);
        assert_eq!(boots[0].name(), "IOMMU boot");
        assert!(boots[1].no_iommu);
        assert_eq!(
            names(&boots[1]),
            ["guest_noiommu_doctor", "guest_noiommu_list"]
        );
        assert_eq!(boots[1].name(), "no-IOMMU boot");
    }

    #[test]
    fn a_boot_without_binaries_is_skipped() {
        let usual = [artifact("guest_vfio"), artifact("guest_edu")];
        let boots = plan_boots(usual.iter().collect(), |a| a.wants_no_iommu(), false);
        assert_eq!(boots.len(), 1);
        assert!(!boots[0].no_iommu);
        assert_eq!(names(&boots[0]), ["guest_vfio", "guest_edu"]);

        // A filter that leaves only no-IOMMU binaries: only that boot.
        let only = [artifact("guest_noiommu_doctor")];
        let boots = plan_boots(only.iter().collect(), |a| a.wants_no_iommu(), false);
        assert_eq!(boots.len(), 1);
        assert!(boots[0].no_iommu);

        assert!(plan_boots(Vec::<&Artifact>::new(), |a| a.wants_no_iommu(), false).is_empty());
    }

    #[test]
    fn with_no_iommu_requested_one_boot_runs_everything() {
        let all = [artifact("guest_noiommu_doctor"), artifact("guest_vfio")];
        let boots = plan_boots(all.iter().collect(), |a| a.wants_no_iommu(), true);
        assert_eq!(boots.len(), 1);
        assert!(boots[0].no_iommu);
        assert_eq!(names(&boots[0]), ["guest_vfio", "guest_noiommu_doctor"]);
    }

    fn test_args(extra: &[&str]) -> TestArgs {
        let cli =
            crate::Cli::try_parse_from(["xtask", "test"].iter().chain(extra)).expect("parses");
        match cli.command {
            crate::Cmd::Test(args) => args,
            _ => panic!("not test"),
        }
    }

    #[test]
    fn the_kernel_matrix_runs_6_12_without_the_iommu_boot_by_default() {
        let plans = plan_kernels(&test_args(&[]));
        assert_eq!(
            plans,
            [
                KernelPlan {
                    kernel: Some(GuestKernel::V6_1),
                    no_iommu_only: false
                },
                KernelPlan {
                    kernel: Some(GuestKernel::V6_12),
                    no_iommu_only: true
                },
            ]
        );
        // A kernel named on the command line gets every boot, and only it runs.
        let plans = plan_kernels(&test_args(&["--guest-kernel", "6.12"]));
        assert_eq!(
            plans,
            [KernelPlan {
                kernel: Some(GuestKernel::V6_12),
                no_iommu_only: false
            }]
        );
        let plans = plan_kernels(&test_args(&["--kernel", "/k", "--modules", "/m"]));
        assert_eq!(
            plans,
            [KernelPlan {
                kernel: None,
                no_iommu_only: false
            }]
        );
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
            errors: vec!["no guest tests found".to_string()],
            ..GuestResults::default()
        };
        assert!(!report(Some(&host), Some(&no_tests)));
    }

    #[test]
    fn both_boots_join_one_report() {
        // The second boot's binary crashed; the first one's passed.
        let first = guest_results::parse_guest_console(&[
            "usrdrv-test-begin: usrdrv/guest_vfio".to_string(),
            "test a ... ok".to_string(),
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s".to_string(),
            "usrdrv-test-end: usrdrv/guest_vfio status=0".to_string(),
        ]);
        let second = guest_results::parse_guest_console(&[
            "usrdrv-test-begin: usrdrv-cli/guest_noiommu_doctor".to_string(),
            "test b ... ".to_string(),
            "usrdrv-test-end: usrdrv-cli/guest_noiommu_doctor status=139".to_string(),
        ]);
        let expect = |label: &str, tests: &[&str]| ExpectedBinary {
            label: label.to_string(),
            tests: tests.iter().map(|t| t.to_string()).collect(),
        };
        let mut reports =
            guest_results::evaluate(&[expect("usrdrv/guest_vfio", &["a"])], &first, None);
        reports.extend(guest_results::evaluate(
            &[expect("usrdrv-cli/guest_noiommu_doctor", &["b", "c"])],
            &second,
            None,
        ));
        // A boot that never happened: its binary counts as not run.
        reports.extend(guest_results::evaluate(
            &[expect("usrdrv-cli/guest_noiommu_list", &["d"])],
            &BTreeMap::new(),
            Some("no-IOMMU boot: could not boot: no kernel"),
        ));
        let guest = GuestResults {
            reports,
            vm_problems: vec!["no-IOMMU boot: could not boot: no kernel".to_string()],
            ..GuestResults::default()
        };
        let passed: usize = guest.reports.iter().map(|r| r.passed.len()).sum();
        let failed: usize = guest.reports.iter().map(|r| r.failed_count()).sum();
        assert_eq!((passed, failed), (1, 3));
        assert!(!report(None, Some(&guest)));
    }
}
