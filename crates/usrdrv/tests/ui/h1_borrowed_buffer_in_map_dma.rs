//! H1: a mapping of a borrowed buffer could be forgotten, ending the borrow
//! while the device can still write the memory. `map_dma` takes owned or
//! `'static` buffers only.
#![forbid(unsafe_code)]

use usrdrv::Device;
use usrdrv::dma::Direction;

fn forget_borrowed_mapping(device: &Device) -> Result<(), usrdrv::dma::DmaError> {
    let mut block = vec![0u8; 64];
    let mapping = device.map_dma(&mut block[..], Direction::FromDevice)?;
    std::mem::forget(mapping);
    drop(block);
    Ok(())
}

fn main() {
    let _ = forget_borrowed_mapping;
}
