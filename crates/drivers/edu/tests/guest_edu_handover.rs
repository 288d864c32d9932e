//! A device changing hands over VFIO: an owner killed with a transfer queued
//! (edu completes every transfer 100 ms after it starts, and has no reset)
//! must not write into the next owner's memory. Run in the IOMMU boot.
//!
//! The killed owner is this test binary run again as a child process, with
//! `CHILD` in its environment: it starts a transfer from edu's window into
//! its own DMA buffer, says where, and waits to be killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use usrdrv::Device;
use usrdrv::dma::{DmaBuffer, DmaMask};
use usrdrv_edu::{DMA_MASK_BITS, Edu};

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::{edu_address, pattern, resources};

/// Set in a child's environment: run as the owner that gets killed.
const CHILD: &str = "USRDRV_HANDOVER_CHILD";
/// What the child prints once its transfer is queued, then its buffer's address.
const STARTED: &str = "usrdrv-child-started ";
/// The bytes each transfer moves from edu's window.
const LEN: usize = 4000;
const SEED: u8 = 0x5a;

/// The child's part: queue a window-to-RAM transfer into a fresh buffer
/// (bus mastering on, as any driver's first allocation does), report its
/// device address, and wait to be killed.
fn be_the_killed_owner() -> ! {
    let address = Edu::find().expect("edu");
    let mask = DmaMask::new(DMA_MASK_BITS).expect("mask");
    let device = Device::open(address, mask).expect("open");
    let buffer = device.alloc_dma(4096).expect("alloc");
    let regs = device.bar(0).expect("bar 0");
    // Source: the window; destination: the buffer; then start, edu to RAM.
    for (reg, value) in [
        (0x80, 0x40000),
        (0x88, buffer.device_addr()),
        (0x90, LEN as u64),
        (0x98, 0x1 | 0x2),
    ] {
        regs.write64(reg, value).expect("program the transfer");
    }
    // On stderr, which the test harness leaves alone.
    eprintln!("{STARTED}{:#x}", buffer.device_addr());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// In a child run of a test (see the module docs), plays the killed owner
/// instead of the test; does nothing in the test itself.
fn play_the_child_if_asked() {
    if std::env::var_os(CHILD).is_some() {
        be_the_killed_owner();
    }
}

/// Runs `test` again as a child that queues a transfer, kills it with
/// SIGKILL as soon as the transfer is queued, reaps it, and returns the
/// device address the transfer targets.
fn kill_an_owner_mid_dma(test: &str) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the child owner");
    let stderr = child.stderr.take().expect("the child's output");
    let (found, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with(STARTED) {
                let _ = found.send(Ok(line));
                return;
            }
            said += &line;
            said.push('\n');
        }
        let _ = found.send(Err(said));
    });
    let line = started.recv_timeout(Duration::from_secs(30));
    let stuck = if line.is_err() {
        kernel_stacks(child.id())
    } else {
        String::new()
    };
    child.kill().expect("kill the child");
    let status = child.wait().expect("reap the child");
    let Ok(Ok(line)) = line else {
        panic!("the child never queued its transfer ({status}): {line:?}\n{stuck}");
    };
    u64::from_str_radix(line[STARTED.len()..].trim_start_matches("0x"), 16)
        .expect("the child's device address")
}

/// Where each thread of process `pid` is in the kernel, for a failure report.
fn kernel_stacks(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return String::new();
    };
    tasks
        .filter_map(Result::ok)
        .map(|task| {
            let read = |what| std::fs::read_to_string(task.path().join(what)).unwrap_or_default();
            format!(
                "{}: {} {}",
                read("comm").trim(),
                read("wchan"),
                read("stack")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Puts the pattern the killed owners' transfers carry into edu's window.
fn fill_the_window() {
    let edu = Edu::open(edu_address()).expect("open edu");
    let source = edu.device().alloc_dma(4096).expect("alloc");
    source
        .write_bytes(0, &pattern(LEN, SEED))
        .expect("write the pattern");
    edu.buffer_to_window(&source, 0, 0, LEN)
        .expect("copy it to the window");
}

/// Panics if `buffer` holds anything but the zeros it was allocated with.
fn assert_untouched(buffer: &DmaBuffer, what: &str) {
    let mut bytes = vec![0u8; buffer.len()];
    buffer.read_bytes(0, &mut bytes).expect("read the buffer");
    assert!(
        bytes.iter().all(|&b| b == 0),
        "{what}: the killed owner's transfer landed here ({} bytes changed)",
        bytes.iter().filter(|&&b| b != 0).count()
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_killed_owners_transfer_misses_an_owner_that_does_not_quiesce() {
    const TEST: &str = "a_killed_owners_transfer_misses_an_owner_that_does_not_quiesce";
    play_the_child_if_asked();
    fill_the_window();
    let address = edu_address();
    for trial in 0..5 {
        let stale = kill_an_owner_mid_dma(TEST);
        // The reproduction: open at once and allocate, no quiesce
        // step, so bus mastering is on while the old transfer is queued.
        let device = Device::open(address, DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
        let buffers: Vec<DmaBuffer> = (0..16).map(|_| device.alloc_dma(4096).unwrap()).collect();
        assert!(
            buffers.iter().all(|b| b.device_addr() != stale),
            "trial {trial}: a new domain handed out the killed owner's address {stale:#x} again"
        );
        // Well past the transfer's 100 ms.
        std::thread::sleep(Duration::from_millis(400));
        for buffer in &buffers {
            assert_untouched(buffer, &format!("trial {trial}"));
        }
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_hundred_kills_mid_dma_and_immediate_reopens_stay_clean() {
    const TEST: &str = "a_hundred_kills_mid_dma_and_immediate_reopens_stay_clean";
    play_the_child_if_asked();
    fill_the_window();
    let address = edu_address();
    let before = resources();
    let started = Instant::now();
    for cycle in 0..100 {
        kill_an_owner_mid_dma(TEST);
        // A driver that quiesces (Edu::open waits for the engine with bus
        // mastering off): the old transfer is over, dropped, when it returns.
        let edu = Edu::open(address).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let buffer = edu.device().alloc_dma(4096).unwrap();
        assert_untouched(&buffer, &format!("cycle {cycle}"));
        if cycle % 25 == 0 {
            // And the device still works for its new owner.
            edu.window_to_buffer(0, &buffer, 0, LEN).unwrap();
            let mut got = vec![0u8; LEN];
            buffer.read_bytes(0, &mut got).unwrap();
            assert_eq!(got, pattern(LEN, SEED), "cycle {cycle}");
        }
    }
    let after = resources();
    assert_eq!(after, before, "locked, pinned memory and descriptors");
    eprintln!("100 kill-and-reopen cycles in {:?}", started.elapsed());
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn bus_mastering_is_off_until_the_first_dma() {
    let device = Device::open(edu_address(), DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
    let command = || {
        let mut command = [0u8; 2];
        device.read_config(0x04, &mut command).unwrap();
        u16::from_le_bytes(command) & 0x4 != 0
    };
    assert!(!command(), "bus mastering is off at open");
    let quiesced = device.quiesce(|| Ok::<bool, usrdrv::dma::DmaError>(command()));
    assert!(!quiesced.unwrap(), "and during the quiesce step");
    let buffer = device.alloc_dma(4096).unwrap();
    assert!(command(), "on once DMA memory exists");
    let late = device.quiesce(|| Ok::<(), usrdrv::dma::DmaError>(()));
    assert!(
        matches!(late, Err(usrdrv::dma::DmaError::QuiesceTooLate { .. })),
        "{late:?}"
    );
    drop(buffer);
}
