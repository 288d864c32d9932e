//! PCI function addresses: `DDDD:BB:DD.F`, always with the domain.

use std::fmt;
use std::str::FromStr;

/// The address of one PCI function: domain, bus, device (slot) and function.
///
/// Printed in the kernel's canonical form `DDDD:BB:DD.F` (lower-case hex, the
/// form sysfs uses in `/sys/bus/pci/devices`). Parsing accepts that form and the
/// short form `BB:DD.F`, which means domain 0.
///
/// ```
/// use usrdrv::pci::PciAddress;
///
/// let addr: PciAddress = "0000:00:03.0".parse()?;
/// assert_eq!(addr, PciAddress::new(0, 0, 3, 0)?);
/// assert_eq!(addr.to_string(), "0000:00:03.0");
///
/// // The short form means domain 0.
/// let short: PciAddress = "3b:00.1".parse()?;
/// assert_eq!(short.to_string(), "0000:3b:00.1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The text does not have the shape `DDDD:BB:DD.F` or `BB:DD.F`.
    #[error(
        "'{text}' is not a PCI address: expected DDDD:BB:DD.F (e.g. 0000:00:03.0) or BB:DD.F (domain 0)"
    )]
    Malformed {
        /// The text as given.
        text: String,
    },
    /// One field is not hexadecimal or is too large.
    #[error(
        "'{text}' is not a PCI address: the {field} '{value}' must be hexadecimal, at most {max:#x}"
    )]
    BadField {
        /// The text as given.
        text: String,
        /// Which field: domain, bus, device or function.
        field: &'static str,
        /// The field's text.
        value: String,
        /// The largest value the field takes.
        max: u32,
    },
    /// A field given to [`PciAddress::new`] is out of range.
    #[error("PCI {field} {value:#x} is out of range: at most {max:#x}")]
    OutOfRange {
        /// Which field: device or function.
        field: &'static str,
        /// The value given.
        value: u32,
        /// The largest value the field takes.
        max: u32,
    },
}

/// Largest device (slot) number on a bus.
const MAX_DEVICE: u8 = 0x1f;
/// Largest function number in a device.
const MAX_FUNCTION: u8 = 0x7;

impl PciAddress {
    /// Function 0 of device 0 on `bus` of `domain` (always a valid address).
    pub const fn first_on_bus(domain: u32, bus: u8) -> Self {
        Self {
            domain,
            bus,
            device: 0,
            function: 0,
        }
    }

    /// Builds an address from its parts; the device must be at most `0x1f` and the
    /// function at most `7`.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self, AddressError> {
        if device > MAX_DEVICE {
            return Err(AddressError::OutOfRange {
                field: "device",
                value: device.into(),
                max: MAX_DEVICE.into(),
            });
        }
        if function > MAX_FUNCTION {
            return Err(AddressError::OutOfRange {
                field: "function",
                value: function.into(),
                max: MAX_FUNCTION.into(),
            });
        }
        Ok(Self {
            domain,
            bus,
            device,
            function,
        })
    }

    /// The PCI domain (segment).
    pub fn domain(&self) -> u32 {
        self.domain
    }

    /// The bus number.
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// The device (slot) number, `0..=0x1f`.
    pub fn device(&self) -> u8 {
        self.device
    }

    /// The function number, `0..=7`.
    pub fn function(&self) -> u8 {
        self.function
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// The longest input an error repeats: an address is 12 characters, and
/// whatever was given instead is cut short (a whole file pasted by mistake
/// should not come back on the terminal).
const SHOWN_CHARS: usize = 40;

/// `text` as errors show it: at most [`SHOWN_CHARS`] characters, then `...`.
fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

impl FromStr for PciAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || AddressError::Malformed { text: shown(text) };
        let field = |name: &'static str, value: &str, max_digits: usize, max: u32| {
            let well_formed = !value.is_empty()
                && value.len() <= max_digits
                && value.bytes().all(|b| b.is_ascii_hexdigit());
            let parsed = u32::from_str_radix(value, 16).ok().filter(|v| *v <= max);
            match parsed {
                Some(v) if well_formed => Ok(v),
                _ => Err(AddressError::BadField {
                    text: shown(text),
                    field: name,
                    value: shown(value),
                    max,
                }),
            }
        };

        let (rest, function) = text.rsplit_once('.').ok_or_else(malformed)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => ("0", *bus, *device),
            [domain, bus, device] => (*domain, *bus, *device),
            _ => return Err(malformed()),
        };
        let domain = field("domain", domain, 8, u32::MAX)?;
        let bus = field("bus", bus, 2, 0xff)?;
        let device = field("device", device, 2, MAX_DEVICE.into())?;
        let function = field("function", function, 1, MAX_FUNCTION.into())?;
        // The range checks above make these conversions lossless.
        Self::new(domain, bus as u8, device as u8, function as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_repeat_at_most_a_short_prefix_of_the_input() {
        let long = "0".repeat(100_000);
        let message = long.parse::<PciAddress>().unwrap_err().to_string();
        assert!(message.len() < 200, "{} bytes", message.len());
        assert!(
            message.contains(&format!("{}...", "0".repeat(40))),
            "{message}"
        );
        let message = format!("{}:00:03.0", "f".repeat(5000))
            .parse::<PciAddress>()
            .unwrap_err()
            .to_string();
        assert!(message.len() < 300, "{message}");
        let short = "00:1g.0".parse::<PciAddress>().unwrap_err().to_string();
        assert!(short.contains("'00:1g.0'"), "{short}");
    }

    #[test]
    fn parses_full_form() {
        let a: PciAddress = "0000:00:03.0".parse().unwrap();
        assert_eq!(
            (a.domain(), a.bus(), a.device(), a.function()),
            (0, 0, 3, 0)
        );
        let b: PciAddress = "10000:ff:1f.7".parse().unwrap();
        assert_eq!(
            (b.domain(), b.bus(), b.device(), b.function()),
            (0x10000, 0xff, 0x1f, 7)
        );
    }

    #[test]
    fn parses_short_form_as_domain_zero() {
        let a: PciAddress = "3b:00.1".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 0x3b, 0, 1).unwrap());
    }

    #[test]
    fn accepts_upper_case_and_prints_lower_case() {
        let a: PciAddress = "0000:AF:1E.3".parse().unwrap();
        assert_eq!(a.to_string(), "0000:af:1e.3");
    }

    #[test]
    fn display_round_trips() {
        for text in ["0000:00:00.0", "0001:02:03.4", "ffff:ff:1f.7"] {
            let a: PciAddress = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
            assert_eq!(a.to_string().parse::<PciAddress>().unwrap(), a);
        }
    }

    #[test]
    fn rejects_malformed_shapes() {
        for text in [
            "",
            "0",
            "00:03",
            "0000:00:03",
            "0:0:0:0.0",
            "00.03.0",
            "00:03.",
            ":03.0",
        ] {
            let err = text.parse::<PciAddress>().unwrap_err();
            assert!(
                matches!(
                    err,
                    AddressError::Malformed { .. } | AddressError::BadField { .. }
                ),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn rejects_out_of_range_fields_naming_them() {
        let cases = [
            ("0000:00:20.0", "device"),
            ("0000:00:03.8", "function"),
            ("0000:100:03.0", "bus"),
            ("0000:0g:03.0", "bus"),
            ("123456789:00:03.0", "domain"),
            ("0000:00:03.00", "function"),
            ("0000:+1:03.0", "bus"),
        ];
        for (text, want) in cases {
            match text.parse::<PciAddress>() {
                Err(AddressError::BadField { field, .. }) => assert_eq!(field, want, "{text}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn error_message_shows_accepted_forms() {
        let msg = "nonsense".parse::<PciAddress>().unwrap_err().to_string();
        assert!(msg.contains("DDDD:BB:DD.F"), "{msg}");
        assert!(msg.contains("BB:DD.F"), "{msg}");
    }

    #[test]
    fn new_checks_ranges() {
        assert!(PciAddress::new(0, 0, 0x20, 0).is_err());
        assert!(PciAddress::new(0, 0, 0, 8).is_err());
        assert!(PciAddress::new(0, 0xff, 0x1f, 7).is_ok());
    }

    #[test]
    fn orders_by_domain_then_bus_device_function() {
        let mut v: Vec<PciAddress> = [
            "0001:00:00.0",
            "0000:01:00.0",
            "0000:00:1f.7",
            "0000:00:02.1",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        v.sort();
        let printed: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "0000:00:02.1",
                "0000:00:1f.7",
                "0000:01:00.0",
                "0001:00:00.0"
            ]
        );
    }
}
