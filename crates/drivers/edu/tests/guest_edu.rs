//! The edu driver against QEMU's real edu device: the shared suite
//! (`edu_suite/`), which runs unchanged here in the IOMMU boot over VFIO, as
//! `guest_noiommu_edu` in the boot without an IOMMU over the usrdma module,
//! and on the host against the edu model (`emulated_edu.rs`); and what only
//! a real machine shows (a process killed mid-transfer). What only one
//! backend does is in `guest_edu_vfio.rs` and `guest_noiommu_usrdma.rs`.

use usrdrv_edu::Edu;

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::edu_address;

/// A suite test, run in the VM by `cargo xtask test`.
macro_rules! edu_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        #[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
        fn $name() $body
    };
}

/// The suite's view of the VM: the real edu, bound to this boot's driver.
mod rig {
    pub use super::common::{edu_address, open, pattern};
    use usrdrv::dma::{Borrowed, DmaMapping};
    use usrdrv::pci::{PciAddress, Sysfs};
    use usrdrv_edu::{Edu, EduError};

    /// What [`resources`] measures.
    pub const RESOURCES: &str = "(VmLck kB, VmPin kB, open fds)";

    /// Locked and pinned memory and descriptors of this process.
    pub fn resources() -> (u64, u64, usize) {
        super::common::resources()
    }

    /// Whether `mapping` shows in the measure: it pins its pages (a bounced
    /// usrdma mapping, of memory above the mask, pins nothing).
    pub fn holds_memory(mapping: &DmaMapping<Borrowed<'_>>, before: &(u64, u64, usize)) -> bool {
        let (locked, pinned, _) = resources();
        mapping.is_bounced() || locked + pinned >= before.0 + before.1 + 12
    }

    /// Opens edu at `address` again.
    pub fn reopen(address: PciAddress) -> Result<Edu, EduError> {
        Edu::open(address)
    }

    /// Unbinds `address` from its driver on another thread (the unbind
    /// blocks in the kernel until the device is given back).
    pub fn unbind_in_background(
        address: PciAddress,
    ) -> std::sync::mpsc::Receiver<std::io::Result<()>> {
        let (done, unbound) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = std::fs::write(
                format!("/sys/bus/pci/devices/{address}/driver/unbind"),
                address.to_string(),
            );
            let _ = done.send(result);
        });
        unbound
    }

    /// Asserts `address` is bound to no driver.
    pub fn assert_unbound(address: PciAddress) {
        let driver = Sysfs::system()
            .driver(address)
            .expect("read the driver link");
        assert_eq!(driver, None);
    }
}

#[path = "edu_suite/mod.rs"]
mod edu_suite;

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
