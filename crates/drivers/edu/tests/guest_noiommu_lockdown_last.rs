//! Lockdown, in the boots without an IOMMU. Locking the kernel down cannot
//! be undone for the rest of the boot (it also forbids PCI configuration
//! writes from user space, which every other usrdma test needs), so this
//! binary runs last in its boot (`_last`, see `cargo xtask test`).

use std::process::Command;

use usrdrv::dma::DmaMask;
use usrdrv::usrdma::{self, UsrdmaError};
use usrdrv_edu::DMA_MASK_BITS;

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::edu_address;

const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn under_lockdown_opening_is_refused_with_an_error_that_says_why() {
    let address = edu_address();
    // Before: the device opens.
    drop(usrdma::Device::open(address).expect("open before lockdown"));

    if std::fs::metadata(LOCKDOWN).is_err() {
        let status = Command::new("mount")
            .args(["-t", "securityfs", "securityfs", "/sys/kernel/security"])
            .status()
            .expect("mount");
        assert!(status.success(), "mount securityfs");
    }
    let state = std::fs::read_to_string(LOCKDOWN).expect("read the lockdown state");
    assert!(state.contains("[none]"), "not locked down yet: {state}");
    std::fs::write(LOCKDOWN, "integrity").expect("lock the kernel down");
    let state = std::fs::read_to_string(LOCKDOWN).unwrap();
    assert!(state.contains("[integrity]"), "{state}");

    match usrdma::Device::open(address) {
        Err(UsrdmaError::LockedDown { path }) => {
            assert_eq!(path, usrdma::node_path(address));
        }
        other => panic!("open under lockdown: {other:?}"),
    }
    let err = usrdrv::Device::open(address, DmaMask::new(DMA_MASK_BITS).unwrap())
        .expect_err("the high-level open is refused too");
    let text = format!("{err}");
    assert!(
        text.contains("locked down") && text.contains("VFIO"),
        "the error says why and what to do: {text}"
    );

    // The doctor explains it.
    let out = Command::new("usrdrv")
        .arg("doctor")
        .output()
        .expect("usrdrv is in the VM's PATH");
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}");
    assert!(
        said.contains("lockdown") && said.contains("integrity"),
        "doctor reports the lockdown:\n{said}"
    );
}
