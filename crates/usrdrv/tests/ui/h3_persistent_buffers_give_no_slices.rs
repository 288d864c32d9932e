//! H3: persistent buffers are shared by every process that attaches them, so
//! they have no CPU-owned state and give out no Rust references at all.
use usrdrv::Device;

fn aliasing_persistent(device: &Device) -> Result<(), usrdrv::dma::DmaError> {
    let mut a = unsafe { device.attach_persistent("fw-log")?.into_cpu() };
    let b = device.attach_persistent("fw-log")?;
    let _alias: &[u8] = b.as_slice();
    a.as_mut_slice()[0] = 1;
    Ok(())
}

fn main() {
    let _ = aliasing_persistent;
}
