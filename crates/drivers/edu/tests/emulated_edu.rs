//! The edu driver's shared suite (`edu_suite/`), unchanged, in plain
//! `cargo test`: against the edu model (`usrdrv_edu::model`) through
//! usrdrv's emulated backend, with no VM, no root and no `/dev/vfio`. Each
//! test gets an emulated edu of its own, and fails if the driver left a
//! DMA buffer or a mapping behind.

/// A suite test, run against a fresh emulated edu and leak-checked after.
macro_rules! edu_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            crate::rig::run(|| $body);
        }
    };
}

/// The suite's view of the host: an emulated edu per test thread.
mod rig {
    use std::cell::RefCell;
    use std::sync::Arc;

    use usrdrv::Device;
    use usrdrv::dma::{Borrowed, DmaMapping, DmaMask};
    use usrdrv::emulated::EmulatedDevice;
    use usrdrv::pci::PciAddress;
    use usrdrv_edu::model::EduModel;
    use usrdrv_edu::{DMA_MASK_BITS, Edu, EduError};

    thread_local! {
        static EDU: RefCell<Option<Arc<EmulatedDevice>>> = const { RefCell::new(None) };
    }

    /// Runs one test against a fresh emulated edu, then checks that the
    /// driver freed and unmapped everything.
    pub fn run(test: impl FnOnce()) {
        let emulated = Arc::new(EmulatedDevice::new(EduModel::new()));
        EDU.with(|edu| *edu.borrow_mut() = Some(Arc::clone(&emulated)));
        test();
        EDU.with(|edu| edu.borrow_mut().take());
        let emulated = Arc::into_inner(emulated).expect("only the test held the emulated edu");
        if let Err(report) = emulated.finish() {
            panic!("{report}");
        }
    }

    fn emulated() -> Arc<EmulatedDevice> {
        EDU.with(|edu| edu.borrow().clone())
            .expect("suite tests run inside rig::run")
    }

    /// The emulated edu's address.
    pub fn edu_address() -> PciAddress {
        emulated().address()
    }

    /// Opens edu at `address` (this test's emulated edu).
    pub fn reopen(address: PciAddress) -> Result<Edu, EduError> {
        let emulated = emulated();
        assert_eq!(address, emulated.address());
        let mask = DmaMask::new(DMA_MASK_BITS)?;
        Edu::from_device(Device::emulated(&emulated, mask)?)
    }

    /// Opens this test's emulated edu.
    pub fn open() -> Edu {
        reopen(edu_address()).expect("open the emulated edu")
    }

    pub use super::common::pattern;

    /// What [`resources`] measures.
    pub const RESOURCES: &str = "(buffers and mappings the device can reach)";

    /// What the emulated IOMMU has mapped for this test's edu.
    pub fn resources() -> usize {
        emulated().leaks().len()
    }

    /// Whether `mapping` shows in the measure: the IOMMU maps it.
    pub fn holds_memory(mapping: &DmaMapping<Borrowed<'_>>, before: &usize) -> bool {
        let device_addr = mapping.sg_list()[0].device_addr;
        let leaks = emulated().leaks();
        leaks.len() > *before
            && leaks
                .iter()
                .any(|l| (l.device_addr..l.device_addr + l.len).contains(&device_addr))
    }

    /// Revokes the emulated edu from another thread, as an unbind does.
    pub fn unbind_in_background(
        _address: PciAddress,
    ) -> std::sync::mpsc::Receiver<std::io::Result<()>> {
        let (done, unbound) = std::sync::mpsc::channel();
        let emulated = Arc::downgrade(&emulated());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if let Some(emulated) = emulated.upgrade() {
                emulated.revoke();
            }
            let _ = done.send(Ok(()));
        });
        unbound
    }

    /// Nothing to check: an emulated device has no driver binding.
    pub fn assert_unbound(address: PciAddress) {
        assert_eq!(address, edu_address());
    }
}

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;

#[path = "edu_suite/mod.rs"]
mod edu_suite;
