//! Event file descriptors: how the kernel signals interrupts to user space.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A non-blocking eventfd counter.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

/// What [`wait_any`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The descriptor at this index of the list was signalled; its counter
    /// (events since the last read) is returned and reset.
    Fd(usize, u64),
    /// The descriptor watched for a hang-up (a usrdma node whose device was
    /// revoked) hung up; counters read meanwhile are dropped.
    HungUp,
    /// The timeout passed first.
    TimedOut,
}

impl EventFd {
    /// A new counter at zero.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a successful eventfd returns a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Reads and resets the counter: `None` when it is zero.
    pub(crate) fn take(&self) -> io::Result<Option<u64>> {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a live local u64; the descriptor is open.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::from_mut(&mut value).cast(),
                8,
            )
        };
        if n == 8 {
            return Ok(Some(value));
        }
        let err = io::Error::last_os_error();
        if n < 0 && err.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else if n < 0 {
            Err(err)
        } else {
            Err(io::Error::from(io::ErrorKind::UnexpectedEof))
        }
    }

    /// Adds `value` to the counter (wakes waiters).
    pub(crate) fn signal(&self, value: u64) -> io::Result<()> {
        // SAFETY: writes 8 bytes from a live local u64; the descriptor is open.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), std::ptr::from_ref(&value).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// A duplicate of a caller's eventfd, for signalling it from another
/// thread (an emulated device raising an interrupt) without depending on the
/// caller's descriptor staying open.
#[derive(Debug)]
pub(crate) struct Signaller {
    fd: OwnedFd,
}

impl Signaller {
    /// Duplicates `fd`.
    pub(crate) fn duplicate(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            fd: fd.try_clone_to_owned()?,
        })
    }

    /// Adds 1 to the counter.
    pub(crate) fn signal(&self) -> io::Result<()> {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live local u64; the descriptor is ours.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `timeout` in whole milliseconds, rounded up, as `poll` takes it.
fn poll_ms(timeout: Duration) -> libc::c_int {
    libc::c_int::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
}

/// Waits until one of `fds` has a non-zero counter, or `timeout` passes
/// (`None`: forever; zero: just look). The first signalled one in list order
/// wins.
///
/// An event already pending costs one `read`, as a raw eventfd read would;
/// otherwise the clock is read and `poll` sleeps, both before the event comes,
/// so they add nothing to the wake-up latency but the final `read`.
pub(crate) fn wait_any(fds: &[&EventFd], timeout: Option<Duration>) -> io::Result<Woken> {
    wait_any_or_hangup(fds, None, timeout)
}

/// Whether `fd` reports a hang-up or an error right now (poll, no wait).
pub(crate) fn hung_up(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        // POLLHUP and POLLERR are always reported; ask for nothing else.
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: `poll` is one live pollfd struct; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&raw mut poll, 1, 0) };
        if ready >= 0 {
            return Ok(poll.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// [`wait_any`], also watching `hangup` (when given): a descriptor that
/// hangs up when the device is revoked and does so before the kernel
/// signals the eventfds at revocation (a usrdma node). A hang-up wins over
/// any counter, so a count the revocation itself added is never taken for
/// an event; that costs one more `poll` only when an event is already
/// pending.
pub(crate) fn wait_any_or_hangup(
    fds: &[&EventFd],
    hangup: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> io::Result<Woken> {
    for (i, fd) in fds.iter().enumerate() {
        if let Some(count) = fd.take()? {
            if let Some(hangup) = hangup
                && hung_up(hangup)?
            {
                return Ok(Woken::HungUp);
            }
            return Ok(Woken::Fd(i, count));
        }
    }
    let deadline = match timeout {
        Some(t) if t.is_zero() => return Ok(Woken::TimedOut),
        Some(t) => Some(Instant::now() + t),
        None => None,
    };
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|e| libc::pollfd {
            fd: e.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .chain(hangup.map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: 0,
            revents: 0,
        }))
        .collect();
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Woken::TimedOut);
                }
                poll_ms(left)
            }
        };
        // SAFETY: `polls` is a live array of `polls.len()` pollfd structs.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, wait_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        if hangup.is_some()
            && polls
                .last()
                .is_some_and(|p| p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0)
        {
            return Ok(Woken::HungUp);
        }
        for (i, (poll, fd)) in polls.iter().zip(fds).enumerate() {
            if poll.revents != 0
                && let Some(count) = fd.take()?
            {
                return Ok(Woken::Fd(i, count));
            }
        }
        // Timed out, interrupted, or another reader took the event: the loop
        // head decides from the deadline.
    }
}

/// Waits until `fd` hangs up or reports an error (`Ok(true)`: a usrdma node
/// whose device was removed) or `stop` is signalled (`Ok(false)`).
pub(crate) fn wait_hangup(fd: BorrowedFd<'_>, stop: &EventFd) -> io::Result<bool> {
    let mut polls = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            // POLLHUP and POLLERR are always reported; ask for nothing else.
            events: 0,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `polls` is a live array of two pollfd structs.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if polls[1].revents != 0 {
            return Ok(false);
        }
        if polls[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_signals_and_resets() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.take().unwrap(), None);
        e.signal(1).unwrap();
        e.signal(2).unwrap();
        assert_eq!(e.take().unwrap(), Some(3));
        assert_eq!(e.take().unwrap(), None);
    }

    /// A pipe's read end, and its write end to close for a hang-up.
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live array of two ints for pipe2 to fill.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 succeeded: the read end is new and owned by nothing else.
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        // SAFETY: likewise the write end.
        let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
        (read, write)
    }

    #[test]
    fn a_hang_up_wins_over_a_pending_count() {
        let e = EventFd::new().unwrap();
        let (read, write) = pipe();
        assert!(!hung_up(read.as_fd()).unwrap());
        e.signal(1).unwrap();
        assert_eq!(
            wait_any_or_hangup(&[&e], Some(read.as_fd()), Some(Duration::ZERO)).unwrap(),
            Woken::Fd(0, 1)
        );
        drop(write);
        assert!(hung_up(read.as_fd()).unwrap());
        // Pending before the wait, as the module's wake-up at revocation is.
        e.signal(1).unwrap();
        assert_eq!(
            wait_any_or_hangup(&[&e], Some(read.as_fd()), None).unwrap(),
            Woken::HungUp
        );
        // Nothing pending: the poll itself sees the hang-up.
        assert_eq!(
            wait_any_or_hangup(&[&e], Some(read.as_fd()), Some(Duration::from_secs(5))).unwrap(),
            Woken::HungUp
        );
    }

    #[test]
    fn wait_reports_which_fd_and_times_out() {
        let a = EventFd::new().unwrap();
        let b = EventFd::new().unwrap();
        assert_eq!(
            wait_any(&[&a, &b], Some(Duration::from_millis(20))).unwrap(),
            Woken::TimedOut
        );
        b.signal(5).unwrap();
        assert_eq!(
            wait_any(&[&a, &b], Some(Duration::from_secs(5))).unwrap(),
            Woken::Fd(1, 5)
        );
    }

    #[test]
    fn a_zero_timeout_just_looks_and_timeouts_last_long_enough() {
        let e = EventFd::new().unwrap();
        assert_eq!(
            wait_any(&[&e], Some(Duration::ZERO)).unwrap(),
            Woken::TimedOut
        );
        e.signal(2).unwrap();
        assert_eq!(
            wait_any(&[&e], Some(Duration::ZERO)).unwrap(),
            Woken::Fd(0, 2)
        );
        let start = Instant::now();
        assert_eq!(
            wait_any(&[&e], Some(Duration::from_millis(30))).unwrap(),
            Woken::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn wait_wakes_on_a_signal_from_another_thread() {
        let e = std::sync::Arc::new(EventFd::new().unwrap());
        let signaller = std::sync::Arc::clone(&e);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            signaller.signal(1).unwrap();
        });
        let start = Instant::now();
        assert_eq!(
            wait_any(&[&e], Some(Duration::from_secs(10))).unwrap(),
            Woken::Fd(0, 1)
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }
}
