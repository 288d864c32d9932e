//! Named buffers against `Device::free_persistent`, on both backends: here
//! over VFIO in the IOMMU boot, and as `guest_noiommu_edu_names` over the
//! usrdma module in the boot without an IOMMU. Freeing by name never takes
//! away a buffer this process still holds, and a buffer allocated after the
//! attempt is never freed by the old one's drop.

use usrdrv::Backend;
use usrdrv::dma::DmaError;

#[path = "common/mod.rs"]
#[allow(
    dead_code,
    reason = "each test binary uses its own part of the helpers"
)]
mod common;
use common::{open, pattern};

#[test]
#[ignore = "needs the usrdrv VM: run by `cargo xtask test`"]
fn free_persistent_of_a_held_name_fails_and_every_buffer_keeps_working() {
    let edu = open();
    let device = edu.device();
    let names = device.named_buffers().unwrap();
    let stale = names.alloc("rx", 4096).unwrap();
    match (device.backend(), device.free_persistent("rx")) {
        // Persistent buffers are a usrdma feature.
        (Backend::Vfio, Err(DmaError::NeedsUsrdma { .. })) => {}
        // A named buffer of this process is not persistent: its handle frees it.
        (Backend::Usrdma, Err(DmaError::NotPersistent { .. })) => {}
        (backend, other) => panic!("{backend:?}: expected a refusal, got {other:?}"),
    }
    let fresh = device.alloc_dma(4096).unwrap();

    // The held buffer still works after the refusal.
    let data = pattern(1200, 51);
    let source = device.alloc_dma(4096).unwrap();
    source.write_bytes(0, &data).unwrap();
    edu.buffer_to_window(&source, 0, 0, data.len()).unwrap();
    edu.window_to_buffer(0, &stale, 0, data.len()).unwrap();
    let mut got = vec![0u8; data.len()];
    stale.read_bytes(0, &mut got).unwrap();
    assert!(got == data, "edu wrote the named buffer");

    // Dropping the last handle to it frees it, and nothing else.
    names.free("rx").unwrap();
    drop(stale);
    let data = pattern(2500, 52);
    source.write_bytes(0, &data).unwrap();
    edu.buffer_to_window(&source, 0, 0, data.len()).unwrap();
    edu.window_to_buffer(0, &fresh, 100, data.len()).unwrap();
    let mut got = vec![0u8; data.len()];
    fresh.read_bytes(100, &mut got).unwrap();
    assert!(
        got == data,
        "edu wrote the buffer allocated after the refusal"
    );
}
