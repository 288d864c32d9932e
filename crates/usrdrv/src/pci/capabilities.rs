//! The capability lists in PCI configuration space: the standard list from
//! offset 0x34 and, on PCI Express devices, the extended list from 0x100.

use std::fmt;

/// Offset of the status register; bit 4 says a capability list exists.
const STATUS: usize = 0x06;
const STATUS_CAP_LIST: u16 = 0x10;
/// Offset of the pointer to the first standard capability.
const CAP_POINTER: usize = 0x34;
/// Where the extended capabilities start (PCI Express configuration space).
const EXTENDED_START: usize = 0x100;
/// Bounds on how many entries a list can have (each is at least 4 bytes), so
/// a looping chain ends.
const MAX_STANDARD: usize = 48;
const MAX_EXTENDED: usize = 960;

/// Standard capability IDs usrdrv names.
pub mod id {
    /// Power management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// Message-signalled interrupts.
    pub const MSI: u8 = 0x05;
    /// Vendor-specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// One capability: where it is and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// A standard capability at `offset` (below 0x100).
    Standard {
        /// Its ID.
        id: u8,
        /// Its offset in configuration space.
        offset: u16,
    },
    /// A PCI Express extended capability at `offset` (0x100 and above).
    Extended {
        /// Its ID.
        id: u16,
        /// Its version.
        version: u8,
        /// Its offset in configuration space.
        offset: u16,
    },
}

impl Capability {
    /// Its offset in configuration space.
    pub fn offset(&self) -> u16 {
        match self {
            Self::Standard { offset, .. } | Self::Extended { offset, .. } => *offset,
        }
    }

    /// A short name, when usrdrv knows the ID.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Self::Standard { id, .. } => match *id {
                id::POWER_MANAGEMENT => Some("Power Management"),
                id::MSI => Some("MSI"),
                id::VENDOR => Some("Vendor Specific"),
                id::PCI_EXPRESS => Some("PCI Express"),
                id::MSIX => Some("MSI-X"),
                0x12 => Some("SATA"),
                0x13 => Some("Advanced Features"),
                _ => None,
            },
            Self::Extended { id, .. } => match *id {
                0x0001 => Some("Advanced Error Reporting"),
                0x0003 => Some("Device Serial Number"),
                0x000b => Some("Vendor Specific Extended"),
                0x000e => Some("ARI"),
                0x0010 => Some("SR-IOV"),
                0x0015 => Some("Resizable BAR"),
                0x001e => Some("L1 PM Substates"),
                _ => None,
            },
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name().unwrap_or("unknown");
        match self {
            Self::Standard { id, offset } => write!(f, "[{offset:#05x}] {name} ({id:#04x})"),
            Self::Extended {
                id,
                version,
                offset,
            } => {
                write!(f, "[{offset:#05x}] {name} ({id:#06x} v{version})")
            }
        }
    }
}

/// What a device's MSI capability says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiInfo {
    /// Vectors the device can use (1 to 32).
    pub vectors: u32,
    /// Whether it can send 64-bit message addresses.
    pub address_64: bool,
    /// Whether it can mask vectors one by one.
    pub per_vector_masking: bool,
}

/// What a device's MSI-X capability says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixInfo {
    /// The table size (1 to 2048).
    pub table_size: u32,
    /// The BAR holding the table, and the offset in it.
    pub table: (u8, u32),
    /// The BAR holding the pending-bit array, and the offset in it.
    pub pba: (u8, u32),
}

fn u8_at(config: &[u8], at: usize) -> Option<u8> {
    config.get(at).copied()
}

fn u16_at(config: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*config.get(at)?, *config.get(at + 1)?]))
}

fn u32_at(config: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(config.get(at..at + 4)?.try_into().ok()?))
}

/// Walks both capability lists of `config` (the configuration space bytes,
/// 256 or 4096 of them). A malformed list ends the walk; it never loops.
pub fn capabilities(config: &[u8]) -> Vec<Capability> {
    let mut found = Vec::new();
    let has_list = u16_at(config, STATUS).is_some_and(|s| s & STATUS_CAP_LIST != 0);
    if has_list {
        let mut at = u8_at(config, CAP_POINTER).map_or(0, |p| usize::from(p & !0x3));
        let mut seen = 0;
        while at >= 0x40 && seen < MAX_STANDARD {
            let (Some(id), Some(next)) = (u8_at(config, at), u8_at(config, at + 1)) else {
                break;
            };
            found.push(Capability::Standard {
                id,
                offset: at as u16,
            });
            at = usize::from(next & !0x3);
            seen += 1;
        }
    }
    let mut at = EXTENDED_START;
    let mut seen = 0;
    while at >= EXTENDED_START && seen < MAX_EXTENDED {
        let Some(header) = u32_at(config, at) else {
            break;
        };
        // An all-zero or all-ones header means no extended capabilities.
        if header == 0 || header == u32::MAX {
            break;
        }
        found.push(Capability::Extended {
            id: (header & 0xffff) as u16,
            version: ((header >> 16) & 0xf) as u8,
            offset: at as u16,
        });
        at = ((header >> 20) & !0x3) as usize;
        seen += 1;
    }
    found
}

/// The first standard capability with `id`, if any.
pub fn find(config: &[u8], id: u8) -> Option<u16> {
    capabilities(config).into_iter().find_map(|c| match c {
        Capability::Standard { id: found, offset } if found == id => Some(offset),
        _ => None,
    })
}

/// The MSI capability's contents, if the device has one.
pub fn msi(config: &[u8]) -> Option<MsiInfo> {
    let at = usize::from(find(config, id::MSI)?);
    let control = u16_at(config, at + 2)?;
    Some(MsiInfo {
        vectors: 1 << ((control >> 1) & 0x7).min(5),
        address_64: control & 0x80 != 0,
        per_vector_masking: control & 0x100 != 0,
    })
}

/// The MSI-X capability's contents, if the device has one.
pub fn msix(config: &[u8]) -> Option<MsixInfo> {
    let at = usize::from(find(config, id::MSIX)?);
    let control = u16_at(config, at + 2)?;
    let table = u32_at(config, at + 4)?;
    let pba = u32_at(config, at + 8)?;
    Some(MsixInfo {
        table_size: u32::from(control & 0x7ff) + 1,
        table: ((table & 0x7) as u8, table & !0x7),
        pba: ((pba & 0x7) as u8, pba & !0x7),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Configuration space of an NVMe-like device: PM -> MSI-X -> PCIe, then
    /// AER -> Serial Number in the extended space.
    fn nvme_like() -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[STATUS] = STATUS_CAP_LIST as u8;
        c[CAP_POINTER] = 0x40;
        c[0x40..0x42].copy_from_slice(&[id::POWER_MANAGEMENT, 0x50]);
        c[0x50..0x52].copy_from_slice(&[id::MSIX, 0x80]);
        c[0x52..0x54].copy_from_slice(&64u16.wrapping_sub(1).to_le_bytes()); // 64 entries
        c[0x54..0x58].copy_from_slice(&0x2000u32.to_le_bytes()); // BAR 0 + 0x2000
        c[0x58..0x5c].copy_from_slice(&(0x3000u32 | 4).to_le_bytes()); // BAR 4 + 0x3000
        c[0x80..0x82].copy_from_slice(&[id::PCI_EXPRESS, 0x00]);
        c[0x100..0x104].copy_from_slice(&(0x0001u32 | 2 << 16 | 0x148 << 20).to_le_bytes());
        c[0x148..0x14c].copy_from_slice(&(0x0003u32 | 1 << 16).to_le_bytes());
        c
    }

    #[test]
    fn walks_both_lists() {
        let caps = capabilities(&nvme_like());
        assert_eq!(
            caps,
            vec![
                Capability::Standard {
                    id: 0x01,
                    offset: 0x40
                },
                Capability::Standard {
                    id: 0x11,
                    offset: 0x50
                },
                Capability::Standard {
                    id: 0x10,
                    offset: 0x80
                },
                Capability::Extended {
                    id: 0x0001,
                    version: 2,
                    offset: 0x100
                },
                Capability::Extended {
                    id: 0x0003,
                    version: 1,
                    offset: 0x148
                },
            ]
        );
        assert_eq!(caps[1].to_string(), "[0x050] MSI-X (0x11)");
        assert_eq!(
            caps[3].to_string(),
            "[0x100] Advanced Error Reporting (0x0001 v2)"
        );
    }

    #[test]
    fn reads_msix_and_msi() {
        let c = nvme_like();
        assert_eq!(
            msix(&c),
            Some(MsixInfo {
                table_size: 64,
                table: (0, 0x2000),
                pba: (4, 0x3000)
            })
        );
        assert_eq!(msi(&c), None);
        let mut edu = vec![0u8; 256];
        edu[STATUS] = STATUS_CAP_LIST as u8;
        edu[CAP_POINTER] = 0x40;
        edu[0x40..0x44].copy_from_slice(&[id::MSI, 0x00, 0x80 | (2 << 1), 0x01]);
        assert_eq!(
            msi(&edu),
            Some(MsiInfo {
                vectors: 4,
                address_64: true,
                per_vector_masking: true
            })
        );
    }

    #[test]
    fn conventional_space_and_no_list() {
        let mut c = nvme_like();
        c.truncate(256);
        assert_eq!(capabilities(&c).len(), 3, "no extended list in 256 bytes");
        c[STATUS] = 0;
        assert!(capabilities(&c).is_empty(), "status says there is no list");
    }

    #[test]
    fn loops_and_garbage_end_the_walk() {
        let mut c = nvme_like();
        c[0x81] = 0x40; // PCIe -> PM again: a loop
        c[0x148..0x14c].copy_from_slice(&(0x0003u32 | 0x100 << 20).to_le_bytes()); // back to 0x100
        let caps = capabilities(&c);
        assert!(caps.len() <= MAX_STANDARD + MAX_EXTENDED);
        // Pointers into the header or past the end stop cleanly.
        let mut d = nvme_like();
        d[0x51] = 0x10;
        assert_eq!(
            capabilities(&d)
                .iter()
                .filter(|c| matches!(c, Capability::Standard { .. }))
                .count(),
            2
        );
        assert!(capabilities(&[]).is_empty());
        assert!(capabilities(&[0xff; 7]).is_empty());
    }
}
