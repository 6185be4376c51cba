//! Verifying an image and listing it like `dumpimage -l`.
//!
//! Checks run in the order U-Boot runs them: header length, magic, header CRC, data length,
//! data CRC, then (for script and multi-file images) the length table. The first that fails is
//! reported, naming the check and the values found. Every offset is bounds-checked, so no input
//! (truncated, mutated or hostile) can make inspection panic.

use std::fmt;

use super::header::{Header, HEADER_LEN, MAGIC, TYPE_MULTI, TYPE_SCRIPT};
use super::names::{arch_name, comp_name, os_name, type_name};
use super::timestamp::ctime_utc;

/// The check an image failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// Fewer bytes than a header.
    #[error(
        "truncated header: the file has {len} bytes, a legacy image header needs {HEADER_LEN}"
    )]
    TruncatedHeader {
        /// Bytes in the file.
        len: usize,
    },
    /// `ih_magic` is wrong.
    #[error("bad magic: found 0x{found:08x}, a legacy image starts with 0x{MAGIC:08x}")]
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// `ih_hcrc` does not match the header.
    #[error("bad header CRC: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    HeaderCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the header bytes.
        computed: u32,
    },
    /// Fewer data bytes than `ih_size` says.
    #[error(
        "truncated data: the header declares {declared} data bytes, only {available} follow it"
    )]
    TruncatedData {
        /// `ih_size`.
        declared: u32,
        /// Bytes after the header.
        available: usize,
    },
    /// `ih_dcrc` does not match the data.
    #[error("bad data CRC: stored 0x{stored:08x}, computed 0x{computed:08x}")]
    DataCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the data.
        computed: u32,
    },
    /// The multi-file length table or a part runs past the data.
    #[error("bad part table: {0}")]
    PartTable(String),
}

impl InspectError {
    /// A short, stable name of the failed check (`magic`, `header-crc`, `data-crc`, …).
    pub fn check(&self) -> &'static str {
        match self {
            InspectError::TruncatedHeader { .. } => "header-length",
            InspectError::BadMagic { .. } => "magic",
            InspectError::HeaderCrc { .. } => "header-crc",
            InspectError::TruncatedData { .. } => "data-length",
            InspectError::DataCrc { .. } => "data-crc",
            InspectError::PartTable(_) => "part-table",
        }
    }
}

/// One part of a script or multi-file image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Offset of the part's first byte from the start of the image file.
    pub offset: usize,
    /// Length of the part in bytes.
    pub len: u32,
}

/// A verified image: its header and, for script and multi-file images, its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The header, all checks passed.
    pub header: Header,
    /// The parts of a script or multi-file image (empty for other types).
    pub parts: Vec<Part>,
}

impl Listing {
    /// The bytes of part `index` inside `image` (the bytes this listing was made from).
    pub fn part<'a>(&self, image: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let p = self.parts.get(index)?;
        image.get(p.offset..p.offset + p.len as usize)
    }
}

/// Verifies `image` and lists it.
pub fn inspect(image: &[u8]) -> Result<Listing, InspectError> {
    let header = Header::parse(image).ok_or(InspectError::TruncatedHeader { len: image.len() })?;
    if header.magic != MAGIC {
        return Err(InspectError::BadMagic {
            found: header.magic,
        });
    }
    let computed = header.compute_crc();
    if computed != header.header_crc {
        return Err(InspectError::HeaderCrc {
            stored: header.header_crc,
            computed,
        });
    }
    let available = image.len() - HEADER_LEN;
    let data = usize::try_from(header.data_size)
        .ok()
        .and_then(|n| image.get(HEADER_LEN..HEADER_LEN.checked_add(n)?))
        .ok_or(InspectError::TruncatedData {
            declared: header.data_size,
            available,
        })?;
    let computed = crc32fast::hash(data);
    if computed != header.data_crc {
        return Err(InspectError::DataCrc {
            stored: header.data_crc,
            computed,
        });
    }
    let parts = if header.kind == TYPE_SCRIPT || header.kind == TYPE_MULTI {
        parse_parts(data)?
    } else {
        Vec::new()
    };
    Ok(Listing { header, parts })
}

/// Reads the length table and locates each part, as U-Boot's `image_multi_getimg` does:
/// parts follow the zero-terminated table, each but the last rounded up to 4 bytes.
fn parse_parts(data: &[u8]) -> Result<Vec<Part>, InspectError> {
    let mut lens = Vec::new();
    let mut at = 0usize;
    loop {
        let word = data.get(at..at + 4).ok_or_else(|| {
            InspectError::PartTable(format!(
                "the length table has no zero terminator within the {} data bytes",
                data.len()
            ))
        })?;
        at += 4;
        let len = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        if len == 0 {
            break;
        }
        lens.push(len);
    }
    let mut parts = Vec::with_capacity(lens.len());
    let mut offset = at;
    for (index, &len) in lens.iter().enumerate() {
        let end = offset
            .checked_add(len as usize)
            .filter(|&end| end <= data.len());
        let Some(end) = end else {
            return Err(InspectError::PartTable(format!(
                "part {index} of {len} bytes at data offset {offset} runs past the {} data bytes",
                data.len()
            )));
        };
        parts.push(Part {
            offset: HEADER_LEN + offset,
            len,
        });
        offset = end.next_multiple_of(4);
    }
    Ok(parts)
}

/// `N Bytes = x.xx KiB = y.yy MiB`, as U-Boot's `genimg_print_size`.
fn size_line(n: u32) -> String {
    format!(
        "{} Bytes = {:.2} KiB = {:.2} MiB",
        n,
        f64::from(n) / 1.024e3,
        f64::from(n) / 1.048_576e6
    )
}

impl fmt::Display for Listing {
    /// The listing `dumpimage -l` prints, with the date in UTC. For parts after the first of a
    /// script, `Offset` is the part's offset in the file (dumpimage prints a host address there).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(f, "Image Name:   {}", h.name_str())?;
        writeln!(f, "Created:      {}", ctime_utc(i64::from(h.time)))?;
        writeln!(
            f,
            "Image Type:   {} {} {} ({})",
            arch_name(h.arch),
            os_name(h.os),
            type_name(h.kind),
            comp_name(h.comp)
        )?;
        writeln!(f, "Data Size:    {}", size_line(h.data_size))?;
        writeln!(f, "Load Address: {:08x}", h.load)?;
        writeln!(f, "Entry Point:  {:08x}", h.entry)?;
        if h.kind == TYPE_SCRIPT || h.kind == TYPE_MULTI {
            writeln!(f, "Contents:")?;
            for (i, part) in self.parts.iter().enumerate() {
                writeln!(f, "   Image {i}: {}", size_line(part.len))?;
                if h.kind == TYPE_SCRIPT && i > 0 {
                    writeln!(f, "    Offset = 0x{:08x}", part.offset)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{build_multi_script, Arch, ScriptSpec};

    fn sample() -> Vec<u8> {
        let spec = ScriptSpec {
            arch: Arch::Arm,
            name: "x".into(),
            time: 0,
        };
        build_multi_script(&spec, &[b"a", b"bbbbb"]).unwrap()
    }

    #[test]
    fn lists_parts_with_offsets() {
        let image = sample();
        let listing = inspect(&image).unwrap();
        assert_eq!(listing.part(&image, 0), Some(&b"a"[..]));
        assert_eq!(listing.part(&image, 1), Some(&b"bbbbb"[..]));
        let text = listing.to_string();
        assert!(
            text.contains("Image Type:   ARM Linux Script (uncompressed)"),
            "{text}"
        );
        assert!(
            text.contains("Data Size:    21 Bytes = 0.02 KiB = 0.00 MiB"),
            "{text}"
        );
        assert!(text.contains("   Image 1: 5 Bytes = 0.00 KiB = 0.00 MiB\n    Offset = 0x00000050"));
    }

    #[test]
    fn names_each_failed_check() {
        let image = sample();
        assert_eq!(inspect(&image[..10]).unwrap_err().check(), "header-length");
        let mut bad = image.clone();
        bad[0] ^= 1;
        assert_eq!(inspect(&bad).unwrap_err().check(), "magic");
        let mut bad = image.clone();
        bad[40] ^= 1;
        assert_eq!(inspect(&bad).unwrap_err().check(), "header-crc");
        assert_eq!(inspect(&image[..70]).unwrap_err().check(), "data-length");
        let mut bad = image.clone();
        bad[80] ^= 1;
        assert_eq!(inspect(&bad).unwrap_err().check(), "data-crc");
    }

    #[test]
    fn table_running_past_the_data_is_refused() {
        // A consistent header over data whose length table claims more than there is.
        let mut image = sample();
        image[64..68].copy_from_slice(&1000u32.to_be_bytes());
        let crc = crc32fast::hash(&image[64..]);
        image[24..28].copy_from_slice(&crc.to_be_bytes());
        let mut h = Header::parse(&image).unwrap();
        h.header_crc = h.compute_crc();
        image[..64].copy_from_slice(&h.to_bytes());
        assert_eq!(inspect(&image).unwrap_err().check(), "part-table");
    }
}
