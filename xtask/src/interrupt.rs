//! Ctrl-C (SIGINT), SIGTERM and SIGHUP handling.
//!
//! The handler only sets a flag. Long-running loops (the QEMU supervisor)
//! poll it, kill their child and unwind normally, so that every `TempDir`
//! is dropped and the process exits with status 130.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the signal handler. Call once, early in `main`.
pub fn install() {
    // If a handler cannot be installed the default action (terminate) stays,
    // and PR_SET_PDEATHSIG still takes QEMU down with us.
    if let Err(e) = ctrlc::set_handler(|| REQUESTED.store(true, Ordering::SeqCst)) {
        eprintln!("xtask: warning: could not install the Ctrl-C handler: {e}");
    }
}

/// Whether the user asked us to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Returns `Err(Interrupted)` when the user asked us to stop.
pub fn check() -> crate::error::Result<()> {
    if requested() {
        Err(crate::error::Error::Interrupted)
    } else {
        Ok(())
    }
}
