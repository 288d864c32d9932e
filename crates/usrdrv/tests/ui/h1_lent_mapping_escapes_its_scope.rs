//! H1, scoped form: the mapping `with_dma` lends cannot leave the closure,
//! so it cannot be forgotten or outlive the borrow.
#![forbid(unsafe_code)]

use usrdrv::Device;
use usrdrv::dma::Direction;

fn keep_the_mapping(device: &Device) -> Result<(), usrdrv::dma::DmaError> {
    let mut block = vec![0u8; 64];
    let mut kept = None;
    device.with_dma(&mut block, Direction::FromDevice, |mapping| {
        kept = Some(mapping);
    })?;
    std::mem::forget(kept);
    Ok(())
}

fn main() {
    let _ = keep_the_mapping;
}
