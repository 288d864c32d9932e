//! VFIO first light, run inside the usrdrv VM by `cargo xtask test`: a real
//! Linux kernel with an emulated Intel IOMMU and QEMU's `edu` device.
//!
//! Every test here is `#[ignore]`d so that a host `cargo test` compiles but does
//! not run them; the rig runs them in the guest with `--ignored`.

use usrdrv::mmio::MmioError;
use usrdrv::pci::{PciAddress, Sysfs, SysfsError, VFIO_PCI_DRIVER};
use usrdrv::vfio::{Device, VfioError};

const EDU_VENDOR: u16 = 0x1234;
const EDU_DEVICE: u16 = 0x11e8;
const NVME_VENDOR: u16 = 0x1b36;
const NVME_DEVICE: u16 = 0x0010;
/// edu's identification register: version 1.0.
const EDU_ID: u32 = 0x0100_00ed;
const EDU_BAR0_LEN: u64 = 1 << 20;

/// The one edu device in the VM, bound to vfio-pci.
fn edu() -> PciAddress {
    let sysfs = Sysfs::system();
    let found = sysfs.find(EDU_VENDOR, EDU_DEVICE).expect("scan sysfs");
    assert_eq!(
        found.len(),
        1,
        "the VM has exactly one edu device: {found:?}"
    );
    sysfs
        .bind(found[0], VFIO_PCI_DRIVER)
        .expect("bind edu to vfio-pci");
    found[0]
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn edu_is_found_and_bound_to_vfio_with_its_own_group() {
    let address = edu();
    let function = Sysfs::system().function(address).unwrap();
    assert_eq!(function.driver.as_deref(), Some("vfio-pci"));
    let group = function.iommu_group.expect("the IOMMU is on in the VM");
    assert!(
        std::path::Path::new(&format!("/dev/vfio/{group}")).exists(),
        "binding to vfio-pci creates /dev/vfio/{group}"
    );
    assert_eq!(
        Sysfs::system().iommu_group_members(group).unwrap(),
        vec![address]
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn edu_identification_and_liveness_over_vfio() {
    let device = Device::open(edu()).unwrap();
    let bar0 = device.bar(0).unwrap();
    assert!(bar0.is_mapped(), "vfio-pci lets BAR0 be mapped");
    let whole: Vec<_> = std::iter::once(0..EDU_BAR0_LEN).collect();
    assert_eq!(bar0.mapped_ranges(), whole, "all of it");
    assert!(bar0.is_writable());
    assert_eq!(bar0.len(), EDU_BAR0_LEN);
    assert_eq!(bar0.read32(0x00).unwrap(), EDU_ID);
    for value in [0, u32::MAX, 0x1234_5678, 0xa5a5_5a5a, 1] {
        bar0.write32(0x04, value).unwrap();
        assert_eq!(
            bar0.read32(0x04).unwrap(),
            !value,
            "liveness inverts {value:#x}"
        );
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn config_space_matches_sysfs() {
    let device = Device::open(edu()).unwrap();
    let mut ids = [0u8; 4];
    device.read_config(0, &mut ids).unwrap();
    assert_eq!(u16::from_le_bytes([ids[0], ids[1]]), EDU_VENDOR);
    assert_eq!(u16::from_le_bytes([ids[2], ids[3]]), EDU_DEVICE);
    let bar0 = device.region_info(0).unwrap();
    assert!(bar0.readable() && bar0.writable() && bar0.mappable());
    assert_eq!(bar0.size, EDU_BAR0_LEN);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn bar_accesses_outside_or_misaligned_are_errors() {
    let device = Device::open(edu()).unwrap();
    let bar0 = device.bar(0).unwrap();
    assert!(matches!(
        bar0.read32(EDU_BAR0_LEN),
        Err(MmioError::OutOfBounds { .. })
    ));
    assert!(matches!(
        bar0.read64(EDU_BAR0_LEN - 4),
        Err(MmioError::OutOfBounds { .. })
    ));
    assert!(matches!(
        bar0.write32(0x06, 1),
        Err(MmioError::Misaligned { .. })
    ));
    assert!(matches!(
        device.bar(1),
        Err(VfioError::NoSuchBar { bar: 1, .. })
    ));
    assert!(matches!(
        device.bar(6),
        Err(VfioError::NoSuchBar { bar: 6, .. })
    ));
    // The refused accesses changed nothing.
    assert_eq!(bar0.read32(0x00).unwrap(), EDU_ID);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_bar_outlives_its_device_and_the_group_is_released_after() {
    let address = edu();
    let device = Device::open(address).unwrap();
    let bar0 = device.bar(0).unwrap();
    drop(device);
    assert_eq!(
        bar0.read32(0x00).unwrap(),
        EDU_ID,
        "the BAR keeps the device open"
    );
    // While the BAR lives the group is still open: VFIO allows one opener.
    assert!(matches!(
        Device::open(address),
        Err(VfioError::GroupBusy { .. })
    ));
    drop(bar0);
    let again = Device::open(address).expect("the group is free once everything is dropped");
    assert_eq!(again.bar(0).unwrap().read32(0x00).unwrap(), EDU_ID);
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_device_bound_to_another_driver_is_refused_with_its_name() {
    let nvme = Sysfs::system().find(NVME_VENDOR, NVME_DEVICE).unwrap();
    assert_eq!(nvme.len(), 1, "the VM has one NVMe controller");
    match Device::open(nvme[0]) {
        Err(err @ VfioError::NotBoundToVfio { .. }) => {
            let msg = err.to_string();
            assert!(msg.contains("bound to nvme, not vfio-pci"), "{msg}");
            assert!(msg.contains("driver_override"), "{msg}");
        }
        other => panic!("expected NotBoundToVfio, got {other:?}"),
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_missing_device_is_a_clear_error() {
    let nowhere: PciAddress = "0000:0f:1e.5".parse().unwrap();
    match Device::open(nowhere) {
        Err(VfioError::Sysfs(SysfsError::NoSuchDevice { address, .. })) => {
            assert_eq!(address, nowhere)
        }
        other => panic!("expected NoSuchDevice, got {other:?}"),
    }
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn capabilities_interrupts_and_reset_of_edu_and_nvme() {
    use usrdrv::dma::DmaMask;
    use usrdrv::irq::IrqKind;
    use usrdrv::pci::capabilities::{self, id};

    let edu = usrdrv::Device::open(edu(), DmaMask::new(28).unwrap()).unwrap();
    let config = edu.config_space().unwrap();
    assert_eq!(&config[..4], &[0x34, 0x12, 0xe8, 0x11]);
    let caps = edu.capabilities().unwrap();
    assert!(
        caps.iter()
            .any(|c| matches!(c, usrdrv::pci::Capability::Standard { id: id::MSI, .. })),
        "{caps:?}"
    );
    assert_eq!(capabilities::msi(&config).unwrap().vectors, 1);
    assert!(capabilities::msix(&config).is_none());
    assert_eq!(edu.irq_info(IrqKind::Msi).unwrap().count, 1);
    assert!(!edu.vfio().unwrap().supports_reset(), "edu has no reset");
    assert!(matches!(
        edu.reset(),
        Err(usrdrv::Error::Vfio(VfioError::ResetUnsupported { .. }))
    ));
    drop(edu);

    // NVMe: PCI Express, MSI-X, reset; taken from its kernel driver and given back.
    let sysfs = Sysfs::system();
    let nvme = sysfs.find(NVME_VENDOR, NVME_DEVICE).unwrap()[0];
    assert_eq!(sysfs.driver(nvme).unwrap().as_deref(), Some("nvme"));
    sysfs.bind(nvme, VFIO_PCI_DRIVER).unwrap();
    {
        let device = usrdrv::Device::open(nvme, DmaMask::BITS_64).unwrap();
        let config = device.config_space().unwrap();
        assert_eq!(
            config.len(),
            4096,
            "PCI Express devices have 4 KiB of configuration space"
        );
        let caps = device.capabilities().unwrap();
        let has = |want| {
            caps.iter()
                .any(|c| matches!(c, usrdrv::pci::Capability::Standard { id, .. } if *id == want))
        };
        assert!(has(id::PCI_EXPRESS) && has(id::MSIX), "{caps:?}");
        let msix = capabilities::msix(&config).unwrap();
        assert_eq!(
            device.irq_info(IrqKind::Msix).unwrap().count,
            msix.table_size
        );
        let irqs = device.enable_interrupts(IrqKind::Msix, 4).unwrap();
        assert_eq!(irqs.len(), 4);
        drop(irqs);
        assert!(
            device.vfio().unwrap().supports_reset(),
            "QEMU's NVMe has function-level reset"
        );
        device.reset().unwrap();
        assert_eq!(
            device.bar(0).unwrap().read32(0x08).unwrap() >> 16,
            1,
            "NVMe version 1.x after reset"
        );
    }
    sysfs.bind(nvme, "nvme").unwrap();
    assert_eq!(
        sysfs.driver(nvme).unwrap().as_deref(),
        Some("nvme"),
        "given back to its kernel driver"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn config_writes_that_would_pull_the_bars_away_are_refused_and_the_unchecked_write_does_them() {
    use usrdrv::dma::DmaMask;
    use usrdrv::pci::{ConfigError, ProtectedRegister};

    const COMMAND: u64 = 0x04;
    const MEMORY: u16 = 1 << 1;
    const INTX_DISABLE: u16 = 1 << 10;
    const BAR0: u64 = 0x10;
    const ROM: u64 = 0x30;

    let device = usrdrv::Device::open(edu(), DmaMask::new(28).unwrap()).unwrap();
    let bar0 = device.bar(0).unwrap();
    let read16 = |offset| {
        let mut b = [0u8; 2];
        device.read_config(offset, &mut b).unwrap();
        u16::from_le_bytes(b)
    };
    let read32 = |offset| {
        let mut b = [0u8; 4];
        device.read_config(offset, &mut b).unwrap();
        u32::from_le_bytes(b)
    };
    let refused = |result: Result<(), usrdrv::Error>| match result {
        Err(
            ref err @ usrdrv::Error::Vfio(VfioError::ProtectedConfig(ConfigError::Protected {
                register,
                ..
            })),
        ) => {
            let msg = err.to_string();
            assert!(msg.contains("write_config_unchecked"), "{msg}");
            register
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    let command = read16(COMMAND);
    let bar0_base = read32(BAR0);
    assert_ne!(command & MEMORY, 0, "memory decoding is on");

    // Refused: memory decode off, BAR 0, the ROM BAR; nothing changes.
    let off = command & !MEMORY;
    assert_eq!(
        refused(device.write_config(COMMAND, &off.to_le_bytes())),
        ProtectedRegister::Decode
    );
    assert_eq!(
        refused(device.write_config(BAR0, &[0xff; 4])),
        ProtectedRegister::Bar(0)
    );
    assert_eq!(
        refused(device.write_config(ROM, &[0xff; 4])),
        ProtectedRegister::ExpansionRom
    );
    assert_eq!(read16(COMMAND), command);
    assert_eq!(read32(BAR0), bar0_base);
    assert_eq!(bar0.read32(0x00).unwrap(), EDU_ID);

    // Allowed: the command register's other bits, read-modify-write.
    device
        .write_config(COMMAND, &(command | INTX_DISABLE).to_le_bytes())
        .unwrap();
    assert_eq!(read16(COMMAND) & INTX_DISABLE, INTX_DISABLE);
    device
        .write_config(COMMAND, &command.to_le_bytes())
        .unwrap();
    device.enable_bus_master().unwrap();
    assert_ne!(read16(COMMAND) & 0x4, 0, "bus master on");

    // The escape hatch sizes BAR 0 the classic way...
    // SAFETY: BAR 0 is not accessed until its base is written back, and the
    // all-ones sizing pattern is never decoded (VFIO virtualises the BARs).
    unsafe { device.write_config_unchecked(BAR0, &[0xff; 4]) }.unwrap();
    let sized = read32(BAR0);
    // SAFETY: restores the base the kernel assigned.
    unsafe { device.write_config_unchecked(BAR0, &bar0_base.to_le_bytes()) }.unwrap();
    assert_eq!(u64::from(!(sized & !0xf)) + 1, EDU_BAR0_LEN, "{sized:#x}");
    assert_eq!(read32(BAR0), bar0_base);

    // ...and turns memory decoding off and on again.
    let command = read16(COMMAND);
    // SAFETY: no BAR of the device is accessed until decoding is back on.
    unsafe { device.write_config_unchecked(COMMAND, &(command & !MEMORY).to_le_bytes()) }.unwrap();
    assert_eq!(read16(COMMAND) & MEMORY, 0, "decoding is off");
    // SAFETY: turns decoding back on.
    unsafe { device.write_config_unchecked(COMMAND, &command.to_le_bytes()) }.unwrap();
    assert_eq!(read16(COMMAND), command);
    assert_eq!(
        bar0.read32(0x00).unwrap(),
        EDU_ID,
        "the BAR works again once decoding is back"
    );
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn an_nvme_held_idle_over_vfio_goes_back_to_its_kernel_driver() {
    use std::time::Duration;
    use usrdrv::dma::DmaMask;
    use usrdrv::irq::IrqKind;

    let sysfs = Sysfs::system();
    let nvme = sysfs.find(NVME_VENDOR, NVME_DEVICE).unwrap()[0];
    sysfs.bind(nvme, VFIO_PCI_DRIVER).unwrap();
    let device = usrdrv::Device::open(nvme, DmaMask::BITS_64).unwrap();
    let bar = device.bar(0).unwrap();
    let buffer = device.alloc_dma(1 << 20).unwrap();
    let irqs = device.enable_interrupts(IrqKind::Msix, 2).unwrap();

    // An idle holder: the move back to nvme runs aside and must not wait for it.
    let (done, moved) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(Sysfs::system().bind(nvme, "nvme"));
    });
    let result = moved
        .recv_timeout(Duration::from_secs(20))
        .expect("the bind to nvme completes while the holder keeps its handles");
    result.expect("nvme takes the device back");
    assert_eq!(sysfs.driver(nvme).unwrap().as_deref(), Some("nvme"));
    let disk = std::path::Path::new("/sys/block/nvme0n1");
    let asked = std::time::Instant::now();
    while !disk.exists() {
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the kernel's nvme driver brings the disk back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(device.is_revoked());
    assert!(matches!(bar.read32(0), Err(MmioError::Revoked { .. })));
    drop((irqs, buffer, bar, device));
}
