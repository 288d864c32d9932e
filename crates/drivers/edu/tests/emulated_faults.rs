//! What no VM can make happen, on the host: the edu driver against the edu
//! model with faults injected by usrdrv's emulated backend — the device
//! revoked at every step of a workload, allocations and mappings failing at
//! every call site, lost, late and duplicated interrupts, slow and corrupted
//! DMA — and what the emulated IOMMU catches: DMA to memory the driver no
//! longer maps, writes to read-only mappings, leaks.

use std::time::{Duration, Instant};

use usrdrv::Device;
use usrdrv::dma::{Direction, DmaError, DmaMask};
use usrdrv::emulated::{DmaFault, DmaOp, EmulatedDevice, LeakKind};
use usrdrv::irq::IrqKind;
use usrdrv::mmio::MmioError;
use usrdrv_edu::model::{EduModel, Quirks};
use usrdrv_edu::{DMA_MASK_BITS, Edu, EduError, Transfer};

fn open(emulated: &EmulatedDevice) -> Result<Edu, EduError> {
    Edu::from_device(Device::emulated(emulated, DmaMask::new(DMA_MASK_BITS)?)?)
}

/// A driver's whole life: open, interrupts, a DMA buffer, mapped caller
/// memory both ways, a pool, a named buffer, a factorial by interrupt.
fn workload(emulated: &EmulatedDevice) -> Result<(), EduError> {
    let mut edu = open(emulated)?;
    edu.enable_interrupts(IrqKind::Msi)?;
    let buffer = edu.device().alloc_dma(4096)?;
    buffer.write_bytes(0, b"through edu")?;
    edu.buffer_to_window(&buffer, 0, 0, 11)?;
    let huge = edu.device().alloc_dma_huge(4096)?;
    edu.window_to_buffer(0, &huge, 100, 11)?;
    let pool = edu.device().dma_pool(512, 4)?;
    let chunk = pool.alloc()?;
    edu.window_to_buffer(0, &chunk, 0, 11)?;
    let names = edu.device().named_buffers()?;
    let named = names.alloc("ring", 4096)?;
    edu.window_to_buffer(0, &named, 0, 11)?;
    let mapping = edu.device().map_dma(vec![0u8; 11], Direction::FromDevice)?;
    edu.window_to_mapping(0, &mapping)?;
    let back = mapping.unmap()?;
    assert_eq!(&back, b"through edu");
    let mut block = [0u8; 11];
    edu.device()
        .with_dma(&mut block, Direction::FromDevice, |m| {
            edu.window_to_mapping(0, m)
        })??;
    assert_eq!(&block, b"through edu");
    edu.device()
        .with_dma_to_device(b"second pass", |m| edu.mapping_to_window(m, 0))??;
    assert_eq!(edu.factorial_with_interrupt(6)?, 720);
    let mut got = [0u8; 11];
    named.read_bytes(0, &mut got)?;
    assert_eq!(&got, b"through edu");
    Ok(())
}

#[test]
fn the_workload_runs_clean_and_leaves_nothing() {
    let emulated = EmulatedDevice::new(EduModel::new());
    workload(&emulated).unwrap();
    assert!(emulated.operations() > 50, "{}", emulated.operations());
    assert_eq!(emulated.faults(), vec![]);
    assert_eq!(emulated.interrupts_lost(), 0);
    emulated.finish().unwrap();
}

#[test]
fn a_revocation_at_every_step_gives_revoked_and_leaks_nothing() {
    let clean = EmulatedDevice::new(EduModel::new());
    workload(&clean).unwrap();
    let steps = clean.operations();
    clean.finish().unwrap();
    for step in 1..=steps {
        let emulated = EmulatedDevice::new(EduModel::new());
        emulated.revoke_after(step);
        let err = workload(&emulated).expect_err("revoked during the workload");
        assert!(err.is_revoked(), "step {step} of {steps}: {err:?}");
        // The model may have tried DMA after the revocation: refused, never
        // written (the IOMMU mappings went with the device).
        for fault in emulated.faults() {
            assert!(
                matches!(fault, DmaFault::NotMapped { .. }),
                "step {step}: {fault}"
            );
        }
        // Given back, the device works again for the next driver.
        workload(&emulated).unwrap_or_else(|e| panic!("step {step}: reopen: {e}"));
        if let Err(report) = emulated.finish() {
            panic!("step {step}: {report}");
        }
    }
}

#[test]
fn a_revocation_from_another_thread_wakes_an_interrupt_wait() {
    let emulated = std::sync::Arc::new(EmulatedDevice::new(EduModel::new()));
    let mut edu = open(&emulated).unwrap();
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    emulated.drop_interrupts(1);
    let revoker = {
        let emulated = std::sync::Arc::clone(&emulated);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            emulated.revoke();
        })
    };
    let started = Instant::now();
    let err = edu.factorial_with_interrupt(3).unwrap_err();
    assert!(err.is_revoked(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken, not timed out"
    );
    revoker.join().unwrap();
    let regs = edu.device().bar(0);
    assert!(regs.is_err(), "no new BAR on a revoked device");
    drop(edu);
    std::sync::Arc::into_inner(emulated)
        .unwrap()
        .finish()
        .unwrap();
}

/// Every allocation or mapping of the workload, failing in turn with
/// `errno`, surfaces as the typed error `expected` says, and nothing leaks.
fn fail_each(op: DmaOp, errno: i32, expected: fn(&DmaError) -> bool) {
    let mut n = 1;
    loop {
        let emulated = EmulatedDevice::new(EduModel::new());
        emulated.fail_nth(op, n, errno);
        match workload(&emulated) {
            Ok(()) => {
                assert!(n > 3, "{op:?}: the workload has several call sites");
                emulated.finish().expect("nothing leaked");
                return;
            }
            Err(EduError::Dma(e)) => assert!(expected(&e), "{op:?} #{n}: {e:?}"),
            Err(e) => panic!("{op:?} #{n}: not a DMA error: {e:?}"),
        }
        workload(&emulated).unwrap_or_else(|e| panic!("{op:?} #{n}: then: {e}"));
        if let Err(report) = emulated.finish() {
            panic!("{op:?} #{n}: {report}");
        }
        n += 1;
    }
}

fn errno_of(e: &DmaError) -> Option<i32> {
    let source = std::error::Error::source(e)?;
    source.downcast_ref::<std::io::Error>()?.raw_os_error()
}

#[test]
fn an_allocation_failure_at_every_call_site_is_a_typed_error() {
    fail_each(DmaOp::Alloc, libc::ENOMEM, |e| {
        matches!(e, DmaError::MemlockLimit { .. }) || errno_of(e) == Some(libc::ENOMEM)
    });
    fail_each(DmaOp::Alloc, libc::EPERM, |e| {
        matches!(e, DmaError::Map { .. }) && errno_of(e) == Some(libc::EPERM)
    });
}

#[test]
fn a_mapping_failure_at_every_call_site_is_a_typed_error() {
    fail_each(DmaOp::Map, libc::ENOSPC, |e| {
        matches!(e, DmaError::MappingLimit)
    });
    fail_each(DmaOp::Map, libc::ENOMEM, |e| {
        matches!(e, DmaError::MemlockLimit { .. }) || errno_of(e) == Some(libc::ENOMEM)
    });
}

#[test]
fn a_small_iova_space_runs_out_with_a_typed_error() {
    let emulated = EmulatedDevice::with_iova_space(EduModel::new(), 16 * 4096);
    let edu = open(&emulated).unwrap();
    let buffers: Vec<_> = (0..16)
        .map(|_| edu.device().alloc_dma(4096).unwrap())
        .collect();
    assert!(matches!(
        edu.device().alloc_dma(4096),
        Err(DmaError::Iova(_))
    ));
    assert!(matches!(
        edu.device().map_dma(vec![0u8; 10], Direction::ToDevice),
        Err(DmaError::Iova(_))
    ));
    drop(buffers);
    edu.device()
        .alloc_dma(4096)
        .expect("space comes back when freed");
    drop(edu);
    emulated.finish().unwrap();
}

#[test]
fn a_lost_interrupt_times_out_cleanly_and_the_next_one_works() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let mut edu = open(&emulated).unwrap();
    edu.set_timeout(Duration::from_millis(100));
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    emulated.drop_interrupts(1);
    let started = Instant::now();
    match edu.factorial_with_interrupt(4) {
        Err(EduError::Timeout {
            what: "interrupt", ..
        }) => {}
        other => panic!("expected an interrupt timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(emulated.interrupts_lost(), 1);
    // The device did finish: the result is there, and the next interrupt comes.
    assert_eq!(edu.factorial_with_interrupt(5).unwrap(), 120);
    drop(edu);
    emulated.finish().unwrap();
}

#[test]
fn late_and_duplicated_interrupts_are_absorbed() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let mut edu = open(&emulated).unwrap();
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    emulated.delay_interrupts(Duration::from_millis(60));
    let started = Instant::now();
    assert_eq!(edu.factorial_with_interrupt(3).unwrap(), 6);
    assert!(started.elapsed() >= Duration::from_millis(60));
    emulated.delay_interrupts(Duration::ZERO);
    emulated.duplicate_interrupts(1);
    assert_eq!(edu.factorial_with_interrupt(4).unwrap(), 24);
    assert_eq!(edu.factorial_with_interrupt(5).unwrap(), 120);
    drop(edu);
    emulated.finish().unwrap();
}

#[test]
fn slow_dma_times_out_and_completes_later() {
    let emulated = EmulatedDevice::new(EduModel::with_quirks(Quirks {
        completion_delay: Duration::from_millis(20),
        ..Quirks::default()
    }));
    let mut edu = open(&emulated).unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    buffer.write_bytes(0, b"slow").unwrap();
    emulated.delay_dma(Duration::from_millis(200));
    edu.set_timeout(Duration::from_millis(50));
    assert!(matches!(
        edu.buffer_to_window(&buffer, 0, 0, 4),
        Err(EduError::Timeout { what: "DMA", .. })
    ));
    emulated.delay_dma(Duration::ZERO);
    edu.set_timeout(Duration::from_secs(5));
    // The next transfer waits for the late one, then runs.
    edu.window_to_buffer(0, &buffer, 8, 4).unwrap();
    let mut got = [0u8; 4];
    buffer.read_bytes(8, &mut got).unwrap();
    assert_eq!(&got, b"slow");
    drop((buffer, edu));
    emulated.finish().unwrap();
}

#[test]
fn a_corrupted_transfer_lands_corrupted() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    buffer.write_bytes(0, &[0x0f; 8]).unwrap();
    edu.buffer_to_window(&buffer, 0, 0, 8).unwrap();
    emulated.corrupt_dma_writes(1);
    edu.window_to_buffer(0, &buffer, 64, 8).unwrap();
    edu.window_to_buffer(0, &buffer, 128, 8).unwrap();
    let mut got = [0u8; 8];
    buffer.read_bytes(64, &mut got).unwrap();
    assert_eq!(got, [0xf0; 8], "the injected corruption");
    buffer.read_bytes(128, &mut got).unwrap();
    assert_eq!(got, [0x0f; 8], "only the next write");
    drop((buffer, edu));
    emulated.finish().unwrap();
}

#[test]
fn dma_after_unmap_or_free_is_a_fault_never_a_write() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    let stale = {
        let mapping = edu
            .device()
            .map_dma(vec![0u8; 64], Direction::FromDevice)
            .unwrap();
        let addr = mapping.sg_list()[0].device_addr;
        let memory = mapping.unmap().unwrap();
        assert!(memory.iter().all(|b| *b == 0));
        addr
    };
    edu.transfer(Transfer::FromDevice, stale, 0, 64).unwrap();
    let freed = edu.device().alloc_dma(4096).unwrap().device_addr();
    edu.transfer(Transfer::FromDevice, freed, 0, 64).unwrap();
    let faults = emulated.take_faults();
    assert_eq!(
        faults,
        vec![
            DmaFault::NotMapped {
                addr: stale,
                len: 64,
                write: true
            },
            DmaFault::NotMapped {
                addr: freed,
                len: 64,
                write: true
            }
        ]
    );
    drop(edu);
    emulated.finish().unwrap();
}

#[test]
fn a_read_only_mapping_refuses_the_device_s_writes() {
    static DATA: [u8; 32] = [7u8; 32];
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    let mapping = edu
        .device()
        .map_dma(&DATA[..], Direction::ToDevice)
        .unwrap();
    let addr = mapping.sg_list()[0].device_addr;
    edu.mapping_to_window(&mapping, 0).unwrap();
    edu.transfer(Transfer::FromDevice, addr, 100, 32).unwrap();
    assert_eq!(
        emulated.faults(),
        vec![DmaFault::ReadOnly { addr, len: 32 }]
    );
    assert_eq!(mapping.unmap().unwrap(), &DATA[..]);
    drop(edu);
    emulated.finish().unwrap();
}

#[test]
fn a_dead_owner_s_late_dma_faults_instead_of_reaching_the_next_owner() {
    let emulated = EmulatedDevice::new(EduModel::with_quirks(Quirks {
        completion_delay: Duration::from_millis(100),
        ..Quirks::default()
    }));
    {
        // An owner starts a transfer into its buffer and goes away before it
        // completes (its handles dropped, as at a process's death).
        let edu = open(&emulated).unwrap();
        let buffer = edu.device().alloc_dma(4096).unwrap();
        let regs = edu.device().bar(0).unwrap();
        regs.write64(0x80, 0x40000).unwrap();
        regs.write64(0x88, buffer.device_addr()).unwrap();
        regs.write64(0x90, 64).unwrap();
        regs.write64(0x98, 0x3).unwrap();
    }
    // The next owner waits for the engine (Edu::open's quiesce step).
    let edu = open(&emulated).unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    let mut got = [0xffu8; 64];
    buffer.read_bytes(0, &mut got).unwrap();
    assert_eq!(got, [0u8; 64], "nothing landed in the new owner's memory");
    // It completed while the new owner's quiesce step held bus mastering
    // off: the bus dropped it.
    assert!(
        matches!(
            emulated.faults()[..],
            [DmaFault::NoBusMaster {
                write: true,
                len: 64,
                ..
            }]
        ),
        "{:?}",
        emulated.faults()
    );
    drop((buffer, edu));
    emulated.finish().unwrap();
}

#[test]
fn the_leak_check_names_a_forgotten_mapping_and_buffer() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    let mapping = edu
        .device()
        .map_dma(vec![0u8; 100], Direction::ToDevice)
        .unwrap();
    let mapped_at = mapping.sg_list()[0].device_addr;
    std::mem::forget(mapping);
    let buffer = edu.device().alloc_dma(8192).unwrap();
    let buffer_at = buffer.device_addr();
    std::mem::forget(buffer);
    drop(edu);
    let report = emulated.finish().expect_err("two leaks");
    assert_eq!(report.leaks.len(), 2, "{report}");
    let mapping = report
        .leaks
        .iter()
        .find(|l| l.kind == LeakKind::Mapping)
        .unwrap();
    // The IOMMU maps whole pages: the page or two around the 100 bytes.
    let first_page = mapped_at - mapped_at % 4096;
    let span = (mapped_at % 4096 + 100).next_multiple_of(4096);
    assert_eq!((mapping.device_addr, mapping.len), (first_page, span));
    let buffer = report
        .leaks
        .iter()
        .find(|l| l.kind == LeakKind::Buffer)
        .unwrap();
    assert_eq!((buffer.device_addr, buffer.len), (buffer_at, 8192));
    let text = report.to_string();
    assert!(text.contains("mapping never unmapped"), "{text}");
    assert!(text.contains("DMA buffer never freed"), "{text}");
}

#[test]
#[should_panic(expected = "DMA buffer never freed")]
fn dropping_the_emulated_device_with_a_leak_fails_the_test() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    std::mem::forget(edu.device().alloc_dma(4096).unwrap());
    drop(edu);
    drop(emulated);
}

#[test]
fn qemu_7_2_quirks_kill_the_device_on_a_transfer_ending_at_the_window_end() {
    let model = EduModel::with_quirks(Quirks {
        completion_delay: Duration::ZERO,
        ..Quirks::qemu_7_2()
    });
    let emulated = EmulatedDevice::new(model.clone());
    let edu = open(&emulated).unwrap();
    // The driver refuses the transfer that aborts QEMU...
    let buffer = edu.device().alloc_dma(4096).unwrap();
    assert!(matches!(
        edu.transfer(Transfer::ToDevice, buffer.device_addr(), 0, 4096),
        Err(EduError::Window { .. })
    ));
    // ... which the model, like QEMU, dies of when the registers ask for it.
    let regs = edu.device().bar(0).unwrap();
    regs.write64(0x80, buffer.device_addr()).unwrap();
    regs.write64(0x88, 0x40000).unwrap();
    regs.write64(0x90, 4096).unwrap();
    regs.write64(0x98, 0x1).unwrap();
    assert!(model.is_dead());
    assert_eq!(regs.read32(0).unwrap(), 0xffff_ffff);
    drop((regs, buffer, edu));
    emulated.finish().unwrap();
}

#[test]
fn a_bar_view_reads_all_ones_after_revocation_and_bar_accesses_fail() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    let regs = edu.device().bar(0).unwrap();
    let view = regs.view::<0x100>().unwrap();
    assert_eq!(view.read32::<0>(), 0x0100_00ed);
    view.write32::<4>(0x1234);
    assert_eq!(view.read32::<4>(), !0x1234);
    emulated.revoke();
    assert_eq!(view.read32::<0>(), 0xffff_ffff);
    view.write32::<4>(1);
    assert!(matches!(regs.read32(0), Err(MmioError::Revoked { bar: 0 })));
    assert!(matches!(
        regs.view::<0x100>(),
        Err(MmioError::Revoked { .. })
    ));
    assert!(edu.device().is_revoked());
    drop((regs, edu));
    emulated.finish().unwrap();
}

#[test]
fn a_transfer_longer_than_the_mapped_buffer_is_refused_not_spilled_into_its_page() {
    let emulated = EmulatedDevice::new(EduModel::new());
    let edu = open(&emulated).unwrap();
    let mut memory = vec![0x11u8; 300];
    let result = edu
        .device()
        .with_dma(&mut memory[100..200], Direction::FromDevice, |mapping| {
            let addr = mapping.sg_list()[0].device_addr;
            // A driver bug: the length of the whole allocation, not the buffer's.
            edu.transfer(Transfer::FromDevice, addr, 0, 300)?;
            Ok::<u64, EduError>(addr)
        })
        .unwrap();
    let addr = result.unwrap();
    assert_eq!(
        emulated.faults(),
        vec![DmaFault::OutsideBuffer {
            addr,
            len: 300,
            write: true
        }]
    );
    assert!(
        memory.iter().all(|b| *b == 0x11),
        "nothing written around it"
    );
    drop(edu);
    emulated.finish().unwrap();
}
