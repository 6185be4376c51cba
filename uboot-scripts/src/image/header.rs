//! The 64-byte legacy image header (`struct legacy_img_hdr`), all fields big-endian.

/// `ih_magic` of every legacy image.
pub const MAGIC: u32 = 0x2705_1956;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 64;
/// Bytes of `ih_name` (`IH_NMLEN`); a name may fill them all, without a NUL.
pub const NAME_LEN: usize = 32;
/// `ih_os` of Linux.
pub const OS_LINUX: u8 = 5;
/// `ih_type` of a multi-file image.
pub const TYPE_MULTI: u8 = 4;
/// `ih_type` of a script image.
pub const TYPE_SCRIPT: u8 = 6;
/// `ih_comp` of uncompressed data.
pub const COMP_NONE: u8 = 0;

/// A decoded header. Decoding never fails on content; checks live in [`super::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `ih_magic`.
    pub magic: u32,
    /// `ih_hcrc`: CRC-32 of the header with this field zeroed.
    pub header_crc: u32,
    /// `ih_time`: creation time, seconds since the epoch.
    pub time: u32,
    /// `ih_size`: bytes of data after the header.
    pub data_size: u32,
    /// `ih_load`: load address.
    pub load: u32,
    /// `ih_ep`: entry point.
    pub entry: u32,
    /// `ih_dcrc`: CRC-32 of the data.
    pub data_crc: u32,
    /// `ih_os`.
    pub os: u8,
    /// `ih_arch`.
    pub arch: u8,
    /// `ih_type`.
    pub kind: u8,
    /// `ih_comp`.
    pub comp: u8,
    /// `ih_name`, all 32 bytes.
    pub name: [u8; NAME_LEN],
}

impl Header {
    /// Encodes the header exactly as it is, `header_crc` included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic.to_be_bytes());
        b[4..8].copy_from_slice(&self.header_crc.to_be_bytes());
        b[8..12].copy_from_slice(&self.time.to_be_bytes());
        b[12..16].copy_from_slice(&self.data_size.to_be_bytes());
        b[16..20].copy_from_slice(&self.load.to_be_bytes());
        b[20..24].copy_from_slice(&self.entry.to_be_bytes());
        b[24..28].copy_from_slice(&self.data_crc.to_be_bytes());
        b[28] = self.os;
        b[29] = self.arch;
        b[30] = self.kind;
        b[31] = self.comp;
        b[32..64].copy_from_slice(&self.name);
        b
    }

    /// Decodes the first 64 bytes; `None` when fewer are given.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(&b[32..64]);
        Some(Header {
            magic: word(0),
            header_crc: word(4),
            time: word(8),
            data_size: word(12),
            load: word(16),
            entry: word(20),
            data_crc: word(24),
            os: b[28],
            arch: b[29],
            kind: b[30],
            comp: b[31],
            name,
        })
    }

    /// The CRC-32 the header should carry: over its bytes with `ih_hcrc` zeroed.
    pub fn compute_crc(&self) -> u32 {
        let mut copy = self.clone();
        copy.header_crc = 0;
        crc32fast::hash(&copy.to_bytes())
    }

    /// The name up to its first NUL, lossily decoded for display.
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}
