//! Waiting for a completion by polling, without reading the clock on every
//! turn.
//!
//! Under emulation, reading the clock can be an access to an emulated
//! device (an HPET clock source under QEMU's TCG), which takes the
//! emulator's global lock: the lock the emulated controller needs to
//! complete the very command being waited for. A poll loop that read the
//! clock on every turn slowed the controller down by several times at
//! queue depth 32. So the clock is read once every [`TURNS_PER_CLOCK`]
//! turns, and only once a wait has lasted that long: a command that
//! completes quickly is waited for without reading the clock at all.

use std::time::{Duration, Instant};

/// Poll turns between two readings of the clock.
const TURNS_PER_CLOCK: u32 = 1024;

/// How long a polling wait has lasted, read sparingly.
#[derive(Debug)]
pub(crate) struct Spin {
    start: Option<Instant>,
    turns: u32,
}

impl Spin {
    /// A wait that has not started its clock yet.
    pub(crate) fn new() -> Self {
        Self {
            start: None,
            turns: 0,
        }
    }

    /// How long the wait has lasted since its clock started (now, if it had
    /// not: the first call reads zero).
    pub(crate) fn elapsed(&mut self) -> Duration {
        match self.start {
            Some(start) => start.elapsed(),
            None => {
                self.start = Some(Instant::now());
                Duration::ZERO
            }
        }
    }

    /// One more unsuccessful poll: how long the wait has lasted when this
    /// turn reads the clock, `None` on the other turns.
    pub(crate) fn turn(&mut self) -> Option<Duration> {
        self.turns = self.turns.wrapping_add(1);
        if self.turns.is_multiple_of(TURNS_PER_CLOCK) {
            Some(self.elapsed())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_read_once_every_so_many_turns() {
        let mut spin = Spin::new();
        let readings = (0..TURNS_PER_CLOCK * 3).filter_map(|_| spin.turn()).count();
        assert_eq!(readings, 3);
        assert!(spin.start.is_some());
        std::thread::sleep(Duration::from_millis(5));
        assert!(spin.elapsed() >= Duration::from_millis(5));
    }
}
