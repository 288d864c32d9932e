//! `usrdrv list`: every PCI function, its driver, IOMMU group and VFIO readiness.

use serde::Serialize;
use usrdrv::pci::{PciFunction, Sysfs};
use usrdrv::vfio::{VfioError, usable_group};

use crate::context::Context;
use crate::error::CliError;
use crate::names::PciNames;
use crate::output::{self, Table, Tone};

/// Arguments of `usrdrv list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only devices from this vendor (hex, e.g. 8086).
    #[arg(long, value_parser = parse_hex16)]
    pub vendor: Option<u16>,
    /// Only devices with this device ID (hex).
    #[arg(long, value_parser = parse_hex16)]
    pub device: Option<u16>,
    /// Only this class: base class (01), base+subclass (0108) or full code (010802), hex.
    #[arg(long, value_parser = parse_class)]
    pub class: Option<ClassFilter>,
    /// Only devices bound to this driver ("none" for unbound ones).
    #[arg(long)]
    pub driver: Option<String>,
}

/// A class filter: the leading hex digits of the class code.
#[derive(Debug, Clone, Copy)]
pub struct ClassFilter {
    value: u32,
    digits: u32,
}

impl ClassFilter {
    fn matches(self, class: u32) -> bool {
        class >> (4 * (6 - self.digits)) == self.value
    }
}

fn parse_hex16(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("'{text}' is not a 16-bit hex ID (e.g. 8086)"))
}

fn parse_class(text: &str) -> Result<ClassFilter, String> {
    let digits = text.trim_start_matches("0x");
    let valid = matches!(digits.len(), 2 | 4 | 6) && digits.bytes().all(|b| b.is_ascii_hexdigit());
    match u32::from_str_radix(digits, 16) {
        Ok(value) if valid => Ok(ClassFilter {
            value,
            digits: digits.len() as u32,
        }),
        _ => Err(format!(
            "'{text}' is not a class: give 2, 4 or 6 hex digits (01, 0108, 010802)"
        )),
    }
}

/// Whether VFIO can open a device, and if not what is missing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Bound to vfio-pci with a viable group.
    pub ready: bool,
    /// What is missing, in words (empty when ready).
    pub missing: Vec<String>,
}

/// The readiness of `function`.
pub fn readiness(sysfs: &Sysfs, function: &PciFunction) -> Readiness {
    match usable_group(sysfs, function.address) {
        Ok(_) => Readiness {
            ready: true,
            missing: Vec::new(),
        },
        Err(err) => {
            let why = match err {
                VfioError::NotBoundToVfio {
                    driver: Some(d), ..
                } => format!("bound to {d}, not vfio-pci"),
                VfioError::NotBoundToVfio { driver: None, .. } => {
                    "not bound to vfio-pci".to_owned()
                }
                VfioError::NoIommu { .. } => "no IOMMU group (IOMMU off)".to_owned(),
                VfioError::GroupNotViable { blockers, .. } => format!(
                    "group shared with {}",
                    blockers
                        .iter()
                        .map(|(a, d)| format!("{a} ({d})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => other.to_string(),
            };
            Readiness {
                ready: false,
                missing: vec![why],
            }
        }
    }
}

/// One device in `usrdrv list --json` (schema `usrdrv.list/1`).
#[derive(Debug, Serialize)]
pub struct ListedDevice {
    /// `DDDD:BB:DD.F`.
    pub address: String,
    /// Vendor ID, 4 hex digits.
    pub vendor_id: String,
    /// Device ID, 4 hex digits.
    pub device_id: String,
    /// Class code, 6 hex digits.
    pub class: String,
    /// From `pci.ids`, when the system has it.
    pub vendor_name: Option<String>,
    /// From `pci.ids`, when the system has it.
    pub device_name: Option<String>,
    /// From `pci.ids`, when the system has it.
    pub class_name: Option<String>,
    /// The bound driver.
    pub driver: Option<String>,
    /// The IOMMU group.
    pub iommu_group: Option<u32>,
    /// Whether VFIO can open it.
    pub vfio: Readiness,
}

/// `usrdrv list --json`.
#[derive(Debug, Serialize)]
struct ListReport {
    schema: &'static str,
    devices: Vec<ListedDevice>,
}

fn describe(names: &PciNames, f: &PciFunction, vfio: Readiness) -> ListedDevice {
    ListedDevice {
        address: f.address.to_string(),
        vendor_id: format!("{:04x}", f.vendor_id),
        device_id: format!("{:04x}", f.device_id),
        class: format!("{:06x}", f.class),
        vendor_name: names.vendor(f.vendor_id).map(str::to_owned),
        device_name: names.device(f.vendor_id, f.device_id).map(str::to_owned),
        class_name: names.class(f.class).map(str::to_owned),
        driver: f.driver.clone(),
        iommu_group: f.iommu_group,
        vfio,
    }
}

/// Runs `usrdrv list`.
pub fn run(ctx: &Context, args: &ListArgs) -> Result<i32, CliError> {
    let names = ctx.names();
    let mut devices = Vec::new();
    for address in ctx.sysfs.addresses()? {
        let function = match ctx.sysfs.function(address) {
            Ok(f) => f,
            // A device removed while we look is not an error of the listing.
            Err(usrdrv::pci::SysfsError::NoSuchDevice { .. }) => continue,
            Err(err) => return Err(err.into()),
        };
        let wanted = args.vendor.is_none_or(|v| v == function.vendor_id)
            && args.device.is_none_or(|d| d == function.device_id)
            && args.class.is_none_or(|c| c.matches(function.class))
            && args.driver.as_deref().is_none_or(|d| {
                function.driver.as_deref() == Some(d) || (d == "none" && function.driver.is_none())
            });
        if wanted {
            let vfio = readiness(&ctx.sysfs, &function);
            devices.push(describe(&names, &function, vfio));
        }
    }
    if ctx.json {
        output::print_json(&ListReport {
            schema: "usrdrv.list/1",
            devices,
        })?;
        return Ok(0);
    }
    let mut table = Table::new(&["ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "VFIO", "NAME"]);
    for d in &devices {
        let name = match (&d.vendor_name, &d.device_name) {
            (Some(v), Some(dev)) => format!("{v} {dev}"),
            (Some(v), None) => v.clone(),
            _ => d.class_name.clone().unwrap_or_default(),
        };
        let (vfio, tone) = if d.vfio.ready {
            ("ready".to_owned(), Tone::Good)
        } else {
            (d.vfio.missing.join("; "), Tone::Dim)
        };
        table.toned_row(vec![
            (d.address.clone(), Tone::Plain),
            (format!("{}:{}", d.vendor_id, d.device_id), Tone::Plain),
            (d.class.clone(), Tone::Plain),
            (d.driver.clone().unwrap_or_else(|| "-".into()), Tone::Plain),
            (
                d.iommu_group.map_or_else(|| "-".into(), |g| g.to_string()),
                Tone::Plain,
            ),
            (vfio, tone),
            (name, Tone::Dim),
        ]);
    }
    output::print(&table.render(&ctx.style))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_filters_match_leading_digits() {
        let f = parse_class("01").unwrap();
        assert!(f.matches(0x010802) && !f.matches(0x020000));
        let f = parse_class("0108").unwrap();
        assert!(f.matches(0x010802) && !f.matches(0x010600));
        let f = parse_class("0x010802").unwrap();
        assert!(f.matches(0x010802) && !f.matches(0x010801));
        for bad in ["1", "012", "zz", "01080200"] {
            assert!(parse_class(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_hex16("8086"), Ok(0x8086));
        assert!(parse_hex16("10000").is_err());
    }
}
