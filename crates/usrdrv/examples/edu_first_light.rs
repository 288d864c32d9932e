//! First light: find QEMU's `edu` device, give it to vfio-pci, open it through
//! VFIO and talk to its registers. Run in the VM by `cargo xtask demo`.

use std::error::Error;
use std::process::ExitCode;

use usrdrv::pci::{Sysfs, VFIO_PCI_DRIVER};
use usrdrv::vfio::Device;

const EDU_VENDOR: u16 = 0x1234;
const EDU_DEVICE: u16 = 0x11e8;
const REG_ID: u64 = 0x00;
const REG_LIVENESS: u64 = 0x04;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edu_first_light: error: {err}");
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
    println!("usrdrv first light: QEMU's edu device, driven from user space through VFIO");
    let sysfs = Sysfs::system();

    println!(
        "1. Looking for edu (vendor {EDU_VENDOR:04x}, device {EDU_DEVICE:04x}) in /sys/bus/pci/devices"
    );
    let address = *sysfs
        .find(EDU_VENDOR, EDU_DEVICE)?
        .first()
        .ok_or("no edu device: is QEMU started with `-device edu`?")?;
    let before = sysfs.function(address)?;
    println!(
        "   found {address}: kernel driver {}, IOMMU group {}",
        before.driver.as_deref().unwrap_or("none"),
        before
            .iommu_group
            .map_or("none (no IOMMU)".into(), |g| g.to_string())
    );

    println!("2. Handing {address} to vfio-pci (driver_override + drivers_probe)");
    sysfs.bind(address, VFIO_PCI_DRIVER)?;
    let group = sysfs
        .iommu_group(address)?
        .ok_or("no IOMMU group after binding")?;
    println!("   bound; its group is now /dev/vfio/{group}");

    println!("3. Opening it: container /dev/vfio/vfio (Type1 v2 IOMMU) -> group {group} -> device");
    let device = Device::open(address)?;
    println!(
        "   VFIO reports {} regions, {} interrupt types, reset {}",
        device.num_regions(),
        device.num_irqs(),
        if device.supports_reset() {
            "supported"
        } else {
            "not supported"
        }
    );

    let bar0 = device.bar(0)?;
    println!(
        "4. BAR0: {} KiB, {}",
        bar0.len() / 1024,
        if bar0.is_mapped() {
            "mapped into this process"
        } else {
            "reached through the device file"
        }
    );

    let id = bar0.read32(REG_ID)?;
    println!(
        "5. Identification register (BAR0 + {REG_ID:#04x}): {id:#010x} -> edu version {}.{}",
        id >> 24,
        (id >> 16) & 0xff
    );
    if id & 0xff != 0xed {
        return Err(
            format!("unexpected identification {id:#010x}: this is not an edu device").into(),
        );
    }

    let probe = 0x1234_5678;
    bar0.write32(REG_LIVENESS, probe)?;
    let echoed = bar0.read32(REG_LIVENESS)?;
    println!(
        "6. Liveness (BAR0 + {REG_LIVENESS:#04x}): wrote {probe:#010x}, read back {echoed:#010x} ({})",
        if echoed == !probe {
            "its bitwise inverse: the device is alive"
        } else {
            "WRONG"
        }
    );
    if echoed != !probe {
        return Err("the liveness register did not return the inverse".into());
    }
    println!("First light: OK. DMA, interrupts and the edu driver build on this.");
    Ok(())
}
