//! Opens edu, maps memory, starts a DMA into it and then holds everything
//! without exiting: the guest tests kill it with SIGKILL mid-transfer to check
//! the kernel cleans up and the device works for the next process.
//!
//! `edu_hold --persistent NAME` (usrdma only) also allocates a persistent
//! buffer `NAME` of 8 KiB holding `persistent:NAME`, which must survive.

use std::io::Write;
use std::process::ExitCode;

use usrdrv::dma::Direction;
use usrdrv_edu::Edu;
use usrdrv_edu::regs::{self, DmaCommand};

fn main() -> ExitCode {
    match hold() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edu_hold: {err}");
            ExitCode::FAILURE
        }
    }
}

fn hold() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let persistent = match args.as_slice() {
        [] => None,
        [flag, name] if flag == "--persistent" => Some(name.clone()),
        _ => return Err("usage: edu_hold [--persistent NAME]".into()),
    };
    let edu = Edu::open(Edu::find()?)?;
    let _kept = match &persistent {
        Some(name) => {
            let kept = edu.device().alloc_persistent(name, 8192)?;
            kept.write_bytes(0, format!("persistent:{name}").as_bytes())?;
            Some(kept)
        }
        None => None,
    };
    let buffer = edu.device().alloc_dma(1 << 20)?;
    let mapping = edu
        .device()
        .map_dma(vec![0u8; 64 << 10], Direction::FromDevice)?;
    // Start a transfer without waiting for it (100 ms of virtual time in QEMU).
    let first = *mapping
        .sg_list()
        .first()
        .ok_or("an empty scatter-gather list")?;
    let target = first.device_addr;
    let bar = edu.device().bar(0)?;
    bar.write64(regs::DMA_SRC.offset(), regs::WINDOW_BASE)?;
    bar.write64(regs::DMA_DST.offset(), target)?;
    bar.write64(regs::DMA_COUNT.offset(), first.len.min(4000) as u64)?;
    bar.write64(regs::DMA_CMD.offset(), DmaCommand::from_device().bits())?;
    println!(
        "holding {} bytes of DMA memory at {:#x}",
        buffer.len(),
        buffer.device_addr()
    );
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
