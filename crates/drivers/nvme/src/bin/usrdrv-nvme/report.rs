//! What `usrdrv-nvme perf` measures and prints, whichever side drove the
//! I/O: a cheap clock, per-queue tallies, and the report (text or JSON).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::perf::Pattern;

/// A time-stamp counter calibrated against the monotonic clock over the run.
///
/// Under emulation `clock_gettime` can cost a microsecond (an HPET clock
/// source); the TSC costs a few nanoseconds, so latencies are stamped with
/// it and converted to nanoseconds once, at the end.
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    start_ticks: u64,
    start: Instant,
}

impl Ticks {
    /// Starts the calibration interval.
    pub fn start() -> Self {
        Self {
            start_ticks: now(),
            start: Instant::now(),
        }
    }

    /// Nanoseconds per tick, measured from [`Ticks::start`] to now.
    pub fn ns_per_tick(&self) -> f64 {
        let ticks = now().wrapping_sub(self.start_ticks).max(1);
        self.start.elapsed().as_nanos() as f64 / ticks as f64
    }
}

/// The time-stamp counter (a monotonic clock on every x86-64 machine this
/// tool targets), or nanoseconds from the monotonic clock elsewhere.
#[inline(always)]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions: it reads a counter and
        // touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// What one queue's thread measured.
#[derive(Debug, Default)]
pub struct Tally {
    /// Commands completed successfully.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Latency of every completed command, in ticks of [`now`].
    pub latencies: Vec<u64>,
    /// Doorbell registers the queue wrote (this crate's driver only).
    pub doorbell_writes: u64,
    /// Ticks of [`now`] the thread spent waiting for a completion with
    /// nothing else to do (this crate's driver only): polled, spinning;
    /// on interrupts, mostly asleep.
    pub waiting_ticks: u64,
    /// Ticks of [`now`] spent ringing submission doorbells (this crate's
    /// driver only): under emulation a register write can wait for the
    /// emulator's own lock.
    pub ring_ticks: u64,
    /// The doorbell registers those rings wrote.
    pub ring_writes: u64,
}

/// The report (schema `usrdrv-nvme.perf/1`), the same for both sides.
#[derive(Debug, Serialize)]
pub struct Report {
    schema: &'static str,
    /// The controller's PCI address, or the block device's path.
    address: String,
    /// `usrdrv` (this crate's driver) or `kernel` (a block device through io_uring).
    driver: &'static str,
    pattern: Pattern,
    queue_depth: u16,
    io_size: usize,
    queues: u16,
    /// `poll` or `interrupt`.
    completions: &'static str,
    seconds: f64,
    ios: u64,
    iops: f64,
    mib_per_s: f64,
    latency_us: Latency,
    /// CPU time of this process (user + system) per completed command.
    cpu_us_per_io: f64,
    /// This crate's driver only: whether its queues used shadow doorbells,
    /// and the doorbell registers they wrote per completed command.
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow_doorbells: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    doorbell_writes_per_io: Option<f64>,
    /// This crate's driver only: the time its queues' threads spent waiting
    /// for the controller with nothing else to do, as a share of their time
    /// and per completed command (polled, that is spinning: CPU time the
    /// driver's own work did not need).
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_share: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_us_per_io: Option<f64>,
    /// This crate's driver only: the time spent ringing submission queue
    /// doorbells (register writes), per completed command.
    #[serde(skip_serializing_if = "Option::is_none")]
    tail_doorbell_us_per_io: Option<f64>,
    /// This crate's driver only: the time one submission doorbell write took
    /// on average.
    #[serde(skip_serializing_if = "Option::is_none")]
    tail_doorbell_us_each: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
}

/// What the run was, for the report's header fields.
#[derive(Debug)]
pub struct RunShape<'a> {
    /// The controller's address or the block device.
    pub address: String,
    /// `usrdrv` or `kernel`.
    pub driver: &'static str,
    /// `poll` or `interrupt`.
    pub completions: &'static str,
    /// Whether the queues used shadow doorbells (`None` for the kernel's driver).
    pub shadow_doorbells: Option<bool>,
    /// The command line's arguments.
    pub args: &'a crate::perf::PerfArgs,
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF is valid.
    let ret = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if ret != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

impl Report {
    /// Sums the queues' tallies into a report.
    pub fn new(
        shape: &RunShape<'_>,
        tallies: Vec<Tally>,
        elapsed: Duration,
        cpu: Duration,
        ns_per_tick: f64,
    ) -> Self {
        let elapsed = elapsed.as_secs_f64().max(1e-9);
        let mut total = Tally::default();
        for tally in tallies {
            total.ios += tally.ios;
            total.bytes += tally.bytes;
            total.doorbell_writes += tally.doorbell_writes;
            total.waiting_ticks += tally.waiting_ticks;
            total.ring_ticks += tally.ring_ticks;
            total.ring_writes += tally.ring_writes;
            total.latencies.extend(tally.latencies);
        }
        total.latencies.sort_unstable();
        let us = |ticks: u64| ticks as f64 * ns_per_tick / 1000.0;
        let pct = |p: f64| {
            let n = total.latencies.len();
            if n == 0 {
                return 0.0;
            }
            let i = ((p / 100.0) * (n - 1) as f64).round() as usize;
            us(total.latencies[i.min(n - 1)])
        };
        let args = shape.args;
        // Waiting is measured for this crate's driver only (it has the
        // shadow-doorbell field too).
        let ours = shape.shadow_doorbells.is_some();
        let waiting_s = us(total.waiting_ticks) / 1e6;
        Self {
            schema: "usrdrv-nvme.perf/1",
            address: shape.address.clone(),
            driver: shape.driver,
            pattern: args.pattern,
            queue_depth: args.queue_depth,
            io_size: args.io_size,
            queues: args.queues,
            completions: shape.completions,
            seconds: elapsed,
            ios: total.ios,
            iops: total.ios as f64 / elapsed,
            mib_per_s: total.bytes as f64 / elapsed / f64::from(1 << 20),
            latency_us: Latency {
                p50: pct(50.0),
                p90: pct(90.0),
                p99: pct(99.0),
                p99_9: pct(99.9),
                max: total.latencies.last().map_or(0.0, |&l| us(l)),
            },
            cpu_us_per_io: if total.ios == 0 {
                0.0
            } else {
                cpu.as_secs_f64() * 1e6 / total.ios as f64
            },
            shadow_doorbells: shape.shadow_doorbells,
            doorbell_writes_per_io: shape
                .shadow_doorbells
                .map(|_| total.doorbell_writes as f64 / total.ios.max(1) as f64),
            waiting_share: ours
                .then(|| (waiting_s / (elapsed * f64::from(args.queues.max(1)))).min(1.0)),
            waiting_us_per_io: ours.then(|| waiting_s * 1e6 / total.ios.max(1) as f64),
            tail_doorbell_us_per_io: ours.then(|| us(total.ring_ticks) / total.ios.max(1) as f64),
            tail_doorbell_us_each: (ours && total.ring_writes > 0)
                .then(|| us(total.ring_ticks) / total.ring_writes as f64),
        }
    }

    /// Prints the report as text or as one JSON document.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
            return;
        }
        println!(
            "{} ({}) {:?} {} B, QD {} x {} queue(s), {}, {:.1} s: {:.0} IOPS, {:.1} MiB/s",
            self.address,
            self.driver,
            self.pattern,
            self.io_size,
            self.queue_depth,
            self.queues,
            self.completions,
            self.seconds,
            self.iops,
            self.mib_per_s
        );
        let l = &self.latency_us;
        println!(
            "  latency (us): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max
        );
        println!("  CPU time per I/O: {:.2} us", self.cpu_us_per_io);
        if let (Some(shadow), Some(writes)) = (self.shadow_doorbells, self.doorbell_writes_per_io) {
            let how = if shadow {
                "shadow doorbells"
            } else {
                "doorbell registers only"
            };
            println!("  doorbell register writes per I/O: {writes:.3} ({how})");
        }
        if let (Some(share), Some(per_io)) = (self.waiting_share, self.waiting_us_per_io) {
            println!(
                "  waiting for the controller: {:.1}% of the queues' time, {per_io:.2} us per I/O",
                share * 100.0
            );
        }
        if let Some(per_io) = self.tail_doorbell_us_per_io {
            let each = self
                .tail_doorbell_us_each
                .map_or(String::new(), |each| format!(" ({each:.1} us a write)"));
            println!("  ringing submission doorbells: {per_io:.2} us per I/O{each}");
        }
    }
}

/// Prints a progress line for the first queue, once a second, on a terminal.
#[derive(Debug)]
pub struct Progress {
    on: bool,
    start: Instant,
    last: Instant,
}

impl Progress {
    /// A progress line that is printed only when `on`.
    pub fn new(on: bool) -> Self {
        let now = Instant::now();
        Self {
            on,
            start: now,
            last: now,
        }
    }

    /// Called every so many completions with the queue's count so far.
    pub fn update(&mut self, ios: u64) {
        if !self.on || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64();
        eprint!(
            "\r{secs:>4.0} s  {:>10.0} IOPS (queue 1)",
            ios as f64 / secs
        );
    }
}
