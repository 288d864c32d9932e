//! A writer for `newc` cpio archives, the format of Linux initramfs images.
//!
//! Each entry is a 110-byte ASCII header (`070701` and 13 eight-digit hex
//! fields), the NUL-terminated name padded to 4 bytes, then the data padded
//! to 4 bytes. The archive ends with an entry named `TRAILER!!!`. Parent
//! directories are written before their contents, automatically.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// The name of the last entry.
const TRAILER: &str = "TRAILER!!!";

/// Streams a newc archive to `W`. Paths are relative to the archive root;
/// a leading `/` is ignored. All entries are owned by root, mtime 0.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

/// One entry's header fields.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    /// Adds a directory (and its parents, mode 0755) unless already present.
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let path = clean(path)?;
        self.parents(path)?;
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.dirs.insert(path.to_string());
        self.header(&Header {
            name: path,
            mode: S_IFDIR | (perm & 0o7777),
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        })
    }

    /// Adds a regular file with the given contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let len = data.len() as u64;
        self.file_from(path, perm, &mut &data[..], len)
    }

    /// Adds a regular file of exactly `len` bytes read from `data`.
    pub fn file_from(
        &mut self,
        path: &str,
        perm: u32,
        data: &mut dyn Read,
        len: u64,
    ) -> io::Result<()> {
        let path = clean(path)?;
        let size = u32::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is 4 GiB or larger"),
            )
        })?;
        self.parents(path)?;
        self.header(&Header {
            name: path,
            mode: S_IFREG | (perm & 0o7777),
            nlink: 1,
            size,
            rdev: (0, 0),
        })?;
        let copied = io::copy(&mut data.take(len), &mut self.out)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {len} bytes, got {copied}"),
            ));
        }
        self.written += len;
        self.pad()
    }

    /// Adds a symbolic link `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = clean(path)?;
        self.parents(path)?;
        let size = u32::try_from(target.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "symlink target too long"))?;
        self.header(&Header {
            name: path,
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size,
            rdev: (0, 0),
        })?;
        self.raw(target.as_bytes())?;
        self.pad()
    }

    /// Adds a character device node.
    pub fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        let path = clean(path)?;
        self.parents(path)?;
        self.header(&Header {
            name: path,
            mode: S_IFCHR | (perm & 0o7777),
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        })
    }

    /// Writes the trailer and returns the output and the archive size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.next_ino = 0;
        self.header(&Header {
            name: TRAILER,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        })?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    /// Adds the missing parent directories of `path`.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let parent = &path[..end];
            if !self.dirs.contains(parent) {
                self.dir(parent, 0o755)?;
            }
            end += 1;
        }
        Ok(())
    }

    fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        let ino = self.next_ino;
        if ino != 0 {
            self.next_ino += 1;
        }
        let namesize = h.name.len() as u32 + 1;
        let fields = [
            ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rdev.0, h.rdev.1, namesize, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        self.raw(header.as_bytes())?;
        self.raw(h.name.as_bytes())?;
        self.raw(&[0])?;
        self.pad()
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads with NULs to a multiple of 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.raw(&[0; 3][..n])
    }
}

/// Strips a leading `/` and rejects paths the kernel would mis-handle.
fn clean(path: &str) -> io::Result<&str> {
    let path = path.trim_start_matches('/');
    let bad = path.is_empty()
        || path.ends_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad || path == TRAILER {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path in initramfs: {path:?}"),
        ))
    } else {
        Ok(path)
    }
}

#[cfg(test)]
pub mod parse {
    //! A newc reader for tests.

    /// One parsed entry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// Path in the archive.
        pub name: String,
        /// `st_mode`.
        pub mode: u32,
        /// Link count.
        pub nlink: u32,
        /// Device numbers.
        pub rdev: (u32, u32),
        /// File data or symlink target.
        pub data: Vec<u8>,
    }

    fn field(bytes: &[u8], at: usize, index: usize) -> u32 {
        let start = at + 6 + index * 8;
        let text = std::str::from_utf8(&bytes[start..start + 8]).expect("ascii header");
        u32::from_str_radix(text, 16).expect("hex field")
    }

    fn align(n: usize) -> usize {
        n.div_ceil(4) * 4
    }

    /// Parses a whole archive, checking magic and padding; the trailer is
    /// included as the last entry.
    pub fn entries(bytes: &[u8]) -> Vec<Entry> {
        assert_eq!(bytes.len() % 4, 0, "archive size is a multiple of 4");
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701", "magic at {at}");
            let mode = field(bytes, at, 1);
            let nlink = field(bytes, at, 4);
            let size = field(bytes, at, 6) as usize;
            let rdev = (field(bytes, at, 9), field(bytes, at, 10));
            let namesize = field(bytes, at, 11) as usize;
            let name_start = at + 110;
            let name = &bytes[name_start..name_start + namesize];
            assert_eq!(name.last(), Some(&0), "name is NUL-terminated");
            let name = String::from_utf8(name[..namesize - 1].to_vec()).expect("utf-8 name");
            let data_start = align(name_start + namesize);
            let data = bytes[data_start..data_start + size].to_vec();
            at = align(data_start + size);
            let done = name == "TRAILER!!!";
            out.push(Entry {
                name,
                mode,
                nlink,
                rdev,
                data,
            });
            if done {
                assert_eq!(at, bytes.len(), "nothing after the trailer");
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::entries;
    use super::*;

    fn build(f: impl FnOnce(&mut CpioWriter<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        f(&mut w).expect("writes");
        let (bytes, size) = w.finish().expect("finishes");
        assert_eq!(bytes.len() as u64, size);
        bytes
    }

    #[test]
    fn round_trip() {
        let bytes = build(|w| {
            w.file("/bin/busybox", 0o755, b"ELF...")?;
            w.symlink("bin/sh", "busybox")?;
            w.dir("proc", 0o555)?;
            w.file("etc/usrdrv/command.sh", 0o644, b"exit 3\n")?;
            w.char_device("dev/console", 0o600, 5, 1)?;
            w.file("empty", 0o644, b"")
        });
        let e = entries(&bytes);
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "proc",
                "etc",
                "etc/usrdrv",
                "etc/usrdrv/command.sh",
                "dev",
                "dev/console",
                "empty",
                "TRAILER!!!"
            ]
        );
        assert_eq!(e[0].mode, 0o040_755);
        assert_eq!(e[0].nlink, 2);
        assert_eq!(e[1].mode, 0o100_755);
        assert_eq!(e[1].data, b"ELF...");
        assert_eq!(e[2].mode, 0o120_777);
        assert_eq!(e[2].data, b"busybox");
        assert_eq!(e[3].mode, 0o040_555);
        assert_eq!(e[6].mode, 0o100_644);
        assert_eq!(e[6].data, b"exit 3\n");
        assert_eq!(e[8].mode, 0o020_600);
        assert_eq!(e[8].rdev, (5, 1));
        assert!(e[9].data.is_empty());
        let trailer = &e[10];
        assert_eq!((trailer.mode, trailer.nlink), (0, 1));
    }

    #[test]
    fn header_fields_and_padding() {
        let bytes = build(|w| w.file("a", 0o644, b"xy"));
        // Header: magic, ino 1, mode, uid, gid, nlink, mtime, filesize 2, ...
        let header = std::str::from_utf8(&bytes[..110]).expect("ascii");
        assert_eq!(
            header,
            "070701\
             00000001000081A4000000000000000000000001000000000000000200000000\
             00000000000000000000000000000002\
             00000000"
        );
        // Name "a\0" ends at 112, already aligned; data "xy" + 2 bytes of padding.
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..116], b"xy\0\0");
        assert_eq!(&bytes[116..122], b"070701");
    }

    #[test]
    fn directories_come_once_and_before_contents() {
        let bytes = build(|w| {
            w.file("usr/bin/a", 0o755, b"a")?;
            w.file("usr/bin/b", 0o755, b"b")?;
            w.dir("usr/bin", 0o700)
        });
        let names: Vec<String> = entries(&bytes).into_iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            ["usr", "usr/bin", "usr/bin/a", "usr/bin/b", "TRAILER!!!"]
        );
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w
            .file_from("f", 0o644, &mut &b"abc"[..], 10)
            .expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn bad_paths_are_rejected() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/", "a/../b", "a//b", "a/", "TRAILER!!!"] {
            assert!(w.file(bad, 0o644, b"").is_err(), "{bad:?}");
        }
    }
}
