//! An emulated device behaves as a real one does through the public API:
//! configuration space and its protections, capabilities, reset, interrupt
//! kinds and their delivery rules, several handles, reopening.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed step fails the test"
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use usrdrv::dma::DmaMask;
use usrdrv::emulated::{Bus, DeviceModel, EmulatedDevice, EmulatedError, ModelInfo};
use usrdrv::irq::{IrqError, IrqKind};
use usrdrv::pci::capabilities::Capability;
use usrdrv::{Backend, Device, Error};

/// Register 0 counts resets; a write to 4 raises interrupt vector `value`.
#[derive(Default)]
struct Doorbells {
    resets: AtomicU32,
}

impl DeviceModel for Doorbells {
    fn info(&self) -> ModelInfo {
        ModelInfo::new(0x1af4, 0x10fd)
            .with_bar(2, 16 * 1024)
            .with_msi(4)
            .with_msix(8)
            .with_intx()
            .with_reset()
    }

    fn read(&self, _bus: &Bus, _bar: u8, offset: u64, _width: usize) -> u64 {
        match offset {
            0 => u64::from(self.resets.load(Ordering::SeqCst)),
            _ => 0,
        }
    }

    fn write(&self, bus: &Bus, _bar: u8, offset: u64, _width: usize, value: u64) {
        if offset == 4 {
            bus.interrupt(value as u32);
        }
    }

    fn reset(&self, _bus: &Bus) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

fn open(emulated: &EmulatedDevice) -> Device {
    Device::emulated(emulated, DmaMask::new(40).unwrap()).unwrap()
}

#[test]
fn identity_config_space_and_capabilities_come_from_the_model() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    assert_eq!(device.backend(), Backend::Emulated);
    assert_eq!(device.address(), emulated.address());
    assert_eq!(device.dma_mask().bits(), 40);
    let config = device.config_space().unwrap();
    assert_eq!(&config[..4], &[0xf4, 0x1a, 0xfd, 0x10]);
    let caps = device.capabilities().unwrap();
    assert!(
        caps.iter()
            .any(|c| matches!(c, Capability::Standard { id: 0x05, .. })),
        "MSI: {caps:?}"
    );
    assert!(
        caps.iter()
            .any(|c| matches!(c, Capability::Standard { id: 0x11, .. })),
        "MSI-X: {caps:?}"
    );
    assert_eq!(device.irq_info(IrqKind::Msix).unwrap().count, 8);
    assert_eq!(device.irq_info(IrqKind::Msi).unwrap().count, 4);
    assert!(device.irq_info(IrqKind::Intx).unwrap().automasked);
    // BAR 2 exists, BAR 0 does not.
    assert_eq!(device.bar(2).unwrap().len(), 16 * 1024);
    assert!(matches!(
        device.bar(0),
        Err(Error::Emulated(EmulatedError::NoSuchBar { index: 0, .. }))
    ));
    // Bus mastering is off at open, as on real backends.
    let mut command = [0u8; 2];
    device.read_config(0x04, &mut command).unwrap();
    assert_eq!(u16::from_le_bytes(command) & 0x4, 0);
}

#[test]
fn config_writes_are_checked_as_on_real_backends() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    assert!(
        device.write_config(0x10, &[0xff; 4]).is_err(),
        "a BAR is refused"
    );
    assert!(
        device.write_config(0x04, &[0x00, 0x00]).is_err(),
        "turning memory decoding off is refused"
    );
    // INTx disable may change.
    let mut command = [0u8; 2];
    device.read_config(0x04, &mut command).unwrap();
    let disabled = u16::from_le_bytes(command) | 1 << 10;
    device.write_config(0x04, &disabled.to_le_bytes()).unwrap();
    device.read_config(0x04, &mut command).unwrap();
    assert_eq!(u16::from_le_bytes(command), disabled);
    // Read-only registers keep their value.
    device.write_config(0x00, &[0, 0]).unwrap();
    let mut id = [0u8; 2];
    device.read_config(0x00, &mut id).unwrap();
    assert_eq!(id, [0xf4, 0x1a]);
    assert!(matches!(
        device.read_config(0xff, &mut [0u8; 2]),
        Err(Error::Emulated(EmulatedError::ConfigRange { .. }))
    ));
}

#[test]
fn reset_calls_the_model_and_is_refused_where_the_model_has_none() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    let regs = device.bar(2).unwrap();
    device.reset().unwrap();
    device.reset().unwrap();
    assert_eq!(regs.read32(0).unwrap(), 2);
    drop((regs, device));
    emulated.finish().unwrap();

    struct NoReset;
    impl DeviceModel for NoReset {
        fn info(&self) -> ModelInfo {
            ModelInfo::new(1, 2).with_bar(0, 16)
        }
        fn read(&self, _: &Bus, _: u8, _: u64, _: usize) -> u64 {
            0
        }
        fn write(&self, _: &Bus, _: u8, _: u64, _: usize, _: u64) {}
    }
    let emulated = EmulatedDevice::new(NoReset);
    assert!(matches!(
        open(&emulated).reset(),
        Err(Error::Emulated(EmulatedError::NoReset { .. }))
    ));
    assert!(matches!(
        Device::open_with(Backend::Emulated, emulated.address(), DmaMask::BITS_64),
        Err(Error::Emulated(EmulatedError::NeedsModel))
    ));
}

#[test]
fn msix_vectors_reach_their_own_eventfds() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    let regs = device.bar(2).unwrap();
    let irqs = device.enable_interrupts(IrqKind::Msix, 8).unwrap();
    for vector in [0u32, 7, 3] {
        regs.write32(4, vector).unwrap();
        for other in 0..8usize {
            let fired = irqs.try_wait(other).unwrap();
            assert_eq!(
                fired.is_some(),
                other == vector as usize,
                "{vector}/{other}"
            );
        }
    }
    regs.write32(4, 8).unwrap(); // no such vector
    assert_eq!(emulated.interrupts_lost(), 1);
    // One kind at a time, as vfio-pci.
    assert!(matches!(
        device.enable_interrupts(IrqKind::Msi, 1),
        Err(IrqError::Sys { .. })
    ));
    drop(irqs);
    assert!(device.enable_interrupts(IrqKind::Msi, 4).is_ok());
}

#[test]
fn intx_is_masked_on_delivery_until_unmasked_and_obeys_intx_disable() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    let regs = device.bar(2).unwrap();
    let irqs = device.enable_interrupts(IrqKind::Intx, 1).unwrap();
    regs.write32(4, 0).unwrap();
    regs.write32(4, 0).unwrap(); // while masked: held
    assert_eq!(irqs.wait(0, Some(Duration::from_secs(1))).unwrap(), Some(1));
    assert_eq!(irqs.try_wait(0).unwrap(), None, "masked");
    irqs.unmask().unwrap();
    assert_eq!(
        irqs.try_wait(0).unwrap(),
        Some(1),
        "the held one, at the unmask"
    );
    irqs.unmask().unwrap();
    let mut command = [0u8; 2];
    device.read_config(0x04, &mut command).unwrap();
    let disabled = u16::from_le_bytes(command) | 1 << 10;
    device.write_config(0x04, &disabled.to_le_bytes()).unwrap();
    regs.write32(4, 0).unwrap();
    assert_eq!(irqs.try_wait(0).unwrap(), None, "INTx disabled");
    assert_eq!(emulated.interrupts_lost(), 1);
}

#[test]
fn msi_is_lost_with_bus_mastering_off() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    let regs = device.bar(2).unwrap();
    let irqs = device.enable_interrupts(IrqKind::Msi, 1).unwrap();
    regs.write32(4, 0).unwrap();
    assert_eq!(
        irqs.try_wait(0).unwrap(),
        Some(1),
        "enabling MSI turned it on"
    );
    let mut command = [0u8; 2];
    device.read_config(0x04, &mut command).unwrap();
    let off = u16::from_le_bytes(command) & !0x4;
    device.write_config(0x04, &off.to_le_bytes()).unwrap();
    regs.write32(4, 0).unwrap();
    assert_eq!(irqs.try_wait(0).unwrap(), None);
    assert_eq!(emulated.interrupts_lost(), 1, "the bus dropped the message");
}

#[test]
fn a_second_handle_reaches_the_same_model_with_bindings_of_its_own() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let first = open(&emulated);
    let irqs = first.enable_interrupts(IrqKind::Msi, 1).unwrap();
    let second = open(&emulated);
    second.enable_bus_master().unwrap();
    first.reset().unwrap();
    assert_eq!(second.bar(2).unwrap().read32(0).unwrap(), 1, "one model");
    second.bar(2).unwrap().write32(4, 0).unwrap();
    assert_eq!(irqs.try_wait(0).unwrap(), None, "not the first handle's");
    first.bar(2).unwrap().write32(4, 0).unwrap();
    assert_eq!(irqs.try_wait(0).unwrap(), Some(1));
    // Revoking takes the device from both.
    emulated.revoke();
    assert!(first.is_revoked() && second.is_revoked());
    drop((irqs, first, second));
    // And a new open gets it back.
    let again = open(&emulated);
    assert_eq!(again.bar(2).unwrap().read32(0).unwrap(), 1);
}

#[test]
fn a_revocation_wakes_every_waiter_on_every_vector() {
    let emulated = EmulatedDevice::new(Doorbells::default());
    let device = open(&emulated);
    let irqs = device.enable_interrupts(IrqKind::Msix, 4).unwrap();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|vector| {
                let irqs = &irqs;
                s.spawn(move || irqs.wait(vector, Some(Duration::from_secs(20))))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        emulated.revoke();
        for waiter in waiters {
            let result = waiter.join().unwrap();
            assert!(
                matches!(result, Err(IrqError::Revoked { .. })),
                "{result:?}"
            );
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
