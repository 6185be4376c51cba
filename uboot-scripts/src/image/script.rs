//! Building script images byte for byte as `mkimage -A ARCH -O linux -T script -C none` does.
//!
//! The data of a script image is a multi-file length table (one big-endian `u32` per part and a
//! zero terminator) followed by the parts, each but the last padded with zeros to 4 bytes.
//! mkimage refuses an empty part, since a zero length would end the table; so does labboot.

use super::header::{Header, COMP_NONE, HEADER_LEN, MAGIC, NAME_LEN, OS_LINUX, TYPE_SCRIPT};
use super::Arch;

/// Why a script image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The name does not fit `ih_name`; mkimage would cut it silently, labboot refuses.
    #[error("image name is {len} bytes long; the image header holds at most {NAME_LEN}")]
    NameTooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// A part is empty (mkimage: "Input file … is empty, bailing out").
    #[error("script part {index} is empty; an image cannot carry an empty part (mkimage refuses it too)")]
    EmptyPart {
        /// Index of the empty part.
        index: usize,
    },
    /// No part at all was given.
    #[error("no script given")]
    NoParts,
    /// The data does not fit the 32-bit size field.
    #[error("script data of {len} bytes does not fit a legacy image (4 GiB at most)")]
    TooLarge {
        /// Total data length in bytes.
        len: usize,
    },
}

/// What goes into the header of a script image besides its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSpec {
    /// Target architecture (`-A`).
    pub arch: Arch,
    /// Image name (`-n`), at most 32 bytes.
    pub name: String,
    /// `ih_time`, from [`super::timestamp::source_date`].
    pub time: u32,
}

/// Builds a script image holding one script.
pub fn build_script(spec: &ScriptSpec, script: &[u8]) -> Result<Vec<u8>, BuildError> {
    build_multi_script(spec, &[script])
}

/// Builds a script image from several parts, like `mkimage -d a:b:c`.
pub fn build_multi_script(spec: &ScriptSpec, parts: &[&[u8]]) -> Result<Vec<u8>, BuildError> {
    let name_bytes = spec.name.as_bytes();
    if name_bytes.len() > NAME_LEN {
        return Err(BuildError::NameTooLong {
            len: name_bytes.len(),
        });
    }
    if parts.is_empty() {
        return Err(BuildError::NoParts);
    }
    if let Some(index) = parts.iter().position(|p| p.is_empty()) {
        return Err(BuildError::EmptyPart { index });
    }

    let mut data = Vec::new();
    for part in parts {
        let len =
            u32::try_from(part.len()).map_err(|_| BuildError::TooLarge { len: part.len() })?;
        data.extend_from_slice(&len.to_be_bytes());
    }
    data.extend_from_slice(&0u32.to_be_bytes());
    for (i, part) in parts.iter().enumerate() {
        data.extend_from_slice(part);
        if i + 1 < parts.len() {
            data.resize(data.len().next_multiple_of(4), 0);
        }
    }
    let data_size =
        u32::try_from(data.len()).map_err(|_| BuildError::TooLarge { len: data.len() })?;

    let mut name = [0u8; NAME_LEN];
    name[..name_bytes.len()].copy_from_slice(name_bytes);
    let mut header = Header {
        magic: MAGIC,
        header_crc: 0,
        time: spec.time,
        data_size,
        load: 0,
        entry: 0,
        data_crc: crc32fast::hash(&data),
        os: OS_LINUX,
        arch: spec.arch.code(),
        kind: TYPE_SCRIPT,
        comp: COMP_NONE,
        name,
    };
    header.header_crc = header.compute_crc();

    let mut image = Vec::with_capacity(HEADER_LEN + data.len());
    image.extend_from_slice(&header.to_bytes());
    image.extend_from_slice(&data);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ScriptSpec {
        ScriptSpec {
            arch: Arch::Arm64,
            name: name.into(),
            time: 1_700_000_000,
        }
    }

    #[test]
    fn known_bytes_of_a_small_script() {
        // Produced by `SOURCE_DATE_EPOCH=1700000000 mkimage -A arm64 -O linux -T script -C none
        // -n test -d s.txt` with s.txt = "echo hi\n".
        let image = build_script(&spec("test"), b"echo hi\n").unwrap();
        assert_eq!(
            &image[0..8],
            &[0x27, 0x05, 0x19, 0x56, 0x32, 0xe8, 0x1b, 0x3a]
        );
        assert_eq!(
            &image[24..32],
            &[0xd9, 0x34, 0x01, 0x62, 0x05, 0x16, 0x06, 0x00]
        );
        assert_eq!(&image[64..], b"\0\0\0\x08\0\0\0\0echo hi\n");
    }

    #[test]
    fn parts_but_the_last_are_padded() {
        let image = build_multi_script(&spec("x"), &[b"a", b"bbbbb"]).unwrap();
        assert_eq!(&image[64..], b"\0\0\0\x01\0\0\0\x05\0\0\0\0a\0\0\0bbbbb");
    }

    #[test]
    fn refuses_long_names_and_empty_parts() {
        let long = "n".repeat(33);
        assert_eq!(
            build_script(&spec(&long), b"x"),
            Err(BuildError::NameTooLong { len: 33 })
        );
        assert!(build_script(&spec(&"n".repeat(32)), b"x").is_ok());
        assert_eq!(
            build_script(&spec("x"), b""),
            Err(BuildError::EmptyPart { index: 0 })
        );
    }
}
