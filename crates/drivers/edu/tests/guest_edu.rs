//! The edu driver against QEMU's real edu device, through the real kernel's
//! VFIO and emulated IOMMU. Run in the VM by `cargo xtask test`.

use std::time::Duration;
use usrdrv::Device;
use usrdrv::dma::{Backing, Direction, DmaError, DmaMask, IovaError};
use usrdrv::irq::{IrqError, IrqKind};
use usrdrv::mmio::MmioError;
use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};
use usrdrv::vfio::IommuDomain;
use usrdrv_edu::{DMA_MASK_BITS, Edu, EduError, Transfer};

fn edu_address() -> PciAddress {
    let address = Edu::find().expect("the VM has an edu device");
    Sysfs::system()
        .bind(address, VFIO_PCI_DRIVER)
        .expect("bind edu to vfio-pci");
    address
}

fn open() -> Edu {
    Edu::open(edu_address()).expect("open edu")
}

/// A byte pattern that differs for every offset and every seed.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn identification_liveness_and_factorial() {
    let edu = open();
    assert_eq!(edu.identification().unwrap(), (1, 0));
    assert_eq!(edu.liveness(0x0f0f_0f0f).unwrap(), 0xf0f0_f0f0);
    assert_eq!(edu.factorial(0).unwrap(), 1);
    assert_eq!(edu.factorial(5).unwrap(), 120);
    assert_eq!(edu.factorial(12).unwrap(), 479_001_600);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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
    let sink = sink.into_cpu();
    assert_eq!(&sink.as_slice()[4000..7000], &data[..]);
    assert!(
        sink.as_slice()[..4000].iter().all(|b| *b == 0),
        "nothing before the range"
    );
    assert!(
        sink.as_slice()[7000..].iter().all(|b| *b == 0),
        "nothing after the range"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn cpu_owned_state_round_trip() {
    let edu = open();
    let mut buffer = edu.device().alloc_dma(4096).unwrap().into_cpu();
    assert!(
        buffer.as_slice().iter().all(|b| *b == 0),
        "fresh buffers are zeroed"
    );
    buffer.as_mut_slice()[..4].copy_from_slice(b"edu!");
    let buffer = buffer.into_device();
    edu.buffer_to_window(&buffer, 0, 0, 4).unwrap();
    edu.window_to_buffer(0, &buffer, 8, 4).unwrap();
    assert_eq!(&buffer.into_cpu().as_slice()[..12], b"edu!\0\0\0\0edu!");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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
        {
            let mapping = edu
                .device()
                .map_dma(&outgoing[offset..offset + len], Direction::ToDevice)
                .unwrap();
            let sg = mapping.sg_list();
            assert_eq!(
                sg.iter().map(|e| e.len).sum::<usize>(),
                len,
                "the list covers exactly the bytes"
            );
            let first = sg[0].device_addr;
            assert_eq!(
                first % 4096,
                (outgoing.as_ptr() as u64 + offset as u64) % 4096,
                "sub-page offset kept"
            );
            edu.mapping_to_window(&mapping, window).unwrap();
        }
        let mut incoming = vec![0x55u8; offset + len + 64];
        {
            let mapping = edu
                .device()
                .map_dma(&mut incoming[offset..offset + len], Direction::FromDevice)
                .unwrap();
            edu.window_to_mapping(window, &mapping).unwrap();
            mapping.unmap().unwrap();
        }
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn read_only_buffers_cannot_be_mapped_for_the_device_to_write() {
    let edu = open();
    let data = [1u8; 16];
    match edu.device().map_dma(&data[..], Direction::FromDevice) {
        Err(DmaError::ReadOnly { .. }) => {}
        other => panic!("expected ReadOnly, got {other:?}"),
    }
    assert!(matches!(
        edu.device().map_dma(Vec::new(), Direction::ToDevice),
        Err(DmaError::Empty)
    ));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn after_unmap_the_iommu_blocks_dma_to_the_old_address() {
    let edu = open();
    // Put a known pattern in the device's window.
    let data = pattern(512, 9);
    let source = edu.device().alloc_dma(4096).unwrap();
    source.write_bytes(0, &data).unwrap();
    edu.buffer_to_window(&source, 0, 0, 512).unwrap();

    let victim = vec![0xabu8; 512];
    let mapping = edu.device().map_dma(victim, Direction::FromDevice).unwrap();
    let stale = mapping.device_addr().expect("one entry with an IOMMU");
    let victim = mapping.unmap().unwrap();
    // The device writes to the stale address: the IOMMU must stop it.
    edu.transfer(Transfer::FromDevice, stale, 0, 512).unwrap();
    assert!(
        victim.iter().all(|b| *b == 0xab),
        "memory changed after unmap"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn every_address_stays_under_a_small_mask_until_a_clean_exhaustion() {
    let address = edu_address();
    // 20 bits: 1 MiB of device addresses, page 0 excluded.
    let domain = IommuDomain::new(DmaMask::new(20).unwrap()).unwrap();
    let device = Device::open_in(&domain, address).unwrap();
    let mut buffers = Vec::new();
    let err = loop {
        match device.alloc_dma(4096) {
            Ok(buffer) => {
                assert!(
                    buffer.device_addr() + 4096 <= 1 << 20,
                    "{:#x}",
                    buffer.device_addr()
                );
                buffers.push(buffer);
            }
            Err(err) => break err,
        }
    };
    assert!(
        matches!(
            err,
            DmaError::Iova(IovaError::Exhausted { mask_bits: 20, .. })
        ),
        "{err}"
    );
    assert_eq!(buffers.len(), 255);
    assert!(err.to_string().contains("exhausted"), "{err}");
    // Freed addresses are reused.
    let freed = buffers.pop().unwrap().device_addr();
    assert_eq!(device.alloc_dma(4096).unwrap().device_addr(), freed);
    // And the device really does DMA to them.
    let edu = Edu::from_device(device).unwrap();
    let last = buffers.last().unwrap();
    last.write_bytes(0, b"low").unwrap();
    edu.buffer_to_window(last, 0, 0, 3).unwrap();
    edu.window_to_buffer(0, &buffers[0], 0, 3).unwrap();
    let mut got = [0u8; 3];
    buffers[0].read_bytes(0, &mut got).unwrap();
    assert_eq!(&got, b"low");
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn buffers_outlive_the_device_and_everything_is_released_after() {
    let address = edu_address();
    let edu = Edu::open(address).unwrap();
    let buffer = edu.device().alloc_dma(4096).unwrap();
    let data = vec![0x5au8; 64];
    let mapping = edu.device().map_dma(data, Direction::ToDevice).unwrap();
    drop(edu);
    // The buffer and mapping keep the IOMMU domain alive: still usable.
    buffer.write_bytes(0, b"still here").unwrap();
    drop(mapping);
    drop(buffer);
    // With every handle gone the group is free again.
    let again = Edu::open(address).expect("reopen after everything is dropped");
    assert_eq!(again.identification().unwrap(), (1, 0));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn hugepage_buffers_say_what_backs_them() {
    let edu = open();
    let nr_hugepages = "/proc/sys/vm/nr_hugepages";
    let before = std::fs::read_to_string(nr_hugepages).unwrap();
    // Without hugepages reserved, the buffer falls back to 4 KiB pages and says so.
    std::fs::write(nr_hugepages, "0").unwrap();
    let small = edu.device().alloc_dma_huge(3 << 20).unwrap();
    assert_eq!(small.backing(), Backing::Anonymous);
    assert_eq!(small.len(), 3 << 20);
    drop(small);
    // With some reserved, it gets them, rounded up to 2 MiB and 2 MiB-aligned.
    std::fs::write(nr_hugepages, "4").unwrap();
    let buffer = edu.device().alloc_dma_huge(3 << 20).unwrap();
    assert_eq!(buffer.backing(), Backing::HugePages2M);
    assert_eq!(buffer.len(), 4 << 20);
    assert_eq!(buffer.device_addr() % (2 << 20), 0);
    buffer.write_bytes(buffer.len() - 3, b"end").unwrap();
    edu.buffer_to_window(&buffer, buffer.len() - 3, 10, 3)
        .unwrap();
    edu.window_to_buffer(10, &buffer, 0, 3).unwrap();
    let mut got = [0u8; 3];
    buffer.read_bytes(0, &mut got).unwrap();
    assert_eq!(&got, b"end");
    drop(buffer);
    std::fs::write(nr_hugepages, before.trim()).unwrap();
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn unbinding_revokes_the_device_and_waiters_are_told() {
    let address = edu_address();
    let mut edu = Edu::open(address).unwrap();
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    let regs = edu.device().bar(0).unwrap();
    // The kernel's unbind blocks until every handle is released: run it aside.
    let unbind = std::thread::spawn(move || {
        std::fs::write("/sys/bus/pci/drivers/vfio-pci/unbind", address.to_string())
    });
    let waited = edu
        .interrupts()
        .unwrap()
        .wait(0, Some(Duration::from_secs(30)));
    assert!(
        matches!(waited, Err(IrqError::Revoked { .. })),
        "{waited:?}"
    );
    assert!(edu.device().is_revoked());
    assert!(matches!(regs.read32(0), Err(MmioError::Revoked { .. })));
    assert!(matches!(
        edu.device().alloc_dma(4096),
        Err(DmaError::Revoked { .. })
    ));
    drop(regs);
    drop(edu);
    unbind
        .join()
        .unwrap()
        .expect("the unbind completes once the handles are gone");
    assert_eq!(Sysfs::system().driver(address).unwrap(), None);
    // And the device comes back for the next user.
    let again = open();
    assert_eq!(again.identification().unwrap(), (1, 0));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
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

/// Locked memory (kB), pinned memory (kB) and open descriptors of this process.
fn resources() -> (u64, u64, usize) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count();
    (field("VmLck:"), field("VmPin:"), fds)
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn ten_thousand_cycles_leave_locked_memory_and_fds_where_they_were() {
    let address = edu_address();
    let before = resources();
    {
        let edu = Edu::open(address).unwrap();
        let mut memory = vec![0u8; 3 * 4096];
        let held = edu
            .device()
            .map_dma(&mut memory[..], Direction::Bidirectional)
            .unwrap();
        let (locked, pinned, _) = resources();
        assert!(
            locked + pinned >= before.0 + before.1 + 12,
            "mapping pins its pages: the measure works"
        );
        drop(held);
        for i in 0..10_000 {
            let mapping = edu
                .device()
                .map_dma(
                    &mut memory[i % 4096..i % 4096 + 5000],
                    Direction::Bidirectional,
                )
                .unwrap();
            mapping.unmap().unwrap();
        }
    }
    for _ in 0..10_000 {
        let edu = Edu::open(address).unwrap();
        drop(edu);
    }
    assert_eq!(
        resources(),
        before,
        "(VmLck kB, VmPin kB, open fds) after 10,000 map/unmap and open/close cycles"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn the_vfio_mapping_limit_is_a_clear_error() {
    let address = edu_address();
    let domain = IommuDomain::new(DmaMask::new(32).unwrap()).unwrap();
    let device = Device::open_in(&domain, address).unwrap();
    let available = domain
        .iommu_info()
        .unwrap()
        .mappings_available
        .expect("the kernel reports it");
    let page = vec![7u8; 4096];
    let mut mappings = Vec::new();
    let err = loop {
        match device.map_dma(&page[..], Direction::ToDevice) {
            Ok(m) => mappings.push(m),
            Err(err) => break err,
        }
        assert!(
            mappings.len() <= available as usize,
            "more mappings than the kernel allows"
        );
    };
    assert!(matches!(err, DmaError::MappingLimit), "{err}");
    assert!(err.to_string().contains("dma_entry_limit"), "{err}");
    // Room for exactly what the kernel said; page-straddling maps would take one each too.
    assert_eq!(mappings.len(), available as usize);
    drop(mappings);
    let again = device
        .map_dma(&page[..], Direction::ToDevice)
        .expect("mapping works again after unmapping");
    drop(again);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_process_killed_mid_dma_leaves_the_device_usable() {
    use std::io::BufRead;
    let address = edu_address();
    for _ in 0..3 {
        let mut child = std::process::Command::new("edu_hold")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("edu_hold (an example of usrdrv-edu) is in the VM's PATH");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("holding"), "edu_hold said {line:?}");
        child.kill().unwrap(); // SIGKILL while its transfer runs
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // The next process gets a working device.
        let edu = Edu::open(address).expect("the group is free once the killed process is gone");
        assert_eq!(edu.liveness(1).unwrap(), !1);
        let buffer = edu.device().alloc_dma(4096).unwrap();
        buffer.write_bytes(0, b"after kill").unwrap();
        edu.buffer_to_window(&buffer, 0, 100, 10).unwrap();
        edu.window_to_buffer(100, &buffer, 2000, 10).unwrap();
        let mut got = [0u8; 10];
        buffer.read_bytes(2000, &mut got).unwrap();
        assert_eq!(&got, b"after kill");
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn unprivileged_users_get_errors_that_say_what_to_do() {
    let address = edu_address();
    let group = Sysfs::system().iommu_group(address).unwrap().unwrap();
    let node = format!("/dev/vfio/{group}");
    let nobody = 65534;
    let run = || {
        let out = std::process::Command::new("edu_unprivileged")
            .args([nobody.to_string(), "65536".into()])
            .output()
            .expect("edu_unprivileged (an example of usrdrv-edu) is in the VM's PATH");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The group's node belongs to root: the error names it and the fixes.
    let said = run();
    assert!(
        said.contains(&format!("open: error: permission denied opening {node}")),
        "{said}"
    );
    assert!(said.contains("run as root"), "{said}");
    // Given the node, the user opens the device, but 1 MiB exceeds a 64 KiB memlock limit.
    std::os::unix::fs::chown(&node, Some(nobody), Some(nobody)).unwrap();
    let said = run();
    std::os::unix::fs::chown(&node, Some(0), Some(0)).unwrap();
    assert!(said.contains("open: ok"), "{said}");
    assert!(said.contains("RLIMIT_MEMLOCK = 65536 bytes"), "{said}");
    assert!(said.contains("ulimit -l"), "{said}");
    // Root (CAP_IPC_LOCK) is not limited: the device is fine for the next user.
    assert_eq!(open().identification().unwrap(), (1, 0));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn two_devices_share_one_iommu_domain() {
    let sysfs = Sysfs::system();
    let nvme = sysfs.find(0x1b36, 0x0010).unwrap()[0];
    sysfs.bind(nvme, VFIO_PCI_DRIVER).unwrap();
    {
        let domain = IommuDomain::new(DmaMask::new(DMA_MASK_BITS).unwrap()).unwrap();
        let edu = Edu::from_device(Device::open_in(&domain, edu_address()).unwrap()).unwrap();
        let other = Device::open_in(&domain, nvme).unwrap();
        assert_eq!(
            other.dma_mask(),
            DmaMask::new(DMA_MASK_BITS).unwrap(),
            "the domain's mask"
        );
        // Memory allocated through the NVMe handle is reachable by edu: one IOVA space.
        let shared = other.alloc_dma(4096).unwrap();
        let own = edu.device().alloc_dma(4096).unwrap();
        assert_ne!(
            shared.device_addr(),
            own.device_addr(),
            "one allocator hands out both"
        );
        own.write_bytes(0, b"shared domain").unwrap();
        edu.buffer_to_window(&own, 0, 0, 13).unwrap();
        edu.window_to_buffer(0, &shared, 0, 13).unwrap();
        let mut got = [0u8; 13];
        shared.read_bytes(0, &mut got).unwrap();
        assert_eq!(&got, b"shared domain");
    }
    sysfs.bind(nvme, "nvme").unwrap();
    assert_eq!(sysfs.driver(nvme).unwrap().as_deref(), Some("nvme"));
}
