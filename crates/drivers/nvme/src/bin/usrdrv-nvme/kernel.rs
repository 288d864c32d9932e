//! `usrdrv-nvme perf /dev/...`: the same workload on a block device, through
//! the kernel's driver, with io_uring and `O_DIRECT` (one ring per queue
//! thread), so that one load generator measures both sides.
//!
//! `--poll` sets up the rings with `IORING_SETUP_IOPOLL` (fio's `--hipri`):
//! completions are polled from the kernel driver's polled queues, which
//! the nvme driver has only with `nvme.poll_queues=N`.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use io_uring::{IoUring, opcode, types};

use crate::ToolError;
use crate::perf::{Dir, PerfArgs, WRITE_FILL, Workload, join_all};
use crate::report::{self, Progress, Report, RunShape, Tally, Ticks};

/// Buffer alignment for `O_DIRECT` (a page covers every logical block size).
const ALIGN: usize = 4096;

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ToolError {
    let what = what.into();
    move |source| ToolError::Io { what, source }
}

/// Size and logical block size of a block device, from sysfs.
fn geometry(path: &Path) -> Result<(u64, usize), ToolError> {
    let real = path
        .canonicalize()
        .map_err(io_error(format!("resolving {}", path.display())))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sys = Path::new("/sys/class/block").join(&name);
    let read = |file: &str| -> Result<u64, ToolError> {
        let p = sys.join(file);
        let text = std::fs::read_to_string(&p).map_err(io_error(format!(
            "reading {} ({} is not a block device?)",
            p.display(),
            path.display()
        )))?;
        text.trim()
            .parse::<u64>()
            .map_err(|_| ToolError::Usage(format!("{}: not a number: {text:?}", p.display())))
    };
    let sectors = read("size")?;
    // Partitions have no queue directory of their own.
    let block = read("queue/logical_block_size").unwrap_or(512);
    Ok((sectors * 512, block as usize))
}

/// Measures the kernel's driver on the block device at `path`.
pub fn run(path: &Path, args: &PerfArgs, json: bool) -> Result<Report, ToolError> {
    let (bytes, block) = geometry(path)?;
    if args.io_size == 0 || !args.io_size.is_multiple_of(block) || args.io_size as u64 > bytes {
        return Err(ToolError::Usage(format!(
            "--io-size must be a multiple of {}'s {block}-byte block",
            path.display()
        )));
    }
    if args.queues == 0 {
        return Err(ToolError::Usage("--queues must be at least 1".into()));
    }
    let writes = !matches!(
        args.pattern,
        crate::perf::Pattern::Read | crate::perf::Pattern::Randread
    );
    let file = File::options()
        .read(true)
        .write(writes)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(io_error(format!(
            "opening {} with O_DIRECT",
            path.display()
        )))?;
    let slots = bytes / args.io_size as u64;
    let progress = args.progress(json);
    let ticks = Ticks::start();
    let cpu_before = report::cpu_time();
    let start = Instant::now();
    let tallies = std::thread::scope(|s| {
        let handles = (0..args.queues)
            .map(|i| {
                let file = &file;
                s.spawn(move || drive(file, path, args, slots, i, progress && i == 0))
            })
            .collect();
        join_all(handles)
    })?;
    let elapsed = start.elapsed();
    let cpu = report::cpu_time() - cpu_before;
    let shape = RunShape {
        address: path.display().to_string(),
        driver: "kernel",
        completions: if args.poll { "poll" } else { "interrupt" },
        shadow_doorbells: None,
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

/// The queue's buffers. If the loop ends with commands in flight (an
/// error), they are leaked rather than freed: the kernel may still write
/// them.
struct Buffers {
    memory: ManuallyDrop<Vec<Vec<u8>>>,
    in_flight: usize,
}

impl Drop for Buffers {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            // SAFETY: `memory` is not used after this, and no command is in
            // flight, so the kernel no longer refers to it.
            unsafe { ManuallyDrop::drop(&mut self.memory) };
        }
    }
}

/// One ring's loop: keep it full until the time is over, then drain.
fn drive(
    file: &File,
    path: &Path,
    args: &PerfArgs,
    slots: u64,
    index: u16,
    progress: bool,
) -> Result<Tally, ToolError> {
    let depth = usize::from(args.queue_depth.max(1));
    let entries = depth.next_power_of_two() as u32;
    let mut builder = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder();
    if args.poll {
        builder.setup_iopoll();
    }
    let mut ring = builder
        .build(entries)
        .map_err(io_error("setting up an io_uring"))?;
    let len = args.io_size;
    let mut buffers = Buffers {
        memory: ManuallyDrop::new((0..depth).map(|_| vec![0u8; len + ALIGN]).collect()),
        in_flight: 0,
    };
    let offsets: Vec<usize> = buffers
        .memory
        .iter()
        .map(|b| b.as_ptr().align_offset(ALIGN))
        .collect();
    // Registered buffers and file, as fio's --fixedbufs and --registerfiles:
    // the kernel pins and looks them up once, not on every command.
    let iovecs: Vec<libc::iovec> = buffers
        .memory
        .iter_mut()
        .zip(&offsets)
        .map(|(b, &at)| libc::iovec {
            iov_base: b[at..at + len].as_mut_ptr().cast(),
            iov_len: len,
        })
        .collect();
    // SAFETY: every iovec is `len` bytes inside one of `buffers`' vectors,
    // which are neither moved nor freed while the ring lives: the ring is
    // dropped before them at the end, and on an early return `buffers` is
    // leaked if a command is in flight (registered memory is only touched
    // by commands).
    unsafe { ring.submitter().register_buffers(&iovecs) }
        .map_err(io_error("registering the buffers with the io_uring"))?;
    ring.submitter()
        .register_files(&[file.as_raw_fd()])
        .map_err(io_error("registering the block device with the io_uring"))?;
    let fd = types::Fixed(0);
    let mut workload = Workload::new(args, slots, index);
    let mut submitted = vec![0u64; depth];
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut progress = Progress::new(progress);
    let deadline = Instant::now() + args.duration();
    let mut running = true;
    let mut waits = 0u64;
    loop {
        while running && let Some(&tag) = free.last() {
            let (dir, slot) = workload.next();
            let at = offsets[tag];
            let buffer = &mut buffers.memory[tag][at..at + len];
            if dir == Dir::Write {
                buffer.fill(WRITE_FILL);
            }
            let ptr = buffer.as_mut_ptr();
            let offset = slot * len as u64;
            let index = tag as u16;
            let entry = match dir {
                Dir::Read => opcode::ReadFixed::new(fd, ptr, len as u32, index)
                    .offset(offset)
                    .build(),
                Dir::Write => opcode::WriteFixed::new(fd, ptr, len as u32, index)
                    .offset(offset)
                    .build(),
            }
            .user_data(tag as u64);
            submitted[tag] = report::now();
            // SAFETY: the buffer is `len` bytes of `buffers`, which is not
            // touched until this command's completion is reaped below and
            // is leaked, not freed, if the loop ends with it in flight; the
            // ring has room, since at most `depth` <= `entries` commands
            // are queued or in flight.
            let pushed = unsafe { ring.submission().push(&entry) };
            if pushed.is_err() {
                return Err(ToolError::Usage(
                    "the io_uring submission queue is full".into(),
                ));
            }
            free.pop();
            buffers.in_flight += 1;
        }
        if buffers.in_flight == 0 {
            break;
        }
        ring.submit_and_wait(1)
            .map_err(io_error("waiting for an io_uring completion"))?;
        let mut failed = None;
        for cqe in ring.completion() {
            let end = report::now();
            let tag = cqe.user_data() as usize;
            buffers.in_flight -= 1;
            free.push(tag);
            if let Some(at) = submitted.get(tag) {
                tally.latencies.push(end.wrapping_sub(*at));
            }
            match cqe.result() {
                n if n >= 0 => {
                    tally.ios += 1;
                    tally.bytes += n as u64;
                }
                n => failed = Some(-n),
            }
        }
        if let Some(errno) = failed {
            let hint = if args.poll && errno == libc::EOPNOTSUPP {
                " (polled I/O needs the driver's polled queues: nvme.poll_queues=N on the \
                 kernel command line; /sys/block/NAME/queue/io_poll says whether they exist)"
            } else {
                ""
            };
            return Err(ToolError::Io {
                what: format!("I/O on {}{hint}", path.display()),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        // The clock is read once every 32 waits, not after every one.
        waits += 1;
        if waits.is_multiple_of(32) {
            running = Instant::now() < deadline;
            progress.update(tally.ios);
        }
    }
    // Nothing is in flight: unregister (by closing the ring) before the
    // buffers go.
    drop(ring);
    Ok(tally)
}
