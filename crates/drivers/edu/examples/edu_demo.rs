//! The usrdrv demo: a user-space driver for QEMU's edu device doing what
//! DMA drivers do — registers, interrupts, DMA memory, the caller's own memory
//! mapped for the device, and the IOMMU keeping the device where it belongs.
//! Run in the VM by `cargo xtask demo`: first over VFIO, then, with
//! `--usrdma`, the same driver code over the usrdma kernel module.

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use usrdrv::dma::Direction;
use usrdrv::irq::IrqKind;
use usrdrv::pci::{Sysfs, VFIO_PCI_DRIVER};
use usrdrv::usrdma::USRDMA_DRIVER;
use usrdrv_edu::{DMA_MASK_BITS, Edu, Transfer};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edu_demo: error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let usrdma = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--usrdma") => true,
        Some(_) => return Err("usage: edu_demo [--usrdma]".into()),
    };
    println!("usrdrv demo: the edu driver (crates/drivers/edu), built only on usrdrv's public API");
    let address = Edu::find()?;
    let driver = if usrdma {
        USRDMA_DRIVER
    } else {
        VFIO_PCI_DRIVER
    };
    Sysfs::system().bind(address, driver)?;
    let mut edu = Edu::open(address)?;
    let (major, minor) = edu.identification()?;
    println!(
        "1. Opened edu {major}.{minor} at {address} through {} (it is bound to {driver}), declaring its {DMA_MASK_BITS}-bit DMA mask",
        edu.device().backend()
    );

    edu.enable_interrupts(IrqKind::Msi)?;
    let started = Instant::now();
    let value = edu.factorial_with_interrupt(10)?;
    println!(
        "2. Interrupts: asked the device for 10!, got {value} signalled by an MSI through an eventfd ({} µs)",
        started.elapsed().as_micros()
    );

    let source = edu.device().alloc_dma(4096)?;
    let sink = edu.device().alloc_dma(4096)?;
    println!(
        "3. DMA memory: two 4 KiB buffers ({}) at device addresses {:#x} and {:#x}, below {:#x}",
        source.backing(),
        source.device_addr(),
        sink.device_addr(),
        1u64 << DMA_MASK_BITS
    );
    let message: &[u8] = if usrdma {
        b"Hello from user space, through usrdma"
    } else {
        b"Hello from user space, through the IOMMU"
    };
    source.write_bytes(0, message)?;
    edu.buffer_to_window(&source, 0, 0, message.len())?;
    edu.window_to_buffer(0, &sink, 0, message.len())?;
    let mut echoed = vec![0u8; message.len()];
    sink.read_bytes(0, &mut echoed)?;
    println!(
        "   the device copied {:?} from one into its window and out into the other",
        String::from_utf8_lossy(&echoed)
    );
    if echoed != message {
        return Err("the device's copy differs from what was written".into());
    }

    let mut yours = vec![0u8; 1000];
    let region = &mut yours[123..123 + message.len()];
    // Lent for the scope of the closure: unmapped before `with_dma` returns.
    let stale = edu
        .device()
        .with_dma(region, Direction::FromDevice, |mapping| {
            let sg: Vec<String> = mapping
                .sg_list()
                .iter()
                .map(|e| format!("{} bytes at {:#x}", e.len, e.device_addr))
                .collect();
            println!(
                "4. Your memory: bytes 123..{} of a Vec lent to the device to write; scatter-gather list: [{}]{}",
                123 + message.len(),
                sg.join(", "),
                if mapping.is_bounced() {
                    " (a bounce buffer: the Vec lies above the DMA mask)"
                } else {
                    ""
                }
            );
            edu.window_to_mapping(0, mapping)?;
            Ok::<_, usrdrv_edu::EduError>(mapping.sg_list()[0].device_addr)
        })??;
    println!(
        "   after the scope the Vec is yours again and holds {:?}; its neighbours are untouched: {}",
        String::from_utf8_lossy(&yours[123..123 + message.len()]),
        yours[..123]
            .iter()
            .chain(&yours[123 + message.len()..])
            .all(|b| *b == 0)
    );

    if usrdma {
        // usrdma does not confine the device (without an IOMMU nothing stops
        // a stale address); what it adds is buffers the kernel keeps.
        let log = edu.device().alloc_persistent("edu-demo-log", 8192)?;
        log.write_bytes(0, b"kept by the kernel")?;
        println!(
            "5. usrdma does not confine the device: without an IOMMU nothing stops it at a stale address. What it guarantees is that your pages stay pinned until unmap and that DMA stops when the process ends. A persistent buffer \"edu-demo-log\" at {:#x} outlives this process (`usrdrv buffers` lists it)",
            log.device_addr()
        );
    } else {
        let before = yours.clone();
        edu.transfer(Transfer::FromDevice, stale, 0, message.len() as u64)?;
        println!(
            "5. The device then wrote to the old address {stale:#x}: the IOMMU blocked it, memory {}",
            if yours == before {
                "unchanged"
            } else {
                "CHANGED (bug!)"
            }
        );
        if yours != before {
            return Err("the device wrote through a stale mapping".into());
        }
    }

    let pool = edu.device().dma_pool(4096, 256)?;
    let started = Instant::now();
    for _ in 0..10_000 {
        drop(pool.alloc()?);
    }
    println!(
        "6. A pool of 256 x 4 KiB carved from one mapping: 10,000 alloc/free in {} µs, no system calls",
        started.elapsed().as_micros()
    );
    println!("Demo: OK.");
    Ok(())
}
