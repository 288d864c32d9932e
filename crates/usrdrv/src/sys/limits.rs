//! Resource limits that decide whether DMA mappings can be made.

use std::io;

/// The soft `RLIMIT_MEMLOCK` in bytes, or `None` when unlimited.
pub(crate) fn memlock() -> io::Result<Option<u64>> {
    memlock_both().map(|(soft, _)| soft)
}

/// The soft and hard `RLIMIT_MEMLOCK` in bytes, each `None` when unlimited.
pub(crate) fn memlock_both() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which points at
    // a live local.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((finite(limit.rlim_cur), finite(limit.rlim_max)))
}

/// `CAP_IPC_LOCK`: lock memory past `RLIMIT_MEMLOCK`.
const CAP_IPC_LOCK: u32 = 14;

/// Whether this process may lock memory past `RLIMIT_MEMLOCK` (it has
/// `CAP_IPC_LOCK` in its effective set, as root usually does).
pub(crate) fn memlock_unlimited_by_capability() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| cap_eff(&status))
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The effective capability set from `/proc/PID/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The CPU page size in bytes (4096 when the system will not say).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf takes no pointers.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    #[test]
    fn memlock_limit_is_readable() {
        // Whatever the limit is here, reading it must work.
        super::memlock().unwrap();
    }

    #[test]
    fn the_effective_capabilities_are_parsed() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(super::cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(super::cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(super::cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(super::page_size().is_power_of_two());
    }
}
