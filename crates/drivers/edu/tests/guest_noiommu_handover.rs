//! Handing edu from one process to the next over usrdma, in the boot without
//! an IOMMU: a process killed mid-DMA must not have its transfer land in the
//! next owner's memory. edu cannot be reset, so the module keeps the dead
//! owner's memory (its quarantine) until the new owner declares the device
//! quiesced or bus mastering has stayed off for the grace period
//! (`quarantine_ms`, 1000 ms by default). Shared, backend-free parts are in
//! `handover/mod.rs`.

use std::time::{Duration, Instant};

use usrdrv::Device;
use usrdrv::dma::{Direction, DmaBuffer, DmaMask};
use usrdrv::pci::{PciAddress, Sysfs};
use usrdrv::usrdma::USRDMA_DRIVER;
use usrdrv_edu::{DMA_MASK_BITS, Edu};

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
#[allow(dead_code, reason = "the VFIO tests use other parts of the helpers")]
mod handover;

use common::{edu_address, usrdma_stat as stat};
use handover::{
    Failure, LANDS_WITHIN, STALE, bus_master_on, child_main, find_tag, pin_to_cpu0, say_ready,
    spawn_child, start_window_to_ram, touched_heap, wait_idle, window_pattern,
};

/// The grace period the module waits with bus mastering off, and a margin.
const GRACE: Duration = Duration::from_millis(1000);
const GRACE_MARGIN: Duration = Duration::from_millis(1500);

/// The quarantine counters: buffers, bytes, pinned pages.
fn quarantine(address: PciAddress) -> (u64, u64, u64) {
    (
        stat(address, "quarantine_buffers"),
        stat(address, "quarantine_bytes"),
        stat(address, "quarantine_pages"),
    )
}

/// Waits (with the device closed) until the grace has freed the quarantine.
fn quarantine_freed_after_the_grace(address: PciAddress) -> Duration {
    let start = Instant::now();
    while quarantine(address) != (0, 0, 0) {
        assert!(
            start.elapsed() < GRACE + GRACE_MARGIN,
            "quarantine {:?} still held {:?} after the last release (grace {GRACE:?})",
            quarantine(address),
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The counters of live buffers and mappings, all 0 when nobody holds any.
fn live(address: PciAddress) -> [u64; 5] {
    [
        "buffers",
        "buffer_bytes",
        "user_mappings",
        "pinned_pages",
        "bounce_bytes",
    ]
    .map(|key| stat(address, key))
}

/// The child process of these tests (see `handover/mod.rs`), called first by
/// each test that starts one: roles `dma` (one transfer into a buffer),
/// `cycle N` (one cycle of the kill loop) and `hold ADDR` (a buffer and a
/// mapping of any device, no transfer). Returns at once in the test itself.
fn play_the_child() {
    child_main(|role| match role.split_once(' ') {
        None if role == "dma" => dma_then_wait(),
        Some(("cycle", n)) => cycle(n.parse()?),
        Some(("hold", address)) => hold(address.parse()?),
        _ => Err(format!("unknown role {role:?}").into()),
    });
}

/// Opens edu, fills its window with owner 0's pattern and starts a transfer
/// of it into a DMA buffer.
fn dma_then_wait() -> Result<(), Failure> {
    let edu = Edu::open(Edu::find()?)?;
    let device = edu.device();
    let source = device.alloc_dma(4096)?;
    let target = device.alloc_dma(4096)?;
    fill_window(&edu, &source, 0)?;
    start_window_to_ram(&device.bar(0)?, target.device_addr())?;
    say_ready();
    // Kept until the kill.
    std::mem::forget((source, target, edu));
    Ok(())
}

/// Opens the device at `address` and holds a DMA buffer and a mapping of
/// its own memory, with bus mastering on.
fn hold(address: PciAddress) -> Result<(), Failure> {
    let device = Device::open(address, DmaMask::new(64)?)?;
    let buffer = device.alloc_dma(8192)?;
    let mapping = device.map_dma(vec![0u8; 3 * 4096], Direction::FromDevice)?;
    say_ready();
    std::mem::forget((mapping, buffer, device));
    Ok(())
}

/// Puts owner `n`'s pattern in edu's window (a transfer from `source`).
fn fill_window(edu: &Edu, source: &DmaBuffer, n: u64) -> Result<(), Failure> {
    let data = window_pattern(n);
    source.write_bytes(0, &data)?;
    edu.buffer_to_window(source, 0, 0, data.len())?;
    Ok(())
}

/// Owner `n` of the kill loop: takes edu over from owner `n - 1` (declaring
/// it quiesced on even cycles, not on odd ones), checks that nothing of
/// owner `n - 1`'s transfer reached its own memory, then starts its own
/// transfer (into a coherent buffer on even cycles, into pinned heap memory
/// on odd ones) and waits to be killed.
fn cycle(n: u64) -> Result<(), Failure> {
    let edu = Edu::open(Edu::find()?)?;
    let device = edu.device();
    let bar = device.bar(0)?;
    if n.is_multiple_of(2) {
        device.quiesce(|| wait_idle(&bar))?;
    }
    // Memory of our own, owned before the previous transfer can land.
    let heap = touched_heap(4 << 20);
    let buffers: Vec<DmaBuffer> = (0..3)
        .map(|_| device.alloc_dma(4096))
        .collect::<Result<_, _>>()?;
    wait_idle(&bar)?;
    if n > 0 {
        check_clean(&heap, &buffers, n - 1)?;
    }
    fill_window(&edu, &buffers[0], n)?;
    if n.is_multiple_of(2) {
        start_window_to_ram(&bar, buffers[1].device_addr())?;
    } else {
        let mapping = device.map_dma(vec![0u8; 8192], Direction::FromDevice)?;
        let first = mapping.sg_list()[0];
        start_window_to_ram(&bar, first.device_addr)?;
        std::mem::forget(mapping);
    }
    say_ready();
    std::mem::forget((heap, buffers, bar, edu));
    Ok(())
}

/// Fails if owner `n`'s data is in `heap` or any of `buffers`.
fn check_clean(heap: &[u8], buffers: &[DmaBuffer], n: u64) -> Result<(), Failure> {
    if let Some(at) = find_tag(heap, n) {
        return Err(format!("{STALE}: owner {n}'s transfer in the heap at {at:#x}").into());
    }
    for (i, buffer) in buffers.iter().enumerate() {
        let mut bytes = vec![0u8; buffer.len()];
        buffer.read_bytes(0, &mut bytes)?;
        if let Some(at) = find_tag(&bytes, n) {
            return Err(
                format!("{STALE}: owner {n}'s transfer in DMA buffer {i} at {at:#x}").into(),
            );
        }
    }
    Ok(())
}

/// Memory a new owner grabs right after the kill: DMA buffers (bus
/// mastering goes on with the first) and a touched heap.
struct NewOwnersMemory {
    buffers: Vec<DmaBuffer>,
    heap: Vec<u8>,
}

impl NewOwnersMemory {
    fn grab(device: &Device) -> Self {
        let buffers = (0..8)
            .map(|_| device.alloc_dma(4096).expect("a DMA buffer"))
            .collect();
        let heap = touched_heap(64 << 20);
        Self { buffers, heap }
    }

    /// Panics if owner 0's data is anywhere in this memory.
    fn assert_clean(&self) {
        if let Err(e) = check_clean(&self.heap, &self.buffers, 0) {
            panic!("{e}: the killed owner's DMA landed in memory the next owner owns");
        }
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_killed_owners_transfer_never_lands_in_the_next_owners_memory() {
    const TEST: &str = "a_killed_owners_transfer_never_lands_in_the_next_owners_memory";
    play_the_child();
    let address = edu_address();
    pin_to_cpu0();
    let killed = spawn_child(TEST, "dma").kill();

    // Straight away, without quiescing: the module must have kept the dead
    // owner's buffers, and the transfer lands there, not in ours.
    let device = Device::open(address, DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
    let memory = NewOwnersMemory::grab(&device);
    let (buffers, bytes, _) = quarantine(address);
    assert!(
        buffers >= 2 && bytes >= 8192,
        "the killed owner's two buffers are quarantined: {:?}",
        quarantine(address)
    );
    std::thread::sleep(LANDS_WITHIN.saturating_sub(killed.elapsed()));
    memory.assert_clean();

    // This owner turned bus mastering on without quiescing: the quarantine
    // stays while it has the device, and goes one grace after it is closed.
    std::thread::sleep(GRACE + Duration::from_millis(200));
    assert_eq!(
        quarantine(address).0,
        buffers,
        "kept while we master the bus"
    );
    drop(memory);
    drop(device);
    let took = quarantine_freed_after_the_grace(address);
    println!("quarantine freed {took:?} after the release");
    assert_eq!(live(address), [0; 5], "nothing else is left either");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn declaring_the_device_quiesced_frees_the_quarantine_at_once() {
    const TEST: &str = "declaring_the_device_quiesced_frees_the_quarantine_at_once";
    play_the_child();
    let address = edu_address();
    pin_to_cpu0();
    spawn_child(TEST, "dma").kill();
    assert!(quarantine(address).0 >= 2, "{:?}", quarantine(address));

    let edu = Edu::open(address).unwrap();
    let bar = edu.device().bar(0).unwrap();
    // The dead owner's transfer finishes (and is dropped: bus mastering is off).
    edu.device().quiesce(|| wait_idle(&bar)).unwrap();
    assert_eq!(quarantine(address), (0, 0, 0), "freed by QUIESCED");
    let memory = NewOwnersMemory::grab(edu.device());
    std::thread::sleep(LANDS_WITHIN);
    memory.assert_clean();
    // The device works for the new owner.
    let buffer = &memory.buffers[0];
    buffer.write_bytes(0, b"quiesced").unwrap();
    edu.buffer_to_window(buffer, 0, 8, 8).unwrap();
    edu.window_to_buffer(8, buffer, 100, 8).unwrap();
    let mut got = [0u8; 8];
    buffer.read_bytes(100, &mut got).unwrap();
    assert_eq!(&got, b"quiesced");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn bus_mastering_is_off_after_open_and_on_after_the_first_allocation() {
    let address = edu_address();
    let device = Device::open(address, DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
    assert!(!bus_master_on(&device), "off right after open");
    let buffer = device.alloc_dma(4096).unwrap();
    assert!(
        bus_master_on(&device),
        "on once the driver allocated DMA memory"
    );
    drop(buffer);
    drop(device);

    // The module itself never turns it on at open, whoever left it on.
    let raw = usrdrv::usrdma::Device::open(address).unwrap();
    let mut command = [0u8; 2];
    raw.read_config(0x04, &mut command).unwrap();
    assert_eq!(u16::from_le_bytes(command) & 0x4, 0, "off at open");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_hundred_kill_and_reopen_cycles_leave_no_stale_data_and_no_pins() {
    const TEST: &str = "a_hundred_kill_and_reopen_cycles_leave_no_stale_data_and_no_pins";
    play_the_child();
    const CYCLES: u64 = 100;
    let address = edu_address();
    pin_to_cpu0();
    let start = Instant::now();
    for n in 0..CYCLES {
        // Each child checks it holds nothing of the one before it.
        spawn_child(TEST, &format!("cycle {n}")).kill();
    }
    println!("{CYCLES} kill-and-reopen cycles in {:?}", start.elapsed());
    // The last owner died without a successor: the grace frees its memory.
    let took = quarantine_freed_after_the_grace(address);
    println!("the last owner's memory freed {took:?} after its death");
    assert_eq!(live(address), [0; 5], "no buffer, mapping or pin left");
    assert_eq!(stat(address, "opened"), 0);

    // And the device works.
    let edu = Edu::open(address).unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    buffer.write_bytes(0, b"after 100").unwrap();
    edu.buffer_to_window(&buffer, 0, 0, 9).unwrap();
    edu.window_to_buffer(0, &buffer, 200, 9).unwrap();
    let mut got = [0u8; 9];
    buffer.read_bytes(200, &mut got).unwrap();
    assert_eq!(&got, b"after 100");
}

/// The kernel log so far.
fn kernel_log() -> String {
    let out = std::process::Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives QEMU's nvme (which has FLR) to usrdma for `f`, then back to its
/// driver, whatever `f` did.
fn with_nvme_on_usrdma(f: impl FnOnce(PciAddress) + std::panic::UnwindSafe) {
    let sysfs = Sysfs::system();
    let nvme = sysfs.find(0x1b36, 0x0010).expect("scan sysfs")[0];
    let driver = sysfs.driver(nvme).expect("nvme's driver");
    sysfs
        .bind(nvme, USRDMA_DRIVER)
        .expect("bind nvme to usrdma");
    let result = std::panic::catch_unwind(|| f(nvme));
    match driver {
        Some(driver) => sysfs.bind(nvme, &driver).expect("give nvme back"),
        None => sysfs.unbind(nvme).expect("unbind nvme"),
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_function_with_a_reset_is_reset_at_release_and_nothing_is_quarantined() {
    const TEST: &str = "a_function_with_a_reset_is_reset_at_release_and_nothing_is_quarantined";
    play_the_child();
    let log_before = kernel_log();
    with_nvme_on_usrdma(|nvme| {
        assert_eq!(
            std::fs::read_to_string(format!("/sys/bus/pci/devices/{nvme}/reset_method"))
                .unwrap()
                .trim(),
            "flr",
            "QEMU's nvme has function-level reset"
        );
        let device = Device::open(nvme, DmaMask::new(64).unwrap()).unwrap();
        assert!(!bus_master_on(&device), "off after open");
        drop(device);
        for _ in 0..3 {
            let child = spawn_child(TEST, &format!("hold {nvme}"));
            assert!(stat(nvme, "buffers") == 1 && stat(nvme, "user_mappings") == 1);
            child.kill();
            // The module reset the function at release, so nothing waits.
            assert_eq!(
                quarantine(nvme),
                (0, 0, 0),
                "a reset function quarantines nothing"
            );
            assert_eq!(live(nvme), [0; 5]);
        }
        // The state saved at open was put back: decoding on, bus mastering off.
        let raw = usrdrv::usrdma::Device::open(nvme).unwrap();
        let mut command = [0u8; 2];
        raw.read_config(0x04, &mut command).unwrap();
        let command = u16::from_le_bytes(command);
        assert_eq!(
            command & 0x6,
            0x2,
            "memory decoding on, bus mastering off: {command:#x}"
        );
        // The controller answers: CAP (BAR0 offset 0) is not all ones.
        let cap = raw.bar(0).unwrap().read32(0).unwrap();
        assert_ne!(cap, u32::MAX, "nvme answers after the resets");
    });
    let log_after = kernel_log();
    let new = log_after.strip_prefix(&log_before).unwrap_or(&log_after);
    assert!(
        !["WARNING", "BUG", "Oops", "Call Trace"]
            .iter()
            .any(|w| new.contains(w)),
        "the kernel complained:\n{new}"
    );
}
