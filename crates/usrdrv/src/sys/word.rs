//! The plain integers that device and DMA memory are accessed in: `u8`, `u16`,
//! `u32` and `u64`, each read or written in one naturally aligned access.
//!
//! This is the bottom layer: BAR mappings (`sys::mmap`) and DMA memory
//! (`sys::dma_memory`) use it, and `mmio` re-exports [`MmioValue`].

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

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
        /// An atomic load of the raw value at `ptr`.
        ///
        /// # Safety
        ///
        /// `ptr` is valid for reads of `Self`, aligned to `size_of::<Self>()`,
        /// and every access to it from this process while the load runs is
        /// atomic (the device's accesses are outside the Rust memory model).
        unsafe fn load(ptr: *mut Self, order: Ordering) -> Self;
        /// An atomic store of the raw `value` at `ptr`.
        ///
        /// # Safety
        ///
        /// As for [`Word::load`], and `ptr` is valid for writes.
        unsafe fn store(ptr: *mut Self, value: Self, order: Ordering);
    }
}

macro_rules! word {
    ($($t:ty => $atomic:ty),*) => {$(
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
                // SAFETY: the caller guarantees `ptr` is valid, aligned to the
                // integer's size (which is the atomic type's alignment on the
                // targets usrdrv supports, checked below) and only accessed
                // atomically meanwhile: `from_ptr`'s contract.
                unsafe { <$atomic>::from_ptr(ptr) }.load(order)
            }
            #[inline(always)]
            unsafe fn store(ptr: *mut Self, value: Self, order: Ordering) {
                // SAFETY: as in `load`, and the caller guarantees `ptr` is
                // valid for writes.
                unsafe { <$atomic>::from_ptr(ptr) }.store(value, order);
            }
        }
        impl MmioValue for $t {}
        const _: () = assert!(
            std::mem::align_of::<$atomic>() == std::mem::size_of::<$t>(),
            "naturally aligned integers must be valid atomics"
        );
    )*};
}
word!(u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64);
