//! What the handover tests share, whatever the backend: a process that owns
//! edu, starts a DMA and is killed mid-transfer, and the next owner that
//! must never find that transfer's data in its own memory.
//!
//! The child is this test binary run again (`std::env::current_exe`) for
//! the test that starts it, with [`ROLE_VAR`] naming what it does: each such
//! test calls [`child_main`] first, which plays the role in a child and
//! returns at once in the test itself. The child says [`READY`] (and what it
//! has to report) on its standard output once its transfer runs, then waits
//! to be killed.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use usrdrv::mmio::Bar;
use usrdrv_edu::regs::{self, DmaCommand};

/// What the child's steps fail with.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable that makes a test binary a child: its value is
/// the role (`dma`, or `cycle N`).
pub const ROLE_VAR: &str = "USRDRV_HANDOVER_ROLE";
/// What the child prints once its transfer runs.
pub const READY: &str = "handover-child: ready";
/// What the child prints when it found a previous owner's data.
pub const STALE: &str = "handover-child: stale data";
/// The bytes a child's transfer moves: the window up to its last word (edu
/// aborts on a transfer ending exactly at 0x1000).
pub const TRANSFER_LEN: usize = regs::WINDOW_LEN as usize - 8;
/// How long after its start edu's transfer lands (100 ms of virtual time),
/// with a margin for a busy guest.
pub const LANDS_WITHIN: Duration = Duration::from_millis(300);

/// The tag of owner `n`: the first word of what its transfer writes.
pub fn tag(n: u64) -> u64 {
    0x5553_5244_4d41_0000 ^ (n << 8) ^ 0xa5
}

/// What owner `n` puts in edu's window: word `i` is `tag(n) + i`.
pub fn window_pattern(n: u64) -> Vec<u8> {
    (0..TRANSFER_LEN / 8)
        .flat_map(|i| tag(n).wrapping_add(i as u64).to_le_bytes())
        .collect()
}

/// Where in `bytes` owner `n`'s data lies (its first two words, 8-byte
/// aligned), if anywhere.
pub fn find_tag(bytes: &[u8], n: u64) -> Option<usize> {
    let (head, words, _) = {
        // SAFETY: every bit pattern is a valid u64; `align_to` only
        // reinterprets the aligned middle of the slice.
        unsafe { bytes.align_to::<u64>() }
    };
    let first = tag(n).to_le();
    let second = tag(n).wrapping_add(1).to_le();
    words
        .windows(2)
        .position(|w| w[0] == first && w[1] == second)
        .map(|i| head.len() + i * 8)
}

/// Keeps this process, and the children it starts, on CPU 0: memory one of
/// them frees is the next the other allocates (the per-CPU free lists),
/// which is what makes a transfer into freed memory show up in a test.
pub fn pin_to_cpu0() {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid set and 0 is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed, which the
    // call only reads; pid 0 is this thread.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        ret,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// Waits until edu's DMA engine is idle (a transfer, maybe a dead owner's,
/// has finished or was dropped).
pub fn wait_idle(bar: &Bar) -> Result<(), Failure> {
    let start = Instant::now();
    while DmaCommand::running(bar.read64(regs::DMA_CMD.offset())?) {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("edu's DMA engine stayed busy for 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Starts (and does not wait for) a transfer of [`TRANSFER_LEN`] bytes from
/// edu's window to device address `dst`, through the raw registers.
pub fn start_window_to_ram(bar: &Bar, dst: u64) -> Result<(), Failure> {
    bar.write64(regs::DMA_SRC.offset(), regs::WINDOW_BASE)?;
    bar.write64(regs::DMA_DST.offset(), dst)?;
    bar.write64(regs::DMA_COUNT.offset(), TRANSFER_LEN as u64)?;
    bar.write64(regs::DMA_CMD.offset(), DmaCommand::from_device().bits())?;
    Ok(())
}

/// `len` bytes of heap, every page touched (so the process owns them).
pub fn touched_heap(len: usize) -> Vec<u8> {
    vec![0x5a; len]
}

/// A child started by [`spawn_child`], ready and with its transfer running.
#[derive(Debug)]
pub struct RunningChild {
    child: Child,
    out: BufReader<ChildStdout>,
    /// What followed [`READY`] on its line.
    report: String,
}

/// Runs this test binary's test `test` (the caller) as a child playing
/// `role` and waits until it says [`READY`]; panics with what it printed if
/// it says anything else first.
pub fn spawn_child(test: &str, role: &str) -> RunningChild {
    let exe = std::env::current_exe().expect("the test binary's path");
    #[allow(clippy::zombie_processes, reason = "RunningChild::kill waits for it")]
    let mut child = Command::new(exe)
        .args(["--exact", test, "--ignored", "--nocapture"])
        .args(["--test-threads=1", "--color", "never"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the test binary again as the child");
    let mut out = BufReader::new(child.stdout.take().expect("the child's stdout"));
    let mut said = String::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).expect("read the child's stdout");
        said.push_str(&line);
        if let Some((_, report)) = line.split_once(READY) {
            let report = report.trim().to_owned();
            return RunningChild { child, out, report };
        }
        if n == 0 || line.contains(STALE) {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            let status = child.wait().expect("wait for the child");
            panic!("the child ({role}) did not get ready ({status}):\n{said}{err}");
        }
    }
}

impl RunningChild {
    /// What the child reported with [`READY`] ([`say_ready_with`]).
    pub fn report(&self) -> &str {
        &self.report
    }

    /// SIGKILLs the child mid-transfer and reaps it: its file is released
    /// by the time this returns. Panics unless SIGKILL is what ended it.
    pub fn kill(mut self) -> Instant {
        self.child.kill().expect("SIGKILL the child");
        let status = self.child.wait().expect("wait for the child");
        let killed = Instant::now();
        drop(self.out);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the child ended by itself: {status}"
        );
        killed
    }
}

/// The child's side: runs `role` (which prints [`READY`] when its transfer
/// runs and then never returns) if this process is a child; returns at once
/// otherwise.
pub fn child_main(run: impl FnOnce(&str) -> Result<(), Failure>) {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    if let Err(e) = run(&role) {
        println!("handover-child: failed: {e}");
        std::process::exit(2);
    }
    loop {
        std::thread::park();
    }
}

/// Says [`READY`] and flushes it through the pipe.
pub fn say_ready() {
    say_ready_with("");
}

/// Says [`READY`] followed by `report` (for [`RunningChild::report`]).
pub fn say_ready_with(report: &str) {
    use std::io::Write;
    println!("{READY} {report}");
    let _ = std::io::stdout().flush();
}

/// Reads bit 2 of the command register (bus master enable) of `device`.
pub fn bus_master_on(device: &usrdrv::Device) -> bool {
    let mut command = [0u8; 2];
    device
        .read_config(0x04, &mut command)
        .expect("read the command register");
    u16::from_le_bytes(command) & 0x0004 != 0
}
