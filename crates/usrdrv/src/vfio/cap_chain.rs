//! The capability chains VFIO appends to its info replies (IOMMU info, region
//! info): a header of `id`, `version` and `next` (the offset of the next one
//! from the start of the reply, 0 at the end), then the capability's data.

/// The `N` bytes at `offset`, if the buffer holds them (the kernel writes native-endian).
fn read<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

pub(super) fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    read::<2>(bytes, offset).map(u16::from_ne_bytes)
}

pub(super) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    read::<4>(bytes, offset).map(u32::from_ne_bytes)
}

pub(super) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    read::<8>(bytes, offset).map(u64::from_ne_bytes)
}

/// Capabilities beyond this many mean a corrupt (looping) chain.
const MAX_CAPS: usize = 64;

/// The capabilities of a chain whose first one is at offset `first` (0 for
/// none), as `(id, offset)` pairs in chain order. A chain that points past
/// the reply or loops is an error.
pub(super) fn walk(bytes: &[u8], first: usize) -> Result<Vec<(u32, usize)>, String> {
    let mut found = Vec::new();
    let mut next = first;
    while next != 0 {
        if found.len() >= MAX_CAPS {
            return Err("the capability chain loops".into());
        }
        let at = next;
        let id =
            read_u16(bytes, at).ok_or_else(|| format!("capability at {at} is past the buffer"))?;
        next = read_u32(bytes, at + 4).ok_or_else(|| format!("capability at {at} is truncated"))?
            as usize;
        found.push((u32::from(id), at));
    }
    Ok(found)
}
