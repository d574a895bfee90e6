//! The initramfs: an uncompressed "newc" cpio archive, which the kernel
//! unpacks into its root tmpfs before it runs `/init`. Written by hand (the
//! format is 110 bytes of ASCII hex per entry), so building one needs no
//! root, no `cpio` tool and no device nodes on the host.
//!
//! Layout of one entry: the magic `070701`, thirteen 8-digit hex fields
//! (ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
//! rdevmajor, rdevminor, namesize including the NUL, check = 0), the name and
//! its NUL padded to a multiple of 4, then the data padded to a multiple of
//! 4. The archive ends with an entry named `TRAILER!!!`.
use std::io::{self, Write};

/// `S_IFDIR`, `S_IFREG`, `S_IFCHR`: the file type bits of a cpio mode.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFCHR: u32 = 0o020000;

/// Writes a newc archive to `W`, entry by entry.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// An archive written to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            ino: 0,
            written: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio entry name {name:?} must be relative and non-empty"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: newc holds files up to 4 GiB"),
            )
        })?;
        self.ino += 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// A directory with permission bits `perm`.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }

    /// A character device node (`/dev/console` is `c 5 1`).
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])
    }

    /// Writes the trailer and returns the output and the archive's size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(h: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    #[test]
    fn byte_layout_of_a_file_entry() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("init", 0o755, b"hello").unwrap();
        let (out, n) = w.finish().unwrap();
        assert_eq!(n, out.len() as u64);
        // header 110 + "init\0" 5 = 115 -> padded to 116; data 5 -> 8.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(field(&out, 0), 1, "ino");
        assert_eq!(field(&out, 1), 0o100755, "mode");
        assert_eq!(field(&out, 4), 1, "nlink");
        assert_eq!(field(&out, 6), 5, "filesize");
        assert_eq!(field(&out, 11), 5, "namesize counts the NUL");
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..124], b"hello\0\0\0");
        let t = &out[124..];
        assert_eq!(&t[..6], b"070701");
        assert_eq!(field(t, 11), 11);
        assert_eq!(&t[110..121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 4, 0);
        assert_eq!(out.len(), 124 + 124, "trailer: 110 + 11 -> 124");
    }

    #[test]
    fn device_nodes_and_directories() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("dev", 0o755).unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let (out, _) = w.finish().unwrap();
        assert_eq!(field(&out, 1), 0o040755);
        assert_eq!(field(&out, 4), 2);
        // "dev\0" -> 110 + 4 = 114 -> 116
        let c = &out[116..];
        assert_eq!(field(c, 1), 0o020600);
        assert_eq!((field(c, 9), field(c, 10)), (5, 1), "rdev major, minor");
        assert_eq!(field(c, 6), 0);
        assert_eq!(&c[110..122], b"dev/console\0");
    }

    #[test]
    fn refuses_absolute_or_empty_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/init", 0o755, b"").is_err());
        assert!(w.file("", 0o755, b"").is_err());
    }
}
