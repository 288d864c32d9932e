//! H5: a buffer shared between threads is reached only through atomic
//! accesses; no slice (non-atomic access) can be had from a shared handle.
use std::sync::Arc;

use usrdrv::Device;

fn racing_slices(device: &Device) -> Result<(), usrdrv::dma::DmaError> {
    let buffer = Arc::new(device.alloc_dma(4096)?);
    let _bytes: &[u8] = buffer.as_slice();
    Ok(())
}

fn main() {
    let _ = racing_slices;
}
