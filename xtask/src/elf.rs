//! Just enough ELF to tell a static executable from a dynamic one.
//!
//! The guest has no dynamic loader or shared libraries, so every program
//! copied into it must be static. A dynamic executable has a `PT_INTERP`
//! program header naming its loader.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// `PT_INTERP` program header type.
const PT_INTERP: u32 = 3;

/// Whether the ELF64 little-endian executable at `path` is static (has no
/// `PT_INTERP`). Other files are an error.
pub fn is_static(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).ctx("open", path)?;
    let mut header = [0u8; 64];
    file.read_exact(&mut header)
        .ctx("read the ELF header of", path)?;
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err(Error::Image(format!(
            "{} is not a 64-bit little-endian ELF executable",
            path.display()
        )));
    }
    let phoff = u64::from_le_bytes(bytes8(&header[0x20..0x28]));
    let phentsize = u16::from_le_bytes([header[0x36], header[0x37]]);
    let phnum = u16::from_le_bytes([header[0x38], header[0x39]]);
    for i in 0..u64::from(phnum) {
        let offset = phoff + i * u64::from(phentsize);
        file.seek(SeekFrom::Start(offset)).ctx("read", path)?;
        let mut p_type = [0u8; 4];
        file.read_exact(&mut p_type)
            .ctx("read the program headers of", path)?;
        if u32::from_le_bytes(p_type) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Fails with a clear message unless `path` is a static executable.
pub fn require_static(path: &Path, hint: &str) -> Result<()> {
    if is_static(path)? {
        Ok(())
    } else {
        Err(Error::Image(format!(
            "{} is dynamically linked and cannot run in the guest: {hint}",
            path.display()
        )))
    }
}

fn bytes8(slice: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(slice);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_test_binary_is_dynamic() {
        // Test binaries are built without crt-static, so they have a loader.
        let exe = std::env::current_exe().expect("current exe");
        assert!(!is_static(&exe).expect("parses"));
    }

    #[test]
    fn minimal_static_elf() {
        // An ELF header with one PT_LOAD program header and no PT_INTERP.
        let mut bytes = vec![0u8; 64 + 56];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[64..68].copy_from_slice(&1u32.to_le_bytes());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("static");
        std::fs::write(&path, &bytes).expect("write");
        assert!(is_static(&path).expect("parses"));
        bytes[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write");
        assert!(!is_static(&path).expect("parses"));
    }

    #[test]
    fn not_elf_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script");
        std::fs::write(&path, vec![b'#'; 100]).expect("write");
        assert!(is_static(&path).is_err());
    }
}
