//! `cargo xtask bench`: the edu part boots the VM, gives the edu device to
//! vfio-pci, runs the `edu_bench` example (usrdrv's hot paths, each next to
//! a raw VFIO baseline in the same process) and writes its results, with
//! what they were measured on, to `docs/perf/guest-bench.md`; the NVMe
//! part (see [`crate::nvme_bench`]) boots once more and writes
//! `docs/perf/nvme-bench.md`. `--only edu|nvme` runs one of them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cargo_build::{self, Artifact};
use crate::error::{Error, IoContext, Result};
use crate::guest_results::{after_marker, clean_line};
use crate::guest_vm::{self, VmOptions};
use crate::process;
use crate::provision::Provisioned;
use crate::usrdma;
use crate::{fio, nvme_bench, nvme_report};

/// Default timeout, boot included. The benchmark itself runs for about half a
/// minute under TCG on two cores; this leaves room for far slower machines.
pub const DEFAULT_TIMEOUT: u64 = 600;

/// The benchmark program and where it comes from.
const BENCH: (&str, &str) = ("edu_bench", "crates/drivers/edu/examples/edu_bench.rs");

/// The report, relative to the workspace root.
pub const REPORT_PATH: &str = "docs/perf/guest-bench.md";

/// The prefix of the benchmark's machine-readable lines.
const RESULT_MARKER: &str = "usrdrv-bench:";

/// The guest script: load usrdma (for the usrdma-against-VFIO rows), bind edu
/// to vfio-pci (showing its group), then run the benchmark.
fn script() -> String {
    format!(
        "insmod {} || exit 1\nvfio-bind $(pci-find 1234 11e8) || exit 1\nedu_bench\n",
        usrdma::GUEST_MODULE
    )
}

/// Which part of the benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// usrdrv's hot paths on QEMU's edu device, against raw VFIO.
    Edu,
    /// usrdrv's NVMe driver against the kernel's, on the same controllers.
    Nvme,
}

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub vm: VmOptions,

    /// Print the results only; do not write the reports in docs/perf/.
    #[arg(long)]
    pub no_write: bool,

    /// Run only this part (both by default, each in its own boot).
    #[arg(long, value_enum)]
    pub only: Option<Part>,

    /// Seconds per NVMe case.
    #[arg(long, value_name = "SECS", default_value_t = 8)]
    pub nvme_time: u64,
}

/// Runs the benchmark; returns the worst exit status of its parts in the guest.
pub fn run(args: &BenchArgs) -> Result<i32> {
    let prov = args.vm.provision()?;
    // Benchmarks measure the library as users ship it: the release profile.
    let binaries = cargo_build::build_binaries(cargo_build::Profile::Release)?;
    let machine = Machine::describe(&args.vm, &prov.qemu, &prov.kernel.version);
    let mut status = 0;
    if args.only != Some(Part::Nvme) {
        status = run_edu(args, &prov, &binaries, &machine)?;
    }
    if args.only != Some(Part::Edu) {
        status = status.max(run_nvme(args, &prov, &binaries, &machine)?);
    }
    Ok(status)
}

/// The command line that ran the benchmark, for the report.
fn command_line() -> String {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .map(|w| process::shell_quote(&w))
        .collect();
    format!("cargo xtask {}", words.join(" "))
}

/// The host's load averages (`/proc/loadavg`, the first three fields).
fn host_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The NVMe part: one boot, the kernel's driver then usrdrv's.
fn run_nvme(
    args: &BenchArgs,
    prov: &Provisioned,
    binaries: &[Artifact],
    machine: &Machine,
) -> Result<i32> {
    cargo_build::find(
        binaries,
        "usrdrv-nvme",
        "crates/drivers/nvme/src/bin/usrdrv-nvme/main.rs",
    )?;
    let fio = fio::provision(&prov.cache)?;
    let mut files = guest_vm::binary_files(binaries);
    files.extend(fio.guest_files()?);
    let mut vm = args.vm.clone();
    vm.qemu_args.extend(nvme_bench::qemu_args());
    vm.append.push(nvme_bench::POLL_QUEUES.to_string());
    vm.append
        .extend(nvme_bench::CLOCK.iter().map(|w| (*w).to_string()));
    let secs = args.nvme_time.max(1);
    let timeout = 180 + nvme_bench::case_count() as u64 * (secs + 8);
    let load_before = host_load();
    let run = guest_vm::boot(&vm, prov, files, nvme_bench::script(secs), timeout)?;
    let status = run.exit_status()?;
    let results = nvme_bench::parse(&run.transcript);
    eprintln!(
        "xtask: the NVMe benchmark exited with status {status} ({})",
        run.timing()
    );
    if results.figures.is_empty() {
        return Err(Error::Guest {
            reason: format!(
                "the NVMe benchmark printed no `{}` results",
                nvme_bench::MARKER
            ),
            tail: run.tail(),
            timed_out: false,
        });
    }
    let context = nvme_report::Context {
        command: command_line(),
        date: today(),
        qemu: machine.qemu.clone(),
        accel: machine.accel.clone(),
        host_cores: machine.host_cores,
        host_load: format!("{load_before} at the start, {} at the end", host_load()),
        secs,
    };
    let text = nvme_report::report(&context, &results);
    outln!("{}", nvme_report::summary(&results));
    if !results.errors.is_empty() {
        outln!(
            "xtask: NVMe cases that failed: {}",
            results
                .errors
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if args.no_write {
        return Ok(status);
    }
    let path = crate::provision::workspace_root().join(nvme_report::REPORT_PATH);
    write_report(&path, &text)?;
    outln!("xtask: wrote {}", nvme_report::REPORT_PATH);
    Ok(status)
}

/// The edu part.
fn run_edu(
    args: &BenchArgs,
    prov: &Provisioned,
    binaries: &[Artifact],
    machine: &Machine,
) -> Result<i32> {
    cargo_build::find(binaries, BENCH.0, BENCH.1)?;
    let module = usrdma::build(prov)?;
    let mut files = guest_vm::binary_files(binaries);
    files.extend(module.files.iter().cloned());
    let run = guest_vm::boot(&args.vm, prov, files, script(), DEFAULT_TIMEOUT)?;
    let status = run.exit_status()?;
    let results = parse_results(&run.transcript);
    eprintln!(
        "xtask: edu_bench exited with status {status} ({})",
        run.timing()
    );
    if status != 0 {
        eprintln!("xtask: not writing {REPORT_PATH}: the benchmark failed");
        return Ok(status);
    }
    if results.rows.is_empty() {
        return Err(Error::Guest {
            reason: format!("edu_bench printed no `{RESULT_MARKER}` result lines"),
            tail: run.tail(),
            timed_out: false,
        });
    }
    let missed: Vec<&str> = results
        .rows
        .iter()
        .filter(|r| r["pass"] == false)
        .filter_map(|r| r["name"].as_str())
        .collect();
    if missed.is_empty() {
        outln!("xtask: every target was met");
    } else {
        outln!("xtask: targets missed: {}", missed.join("; "));
    }
    if args.no_write {
        return Ok(status);
    }
    let path = crate::provision::workspace_root().join(REPORT_PATH);
    let text = report(machine, &results, &today());
    write_report(&path, &text)?;
    outln!("xtask: wrote {REPORT_PATH}");
    Ok(status)
}

/// What the numbers were measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu: String,
    /// The guest kernel's release.
    pub kernel: String,
    /// Accelerator and guest shape, e.g. `TCG, 2 vCPUs, 1G, intel-iommu`.
    pub accel: String,
    /// Host CPU count.
    pub host_cores: usize,
}

impl Machine {
    fn describe(opts: &VmOptions, qemu: &Path, kernel: &str) -> Self {
        let mut cmd = Command::new(qemu);
        cmd.arg("--version");
        let qemu = process::output(&mut cmd)
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "unknown".to_string());
        Self {
            qemu,
            kernel: kernel.to_string(),
            accel: format!(
                "{}, {} vCPUs, {} of memory, {}",
                opts.accel,
                opts.smp,
                opts.memory,
                if opts.no_iommu {
                    "no IOMMU"
                } else {
                    "emulated Intel IOMMU"
                }
            ),
            host_cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

/// The benchmark's JSON lines: its environment and one object per result.
#[derive(Debug, Default)]
pub struct Results {
    /// The `"kind": "environment"` object, if it was printed.
    pub environment: Option<Value>,
    /// The `"kind": "result"` objects, in order.
    pub rows: Vec<Value>,
}

/// Picks the `usrdrv-bench: {json}` lines out of the console transcript.
/// A line garbled by a kernel message is reported and skipped.
pub fn parse_results(transcript: &[String]) -> Results {
    let mut results = Results::default();
    for line in transcript {
        let Some(json) = after_marker(clean_line(line), RESULT_MARKER) else {
            continue;
        };
        match serde_json::from_str::<Value>(json) {
            Ok(v) if v["kind"] == "environment" => results.environment = Some(v),
            Ok(v) if v["kind"] == "result" => results.rows.push(v),
            _ => eprintln!("xtask: warning: unreadable result line: {line}"),
        }
    }
    results
}

/// A figure in its unit, as the benchmark's own table shows it.
fn format_value(value: &Value, unit: &str) -> String {
    let Some(v) = value.as_f64() else {
        return "-".to_string();
    };
    match unit {
        "ns" => format!("{v:.0} ns"),
        "us" => format!("{v:.2} µs"),
        "ms" => format!("{v:.1} ms"),
        "s" => format!("{v:.2} s"),
        other => format!("{v} {other}"),
    }
}

/// One Markdown table row for a result.
fn table_row(r: &Value) -> String {
    let unit = r["unit"].as_str().unwrap_or("");
    let ratio = match (r["ratio"].as_f64(), r["ratio_of"].as_str()) {
        (Some(x), Some("api/raw") | None) => format!("{x:.3}"),
        (Some(x), Some(label)) if label.contains('/') => format!("{x:.3} ({label})"),
        (Some(x), Some(label)) => format!("{x:.1} ({label})"),
        (None, _) => "-".to_string(),
    };
    let result = match r["pass"].as_bool() {
        Some(true) => "pass",
        Some(false) => "**MISS**",
        None => "-",
    };
    format!(
        "| {} | {} | {} | {} | {} | {} |",
        r["name"].as_str().unwrap_or("?"),
        format_value(&r["api"], unit),
        format_value(&r["raw"], unit),
        ratio,
        r["target"].as_str().unwrap_or("-").replace("<=", "≤"),
        result
    )
}

/// The Markdown report.
pub fn report(machine: &Machine, results: &Results, date: &str) -> String {
    let env = results.environment.clone().unwrap_or(Value::Null);
    let kernel = env["kernel"].as_str().unwrap_or(&machine.kernel);
    let mut s = String::new();
    let _ = writeln!(s, "# Guest benchmarks: usrdrv against raw VFIO\n");
    let _ = writeln!(
        s,
        "The `edu_bench` example (`crates/drivers/edu/examples/edu_bench.rs`) drives QEMU's \
         edu device in the VM and measures usrdrv's hot paths, each next to a raw VFIO \
         baseline on the same device, container and interrupt in the same process: 32-bit \
         MMIO reads and writes (`Bar` and `BarView` against a volatile pointer into BAR 0 \
         mapped by hand), \
         mapping and unmapping a caller's 4 KiB page (`map_dma` + `unmap`, what drop does, against \
         `VFIO_IOMMU_MAP_DMA` + `VFIO_IOMMU_UNMAP_DMA`), a 4 KiB chunk from a `DmaPool`, MSI \
         wake-up latency from the register write that raises the interrupt to the return of \
         the wait (`Interrupts::wait` against a blocking `read` of an eventfd attached by \
         hand), with the interrupt on the waiter's CPU and on the other one, 100,000 interrupts without a lost wake-up, and 16 MiB mapped in one call or \
         in 4096. API and raw runs alternate over several rounds; figures are medians over \
         rounds (latency percentiles over every sample). Time is read from the TSC, \
         calibrated against the monotonic clock.\n\n\
         The rows marked usrdma/VFIO compare the two backends through the same public \
         API in the same boot (API column: usrdma; raw column: VFIO): map + unmap of a \
         4 KiB caller buffer, allocation + free of a 4 KiB DMA buffer, and MSI wake-up \
         (p50, same CPU). edu is rebound between vfio-pci and usrdma every round, the \
         order alternating; figures are medians of per-round medians. The IOMMU is on \
         in this boot, so usrdma's device addresses come from the kernel's DMA API \
         through the IOMMU.\n"
    );
    let _ = writeln!(s, "Regenerate with `cargo xtask bench`.\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| date | {date} |");
    let _ = writeln!(s, "| guest kernel | {kernel} |");
    let _ = writeln!(s, "| QEMU | {} |", machine.qemu);
    let _ = writeln!(s, "| accelerator | {} |", machine.accel);
    let _ = writeln!(s, "| host cores | {} |", machine.host_cores);
    let _ = writeln!(s, "| build | static, release profile (`--release`) |");
    if let (Some(source), Some(gettime), Some(call)) = (
        env["clocksource"].as_str(),
        env["clock_gettime_ns"].as_f64(),
        env["call_ns"].as_f64(),
    ) {
        let pinned = match env["pinned_cpu"].as_u64() {
            Some(cpu) => format!("benchmark and edu interrupt on CPU {cpu}"),
            None => "benchmark not pinned".to_string(),
        };
        let _ = writeln!(
            s,
            "| in the guest | clock source {source}: `clock_gettime` costs {gettime:.0} ns; \
             a function call and return costs {call:.1} ns; {pinned} |"
        );
    }
    let _ = writeln!(s, "\n## Results\n");
    let _ = writeln!(s, "| benchmark | API | raw | ratio | target | result |");
    let _ = writeln!(s, "|---|--:|--:|--:|---|---|");
    for r in &results.rows {
        let _ = writeln!(s, "{}", table_row(r));
    }
    let notes: Vec<String> = results
        .rows
        .iter()
        .filter_map(|r| {
            let note = r["note"].as_str().filter(|n| !n.is_empty())?;
            Some(format!("- {}: {note}", r["name"].as_str().unwrap_or("?")))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "\n{}", notes.join("\n"));
    }
    let _ = writeln!(
        s,
        "\nRatios are API/raw (lower is better; 1.000 means no overhead). Figures vary \
         between boots and with whatever else the host does, all the more under TCG: only \
         the ratios within one run are meaningful. Targets are reported, not asserted. \
         The benchmark also prints each result as a `usrdrv-bench:` JSON line, with its \
         iteration counts."
    );
    s
}

pub(crate) fn write_report(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx("create the directory", dir)?;
    }
    std::fs::write(path, text).ctx("write", path)
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date `days` days after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSCRIPT: &[&str] = &[
        "usrdrv-guest-ready: kernel 6.1.0-56-amd64, up 3.42 s\r",
        r#"usrdrv-bench: {"kind":"environment","kernel":"6.1.0-56-amd64","clocksource":"hpet","clock_gettime_ns":4100.0,"call_ns":5.5,"pinned_cpu":0}"#,
        r#"usrdrv-bench: {"kind":"result","key":"mmio_read32","name":"MMIO read32 (per op)","unit":"ns","api":1105.2,"raw":1090.0,"ratio":1.0139,"ratio_of":"api/raw","target":"ratio <= 1.05","pass":true,"note":""}"#,
        r#"[   12.5] some kernel message usrdrv-bench: {"kind":"result","key":"pool_4k","name":"pool","unit":"ns","api":420.0,"raw":null,"ratio":null,"ratio_of":"api/raw","target":"median <= 1000 ns","pass":true,"note":"no system call"}"#,
        r#"usrdrv-bench: {"kind":"result","key":"map_16m_4k_calls","name":"16 MiB","unit":"ms","api":80.0,"raw":null,"ratio":4.0,"ratio_of":"vs 1 call","target":null,"pass":null,"note":""}"#,
        r#"usrdrv-bench: {"kind":"result", garbled"#,
        "usrdrv-guest-exit: 0",
    ];

    fn results() -> Results {
        let lines: Vec<String> = TRANSCRIPT.iter().map(|s| s.to_string()).collect();
        parse_results(&lines)
    }

    #[test]
    fn result_lines_are_found_and_garbage_skipped() {
        let r = results();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.rows[1]["key"], "pool_4k");
        assert_eq!(
            r.environment.as_ref().map(|e| e["clocksource"].clone()),
            Some(Value::from("hpet"))
        );
    }

    #[test]
    fn report_has_header_table_and_caveat() {
        let machine = Machine {
            qemu: "QEMU emulator version 7.2.22".to_string(),
            kernel: "6.1.0-56-amd64".to_string(),
            accel: "TCG, 2 vCPUs, 1G of memory, emulated Intel IOMMU".to_string(),
            host_cores: 2,
        };
        let text = report(&machine, &results(), "2026-01-02");
        assert!(text.contains("`cargo xtask bench`"));
        assert!(text.contains("| date | 2026-01-02 |"));
        assert!(text.contains("| QEMU | QEMU emulator version 7.2.22 |"));
        assert!(text.contains("| host cores | 2 |"));
        assert!(
            text.contains(
                "clock source hpet: `clock_gettime` costs 4100 ns; a function call and return \
                 costs 5.5 ns; benchmark and edu interrupt on CPU 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| MMIO read32 (per op) | 1105 ns | 1090 ns | 1.014 | ratio ≤ 1.05 | pass |"
            ),
            "{text}"
        );
        assert!(text.contains("| pool | 420 ns | - | - | median ≤ 1000 ns | pass |"));
        assert!(text.contains("| 16 MiB | 80.0 ms | - | 4.0 (vs 1 call) | - | - |"));
        assert!(text.contains("- pool: no system call"));
        assert!(text.contains("only the ratios within one run are meaningful"));
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(today().len(), 10);
    }
}
