//! Single loads and stores of memory that a device, other threads and other
//! processes share: the processor's own instructions, not Rust atomics.
//!
//! Why not `AtomicU8`..`AtomicU64`: Rust's memory model (C++'s) makes two
//! atomic accesses of different sizes that overlap and race, one of them a
//! write, undefined behaviour. DMA memory is reached at whatever width each
//! field of a device structure has, by the device, by other processes and by
//! any thread holding a shared region, so safe code could build such a race
//! (a `u16` phase-tag store against a word-wise copy of the whole entry).
//!
//! On x86-64 each access here is one `mov` (or, for a sequentially consistent
//! store, one `xchg`) in inline assembly. To the compiler an `asm!` block is
//! an opaque operation that may read and write any memory it can reach, so it
//! is never merged, split, elided or moved across other memory accesses; what
//! concurrent accesses of any mix of sizes then do is defined by the
//! processor's memory model, x86-TSO: an aligned access of up to 8 bytes is
//! single-copy atomic, loads have acquire and stores release ordering, and a
//! locked `xchg` is a full barrier. This memory is never accessed by ordinary
//! Rust code while it is shared (`DmaWindow`'s invariant), so these accesses,
//! like the device's own, stay outside the abstract machine: the same footing
//! as the Linux kernel's `READ_ONCE`/`WRITE_ONCE` under its own memory model.
//!
//! On other architectures the accesses fall back to Rust atomics, and the race
//! of mixed widths between this process's threads stays the caller's to avoid
//! (the crate's DMA safety model says so).
//!
//! Orderings that have no meaning for the access never panic, as
//! `AtomicU32::load(Ordering::Release)` would: a load with `Release` or
//! `AcqRel` is an `Acquire` load, and a store with `Acquire` or `AcqRel` is a
//! sequentially consistent one (the stronger ordering is always sound).

use std::sync::atomic::Ordering;

/// A width that memory shared with a device can be accessed in.
pub(crate) trait Access: Copy {
    /// One naturally aligned load of the raw value at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for reads of `Self` and aligned to `size_of::<Self>()`,
    /// and while the load runs nothing in this process accesses the bytes
    /// other than through this trait (the device's and other processes'
    /// accesses are outside the Rust memory model).
    unsafe fn load(ptr: *mut Self, order: Ordering) -> Self;

    /// One naturally aligned store of the raw `value` at `ptr`.
    ///
    /// # Safety
    ///
    /// As for [`Access::load`], and `ptr` is valid for writes.
    unsafe fn store(ptr: *mut Self, value: Self, order: Ordering);
}

/// Whether a store with `order` must also be a full barrier.
#[inline(always)]
fn store_is_seq_cst(order: Ordering) -> bool {
    !matches!(order, Ordering::Relaxed | Ordering::Release)
}

#[cfg(target_arch = "x86_64")]
macro_rules! access {
    ($($t:ty: $class:ident, $size:literal, $reg:literal);* $(;)?) => {$(
        impl Access for $t {
            #[inline(always)]
            unsafe fn load(ptr: *mut Self, order: Ordering) -> Self {
                let value: $t;
                if matches!(order, Ordering::Relaxed) {
                    // SAFETY: the caller guarantees `ptr` is valid for reads and
                    // aligned, so the `mov` is one single-copy atomic load that
                    // cannot fault; it writes no memory (`readonly`), touches no
                    // stack and no flags. A relaxed load needs no ordering
                    // against other accesses, so the compiler may move them
                    // past it.
                    unsafe {
                        std::arch::asm!(
                            concat!("mov {v", $reg, "}, ", $size, " ptr [{p}]"),
                            p = in(reg) ptr,
                            v = lateout($class) value,
                            options(nostack, preserves_flags, readonly),
                        );
                    }
                } else {
                    // SAFETY: as above. Without `readonly` the block is a
                    // compiler barrier, so later accesses stay after it, and an
                    // x86 load is an acquire load in hardware.
                    unsafe {
                        std::arch::asm!(
                            concat!("mov {v", $reg, "}, ", $size, " ptr [{p}]"),
                            p = in(reg) ptr,
                            v = lateout($class) value,
                            options(nostack, preserves_flags),
                        );
                    }
                }
                value
            }

            #[inline(always)]
            unsafe fn store(ptr: *mut Self, value: Self, order: Ordering) {
                if store_is_seq_cst(order) {
                    // SAFETY: the caller guarantees `ptr` is valid for writes and
                    // aligned; `xchg` with memory is implicitly locked, so it is
                    // one atomic store and a full barrier (the x86 mapping of a
                    // sequentially consistent store). The block is a compiler
                    // barrier; it uses no stack and sets no flags.
                    unsafe {
                        std::arch::asm!(
                            concat!("xchg ", $size, " ptr [{p}], {v", $reg, "}"),
                            p = in(reg) ptr,
                            v = inout($class) value => _,
                            options(nostack, preserves_flags),
                        );
                    }
                } else {
                    // SAFETY: as above; a plain aligned `mov` is one single-copy
                    // atomic store with release ordering in hardware, and the
                    // block keeps earlier accesses before it in the compiler.
                    unsafe {
                        std::arch::asm!(
                            concat!("mov ", $size, " ptr [{p}], {v", $reg, "}"),
                            p = in(reg) ptr,
                            v = in($class) value,
                            options(nostack, preserves_flags),
                        );
                    }
                }
            }
        }
    )*};
}

#[cfg(target_arch = "x86_64")]
access! {
    u8: reg_byte, "byte", "";
    u16: reg, "word", ":x";
    u32: reg, "dword", ":e";
    u64: reg, "qword", ":r";
}

#[cfg(not(target_arch = "x86_64"))]
macro_rules! access {
    ($($t:ty => $atomic:ty),*) => {$(
        impl Access for $t {
            #[inline(always)]
            unsafe fn load(ptr: *mut Self, order: Ordering) -> Self {
                let order = match order {
                    Ordering::Relaxed => Ordering::Relaxed,
                    Ordering::Acquire | Ordering::Release | Ordering::AcqRel => Ordering::Acquire,
                    _ => Ordering::SeqCst,
                };
                // SAFETY: the caller guarantees `ptr` is valid and aligned to the
                // integer's size, which is the atomic type's alignment (checked
                // below), and accessed only through this trait meanwhile.
                unsafe { <$atomic>::from_ptr(ptr) }.load(order)
            }

            #[inline(always)]
            unsafe fn store(ptr: *mut Self, value: Self, order: Ordering) {
                let order = if store_is_seq_cst(order) { Ordering::SeqCst } else { order };
                // SAFETY: as in `load`, and `ptr` is valid for writes.
                unsafe { <$atomic>::from_ptr(ptr) }.store(value, order);
            }
        }
        const _: () = assert!(
            std::mem::align_of::<$atomic>() == std::mem::size_of::<$t>(),
            "naturally aligned integers must be valid atomics"
        );
    )*};
}

#[cfg(not(target_arch = "x86_64"))]
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64};
#[cfg(not(target_arch = "x86_64"))]
access!(u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64);

/// How many words a bulk copy moves per `asm!` block: enough that the
/// compiler barrier each block is costs little, few enough to stay in
/// caller-saved registers (eight made a 64-byte entry's copy save and
/// restore six registers, which emulated CPUs pay for).
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 4;

/// Copies `words` 8-byte words out of shared memory at `shared` into private
/// memory at `private`, in address order, each word one 8-byte load: the bulk
/// form of [`Access::load`] (relaxed) for `read_bytes`.
///
/// # Safety
///
/// `shared` is aligned to 8, valid for reads of `words * 8` bytes and, while
/// the copy runs, accessed by nothing else in this process than [`Access`]
/// and these copies; `private` is valid for writes of as many bytes (any
/// alignment) and does not overlap it.
#[inline(always)]
pub(crate) unsafe fn copy_words_out(shared: *const u64, private: *mut u8, words: usize) {
    // Other architectures copy word by word.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    while words - done >= BLOCK {
        let (w0, w1, w2, w3): (u64, u64, u64, u64);
        let at = shared.wrapping_add(done);
        // SAFETY: words `done..done + 4` of the shared run: aligned, in bounds
        // (caller, and the loop condition), so each `mov` is one single-copy
        // atomic load that cannot fault. The outputs are `out`, not
        // `lateout`, so none shares a register with the address that later
        // loads still use. The block writes no memory
        // (`readonly`: relaxed loads need no ordering), uses no stack and
        // keeps the flags.
        unsafe {
            std::arch::asm!(
                "mov {0}, qword ptr [{p}]",
                "mov {1}, qword ptr [{p} + 8]",
                "mov {2}, qword ptr [{p} + 16]",
                "mov {3}, qword ptr [{p} + 24]",
                out(reg) w0, out(reg) w1, out(reg) w2, out(reg) w3,
                p = in(reg) at,
                options(nostack, preserves_flags, readonly),
            );
        }
        for (k, value) in [w0, w1, w2, w3].into_iter().enumerate() {
            // SAFETY: in bounds of the private run (caller), any alignment;
            // the private memory is ordinary memory this call may write.
            unsafe {
                private
                    .wrapping_add((done + k) * 8)
                    .cast::<u64>()
                    .write_unaligned(value)
            };
        }
        done += BLOCK;
    }
    for word in done..words {
        // SAFETY: word `word` of the shared run, aligned and in bounds
        // (caller); accessed through `Access` only.
        let value = unsafe { u64::load(shared.wrapping_add(word).cast_mut(), Ordering::Relaxed) };
        // SAFETY: in bounds of the private run (caller), any alignment.
        unsafe {
            private
                .wrapping_add(word * 8)
                .cast::<u64>()
                .write_unaligned(value)
        };
    }
}

/// Copies `words` 8-byte words from private memory at `private` into shared
/// memory at `shared`, in address order, each word one 8-byte store: the bulk
/// form of [`Access::store`] (relaxed) for `write_bytes`.
///
/// # Safety
///
/// As for [`copy_words_out`], with `shared` valid for writes and `private`
/// for reads.
#[inline(always)]
pub(crate) unsafe fn copy_words_in(private: *const u8, shared: *mut u64, words: usize) {
    // Other architectures copy word by word.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    while words - done >= BLOCK {
        let mut w = [0u64; BLOCK];
        for (k, value) in w.iter_mut().enumerate() {
            // SAFETY: in bounds of the private run (caller), any alignment.
            *value = unsafe {
                private
                    .wrapping_add((done + k) * 8)
                    .cast::<u64>()
                    .read_unaligned()
            };
        }
        let at = shared.wrapping_add(done);
        // SAFETY: words `done..done + 4` of the shared run: aligned, in bounds
        // and writable (caller, and the loop condition), so each `mov` is one
        // single-copy atomic store, in address order. The block is a compiler
        // barrier; it uses no stack and keeps the flags.
        unsafe {
            std::arch::asm!(
                "mov qword ptr [{p}], {0}",
                "mov qword ptr [{p} + 8], {1}",
                "mov qword ptr [{p} + 16], {2}",
                "mov qword ptr [{p} + 24], {3}",
                in(reg) w[0], in(reg) w[1], in(reg) w[2], in(reg) w[3],
                p = in(reg) at,
                options(nostack, preserves_flags),
            );
        }
        done += BLOCK;
    }
    for word in done..words {
        // SAFETY: in bounds of the private run (caller), any alignment.
        let value = unsafe {
            private
                .wrapping_add(word * 8)
                .cast::<u64>()
                .read_unaligned()
        };
        // SAFETY: word `word` of the shared run, aligned, in bounds, writable
        // (caller); accessed through `Access` only.
        unsafe { u64::store(shared.wrapping_add(word), value, Ordering::Relaxed) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    /// 64 aligned bytes that threads share only through [`Access`] and the
    /// word copies.
    struct Shared(std::cell::UnsafeCell<[u64; 8]>);
    // SAFETY: the tests reach the cell only through `Access`.
    unsafe impl Sync for Shared {}

    impl Shared {
        fn at<T>(&self, offset: usize) -> *mut T {
            // `offset` is within the 64 bytes and a multiple of `size_of::<T>()`
            // in every call below; `wrapping_add` keeps this free of `unsafe`.
            self.0.get().cast::<u8>().wrapping_add(offset).cast::<T>()
        }
    }

    const ORDERS: [Ordering; 5] = [
        Ordering::Relaxed,
        Ordering::Release,
        Ordering::Acquire,
        Ordering::AcqRel,
        Ordering::SeqCst,
    ];

    #[test]
    fn every_width_and_order_round_trips_without_panicking() {
        let cell = Shared(std::cell::UnsafeCell::new([0; 8]));
        for order in ORDERS {
            // SAFETY: in bounds and aligned; only this thread touches the cell.
            unsafe { u64::store(cell.at(0), 0x1122_3344_5566_7788, order) };
            // SAFETY: as above.
            let whole = unsafe { u64::load(cell.at(0), order) };
            assert_eq!(whole, 0x1122_3344_5566_7788);
            // SAFETY: as above.
            unsafe { u32::store(cell.at(4), 0xaabb_ccdd, order) };
            // SAFETY: as above.
            let back = unsafe { u32::load(cell.at(4), order) };
            assert_eq!(back, 0xaabb_ccdd);
            // SAFETY: as above.
            unsafe { u16::store(cell.at(2), 0xeeff, order) };
            // SAFETY: as above.
            let back = unsafe { u16::load(cell.at(2), order) };
            assert_eq!(back, 0xeeff);
            // SAFETY: as above.
            unsafe { u8::store(cell.at(1), 0x99, order) };
            // SAFETY: as above.
            let back = unsafe { u8::load(cell.at(1), order) };
            assert_eq!(back, 0x99);
            // The narrow stores landed in the bytes they name, and only there.
            // SAFETY: as above.
            let all = unsafe { u64::load(cell.at(0), Ordering::Relaxed) };
            assert_eq!(
                all.to_le_bytes(),
                [0x88, 0x99, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa]
            );
        }
    }

    #[test]
    fn racing_accesses_of_mixed_widths_are_each_whole() {
        // One thread flips a u16 and a u8 between two values while another
        // reads the whole word, its low half, and all 64 bytes with a word
        // copy: every read sees each narrow field either old or new, never a
        // torn mix, and the bytes nobody writes never change.
        let cell = Arc::new(Shared(std::cell::UnsafeCell::new(
            [0x5a5a_0000_a5a5_0000; 8],
        )));
        let stop = Arc::new(AtomicBool::new(false));
        let flipped = Arc::new(AtomicU64::new(0));
        let writer = {
            let (cell, stop, flipped) =
                (Arc::clone(&cell), Arc::clone(&stop), Arc::clone(&flipped));
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (half, byte) = if flips.is_multiple_of(2) {
                        (0xffff, 0xff)
                    } else {
                        (0, 0)
                    };
                    // SAFETY: in bounds and aligned; the cell is reached only
                    // through `Access` by both threads.
                    unsafe { u16::store(cell.at(0), half, ORDERS[(flips % 5) as usize]) };
                    // SAFETY: as above.
                    unsafe { u8::store(cell.at(5), byte, Ordering::Relaxed) };
                    flips += 1;
                    flipped.store(flips, Ordering::Relaxed);
                }
            })
        };
        // Read until both sides have done enough while the other ran: the
        // writer may start after many reads, or be descheduled for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut round = 0usize;
        let mut overlapped = 0u64;
        while overlapped < 100_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer and the reader did not overlap for 100,000 reads in 20 s"
            );
            round += 1;
            let before = flipped.load(Ordering::Relaxed);
            // SAFETY: as above.
            let all = unsafe { u64::load(cell.at(0), ORDERS[round % 5]) };
            let half = all & 0xffff;
            assert!(half == 0 || half == 0xffff, "torn u16 in {all:#018x}");
            let byte = (all >> 40) & 0xff;
            assert!(byte == 0 || byte == 0xff, "torn u8 in {all:#018x}");
            assert_eq!(
                all & 0xffff_00ff_ffff_0000,
                0x5a5a_0000_a5a5_0000,
                "a byte nobody writes changed"
            );
            // SAFETY: as above.
            let low = unsafe { u32::load(cell.at(0), Ordering::Relaxed) };
            assert!(
                matches!(low, 0xa5a5_0000 | 0xa5a5_ffff),
                "torn u32 {low:#010x}"
            );
            let mut copy = [0u8; 64];
            // SAFETY: the 64 bytes of the cell, aligned, reached only through
            // `Access` and the word copies; `copy` is this thread's own.
            unsafe { copy_words_out(cell.at(0), copy.as_mut_ptr(), 8) };
            let first = u64::from_le_bytes(copy[..8].try_into().expect("8 bytes"));
            assert!(
                matches!(first & 0xffff, 0 | 0xffff),
                "torn u16 in a copy {first:#018x}"
            );
            assert!(
                copy[8..]
                    .chunks(8)
                    .all(|w| w == 0x5a5a_0000_a5a5_0000u64.to_le_bytes()),
                "a word nobody writes changed in a copy"
            );
            if flipped.load(Ordering::Relaxed) != before {
                overlapped += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the writer thread panicked");
    }
}
