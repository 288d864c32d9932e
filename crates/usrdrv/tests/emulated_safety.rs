//! The DMA safety model, checked from safe code through the public API
//! against an emulated device: a small DMA engine whose every access goes
//! through the emulated IOMMU, which records what it refuses. The
//! sequences are the soundness review's: whatever safe code does, the
//! device never writes memory that Rust got back.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step fails the test"
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use usrdrv::Device;
use usrdrv::dma::{Direction, DmaError, DmaMask};
use usrdrv::emulated::{Bus, DeviceModel, DmaFault, DmaOp, EmulatedDevice, LeakKind, ModelInfo};
use usrdrv::mmio::Bar;

/// A DMA engine: `ADDR` and `LEN` registers, and `COMMAND`: `WRITE` fills
/// `LEN` bytes at `ADDR` with the byte in `FILL`; `READ` copies `LEN`
/// bytes at `ADDR` into its buffer, whose first 8 bytes `LATCH` reads.
#[derive(Default)]
struct Engine {
    addr: AtomicU64,
    len: AtomicU64,
    fill: AtomicU64,
    latched: Mutex<Vec<u8>>,
}

const ADDR: u64 = 0x00;
const LEN: u64 = 0x08;
const FILL: u64 = 0x10;
const COMMAND: u64 = 0x18;
const LATCH: u64 = 0x20;
const WRITE: u64 = 1;
const READ: u64 = 2;

impl DeviceModel for Engine {
    fn info(&self) -> ModelInfo {
        ModelInfo::new(0x1af4, 0x10fe).with_bar(0, 4096)
    }

    fn read(&self, _bus: &Bus, _bar: u8, offset: u64, _width: usize) -> u64 {
        if offset != LATCH {
            return 0;
        }
        let latched = self.latched.lock().unwrap();
        let mut word = [0u8; 8];
        let n = latched.len().min(8);
        word[..n].copy_from_slice(&latched[..n]);
        u64::from_le_bytes(word)
    }

    fn write(&self, bus: &Bus, _bar: u8, offset: u64, _width: usize, value: u64) {
        let addr = self.addr.load(Ordering::SeqCst);
        let len = self.len.load(Ordering::SeqCst) as usize;
        match (offset, value) {
            (ADDR, _) => self.addr.store(value, Ordering::SeqCst),
            (LEN, _) => self.len.store(value, Ordering::SeqCst),
            (FILL, _) => self.fill.store(value, Ordering::SeqCst),
            (COMMAND, WRITE) => {
                let byte = self.fill.load(Ordering::SeqCst) as u8;
                let _ = bus.write(addr, &vec![byte; len]);
            }
            (COMMAND, READ) => {
                let mut data = vec![0u8; len];
                if bus.read(addr, &mut data).is_ok() {
                    *self.latched.lock().unwrap() = data;
                }
            }
            _ => {}
        }
    }
}

/// The device fills `len` bytes at `addr` with `byte`.
fn device_writes(regs: &Bar, addr: u64, len: usize, byte: u8) {
    regs.write64(ADDR, addr).unwrap();
    regs.write64(LEN, len as u64).unwrap();
    regs.write64(FILL, u64::from(byte)).unwrap();
    regs.write64(COMMAND, WRITE).unwrap();
}

/// The device reads `len` (at most 8) bytes at `addr`.
fn device_reads(regs: &Bar, addr: u64, len: usize) -> Vec<u8> {
    regs.write64(ADDR, addr).unwrap();
    regs.write64(LEN, len as u64).unwrap();
    regs.write64(COMMAND, READ).unwrap();
    regs.read64(LATCH).unwrap().to_le_bytes()[..len].to_vec()
}

fn setup() -> (EmulatedDevice, Device, Bar) {
    let emulated = EmulatedDevice::new(Engine::default());
    let device = Device::emulated(&emulated, DmaMask::new(32).unwrap()).unwrap();
    let regs = device.bar(0).unwrap();
    // Bus mastering goes on with the first DMA request.
    device.enable_bus_master().unwrap();
    (emulated, device, regs)
}

#[test]
fn a_lent_buffer_is_reachable_inside_the_scope_and_unmapped_when_it_returns() {
    let (emulated, device, regs) = setup();
    let mut block = vec![0u8; 200];
    let iova = device
        .with_dma(&mut block, Direction::FromDevice, |mapping| {
            let iova = mapping.sg_list()[0].device_addr;
            device_writes(&regs, iova, 16, 0xaa);
            iova
        })
        .unwrap();
    assert_eq!(&block[..16], &[0xaa; 16]);
    assert_eq!(emulated.faults(), vec![]);
    // The review's H1: the device writes the old address after the scope.
    device_writes(&regs, iova, 16, 0x55);
    assert_eq!(
        emulated.faults(),
        vec![DmaFault::NotMapped {
            addr: iova,
            len: 16,
            write: true
        }]
    );
    assert_eq!(&block[..16], &[0xaa; 16], "the write was refused");
    drop((regs, device));
    emulated.finish().unwrap();
}

#[test]
fn a_panic_inside_the_scope_still_unmaps_before_the_borrow_ends() {
    let (emulated, device, regs) = setup();
    let mut block = vec![0u8; 64];
    let mut seen = None;
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        device.with_dma(&mut block, Direction::FromDevice, |mapping| {
            seen = Some(mapping.sg_list()[0].device_addr);
            panic!("the driver panicked mid-transfer");
        })
    }));
    assert!(unwound.is_err());
    assert_eq!(emulated.leaks(), vec![], "unmapped while unwinding");
    device_writes(&regs, seen.unwrap(), 1, 1);
    assert_eq!(emulated.faults().len(), 1);
    assert_eq!(block, [0u8; 64]);
    drop((regs, device));
    emulated.finish().unwrap();
}

#[test]
fn a_forgotten_owned_mapping_leaks_its_buffer_which_is_never_reused() {
    let (emulated, device, regs) = setup();
    let block = vec![0u8; 200];
    let leaked = block.as_ptr() as usize;
    let mapping = device.map_dma(block, Direction::FromDevice).unwrap();
    let iova = mapping.sg_list()[0].device_addr;
    std::mem::forget(mapping); // safe code; the buffer goes with it
    // The review's victim allocations: none may get the leaked bytes.
    let victims: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 200]).collect();
    for victim in &victims {
        let start = victim.as_ptr() as usize;
        assert!(
            start + 200 <= leaked || leaked + 200 <= start,
            "an allocation reused the leaked buffer"
        );
    }
    // The device's write still lands, in the leaked memory only.
    device_writes(&regs, iova, 200, 9);
    assert_eq!(device_reads(&regs, iova, 8), [9u8; 8]);
    assert!(victims.iter().all(|v| v.iter().all(|b| *b == 1)));
    drop((regs, device));
    let report = emulated.finish().expect_err("the forgotten mapping");
    assert_eq!(report.leaks.len(), 1);
    assert_eq!(report.leaks[0].kind, LeakKind::Mapping);
}

#[test]
fn a_failed_unmap_of_an_owned_buffer_leaks_it_instead_of_returning_it() {
    let (emulated, device, regs) = setup();
    let mapping = device
        .map_dma(vec![7u8; 300], Direction::Bidirectional)
        .unwrap();
    let iova = mapping.sg_list()[0].device_addr;
    emulated.fail_next(DmaOp::Unmap, libc::EBUSY);
    assert!(matches!(mapping.unmap(), Err(DmaError::Unmap { .. })));
    // Still mapped, and the memory still exists for the device to write.
    device_writes(&regs, iova, 300, 3);
    assert_eq!(device_reads(&regs, iova + 292, 8), [3u8; 8]);
    assert_eq!(emulated.faults(), vec![]);
    assert_eq!(
        emulated.leaks().len(),
        1,
        "still mapped while the device is open"
    );
    // Closing the device ends its IOMMU domain, and with it the mapping (as
    // closing a VFIO container does); the buffer itself stays leaked.
    drop((regs, device));
    emulated.finish().unwrap();
}

#[test]
fn a_device_write_to_a_to_device_mapping_is_refused_and_recorded() {
    let (emulated, device, regs) = setup();
    let outgoing = vec![3u8; 500];
    device
        .with_dma_to_device(&outgoing, |mapping| {
            let iova = mapping.sg_list()[0].device_addr;
            assert_eq!(device_reads(&regs, iova, 8), [3u8; 8]);
            device_writes(&regs, iova, 1, 0);
        })
        .unwrap();
    assert!(matches!(
        emulated.faults()[..],
        [DmaFault::ReadOnly { len: 1, .. }]
    ));
    assert!(outgoing.iter().all(|b| *b == 3));
    drop((regs, device));
    emulated.finish().unwrap();
}

#[test]
fn a_dropped_buffer_is_unmapped_before_its_memory_goes() {
    let (emulated, device, regs) = setup();
    let buffer = device.alloc_dma(4096).unwrap();
    let iova = buffer.device_addr();
    device_writes(&regs, iova + 8, 6, b'd');
    let mut seen = [0u8; 6];
    buffer.read_bytes(8, &mut seen).unwrap();
    assert_eq!(&seen, b"dddddd");
    drop(buffer);
    assert_eq!(emulated.leaks(), vec![]);
    device_writes(&regs, iova, 1, 1);
    assert_eq!(emulated.faults().len(), 1);
    drop((regs, device));
    emulated.finish().unwrap();
}

#[test]
fn a_cpu_owned_buffer_gives_slices_and_goes_back_to_the_device() {
    let (emulated, device, regs) = setup();
    let buffer = device.alloc_dma(4096).unwrap();
    let iova = buffer.device_addr();
    // SAFETY: the model starts no DMA while the CPU owns the buffer.
    let mut cpu = unsafe { buffer.into_cpu() };
    cpu.as_mut_slice()[..5].copy_from_slice(b"hello");
    let buffer = cpu.into_device();
    assert_eq!(device_reads(&regs, iova, 5), b"hello");
    assert_eq!(buffer.device_addr(), iova, "the address is back");
    drop((buffer, regs, device));
    emulated.finish().unwrap();
}

#[test]
fn threads_writing_one_word_of_a_shared_buffer_race_atomically() {
    let (emulated, device, regs) = setup();
    let buffer = device.alloc_dma(4096).unwrap();
    std::thread::scope(|s| {
        for value in [1u64, 2] {
            let buffer = &buffer;
            s.spawn(move || {
                for _ in 0..10_000 {
                    buffer.write::<u64>(0, value).unwrap();
                    let seen = buffer.read::<u64>(0).unwrap();
                    assert!(seen == 1 || seen == 2, "torn value {seen:#x}");
                }
            });
        }
    });
    let word = u64::from_le_bytes(
        device_reads(&regs, buffer.device_addr(), 8)
            .try_into()
            .unwrap(),
    );
    assert!(word == 1 || word == 2);
    drop((buffer, regs, device));
    emulated.finish().unwrap();
}

/// Run in a child process by the test below: the kernel refusing to unmap a
/// lent buffer must abort the process, never return the memory.
#[test]
#[ignore = "run in a child process by the test below"]
fn refused_unmap_of_a_lent_buffer_child() {
    let (emulated, device, _regs) = setup();
    let mut block = vec![0u8; 64];
    emulated.fail_next(DmaOp::Unmap, libc::EBUSY);
    let _ = device.with_dma(&mut block, Direction::FromDevice, |_| ());
    // Not reached: `with_dma` aborts.
    println!("with_dma returned after a refused unmap");
}

#[test]
fn a_refused_unmap_of_a_lent_buffer_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let me = std::env::current_exe().unwrap();
    let out = std::process::Command::new(me)
        .args([
            "--exact",
            "refused_unmap_of_a_lent_buffer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("with_dma returned"), "{stdout}");
    assert!(
        stderr.contains("refused to unmap a lent buffer"),
        "{stderr}"
    );
}
