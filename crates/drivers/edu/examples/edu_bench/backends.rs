//! usrdma against VFIO in the same boot, through the same public API: map +
//! unmap of a 4 KiB caller buffer, allocation of a 4 KiB DMA buffer, and MSI
//! wake-up latency. One edu device can be bound to one driver at a time, so
//! each round rebinds it (vfio-pci, then usrdma, or the other way round on odd
//! rounds) and the figures are medians over rounds of each round's median.
//!
//! Here the IOMMU is on, so usrdma's addresses come from the kernel's DMA API
//! through the IOMMU rather than being physical: the comparison is of the two
//! kernel interfaces and their user-space halves, not of IOMMU against none.

use std::hint::black_box;

use serde_json::json;
use usrdrv::dma::DmaMask;
use usrdrv::irq::IrqKind;
use usrdrv::pci::{PciAddress, Sysfs, VFIO_PCI_DRIVER};
use usrdrv::usrdma::USRDMA_DRIVER;
use usrdrv::{Backend, Device};
use usrdrv_edu::{DMA_MASK_BITS, Edu};

use super::{BENCH_IRQ, Clock, IRQ_TIMEOUT, PAGE, Plan, Result, Row, median, order};

/// Per-round medians of one backend.
#[derive(Debug, Default)]
struct Figures {
    map_unmap_us: Vec<f64>,
    alloc_free_us: Vec<f64>,
    msi_wake_us: Vec<f64>,
}

/// Runs the comparison; leaves edu bound to vfio-pci.
pub(crate) fn usrdma_vs_vfio(address: PciAddress, clock: &Clock, plan: Plan) -> Result<Vec<Row>> {
    let sysfs = Sysfs::system();
    if !sysfs.driver_exists(USRDMA_DRIVER) {
        return Err("the usrdma module is not loaded (insmod usrdma.ko)".into());
    }
    let mut figures: [Figures; 2] = Default::default();
    let page = vec![7u8; PAGE];
    for round in 0..plan.backend_rounds {
        for which in order(round) {
            let (driver, backend) = [
                (VFIO_PCI_DRIVER, Backend::Vfio),
                (USRDMA_DRIVER, Backend::Usrdma),
            ][which];
            sysfs.bind(address, driver)?;
            let device = Device::open_with(backend, address, DmaMask::new(DMA_MASK_BITS)?)?;
            let mut edu = Edu::from_device(device)?;
            measure(&mut edu, clock, plan, &page, &mut figures[which])?;
        }
    }
    sysfs.bind(address, VFIO_PCI_DRIVER)?;
    let row = |key: &str, name: &str, pick: fn(&Figures) -> &Vec<f64>| {
        Row::compared(
            key,
            name,
            "us",
            median(pick(&figures[1])),
            median(pick(&figures[0])),
        )
        .extra(json!({
            "rounds": plan.backend_rounds,
            "ops_per_round": plan.backend_ops,
        }))
    };
    let mut rows = vec![
        row(
            "usrdma_map_unmap_4k",
            "usrdma vs VFIO: map + unmap 4 KiB caller buffer",
            |f| &f.map_unmap_us,
        ),
        row(
            "usrdma_alloc_free_4k",
            "usrdma vs VFIO: allocate + free a 4 KiB DMA buffer",
            |f| &f.alloc_free_us,
        ),
        row(
            "usrdma_msi_wake_p50",
            "usrdma vs VFIO: MSI wake-up p50 (same CPU)",
            |f| &f.msi_wake_us,
        ),
    ];
    for row in &mut rows {
        row.ratio_label = Some("usrdma/VFIO");
    }
    Ok(rows)
}

/// One round of each measurement on one backend.
fn measure(edu: &mut Edu, clock: &Clock, plan: Plan, page: &[u8], out: &mut Figures) -> Result<()> {
    let n = plan.backend_ops;
    let device = edu.device();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = clock.now();
        device.with_dma_to_device(page, |mapping| {
            black_box(mapping);
        })?;
        samples.push(clock.ns_since(t) / 1000.0);
    }
    out.map_unmap_us.push(median(&samples));

    samples.clear();
    for _ in 0..n {
        let t = clock.now();
        let buffer = device.alloc_dma(PAGE)?;
        drop(black_box(buffer));
        samples.push(clock.ns_since(t) / 1000.0);
    }
    out.alloc_free_us.push(median(&samples));

    samples.clear();
    edu.enable_interrupts(IrqKind::Msi)?;
    let irqs = edu.interrupts().ok_or("interrupts just enabled")?;
    for i in 0..n + 20 {
        let t = clock.now();
        edu.trigger_interrupt(BENCH_IRQ)?;
        let fired = irqs.wait(0, Some(IRQ_TIMEOUT))?;
        let ns = clock.ns_since(t);
        edu.acknowledge(BENCH_IRQ)?;
        if fired.is_none() {
            return Err(format!("{:?}: an MSI was lost", edu.device().backend()).into());
        }
        if i >= 20 {
            samples.push(ns / 1000.0);
        }
    }
    out.msi_wake_us.push(median(&samples));
    Ok(())
}
