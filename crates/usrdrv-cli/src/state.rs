//! The drivers usrdrv took devices from, remembered across invocations (until
//! reboot, in `/run/usrdrv/drivers.json`), so `usrdrv restore` can give them back.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use usrdrv::pci::PciAddress;

use crate::error::CliError;

/// Address → the driver it had before usrdrv changed it (`None`: no driver).
#[derive(Debug, Default)]
pub struct Remembered {
    path: PathBuf,
    drivers: BTreeMap<String, Option<String>>,
}

impl Remembered {
    /// Loads the record in `dir` (an empty one if there is none yet).
    pub fn load(dir: &Path) -> Result<Self, CliError> {
        let path = dir.join("drivers.json");
        let drivers = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| CliError::State {
                action: "read",
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(CliError::State {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        Ok(Self { path, drivers })
    }

    /// Where the record lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `driver` as what `address` had, unless something is already
    /// recorded (the first driver is the one to give it back to).
    pub fn remember(&mut self, address: PciAddress, driver: Option<String>) {
        self.drivers.entry(address.to_string()).or_insert(driver);
    }

    /// What `address` had, if recorded: `Some(None)` means no driver.
    pub fn get(&self, address: PciAddress) -> Option<Option<String>> {
        self.drivers.get(&address.to_string()).cloned()
    }

    /// Forgets `address`.
    pub fn forget(&mut self, address: PciAddress) {
        self.drivers.remove(&address.to_string());
    }

    /// Checks that [`Remembered::save`] can write the record, by writing and
    /// removing its temporary file: commands call it before moving anything,
    /// so a record that cannot be written stops them while nothing changed.
    pub fn check_writable(&self) -> Result<(), CliError> {
        let tmp = self.temporary()?;
        fs::write(&tmp, "").map_err(|e| self.write_error(e))?;
        fs::remove_file(&tmp).map_err(|e| self.write_error(e))
    }

    /// Writes the record back (atomically: a temporary file renamed into place).
    pub fn save(&self) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(&self.drivers)
            .map_err(|e| self.write_error(io::Error::other(e)))?;
        let tmp = self.temporary()?;
        fs::write(&tmp, text).map_err(|e| self.write_error(e))?;
        fs::rename(&tmp, &self.path).map_err(|e| self.write_error(e))
    }

    /// The temporary file next to the record, its directory made if missing.
    fn temporary(&self) -> Result<PathBuf, CliError> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(|e| self.write_error(e))?;
        }
        Ok(self.path.with_extension("json.tmp"))
    }

    fn write_error(&self, source: io::Error) -> CliError {
        CliError::State {
            action: "write",
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_driver_is_kept_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let a: PciAddress = "0000:00:02.0".parse().unwrap();
        let b: PciAddress = "0000:00:03.0".parse().unwrap();
        let mut r = Remembered::load(dir.path()).unwrap();
        r.remember(a, Some("nvme".into()));
        r.remember(a, Some("vfio-pci".into()));
        r.remember(b, None);
        r.save().unwrap();
        let mut r = Remembered::load(dir.path()).unwrap();
        assert_eq!(r.get(a), Some(Some("nvme".into())));
        assert_eq!(r.get(b), Some(None));
        r.forget(a);
        r.save().unwrap();
        assert_eq!(Remembered::load(dir.path()).unwrap().get(a), None);
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("drivers.json"), "not json").unwrap();
        let err = Remembered::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("drivers.json"), "{err}");
    }
}
