//! The edu driver's suite: one source, run unchanged against QEMU's real edu
//! device in the VM (over VFIO in the IOMMU boot, over usrdma in the boot
//! without one: `guest_edu.rs`, `guest_noiommu_edu.rs`) and on the host
//! against the edu model (`emulated_edu.rs`). The file that includes it
//! provides `edu_test!` (how a test is declared and run there) and a `rig`
//! module: opening edu, taking it away as an unbind does, and the measure
//! of what the process holds.

use std::time::Duration;
use usrdrv::dma::{Direction, DmaError};
use usrdrv::irq::{IrqError, IrqKind};
use usrdrv::mmio::MmioError;
use usrdrv_edu::{DMA_MASK_BITS, EduError, Transfer};

use super::rig::{
    RESOURCES, assert_unbound, edu_address, holds_memory, open, pattern, reopen, resources,
    unbind_in_background,
};

edu_test! {
fn identification_liveness_and_factorial() {
    let edu = open();
    assert_eq!(edu.identification().unwrap(), (1, 0));
    assert_eq!(edu.liveness(0x0f0f_0f0f).unwrap(), 0xf0f0_f0f0);
    assert_eq!(edu.factorial(0).unwrap(), 1);
    assert_eq!(edu.factorial(5).unwrap(), 120);
    assert_eq!(edu.factorial(12).unwrap(), 479_001_600);
}
}

edu_test! {
fn dma_buffer_round_trip_through_the_device() {
    let edu = open();
    let data = pattern(3000, 7);
    let source = edu.device().alloc_dma(4096).unwrap();
    let sink = edu.device().alloc_dma(8192).unwrap();
    assert!(source.device_addr() + 4096 <= 1 << DMA_MASK_BITS);
    assert!(sink.device_addr() + 8192 <= 1 << DMA_MASK_BITS);
    source.write_bytes(100, &data).unwrap();
    edu.buffer_to_window(&source, 100, 5, data.len()).unwrap();
    edu.window_to_buffer(5, &sink, 4000, data.len()).unwrap();
    let mut back = vec![0xffu8; 8192];
    sink.read_bytes(0, &mut back).unwrap();
    assert_eq!(&back[4000..7000], &data[..]);
    assert!(
        back[..4000].iter().all(|b| *b == 0),
        "nothing before the range"
    );
    assert!(
        back[7000..].iter().all(|b| *b == 0),
        "nothing after the range"
    );
}
}

edu_test! {
fn typed_and_atomic_accesses_reach_the_device() {
    use std::sync::atomic::Ordering;
    use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

    #[derive(FromBytes, IntoBytes, Immutable, Debug, PartialEq, Eq, Clone, Copy)]
    #[repr(C)]
    struct Entry {
        addr: u64,
        len: u32,
        flags: u16,
        tag: u16,
    }

    let edu = open();
    let ring = edu.device().alloc_dma(4096).unwrap();
    let entries: Vec<Entry> = (0..8u16)
        .map(|i| Entry {
            addr: 0x1000 * u64::from(i),
            len: 512 + u32::from(i),
            flags: 1,
            tag: i,
        })
        .collect();
    // An unaligned offset, written through a part of the buffer.
    let part = ring.slice(5, 8 * 16).unwrap();
    assert_eq!(part.device_addr(), ring.device_addr() + 5);
    part.write_array(0, &entries).unwrap();
    ring.store::<u32>(4092, 0xc0de, Ordering::Release).unwrap();
    // Through the device and back: the bytes are the structures' bytes.
    edu.buffer_to_window(&ring, 0, 0, 4000).unwrap();
    let copy = edu.device().alloc_dma(4096).unwrap();
    edu.window_to_buffer(0, &copy, 0, 4000).unwrap();
    let mut back = [Entry::new_zeroed(); 8];
    copy.slice(5, 8 * 16)
        .unwrap()
        .read_array(0, &mut back)
        .unwrap();
    assert_eq!(&back[..], &entries[..]);
    assert_eq!(copy.read_obj::<Entry>(5 + 16 * 3).unwrap(), entries[3]);
    assert_eq!(ring.load::<u32>(4092, Ordering::Acquire).unwrap(), 0xc0de);
    assert!(matches!(
        part.write::<u32>(8 * 16, 0),
        Err(DmaError::OutOfBounds { .. })
    ));
}
}

edu_test! {
fn cpu_owned_state_round_trip() {
    let edu = open();
    // SAFETY: the buffer's device address has not been given to the device.
    let mut buffer = unsafe { edu.device().alloc_dma(4096).unwrap().into_cpu() };
    assert!(
        buffer.as_slice().iter().all(|b| *b == 0),
        "fresh buffers are zeroed"
    );
    buffer.as_mut_slice()[..4].copy_from_slice(b"edu!");
    let buffer = buffer.into_device();
    edu.buffer_to_window(&buffer, 0, 0, 4).unwrap();
    edu.window_to_buffer(0, &buffer, 8, 4).unwrap();
    // SAFETY: both transfers completed (the driver waited for edu's DMA
    // engine to go idle) and no other is started while the CPU owns it.
    let buffer = unsafe { buffer.into_cpu() };
    assert_eq!(&buffer.as_slice()[..12], b"edu!\0\0\0\0edu!");
}
}

edu_test! {
fn mapped_caller_buffers_at_any_offset_and_length() {
    let edu = open();
    // Unaligned heads and tails, lengths from 1 to 4095, spanning page boundaries.
    for (offset, len) in [
        (0usize, 1usize),
        (1, 4095),
        (4095, 2),
        (123, 1000),
        (4000, 300),
        (2048, 4095),
    ] {
        let data = pattern(len, offset as u8);
        let mut outgoing = vec![0xeeu8; offset + len + 64];
        outgoing[offset..offset + len].copy_from_slice(&data);
        let window = (4095 - len as u64) / 2;
        let base = outgoing.as_ptr() as u64;
        edu.device()
            .with_dma_to_device(&outgoing[offset..offset + len], |mapping| {
                let sg = mapping.sg_list();
                assert_eq!(
                    sg.iter().map(|e| e.len).sum::<usize>(),
                    len,
                    "the list covers exactly the bytes"
                );
                let first = sg[0].device_addr;
                assert_eq!(
                    first % 4096,
                    (base + offset as u64) % 4096,
                    "sub-page offset kept"
                );
                edu.mapping_to_window(mapping, window).unwrap();
            })
            .unwrap();
        let mut incoming = vec![0x55u8; offset + len + 64];
        edu.device()
            .with_dma(
                &mut incoming[offset..offset + len],
                Direction::FromDevice,
                |mapping| edu.window_to_mapping(window, mapping),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            &incoming[offset..offset + len],
            &data[..],
            "offset {offset} len {len}"
        );
        assert!(
            incoming[..offset].iter().all(|b| *b == 0x55),
            "nothing written before the buffer"
        );
        assert!(
            incoming[offset + len..].iter().all(|b| *b == 0x55),
            "nothing written after the buffer"
        );
    }
}
}

edu_test! {
fn owned_buffers_come_back_after_unmap() {
    let edu = open();
    let data = pattern(777, 3);
    let mapping = edu
        .device()
        .map_dma(data.clone(), Direction::ToDevice)
        .unwrap();
    edu.mapping_to_window(&mapping, 1).unwrap();
    assert_eq!(mapping.unmap().unwrap(), data);
    let mapping = edu
        .device()
        .map_dma(vec![0u8; 777].into_boxed_slice(), Direction::FromDevice)
        .unwrap();
    edu.window_to_mapping(1, &mapping).unwrap();
    assert_eq!(&mapping.unmap().unwrap()[..], &data[..]);
}
}

edu_test! {
fn read_only_buffers_cannot_be_mapped_for_the_device_to_write() {
    static DATA: [u8; 16] = [1u8; 16];
    let edu = open();
    match edu.device().map_dma(&DATA[..], Direction::FromDevice) {
        Err(DmaError::ReadOnly { .. }) => {}
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    // A 'static read-only buffer maps for the device to read.
    let mapping = edu
        .device()
        .map_dma(&DATA[..], Direction::ToDevice)
        .unwrap();
    edu.mapping_to_window(&mapping, 0).unwrap();
    assert_eq!(mapping.unmap().unwrap(), &DATA[..]);
    assert!(matches!(
        edu.device().map_dma(Vec::new(), Direction::ToDevice),
        Err(DmaError::Empty)
    ));
}
}

edu_test! {
fn transfers_outside_the_window_are_refused_before_reaching_qemu() {
    let edu = open();
    let buffer = edu.device().alloc_dma(8192).unwrap();
    let addr = buffer.device_addr();
    // The QEMU 7.2 abort case: ending exactly at 0x41000.
    for (offset, len) in [
        (0, 4096),
        (4095, 1),
        (1, 4095),
        (0, 0),
        (4096, 1),
        (u64::MAX, 2),
    ] {
        match edu.transfer(Transfer::ToDevice, addr, offset, len) {
            Err(EduError::Window { .. }) => {}
            other => panic!("offset {offset} len {len}: expected Window, got {other:?}"),
        }
    }
    assert!(matches!(
        edu.buffer_to_window(&buffer, 8000, 0, 200),
        Err(EduError::BufferRange { .. })
    ));
    assert!(matches!(
        edu.transfer(Transfer::ToDevice, 1 << 28, 0, 1),
        Err(EduError::Unreachable { .. })
    ));
    // The largest legal transfers still work.
    edu.transfer(Transfer::ToDevice, addr, 0, 4095).unwrap();
    edu.transfer(Transfer::FromDevice, addr, 4094, 1).unwrap();
}
}

edu_test! {
fn buffers_outlive_the_device_and_everything_is_released_after() {
    let address = edu_address();
    let edu = reopen(address).unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    let data = vec![0x5au8; 64];
    let mapping = edu.device().map_dma(data, Direction::ToDevice).unwrap();
    drop(edu);
    // The buffer and mapping keep the device's DMA context (the IOMMU domain,
    // or the usrdma file) alive: still usable.
    buffer.write_bytes(0, b"still here").unwrap();
    drop(mapping);
    drop(buffer);
    // With every handle gone the group is free again.
    let again = reopen(address).expect("reopen after everything is dropped");
    assert_eq!(again.identification().unwrap(), (1, 0));
}
}

edu_test! {
fn factorial_completes_by_msi() {
    let mut edu = open();
    assert_eq!(edu.device().irq_info(IrqKind::Msi).unwrap().count, 1);
    assert_eq!(
        edu.device().irq_info(IrqKind::Msix).unwrap().count,
        0,
        "edu has no MSI-X"
    );
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    for n in [1, 5, 10] {
        let expected: u32 = (1..=n).product();
        assert_eq!(edu.factorial_with_interrupt(n).unwrap(), expected);
    }
    // Raised by software too, many times, none lost.
    for _ in 0..100 {
        edu.raise_interrupt(0x1000).unwrap();
    }
}
}

edu_test! {
fn factorial_completes_by_intx_with_unmask() {
    let mut edu = open();
    let info = edu.device().irq_info(IrqKind::Intx).unwrap();
    assert_eq!(info.count, 1);
    assert!(info.automasked, "the kernel masks INTx on delivery");
    edu.enable_interrupts(IrqKind::Intx).unwrap();
    // Several in a row: each needs the unmask after the acknowledge.
    for n in [3, 4, 6] {
        let expected: u32 = (1..=n).product();
        assert_eq!(edu.factorial_with_interrupt(n).unwrap(), expected);
    }
}
}

edu_test! {
fn interrupt_waits_time_out_and_bad_requests_are_errors() {
    let mut edu = open();
    assert!(matches!(
        edu.factorial_with_interrupt(3),
        Err(EduError::NoInterrupts)
    ));
    assert!(matches!(
        edu.device().enable_interrupts(IrqKind::Msix, 1),
        Err(IrqError::NotEnoughVectors { available: 0, .. })
    ));
    assert!(matches!(
        edu.device().enable_interrupts(IrqKind::Msi, 2),
        Err(IrqError::NotEnoughVectors {
            asked: 2,
            available: 1,
            ..
        })
    ));
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    let irqs = edu.interrupts().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(irqs.wait(0, Some(Duration::from_millis(50))).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(matches!(
        irqs.wait(1, None),
        Err(IrqError::NoSuchVector {
            vector: 1,
            count: 1
        })
    ));
    assert_eq!(irqs.try_wait(0).unwrap(), None);
}
}

edu_test! {
fn unbinding_revokes_the_device_and_waiters_are_told() {
    let address = edu_address();
    let mut edu = reopen(address).unwrap();
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    let regs = edu.device().bar(0).unwrap();
    let view = regs.view::<4096>().unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    // The unbind runs aside: if the device were not given back while the
    // handles below are alive, it would block in the kernel.
    let unbound = unbind_in_background(address);
    let waited = edu
        .interrupts()
        .unwrap()
        .wait(0, Some(Duration::from_secs(30)));
    assert!(
        matches!(waited, Err(IrqError::Revoked { .. })),
        "{waited:?}"
    );
    assert!(edu.device().is_revoked());
    let result = unbound.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(result, Ok(Ok(()))),
        "the unbind completes while the driver still holds every handle: {result:?}"
    );
    assert!(matches!(regs.read32(0), Err(MmioError::Revoked { .. })));
    assert!(matches!(
        regs.view::<4096>(),
        Err(MmioError::Revoked { .. })
    ));
    // A driver that has not looked yet does not crash: a view made before the
    // revocation reads all-ones, as a vanished device would, and DMA memory
    // stays accessible.
    let id = view.read::<u32, 0>();
    assert_eq!(id, 0xffff_ffff, "{id:#x}");
    view.write::<u32, 4>(1);
    buffer
        .read::<u32>(0)
        .expect("DMA memory survives the revocation");
    drop(buffer);
    assert!(matches!(
        edu.device().alloc_dma(4096),
        Err(DmaError::Revoked { .. })
    ));
    drop(regs);
    drop(edu);
    assert_unbound(address);
    // And the device comes back for the next user.
    let again = open();
    assert_eq!(again.identification().unwrap(), (1, 0));
}
}

edu_test! {
fn pool_chunks_are_distinct_reusable_and_reach_the_device() {
    let edu = open();
    assert!(matches!(
        edu.device().dma_pool(4096, usize::MAX),
        Err(DmaError::TooLarge {
            what: "the pool",
            ..
        })
    ));
    let pool = edu.device().dma_pool(4000, 16).unwrap();
    assert_eq!(pool.chunk_size(), 4032, "rounded up to 64 bytes");
    let chunks: Vec<_> = (0..16).map(|_| pool.alloc().unwrap()).collect();
    assert_eq!(pool.available(), 0);
    assert!(matches!(
        pool.alloc(),
        Err(DmaError::PoolExhausted { chunks: 16, .. })
    ));
    let mut addrs: Vec<u64> = chunks.iter().map(|c| c.device_addr()).collect();
    addrs.sort();
    assert!(
        addrs.windows(2).all(|w| w[1] - w[0] == 4032),
        "chunks do not overlap"
    );
    assert!(matches!(
        chunks[0].write_bytes(4000, &[0; 64]),
        Err(DmaError::OutOfBounds { .. })
    ));
    // A chunk is real DMA memory.
    chunks[3].write_bytes(10, b"pooled").unwrap();
    edu.transfer(Transfer::ToDevice, chunks[3].device_addr() + 10, 0, 6)
        .unwrap();
    edu.transfer(Transfer::FromDevice, chunks[9].device_addr(), 0, 6)
        .unwrap();
    let mut got = [0u8; 6];
    chunks[9].read_bytes(0, &mut got).unwrap();
    assert_eq!(&got, b"pooled");
    // Returned chunks are handed out again.
    let again = chunks[5].device_addr();
    drop(chunks);
    assert_eq!(pool.available(), 16);
    let all: Vec<_> = (0..16).map(|_| pool.alloc().unwrap()).collect();
    assert!(all.iter().any(|c| c.device_addr() == again));
}
}

edu_test! {
fn named_buffers_alloc_get_list_free() {
    let edu = open();
    let names = edu.device().named_buffers().unwrap();
    let ring = names.alloc("rx-ring", 8192).unwrap();
    names.alloc("cmd", 100).unwrap();
    assert!(matches!(
        names.alloc("rx-ring", 4096),
        Err(DmaError::NameTaken { .. })
    ));
    assert!(matches!(
        names.alloc("bad name", 4096),
        Err(DmaError::BadName { .. })
    ));
    assert_eq!(
        names.get("rx-ring").unwrap().device_addr(),
        ring.device_addr()
    );
    let list = names.list();
    assert_eq!(
        list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["cmd", "rx-ring"]
    );
    assert_eq!(list[0].size, 4096, "rounded up to a page");
    assert_eq!(list[1].size, 8192);
    assert!(
        list.iter()
            .all(|i| i.device_addr + i.size as u64 <= 1 << DMA_MASK_BITS)
    );
    // A named buffer is real DMA memory.
    ring.write_bytes(0, b"named").unwrap();
    edu.buffer_to_window(&ring, 0, 0, 5).unwrap();
    edu.window_to_buffer(0, &names.get("cmd").unwrap(), 0, 5)
        .unwrap();
    let mut got = [0u8; 5];
    names.get("cmd").unwrap().read_bytes(0, &mut got).unwrap();
    assert_eq!(&got, b"named");
    names.free("rx-ring").unwrap();
    assert!(names.get("rx-ring").is_none());
    assert!(matches!(
        names.free("rx-ring"),
        Err(DmaError::NoSuchName { .. })
    ));
    ring.write_bytes(0, b"held").unwrap(); // still valid while a handle lives
    names.free_all();
    assert!(names.list().is_empty());
}
}

edu_test! {
fn a_thousand_cycles_leave_locked_memory_and_fds_where_they_were() {
    // A thousand of each: any per-cycle leak (a page, a descriptor) shows
    // a thousand times over, at a tenth of the VM time of ten thousand.
    const CYCLES: usize = 1_000;
    let address = edu_address();
    let before = resources();
    {
        let edu = reopen(address).unwrap();
        let mut memory = vec![0u8; 3 * 4096];
        edu.device()
            .with_dma(&mut memory[..], Direction::Bidirectional, |held| {
                assert!(
                    holds_memory(held, &before),
                    "the mapping shows in the measure: the measure works"
                );
            })
            .unwrap();
        for i in 0..CYCLES {
            edu.device()
                .with_dma(
                    &mut memory[i % 4096..i % 4096 + 5000],
                    Direction::Bidirectional,
                    |_| {},
                )
                .unwrap();
        }
    }
    for _ in 0..CYCLES {
        let edu = reopen(address).unwrap();
        drop(edu);
    }
    assert_eq!(
        resources(),
        before,
        "{RESOURCES} after {CYCLES} map/unmap and open/close cycles"
    );
}
}
