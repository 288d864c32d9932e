//! Reading results out of console text: the guest's marker lines and
//! libtest's output, and turning them into a per-binary report.
//!
//! The serial console gives `\r\n` line endings, kernel messages may appear
//! between (and even inside) the lines of a test binary, and a binary may
//! crash or the VM may stop at any point. Nothing here ever counts a test
//! as passed unless its `test NAME ... ok` line was seen (or its binary's
//! `test result:` line, exit status 0 and test count vouch for it).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Printed by `/init` once the guest is ready to run the command.
pub const READY_MARKER: &str = "usrdrv-guest-ready:";
/// Printed by `/init` with the command's exit status: `usrdrv-guest-exit: 0`.
pub const EXIT_MARKER: &str = "usrdrv-guest-exit:";
/// Printed before each guest test binary: `usrdrv-test-begin: LABEL`.
pub const TEST_BEGIN_MARKER: &str = "usrdrv-test-begin:";
/// Printed after each guest test binary: `usrdrv-test-end: LABEL status=N`.
pub const TEST_END_MARKER: &str = "usrdrv-test-end:";

/// A console line without its line ending.
pub fn clean_line(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

/// The text after `marker`, if the line holds it (anywhere: a partial line
/// or a kernel message may come first).
pub fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

/// The exit status in an `usrdrv-guest-exit: N` line.
pub fn exit_status(line: &str) -> Option<i32> {
    after_marker(clean_line(line), EXIT_MARKER)?.parse().ok()
}

/// Whether the line is the ready marker.
pub fn is_ready(line: &str) -> bool {
    after_marker(clean_line(line), READY_MARKER).is_some()
}

/// The message of a guest kernel panic line, if this is one.
pub fn kernel_panic(line: &str) -> Option<String> {
    after_marker(clean_line(line), "Kernel panic - not syncing")
        .map(|why| why.trim_start_matches(':').trim().to_string())
}

/// What the guest kernel said when it could not unpack its initramfs (the
/// image did not fit in the guest's memory), if this is that line.
pub fn initramfs_failure(line: &str) -> Option<String> {
    after_marker(clean_line(line), "Initramfs unpacking failed")
        .map(|why| why.trim_start_matches(':').trim().to_string())
}

/// The guest kernel's report that a CPU's timer stopped firing, if this is
/// that line: RCU's "kthread timer wakeup didn't happen", which it prints
/// when a CPU sits idle and its timer interrupt never comes. Under QEMU 7.2's
/// TCG this happens now and then in a long boot (seen only in the boot with
/// the emulated IOMMU); whatever then waits on that CPU never wakes.
pub fn timer_stall(line: &str) -> Option<String> {
    let line = clean_line(line);
    line.contains("kthread timer wakeup didn't happen")
        .then(|| {
            let text = kernel_stamp_len(line).map_or(line, |n| &line[n..]);
            text.trim().to_string()
        })
}

/// Length of a leading kernel log timestamp such as `[    5.123456] `.
fn kernel_stamp_len(line: &str) -> Option<usize> {
    let rest = line.strip_prefix('[')?;
    let end = rest.find(']')?;
    let stamp = rest[..end].trim_start();
    let (secs, frac) = stamp.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(secs) && digits(frac)).then_some(end + 2)
}

/// Whether the line is a kernel message (`[    5.123456] ...`).
pub fn is_kernel_log(line: &str) -> bool {
    kernel_stamp_len(line.trim_start()).is_some()
}

/// The result of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `... ok`
    Passed,
    /// `... FAILED`
    Failed,
    /// `... ignored`
    Ignored,
}

/// The counts of a libtest `test result:` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// `test result: ok.` rather than `FAILED.`
    pub ok: bool,
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored (not run).
    pub ignored: u64,
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
pub fn parse_summary(line: &str) -> Option<Summary> {
    let rest = after_marker(clean_line(line), "test result:")?;
    let (verdict, counts) = rest.split_once('.')?;
    let ok = match verdict.trim() {
        "ok" => true,
        "FAILED" => false,
        _ => return None,
    };
    let mut summary = Summary {
        ok,
        ..Summary::default()
    };
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => summary.passed = n,
            "failed" => summary.failed = n,
            "ignored" => summary.ignored = n,
            _ => {}
        }
    }
    Some(summary)
}

/// Parses a `test NAME ... RESULT` line: the name and, when the result is
/// on the same line, the outcome.
fn parse_test_line(line: &str) -> Option<(String, Option<Outcome>)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.split_once(" ... ")?;
    let name = name.trim_end_matches(" - should panic").trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name.to_string(), parse_outcome(result)))
}

fn parse_outcome(text: &str) -> Option<Outcome> {
    let text = text.trim();
    if text == "ok" {
        Some(Outcome::Passed)
    } else if text == "FAILED" {
        Some(Outcome::Failed)
    } else if text == "ignored" || text.starts_with("ignored,") {
        Some(Outcome::Ignored)
    } else {
        None
    }
}

/// The test names in the output of `TESTBIN --list`.
pub fn parse_list(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| clean_line(l).strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// What one guest test binary printed between its markers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BinaryLog {
    /// The begin marker was seen.
    pub begun: bool,
    /// Test results in the order reported.
    pub results: Vec<(String, Outcome)>,
    /// A test that started and never reported a result (it crashed or hung).
    pub unfinished: Option<String>,
    /// The `test result:` line.
    pub summary: Option<Summary>,
    /// The exit status from the end marker.
    pub exit_status: Option<i32>,
}

/// Splits a console transcript into per-binary logs, keyed by the label in
/// the begin/end markers.
pub fn parse_guest_console(lines: &[String]) -> BTreeMap<String, BinaryLog> {
    let mut logs: BTreeMap<String, BinaryLog> = BTreeMap::new();
    let mut current: Option<String> = None;
    for raw in lines {
        let line = clean_line(raw);
        if let Some(label) = after_marker(line, TEST_BEGIN_MARKER) {
            let label = label.to_string();
            logs.entry(label.clone()).or_default().begun = true;
            current = Some(label);
            continue;
        }
        if let Some(rest) = after_marker(line, TEST_END_MARKER) {
            let (label, status) = match rest.rsplit_once(" status=") {
                Some((label, status)) => (label.trim(), status.trim().parse().ok()),
                None => (rest, None),
            };
            let log = logs.entry(label.to_string()).or_default();
            log.exit_status = status;
            current = None;
            continue;
        }
        let Some(label) = &current else { continue };
        let Some(log) = logs.get_mut(label) else {
            continue;
        };
        if is_kernel_log(line) {
            continue;
        }
        if let Some(summary) = parse_summary(line) {
            log.summary = Some(summary);
            continue;
        }
        if let Some((name, outcome)) = parse_test_line(line) {
            match outcome {
                Some(outcome) => {
                    log.results.push((name, outcome));
                    log.unfinished = None;
                }
                None => log.unfinished = Some(name),
            }
            continue;
        }
        // The result of a test whose line a kernel message interrupted.
        if let Some(name) = log.unfinished.clone()
            && let Some(outcome) = parse_outcome(line)
        {
            log.results.push((name, outcome));
            log.unfinished = None;
        }
    }
    logs
}

/// A guest test binary and the tests it is expected to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedBinary {
    /// `crate/binary`, as in the markers.
    pub label: String,
    /// From `--list --ignored` on the host.
    pub tests: Vec<String>,
}

/// The verdict on one guest test binary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BinaryReport {
    /// `crate/binary`.
    pub label: String,
    /// Tests that passed.
    pub passed: Vec<String>,
    /// Tests that failed, with a note when there is more to say.
    pub failed: Vec<String>,
    /// Expected tests that reported nothing.
    pub did_not_run: Vec<String>,
    /// Ignored tests (never counted as passed).
    pub ignored: Vec<String>,
    /// What went wrong with the binary as a whole.
    pub problems: Vec<String>,
}

impl BinaryReport {
    /// Tests counted as failed: failed ones, missing ones, and one for the
    /// binary itself when it failed without a failing test to show for it.
    pub fn failed_count(&self) -> usize {
        let tests = self.failed.len() + self.did_not_run.len();
        if tests == 0 && !self.problems.is_empty() {
            1
        } else {
            tests
        }
    }
}

/// Judges every expected binary from its log. `vm_problem` says why the VM
/// stopped early, if it did.
pub fn evaluate(
    expected: &[ExpectedBinary],
    logs: &BTreeMap<String, BinaryLog>,
    vm_problem: Option<&str>,
) -> Vec<BinaryReport> {
    expected
        .iter()
        .map(|binary| evaluate_one(binary, logs.get(&binary.label), vm_problem))
        .collect()
}

fn evaluate_one(
    binary: &ExpectedBinary,
    log: Option<&BinaryLog>,
    vm_problem: Option<&str>,
) -> BinaryReport {
    let mut report = BinaryReport {
        label: binary.label.clone(),
        ..BinaryReport::default()
    };
    let stopped = vm_problem.map(|p| format!(" ({p})")).unwrap_or_default();
    let log = match log {
        Some(log) if log.begun => log,
        _ => {
            report
                .problems
                .push(format!("never started: the VM stopped before it{stopped}"));
            report.did_not_run = binary.tests.clone();
            return report;
        }
    };
    let mut seen = BTreeMap::new();
    for (name, outcome) in &log.results {
        seen.insert(name.as_str(), *outcome);
    }
    // A clean run whose per-test lines were garbled still counts as passed.
    let vouched = log.exit_status == Some(0)
        && log
            .summary
            .is_some_and(|s| s.ok && s.failed == 0 && s.passed as usize == binary.tests.len());
    for name in &binary.tests {
        match seen.remove(name.as_str()) {
            Some(Outcome::Passed) => report.passed.push(name.clone()),
            Some(Outcome::Failed) => report.failed.push(name.clone()),
            Some(Outcome::Ignored) => report.ignored.push(name.clone()),
            None if log.unfinished.as_deref() == Some(name) => {
                report.failed.push(format!("{name} (stopped while it ran)"));
            }
            None if vouched => report.passed.push(name.clone()),
            None => report.did_not_run.push(name.clone()),
        }
    }
    // Tests the host listing did not know about still count.
    for (name, outcome) in seen {
        match outcome {
            Outcome::Passed => report.passed.push(name.to_string()),
            Outcome::Failed => report.failed.push(name.to_string()),
            Outcome::Ignored => report.ignored.push(name.to_string()),
        }
    }
    match log.exit_status {
        None => report.problems.push(format!(
            "did not finish: the VM stopped while it ran{stopped}"
        )),
        Some(0) => {}
        Some(status) if log.summary.is_none() => report.problems.push(format!(
            "crashed: exit status {status}{} before its `test result:` line",
            signal_note(status)
        )),
        Some(101) if !report.failed.is_empty() => {}
        Some(status) => report.problems.push(format!(
            "exited with status {status}{}",
            signal_note(status)
        )),
    }
    report
}

/// " (signal N)" for shell exit statuses above 128.
fn signal_note(status: i32) -> String {
    if status > 128 && status < 160 {
        format!(" (killed by signal {})", status - 128)
    } else {
        String::new()
    }
}

/// Renders the per-binary report.
pub fn render(reports: &[BinaryReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(
            out,
            "  {}: {} passed, {} failed, {} did not run{}",
            r.label,
            r.passed.len(),
            r.failed.len(),
            r.did_not_run.len(),
            if r.ignored.is_empty() {
                String::new()
            } else {
                format!(", {} ignored", r.ignored.len())
            }
        );
        for name in &r.failed {
            let _ = writeln!(out, "      FAILED       {name}");
        }
        for name in &r.did_not_run {
            let _ = writeln!(out, "      did not run  {name}");
        }
        for problem in &r.problems {
            let _ = writeln!(out, "      problem: {problem}");
        }
    }
    out
}

/// The final line of `cargo xtask test`.
pub fn summary_line(passed: usize, failed: usize) -> String {
    format!("summary: {passed} passed, {failed} failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_initramfs_unpack_is_recognised() {
        assert_eq!(
            initramfs_failure("[    1.234567] Initramfs unpacking failed: write error\r"),
            Some("write error".to_string())
        );
        assert_eq!(initramfs_failure("[    1.2] Unpacking initramfs..."), None);
        let stall = "[   97.732960] rcu: rcu_preempt kthread timer wakeup didn't happen for 5251 \
                     jiffies! g13137 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402\r";
        assert_eq!(
            timer_stall(stall).as_deref(),
            Some(
                "rcu: rcu_preempt kthread timer wakeup didn't happen for 5251 jiffies! g13137 \
                 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402"
            )
        );
        // A CPU that is busy (a stall of another kind) is not this.
        assert_eq!(
            timer_stall("[   50.1] rcu: INFO: rcu_preempt self-detected stall on CPU"),
            None
        );
    }

    fn lines(text: &str) -> Vec<String> {
        text.split('\n').map(str::to_string).collect()
    }

    fn expected(label: &str, tests: &[&str]) -> ExpectedBinary {
        ExpectedBinary {
            label: label.to_string(),
            tests: tests.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn judge(console: &str, exp: &[ExpectedBinary], vm_problem: Option<&str>) -> Vec<BinaryReport> {
        evaluate(exp, &parse_guest_console(&lines(console)), vm_problem)
    }

    const ALL_OK: &str = "\
usrdrv-test-begin: usrdrv/guest_smoke\r
\r
running 2 tests\r
test edu_is_present ... ok\r
test nvme_is_present ... ok\r
\r
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\r
\r
\r
usrdrv-test-end: usrdrv/guest_smoke status=0\r
";

    #[test]
    fn all_ok_with_crlf() {
        let r = judge(
            ALL_OK,
            &[expected(
                "usrdrv/guest_smoke",
                &["edu_is_present", "nvme_is_present"],
            )],
            None,
        );
        assert_eq!(r[0].passed, ["edu_is_present", "nvme_is_present"]);
        assert!(r[0].failed.is_empty() && r[0].did_not_run.is_empty() && r[0].problems.is_empty());
        assert_eq!(r[0].failed_count(), 0);
        let logs = parse_guest_console(&lines(ALL_OK));
        let log = &logs["usrdrv/guest_smoke"];
        assert_eq!(log.exit_status, Some(0));
        assert_eq!(
            log.summary,
            Some(Summary {
                ok: true,
                passed: 2,
                failed: 0,
                ignored: 0
            })
        );
    }

    #[test]
    fn one_failed() {
        let console = "\
usrdrv-test-begin: usrdrv/guest_vfio
running 3 tests
test a ... ok
test b ... FAILED
test c ... ok

failures:

---- b stdout ----
thread 'b' panicked at crates/usrdrv/tests/guest_vfio.rs:10:5:
assertion failed: false
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    b

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s

usrdrv-test-end: usrdrv/guest_vfio status=101
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_vfio", &["a", "b", "c"])],
            None,
        );
        assert_eq!(r[0].passed, ["a", "c"]);
        assert_eq!(r[0].failed, ["b"]);
        assert!(r[0].problems.is_empty(), "{:?}", r[0].problems);
        assert_eq!(r[0].failed_count(), 1);
    }

    #[test]
    fn crashed_mid_run() {
        // `b` started, then the process was killed by SIGSEGV: no result for
        // b and c, no `test result:` line, the shell reports status 139.
        let console = "\
usrdrv-test-begin: usrdrv/guest_dma
running 3 tests
test a ... ok
test b ... 
usrdrv-test-end: usrdrv/guest_dma status=139
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_dma", &["a", "b", "c"])],
            None,
        );
        assert_eq!(r[0].passed, ["a"]);
        assert_eq!(r[0].failed, ["b (stopped while it ran)"]);
        assert_eq!(r[0].did_not_run, ["c"]);
        assert_eq!(r[0].failed_count(), 2);
        assert_eq!(r[0].problems.len(), 1);
        assert!(r[0].problems[0].contains("crashed"), "{:?}", r[0].problems);
        assert!(
            r[0].problems[0].contains("signal 11"),
            "{:?}",
            r[0].problems
        );
    }

    #[test]
    fn expected_tests_missing_did_not_run() {
        let console = "\
usrdrv-test-begin: usrdrv/guest_smoke
running 1 test
test a ... ok
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
usrdrv-test-end: usrdrv/guest_smoke status=0
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_smoke", &["a", "b"])],
            None,
        );
        assert_eq!(r[0].passed, ["a"]);
        assert_eq!(r[0].did_not_run, ["b"]);
        assert_eq!(r[0].failed_count(), 1);
        let text = render(&r);
        assert!(text.contains("did not run  b"), "{text}");
    }

    #[test]
    fn binary_never_started() {
        let r = judge(
            ALL_OK,
            &[
                expected("usrdrv/guest_smoke", &["edu_is_present", "nvme_is_present"]),
                expected("usrdrv/guest_vfio", &["x", "y"]),
            ],
            Some("timed out after 5 s"),
        );
        assert!(r[0].problems.is_empty());
        assert_eq!(r[1].did_not_run, ["x", "y"]);
        assert!(
            r[1].problems[0].contains("never started"),
            "{:?}",
            r[1].problems
        );
        assert!(
            r[1].problems[0].contains("timed out after 5 s"),
            "{:?}",
            r[1].problems
        );
    }

    #[test]
    fn kernel_lines_interleaved() {
        let console = "\
[    3.100000] vfio-pci 0000:00:03.0: enabling device (0000 -> 0002)\r
usrdrv-test-begin: usrdrv/guest_vfio\r
running 3 tests\r
[    4.200000] vfio-pci 0000:00:03.0: resetting\r
test a ... ok\r
test b ... [    4.300000] DMAR: DRHD: handling fault status reg 2\r
ok\r
[    4.400000] test c ... ok but not really a test line\r
test c ... FAILED\r
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.30s\r
usrdrv-test-end: usrdrv/guest_vfio status=101\r
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_vfio", &["a", "b", "c"])],
            None,
        );
        assert_eq!(r[0].passed, ["a", "b"]);
        assert_eq!(r[0].failed, ["c"]);
        assert!(r[0].problems.is_empty(), "{:?}", r[0].problems);
    }

    #[test]
    fn garbled_result_line_vouched_for_by_summary() {
        let console = "\
usrdrv-test-begin: usrdrv/guest_smoke
test a ... ok
te[    2.0] x
test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
usrdrv-test-end: usrdrv/guest_smoke status=0
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_smoke", &["a", "b"])],
            None,
        );
        assert_eq!(r[0].passed, ["a", "b"]);
        assert_eq!(r[0].failed_count(), 0);
    }

    #[test]
    fn missing_end_marker() {
        // The VM died (or timed out) while the binary ran.
        let console = "\
usrdrv-test-begin: usrdrv/guest_smoke
running 2 tests
test a ... ok
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_smoke", &["a", "b"])],
            Some("guest kernel panicked"),
        );
        assert_eq!(r[0].passed, ["a"]);
        assert_eq!(r[0].did_not_run, ["b"]);
        assert!(
            r[0].problems[0].contains("did not finish"),
            "{:?}",
            r[0].problems
        );
        assert!(r[0].problems[0].contains("guest kernel panicked"));
    }

    #[test]
    fn kernel_panic_line_mid_test() {
        let console = "\
usrdrv-test-begin: usrdrv/guest_dma
test a ... ok
test b ... [    9.000000] Kernel panic - not syncing: Fatal exception
[    9.000001] Kernel Offset: disabled
";
        let all = lines(console);
        assert_eq!(
            all.iter().find_map(|l| kernel_panic(l)).as_deref(),
            Some("Fatal exception")
        );
        let r = judge(
            console,
            &[expected("usrdrv/guest_dma", &["a", "b", "c"])],
            Some("guest kernel panicked"),
        );
        assert_eq!(r[0].passed, ["a"]);
        assert_eq!(r[0].failed, ["b (stopped while it ran)"]);
        assert_eq!(r[0].did_not_run, ["c"]);
        assert_eq!(r[0].failed_count(), 2);
    }

    #[test]
    fn test_panic_message_does_not_confuse_the_parser() {
        let console = "\
usrdrv-test-begin: usrdrv/guest_smoke
test a - should panic ... ok
test b ... FAILED
thread 'b' panicked at src/lib.rs:1:1:
test result: ok. 5 passed; fake
usrdrv-test-end: usrdrv/guest_smoke status=101
";
        let r = judge(
            console,
            &[expected("usrdrv/guest_smoke", &["a", "b"])],
            None,
        );
        assert_eq!(r[0].passed, ["a"]);
        assert_eq!(r[0].failed, ["b"]);
    }

    #[test]
    fn nonzero_exit_without_failures_counts_once() {
        let console = "\
usrdrv-test-begin: usrdrv/guest_smoke
test a ... ok
test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
usrdrv-test-end: usrdrv/guest_smoke status=134
";
        let r = judge(console, &[expected("usrdrv/guest_smoke", &["a"])], None);
        assert_eq!(r[0].passed, ["a"]);
        assert_eq!(r[0].failed_count(), 1);
        assert!(r[0].problems[0].contains("134"), "{:?}", r[0].problems);
    }

    #[test]
    fn markers() {
        assert_eq!(exit_status("usrdrv-guest-exit: 3\r"), Some(3));
        assert_eq!(exit_status("partial outputusrdrv-guest-exit: 0"), Some(0));
        assert_eq!(exit_status("echo \"usrdrv-guest-exit: $status\""), None);
        assert_eq!(exit_status("usrdrv-guest-ready: kernel 6.1"), None);
        assert!(is_ready("usrdrv-guest-ready: kernel 6.1.0, up 2.95 s\r"));
        assert!(!is_ready("hello"));
        assert_eq!(
            kernel_panic("[    1.0] Kernel panic - not syncing: Attempted to kill init!\r")
                .as_deref(),
            Some("Attempted to kill init!")
        );
        assert_eq!(kernel_panic("all fine"), None);
        assert!(is_kernel_log("[    1.234567] foo"));
        assert!(is_kernel_log("[12345.000001] foo"));
        assert!(!is_kernel_log("[a] foo"));
        assert!(!is_kernel_log("test a ... ok"));
    }

    #[test]
    fn summary_lines() {
        assert_eq!(
            parse_summary(
                "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 1.02s"
            ),
            Some(Summary {
                ok: true,
                passed: 12,
                failed: 0,
                ignored: 3
            })
        );
        assert_eq!(
            parse_summary(
                "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\r"
            ),
            Some(Summary {
                ok: false,
                passed: 1,
                failed: 2,
                ignored: 0
            })
        );
        assert_eq!(parse_summary("running 3 tests"), None);
        assert_eq!(summary_line(47, 1), "summary: 47 passed, 1 failed");
        assert_eq!(summary_line(0, 0), "summary: 0 passed, 0 failed");
    }

    #[test]
    fn list_output() {
        let out = "smoke::a: test\nb: test\n\n2 tests, 0 benchmarks\n";
        assert_eq!(parse_list(out), ["smoke::a", "b"]);
        assert!(parse_list("0 tests, 0 benchmarks\n").is_empty());
    }

    #[test]
    fn ignored_are_not_passed() {
        let console = "\
usrdrv-test-begin: x/guest_y
test a ... ignored, needs hardware
test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s
usrdrv-test-end: x/guest_y status=0
";
        let r = judge(console, &[expected("x/guest_y", &["a"])], None);
        assert!(r[0].passed.is_empty());
        assert_eq!(r[0].ignored, ["a"]);
    }
}
