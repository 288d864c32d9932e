//! Which processes hold a device open: a file descriptor in `/proc/PID/fd`
//! pointing at the device's node (`/dev/vfio/GROUP` or `/dev/usrdma/ADDR`).
//!
//! A driver that holds the node is using the device even when the kernel shows
//! no other use; moving the device under it makes the kernel's unbind wait for
//! it (VFIO) or revoke it (usrdma).

use std::path::Path;

use crate::context::Context;

/// One process holding a device node open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), if readable.
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Some(command) => write!(f, "process {} ({command})", self.pid),
            None => write!(f, "process {}", self.pid),
        }
    }
}

/// The processes with a descriptor open on `node`, in pid order. Processes
/// whose descriptors cannot be read (another user's, without root) are not
/// seen.
pub fn holders(ctx: &Context, node: &Path) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(&ctx.procfs) else {
        return Vec::new();
    };
    let mut found: Vec<Holder> = entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            let holds = fds
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == node));
            holds.then(|| Holder {
                pid,
                command: std::fs::read_to_string(entry.path().join("comm"))
                    .ok()
                    .map(|c| c.trim().to_owned()),
            })
        })
        .collect();
    found.sort_by_key(|h| h.pid);
    found
}
