//! The process limits that decide how much memory DMA may pin.
//!
//! VFIO and the usrdma module pin every page a device may reach, and the
//! kernel counts pinned pages against the process's `RLIMIT_MEMLOCK` unless
//! it has `CAP_IPC_LOCK`. These are the numbers usrdrv's own errors quote,
//! for tools (such as `usrdrv doctor`) that check them up front.
//!
//! ```
//! let limit = usrdrv::limits::memlock()?;
//! match limit.soft {
//!     None => println!("no limit on locked memory"),
//!     Some(bytes) if usrdrv::limits::memlock_exempt() => println!("{bytes} bytes, but exempt"),
//!     Some(bytes) => println!("DMA may pin up to {bytes} bytes"),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;

use crate::sys::limits;

/// This process's `RLIMIT_MEMLOCK`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemlockLimit {
    /// The limit in force (`None`: unlimited).
    pub soft: Option<u64>,
    /// How far the process may raise it without privilege (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Reads this process's `RLIMIT_MEMLOCK` (`getrlimit`); fails only if the
/// kernel refuses to say.
pub fn memlock() -> io::Result<MemlockLimit> {
    let (soft, hard) = limits::memlock_both()?;
    Ok(MemlockLimit { soft, hard })
}

/// Whether this process may pin memory past its `RLIMIT_MEMLOCK`: it has
/// `CAP_IPC_LOCK` in its effective set, as root usually does (read from
/// `/proc/self/status`; `false` when that cannot be read).
pub fn memlock_exempt() -> bool {
    limits::memlock_unlimited_by_capability()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_readable_and_soft_is_within_hard() {
        let limit = super::memlock().unwrap();
        match (limit.soft, limit.hard) {
            (Some(soft), Some(hard)) => assert!(soft <= hard, "{limit:?}"),
            (None, Some(_)) => panic!("an unlimited soft limit above a finite hard one: {limit:?}"),
            (_, None) => {}
        }
    }
}
