//! Opens edu and allocates DMA memory as an unprivileged user with a small
//! locked-memory limit, printing what happens at each step. The guest tests
//! run it to check usrdrv's errors for /dev/vfio permissions and
//! RLIMIT_MEMLOCK say what is wrong and what to do.
//!
//! Usage (as root; it drops privileges itself): `edu_unprivileged UID MEMLOCK_BYTES`

use std::process::ExitCode;

use usrdrv_edu::Edu;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(uid), Some(memlock)) = (
        args.get(1).and_then(|a| a.parse::<u32>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: edu_unprivileged UID MEMLOCK_BYTES");
        return ExitCode::from(2);
    };
    if let Err(err) = drop_privileges(uid, memlock) {
        eprintln!("edu_unprivileged: cannot drop privileges: {err}");
        return ExitCode::FAILURE;
    }
    let edu = match Edu::find().and_then(Edu::open) {
        Ok(edu) => {
            println!("open: ok");
            edu
        }
        Err(err) => {
            println!("open: error: {err}");
            return ExitCode::SUCCESS;
        }
    };
    match edu.device().alloc_dma(1 << 20) {
        Ok(_) => println!("alloc: ok"),
        Err(err) => println!("alloc: error: {err}"),
    }
    ExitCode::SUCCESS
}

/// Lowers RLIMIT_MEMLOCK to `memlock` bytes, then becomes `uid` (group too).
fn drop_privileges(uid: u32, memlock: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: memlock,
        rlim_max: memlock,
    };
    // SAFETY: setrlimit reads one rlimit from a live local.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: setgroups reads `0` entries from a null list: no memory is read.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: setgid/setuid take plain integers and touch no memory.
    if unsafe { libc::setgid(uid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::setuid(uid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
