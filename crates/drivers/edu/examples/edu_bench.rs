//! Benchmarks of usrdrv's hot paths on QEMU's edu device, each next to the raw
//! VFIO baseline on the same device, container and interrupt, in one process:
//! MMIO reads and writes, mapping and unmapping a caller's page, the DMA pool,
//! copies and typed writes into DMA memory (against memcpy on plain pages),
//! 16 MiB mapped in one call or in 4 KiB calls, MSI wake-up latency (the
//! interrupt delivered on the waiter's CPU, where it is pending before the
//! wait starts, and on the other CPU, where the waiter sleeps and is woken),
//! and 100,000 interrupts without a lost wake-up.
//!
//! API and raw runs alternate, round after round, so drift and noise hit both;
//! figures are medians over rounds (percentiles over every sample for the
//! interrupt latency). Only the ratios inside one run mean much: absolute
//! figures depend on the machine, and under emulation on everything else it
//! does. Targets are reported, never asserted; the exit status is non-zero only
//! when something failed.
//!
//! Run in the VM by `cargo xtask bench`; by hand (as root, edu present):
//! `edu_bench` or `edu_bench --quick` (a tenth of the rounds). Besides the
//! table, every result is printed as one `usrdrv-bench: {json}` line.

#[path = "edu_bench/backends.rs"]
mod backends;
#[path = "edu_bench/copies.rs"]
mod copies;
#[path = "edu_bench/raw.rs"]
mod raw;

use std::error::Error;
use std::hint::black_box;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use usrdrv::Device;
use usrdrv::dma::Direction;
use usrdrv::irq::IrqKind;
use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};
use usrdrv_edu::{Edu, regs};
use vfio_bindings::bindings::vfio::{VFIO_DMA_MAP_FLAG_READ, VFIO_PCI_MSI_IRQ_INDEX};

use raw::{PageMemory, RawBar, RawIrq};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The prefix of the machine-readable lines.
const PREFIX: &str = "usrdrv-bench:";
/// A register that is safe to hammer: it stores the inverse of what is written.
const LIVENESS: u64 = regs::LIVENESS.offset();
/// The interrupt status bit the benchmark raises (not one edu uses itself).
const BENCH_IRQ: u32 = 0x0004_0000;
/// The raw map/unmap baseline's device address: above edu's 28-bit mask, so
/// usrdrv never hands it out in this domain.
const RAW_IOVA: u64 = 1 << 30;
const PAGE: usize = 4096;
const BIG: usize = 16 << 20;
/// How long a wait may take before it counts as a lost wake-up.
const IRQ_TIMEOUT: Duration = Duration::from_secs(1);
/// The CPU the benchmark and the edu interrupt are pinned to.
const BENCH_CPU: usize = 0;

/// Iteration counts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    mmio_rounds: usize,
    mmio_ops: usize,
    map_rounds: usize,
    map_pairs: usize,
    pool_rounds: usize,
    pool_pairs: usize,
    msi_rounds: usize,
    msi_per_round: usize,
    msi_flood: usize,
    big_rounds: usize,
    /// Rounds of the usrdma-against-VFIO comparison (two rebinds each).
    backend_rounds: usize,
    /// Operations of each kind per backend and round.
    backend_ops: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            mmio_rounds: 100,
            mmio_ops: 20_000,
            map_rounds: 100,
            map_pairs: 1000,
            pool_rounds: 100,
            pool_pairs: 50_000,
            msi_rounds: 100,
            msi_per_round: 2000,
            msi_flood: 100_000,
            big_rounds: 20,
            backend_rounds: 20,
            backend_ops: 500,
        }
    }

    /// A tenth of the rounds and of the interrupt flood: a smoke test.
    fn quick() -> Self {
        let f = Self::full();
        Self {
            mmio_rounds: f.mmio_rounds / 10,
            map_rounds: f.map_rounds / 10,
            pool_rounds: f.pool_rounds / 10,
            msi_rounds: f.msi_rounds / 10,
            msi_flood: f.msi_flood / 10,
            big_rounds: f.big_rounds / 10,
            backend_rounds: 2,
            ..f
        }
    }
}

fn main() -> ExitCode {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let plan = if quick { Plan::quick() } else { Plan::full() };
    match run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edu_bench: error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(plan: Plan) -> Result<()> {
    let address = Edu::find()?;
    Sysfs::system().bind(address, VFIO_PCI_DRIVER)?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pinned = raw::pin_to_cpu(BENCH_CPU);
    let mut edu = Edu::open(address)?;
    let clock = Clock::calibrate();
    let env = environment(&clock, &edu, address, cpus, pinned.is_ok())?;
    println!("{PREFIX} {env}");
    println!(
        "edu_bench: edu at {address}; timing with the TSC ({:.3} ns/tick); here clock_gettime costs {:.0} ns (clock source {}) and a function call {:.1} ns",
        clock.ns_per_tick,
        env["clock_gettime_ns"].as_f64().unwrap_or(f64::NAN),
        env["clocksource"].as_str().unwrap_or("?"),
        env["call_ns"].as_f64().unwrap_or(f64::NAN),
    );
    if let Err(e) = &pinned {
        println!("edu_bench: could not pin to CPU {BENCH_CPU} ({e}); running unpinned");
    }

    let mut rows = Vec::new();
    let mut add = |row: Row| {
        println!("{PREFIX} {}", row.json());
        rows.push(row);
    };
    for row in mmio(&edu, &clock, plan)? {
        add(row);
    }
    add(map_unmap(edu.device(), &clock, plan)?);
    add(pool(edu.device(), &clock, plan)?);
    for row in copies::copies(edu.device(), &clock, plan)? {
        add(row);
    }
    for row in map_16m(edu.device(), &clock, plan)? {
        add(row);
    }
    for placement in [IrqPlacement::SameCpu, IrqPlacement::OtherCpu] {
        if placement.cpu() >= cpus {
            println!("edu_bench: one CPU only: no MSI latency with the interrupt on another CPU");
            continue;
        }
        for row in msi_latency(&edu, &clock, plan, placement)? {
            add(row);
        }
    }
    add(msi_flood(&mut edu, plan, cpus)?);
    drop(edu);
    for row in backends::usrdma_vs_vfio(address, &clock, plan)? {
        add(row);
    }

    println!();
    print_table(&rows);
    Ok(())
}

// ---------------------------------------------------------------- timing

/// The TSC, calibrated against the monotonic clock. In this guest the clock
/// source is the emulated HPET (TCG's TSC is not trusted), so `clock_gettime`
/// is a system call plus an emulated device read, about a microsecond, while
/// RDTSC is one instruction.
#[derive(Debug, Clone, Copy)]
struct Clock {
    ns_per_tick: f64,
}

impl Clock {
    fn calibrate() -> Self {
        let (i0, t0) = (Instant::now(), raw::ticks());
        std::thread::sleep(Duration::from_millis(200));
        let (i1, t1) = (Instant::now(), raw::ticks());
        let ticks = t1.wrapping_sub(t0).max(1);
        Self {
            ns_per_tick: i1.duration_since(i0).as_nanos() as f64 / ticks as f64,
        }
    }

    #[inline(always)]
    fn now(&self) -> u64 {
        raw::ticks()
    }

    #[inline(always)]
    fn ns_since(&self, start: u64) -> f64 {
        raw::ticks().wrapping_sub(start) as f64 * self.ns_per_tick
    }
}

fn environment(
    clock: &Clock,
    edu: &Edu,
    address: PciAddress,
    cpus: usize,
    pinned: bool,
) -> Result<Value> {
    let n = 2000;
    let t = clock.now();
    for _ in 0..n {
        black_box(Instant::now());
    }
    let gettime_ns = clock.ns_since(t) / n as f64;
    let t = clock.now();
    for _ in 0..n {
        black_box(raw::ticks());
    }
    let tsc_ns = clock.ns_since(t) / n as f64;
    // What a function call costs here: under TCG every return is an indirect
    // jump that QEMU resolves with a hash lookup.
    let calls = 100_000;
    let t = clock.now();
    let mut x = 0;
    for _ in 0..calls {
        x = opaque_call(x);
    }
    black_box(x);
    let call_ns = clock.ns_since(t) / calls as f64;
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string())
    };
    let bar = edu.device().bar(0)?;
    Ok(json!({
        "kind": "environment",
        "kernel": read("/proc/sys/kernel/osrelease"),
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "cpus": cpus,
        "pinned_cpu": pinned.then_some(BENCH_CPU),
        "running_on_cpu": raw::current_cpu(),
        "tsc_ns_per_tick": clock.ns_per_tick,
        "clock_gettime_ns": gettime_ns,
        "rdtsc_ns": tsc_ns,
        "call_ns": call_ns,
        "device": address.to_string(),
        "bar0_mapped": bar.is_mapped(),
    }))
}

/// A function the compiler may not inline or see through.
#[inline(never)]
fn opaque_call(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

/// Nearest-rank percentile (`p` in 0..=1) of unsorted samples.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The order of two contenders in `round`: alternating, so neither always goes
/// first (caches, drift).
fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

// ---------------------------------------------------------------- results

/// One result: the API figure, the raw one when there is a baseline, and how
/// it compares with its target.
#[derive(Debug)]
struct Row {
    key: String,
    name: String,
    unit: &'static str,
    api: f64,
    raw: Option<f64>,
    /// `api / raw`, or another ratio when `ratio_label` says so.
    ratio: Option<f64>,
    ratio_label: Option<&'static str>,
    target: Option<String>,
    pass: Option<bool>,
    note: String,
    extra: Value,
}

impl Row {
    fn compared(
        key: impl Into<String>,
        name: &str,
        unit: &'static str,
        api: f64,
        raw: f64,
    ) -> Self {
        Self {
            key: key.into(),
            name: name.to_string(),
            unit,
            api,
            raw: Some(raw),
            ratio: Some(api / raw),
            ratio_label: None,
            target: None,
            pass: None,
            note: String::new(),
            extra: json!({}),
        }
    }

    fn single(key: &str, name: &str, unit: &'static str, api: f64) -> Self {
        Self {
            raw: None,
            ratio: None,
            ..Self::compared(key, name, unit, api, f64::NAN)
        }
    }

    /// Target: `api / raw <= limit`.
    fn ratio_at_most(mut self, limit: f64) -> Self {
        self.target = Some(format!("ratio <= {limit:.2}"));
        self.pass = self.ratio.map(|r| r <= limit);
        self
    }

    fn extra(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }

    /// Adds a sentence to the row's note.
    fn note(mut self, note: impl Into<String>) -> Self {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(&note.into());
        self
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "kind": "result",
            "key": self.key,
            "name": self.name,
            "unit": self.unit,
            "api": self.api,
            "raw": self.raw,
            "ratio": self.ratio,
            "ratio_of": self.ratio_label.unwrap_or("api/raw"),
            "target": self.target,
            "pass": self.pass,
            "note": self.note,
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), self.extra.as_object()) {
            obj.extend(extra.clone());
        }
        v
    }
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "ns" => format!("{value:.0} ns"),
        "us" => format!("{value:.2} µs"),
        "ms" => format!("{value:.1} ms"),
        "s" => format!("{value:.2} s"),
        other => format!("{value} {other}"),
    }
}

fn print_table(rows: &[Row]) {
    let header = ["benchmark", "API", "raw", "ratio", "target", "result"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                format_value(r.api, r.unit),
                r.raw.map_or("-".to_string(), |v| format_value(v, r.unit)),
                match (r.ratio, r.ratio_label) {
                    (Some(x), None) => format!("{x:.3}"),
                    (Some(x), Some(label)) => format!("{x:.1} ({label})"),
                    (None, _) => "-".to_string(),
                },
                r.target.clone().unwrap_or_else(|| "-".to_string()),
                match r.pass {
                    Some(true) => "pass".to_string(),
                    Some(false) => "MISS".to_string(),
                    None => "-".to_string(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            // Names left-aligned, figures right-aligned.
            if i == 0 || i >= 4 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
            s.push_str("  ");
        }
        println!("{}", s.trim_end());
    };
    line(&header.map(str::to_string));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        println!("  {}: {}", r.name, r.note);
    }
}

// ---------------------------------------------------------------- MMIO

/// The VFIO device under `device`: the raw baselines speak VFIO directly.
fn vfio_of(device: &Device) -> Result<&usrdrv::vfio::Device> {
    Ok(device
        .vfio()
        .ok_or("the raw baselines need the device on VFIO (bind it to vfio-pci)")?)
}

/// 32-bit reads and writes of the liveness register: `Bar` (offsets checked
/// at each access) and `BarView` (offsets checked at compile time) against a
/// volatile pointer into BAR 0 mapped by hand from the same device file.
fn mmio(edu: &Edu, clock: &Clock, plan: Plan) -> Result<[Row; 4]> {
    let device = edu.device();
    let bar = device.bar(0)?;
    let view = bar.view::<{ regs::BAR0_LEN as usize }>()?;
    let vfio = vfio_of(device)?;
    let region = vfio.region_info(0)?;
    let raw_bar = RawBar::map(vfio.as_fd(), region.offset, usize::try_from(region.size)?)?;
    let reg = raw_bar
        .reg32(LIVENESS as usize)
        .ok_or("the liveness register is outside BAR 0")?;
    // Every path reaches the same register: edu stores the inverse of a write.
    bar.write32(LIVENESS, 0x1234_5678)?;
    if reg.read() != !0x1234_5678 {
        return Err("the raw BAR mapping does not reach the device the API reaches".into());
    }
    reg.write(0x0bad_cafe);
    if bar.read32(LIVENESS)? != !0x0bad_cafe
        || view.read32::<{ LIVENESS as usize }>() != !0x0bad_cafe
    {
        return Err("the API BAR does not reach the device the raw mapping reaches".into());
    }

    // Contenders: `Bar` (0), `BarView` (1), raw (2); reads, then writes.
    let n = plan.mmio_ops;
    let mut reads: [Vec<f64>; 3] = Default::default();
    let mut writes: [Vec<f64>; 3] = Default::default();
    for round in 0..plan.mmio_rounds {
        for k in 0..3 {
            let which = (round + k) % 3;
            let t = clock.now();
            let mut acc = 0u32;
            match which {
                0 => {
                    for _ in 0..n {
                        acc ^= bar.read32(LIVENESS)?;
                    }
                }
                1 => {
                    for _ in 0..n {
                        acc ^= view.read32::<{ LIVENESS as usize }>();
                    }
                }
                _ => {
                    for _ in 0..n {
                        acc ^= reg.read();
                    }
                }
            }
            black_box(acc);
            reads[which].push(clock.ns_since(t) / n as f64);
        }
        for k in 0..3 {
            let which = (round + k) % 3;
            let t = clock.now();
            match which {
                0 => {
                    for i in 0..n {
                        bar.write32(LIVENESS, i as u32)?;
                    }
                }
                1 => {
                    for i in 0..n {
                        view.write32::<{ LIVENESS as usize }>(i as u32);
                    }
                }
                _ => {
                    for i in 0..n {
                        reg.write(i as u32);
                    }
                }
            }
            writes[which].push(clock.ns_since(t) / n as f64);
        }
    }
    let extra =
        json!({"rounds": plan.mmio_rounds, "ops_per_round": n, "bar_mapped": bar.is_mapped()});
    let row = |key, name, api: &[f64], raw: &[f64]| {
        let (api, raw) = (median(api), median(raw));
        Row::compared(key, name, "ns", api, raw)
            .ratio_at_most(1.05)
            .note(format!(
                "the API adds {:.0} ns per access to an emulated access that costs {raw:.0} ns here",
                api - raw
            ))
            .extra(extra.clone())
    };
    Ok([
        row(
            "mmio_read32",
            "MMIO read32, Bar (per op)",
            &reads[0],
            &reads[2],
        ),
        row(
            "mmio_write32",
            "MMIO write32, Bar (per op)",
            &writes[0],
            &writes[2],
        ),
        row(
            "mmio_read32_view",
            "MMIO read32, BarView (per op)",
            &reads[1],
            &reads[2],
        ),
        row(
            "mmio_write32_view",
            "MMIO write32, BarView (per op)",
            &writes[1],
            &writes[2],
        ),
    ])
}

// ---------------------------------------------------------------- DMA mapping

/// Maps and unmaps one page of the caller's memory: `map_dma` + drop against
/// `VFIO_IOMMU_MAP_DMA` + `VFIO_IOMMU_UNMAP_DMA` on the same container.
fn map_unmap(device: &Device, clock: &Clock, plan: Plan) -> Result<Row> {
    let page = PageMemory::new(PAGE)?;
    let domain = device
        .domain()
        .ok_or("the raw baselines need the device on VFIO (bind it to vfio-pci)")?;
    let container = domain.container().as_fd();
    let n = plan.map_pairs;
    let mut samples: [Vec<f64>; 2] = Default::default();
    for round in 0..plan.map_rounds {
        for which in order(round) {
            let t = clock.now();
            if which == 0 {
                for _ in 0..n {
                    // A lent buffer: mapped, then unmapped before the call returns.
                    device.with_dma_to_device(page.as_slice(), |mapping| {
                        black_box(mapping);
                    })?;
                }
            } else {
                let vaddr = page.as_slice().as_ptr() as usize;
                for _ in 0..n {
                    raw::map_dma(
                        container,
                        vaddr,
                        RAW_IOVA,
                        PAGE as u64,
                        VFIO_DMA_MAP_FLAG_READ,
                    )?;
                    let unmapped = raw::unmap_dma(container, RAW_IOVA, PAGE as u64)?;
                    if unmapped != PAGE as u64 {
                        return Err(format!("raw unmap: {unmapped} of {PAGE} bytes").into());
                    }
                }
            }
            samples[which].push(clock.ns_since(t) / n as f64 / 1000.0);
        }
    }
    let (api, raw) = (median(&samples[0]), median(&samples[1]));
    Ok(Row::compared(
        "map_unmap_4k",
        "map + unmap 4 KiB (per pair)",
        "us",
        api,
        raw,
    )
    .ratio_at_most(1.10)
    .note(format!(
        "the API adds {:.2} µs per pair to the same two ioctls",
        api - raw
    ))
    .extra(json!({"rounds": plan.map_rounds, "pairs_per_round": n})))
}

/// `/proc/self/io`'s counts of read-like and write-like system calls.
fn syscall_counts() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some((field("syscr:")?, field("syscw:")?))
}

/// Taking a 4 KiB chunk from a pool and giving it back.
fn pool(device: &Device, clock: &Clock, plan: Plan) -> Result<Row> {
    let pool = device.dma_pool(PAGE, 64)?;
    let n = plan.pool_pairs;
    let mut samples = Vec::new();
    for _ in 0..plan.pool_rounds {
        let t = clock.now();
        for _ in 0..n {
            let buffer = pool.alloc()?;
            drop(black_box(buffer));
        }
        samples.push(clock.ns_since(t) / n as f64);
    }
    // Each pair timed on its own too (the ~20 ns of reading the TSC included).
    let mut single = Vec::with_capacity(n);
    for _ in 0..n {
        let t = clock.now();
        let buffer = pool.alloc()?;
        drop(black_box(buffer));
        single.push(clock.ns_since(t));
    }
    let (p50, p99) = (percentile(&single, 0.5), percentile(&single, 0.99));
    // System calls during a burst, less those of reading the counters.
    let burst = 100_000;
    let (a, b) = (syscall_counts(), syscall_counts());
    for _ in 0..burst {
        drop(black_box(pool.alloc()?));
    }
    let c = syscall_counts();
    let counted = match (a, b, c) {
        (Some(a), Some(b), Some(c)) => {
            let reading = (b.0 - a.0) + (b.1 - a.1);
            Some(((c.0 - b.0) + (c.1 - b.1)).saturating_sub(reading))
        }
        _ => None,
    };
    let api = median(&samples);
    let mut row = Row::single("pool_4k", "pool alloc + free 4 KiB (per pair)", "ns", api).note(
        format!("timed one pair at a time: p50 {p50:.0} ns, p99 {p99:.0} ns"),
    );
    row.target = Some("median <= 1000 ns".to_string());
    row.pass = Some(api <= 1000.0);
    let note = match counted {
        Some(0) => format!(
            "no system call by construction (a mutex and a free list); checked: 0 read/write system calls in {burst} pairs (/proc/self/io syscr+syscw)"
        ),
        Some(k) => format!(
            "expected no system call (a mutex and a free list), but /proc/self/io counted {k} read/write system calls in {burst} pairs"
        ),
        None => "no system call by construction (a mutex and a free list); /proc/self/io unavailable, not checked".to_string(),
    };
    Ok(row.note(note).extra(json!({
        "rounds": plan.pool_rounds,
        "pairs_per_round": n,
        "syscalls_in_burst": counted,
        "burst": burst,
        "single_p50_ns": p50,
        "single_p99_ns": p99,
    })))
}

/// 16 MiB mapped for the device in one `map_dma` call or in 4096 calls of
/// 4 KiB, then unmapped.
fn map_16m(device: &Device, clock: &Clock, plan: Plan) -> Result<[Row; 2]> {
    // 4096 mappings held at once need memory that outlives them whatever
    // happens: `'static` (16 MiB, kept for the rest of the bench).
    let memory: &'static PageMemory = Box::leak(Box::new(PageMemory::new(BIG)?));
    let mut map_ns: [Vec<f64>; 2] = Default::default();
    let mut unmap_ns: [Vec<f64>; 2] = Default::default();
    for round in 0..plan.big_rounds {
        for which in order(round) {
            if which == 0 {
                let t = clock.now();
                let mapping = device.map_dma(memory.as_slice(), Direction::ToDevice)?;
                map_ns[0].push(clock.ns_since(t));
                let t = clock.now();
                mapping.unmap()?;
                unmap_ns[0].push(clock.ns_since(t));
            } else {
                let mut mappings = Vec::with_capacity(BIG / PAGE);
                let t = clock.now();
                for chunk in memory.as_slice().chunks(PAGE) {
                    mappings.push(device.map_dma(chunk, Direction::ToDevice)?);
                }
                map_ns[1].push(clock.ns_since(t));
                let t = clock.now();
                for mapping in mappings {
                    mapping.unmap()?;
                }
                unmap_ns[1].push(clock.ns_since(t));
            }
        }
    }
    let ms = |v: &[f64]| median(v) / 1e6;
    let total = |i: usize| {
        let sums: Vec<f64> = map_ns[i]
            .iter()
            .zip(&unmap_ns[i])
            .map(|(a, b)| a + b)
            .collect();
        median(&sums) / 1e6
    };
    let (one, many) = (total(0), total(1));
    let one_row = Row::single("map_16m_one_call", "map + unmap 16 MiB, 1 call", "ms", one).extra(
        json!({"rounds": plan.big_rounds, "map_ms": ms(&map_ns[0]), "unmap_ms": ms(&unmap_ns[0])}),
    );
    let mut many_row = Row::single(
        "map_16m_4k_calls",
        "map + unmap 16 MiB, 4096 x 4 KiB calls",
        "ms",
        many,
    )
    .extra(json!({
        "rounds": plan.big_rounds,
        "map_ms": ms(&map_ns[1]),
        "unmap_ms": ms(&unmap_ns[1]),
        "one_call_ms": one,
    }));
    many_row.ratio = Some(many / one);
    many_row.ratio_label = Some("vs 1 call");
    let split = |i: usize| {
        format!(
            "map {:.1} ms, unmap {:.1} ms (medians of {} rounds)",
            ms(&map_ns[i]),
            ms(&unmap_ns[i]),
            plan.big_rounds
        )
    };
    Ok([one_row.note(split(0)), many_row.note(split(1))])
}

// ---------------------------------------------------------------- interrupts

/// Routes the edu's MSI to `cpu` (best effort; the kernel may refuse), so the
/// API and the raw runs get their interrupt on the same CPU. Returns the IRQ.
fn steer_irq(address: PciAddress, cpu: usize) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/interrupts").ok()?;
    let name = address.to_string();
    let irq = table
        .lines()
        .find(|l| l.contains("vfio-msi") && l.contains(&name))?
        .split(':')
        .next()?
        .trim()
        .parse::<u32>()
        .ok()?;
    std::fs::write(
        format!("/proc/irq/{irq}/smp_affinity_list"),
        cpu.to_string(),
    )
    .ok()?;
    Some(irq)
}

/// Latency samples and anomalies of one contender.
#[derive(Debug, Default)]
struct Wakeups {
    ns: Vec<f64>,
    timeouts: u64,
    extra_counts: u64,
}

impl Wakeups {
    fn record(&mut self, ns: f64, count: Option<u64>) {
        match count {
            Some(c) => {
                self.ns.push(ns);
                self.extra_counts += c.saturating_sub(1);
            }
            None => self.timeouts += 1,
        }
    }
}

/// Where the interrupt is delivered relative to the waiting thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IrqPlacement {
    /// On the waiter's CPU: under TCG the MSI lands while the register write
    /// completes, so it is pending before the wait starts.
    SameCpu,
    /// On another CPU: the waiter goes to sleep and the interrupt wakes it.
    OtherCpu,
}

impl IrqPlacement {
    fn cpu(self) -> usize {
        match self {
            Self::SameCpu => BENCH_CPU,
            Self::OtherCpu => BENCH_CPU + 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::SameCpu => "same CPU",
            Self::OtherCpu => "other CPU",
        }
    }

    fn key_suffix(self) -> &'static str {
        match self {
            Self::SameCpu => "",
            Self::OtherCpu => "_other_cpu",
        }
    }
}

/// From just before the MMIO write that makes edu raise its MSI to the return
/// of the wait: `Interrupts::wait` (with a timeout, and without) against a
/// blocking `read` of an eventfd attached by hand to the same vector, each
/// interrupt acknowledged before the next.
fn msi_latency(edu: &Edu, clock: &Clock, plan: Plan, placement: IrqPlacement) -> Result<Vec<Row>> {
    let irq_cpu = placement.cpu();
    let device = edu.device();
    let address = device.address();
    let vfio = vfio_of(device)?;
    let region = vfio.region_info(0)?;
    let raw_bar = RawBar::map(vfio.as_fd(), region.offset, usize::try_from(region.size)?)?;
    let raise = raw_bar
        .reg32(regs::IRQ_RAISE.offset() as usize)
        .ok_or("IRQ_RAISE outside BAR 0")?;
    let ack = raw_bar
        .reg32(regs::IRQ_ACK.offset() as usize)
        .ok_or("IRQ_ACK outside BAR 0")?;
    let timeouts = [Some(IRQ_TIMEOUT), None];
    let mut api: [Wakeups; 2] = Default::default();
    let mut base = Wakeups::default();
    let mut steered = true;
    let warmup = 20;
    for round in 0..plan.msi_rounds {
        // Three contenders, rotated so each goes first as often as the others.
        for k in 0..3 {
            match (round + k) % 3 {
                which @ (0 | 1) => {
                    let irqs = device.enable_interrupts(IrqKind::Msi, 1)?;
                    steered &= steer_irq(address, irq_cpu).is_some();
                    let timeout = timeouts[which];
                    for i in 0..warmup + plan.msi_per_round {
                        let t = clock.now();
                        edu.trigger_interrupt(BENCH_IRQ)?;
                        let count = irqs.wait(0, timeout)?;
                        let ns = clock.ns_since(t);
                        edu.acknowledge(BENCH_IRQ)?;
                        if i >= warmup {
                            api[which].record(ns, count);
                        }
                    }
                    drop(irqs);
                }
                _ => {
                    let irq = RawIrq::enable(vfio_of(device)?.as_fd(), VFIO_PCI_MSI_IRQ_INDEX)?;
                    steered &= steer_irq(address, irq_cpu).is_some();
                    with_watchdog(&irq, |progress| {
                        for i in 0..warmup + plan.msi_per_round {
                            progress.store(i as u64, Ordering::Relaxed);
                            let t = clock.now();
                            raise.write(BENCH_IRQ);
                            let count = irq.read()?;
                            let ns = clock.ns_since(t);
                            ack.write(BENCH_IRQ);
                            if i >= warmup {
                                // A watchdog poke is a lost interrupt, not a wake-up.
                                let count = (count < WATCHDOG_POKE).then_some(count);
                                base.record(ns, count);
                            }
                        }
                        Ok(())
                    })?;
                    drop(irq);
                }
            }
        }
    }
    // How often the interrupt is already there just after the register write
    // (a zero-timeout poll, itself a system call later): whether waiters sleep.
    let probes = 2000;
    let pending = {
        let irqs = device.enable_interrupts(IrqKind::Msi, 1)?;
        steer_irq(address, irq_cpu);
        let mut pending = 0u32;
        for _ in 0..probes {
            edu.trigger_interrupt(BENCH_IRQ)?;
            pending += u32::from(raw::readable(irqs.fd(0)?)?);
            irqs.wait(0, Some(IRQ_TIMEOUT))?;
            edu.acknowledge(BENCH_IRQ)?;
        }
        f64::from(pending) / f64::from(probes) * 100.0
    };
    let extra = |w: &Wakeups| {
        json!({
            "rounds": plan.msi_rounds,
            "wakeups_per_round": plan.msi_per_round,
            "samples": w.ns.len(),
            "p10_us": percentile(&w.ns, 0.1) / 1000.0,
            "p90_us": percentile(&w.ns, 0.9) / 1000.0,
            "timeouts": w.timeouts,
            "coalesced": w.extra_counts,
            "irq_steered_to_cpu": steered.then_some(irq_cpu),
        })
    };
    let us = |w: &Wakeups, p: f64| percentile(&w.ns, p) / 1000.0;
    let mut rows = Vec::new();
    let keys = |pname: &str, which: usize| {
        let variant = ["", "_no_timeout"][which];
        format!("msi_wake_{pname}{variant}{}", placement.key_suffix())
    };
    for (which, label) in [(0, "wait with timeout"), (1, "wait without timeout")] {
        for (p, pname) in [(0.5, "p50"), (0.99, "p99")] {
            let mut row = Row::compared(
                keys(pname, which),
                &format!("MSI wake-up {pname} ({}; {label})", placement.label()),
                "us",
                us(&api[which], p),
                us(&base, p),
            )
            .ratio_at_most(1.2)
            .extra(json!({
                "api_detail": extra(&api[which]),
                "raw_detail": extra(&base),
                "pending_at_wait_percent": pending,
            }));
            if which == 0 && pname == "p50" {
                row = row.note(format!(
                    "a zero-timeout poll right after the register write found the interrupt pending in {pending:.1}% of {probes} probes; {:+.2} µs against the same wait without a timeout",
                    us(&api[0], p) - us(&api[1], p)
                ));
            }
            if api[which].timeouts + base.timeouts > 0 {
                row = row.note(format!(
                    "{} API and {} raw wake-ups missed the {IRQ_TIMEOUT:?} timeout",
                    api[which].timeouts, base.timeouts
                ));
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// What the watchdog adds to the eventfd to end a read that no interrupt ends.
const WATCHDOG_POKE: u64 = 1 << 40;

/// Runs `body` while a watchdog thread ends a blocking read of `irq` when
/// `body` made no progress (it stores its iteration count in the counter it
/// gets) for a whole [`IRQ_TIMEOUT`]: a lost interrupt then costs a sample,
/// not a hung benchmark.
fn with_watchdog(irq: &RawIrq<'_>, body: impl FnOnce(&AtomicU64) -> Result<()>) -> Result<()> {
    let done = AtomicBool::new(false);
    let progress = AtomicU64::new(0);
    std::thread::scope(|s| {
        let watchdog = s.spawn(|| {
            let mut seen = u64::MAX;
            while !done.load(Ordering::Relaxed) {
                std::thread::park_timeout(IRQ_TIMEOUT);
                let now = progress.load(Ordering::Relaxed);
                if !done.load(Ordering::Relaxed) && now == seen {
                    let _ = irq.poke(WATCHDOG_POKE);
                }
                seen = now;
            }
        });
        let result = body(&progress);
        done.store(true, Ordering::Relaxed);
        watchdog.thread().unpark();
        result
    })
}

/// 100,000 interrupts through the edu driver's own interrupt handling, each
/// waited for with a timeout and acknowledged: none may be lost.
fn msi_flood(edu: &mut Edu, plan: Plan, cpus: usize) -> Result<Row> {
    edu.enable_interrupts(IrqKind::Msi)?;
    // On another CPU when there is one, so that every wait really sleeps and
    // is woken: a lost wake-up would show there.
    let placement = if cpus > 1 {
        IrqPlacement::OtherCpu
    } else {
        IrqPlacement::SameCpu
    };
    let steered = steer_irq(edu.device().address(), placement.cpu()).is_some();
    let irqs = edu.interrupts().ok_or("interrupts not enabled")?;
    let n = plan.msi_flood as u64;
    let (mut ones, mut sum, mut timeouts) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for _ in 0..n {
        edu.trigger_interrupt(BENCH_IRQ)?;
        match irqs.wait(0, Some(IRQ_TIMEOUT))? {
            Some(count) => {
                sum += count;
                ones += u64::from(count == 1);
            }
            None => timeouts += 1,
        }
        edu.acknowledge(BENCH_IRQ)?;
    }
    let elapsed = start.elapsed();
    // Anything that arrived after its wait timed out.
    let late = irqs.try_wait(0)?.unwrap_or(0);
    let delivered = sum + late;
    let ok = timeouts == 0 && ones == n && delivered == n;
    let mut row = Row::single(
        "msi_100k",
        &format!("{n} MSIs raised, waited for and acknowledged (total)"),
        "s",
        elapsed.as_secs_f64(),
    );
    row.target = Some("no lost wake-up".to_string());
    row.pass = Some(ok);
    let each = elapsed.as_secs_f64() * 1e6 / n as f64;
    Ok(row
        .note(format!(
            "{ones} of {n} waits returned Some(1); {timeouts} timed out ({IRQ_TIMEOUT:?}); counts summed to {delivered}; {each:.1} µs per interrupt; interrupt {} the waiter's",
            if placement == IrqPlacement::OtherCpu && steered {
                "on another CPU than"
            } else {
                "on the CPU of"
            }
        ))
        .extra(json!({
            "raised": n,
            "waits_returning_one": ones,
            "timeouts": timeouts,
            "delivered": delivered,
            "us_per_interrupt": each,
            "irq_steered_to_cpu": steered.then_some(placement.cpu()),
        })))
}
