//! H5: a buffer shared between threads cannot enter the CPU-owned state
//! (slices) while another handle may be writing it, even with `unsafe`: the
//! transition consumes the only handle.
use std::sync::Arc;

use usrdrv::Device;

fn race_through_a_cpu_owned_alias(device: &Device) -> Result<(), usrdrv::dma::DmaError> {
    let buffer = Arc::new(device.alloc_dma(4096)?);
    let other = Arc::clone(&buffer);
    std::thread::spawn(move || other.write::<u64>(0, 1));
    let mut owned = unsafe { Arc::clone(&buffer).into_cpu() };
    owned.as_mut_slice()[0] = 2;
    Ok(())
}

fn main() {
    let _ = race_through_a_cpu_owned_alias;
}
