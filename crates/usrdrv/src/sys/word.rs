//! The plain integers that device and DMA memory are accessed in: `u8`, `u16`,
//! `u32` and `u64`, each read or written in one naturally aligned access.
//!
//! This is the bottom layer: BAR mappings (`sys::mmap`) and DMA memory
//! (`sys::dma_memory`) use it, and `mmio` re-exports [`MmioValue`].

use std::fmt;
use std::sync::atomic::Ordering;

use super::word_access::Access;

/// A value that can be read from or written to device memory or DMA memory in
/// one access: `u8`, `u16`, `u32` or `u64`. Device registers and DMA
/// structures are little-endian (PCI); accessors convert to and from the CPU's
/// order.
pub trait MmioValue: sealed::Word + Copy + Eq + fmt::Debug + Send + Sync + 'static {}

pub(crate) mod sealed {
    use std::sync::atomic::Ordering;

    /// What the crate needs of an access width; not nameable outside it, so
    /// [`super::MmioValue`] cannot be implemented for other types.
    pub trait Word: Copy {
        /// Converts from little-endian (what the device holds) to the CPU's order.
        fn from_le(raw: Self) -> Self;
        /// Converts from the CPU's order to little-endian.
        fn to_le(self) -> Self;
        /// Decodes from little-endian bytes: exactly `size_of::<Self>()` of them.
        fn from_le_slice(bytes: &[u8]) -> Self;
        /// Encodes to little-endian bytes, appended to `out`.
        fn extend_le(self, out: &mut Vec<u8>);
        /// The value, widened to 64 bits.
        fn to_u64(self) -> u64;
        /// The low bits of `value` (a device model's answer of this width).
        fn from_u64_truncating(value: u64) -> Self;
        /// One naturally aligned load of the raw value at `ptr`, as
        /// `sys::word_access` issues it.
        ///
        /// # Safety
        ///
        /// `ptr` is valid for reads of `Self`, aligned to `size_of::<Self>()`,
        /// and while the load runs nothing in this process accesses the bytes
        /// other than through these two methods (the device's accesses are
        /// outside the Rust memory model).
        unsafe fn load(ptr: *mut Self, order: Ordering) -> Self;
        /// One naturally aligned store of the raw `value` at `ptr`.
        ///
        /// # Safety
        ///
        /// As for [`Word::load`], and `ptr` is valid for writes.
        unsafe fn store(ptr: *mut Self, value: Self, order: Ordering);
    }
}

macro_rules! word {
    ($($t:ty),*) => {$(
        impl sealed::Word for $t {
            #[inline(always)]
            fn from_le(raw: Self) -> Self {
                <$t>::from_le(raw)
            }
            #[inline(always)]
            fn to_le(self) -> Self {
                <$t>::to_le(self)
            }
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                <$t>::from_le_bytes(buf)
            }
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn to_u64(self) -> u64 {
                u64::from(self)
            }
            #[inline(always)]
            #[allow(clippy::cast_possible_truncation, reason = "truncation is the point")]
            fn from_u64_truncating(value: u64) -> Self {
                value as $t
            }
            #[inline(always)]
            unsafe fn load(ptr: *mut Self, order: Ordering) -> Self {
                // SAFETY: the caller's guarantee is `Access::load`'s contract.
                unsafe { <$t as Access>::load(ptr, order) }
            }
            #[inline(always)]
            unsafe fn store(ptr: *mut Self, value: Self, order: Ordering) {
                // SAFETY: the caller's guarantee is `Access::store`'s contract.
                unsafe { <$t as Access>::store(ptr, value, order) }
            }
        }
        impl MmioValue for $t {}
    )*};
}
word!(u8, u16, u32, u64);
