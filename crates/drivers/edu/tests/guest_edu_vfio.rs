//! edu tests of what only VFIO with an IOMMU does: the IOMMU blocking stale
//! addresses, shared IOMMU domains, VFIO's mapping limit, hugepage-backed
//! buffers, and the group node's permissions. Run in the IOMMU boot.

use usrdrv::Device;
use usrdrv::dma::{Backing, Direction, DmaError, DmaMask, IovaError};
use usrdrv::pci::{Sysfs, VFIO_PCI_DRIVER};
use usrdrv::vfio::IommuDomain;
use usrdrv_edu::{DMA_MASK_BITS, Edu, Transfer};

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::{edu_address, open, pattern};

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
fn a_lent_buffer_is_unmapped_when_with_dma_returns() {
    let edu = open();
    let data = pattern(512, 11);
    let source = edu.device().alloc_dma(4096).unwrap();
    source.write_bytes(0, &data).unwrap();
    edu.buffer_to_window(&source, 0, 0, 512).unwrap();

    let mut lent = vec![0xcdu8; 512];
    let stale = edu
        .device()
        .with_dma(&mut lent, Direction::FromDevice, |mapping| {
            mapping.device_addr().expect("one entry with an IOMMU")
        })
        .unwrap();
    // The scope is over: the device's write to the old address must fault.
    edu.transfer(Transfer::FromDevice, stale, 0, 512).unwrap();
    assert!(
        lent.iter().all(|b| *b == 0xcd),
        "memory changed after with_dma returned"
    );
    // Inside the scope the same transfer lands.
    edu.device()
        .with_dma(&mut lent, Direction::FromDevice, |mapping| {
            edu.window_to_mapping(0, mapping)
        })
        .unwrap()
        .unwrap();
    assert_eq!(lent, data);
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
fn the_vfio_mapping_limit_is_a_clear_error() {
    let address = edu_address();
    let domain = IommuDomain::new(DmaMask::new(32).unwrap()).unwrap();
    let device = Device::open_in(&domain, address).unwrap();
    let available = domain
        .iommu_info()
        .unwrap()
        .mappings_available
        .expect("the kernel reports it");
    let page: &'static [u8] = Box::leak(vec![7u8; 4096].into_boxed_slice());
    let mut mappings = Vec::new();
    let err = loop {
        match device.map_dma(page, Direction::ToDevice) {
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
        .map_dma(page, Direction::ToDevice)
        .expect("mapping works again after unmapping");
    drop(again);
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
