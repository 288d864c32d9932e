//! What Identify returns: the controller and its namespaces.

/// The Identify Controller data this driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// PCI vendor ID.
    pub vendor: u16,
    /// Serial number.
    pub serial: String,
    /// Model number.
    pub model: String,
    /// Firmware revision.
    pub firmware: String,
    /// Maximum Data Transfer Size, as a power of two of the minimum page size
    /// (0: no limit).
    pub mdts: u8,
    /// Controller ID.
    pub controller_id: u16,
    /// Version (as in the VS register).
    pub version: u32,
    /// Number of namespaces (the largest namespace ID).
    pub namespaces: u32,
    /// Optional Admin Command Support: bit 8 Doorbell Buffer Config.
    pub oacs: u16,
    /// Optional NVM Command Support: bit 2 Dataset Management, bit 3 Write
    /// Zeroes.
    pub oncs: u16,
    /// SGL Support (0: none).
    pub sgls: u32,
}

/// Bytes `range` of `data` as a trimmed ASCII string.
fn text(data: &[u8], range: std::ops::Range<usize>) -> String {
    String::from_utf8_lossy(&data[range]).trim().to_owned()
}

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([data[at], data[at + 1]])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from(u32_at(data, at)) | u64::from(u32_at(data, at + 4)) << 32
}

impl ControllerInfo {
    /// Whether the controller takes shadow doorbells (Doorbell Buffer
    /// Config, OACS bit 8).
    pub fn has_shadow_doorbells(&self) -> bool {
        self.oacs & 1 << 8 != 0
    }

    /// Parses the 4096-byte Identify Controller data structure.
    pub fn parse(data: &[u8; 4096]) -> Self {
        Self {
            vendor: u16_at(data, 0),
            serial: text(data, 4..24),
            model: text(data, 24..64),
            firmware: text(data, 64..72),
            mdts: data[77],
            controller_id: u16_at(data, 78),
            version: u32_at(data, 80),
            oacs: u16_at(data, 256),
            namespaces: u32_at(data, 516),
            oncs: u16_at(data, 520),
            sgls: u32_at(data, 536),
        }
    }
}

/// One namespace, from Identify Namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// Its ID.
    pub id: u32,
    /// Size in logical blocks (NSZE).
    pub blocks: u64,
    /// Bytes per logical block, from the LBA format in use.
    pub block_size: usize,
}

impl Namespace {
    /// Parses the 4096-byte Identify Namespace data structure of namespace `id`.
    pub fn parse(id: u32, data: &[u8; 4096]) -> Self {
        let format = usize::from(data[26] & 0xf);
        let lbads = data[128 + 4 * format + 2];
        Self {
            id,
            blocks: u64_at(data, 0),
            block_size: 1usize << lbads.clamp(9, 30),
        }
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks * self.block_size as u64
    }

    /// How many whole blocks `bytes` holds.
    pub fn blocks_in(&self, bytes: usize) -> u32 {
        u32::try_from(bytes / self.block_size).unwrap_or(u32::MAX)
    }
}

/// The namespace IDs in an Identify Active Namespace ID list (zero ends it).
pub fn active_namespaces(data: &[u8; 4096]) -> Vec<u32> {
    data.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&id| id != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_data_parses() {
        let mut c = [0u8; 4096];
        c[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        c[4..24].copy_from_slice(b"usrdrv-nvme0        ");
        c[24..64].copy_from_slice(&[b' '; 40]);
        c[24..34].copy_from_slice(b"QEMU NVMe ");
        c[64..72].copy_from_slice(b"7.2.22  ");
        c[77] = 7;
        c[516..520].copy_from_slice(&256u32.to_le_bytes());
        let info = ControllerInfo::parse(&c);
        assert_eq!(info.serial, "usrdrv-nvme0");
        assert_eq!(info.model, "QEMU NVMe");
        assert_eq!(info.firmware, "7.2.22");
        assert_eq!((info.vendor, info.mdts, info.namespaces), (0x1b36, 7, 256));

        let mut n = [0u8; 4096];
        n[0..8].copy_from_slice(&131_072u64.to_le_bytes());
        n[26] = 1;
        n[128 + 4 + 2] = 12;
        let ns = Namespace::parse(1, &n);
        assert_eq!(
            (ns.blocks, ns.block_size, ns.bytes()),
            (131_072, 4096, 512 << 20)
        );
        assert_eq!(ns.blocks_in(8192), 2);

        let mut list = [0u8; 4096];
        list[0..4].copy_from_slice(&1u32.to_le_bytes());
        list[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(active_namespaces(&list), [1, 3]);
    }
}
