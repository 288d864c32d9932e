//! Giving a VFIO device back when the kernel asks: an idle holder does not
//! make an unbind hang, the holder learns of it on its next call, nothing
//! leaks, and a driver can ask for a bounded grace period. Run in the IOMMU
//! boot (usrdma's module takes the device back itself).

use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use usrdrv::ReleasePolicy;
use usrdrv::dma::{Direction, DmaError};
use usrdrv::irq::{IrqError, IrqKind};
use usrdrv::mmio::MmioError;
use usrdrv::pci::{PciAddress, Sysfs};
use usrdrv_edu::Edu;

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::{edu_address, open, resources};

/// Starts unbinding `address` from its driver on another thread (the write
/// blocks in the kernel until the device is released); the receiver gets the
/// result and how long the write took.
fn unbind_aside(address: PciAddress) -> Receiver<(std::io::Result<()>, Duration)> {
    let (done, result) = channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let written = std::fs::write(
            format!("/sys/bus/pci/devices/{address}/driver/unbind"),
            address.to_string(),
        );
        let _ = done.send((written, started.elapsed()));
    });
    result
}

/// The targets of this process's open descriptors that are VFIO objects.
fn vfio_descriptors() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.contains("vfio"))
        .collect()
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn an_idle_holder_lets_go_at_once_and_learns_of_it_on_its_next_call() {
    let address = edu_address();
    let before = resources();
    let mut edu = Edu::open(address).unwrap();
    edu.enable_interrupts(IrqKind::Msi).unwrap();
    let regs = edu.device().bar(0).unwrap();
    let view = regs.view::<4096>().unwrap();
    let buffer = edu.device().alloc_dma(1 << 20).unwrap();
    let mapping = edu
        .device()
        .map_dma(vec![0u8; 8192], Direction::FromDevice)
        .unwrap();
    assert!(!vfio_descriptors().is_empty());

    // Idle: nothing here touches the device while it is unbound.
    let unbound = unbind_aside(address);
    let (written, took) = unbound
        .recv_timeout(Duration::from_secs(10))
        .expect("the unbind completes while an idle holder keeps every handle");
    written.expect("the unbind succeeds");
    eprintln!("the unbind with an idle holder took {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the unbind took {took:?} (at most a second)"
    );
    assert_eq!(Sysfs::system().driver(address).unwrap(), None);

    // The holder's next calls say what happened.
    let device = edu.device();
    assert!(device.is_revoked());
    assert!(device.release_requested());
    let config = device.read_config(0, &mut [0u8; 4]).unwrap_err();
    assert!(config.is_revoked(), "{config}");
    assert!(matches!(regs.read32(0), Err(MmioError::Revoked { .. })));
    assert!(device.bar(0).unwrap_err().is_revoked());
    assert!(matches!(
        device.alloc_dma(4096),
        Err(DmaError::Revoked { .. })
    ));
    let waited = edu
        .interrupts()
        .unwrap()
        .wait(0, Some(Duration::from_secs(5)));
    assert!(
        matches!(waited, Err(IrqError::Revoked { .. })),
        "{waited:?}"
    );
    // Memory that was the device's reads all-ones and takes writes.
    assert_eq!(view.read::<u32, 0>(), 0xffff_ffff);
    view.write::<u32, 4>(7);
    // The device and its group are closed already: no VFIO descriptor is
    // left but the container's.
    let left = vfio_descriptors();
    assert!(
        left.iter().all(|target| target == "/dev/vfio/vfio"),
        "{left:?}"
    );
    // DMA memory is still ours until dropped, and drops cleanly (the kernel
    // dropped the IOMMU mappings with the group).
    buffer.write::<u64>(0, 1).unwrap();
    let data = mapping
        .unmap()
        .expect("an unmap after the release succeeds");
    assert_eq!(data.len(), 8192);
    drop((buffer, regs, edu));
    let after = resources();
    assert_eq!(
        (after.0, after.1),
        (before.0, before.1),
        "locked and pinned memory back to where they were"
    );
    assert_eq!(after.2, before.2, "no descriptor leaked");

    // The device can be bound and opened again at once (the group is free).
    let again = open();
    assert_eq!(again.identification().unwrap(), (1, 0));
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_grace_period_keeps_the_device_working_until_the_driver_releases_it() {
    let address = edu_address();
    let edu = Edu::open(address).unwrap();
    edu.device()
        .set_release_policy(ReleasePolicy::Grace(Duration::from_secs(8)));
    let regs = edu.device().bar(0).unwrap();
    let unbound = unbind_aside(address);
    let asked = Instant::now();
    while !edu.device().release_requested() {
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the request reached the driver"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // In the grace period the device still works.
    assert!(!edu.device().is_revoked());
    assert_eq!(edu.identification().unwrap(), (1, 0));
    assert_eq!(edu.factorial(5).unwrap(), 120);
    assert!(
        unbound.try_recv().is_err(),
        "the unbind waits for the driver"
    );
    // The driver is done: it lets go and the unbind completes.
    let released = Instant::now();
    edu.device().release();
    let (written, _) = unbound
        .recv_timeout(Duration::from_secs(5))
        .expect("the unbind completes once the driver releases");
    written.unwrap();
    assert!(released.elapsed() < Duration::from_secs(1));
    assert!(matches!(regs.read32(0), Err(MmioError::Revoked { .. })));
    drop((regs, edu));
    open();
}

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn a_grace_period_ends_by_itself_and_is_bounded() {
    let address = edu_address();
    let edu = Edu::open(address).unwrap();
    edu.device()
        .set_release_policy(ReleasePolicy::Grace(Duration::from_millis(500)));
    assert_eq!(
        ReleasePolicy::Grace(Duration::from_secs(3600)).grace(),
        usrdrv::MAX_RELEASE_GRACE
    );
    let unbound = unbind_aside(address);
    let (written, took) = unbound
        .recv_timeout(Duration::from_secs(10))
        .expect("the unbind completes after the grace period");
    written.unwrap();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "the unbind took {took:?} with a 500 ms grace period"
    );
    assert!(edu.device().is_revoked());
    drop(edu);
    open();
}
