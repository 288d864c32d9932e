//! What `usrdrv doctor` reads: files under the context's sysfs, procfs and
//! devfs (so tests can point it at a fake tree), plus the few facts only
//! system calls give (who we are, what we may open; the locked-memory limit
//! comes from `usrdrv::limits`).
//! Nothing here decides anything.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::context::Context;

/// The capability that exempts a process from `RLIMIT_MEMLOCK`.
pub const CAP_IPC_LOCK: u32 = 14;

/// The capability the usrdma module requires to open a device.
pub const CAP_SYS_RAWIO: u32 = 17;

/// Reads files below the context's roots.
#[derive(Debug, Clone, Copy)]
pub struct System<'a> {
    ctx: &'a Context,
}

impl<'a> System<'a> {
    /// Reads below `ctx`'s roots.
    pub fn new(ctx: &'a Context) -> Self {
        Self { ctx }
    }

    /// A path inside sysfs.
    pub fn sys(&self, relative: &str) -> PathBuf {
        self.ctx.sysfs_path(relative)
    }

    /// A path inside procfs.
    pub fn proc(&self, relative: &str) -> PathBuf {
        self.ctx.procfs.join(relative)
    }

    /// A path inside devfs.
    pub fn dev(&self, relative: &str) -> PathBuf {
        self.ctx.devfs.join(relative)
    }
}

/// The text of a file, or `None` when it cannot be read.
pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The trimmed first line of a file.
pub fn read_value(path: &Path) -> Option<String> {
    read(path).map(|t| t.lines().next().unwrap_or("").trim().to_owned())
}

/// The entry names of a directory, sorted (numbers numerically), or `None`
/// when it cannot be listed (missing).
pub fn list_dir(path: &Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(path).ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Numbers first, in numeric order, then the other names.
    names.sort_by_cached_key(|n| (n.parse::<u64>().map_or((1, 0), |v| (0, v)), n.clone()));
    Some(names)
}

/// Who this process is, for file permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Effective user ID.
    pub euid: u32,
    /// Effective group ID.
    pub egid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// This process's identity.
    pub fn current() -> Self {
        // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
        let euid = unsafe { libc::geteuid() };
        // SAFETY: getegid takes no arguments, touches no memory and cannot fail.
        let egid = unsafe { libc::getegid() };
        Self {
            euid,
            egid,
            groups: supplementary_groups(),
        }
    }

    /// Whether this identity is in group `gid` (effective or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.egid == gid || self.groups.contains(&gid)
    }
}

fn supplementary_groups() -> Vec<u32> {
    // SAFETY: with a size of 0, getgroups only returns the count and writes
    // nothing through the (null) list pointer.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let Ok(len) = usize::try_from(count) else {
        return Vec::new();
    };
    let mut groups: Vec<libc::gid_t> = vec![0; len];
    // SAFETY: the buffer holds `count` gid_t values and getgroups writes at
    // most `count` of them.
    let got = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    match usize::try_from(got) {
        Ok(n) => {
            groups.truncate(n);
            groups
        }
        // The groups changed between the calls (they cannot here: one thread
        // asks about itself); report none rather than guess.
        Err(_) => Vec::new(),
    }
}

/// Whether this process may open `path` for reading and writing, judged by
/// the kernel with the effective IDs (`faccessat(..., AT_EACCESS)`), without
/// opening it: opening a VFIO group node would claim the group.
pub fn can_read_write(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c_path` is a NUL-terminated string that lives across the call;
    // faccessat only reads it.
    let ret = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::R_OK | libc::W_OK,
            libc::AT_EACCESS,
        )
    };
    ret == 0
}

/// Owner, group and permission bits of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Owner's user ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// The permission bits (`0o600`).
    pub mode: u32,
}

/// The ownership of `path`, following links.
pub fn ownership(path: &Path) -> Option<Ownership> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Ownership {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    })
}

/// The effective capability set from a `/proc/<pid>/status` text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The name of group `gid` from `/etc/group`, for messages only.
pub fn group_name(gid: u32) -> Option<String> {
    let text = read(Path::new("/etc/group"))?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == gid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let caps = cap_eff(status).unwrap();
        assert_ne!(caps & (1 << CAP_IPC_LOCK), 0);
        assert_eq!(cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(cap_eff("Name: x\n"), None);
    }

    #[test]
    fn identity_is_readable() {
        let me = Identity::current();
        assert!(me.in_group(me.egid));
    }

    #[test]
    fn directories_list_numbers_numerically() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["10", "2", "vfio", "1"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(
            list_dir(dir.path()).unwrap(),
            ["1", "2", "10", "vfio"].map(String::from)
        );
        assert_eq!(list_dir(&dir.path().join("missing")), None);
    }
}
