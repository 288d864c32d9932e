//! What every command needs: where the system's files are, and how to print.

use std::path::PathBuf;

use usrdrv::pci::Sysfs;

use crate::names::PciNames;
use crate::output::Style;

/// Shared state of one invocation.
#[derive(Debug)]
pub struct Context {
    /// The sysfs tree.
    pub sysfs: Sysfs,
    /// Where it is mounted (`/sys`).
    pub sysfs_root: PathBuf,
    /// Where procfs is mounted (`/proc`).
    pub procfs: PathBuf,
    /// Where device nodes are (`/dev`).
    pub devfs: PathBuf,
    /// Where `usrdrv` remembers drivers it replaced.
    pub state_dir: PathBuf,
    /// `pci.ids` candidates, first existing wins.
    pub pci_ids: Vec<PathBuf>,
    /// Print JSON instead of text.
    pub json: bool,
    /// Colours for text output.
    pub style: Style,
}

impl Context {
    /// Names from `pci.ids`, loaded on demand.
    pub fn names(&self) -> PciNames {
        PciNames::load(&self.pci_ids)
    }

    /// A path inside the sysfs tree.
    pub fn sysfs_path(&self, relative: &str) -> PathBuf {
        self.sysfs_root.join(relative)
    }

    /// The text of `/proc/mounts` (empty if unreadable: nothing found mounted).
    pub fn mounts(&self) -> String {
        std::fs::read_to_string(self.procfs.join("mounts")).unwrap_or_default()
    }
}
