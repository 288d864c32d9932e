//! H2: taking a buffer back from the device is the step nothing in safe code
//! can prove (the device may still be writing it): it is `unsafe`.
#![forbid(unsafe_code)]

use usrdrv::Device;

fn slice_while_device_writes(device: &Device) -> Result<(), usrdrv::dma::DmaError> {
    let buffer = device.alloc_dma(4096)?;
    let mut cpu = buffer.into_cpu();
    cpu.as_mut_slice()[0] = 1;
    Ok(())
}

fn main() {
    let _ = slice_while_device_writes;
}
