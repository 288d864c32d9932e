//! `usrdrv-nvme perf`: queued I/O for a while, then IOPS, bandwidth,
//! latency percentiles and CPU time per I/O, in the spirit of
//! `spdk_nvme_perf` and fio.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde::Serialize;
use usrdrv::dma::PoolBuffer;
use usrdrv::pci::PciAddress;
use usrdrv_nvme::{Controller, IoQueue, Namespace, Op};

use crate::{ToolError, namespace};

/// The I/O pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random reads and writes, `--mix` percent reads.
    Rw,
}

/// Arguments of `usrdrv-nvme perf`.
#[derive(Debug, clap::Args)]
pub struct PerfArgs {
    /// The controller, DDDD:BB:DD.F.
    address: PciAddress,
    /// Commands kept in flight on each queue.
    #[arg(long, default_value_t = 32)]
    queue_depth: u16,
    /// Bytes per command (a multiple of the block size).
    #[arg(long, default_value_t = 4096)]
    io_size: usize,
    /// The access pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pattern: Pattern,
    /// With `--pattern rw`: the percentage of reads.
    #[arg(long, default_value_t = 70)]
    mix: u8,
    /// I/O queue pairs, one thread each.
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    time: u64,
    /// The namespace.
    #[arg(long, default_value_t = 1)]
    namespace: u32,
    /// Wait for completions by polling the completion queue (the default).
    #[arg(long)]
    poll: bool,
    /// Wait for completions on each queue's own MSI-X vector instead.
    #[arg(long, conflicts_with = "poll")]
    interrupt: bool,
}

/// What one queue's thread measured.
#[derive(Debug, Default)]
struct Tally {
    ios: u64,
    bytes: u64,
    /// Latency of every completed command, in nanoseconds.
    latencies: Vec<u64>,
}

/// The report (schema `usrdrv-nvme.perf/1`).
#[derive(Debug, Serialize)]
struct Report {
    schema: &'static str,
    address: String,
    pattern: Pattern,
    queue_depth: u16,
    io_size: usize,
    queues: u16,
    completions: &'static str,
    seconds: f64,
    ios: u64,
    iops: f64,
    mib_per_s: f64,
    latency_us: Latency,
    cpu_us_per_io: f64,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
}

/// A small fast random number generator (xorshift64*), seeded per queue.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
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

/// Runs `usrdrv-nvme perf`.
pub fn run(args: &PerfArgs, json: bool) -> Result<(), ToolError> {
    let mut c = Controller::open(args.address)?;
    let ns = namespace(&mut c, args.namespace)?;
    if args.io_size == 0
        || !args.io_size.is_multiple_of(ns.block_size)
        || args.io_size > c.max_transfer()
    {
        return Err(ToolError::Usage(format!(
            "--io-size must be a multiple of the {}-byte block, at most {} bytes",
            ns.block_size,
            c.max_transfer()
        )));
    }
    if args.queues == 0 || args.queues > c.io_queue_count() {
        return Err(ToolError::Usage(format!(
            "--queues must be 1 to {} (what the controller grants)",
            c.io_queue_count()
        )));
    }
    let mut work = Vec::new();
    for _ in 0..args.queues {
        let depth = args.queue_depth.saturating_add(1);
        let queue = if args.interrupt {
            c.io_queue_with_interrupts::<PoolBuffer>(depth)?
        } else {
            c.io_queue_for::<PoolBuffer>(depth)?
        };
        let depth = queue.capacity();
        let pool = c.device().dma_pool(args.io_size, depth)?;
        work.push((queue, pool));
    }
    let duration = Duration::from_secs(args.time.max(1));
    let cpu_before = cpu_time();
    let start = Instant::now();
    let progress = !json && std::io::stderr().is_terminal();
    let tallies: Vec<Result<Tally, ToolError>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .enumerate()
            .map(|(i, (queue, pool))| {
                s.spawn(move || {
                    drive(
                        queue,
                        &pool,
                        &ns,
                        args,
                        duration,
                        i as u64 + 1,
                        progress && i == 0,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ToolError::Usage("a queue's thread panicked".into())))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    let mut total = Tally::default();
    for tally in tallies {
        let tally = tally?;
        total.ios += tally.ios;
        total.bytes += tally.bytes;
        total.latencies.extend(tally.latencies);
    }
    total.latencies.sort_unstable();
    let pct = |p: f64| {
        let n = total.latencies.len();
        if n == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * (n - 1) as f64).round() as usize;
        total.latencies[i.min(n - 1)] as f64 / 1000.0
    };
    let report = Report {
        schema: "usrdrv-nvme.perf/1",
        address: args.address.to_string(),
        pattern: args.pattern,
        queue_depth: args.queue_depth,
        io_size: args.io_size,
        queues: args.queues,
        completions: if args.interrupt { "interrupt" } else { "poll" },
        seconds: elapsed,
        ios: total.ios,
        iops: total.ios as f64 / elapsed,
        mib_per_s: total.bytes as f64 / elapsed / f64::from(1 << 20),
        latency_us: Latency {
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            p99_9: pct(99.9),
            max: total.latencies.last().map_or(0.0, |&l| l as f64 / 1000.0),
        },
        cpu_us_per_io: if total.ios == 0 {
            0.0
        } else {
            cpu * 1e6 / total.ios as f64
        },
    };
    if progress {
        eprintln!();
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "{} {:?} {} B, QD {} x {} queue(s), {}, {:.1} s: {:.0} IOPS, {:.1} MiB/s",
            report.address,
            report.pattern,
            report.io_size,
            report.queue_depth,
            report.queues,
            report.completions,
            report.seconds,
            report.iops,
            report.mib_per_s
        );
        let l = &report.latency_us;
        println!(
            "  latency (us): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max
        );
        println!("  CPU time per I/O: {:.2} us", report.cpu_us_per_io);
    }
    Ok(())
}

/// One queue's loop: keep it full until `duration` is over, then drain.
fn drive(
    mut queue: IoQueue<PoolBuffer>,
    pool: &usrdrv::dma::DmaPool,
    ns: &Namespace,
    args: &PerfArgs,
    duration: Duration,
    seed: u64,
    progress: bool,
) -> Result<Tally, ToolError> {
    let blocks = ns.blocks_in(args.io_size);
    let slots = ns.blocks / u64::from(blocks.max(1));
    let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut sequential = 0u64;
    let mut submitted_at = std::collections::HashMap::with_capacity(queue.capacity());
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut last_progress = start;
    let mut tag = 0u64;
    loop {
        let running = start.elapsed() < duration;
        while running && queue.in_flight() < queue.capacity() {
            let buffer = pool.alloc()?;
            let (op, slot) = match args.pattern {
                Pattern::Read | Pattern::Write => {
                    sequential = (sequential + 1) % slots.max(1);
                    let op = if args.pattern == Pattern::Read {
                        Op::Read
                    } else {
                        Op::Write
                    };
                    (op, sequential)
                }
                Pattern::Randread => (Op::Read, random.next() % slots.max(1)),
                Pattern::Randwrite => (Op::Write, random.next() % slots.max(1)),
                Pattern::Rw => {
                    let op = if random.next() % 100 < u64::from(args.mix) {
                        Op::Read
                    } else {
                        Op::Write
                    };
                    (op, random.next() % slots.max(1))
                }
            };
            submitted_at.insert(tag, Instant::now());
            queue
                .submit(op, ns, slot * u64::from(blocks), blocks, buffer, tag)
                .map_err(|rejected| ToolError::Nvme(rejected.error))?;
            tag += 1;
        }
        if queue.in_flight() == 0 {
            break;
        }
        let done = queue.wait()?;
        if let Some(at) = submitted_at.remove(&done.tag) {
            tally.latencies.push(at.elapsed().as_nanos() as u64);
        }
        done.result?;
        tally.ios += 1;
        tally.bytes += args.io_size as u64;
        if progress && last_progress.elapsed() > Duration::from_secs(1) {
            last_progress = Instant::now();
            eprint!(
                "\r{:>4.0} s  {:>10.0} IOPS (queue 1)",
                start.elapsed().as_secs_f64(),
                tally.ios as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(tally)
}
