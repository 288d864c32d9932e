//! The configuration space of an emulated function, built from its
//! [`ModelInfo`]: identity, memory BARs at made-up bus addresses, the
//! interrupt pin, and MSI and MSI-X capabilities the kernel interfaces'
//! parsers read as they read a real device's.

use super::ModelInfo;
use crate::pci::capabilities;

/// Size of a conventional configuration space.
pub(crate) const CONFIG_SIZE: usize = 256;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u16 = 0x10;
const BAR0: usize = 0x10;
const CAP_POINTER: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
const MSI_CAP: usize = 0x40;
const MSI_CAP_LEN: usize = 14;
const MSIX_CAP: usize = 0x50;

/// The command register's memory decode bit.
pub(crate) const COMMAND_MEMORY: u16 = 0x0002;
/// The command register's bus master bit.
pub(crate) const COMMAND_MASTER: u16 = 0x0004;
/// The command register's INTx disable bit.
pub(crate) const COMMAND_INTX_DISABLE: u16 = 0x0400;

/// Where the made-up BARs start on the made-up bus.
const BAR_BASE: u64 = 0xfe00_0000;

/// The power-on configuration space of a function described by `info`.
pub(crate) fn build(info: &ModelInfo) -> Vec<u8> {
    let mut config = vec![0u8; CONFIG_SIZE];
    let mut put = |at: usize, bytes: &[u8]| config[at..at + bytes.len()].copy_from_slice(bytes);
    put(0x00, &info.vendor_id.to_le_bytes());
    put(0x02, &info.device_id.to_le_bytes());
    // Memory decoding on, as the kernel leaves a function it enabled.
    put(COMMAND, &COMMAND_MEMORY.to_le_bytes());
    put(0x08, &[info.revision]);
    put(0x09, &info.class.to_le_bytes()[..3]);
    put(0x2c, &info.subsystem_vendor_id.to_le_bytes());
    put(0x2e, &info.subsystem_id.to_le_bytes());
    let mut next_base = BAR_BASE;
    for (i, size) in info.bars.iter().enumerate() {
        if *size == 0 {
            continue;
        }
        let size = size.next_power_of_two().max(16);
        let base = next_base.next_multiple_of(size);
        next_base = base + size;
        // 32-bit, non-prefetchable memory: the low bits are zero.
        put(
            BAR0 + 4 * i,
            &u32::try_from(base).unwrap_or(0).to_le_bytes(),
        );
    }
    put(INTERRUPT_PIN, &[u8::from(info.intx)]);
    let msi = info.msi_vectors > 0;
    let msix = info.msix_vectors > 0;
    if msi || msix {
        put(STATUS, &STATUS_CAP_LIST.to_le_bytes());
        put(
            CAP_POINTER,
            &[u8::try_from(if msi { MSI_CAP } else { MSIX_CAP }).unwrap_or(0)],
        );
    }
    if msi {
        let next = if msix { MSIX_CAP } else { 0 };
        // Multiple Message Capable is log2 of the vectors, in bits 3:1; 64-bit.
        let log2 = info
            .msi_vectors
            .min(32)
            .next_power_of_two()
            .trailing_zeros();
        let control = (u16::try_from(log2).unwrap_or(0) << 1) | 0x0080;
        put(
            MSI_CAP,
            &[capabilities::id::MSI, u8::try_from(next).unwrap_or(0)],
        );
        put(MSI_CAP + 2, &control.to_le_bytes());
    }
    if msix {
        // Table size is N - 1 in bits 10:0; table and PBA in BAR 0.
        let control = u16::try_from(info.msix_vectors.clamp(1, 2048) - 1).unwrap_or(0);
        put(MSIX_CAP, &[capabilities::id::MSIX, 0]);
        put(MSIX_CAP + 2, &control.to_le_bytes());
        put(MSIX_CAP + 8, &0x800u32.to_le_bytes());
    }
    config
}

/// Whether a driver's write may change the byte at `offset`: the command
/// register, the cache line size, the latency timer, the interrupt line and
/// the bodies of the capabilities (not their IDs and links). The rest reads
/// back as built, as read-only registers do; BARs cannot move.
pub(crate) fn writable(offset: usize) -> bool {
    matches!(offset, 0x04 | 0x05 | 0x0c | 0x0d | INTERRUPT_LINE)
        || (MSI_CAP + 2..MSI_CAP + MSI_CAP_LEN).contains(&offset)
        || (MSIX_CAP + 2..MSIX_CAP + 4).contains(&offset)
}

/// The command register of `config`.
pub(crate) fn command(config: &[u8]) -> u16 {
    u16::from_le_bytes([config[COMMAND], config[COMMAND + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_space_carries_identity_bars_and_interrupt_capabilities() {
        let info = ModelInfo::new(0x1234, 0x11e8)
            .with_class(0x10, 0x00ff_0000)
            .with_bar(0, 1 << 20)
            .with_bar(2, 4096)
            .with_msi(4)
            .with_msix(16)
            .with_intx();
        let config = build(&info);
        assert_eq!(&config[0..4], &[0x34, 0x12, 0xe8, 0x11]);
        assert_eq!(config[0x08], 0x10);
        assert_eq!(
            &config[0x09..0x0c],
            &[0x00, 0x00, 0xff],
            "prog-if, subclass, class"
        );
        assert_eq!(config[INTERRUPT_PIN], 1);
        let bar0 = u32::from_le_bytes(config[0x10..0x14].try_into().unwrap());
        let bar2 = u32::from_le_bytes(config[0x18..0x1c].try_into().unwrap());
        assert_eq!(u64::from(bar0) % (1 << 20), 0, "aligned to its size");
        assert!(u64::from(bar2) >= u64::from(bar0) + (1 << 20), "no overlap");
        assert_eq!(capabilities::msi(&config).map(|m| m.vectors), Some(4));
        assert_eq!(capabilities::msix(&config).map(|m| m.table_size), Some(16));
        assert_eq!(command(&config), COMMAND_MEMORY);
    }

    #[test]
    fn a_function_without_interrupts_has_no_capability_list() {
        let config = build(&ModelInfo::new(1, 2).with_bar(0, 16));
        assert_eq!(config[CAP_POINTER], 0);
        assert_eq!(config[STATUS] & 0x10, 0);
        assert!(capabilities::msi(&config).is_none());
        assert!(writable(0x04) && !writable(0x10) && !writable(MSI_CAP));
    }
}
