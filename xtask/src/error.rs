//! The one error type of the rig.
//!
//! Every message says what failed and, where there is one, what to do about
//! it. Messages are one line: `main` prints them after `error: `.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in `cargo xtask`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("Could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read" or "create the directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A program could not be started at all.
    #[error("Could not start `{program}`: {source}")]
    Spawn {
        /// The program name.
        program: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A program ran and failed.
    #[error("`{command}` failed ({status}){hint}")]
    CommandFailed {
        /// The command line as shown to the user.
        command: String,
        /// Exit status description.
        status: String,
        /// Extra advice, starting with ": " or empty.
        hint: String,
    },

    /// A host tool or package is missing and cannot be installed by the rig.
    #[error("{0}")]
    Setup(String),

    /// The kernel, its modules or the guest image are not usable.
    #[error("{0}")]
    Image(String),

    /// Building the workspace for the guest went wrong.
    #[error("{0}")]
    Build(String),

    /// The guest did not finish properly: timeout, panic, QEMU died.
    #[error("{reason}")]
    Guest {
        /// What happened.
        reason: String,
        /// The last console lines, for context.
        tail: Vec<String>,
        /// Whether this was the timeout (exit status 124).
        timed_out: bool,
    },

    /// The user pressed Ctrl-C (or the rig got SIGTERM/SIGHUP).
    #[error("Interrupted")]
    Interrupted,
}

/// The rig's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Adds file context to `io::Result`s.
pub trait IoContext<T> {
    /// Turns an `io::Error` into an [`Error::Io`] naming `action` and `path`.
    fn ctx(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
