//! The host half of `cargo xtask test`: `cargo test --workspace`, streamed
//! to the terminal and counted from libtest's `test result:` lines.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::error::Result;
use crate::guest_results::{Summary, parse_summary};
use crate::{interrupt, process};

/// Counts over all host test binaries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HostResults {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Ignored tests (never counted as passed).
    pub ignored: u64,
    /// How many `test result:` lines were seen.
    pub binaries: usize,
    /// `None` if `cargo test` succeeded, else its exit status in words.
    pub cargo_failure: Option<String>,
}

impl HostResults {
    /// Adds one `test result:` line.
    pub fn add(&mut self, s: Summary) {
        self.passed += s.passed;
        self.failed += s.failed;
        self.ignored += s.ignored;
        self.binaries += 1;
    }

    /// Failures to count: failed tests, or one for a `cargo test` that
    /// failed without any failing test (a build error, a crashed binary).
    pub fn failed_count(&self) -> u64 {
        if self.failed == 0 && self.cargo_failure.is_some() {
            1
        } else {
            self.failed
        }
    }

    /// One report line.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} passed, {} failed, {} ignored (in {} test binaries)",
            self.passed, self.failed, self.ignored, self.binaries
        );
        if let Some(how) = &self.cargo_failure {
            text.push_str(&format!("; cargo test failed ({how})"));
        }
        text
    }
}

/// Counts the `test result:` lines of some `cargo test` output.
#[cfg(test)]
pub fn tally<'a>(lines: impl IntoIterator<Item = &'a str>) -> HostResults {
    let mut results = HostResults::default();
    for line in lines {
        if let Some(summary) = parse_summary(line) {
            results.add(summary);
        }
    }
    results
}

/// Runs `cargo test --workspace --no-fail-fast`, streaming its output.
pub fn run() -> Result<HostResults> {
    let mut cmd = process::cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(crate::provision::workspace_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    process::announce(&cmd);
    let mut child = process::spawn_err(cmd.spawn(), &cmd)?;
    let mut results = HostResults::default();
    if let Some(stdout) = child.stdout.take() {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        let mut out = std::io::stdout();
        while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            // Keep streaming even if our stdout is gone.
            let _ = out.write_all(&buf);
            let _ = out.flush();
            if let Some(summary) = parse_summary(&String::from_utf8_lossy(&buf)) {
                results.add(summary);
            }
            buf.clear();
        }
    }
    let status = process::spawn_err(child.wait(), &cmd)?;
    interrupt::check()?;
    if !status.success() {
        results.cargo_failure = Some(process::describe_status(status));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_all_binaries_and_never_ignored_as_passed() {
        let output = "\
running 3 tests
test a ... ok
test b ... ok
test c ... ignored, runs in the usrdrv VM
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 2 tests
test d ... FAILED
test e ... ok
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests usrdrv
running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        let r = tally(output.lines());
        assert_eq!((r.passed, r.failed, r.ignored, r.binaries), (3, 1, 1, 3));
        assert_eq!(r.failed_count(), 1);
    }

    #[test]
    fn cargo_failure_without_test_failures_counts_once() {
        let mut r = tally(std::iter::empty());
        r.cargo_failure = Some("exit status 101".to_string());
        assert_eq!(r.failed_count(), 1);
        assert!(r.describe().contains("cargo test failed (exit status 101)"));
    }
}
