//! Vendor, device and class names from the system's `pci.ids`, when it has one
//! (numbers are shown otherwise).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where distributions keep `pci.ids`.
pub const PCI_IDS_PATHS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// Names parsed from a `pci.ids` file.
#[derive(Debug, Default)]
pub struct PciNames {
    vendors: HashMap<u16, String>,
    devices: HashMap<(u16, u16), String>,
    classes: HashMap<u8, String>,
    subclasses: HashMap<(u8, u8), String>,
}

impl PciNames {
    /// Loads the first of `paths` that exists; empty names when none does or
    /// it cannot be read.
    pub fn load(paths: &[PathBuf]) -> Self {
        paths
            .iter()
            .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses the `pci.ids` format: vendors at column 0, their devices after
    /// one tab, subsystems after two (ignored); classes in a `C` section.
    pub fn parse(text: &str) -> Self {
        let mut names = Self::default();
        let mut vendor: Option<u16> = None;
        let mut class: Option<u8> = None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let tabs = line.len() - line.trim_start_matches('\t').len();
            let body = line.trim_start_matches('\t');
            let Some((id, name)) = body.split_once("  ") else {
                continue;
            };
            let name = name.trim().to_owned();
            match tabs {
                0 if id.starts_with("C ") => {
                    vendor = None;
                    class = u8::from_str_radix(id.trim_start_matches("C ").trim(), 16).ok();
                    if let Some(c) = class {
                        names.classes.insert(c, name);
                    }
                }
                0 => {
                    class = None;
                    vendor = u16::from_str_radix(id.trim(), 16).ok();
                    if let Some(v) = vendor {
                        names.vendors.insert(v, name);
                    }
                }
                1 => {
                    if let (Some(v), Ok(d)) = (vendor, u16::from_str_radix(id.trim(), 16)) {
                        names.devices.insert((v, d), name);
                    } else if let (Some(c), Ok(s)) = (class, u8::from_str_radix(id.trim(), 16)) {
                        names.subclasses.insert((c, s), name);
                    }
                }
                _ => {}
            }
        }
        names
    }

    /// The vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(String::as_str)
    }

    /// The device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.devices.get(&(vendor, device)).map(String::as_str)
    }

    /// The class's name: the subclass's when known, else the base class's.
    pub fn class(&self, class: u32) -> Option<&str> {
        let base = (class >> 16) as u8;
        let sub = (class >> 8) as u8;
        self.subclasses
            .get(&(base, sub))
            .or_else(|| self.classes.get(&base))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# comment\n1234  Technical Corp.\n\t11e8  Edu device\n\t\t1af4 1100  subsystem\n1b36  Red Hat, Inc.\n\t0010  QEMU NVM Express Controller\nC 01  Mass storage controller\n\t08  Non-Volatile memory controller\n\t\t02  NVM Express\nC ff  Unassigned class\n";

    #[test]
    fn parses_vendors_devices_and_classes() {
        let n = PciNames::parse(SAMPLE);
        assert_eq!(n.vendor(0x1234), Some("Technical Corp."));
        assert_eq!(n.device(0x1234, 0x11e8), Some("Edu device"));
        assert_eq!(
            n.device(0x1b36, 0x0010),
            Some("QEMU NVM Express Controller")
        );
        assert_eq!(n.class(0x010802), Some("Non-Volatile memory controller"));
        assert_eq!(n.class(0x01ff00), Some("Mass storage controller"));
        assert_eq!(n.class(0x00ff00), None);
        assert_eq!(n.vendor(0xdead), None);
    }

    #[test]
    fn missing_file_means_no_names() {
        let n = PciNames::load(&[PathBuf::from("/nonexistent/pci.ids")]);
        assert_eq!(n.vendor(0x1234), None);
    }
}
