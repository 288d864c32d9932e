//! `usrdrv-nvme perf`: queued I/O for a while, then IOPS, bandwidth,
//! latency percentiles and CPU time per I/O, in the spirit of
//! `spdk_nvme_perf` and fio. The target is a controller (driven by this
//! crate's driver) or a block device (driven by the kernel, through
//! io_uring with `O_DIRECT`: see [`crate::kernel`]), so one load generator
//! measures both sides.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use usrdrv::dma::PoolBuffer;
use usrdrv::pci::PciAddress;
use usrdrv_nvme::{Controller, ControllerOptions, IoQueue, Namespace, Op};

use crate::report::{self, Progress, Report, RunShape, Tally, Ticks};
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

/// What `perf` drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A controller bound to vfio-pci or usrdma: this crate's driver.
    Controller(PciAddress),
    /// A block device (`/dev/nvme0n1`): the kernel's driver, through io_uring.
    Block(PathBuf),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with('/') {
            return Ok(Self::Block(PathBuf::from(s)));
        }
        s.parse::<PciAddress>()
            .map(Self::Controller)
            .map_err(|e| format!("{e} (or give a block device's path, such as /dev/nvme0n1)"))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Controller(a) => write!(f, "{a}"),
            Self::Block(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Arguments of `usrdrv-nvme perf`.
#[derive(Debug, clap::Args)]
pub struct PerfArgs {
    /// The controller, DDDD:BB:DD.F; or a block device such as /dev/nvme0n1
    /// to measure the kernel's driver through io_uring with O_DIRECT.
    #[arg(value_name = "ADDR|BLOCKDEV")]
    pub target: Target,
    /// Commands kept in flight on each queue.
    #[arg(long, default_value_t = 32)]
    pub queue_depth: u16,
    /// Bytes per command (a multiple of the block size).
    #[arg(long, default_value_t = 4096)]
    pub io_size: usize,
    /// The access pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    pub pattern: Pattern,
    /// With `--pattern rw`: the percentage of reads.
    #[arg(long, default_value_t = 70)]
    pub mix: u8,
    /// I/O queue pairs (io_uring instances on a block device), one thread each.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub time: u64,
    /// The namespace (controllers only).
    #[arg(long, default_value_t = 1)]
    pub namespace: u32,
    /// Wait for completions by polling: the completion queue (the default on
    /// a controller), or the kernel's polled queues on a block device
    /// (IORING_SETUP_IOPOLL, as fio's --hipri; needs nvme.poll_queues).
    #[arg(long)]
    pub poll: bool,
    /// Wait for completions on each queue's own MSI-X vector (the default on
    /// a block device).
    #[arg(long, conflicts_with = "poll")]
    pub interrupt: bool,
    /// Use shadow doorbells where the controller offers them (controllers
    /// only; see `ControllerOptions::shadow_doorbells`).
    #[arg(long)]
    pub shadow_doorbells: bool,
    /// Ring the submission doorbell after every N commands of a refill, so
    /// the controller starts on the first ones while the rest are written
    /// (controllers only). The default is half the queue depth; the queue
    /// depth itself rings once per refill.
    #[arg(long, value_name = "N")]
    pub ring_every: Option<usize>,
}

impl PerfArgs {
    /// Commands queued between two submission doorbells (`--ring-every`).
    pub fn ring_every(&self) -> usize {
        self.ring_every
            .unwrap_or(usize::from(self.queue_depth) / 2)
            .max(1)
    }

    /// The run's length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.time.max(1))
    }

    /// Whether to print a progress line.
    pub fn progress(&self, json: bool) -> bool {
        !json && std::io::stderr().is_terminal()
    }
}

/// Which way one command moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Into memory.
    Read,
    /// Out of memory.
    Write,
}

/// The stream of commands one queue issues: direction and slot (the
/// command's index in units of `--io-size`).
#[derive(Debug)]
pub struct Workload {
    pattern: Pattern,
    mix: u8,
    slots: u64,
    next_slot: u64,
    random: u64,
}

impl Workload {
    /// The workload of queue `index` (0-based) of `queues`, over `slots`
    /// commands' worth of blocks. Sequential patterns start each queue at
    /// its own share of the device, from slot 0 for the first.
    pub fn new(args: &PerfArgs, slots: u64, index: u16) -> Self {
        let slots = slots.max(1);
        let start = slots / u64::from(args.queues.max(1)) * u64::from(index);
        Self {
            pattern: args.pattern,
            mix: args.mix,
            slots,
            next_slot: start % slots,
            random: (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// xorshift64*.
    fn random(&mut self) -> u64 {
        self.random ^= self.random >> 12;
        self.random ^= self.random << 25;
        self.random ^= self.random >> 27;
        self.random.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next command.
    pub fn next(&mut self) -> (Dir, u64) {
        match self.pattern {
            Pattern::Read | Pattern::Write => {
                let slot = self.next_slot;
                self.next_slot = (self.next_slot + 1) % self.slots;
                let dir = if self.pattern == Pattern::Read {
                    Dir::Read
                } else {
                    Dir::Write
                };
                (dir, slot)
            }
            Pattern::Randread => (Dir::Read, self.random() % self.slots),
            Pattern::Randwrite => (Dir::Write, self.random() % self.slots),
            Pattern::Rw => {
                let dir = if self.random() % 100 < u64::from(self.mix) {
                    Dir::Read
                } else {
                    Dir::Write
                };
                (dir, self.random() % self.slots)
            }
        }
    }
}

/// The byte every write fills its buffer with, so a test can check what
/// landed where.
pub const WRITE_FILL: u8 = 0x5a;

/// Runs `usrdrv-nvme perf`.
pub fn run(args: &PerfArgs, json: bool) -> Result<(), ToolError> {
    let report = match &args.target {
        Target::Controller(address) => run_controller(*address, args, json)?,
        Target::Block(path) => crate::kernel::run(path, args, json)?,
    };
    if args.progress(json) {
        eprintln!();
    }
    report.print(json);
    Ok(())
}

/// Joins the queue threads' results.
pub fn join_all(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<Tally, ToolError>>>,
) -> Result<Vec<Tally>, ToolError> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(ToolError::Usage("a queue's thread panicked".into())))
        })
        .collect()
}

/// This crate's driver on a controller.
fn run_controller(address: PciAddress, args: &PerfArgs, json: bool) -> Result<Report, ToolError> {
    let options = ControllerOptions {
        shadow_doorbells: args.shadow_doorbells,
    };
    let mut c = Controller::open_with_options(address, options)?;
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
        let depth = args.queue_depth.max(1).saturating_add(1);
        let queue = if args.interrupt {
            c.io_queue_with_interrupts::<PoolBuffer>(depth)?
        } else {
            c.io_queue_for::<PoolBuffer>(depth)?
        };
        let pool = c.device().dma_pool(args.io_size, queue.capacity())?;
        work.push((queue, pool));
    }
    let progress = args.progress(json);
    let ticks = Ticks::start();
    let cpu_before = report::cpu_time();
    let start = Instant::now();
    let tallies = std::thread::scope(|s| {
        let handles = work
            .into_iter()
            .enumerate()
            .map(|(i, (queue, pool))| {
                let ns = &ns;
                s.spawn(move || drive(queue, &pool, ns, args, i as u16, progress && i == 0))
            })
            .collect();
        join_all(handles)
    })?;
    let elapsed = start.elapsed();
    let cpu = report::cpu_time() - cpu_before;
    let shape = RunShape {
        address: address.to_string(),
        driver: "usrdrv",
        completions: if args.interrupt { "interrupt" } else { "poll" },
        shadow_doorbells: Some(c.shadow_doorbells()),
        args,
    };
    Ok(Report::new(
        &shape,
        tallies,
        elapsed,
        cpu,
        ticks.ns_per_tick(),
    ))
}

/// One queue's loop: keep it full until the time is over, then drain.
fn drive(
    mut queue: IoQueue<PoolBuffer>,
    pool: &usrdrv::dma::DmaPool,
    ns: &Namespace,
    args: &PerfArgs,
    index: u16,
    progress: bool,
) -> Result<Tally, ToolError> {
    let blocks = ns.blocks_in(args.io_size);
    let mut workload = Workload::new(args, ns.blocks / u64::from(blocks.max(1)), index);
    let depth = queue.capacity().min(usize::from(args.queue_depth.max(1)));
    // Tags are indices into `submitted`; `free` holds the unused ones.
    let mut submitted = vec![0u64; depth];
    let mut free: Vec<u64> = (0..depth as u64).rev().collect();
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let fill = vec![WRITE_FILL; args.io_size];
    let mut progress = Progress::new(progress);
    let deadline = Instant::now() + args.duration();
    let mut running = true;
    let mut unrung = 0;
    let ring_every = args.ring_every();
    loop {
        while running && let Some(&tag) = free.last() {
            let buffer = pool.alloc()?;
            let (dir, slot) = workload.next();
            let op = match dir {
                Dir::Read => Op::Read,
                Dir::Write => {
                    buffer.write_bytes(0, &fill)?;
                    Op::Write
                }
            };
            submitted[tag as usize] = report::now();
            // One doorbell for the whole refill, rung below (or one every
            // `--ring-every` commands).
            queue
                .submit_deferred(op, ns, slot * u64::from(blocks), blocks, buffer, tag)
                .map_err(|rejected| ToolError::Nvme(rejected.error))?;
            free.pop();
            unrung += 1;
            if unrung == ring_every {
                ring_timed(&mut queue, &mut tally)?;
                unrung = 0;
            }
        }
        unrung = 0;
        ring_timed(&mut queue, &mut tally)?;
        if queue.in_flight() == 0 {
            break;
        }
        // The first completion (waited for if none is posted yet), then
        // every one already posted. The wait is time the controller, not
        // this loop, took (with the one reap that ends it): two stamps per
        // wait, not per command.
        let mut next = match queue.reap()? {
            Some(done) => Some(done),
            None => {
                let waited = report::now();
                let first = queue.wait()?;
                tally.waiting_ticks += report::now().wrapping_sub(waited);
                Some(first)
            }
        };
        while let Some(done) = next {
            let end = report::now();
            if let Some(at) = submitted.get(done.tag as usize) {
                tally.latencies.push(end.wrapping_sub(*at));
                free.push(done.tag);
            }
            done.result?;
            tally.ios += 1;
            tally.bytes += args.io_size as u64;
            // The clock is read once every 64 completions, not on every one.
            if tally.ios.is_multiple_of(64) {
                running = Instant::now() < deadline;
                progress.update(tally.ios);
            }
            next = queue.reap()?;
        }
    }
    tally.doorbell_writes = queue.doorbell_writes();
    Ok(tally)
}

/// Rings the queue's submission doorbell, timing it: under emulation a
/// register write can wait for the emulator's own lock.
fn ring_timed(queue: &mut IoQueue<PoolBuffer>, tally: &mut Tally) -> Result<(), ToolError> {
    let (writes, rung) = (queue.doorbell_writes(), report::now());
    queue.ring()?;
    tally.ring_ticks += report::now().wrapping_sub(rung);
    tally.ring_writes += queue.doorbell_writes() - writes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        perf: PerfArgs,
    }

    fn args(words: &[&str]) -> PerfArgs {
        let mut all = vec!["perf"];
        all.extend_from_slice(words);
        Cli::try_parse_from(all).expect("parses").perf
    }

    #[test]
    fn doorbells_ring_every_half_queue_unless_told() {
        assert_eq!(args(&["/dev/x"]).ring_every(), 16);
        assert_eq!(args(&["/dev/x", "--queue-depth", "1"]).ring_every(), 1);
        assert_eq!(args(&["/dev/x", "--ring-every", "32"]).ring_every(), 32);
        assert_eq!(args(&["/dev/x", "--ring-every", "0"]).ring_every(), 1);
    }

    #[test]
    fn targets_are_addresses_or_block_devices() {
        assert_eq!(
            args(&["/dev/nvme0n1"]).target,
            Target::Block("/dev/nvme0n1".into())
        );
        assert_eq!(
            args(&["0000:00:02.0"]).target,
            Target::Controller("0000:00:02.0".parse().expect("address"))
        );
        let err = "nvme0n1".parse::<Target>().expect_err("neither");
        assert!(err.contains("/dev/nvme0n1"), "{err}");
    }

    #[test]
    fn sequential_queues_start_at_their_own_share() {
        let a = args(&["/dev/x", "--pattern", "read", "--queues", "2"]);
        let mut first = Workload::new(&a, 100, 0);
        let mut second = Workload::new(&a, 100, 1);
        assert_eq!(first.next(), (Dir::Read, 0));
        assert_eq!(first.next(), (Dir::Read, 1));
        assert_eq!(second.next(), (Dir::Read, 50));
        let mut wrap = Workload::new(&a, 2, 0);
        let slots: Vec<u64> = (0..4).map(|_| wrap.next().1).collect();
        assert_eq!(slots, [0, 1, 0, 1]);
    }

    #[test]
    fn random_patterns_stay_inside_the_device_and_mix_as_asked() {
        let a = args(&["/dev/x", "--pattern", "rw", "--mix", "70"]);
        let mut w = Workload::new(&a, 1000, 0);
        let mut reads = 0;
        for _ in 0..10_000 {
            let (dir, slot) = w.next();
            assert!(slot < 1000);
            reads += usize::from(dir == Dir::Read);
        }
        assert!((6500..7500).contains(&reads), "{reads}");
    }
}
