//! The cpio "newc" format of Linux initramfs archives: decoding headers as they stream by and
//! encoding new entries.
//!
//! A ramdisk is extended by copying its entries byte for byte and appending new ones before
//! its final `TRAILER!!!`, never by extracting it: extraction would create its device nodes on
//! the host and lose owners without root. Hence a reader that hands back each entry's raw
//! bytes, and a writer for new entries only.
//!
//! newc layout: a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the name
//! with its NUL, zeros to a multiple of 4, the data, zeros to a multiple of 4. The archive ends
//! with an entry named `TRAILER!!!`; GNU cpio then pads the archive to a multiple of 512 bytes.

use std::io::{self, Read, Write};

/// Magic of a newc header.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// Magic of a newc header with a data checksum ("crc" format); read like newc.
pub const CRC_MAGIC: &[u8; 6] = b"070702";
/// Size of a newc header.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";
/// Longest entry name accepted (the kernel's `PATH_MAX`).
pub const MAX_NAME: usize = 4096;

/// File-type bits of `mode` (`S_IFMT`).
pub const S_IFMT: u32 = 0o170_000;
/// Directory.
pub const S_IFDIR: u32 = 0o040_000;
/// Regular file.
pub const S_IFREG: u32 = 0o100_000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120_000;

/// A decoded newc header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `c_ino`.
    pub ino: u32,
    /// `c_mode`: type and permission bits.
    pub mode: u32,
    /// `c_uid`.
    pub uid: u32,
    /// `c_gid`.
    pub gid: u32,
    /// `c_nlink`.
    pub nlink: u32,
    /// `c_mtime`.
    pub mtime: u32,
    /// `c_filesize`: bytes of data.
    pub filesize: u32,
    /// `c_devmajor`.
    pub devmajor: u32,
    /// `c_devminor`.
    pub devminor: u32,
    /// `c_rdevmajor`: of a device node.
    pub rdevmajor: u32,
    /// `c_rdevminor`: of a device node.
    pub rdevminor: u32,
    /// `c_namesize`: bytes of the name, its NUL included.
    pub namesize: u32,
    /// `c_check`: zero in newc.
    pub check: u32,
}

impl Header {
    /// Decodes 110 header bytes; `None` if the magic or a hex field is wrong.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_LEN)?;
        if &b[..6] != NEWC_MAGIC && &b[..6] != CRC_MAGIC {
            return None;
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            *field = u32::from_str_radix(hex, 16).ok()?;
        }
        let [ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check] =
            fields;
        Some(Header {
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            devmajor,
            devminor,
            rdevmajor,
            rdevminor,
            namesize,
            check,
        })
    }

    /// Encodes the header (newc magic, upper-case hex as the kernel's gen_init_cpio writes).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let text = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            self.namesize,
            self.check
        );
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(text.as_bytes());
        out
    }

    /// The file-type bits.
    pub fn kind(&self) -> u32 {
        self.mode & S_IFMT
    }
}

/// Zeros needed after `len` bytes to reach a multiple of `align`.
pub fn pad(len: u64, align: u64) -> usize {
    ((align - len % align) % align) as usize
}

/// One entry as read: its header, name (without NUL) and the raw header+name+padding bytes.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The decoded header.
    pub header: Header,
    /// The name, without its NUL.
    pub name: Vec<u8>,
    /// The bytes of header, name and padding exactly as read.
    pub raw: Vec<u8>,
}

impl RawEntry {
    /// Whether this entry ends its archive.
    pub fn is_trailer(&self) -> bool {
        self.name == TRAILER
    }
}

/// Reads the header and name (with padding) of the entry at stream offset `pos` from `r`;
/// its data is left for the caller. Read errors come back as they are (an early end as
/// `UnexpectedEof`), format errors as `InvalidData`; both say where.
pub fn read_entry_head(r: &mut dyn Read, pos: u64) -> io::Result<RawEntry> {
    let cut = |e: io::Error, part: &str| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends inside the {part} of the entry at offset {pos}"),
            )
        } else {
            e
        }
    };
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    let mut raw = vec![0u8; HEADER_LEN];
    r.read_exact(&mut raw).map_err(|e| cut(e, "header"))?;
    let header =
        Header::parse(&raw).ok_or_else(|| bad(format!("bad cpio header at offset {pos}")))?;
    let namesize = header.namesize as usize;
    if namesize == 0 || namesize > MAX_NAME {
        return Err(bad(format!(
            "the cpio entry at offset {pos} has a name size of {namesize}"
        )));
    }
    let name_pad = pad((HEADER_LEN + namesize) as u64, 4);
    let start = raw.len();
    raw.resize(start + namesize + name_pad, 0);
    r.read_exact(&mut raw[start..])
        .map_err(|e| cut(e, "name"))?;
    let mut name = raw[start..start + namesize].to_vec();
    if name.pop() != Some(0) {
        return Err(bad(format!(
            "the name of the cpio entry at offset {pos} does not end with NUL"
        )));
    }
    Ok(RawEntry { header, name, raw })
}

/// Writes one new entry: header, name, padding, `data` (exactly `header.filesize` bytes are
/// expected from it), padding. `name` is given without NUL; `namesize` is set here. Returns
/// the bytes written.
pub fn write_entry(
    w: &mut dyn Write,
    header: &Header,
    name: &[u8],
    data: &mut dyn Read,
) -> io::Result<u64> {
    let mut header = header.clone();
    header.namesize = u32::try_from(name.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
    w.write_all(&header.to_bytes())?;
    w.write_all(name)?;
    let head_len = (HEADER_LEN + name.len() + 1) as u64;
    w.write_all(&[0u8; 4][..1 + pad(head_len, 4)])?;
    let size = u64::from(header.filesize);
    let copied = io::copy(&mut data.take(size), w)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} changed size while it was archived",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    w.write_all(&[0u8; 4][..pad(size, 4)])?;
    Ok(head_len + pad(head_len, 4) as u64 + size + pad(size, 4) as u64)
}

/// Writes the trailer entry and zeros so that the archive, which had `written` bytes before,
/// ends on a 512-byte boundary as GNU cpio's do. Returns the bytes written.
pub fn write_trailer(w: &mut dyn Write, written: u64) -> io::Result<u64> {
    let header = Header {
        nlink: 1,
        ..Header::default()
    };
    let n = write_entry(w, &header, TRAILER, &mut io::empty())?;
    let padding = pad(written + n, 512);
    w.write_all(&vec![0u8; padding])?;
    Ok(n + padding as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            ino: 7,
            mode: S_IFREG | 0o644,
            nlink: 1,
            mtime: 0x1234_5678,
            filesize: 3,
            namesize: 6,
            ..Header::default()
        };
        let bytes = h.to_bytes();
        assert_eq!(&bytes[..6], NEWC_MAGIC);
        assert_eq!(Header::parse(&bytes), Some(h));
        assert_eq!(Header::parse(&bytes[..100]), None);
        let mut bad = bytes;
        bad[10] = b'g';
        assert_eq!(Header::parse(&bad), None);
    }

    #[test]
    fn entry_is_padded_and_read_back() {
        let mut out = Vec::new();
        let h = Header {
            mode: S_IFREG | 0o600,
            nlink: 1,
            filesize: 5,
            ..Header::default()
        };
        let n = write_entry(&mut out, &h, b"abc", &mut &b"hello"[..]).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        let entry = read_entry_head(&mut &out[..], 0).unwrap();
        assert_eq!(entry.name, b"abc");
        assert_eq!(entry.header.filesize, 5);
        assert_eq!(&out[entry.raw.len()..entry.raw.len() + 5], b"hello");
        let t = write_trailer(&mut out, n).unwrap();
        assert_eq!((n + t) % 512, 0);
    }

    #[test]
    fn short_data_is_an_error() {
        let h = Header {
            filesize: 10,
            ..Header::default()
        };
        assert!(write_entry(&mut Vec::new(), &h, b"x", &mut &b"abc"[..]).is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        let mut h = Header::default().to_bytes().to_vec();
        assert!(read_entry_head(&mut &h[..], 0).is_err()); // namesize 0
        h = Header {
            namesize: 2,
            ..Header::default()
        }
        .to_bytes()
        .to_vec();
        h.extend_from_slice(b"ab\0\0");
        assert!(read_entry_head(&mut &h[..], 0).is_err()); // no NUL
    }
}
