//! The NVMe part of `cargo xtask bench`: one boot, the kernel's `nvme`
//! driver and usrdrv's on the same controllers.
//!
//! The bench boot (only it; test boots are unchanged) has a second NVMe
//! controller at 0000:00:04.0 whose namespace is QEMU's `null-co` driver
//! (reads return zeroes, nothing is stored), next to the file-backed one at
//! 0000:00:02.0, and `nvme.poll_queues=1` and the TSC as the clock
//! ([`CLOCK`]) on the kernel command line. The
//! cases run in groups of comparable ones (file QD1, file QD32, null-co QD1,
//! null-co QD32, sequential): in each, while both controllers are on the
//! kernel's driver, fio (Debian's, see [`crate::fio`]) and `usrdrv-nvme
//! perf /dev/...` (io_uring) measure them; then both are rebound to
//! vfio-pci and `usrdrv-nvme perf ADDR` measures usrdrv's driver, polled
//! and on interrupts; then back to nvme for the next group. Each case
//! prints one
//! `usrdrv-nvme-bench:` line with the guest's busy CPU time over the case
//! (from `/proc/stat`, every CPU, interrupts included) and the load
//! generator's JSON.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::guest_results::{after_marker, clean_line};

/// The prefix of the guest's result lines.
pub const MARKER: &str = "usrdrv-nvme-bench:";
/// The file-backed controller (where the tests expect it).
pub const FILE_ADDR: &str = "0000:00:02.0";
/// The null-co controller of the bench boot.
pub const NULL_ADDR: &str = "0000:00:04.0";
/// The kernel command line word that gives the nvme driver a polled queue.
pub const POLL_QUEUES: &str = "nvme.poll_queues=1";
/// Kernel command line words that keep the guest on the TSC, as a real
/// machine would be. Under TCG the kernel's clocksource watchdog otherwise
/// drops the TSC for the HPET, and every clock read becomes an emulated
/// device access; the block layer stamps each request (iostats), so the
/// kernel's side would pay per I/O for the emulator. The measured effect is
/// smaller than the boot-to-boot noise of a whole bench run (fio's QD32
/// 4 KiB random reads on the file backend: 22-28k IOPS over three runs with
/// the HPET, 24-27k over three with the TSC), but the cost is one that only
/// emulation has. QEMU's TSC under TCG follows the host's, so it is
/// monotonic and shared by every vCPU.
pub const CLOCK: [&str; 2] = ["tsc=reliable", "clocksource=tsc"];
/// The guest's `USER_HZ`, the unit of `/proc/stat`.
const USER_HZ: f64 = 100.0;

/// QEMU arguments that add the null-co controller.
pub fn qemu_args() -> Vec<String> {
    [
        "-drive",
        "driver=null-co,read-zeroes=on,size=1G,if=none,id=nvnull",
        "-device",
        "nvme,serial=usrdrv-null0,drive=nvnull,addr=0x4",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

/// Which side and load generator a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// fio with an engine; `hipri` polls (io_uring only).
    Fio { engine: &'static str, hipri: bool },
    /// `usrdrv-nvme perf /dev/...`: the kernel's driver through io_uring.
    PerfKernel { poll: bool },
    /// `usrdrv-nvme perf ADDR`: usrdrv's driver.
    Usrdrv { poll: bool },
}

/// One measured case.
#[derive(Debug, Clone, Copy)]
struct Case {
    key: &'static str,
    tool: Tool,
    /// `true`: the null-co controller; `false`: the file-backed one.
    null: bool,
    depth: u32,
    size: u32,
    /// Sequential instead of random reads.
    sequential: bool,
    /// Queues (usrdrv), rings (the tool) or jobs (fio), one thread each.
    jobs: u32,
    /// How many times it runs, interleaved with its group's other repeated
    /// cases; its figures are the medians.
    rounds: u32,
}

const fn case(key: &'static str, tool: Tool, null: bool, depth: u32) -> Case {
    Case {
        key,
        tool,
        null,
        depth,
        size: 4096,
        sequential: false,
        jobs: 1,
        rounds: 1,
    }
}

/// How often the load generator check's cases at depth run: one run of
/// each is within the emulator's noise of a 10% agreement.
pub const CHECK_ROUNDS: u32 = 3;

const URING: Tool = Tool::Fio {
    engine: "io_uring",
    hipri: false,
};
const HIPRI: Tool = Tool::Fio {
    engine: "io_uring",
    hipri: true,
};
const AIO: Tool = Tool::Fio {
    engine: "libaio",
    hipri: false,
};
const POLL: Tool = Tool::Usrdrv { poll: true };
const IRQ: Tool = Tool::Usrdrv { poll: false };

/// Every case, kernel ones first (they run before the rebind).
const CASES: &[Case] = &[
    case("k_file_qd1_uring", URING, false, 1),
    case("k_file_qd1_aio", AIO, false, 1),
    case("k_file_qd1_hipri", HIPRI, false, 1),
    Case {
        rounds: CHECK_ROUNDS,
        ..case("k_file_qd32_uring", URING, false, 32)
    },
    case("k_file_qd32_aio", AIO, false, 32),
    case("k_file_qd32_hipri", HIPRI, false, 32),
    case("k_null_qd1_uring", URING, true, 1),
    case("k_null_qd1_hipri", HIPRI, true, 1),
    Case {
        rounds: CHECK_ROUNDS,
        ..case("k_null_qd32_uring", URING, true, 32)
    },
    case("k_null_qd32_hipri", HIPRI, true, 32),
    Case {
        jobs: 2,
        ..case("k_null_qd32_uring_2j", URING, true, 32)
    },
    Case {
        size: 128 << 10,
        sequential: true,
        ..case("k_file_seq128k_uring", URING, false, 8)
    },
    case(
        "t_file_qd1_uring",
        Tool::PerfKernel { poll: false },
        false,
        1,
    ),
    case("t_file_qd1_poll", Tool::PerfKernel { poll: true }, false, 1),
    Case {
        rounds: CHECK_ROUNDS,
        ..case(
            "t_file_qd32_uring",
            Tool::PerfKernel { poll: false },
            false,
            32,
        )
    },
    Case {
        rounds: CHECK_ROUNDS,
        ..case(
            "t_null_qd32_uring",
            Tool::PerfKernel { poll: false },
            true,
            32,
        )
    },
    case("u_file_qd1_poll", POLL, false, 1),
    case("u_file_qd1_irq", IRQ, false, 1),
    case("u_file_qd32_poll", POLL, false, 32),
    case("u_file_qd32_irq", IRQ, false, 32),
    case("u_null_qd1_poll", POLL, true, 1),
    case("u_null_qd32_poll", POLL, true, 32),
    Case {
        jobs: 2,
        ..case("u_null_qd32_poll_2q", POLL, true, 32)
    },
    case("u_null_qd32_irq", IRQ, true, 32),
    Case {
        jobs: 2,
        ..case("u_null_qd32_irq_2q", IRQ, true, 32)
    },
    Case {
        size: 128 << 10,
        sequential: true,
        ..case("u_file_seq128k_poll", POLL, false, 8)
    },
    Case {
        size: 512,
        ..case("u_null_qd1_512_poll", POLL, true, 1)
    },
    Case {
        size: 512,
        ..case("u_null_qd32_512_poll", POLL, true, 32)
    },
    Case {
        size: 512,
        ..case("u_file_qd1_512_poll", POLL, false, 1)
    },
    Case {
        size: 512,
        ..case("u_file_qd32_512_poll", POLL, false, 32)
    },
];

impl Case {
    fn is_kernel(&self) -> bool {
        !matches!(self.tool, Tool::Usrdrv { .. })
    }

    /// Cases compared with each other: same controller, pattern and depth
    /// class (one or many).
    fn group(&self) -> (bool, bool, bool) {
        (self.null, self.sequential, self.depth > 1)
    }

    /// The guest command line.
    fn command(&self, secs: u64) -> String {
        let dev = if self.null { "$NULL_DEV" } else { "$FILE_DEV" };
        let addr = if self.null { NULL_ADDR } else { FILE_ADDR };
        match self.tool {
            Tool::Fio { engine, hipri } => format!(
                "fio --name={key} --filename={dev} --ioengine={engine}{hipri}{lean} --direct=1 \
                 --rw={rw} --bs={size} --iodepth={depth} --numjobs={jobs} --group_reporting \
                 --time_based --runtime={secs} --norandommap --randrepeat=0 \
                 --lat_percentiles=1 --percentile_list=50:99:99.9 --output-format=json --eta=never --clocksource=cpu \
                 --output=/tmp/case.json",
                key = self.key,
                hipri = if hipri { " --hipri" } else { "" },
                lean = self.fio_tuning(engine),
                rw = if self.sequential { "read" } else { "randread" },
                size = self.size,
                depth = self.depth,
                jobs = self.jobs,
            ),
            Tool::PerfKernel { poll } => self.perf(dev, poll, secs),
            Tool::Usrdrv { poll } => self.perf(addr, poll, secs),
        }
    }

    /// fio's options for its best figures: registered buffers and files
    /// with io_uring, and at depth whole batches submitted and reaped at
    /// once, without per-I/O time stamps (only IOPS and bandwidth are
    /// compared there). Under emulation fio's own work per I/O otherwise
    /// bounds what it measures.
    fn fio_tuning(&self, engine: &str) -> String {
        let mut s = String::new();
        if engine == "io_uring" {
            s.push_str(" --fixedbufs=1 --registerfiles=1");
        }
        if self.depth > 1 {
            s.push_str(&format!(
                " --gtod_reduce=1 --iodepth_batch_submit={d} --iodepth_batch_complete_max={d}",
                d = self.depth
            ));
        }
        s
    }

    fn perf(&self, target: &str, poll: bool, secs: u64) -> String {
        format!(
            "usrdrv-nvme perf {target} --queue-depth {} --io-size {} --pattern {} --queues {} \
             --time {secs} {} --json >/tmp/case.json",
            self.depth,
            self.size,
            if self.sequential { "read" } else { "randread" },
            self.jobs,
            if poll { "--poll" } else { "--interrupt" },
        )
    }
}

/// The head of the guest script: helpers, block devices, environment.
const SCRIPT_HEAD: &str = include_str!("guest/nvme-bench.sh");

/// The guest script.
pub fn script(secs: u64) -> String {
    let mut s = format!("FILE_ADDR={FILE_ADDR}\nNULL_ADDR={NULL_ADDR}\n{SCRIPT_HEAD}");
    let line = |c: &Case| {
        format!(
            "run_case {} {}\n",
            c.key,
            crate::initramfs::sh_quote(&c.command(secs))
        )
    };
    // Each group's kernel cases, then its usrdrv cases, rebinding between:
    // the two sides of a ratio run a minute apart at most, not the whole
    // run, so a change in the host's load weighs on both alike.
    let mut groups: Vec<(bool, bool, bool)> = Vec::new();
    for c in CASES {
        if !groups.contains(&c.group()) {
            groups.push(c.group());
        }
    }
    for (i, group) in groups.into_iter().enumerate() {
        if i > 0 {
            s.push_str("to_kernel\n");
        }
        let members = CASES.iter().filter(|c| c.group() == group);
        for kernel in [true, false] {
            if !kernel {
                s.push_str("to_vfio\n");
            }
            // Every case once, then again those that repeat, round by round.
            for round in 1..=CHECK_ROUNDS {
                let due = |c: &&Case| c.is_kernel() == kernel && c.rounds >= round;
                for c in members.clone().filter(due) {
                    s.push_str(&line(c));
                }
            }
        }
    }
    s.push_str("exit $failed\n");
    s
}

/// How many case runs the script has (repeated cases count each time).
pub fn case_count() -> usize {
    CASES.iter().map(|c| c.rounds as usize).sum()
}

/// One case's figures, whichever tool measured them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// I/Os per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Latency percentiles, µs (submission to completion).
    pub p50: f64,
    /// 99th percentile, µs.
    pub p99: f64,
    /// Completed I/Os.
    pub ios: f64,
    /// Guest CPU time (all CPUs) per I/O, µs.
    pub cpu_us: f64,
    /// The user-space part of `cpu_us` (the load generator's own work), µs;
    /// NaN when the line does not say.
    pub user_us: f64,
    /// usrdrv's driver only: the time its queue threads spent waiting for
    /// the controller with nothing else to do, µs per I/O (polled, spinning);
    /// NaN for the kernel's side.
    pub waiting_us: f64,
    /// usrdrv's driver only: µs per I/O spent writing submission doorbell
    /// registers, and µs one such write took; NaN for the kernel's side.
    pub tail_doorbell_us: f64,
    /// See `tail_doorbell_us`.
    pub tail_doorbell_each_us: f64,
    /// How many runs these are the medians of.
    pub runs: usize,
}

impl Figures {
    /// Each figure's median over `runs` (NaN where no run has it).
    fn median(runs: &[Figures]) -> Figures {
        let of = |field: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(field).filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            match v.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => v[n / 2],
                n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            }
        };
        Figures {
            iops: of(|f| f.iops),
            mib_s: of(|f| f.mib_s),
            p50: of(|f| f.p50),
            p99: of(|f| f.p99),
            ios: of(|f| f.ios),
            cpu_us: of(|f| f.cpu_us),
            user_us: of(|f| f.user_us),
            waiting_us: of(|f| f.waiting_us),
            tail_doorbell_us: of(|f| f.tail_doorbell_us),
            tail_doorbell_each_us: of(|f| f.tail_doorbell_each_us),
            runs: runs.len(),
        }
    }
}

/// Reads the figures out of fio's JSON (one group-reported job).
fn fio_figures(result: &Value) -> Option<(f64, f64, f64, f64, f64)> {
    let read = &result["jobs"][0]["read"];
    // Without time stamps (--gtod_reduce) there are no percentiles: NaN.
    let pct = read["lat_ns"]["percentile"]
        .as_object()
        .or_else(|| read["clat_ns"]["percentile"].as_object());
    let get = |p: &str| {
        pct.and_then(|pct| {
            pct.iter()
                .find(|(k, _)| k.parse::<f64>().ok() == p.parse::<f64>().ok())
                .and_then(|(_, v)| v.as_f64())
        })
        .map_or(f64::NAN, |ns| ns / 1000.0)
    };
    Some((
        read["iops"].as_f64()?,
        read["bw_bytes"].as_f64()? / f64::from(1 << 20),
        get("50"),
        get("99"),
        read["total_ios"].as_f64()?,
    ))
}

/// Reads the figures out of `usrdrv-nvme perf --json`.
fn tool_figures(result: &Value) -> Option<(f64, f64, f64, f64, f64)> {
    Some((
        result["iops"].as_f64()?,
        result["mib_per_s"].as_f64()?,
        result["latency_us"]["p50"].as_f64()?,
        result["latency_us"]["p99"].as_f64()?,
        result["ios"].as_f64()?,
    ))
}

/// The guest's lines, parsed.
#[derive(Debug, Default)]
pub struct NvmeResults {
    /// The environment line.
    pub environment: Option<Value>,
    /// Case key to its figures.
    pub figures: BTreeMap<String, Figures>,
    /// Case key to why it failed.
    pub errors: BTreeMap<String, String>,
}

/// Picks the `usrdrv-nvme-bench:` lines out of the console transcript; a
/// case that ran several times gets the medians of its runs.
pub fn parse(transcript: &[String]) -> NvmeResults {
    let mut out = NvmeResults::default();
    let mut runs: BTreeMap<String, Vec<Figures>> = BTreeMap::new();
    for line in transcript {
        let Some(json) = after_marker(clean_line(line), MARKER) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(json) else {
            eprintln!("xtask: warning: unreadable NVMe result line: {line}");
            continue;
        };
        let Some(key) = v["case"].as_str().map(str::to_string) else {
            continue;
        };
        if key == "environment" {
            out.environment = Some(v);
            continue;
        }
        if let Some(err) = v["error"].as_str() {
            out.errors.insert(key, err.to_string());
            continue;
        }
        let fio = key.starts_with("k_");
        let parsed = if fio {
            fio_figures(&v["result"])
        } else {
            tool_figures(&v["result"])
        };
        match parsed {
            Some((iops, mib_s, p50, p99, ios)) => {
                let per_io = |field: &str| match v[field].as_f64() {
                    Some(jiffies) if ios > 0.0 => jiffies / USER_HZ * 1e6 / ios,
                    Some(_) => 0.0,
                    None => f64::NAN,
                };
                let cpu_us = per_io("busy_jiffies");
                let user_us = per_io("user_jiffies");
                let tool = |field: &str| v["result"][field].as_f64().unwrap_or(f64::NAN);
                runs.entry(key).or_default().push(Figures {
                    iops,
                    mib_s,
                    p50,
                    p99,
                    ios,
                    cpu_us,
                    user_us,
                    waiting_us: tool("waiting_us_per_io"),
                    tail_doorbell_us: tool("tail_doorbell_us_per_io"),
                    tail_doorbell_each_us: tool("tail_doorbell_us_each"),
                    runs: 1,
                });
            }
            None => {
                out.errors
                    .insert(key, "its JSON lacks the expected figures".to_string());
            }
        }
    }
    out.figures = runs
        .into_iter()
        .map(|(key, runs)| (key, Figures::median(&runs)))
        .collect();
    out
}

/// A target on a ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// Lower is better; pass at most this.
    AtMost(f64),
    /// Higher is better; pass at least this.
    AtLeast(f64),
    /// Within this fraction of 1 (agreement).
    Within(f64),
    /// Reported only.
    Report,
}

impl Goal {
    fn describe(self) -> String {
        match self {
            Self::AtMost(x) => format!("≤ {}", short(x)),
            Self::AtLeast(x) => format!("≥ {}", short(x)),
            Self::Within(x) => format!("within {:.0}%", x * 100.0),
            Self::Report => "(report)".to_string(),
        }
    }

    fn pass(self, ratio: f64) -> Option<bool> {
        match self {
            Self::AtMost(x) => Some(ratio <= x),
            Self::AtLeast(x) => Some(ratio >= x),
            Self::Within(x) => Some((ratio - 1.0).abs() <= x),
            Self::Report => None,
        }
    }
}

/// A target's number, three decimals at most (1/6 is `0.167`).
fn short(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Which figure a row compares.
#[derive(Debug, Clone, Copy)]
enum Metric {
    P50,
    P99,
    Iops,
    MibS,
    Cpu,
    UserCpu,
    /// Guest CPU per I/O less the time a polled driver spun waiting for the
    /// controller: the driver's own work.
    OwnCpu,
}

impl Metric {
    fn of(self, f: &Figures) -> f64 {
        match self {
            Self::P50 => f.p50,
            Self::P99 => f.p99,
            Self::Iops => f.iops,
            Self::MibS => f.mib_s,
            Self::Cpu => f.cpu_us,
            Self::UserCpu => f.user_us,
            Self::OwnCpu if f.waiting_us.is_finite() => (f.cpu_us - f.waiting_us).max(0.0),
            Self::OwnCpu => f.cpu_us,
        }
    }

    /// The best this figure can be for a 4 KiB polled driver, given the
    /// emulator's floor on the same controller (its smallest loop: 512 B,
    /// polled): no fewer microseconds and no more I/Os per second than the
    /// floor, and, polled, one busy CPU per I/O stream at no more than the
    /// floor's rate.
    fn best(self, floor: &Figures) -> Option<f64> {
        match self {
            Self::P50 => Some(floor.p50),
            Self::P99 => Some(floor.p99),
            Self::Iops => Some(floor.iops),
            Self::Cpu if floor.iops > 0.0 => Some(1e6 / floor.iops),
            _ => None,
        }
        .filter(|v| v.is_finite() && *v > 0.0)
    }

    fn format(self, v: f64) -> String {
        match self {
            Self::P50 | Self::P99 | Self::Cpu | Self::UserCpu | Self::OwnCpu => {
                format!("{v:.1} µs")
            }
            Self::Iops => format!("{:.1}k", v / 1000.0),
            Self::MibS => format!("{v:.1} MiB/s"),
        }
    }
}

/// One row of the targets table: `a` over `b`.
#[derive(Debug, Clone, Copy)]
struct RowSpec {
    name: &'static str,
    metric: Metric,
    a: &'static str,
    b: &'static str,
    goal: Goal,
    /// The floor case on `a`'s controller, for a target's best possible
    /// ratio here (see [`Metric::best`]).
    floor: Option<&'static str>,
}

const ROWS: &[RowSpec] = &[
    RowSpec {
        name: "QD1 p50, file: usrdrv polled / kernel io_uring",
        metric: Metric::P50,
        a: "u_file_qd1_poll",
        b: "k_file_qd1_uring",
        goal: Goal::AtMost(0.35),
        floor: Some("u_file_qd1_512_poll"),
    },
    RowSpec {
        name: "QD1 p50, file: usrdrv polled / kernel polled (--hipri)",
        metric: Metric::P50,
        a: "u_file_qd1_poll",
        b: "k_file_qd1_hipri",
        goal: Goal::AtMost(0.75),
        floor: Some("u_file_qd1_512_poll"),
    },
    RowSpec {
        name: "QD1 p99, file: usrdrv polled / kernel io_uring",
        metric: Metric::P99,
        a: "u_file_qd1_poll",
        b: "k_file_qd1_uring",
        goal: Goal::AtMost(0.2),
        floor: Some("u_file_qd1_512_poll"),
    },
    RowSpec {
        name: "QD1 p50, file: usrdrv interrupt / kernel io_uring",
        metric: Metric::P50,
        a: "u_file_qd1_irq",
        b: "k_file_qd1_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD1 p50, null-co: usrdrv polled / kernel io_uring",
        metric: Metric::P50,
        a: "u_null_qd1_poll",
        b: "k_null_qd1_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD1 p50, null-co: usrdrv polled / kernel polled",
        metric: Metric::P50,
        a: "u_null_qd1_poll",
        b: "k_null_qd1_hipri",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, file: usrdrv polled / kernel io_uring",
        metric: Metric::Iops,
        a: "u_file_qd32_poll",
        b: "k_file_qd32_uring",
        goal: Goal::AtLeast(6.0),
        floor: Some("u_file_qd32_512_poll"),
    },
    RowSpec {
        name: "QD32 IOPS, null-co: usrdrv polled / kernel io_uring",
        metric: Metric::Iops,
        a: "u_null_qd32_poll",
        b: "k_null_qd32_uring",
        goal: Goal::AtLeast(18.0),
        floor: Some("u_null_qd32_512_poll"),
    },
    RowSpec {
        name: "QD32 IOPS, file: usrdrv polled / kernel io_uring, both by usrdrv-nvme",
        metric: Metric::Iops,
        a: "u_file_qd32_poll",
        b: "t_file_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, null-co: usrdrv polled / kernel io_uring, both by usrdrv-nvme",
        metric: Metric::Iops,
        a: "u_null_qd32_poll",
        b: "t_null_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, file: usrdrv interrupt / kernel io_uring",
        metric: Metric::Iops,
        a: "u_file_qd32_irq",
        b: "k_file_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 guest CPU per I/O, file: usrdrv polled / kernel io_uring",
        metric: Metric::Cpu,
        a: "u_file_qd32_poll",
        b: "k_file_qd32_uring",
        goal: Goal::AtMost(1.0 / 6.0),
        floor: Some("u_file_qd32_512_poll"),
    },
    RowSpec {
        name: "QD32 guest CPU per I/O, null-co: usrdrv polled / kernel io_uring",
        metric: Metric::Cpu,
        a: "u_null_qd32_poll",
        b: "k_null_qd32_uring",
        goal: Goal::AtMost(1.0 / 6.0),
        floor: Some("u_null_qd32_512_poll"),
    },
    RowSpec {
        name: "QD32 guest CPU per I/O, null-co: usrdrv interrupt / kernel io_uring",
        metric: Metric::Cpu,
        a: "u_null_qd32_irq",
        b: "k_null_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 guest CPU per I/O less the poll loop's waiting, file: usrdrv polled / kernel io_uring",
        metric: Metric::OwnCpu,
        a: "u_file_qd32_poll",
        b: "k_file_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 guest CPU per I/O less the poll loop's waiting, null-co: usrdrv polled / kernel io_uring",
        metric: Metric::OwnCpu,
        a: "u_null_qd32_poll",
        b: "k_null_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, null-co, usrdrv polled: 2 queues on 2 threads / 1",
        metric: Metric::Iops,
        a: "u_null_qd32_poll_2q",
        b: "u_null_qd32_poll",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, null-co, usrdrv on interrupts: 2 queues on 2 threads / 1",
        metric: Metric::Iops,
        a: "u_null_qd32_irq_2q",
        b: "u_null_qd32_irq",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, null-co, kernel io_uring: 2 jobs / 1",
        metric: Metric::Iops,
        a: "k_null_qd32_uring_2j",
        b: "k_null_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD1 p50, null-co: usrdrv polled 4 KiB / the floor (512 B)",
        metric: Metric::P50,
        a: "u_null_qd1_poll",
        b: "u_null_qd1_512_poll",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, null-co: usrdrv polled 4 KiB / the floor (512 B)",
        metric: Metric::Iops,
        a: "u_null_qd32_poll",
        b: "u_null_qd32_512_poll",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, null-co: kernel polled (--hipri) 4 KiB / the floor (512 B)",
        metric: Metric::Iops,
        a: "k_null_qd32_hipri",
        b: "u_null_qd32_512_poll",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD1 p50, file: usrdrv polled 4 KiB / the floor (512 B)",
        metric: Metric::P50,
        a: "u_file_qd1_poll",
        b: "u_file_qd1_512_poll",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "QD32 IOPS, file: usrdrv polled 4 KiB / the floor (512 B)",
        metric: Metric::Iops,
        a: "u_file_qd32_poll",
        b: "u_file_qd32_512_poll",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "128 KiB sequential read QD8, file: usrdrv polled / kernel io_uring",
        metric: Metric::MibS,
        a: "u_file_seq128k_poll",
        b: "k_file_seq128k_uring",
        goal: Goal::Report,
        floor: None,
    },
];

/// The load generator check: `usrdrv-nvme perf /dev/...` against fio.
const AGREEMENT: &[RowSpec] = &[
    RowSpec {
        name: "kernel QD1 p50, file, io_uring: usrdrv-nvme / fio",
        metric: Metric::P50,
        a: "t_file_qd1_uring",
        b: "k_file_qd1_uring",
        goal: Goal::Within(0.1),
        floor: None,
    },
    RowSpec {
        name: "kernel QD1 p50, file, polled: usrdrv-nvme / fio --hipri",
        metric: Metric::P50,
        a: "t_file_qd1_poll",
        b: "k_file_qd1_hipri",
        goal: Goal::Within(0.1),
        floor: None,
    },
    RowSpec {
        name: "kernel QD32 IOPS, file, io_uring: usrdrv-nvme / fio",
        metric: Metric::Iops,
        a: "t_file_qd32_uring",
        b: "k_file_qd32_uring",
        goal: Goal::Within(0.1),
        floor: None,
    },
    RowSpec {
        name: "kernel QD32 IOPS, null-co, io_uring: usrdrv-nvme / fio",
        metric: Metric::Iops,
        a: "t_null_qd32_uring",
        b: "k_null_qd32_uring",
        goal: Goal::Within(0.1),
        floor: None,
    },
    // Where the two disagree at depth: what each load generator costs.
    RowSpec {
        name: "kernel QD32 guest CPU per I/O, file, io_uring: usrdrv-nvme / fio",
        metric: Metric::Cpu,
        a: "t_file_qd32_uring",
        b: "k_file_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "kernel QD32 guest CPU per I/O, null-co, io_uring: usrdrv-nvme / fio",
        metric: Metric::Cpu,
        a: "t_null_qd32_uring",
        b: "k_null_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "kernel QD32 user-space CPU per I/O, file, io_uring: usrdrv-nvme / fio",
        metric: Metric::UserCpu,
        a: "t_file_qd32_uring",
        b: "k_file_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
    RowSpec {
        name: "kernel QD32 user-space CPU per I/O, null-co, io_uring: usrdrv-nvme / fio",
        metric: Metric::UserCpu,
        a: "t_null_qd32_uring",
        b: "k_null_qd32_uring",
        goal: Goal::Report,
        floor: None,
    },
];

/// One evaluated row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What it compares.
    pub name: &'static str,
    /// The two figures, formatted, or `-` when a case failed.
    pub a: String,
    /// The baseline.
    pub b: String,
    /// `a / b`.
    pub ratio: Option<f64>,
    /// The target.
    pub goal: Goal,
    /// Met, missed, or reported only / not measured.
    pub pass: Option<bool>,
    /// The best ratio the emulator's floor allows here, where the row has
    /// one: a target beyond it cannot be met on this rig by any driver as
    /// fast as the floor's loop.
    pub best: Option<f64>,
}

impl Row {
    /// Whether the target lies beyond what the floor allows here.
    pub fn out_of_reach(&self) -> bool {
        match (self.goal, self.best) {
            (Goal::AtLeast(x), Some(best)) => x > best,
            (Goal::AtMost(x), Some(best)) => x < best,
            _ => false,
        }
    }
}

fn evaluate(specs: &[RowSpec], r: &NvmeResults) -> Vec<Row> {
    specs
        .iter()
        .map(|s| {
            let value = |key: &str| {
                r.figures
                    .get(key)
                    .map(|f| s.metric.of(f))
                    .filter(|v| v.is_finite())
            };
            let (a, b) = (value(s.a), value(s.b));
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let best = s
                .floor
                .and_then(|key| r.figures.get(key))
                .and_then(|floor| s.metric.best(floor))
                .zip(b)
                .filter(|&(_, b)| b > 0.0)
                .map(|(best, b)| best / b);
            let show = |v: Option<f64>| v.map_or("-".to_string(), |v| s.metric.format(v));
            Row {
                name: s.name,
                a: show(a),
                b: show(b),
                ratio,
                goal: s.goal,
                pass: ratio.and_then(|x| s.goal.pass(x)),
                best,
            }
        })
        .collect()
}

/// The target rows.
pub fn target_rows(r: &NvmeResults) -> Vec<Row> {
    evaluate(ROWS, r)
}

/// The load generator agreement rows.
pub fn agreement_rows(r: &NvmeResults) -> Vec<Row> {
    evaluate(AGREEMENT, r)
}

/// A Markdown table of rows.
pub fn rows_table(rows: &[Row], a: &str, b: &str) -> String {
    let mut s = format!(
        "| | {a} | {b} | ratio | target | best the floor allows | result |\n\
         |---|--:|--:|--:|---|--:|---|\n"
    );
    for row in rows {
        let result = match (row.pass, row.ratio) {
            (Some(true), _) => "met",
            (Some(false), _) if row.out_of_reach() => "**missed**: out of reach here",
            (Some(false), _) => "**missed**",
            (None, None) => "not measured",
            (None, Some(_)) => "-",
        };
        let ratio = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.3}"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            row.name,
            row.a,
            row.b,
            ratio(row.ratio),
            row.goal.describe(),
            ratio(row.best),
            result
        ));
    }
    s
}

/// Every case's own figures, with the emulator's floor.
pub fn cases_table(r: &NvmeResults) -> String {
    let mut s = String::from(
        "| case | driver, load generator | controller | QD × threads | I/O | IOPS | MiB/s | p50 | p99 | guest CPU per I/O | of it user space |\n\
         |---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for c in CASES {
        let who = match c.tool {
            Tool::Fio { engine, hipri } => {
                format!(
                    "kernel, fio {engine}{}",
                    if hipri { " --hipri" } else { "" }
                )
            }
            Tool::PerfKernel { poll } => format!(
                "kernel, usrdrv-nvme io_uring{}",
                if poll { " --poll (IOPOLL)" } else { "" }
            ),
            Tool::Usrdrv { poll } => {
                format!("usrdrv, {}", if poll { "polled" } else { "interrupts" })
            }
        };
        let io = format!(
            "{} {}",
            if c.size >= 1024 {
                format!("{} KiB", c.size / 1024)
            } else {
                format!("{} B", c.size)
            },
            if c.sequential { "seq" } else { "rand" }
        );
        let ctrl = if c.null { "null-co" } else { "file" };
        let figures = match (r.figures.get(c.key), r.errors.get(c.key)) {
            (Some(f), _) => {
                let us = |v: f64| {
                    if v.is_finite() {
                        format!("{v:.1} µs")
                    } else {
                        "-".to_string()
                    }
                };
                format!(
                    "{:.0} | {:.1} | {} | {} | {} | {}",
                    f.iops,
                    f.mib_s,
                    us(f.p50),
                    us(f.p99),
                    us(f.cpu_us),
                    us(f.user_us)
                )
            }
            (None, Some(e)) => format!("failed: {e} | | | | |"),
            (None, None) => "not run | | | | |".to_string(),
        };
        let runs = match r.figures.get(c.key) {
            Some(f) if f.runs > 1 => format!(" (median of {})", f.runs),
            _ => String::new(),
        };
        s.push_str(&format!(
            "| `{}`{runs} | {who} | {ctrl} | {} × {} | {io} | {figures} |\n",
            c.key, c.depth, c.jobs
        ));
    }
    s
}

/// The emulator's floor on one controller (`null`: the null-co one):
/// usrdrv's smallest doorbell-to-completion loop, 512 B polled; QD1 p50 and,
/// if measured, QD32 IOPS.
pub fn floor(r: &NvmeResults, null: bool) -> Option<(f64, Option<f64>)> {
    let name = if null { "null" } else { "file" };
    let qd1 = r.figures.get(&format!("u_{name}_qd1_512_poll"))?;
    Some((
        qd1.p50,
        r.figures
            .get(&format!("u_{name}_qd32_512_poll"))
            .map(|f| f.iops),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_real_cases() {
        for s in ROWS.iter().chain(AGREEMENT) {
            for key in [s.a, s.b] {
                assert!(CASES.iter().any(|c| c.key == key), "{key}");
            }
        }
        for key in ROWS.iter().filter_map(|s| s.floor) {
            assert!(CASES.iter().any(|c| c.key == key), "{key}");
        }
        let mut keys: Vec<&str> = CASES.iter().map(|c| c.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), CASES.len());
    }

    #[test]
    fn script_runs_kernel_cases_before_the_rebind() {
        let s = script(8);
        let at = |what: &str| s.find(what).unwrap_or_else(|| panic!("{what}"));
        let bind = at("to_vfio\n");
        assert!(at("run_case k_file_qd1_uring") < bind);
        assert!(at("run_case t_file_qd1_poll") < bind);
        assert!(at("run_case u_file_qd1_poll") > bind);
        assert!(at("run_case u_file_qd1_irq") < at("to_kernel\n"));
        assert!(at("to_kernel\n") < at("run_case k_file_qd32_uring"));
        assert_eq!(s.matches("to_vfio\n").count(), 5);
        assert_eq!(s.matches("to_kernel\n").count(), 4);
        assert!(s.contains("--ioengine=io_uring --hipri --fixedbufs=1 --registerfiles=1 --direct=1 --rw=randread --bs=4096 --iodepth=1 "));
        assert!(s.contains("--ioengine=libaio --gtod_reduce=1 --iodepth_batch_submit=32 --iodepth_batch_complete_max=32 --direct=1"));
        assert!(s.contains("usrdrv-nvme perf 0000:00:04.0 --queue-depth 32 --io-size 512"));
        assert!(s.contains("usrdrv-nvme perf $NULL_DEV --queue-depth 32"));
    }

    #[test]
    fn the_checks_cases_at_depth_run_in_interleaved_rounds() {
        let s = script(8);
        let order: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("run_case "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|k| k.contains("file_qd32"))
            .collect();
        assert_eq!(
            order,
            [
                "k_file_qd32_uring",
                "k_file_qd32_aio",
                "k_file_qd32_hipri",
                "t_file_qd32_uring",
                "k_file_qd32_uring",
                "t_file_qd32_uring",
                "k_file_qd32_uring",
                "t_file_qd32_uring",
                "u_file_qd32_poll",
                "u_file_qd32_irq",
                "u_file_qd32_512_poll",
            ]
        );
        assert_eq!(s.matches("run_case t_null_qd32_uring ").count(), 3);
        assert_eq!(case_count(), CASES.len() + 4 * 2);
    }

    #[test]
    fn repeated_runs_give_each_figures_median() {
        let line = |iops: u32, user: u32| {
            format!(
                r#"usrdrv-nvme-bench: {{"case":"t_null_qd32_uring","busy_jiffies":100,"user_jiffies":{user},"result":{{"iops":{iops}.0,"mib_per_s":1.0,"ios":100000,"latency_us":{{"p50":5.0,"p99":9.0}}}}}}"#
            )
        };
        let r = parse(&[line(40_000, 10), line(30_000, 30), line(50_000, 20)]);
        let f = r.figures["t_null_qd32_uring"];
        assert_eq!((f.iops, f.runs), (40_000.0, 3));
        assert!((f.user_us - 2.0).abs() < 1e-9, "{f:?}");
        assert!(cases_table(&r).contains("`t_null_qd32_uring` (median of 3)"));
        let two = parse(&[line(40_000, 10), line(30_000, 30)]);
        assert_eq!(two.figures["t_null_qd32_uring"].iops, 35_000.0);
    }

    #[test]
    fn a_target_beyond_what_the_floor_allows_is_out_of_reach() {
        let tool = |key: &str, iops: u32| {
            format!(
                r#"usrdrv-nvme-bench: {{"case":"{key}","busy_jiffies":100,"result":{{"iops":{iops}.0,"mib_per_s":1.0,"ios":1000,"latency_us":{{"p50":50.0,"p99":90.0}},"waiting_us_per_io":600.0}}}}"#
            )
        };
        let fio = |key: &str, iops: u32| {
            format!(
                r#"usrdrv-nvme-bench: {{"case":"{key}","busy_jiffies":100,"result":{{"jobs":[{{"read":{{"iops":{iops}.0,"bw_bytes":1,"total_ios":1000}}}}]}}}}"#
            )
        };
        let r = parse(&[
            fio("k_null_qd32_uring", 40_000),
            tool("u_null_qd32_poll", 160_000),
            tool("u_null_qd32_512_poll", 180_000),
            fio("k_file_qd32_uring", 25_000),
            tool("u_file_qd32_poll", 50_000),
            tool("u_file_qd32_512_poll", 200_000),
        ]);
        let rows = target_rows(&r);
        let row = |name: &str| {
            rows.iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("{name}"))
        };
        // 18× of 40k is beyond the 180k floor: at most 4.5× here.
        let null = row("QD32 IOPS, null-co: usrdrv polled / kernel io_uring");
        assert_eq!(null.pass, Some(false));
        assert!((null.best.expect("a floor") - 4.5).abs() < 1e-9);
        assert!(null.out_of_reach());
        // 6× of 25k is within the 200k floor (8×): an ordinary miss.
        let file = row("QD32 IOPS, file: usrdrv polled / kernel io_uring");
        assert_eq!(file.pass, Some(false));
        assert!(!file.out_of_reach());
        let table = rows_table(&rows, "usrdrv", "kernel");
        assert!(
            table.contains("| 4.000 | ≥ 18 | 4.500 | **missed**: out of reach here |"),
            "{table}"
        );
        assert!(
            table.contains("| 2.000 | ≥ 6 | 8.000 | **missed** |"),
            "{table}"
        );
        // A polled queue's CPU per I/O is at least one over the floor's IOPS.
        let cpu = row("QD32 guest CPU per I/O, null-co: usrdrv polled / kernel io_uring");
        let kernel_cpu = r.figures["k_null_qd32_uring"].cpu_us;
        assert!((cpu.best.expect("a floor") - (1e6 / 180_000.0) / kernel_cpu).abs() < 1e-9);
        // The driver's own work: its CPU per I/O less the spinning.
        let own = row(
            "QD32 guest CPU per I/O less the poll loop's waiting, null-co: usrdrv polled / kernel io_uring",
        );
        assert!(
            (own.ratio.expect("ratio") - 400.0 / 1000.0).abs() < 1e-9,
            "{own:?}"
        );
        assert_eq!(own.best, None);
    }

    #[test]
    fn lines_parse_into_figures_and_rows() {
        let fio = r#"{"jobs":[{"read":{"iops":10000.0,"bw_bytes":40960000,"total_ios":80000,"lat_ns":{"percentile":{"50.000000":100000,"99.000000":500000}}}}]}"#;
        let tool = r#"{"iops":60000.0,"mib_per_s":234.0,"ios":480000,"latency_us":{"p50":30.0,"p99":90.0}}"#;
        let lines = vec![
            format!(
                r#"usrdrv-nvme-bench: {{"case":"k_file_qd1_uring","busy_jiffies":800,"user_jiffies":200,"result":{fio}}}"#
            ),
            format!(
                r#"usrdrv-nvme-bench: {{"case":"u_file_qd1_poll","busy_jiffies":800,"result":{tool}}}"#
            ),
            r#"usrdrv-nvme-bench: {"case":"k_file_qd1_hipri","error":"exit status 1: no"}"#
                .to_string(),
        ];
        let r = parse(&lines);
        let k = r.figures["k_file_qd1_uring"];
        assert_eq!((k.p50, k.p99, k.iops), (100.0, 500.0, 10000.0));
        assert!((k.cpu_us - 100.0).abs() < 1e-9, "{k:?}");
        assert!((k.user_us - 25.0).abs() < 1e-9, "{k:?}");
        // A line without the user-space split shows none, not zero.
        assert!(r.figures["u_file_qd1_poll"].user_us.is_nan());
        let rows = target_rows(&r);
        assert!((rows[0].ratio.expect("ratio") - 0.3).abs() < 1e-9);
        assert_eq!(rows[0].pass, Some(true));
        assert_eq!(rows[1].ratio, None);
        assert!((rows[2].ratio.expect("ratio") - 0.18).abs() < 1e-9);
        assert_eq!(rows[2].pass, Some(true));
        assert_eq!(rows[3].pass, None);
        let table = rows_table(&rows, "usrdrv", "kernel");
        assert!(
            table.contains("| 30.0 µs | 100.0 µs | 0.300 | ≤ 0.35 | - | met |"),
            "{table}"
        );
        let cases = cases_table(&r);
        assert!(cases.contains("failed: exit status 1: no"));
        assert!(cases.contains("| 100.0 µs | 25.0 µs |"), "{cases}");
    }
}
