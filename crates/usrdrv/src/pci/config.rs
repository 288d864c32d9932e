//! Configuration-space writes the checked API refuses: those that would pull
//! the BARs out from under the mappings usrdrv hands out.
//!
//! Clearing the command register's I/O or memory decode bits makes every BAR
//! access fault (`SIGBUS` through a mapping); rewriting a base address
//! register moves a BAR the kernel (and, on usrdma, the module's mapping)
//! still places at the old address. [`crate::Device::write_config`] refuses
//! both; the other bits of the command register (bus master, INTx disable,
//! ...) and the rest of configuration space are written as asked.
//! [`crate::Device::write_config_unchecked`] is the escape hatch.

use std::fmt;

/// Offset of the command register.
const COMMAND: u64 = 0x04;
/// The command register's I/O-space and memory-space enable bits.
const COMMAND_DECODE: u8 = 0x03;
/// Where the six base address registers lie (type-0 header).
const BARS: std::ops::Range<u64> = 0x10..0x28;
/// Where the expansion ROM base address register lies (type-0 header).
const ROM: std::ops::Range<u64> = 0x30..0x34;

/// A register the checked configuration write does not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtectedRegister {
    /// The I/O- and memory-space enable bits (bits 0 and 1 of the command
    /// register at 0x04).
    Decode,
    /// Base address register `n` (at `0x10 + 4 * n`).
    Bar(u8),
    /// The expansion ROM base address register (0x30).
    ExpansionRom,
}

impl fmt::Display for ProtectedRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode => {
                f.write_str("the I/O and memory decode bits (command register bits 0-1)")
            }
            Self::Bar(n) => write!(f, "BAR {n} (offset {:#x})", BARS.start + 4 * u64::from(*n)),
            Self::ExpansionRom => f.write_str("the expansion ROM BAR (offset 0x30)"),
        }
    }
}

/// What to do instead of writing `register`.
fn instead(register: ProtectedRegister) -> &'static str {
    match register {
        ProtectedRegister::Decode => {
            "with decoding off every BAR access faults: leave bits 0-1 as they are (bus master and INTx disable may be changed); to stop the device, reset it (Device::reset) or drop it"
        }
        ProtectedRegister::Bar(_) => {
            "the kernel placed the BAR and maps it for you: reach its registers with Device::bar, and read its address and size from sysfs (`usrdrv info`)"
        }
        ProtectedRegister::ExpansionRom => {
            "the kernel owns the ROM's placement: read the ROM through sysfs (`echo 1 > /sys/bus/pci/devices/ADDR/rom`, then read that file)"
        }
    }
}

/// Why a configuration-space write was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The write would change a register usrdrv's BAR access relies on.
    #[error(
        "a {len}-byte configuration write at offset {offset:#x} would change {register}, so it was refused: {}. Code that must change it (and keeps every BAR untouched meanwhile) can use the unsafe Device::write_config_unchecked",
        instead(*register)
    )]
    Protected {
        /// Where the write started.
        offset: u64,
        /// How many bytes it had.
        len: usize,
        /// The first protected register it would change.
        register: ProtectedRegister,
    },
}

/// Whether a `len`-byte write at `offset` covers the command register's low
/// byte (the decode bits), so its current value is needed to check it.
pub(crate) fn covers_decode_bits(offset: u64, len: usize) -> bool {
    overlaps(offset, len, COMMAND..COMMAND + 1)
}

fn overlaps(offset: u64, len: usize, range: std::ops::Range<u64>) -> bool {
    let end = offset.saturating_add(len as u64);
    len != 0 && offset < range.end && range.start < end
}

/// A filtered configuration write, for the backends: reads the command
/// register (with `read_command`) only when the write covers its decode bits,
/// checks the write with [`check_write`], then issues it with `write`.
pub(crate) fn filtered_write<E: From<ConfigError>>(
    offset: u64,
    data: &[u8],
    read_command: impl FnOnce() -> Result<u16, E>,
    write: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    let command = if covers_decode_bits(offset, data.len()) {
        Some(read_command()?)
    } else {
        None
    };
    check_write(offset, data, command)?;
    write()
}

/// Checks a write of `data` at `offset`. `command` is the command register's
/// current value, needed when [`covers_decode_bits`] (`None` then refuses, to
/// be safe). The write may rewrite the decode bits with their current value
/// (as a read-modify-write of the command register does); it may not change
/// them, nor touch a base address register.
pub(crate) fn check_write(
    offset: u64,
    data: &[u8],
    command: Option<u16>,
) -> Result<(), ConfigError> {
    let refuse = |register| {
        Err(ConfigError::Protected {
            offset,
            len: data.len(),
            register,
        })
    };
    if covers_decode_bits(offset, data.len()) {
        // `covers_decode_bits` proved offset <= COMMAND < offset + len.
        let new = usize::try_from(COMMAND - offset)
            .ok()
            .and_then(|i| data.get(i).copied());
        let current = command.map(|c| c.to_le_bytes()[0]);
        match (new, current) {
            (Some(new), Some(current)) if (new ^ current) & COMMAND_DECODE == 0 => {}
            _ => return refuse(ProtectedRegister::Decode),
        }
    }
    if overlaps(offset, data.len(), BARS.clone()) {
        let first = offset.max(BARS.start);
        // At most 5: `first` lies inside BARS.
        return refuse(ProtectedRegister::Bar(((first - BARS.start) / 4) as u8));
    }
    if overlaps(offset, data.len(), ROM) {
        return refuse(ProtectedRegister::ExpansionRom);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(offset: u64, data: &[u8], command: Option<u16>) -> Option<ProtectedRegister> {
        match check_write(offset, data, command) {
            Ok(()) => None,
            Err(ConfigError::Protected { register, .. }) => Some(register),
        }
    }

    #[test]
    fn bus_master_and_intx_disable_may_change_decode_may_not() {
        let on = 0x0007; // I/O, memory, bus master
        // Read-modify-write of the command register, bus master on or off.
        assert_eq!(refused(0x04, &0x0007u16.to_le_bytes(), Some(0x0003)), None);
        assert_eq!(refused(0x04, &0x0003u16.to_le_bytes(), Some(on)), None);
        // INTx disable is bit 10, in the high byte: no need to know the low one.
        assert!(!covers_decode_bits(0x05, 1));
        assert_eq!(refused(0x05, &[0x04], None), None);
        // Clearing memory or I/O decode, in any width that covers byte 0x04.
        assert_eq!(
            refused(0x04, &[0x05], Some(on)),
            Some(ProtectedRegister::Decode)
        );
        assert_eq!(
            refused(0x04, &0x0006u16.to_le_bytes(), Some(on)),
            Some(ProtectedRegister::Decode)
        );
        assert_eq!(
            refused(0x04, &0x0010_0004u32.to_le_bytes(), Some(on)),
            Some(ProtectedRegister::Decode)
        );
        assert_eq!(
            refused(0x00, &[0; 8], Some(on)),
            Some(ProtectedRegister::Decode)
        );
        // Setting a decode bit that is off is a change too.
        assert_eq!(
            refused(0x04, &[0x07], Some(0x0006)),
            Some(ProtectedRegister::Decode)
        );
        // Unknown current value: refused.
        assert_eq!(
            refused(0x04, &[0x07], None),
            Some(ProtectedRegister::Decode)
        );
        // Status register (0x06) and below the command register: free.
        assert_eq!(refused(0x06, &[0xff, 0xff], None), None);
        assert_eq!(refused(0x00, &[0; 4], None), None);
        assert_eq!(refused(0x00, &[0; 4], None), None);
    }

    #[test]
    fn base_address_registers_and_the_rom_are_refused() {
        assert_eq!(
            refused(0x10, &[0xff; 4], None),
            Some(ProtectedRegister::Bar(0))
        );
        assert_eq!(
            refused(0x24, &[0xff; 4], None),
            Some(ProtectedRegister::Bar(5))
        );
        assert_eq!(refused(0x1b, &[0], None), Some(ProtectedRegister::Bar(2)));
        assert_eq!(
            refused(0x0c, &[0; 8], None),
            Some(ProtectedRegister::Bar(0)),
            "overlaps from below"
        );
        assert_eq!(
            refused(0x27, &[0; 2], None),
            Some(ProtectedRegister::Bar(5))
        );
        assert_eq!(
            refused(0x30, &[1], None),
            Some(ProtectedRegister::ExpansionRom)
        );
        assert_eq!(
            refused(0x2e, &[0; 4], None),
            Some(ProtectedRegister::ExpansionRom)
        );
        // Around them: cache line size, latency timer, subsystem ids (read-only
        // anyway), capabilities pointer, interrupt line, capability bodies.
        for (offset, len) in [
            (0x0c, 4),
            (0x28, 8),
            (0x34, 4),
            (0x3c, 1),
            (0x40, 64),
            (0x100, 4),
        ] {
            assert_eq!(
                refused(offset, &vec![0; len], None),
                None,
                "{offset:#x}+{len}"
            );
        }
        assert_eq!(
            refused(0x10, &[], None),
            None,
            "an empty write changes nothing"
        );
        assert_eq!(refused(u64::MAX, &[0; 4], None), None, "no overflow");
    }

    #[test]
    fn the_message_says_what_to_use_instead() {
        let err = check_write(0x14, &[0; 4], None).unwrap_err().to_string();
        assert!(
            err.contains("BAR 1 (offset 0x14)") && err.contains("Device::bar"),
            "{err}"
        );
        assert!(err.contains("write_config_unchecked"), "{err}");
        let err = check_write(0x04, &[0], Some(3)).unwrap_err().to_string();
        assert!(
            err.contains("decode") && err.contains("Device::reset"),
            "{err}"
        );
    }
}
