//! The system-wide view of the usrdma module, from the read-only sysfs
//! attributes it puts on every PCI function it is bound to, for tools that
//! must not take the function's single open (`usrdrv buffers`, `usrdrv info`):
//!
//! - `/sys/bus/pci/devices/ADDR/usrdma_buffers`: one line per DMA buffer,
//!   `id name size dma_addr flags owner_pid` (see [`parse_buffers`]);
//! - `/sys/bus/pci/devices/ADDR/usrdma_stats`: one `key value` line per
//!   counter (see [`parse_stats`]).
//!
//! The format is the one documented at the end of
//! `kmod/usrdma/usrdma_uapi.h`. Anything that does not match it is an error
//! naming the file, the line and what is wrong with it: a silent
//! misreading would show the wrong device address for a buffer.
//!
//! ```no_run
//! use usrdrv::pci::Sysfs;
//! use usrdrv::usrdma::listing;
//!
//! let sysfs = Sysfs::system();
//! for address in listing::bound_devices(&sysfs)? {
//!     let stats = listing::stats(&sysfs, address)?;
//!     println!("{address}: {} buffers, {} bytes", stats.buffers, stats.buffer_bytes);
//!     for buffer in listing::buffers(&sysfs, address)? {
//!         println!("  {} {:?} at {:#x}", buffer.id, buffer.name, buffer.dma_addr);
//!     }
//! }
//! # Ok::<(), usrdrv::usrdma::listing::ListingError>(())
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::USRDMA_DRIVER;
use crate::pci::{PciAddress, Sysfs, SysfsError};

/// The attribute listing a device's buffers.
pub const BUFFERS_ATTRIBUTE: &str = "usrdma_buffers";

/// The attribute holding a device's counters.
pub const STATS_ATTRIBUTE: &str = "usrdma_stats";

/// The documented layout of a `usrdma_buffers` line, for error messages.
const BUFFERS_FORMAT: &str = "id name size dma_addr flags owner_pid";

/// The documented layout of a `usrdma_stats` line, for error messages.
const STATS_FORMAT: &str = "key value";

/// Errors from reading the usrdma attributes.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// Listing the PCI devices, or finding this one, failed.
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    /// The device is not bound to usrdma, so it has no usrdma attributes.
    #[error(
        "{address} is bound to {}, not usrdma: load the module (`modprobe usrdma`), then `usrdrv bind {address} --driver usrdma`",
        .driver.as_deref().unwrap_or("no driver")
    )]
    NotBound {
        /// The device.
        address: PciAddress,
        /// Its current driver, if any.
        driver: Option<String>,
    },
    /// The device is bound to usrdma but the attribute does not exist.
    #[error(
        "{} does not exist although {address} is bound to usrdma: the loaded module is older than this usrdrv; rebuild and reload it from kmod/usrdma",
        .path.display()
    )]
    MissingAttribute {
        /// The device.
        address: PciAddress,
        /// The attribute file.
        path: PathBuf,
    },
    /// The attribute may only be read by root.
    #[error("permission denied reading {}: run as root", .path.display())]
    PermissionDenied {
        /// The attribute file.
        path: PathBuf,
    },
    /// Reading the attribute failed.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The attribute file.
        path: PathBuf,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },
    /// A line does not have the documented format.
    #[error(
        "{}, line {line_number}: {problem} in {line:?} (expected `{expected}`: is the usrdma module from the same usrdrv version?)",
        .path.display()
    )]
    Malformed {
        /// The attribute file.
        path: PathBuf,
        /// The line's number, from 1.
        line_number: usize,
        /// The line as read.
        line: String,
        /// What is wrong with it.
        problem: String,
        /// The documented layout of a line.
        expected: &'static str,
    },
    /// The text does not end with a newline: the kernel cut it short (an
    /// attribute holds at most one page), so its last line may be partial.
    #[error(
        "{} does not end with a newline: the kernel cut it short (a sysfs attribute holds one page), so its last line cannot be trusted",
        .path.display()
    )]
    Truncated {
        /// The attribute file.
        path: PathBuf,
    },
    /// A counter the format documents is missing.
    #[error(
        "{} has no `{key}` line: the usrdma module and this usrdrv disagree on the format; rebuild and reload the module from kmod/usrdma",
        .path.display()
    )]
    MissingStat {
        /// The attribute file.
        path: PathBuf,
        /// The missing key.
        key: &'static str,
    },
}

/// The flags of a usrdma buffer (`USRDMA_BUF_*` in `usrdma_uapi.h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferFlags {
    /// The CPU mapping is write-combining (`USRDMA_BUF_WC`).
    pub write_combining: bool,
    /// The buffer survives the close of the file that allocated it, until
    /// freed or the module is unloaded (`USRDMA_BUF_PERSISTENT`).
    pub persistent: bool,
    /// Bits this usrdrv does not know (from a newer module), as reported.
    pub unknown: u32,
}

impl BufferFlags {
    /// `USRDMA_BUF_WC`.
    pub const WRITE_COMBINING: u32 = 1 << 0;
    /// `USRDMA_BUF_PERSISTENT`.
    pub const PERSISTENT: u32 = 1 << 1;

    /// The flags of the bit mask the module reports.
    ///
    /// ```
    /// use usrdrv::usrdma::listing::BufferFlags;
    ///
    /// let flags = BufferFlags::from_bits(0x6);
    /// assert!(flags.persistent && !flags.write_combining);
    /// assert_eq!(flags.unknown, 0x4);
    /// assert_eq!(flags.bits(), 0x6);
    /// ```
    pub fn from_bits(bits: u32) -> Self {
        Self {
            write_combining: bits & Self::WRITE_COMBINING != 0,
            persistent: bits & Self::PERSISTENT != 0,
            unknown: bits & !(Self::WRITE_COMBINING | Self::PERSISTENT),
        }
    }

    /// The bit mask, as the module reports it.
    pub fn bits(&self) -> u32 {
        let mut bits = self.unknown;
        if self.write_combining {
            bits |= Self::WRITE_COMBINING;
        }
        if self.persistent {
            bits |= Self::PERSISTENT;
        }
        bits
    }
}

/// One DMA buffer of a device bound to usrdma (a line of `usrdma_buffers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsrdmaBuffer {
    /// The buffer's id, unique on its device.
    pub id: u32,
    /// Its name, `None` for an anonymous buffer.
    pub name: Option<String>,
    /// Its size in bytes (a whole number of pages).
    pub size: u64,
    /// The address the device uses for its first byte (without an IOMMU, a
    /// physical address).
    pub dma_addr: u64,
    /// How it was allocated.
    pub flags: BufferFlags,
    /// The process that allocated it, in the initial PID namespace; `None`
    /// when that process is gone (a persistent buffer outlives it).
    pub owner_pid: Option<u32>,
}

/// The counters of a device bound to usrdma (`usrdma_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsrdmaStats {
    /// A process has the device's node open (one opener at a time).
    pub opened: bool,
    /// DMA buffers allocated on the device, of every owner.
    pub buffers: u64,
    /// Their total size in bytes.
    pub buffer_bytes: u64,
    /// Mappings of user memory for DMA (`USRDMA_MAP_USER`) in place.
    pub user_mappings: u64,
    /// Pages those mappings pin.
    pub pinned_pages: u64,
    /// Bytes of bounce buffers standing in for memory above the DMA mask.
    pub bounce_bytes: u64,
    /// Interrupt vectors set up (`USRDMA_SET_IRQ`).
    pub irqs: u64,
    /// Interrupts signalled since the module was loaded.
    pub irq_count: u64,
    /// What the module keeps of released owners while the device, which
    /// could not be reset, may still write it; `None` from a module before
    /// the quarantine (ABI 3), whose attribute has no such lines.
    pub quarantine: Option<UsrdmaQuarantine>,
}

/// The quarantine's counters in `usrdma_stats`: memory of released owners
/// that is kept from the kernel until the device is reset, declared
/// quiesced, or its grace period ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsrdmaQuarantine {
    /// Buffers (not counted in [`UsrdmaStats::buffers`]).
    pub buffers: u64,
    /// Their bytes plus the bounce buffers of quarantined mappings.
    pub bytes: u64,
    /// Pages of quarantined mappings that stay pinned (not in
    /// [`UsrdmaStats::pinned_pages`]).
    pub pages: u64,
}

/// The functions bound to the usrdma driver, sorted by address. A function
/// that disappears while being looked at is left out.
pub fn bound_devices(sysfs: &Sysfs) -> Result<Vec<PciAddress>, ListingError> {
    let mut bound = Vec::new();
    for address in sysfs.addresses()? {
        match sysfs.driver(address) {
            Ok(Some(driver)) if driver == USRDMA_DRIVER => bound.push(address),
            Ok(_) | Err(SysfsError::NoSuchDevice { .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(bound)
}

/// The DMA buffers of the function at `address`, in the module's order,
/// from its `usrdma_buffers` attribute.
///
/// Fails with [`ListingError::NotBound`] when the function is not bound to
/// usrdma, and with [`ListingError::Malformed`] or
/// [`ListingError::Truncated`] when the text does not match the format.
pub fn buffers(sysfs: &Sysfs, address: PciAddress) -> Result<Vec<UsrdmaBuffer>, ListingError> {
    let (text, path) = read_attribute(sysfs, address, BUFFERS_ATTRIBUTE)?;
    parse_buffers(&text, &path)
}

/// The counters of the function at `address`, from its `usrdma_stats`
/// attribute (see [`parse_stats`] for unknown and missing keys).
pub fn stats(sysfs: &Sysfs, address: PciAddress) -> Result<UsrdmaStats, ListingError> {
    let (text, path) = read_attribute(sysfs, address, STATS_ATTRIBUTE)?;
    parse_stats(&text, &path)
}

/// Reads a usrdma attribute of `address`, with its path.
fn read_attribute(
    sysfs: &Sysfs,
    address: PciAddress,
    name: &str,
) -> Result<(String, PathBuf), ListingError> {
    let path = sysfs.device_dir(address).join(name);
    match fs::read_to_string(&path) {
        Ok(text) => Ok((text, path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // No such device (an error naming it), another driver, or an old module.
            match sysfs.driver(address)? {
                Some(driver) if driver == USRDMA_DRIVER => {
                    Err(ListingError::MissingAttribute { address, path })
                }
                driver => Err(ListingError::NotBound { address, driver }),
            }
        }
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            Err(ListingError::PermissionDenied { path })
        }
        Err(source) => Err(ListingError::Read { path, source }),
    }
}

/// Parses the text of a `usrdma_buffers` attribute read from `path` (named
/// in errors).
///
/// Each line is `id name size dma_addr flags owner_pid`: `id` and
/// `owner_pid` in decimal (`0`: the owner is gone), `size`, `dma_addr` and
/// `flags` in hexadecimal with `0x` (a bare `0` is zero, as C's `%#x`
/// prints it), `name` `-` for an anonymous buffer. A name may contain
/// spaces: it is everything between the id and the last four fields, with
/// surrounding spaces dropped (so a buffer literally named `-` reads as
/// anonymous). Blank lines are skipped. Text that does not end with a
/// newline was cut short by the kernel and is an error.
///
/// ```
/// use std::path::Path;
/// use usrdrv::usrdma::listing::parse_buffers;
///
/// let text = "1 rx-ring 0x10000 0x7fe00000 0x2 0\n2 - 0x1000 0x7fe10000 0 812\n";
/// let buffers = parse_buffers(text, Path::new("usrdma_buffers"))?;
/// assert_eq!(buffers[0].name.as_deref(), Some("rx-ring"));
/// assert!(buffers[0].flags.persistent);
/// assert_eq!(buffers[0].owner_pid, None);
/// assert_eq!((buffers[1].name.clone(), buffers[1].owner_pid), (None, Some(812)));
/// # Ok::<(), usrdrv::usrdma::listing::ListingError>(())
/// ```
pub fn parse_buffers(text: &str, path: &Path) -> Result<Vec<UsrdmaBuffer>, ListingError> {
    check_complete(text, path)?;
    let mut buffers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |problem: String| ListingError::Malformed {
            path: path.to_owned(),
            line_number: index + 1,
            line: line.to_owned(),
            problem,
            expected: BUFFERS_FORMAT,
        };
        buffers.push(parse_buffer_line(line).map_err(malformed)?);
    }
    Ok(buffers)
}

/// One `usrdma_buffers` line, or what is wrong with it.
fn parse_buffer_line(line: &str) -> Result<UsrdmaBuffer, String> {
    let too_few = || "fewer than 6 fields".to_owned();
    let line = line.trim();
    let (id, rest) = line.split_once(char::is_whitespace).ok_or_else(too_few)?;
    // The last four fields, from the right; what is left is the name.
    let mut rest = rest.trim();
    let mut tail = [""; 4];
    for slot in tail.iter_mut().rev() {
        let (head, field) = rest.rsplit_once(char::is_whitespace).ok_or_else(too_few)?;
        *slot = field;
        rest = head.trim_end();
    }
    let name = rest.trim();
    let [size, dma_addr, flags, owner_pid] = tail;
    let id = decimal(id)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("id {id:?} is not a decimal number below 2^32"))?;
    let size = hex(size).ok_or_else(|| not_hex("size", size))?;
    let dma_addr = hex(dma_addr).ok_or_else(|| not_hex("dma_addr", dma_addr))?;
    let flags = hex(flags)
        .and_then(|v| u32::try_from(v).ok())
        .map(BufferFlags::from_bits)
        .ok_or_else(|| not_hex("flags", flags))?;
    let owner_pid = decimal(owner_pid)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("owner_pid {owner_pid:?} is not a decimal number below 2^32"))?;
    Ok(UsrdmaBuffer {
        id,
        name: (name != "-").then(|| name.to_owned()),
        size,
        dma_addr,
        flags,
        owner_pid: (owner_pid != 0).then_some(owner_pid),
    })
}

fn not_hex(field: &str, value: &str) -> String {
    format!("{field} {value:?} is not a hexadecimal number like 0x1000")
}

/// The keys of `usrdma_stats`, in the documented order.
const STAT_KEYS: [&str; 11] = [
    "opened",
    "buffers",
    "buffer_bytes",
    "user_mappings",
    "pinned_pages",
    "bounce_bytes",
    "irqs",
    "irq_count",
    "quarantine_buffers",
    "quarantine_bytes",
    "quarantine_pages",
];

/// Parses the text of a `usrdma_stats` attribute read from `path` (named in
/// errors).
///
/// Each line is `key value` with a decimal value; `opened` is `0` or `1`.
/// Lines whose key this usrdrv does not know (from a newer module) are
/// ignored whole. Every documented key must be there exactly once: a missing one
/// is [`ListingError::MissingStat`] rather than a zero that would be a lie
/// (about pinned pages, say); a repeated one is malformed. Blank lines are
/// skipped; text that does not end with a newline is an error.
///
/// ```
/// use std::path::Path;
/// use usrdrv::usrdma::listing::parse_stats;
///
/// let text = "opened 1\nbuffers 2\nbuffer_bytes 69632\nuser_mappings 0\n\
///             pinned_pages 0\nbounce_bytes 0\nirqs 1\nirq_count 17\nfuture_key 5\n";
/// let stats = parse_stats(text, Path::new("usrdma_stats"))?;
/// assert!(stats.opened);
/// assert_eq!((stats.buffers, stats.irq_count), (2, 17));
/// # Ok::<(), usrdrv::usrdma::listing::ListingError>(())
/// ```
pub fn parse_stats(text: &str, path: &Path) -> Result<UsrdmaStats, ListingError> {
    check_complete(text, path)?;
    let mut values: [Option<u64>; STAT_KEYS.len()] = [None; STAT_KEYS.len()];
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |problem: String| ListingError::Malformed {
            path: path.to_owned(),
            line_number: index + 1,
            line: line.to_owned(),
            problem,
            expected: STATS_FORMAT,
        };
        let mut fields = line.split_whitespace();
        let key = fields.next().unwrap_or_default();
        let Some(slot) = STAT_KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        let (Some(value), None) = (fields.next(), fields.next()) else {
            return Err(malformed(format!(
                "{key} is not followed by exactly one value"
            )));
        };
        let value = decimal(value)
            .ok_or_else(|| malformed(format!("{key} {value:?} is not a decimal number")))?;
        if key == "opened" && value > 1 {
            return Err(malformed(format!("opened is {value}, not 0 or 1")));
        }
        if values[slot].replace(value).is_some() {
            return Err(malformed(format!("{key} appears twice")));
        }
    }
    let get = |slot: usize| {
        values[slot].ok_or_else(|| ListingError::MissingStat {
            path: path.to_owned(),
            key: STAT_KEYS[slot],
        })
    };
    Ok(UsrdmaStats {
        opened: get(0)? == 1,
        buffers: get(1)?,
        buffer_bytes: get(2)?,
        user_mappings: get(3)?,
        pinned_pages: get(4)?,
        bounce_bytes: get(5)?,
        irqs: get(6)?,
        irq_count: get(7)?,
        // All three lines, or none (a module before ABI 3).
        quarantine: match (values[8], values[9], values[10]) {
            (Some(buffers), Some(bytes), Some(pages)) => Some(UsrdmaQuarantine {
                buffers,
                bytes,
                pages,
            }),
            (None, None, None) => None,
            _ => {
                let missing = (8..11).find(|&k| values[k].is_none()).unwrap_or(8);
                return Err(ListingError::MissingStat {
                    path: path.to_owned(),
                    key: STAT_KEYS[missing],
                });
            }
        },
    })
}

/// Text that is not empty must end with a newline: sysfs cuts an attribute
/// at one page, mid-line.
fn check_complete(text: &str, path: &Path) -> Result<(), ListingError> {
    if text.is_empty() || text.ends_with('\n') {
        Ok(())
    } else {
        Err(ListingError::Truncated {
            path: path.to_owned(),
        })
    }
}

/// A decimal number: ASCII digits only (no sign).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A hexadecimal number with `0x`, or a bare `0` (C's `%#x` prints zero so).
fn hex(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake_sysfs::FakeSysfs;

    const STATS: &str = "opened 1\nbuffers 2\nbuffer_bytes 69632\nuser_mappings 3\npinned_pages 4\nbounce_bytes 8192\nirqs 1\nirq_count 17\n";

    fn path() -> &'static Path {
        Path::new("/sys/bus/pci/devices/0000:00:03.0/usrdma_buffers")
    }

    fn addr(text: &str) -> PciAddress {
        text.parse().unwrap()
    }

    fn malformed(err: ListingError) -> (usize, String, String) {
        match err {
            ListingError::Malformed {
                line_number,
                line,
                problem,
                ..
            } => (line_number, line, problem),
            other => panic!("not Malformed: {other:?}"),
        }
    }

    #[test]
    fn buffer_lines_parse() {
        let text = "1 rx-ring 0x10000 0x7fe00000 0x3 4242\n\
                    2 - 0x1000 0xfffff000 0 0\n\
                    17 tx-ring-2 0x200000 0x0 0x2 1\n";
        let got = parse_buffers(text, path()).unwrap();
        assert_eq!(
            got[0],
            UsrdmaBuffer {
                id: 1,
                name: Some("rx-ring".into()),
                size: 0x10000,
                dma_addr: 0x7fe0_0000,
                flags: BufferFlags {
                    write_combining: true,
                    persistent: true,
                    unknown: 0
                },
                owner_pid: Some(4242),
            }
        );
        assert_eq!(got[1].name, None, "- is an anonymous buffer");
        assert_eq!(got[1].flags, BufferFlags::default(), "a bare 0 is zero");
        assert_eq!(got[1].owner_pid, None, "0: the owner is gone");
        assert_eq!(got[2].name.as_deref(), Some("tx-ring-2"));
        assert_eq!((got[2].id, got[2].dma_addr), (17, 0));
        assert!(got[2].flags.persistent && !got[2].flags.write_combining);
    }

    #[test]
    fn names_may_hold_spaces_and_padding_is_tolerated() {
        let text =
            "3 my  frame buffer 0x1000 0x1000 0x0 7\n  4   padded   0x2000  0x3000 0x1   8  \n\n";
        let got = parse_buffers(text, path()).unwrap();
        assert_eq!(got.len(), 2, "the blank line is skipped");
        assert_eq!(got[0].name.as_deref(), Some("my  frame buffer"));
        assert_eq!(got[1].name.as_deref(), Some("padded"));
        assert_eq!((got[1].size, got[1].dma_addr), (0x2000, 0x3000));
        assert!(got[1].flags.write_combining);
    }

    #[test]
    fn empty_attribute_means_no_buffers() {
        assert!(parse_buffers("", path()).unwrap().is_empty());
        assert!(parse_buffers("\n", path()).unwrap().is_empty());
    }

    #[test]
    fn unknown_flag_bits_are_kept() {
        let got = parse_buffers("1 a 0x1000 0x1000 0x10 5\n", path()).unwrap();
        assert_eq!(got[0].flags.unknown, 0x10);
        assert_eq!(got[0].flags.bits(), 0x10);
    }

    #[test]
    fn malformed_buffer_lines_name_the_file_line_and_field() {
        let cases = [
            ("1 a 0x1000 0x1000 0x0\n", "fewer than 6 fields"),
            ("1\n", "fewer than 6 fields"),
            ("1 0x1000 0x1000 0x0 5\n", "fewer than 6 fields"),
            ("x a 0x1000 0x1000 0x0 5\n", "id \"x\""),
            ("-1 a 0x1000 0x1000 0x0 5\n", "id \"-1\""),
            ("4294967296 a 0x1000 0x1000 0x0 5\n", "id \"4294967296\""),
            ("1 a 4096 0x1000 0x0 5\n", "size \"4096\""),
            ("1 a 0x 0x1000 0x0 5\n", "size \"0x\""),
            ("1 a 0x1000 0xfeg 0x0 5\n", "dma_addr \"0xfeg\""),
            ("1 a 0x1000 0x1 0x100000000 5\n", "flags \"0x100000000\""),
            ("1 a 0x1000 0x1000 0x0 -1\n", "owner_pid \"-1\""),
            (
                "1 a 0x1000 0x10000000000000000 0x0 5\n",
                "dma_addr \"0x10000000000000000\"",
            ),
        ];
        for (text, want) in cases {
            let (number, line, problem) = malformed(parse_buffers(text, path()).unwrap_err());
            assert_eq!(number, 1, "{text:?}");
            assert_eq!(line, text.trim_end(), "{text:?}");
            assert!(problem.contains(want), "{text:?}: {problem}");
        }
        let err = parse_buffers("1 a 0x1000 0x1000 0x0 5\n2 b zz 0x0 0x0 6\n", path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(
                "/sys/bus/pci/devices/0000:00:03.0/usrdma_buffers, line 2: size \"zz\""
            ),
            "{message}"
        );
        assert!(
            message.contains("id name size dma_addr flags owner_pid"),
            "{message}"
        );
    }

    #[test]
    fn text_cut_short_is_an_error() {
        let err = parse_buffers("1 a 0x1000 0x1000 0x0 12", path()).unwrap_err();
        assert!(matches!(err, ListingError::Truncated { .. }), "{err:?}");
        assert!(err.to_string().contains("one page"), "{err}");
        let err = parse_stats("opened 0\nbuffers 1", path()).unwrap_err();
        assert!(matches!(err, ListingError::Truncated { .. }), "{err:?}");
    }

    #[test]
    fn stats_parse_and_unknown_keys_are_ignored() {
        // Lines with unknown keys are skipped whole, whatever follows the key.
        let text = format!("future_counter 0xff\n{STATS}\nnewer 3 4 5\n");
        let got = parse_stats(&text, path()).unwrap();
        assert_eq!(
            got,
            UsrdmaStats {
                opened: true,
                buffers: 2,
                buffer_bytes: 69632,
                user_mappings: 3,
                pinned_pages: 4,
                bounce_bytes: 8192,
                irqs: 1,
                irq_count: 17,
                quarantine: None,
            }
        );
        let with =
            format!("{STATS}quarantine_buffers 1\nquarantine_bytes 4096\nquarantine_pages 2\n");
        assert_eq!(
            parse_stats(&with, path()).unwrap().quarantine,
            Some(UsrdmaQuarantine {
                buffers: 1,
                bytes: 4096,
                pages: 2
            })
        );
        let partial = format!("{STATS}quarantine_buffers 1\n");
        assert!(matches!(
            parse_stats(&partial, path()),
            Err(ListingError::MissingStat {
                key: "quarantine_bytes",
                ..
            })
        ));
        let closed = parse_stats(&STATS.replace("opened 1", "opened 0"), path()).unwrap();
        assert!(!closed.opened);
    }

    #[test]
    fn a_missing_stat_is_an_error_naming_the_key() {
        let text = STATS.replace("pinned_pages 4\n", "");
        let err = parse_stats(&text, path()).unwrap_err();
        match &err {
            ListingError::MissingStat { key, .. } => assert_eq!(*key, "pinned_pages"),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("no `pinned_pages` line"), "{err}");
        assert!(matches!(
            parse_stats("", path()),
            Err(ListingError::MissingStat { key: "opened", .. })
        ));
    }

    #[test]
    fn malformed_stats_lines_are_errors() {
        for (text, want) in [
            (STATS.replace("irqs 1", "irqs one"), "irqs \"one\""),
            (STATS.replace("irqs 1", "irqs -1"), "irqs \"-1\""),
            (
                STATS.replace("irqs 1", "irqs"),
                "not followed by exactly one value",
            ),
            (
                STATS.replace("irqs 1", "irqs 1 2"),
                "not followed by exactly one value",
            ),
            (STATS.replace("opened 1", "opened 2"), "opened is 2"),
            (format!("{STATS}buffers 3\n"), "buffers appears twice"),
        ] {
            let (_, _, problem) = malformed(parse_stats(&text, path()).unwrap_err());
            assert!(problem.contains(want), "{text:?}: {problem}");
        }
    }

    #[test]
    fn bound_devices_buffers_and_stats_from_a_tree() {
        let fake = FakeSysfs::new();
        fake.add_usrdma(
            "0000:00:04.0",
            0x1234,
            0x11e8,
            "1 ring 0x1000 0x1000 0x0 5\n",
            STATS,
        );
        fake.add("0000:00:02.0", 0x1b36, 0x0010, 0x010802, Some("nvme"), None);
        fake.add_usrdma("0000:00:03.0", 0x1234, 0x11e8, "", STATS);
        let sysfs = Sysfs::at(fake.root());
        assert_eq!(
            bound_devices(&sysfs).unwrap(),
            vec![addr("0000:00:03.0"), addr("0000:00:04.0")]
        );
        assert!(buffers(&sysfs, addr("0000:00:03.0")).unwrap().is_empty());
        let ring = buffers(&sysfs, addr("0000:00:04.0")).unwrap();
        assert_eq!(ring[0].name.as_deref(), Some("ring"));
        assert_eq!(stats(&sysfs, addr("0000:00:04.0")).unwrap().irq_count, 17);
    }

    #[test]
    fn attributes_of_other_devices_are_clear_errors() {
        let fake = FakeSysfs::new();
        fake.add("0000:00:02.0", 0x1b36, 0x0010, 0x010802, Some("nvme"), None);
        fake.add(
            "0000:00:03.0",
            0x1234,
            0x11e8,
            0x00ff00,
            Some("usrdma"),
            None,
        );
        let sysfs = Sysfs::at(fake.root());
        let err = buffers(&sysfs, addr("0000:00:02.0")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "0000:00:02.0 is bound to nvme, not usrdma: load the module (`modprobe usrdma`)"
            ),
            "{err}"
        );
        let err = stats(&sysfs, addr("0000:00:03.0")).unwrap_err();
        assert!(
            matches!(err, ListingError::MissingAttribute { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("usrdma_stats does not exist"),
            "{err}"
        );
        let err = stats(&sysfs, addr("0000:00:09.0")).unwrap_err();
        assert!(
            matches!(err, ListingError::Sysfs(SysfsError::NoSuchDevice { .. })),
            "{err:?}"
        );
    }
}
