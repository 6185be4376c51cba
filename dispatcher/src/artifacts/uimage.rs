//! Legacy U-Boot images (uImage) of a kernel or a ramdisk, byte for byte as mkimage makes them.
//!
//! LAVA calls `mkimage -A <mkimage_arch> -O linux -T kernel -C none -a <load> -e <entry>` to
//! turn a zImage/Image into a uImage for `bootm`, and `mkimage -A <arch> -T ramdisk -C none`
//! to give a rebuilt ramdisk its header back. labboot writes the same 64 bytes itself, with
//! the time mkimage would use (`SOURCE_DATE_EPOCH`, else now), so no u-boot-tools are needed
//! on the appliance. Reading goes the other way: a ramdisk given with `header: u-boot` loses
//! its header here, after both CRCs are checked.

use std::str::FromStr;

use uboot_scripts::image::header::{Header, COMP_NONE, HEADER_LEN, MAGIC, NAME_LEN, OS_LINUX};
use uboot_scripts::image::timestamp::source_date;
use uboot_scripts::image::Arch;

use crate::error::{Error, Result};

/// `ih_type` of a kernel.
const TYPE_KERNEL: u8 = 2;
/// `ih_type` of a ramdisk.
const TYPE_RAMDISK: u8 = 3;

/// What a legacy image holds (mkimage's `-T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `-T kernel`
    Kernel,
    /// `-T ramdisk`
    Ramdisk,
}

impl ImageKind {
    /// The `ih_type` code.
    pub fn code(self) -> u8 {
        match self {
            ImageKind::Kernel => TYPE_KERNEL,
            ImageKind::Ramdisk => TYPE_RAMDISK,
        }
    }
}

/// The architecture mkimage's `-A` names, or a ConfigurationError (it comes from the device).
pub fn parse_arch(arch: &str) -> Result<Arch> {
    Arch::from_str(arch).map_err(|e| Error::config(format!("mkimage_arch: {e}")))
}

/// The `ih_time` mkimage would write now: `SOURCE_DATE_EPOCH` if set, else the current time.
pub fn mkimage_time() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let var = std::env::var("SOURCE_DATE_EPOCH").ok();
    source_date(var.as_deref(), now).0
}

/// The fields of a header to build (everything but the data's size and CRC).
#[derive(Debug, Clone)]
pub struct HeaderSpec {
    /// `-T`.
    pub kind: ImageKind,
    /// `-A`.
    pub arch: Arch,
    /// `-a`.
    pub load: u32,
    /// `-e`.
    pub entry: u32,
    /// `-n`: at most 32 bytes.
    pub name: String,
    /// `ih_time`.
    pub time: u32,
}

/// The header mkimage writes (`-O linux -C none`) for data of `size` bytes with CRC `data_crc`.
pub fn header(spec: &HeaderSpec, size: u64, data_crc: u32) -> Result<Header> {
    let data_size = u32::try_from(size).map_err(|_| {
        Error::job(format!(
            "{size} bytes do not fit a legacy U-Boot image (at most 4 GiB)"
        ))
    })?;
    if spec.name.len() > NAME_LEN {
        return Err(Error::bug(format!(
            "image name {:?} is longer than {NAME_LEN} bytes",
            spec.name
        )));
    }
    let mut name = [0u8; NAME_LEN];
    name[..spec.name.len()].copy_from_slice(spec.name.as_bytes());
    let mut h = Header {
        magic: MAGIC,
        header_crc: 0,
        time: spec.time,
        data_size,
        load: spec.load,
        entry: spec.entry,
        data_crc,
        os: OS_LINUX,
        arch: spec.arch.code(),
        kind: spec.kind.code(),
        comp: COMP_NONE,
        name,
    };
    h.header_crc = h.compute_crc();
    Ok(h)
}

/// The CRC-32 U-Boot checks (`ih_dcrc`, `ih_hcrc`: IEEE, as zlib's).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// `mkimage -A arch -O linux -T kernel|ramdisk -C none -a load -e entry -n name -d <data>`;
/// like mkimage, refuses empty data.
pub fn wrap(
    data: &[u8],
    kind: ImageKind,
    arch: &str,
    load: u32,
    entry: u32,
    name: &str,
) -> Result<Vec<u8>> {
    if data.is_empty() {
        return Err(Error::job(
            "cannot make a U-Boot image of empty data (mkimage refuses too)",
        ));
    }
    let spec = HeaderSpec {
        kind,
        arch: parse_arch(arch)?,
        load,
        entry,
        name: name.to_string(),
        time: mkimage_time(),
    };
    let h = header(&spec, data.len() as u64, crc32(data))?;
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&h.to_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// The entry point LAVA gives a kernel uImage: the load address, or 64 bytes further for an
/// execute-in-place kernel (`use_xip`).
pub fn kernel_entry(load: u32, xip: bool) -> u32 {
    if xip {
        load.wrapping_add(HEADER_LEN as u32)
    } else {
        load
    }
}

/// Decodes and checks a legacy header at the start of `bytes` (magic and header CRC);
/// `what` names the file in errors. The data CRC is the caller's to check.
pub fn parse_header(bytes: &[u8], what: &str) -> Result<Header> {
    let h = Header::parse(bytes).ok_or_else(|| {
        Error::job(format!(
            "{what}: too short for a U-Boot image header ({} bytes)",
            bytes.len()
        ))
    })?;
    if h.magic != MAGIC {
        return Err(Error::job(format!(
            "{what}: no U-Boot image header (magic {:#010x}, expected {MAGIC:#010x})",
            h.magic
        )));
    }
    let crc = h.compute_crc();
    if crc != h.header_crc {
        return Err(Error::job(format!(
            "{what}: U-Boot image header CRC is {crc:#010x}, the header says {:#010x}",
            h.header_crc
        )));
    }
    Ok(h)
}

/// The data of a legacy image held in memory, after checking magic, both CRCs and the size.
pub fn unwrap<'a>(image: &'a [u8], what: &str) -> Result<&'a [u8]> {
    let h = parse_header(image, what)?;
    let data = image
        .get(HEADER_LEN..HEADER_LEN + h.data_size as usize)
        .ok_or_else(|| {
            Error::job(format!(
                "{what}: the U-Boot header announces {} bytes of data, the file has {}",
                h.data_size,
                image.len() - HEADER_LEN
            ))
        })?;
    let crc = crc32(data);
    if crc != h.data_crc {
        return Err(Error::job(format!(
            "{what}: U-Boot image data CRC is {crc:#010x}, the header says {:#010x}",
            h.data_crc
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_unwrap() {
        let image = wrap(b"kernel", ImageKind::Kernel, "arm", 0x8000, 0x8000, "k").unwrap();
        assert!(wrap(b"", ImageKind::Kernel, "arm", 0, 0, "").is_err());
        assert_eq!(image.len(), 70);
        let h = parse_header(&image, "k").unwrap();
        assert_eq!((h.kind, h.arch, h.os, h.comp), (2, 2, 5, 0));
        assert_eq!(h.name_str(), "k");
        assert_eq!(unwrap(&image, "k").unwrap(), b"kernel");
    }

    #[test]
    fn corrupt_images_are_refused() {
        let image = wrap(b"data", ImageKind::Ramdisk, "arm64", 0, 0, "").unwrap();
        let mut bad = image.clone();
        bad[67] ^= 1;
        assert!(unwrap(&bad, "r").unwrap_err().message.contains("data CRC"));
        let mut bad = image.clone();
        bad[40] ^= 1;
        assert!(unwrap(&bad, "r")
            .unwrap_err()
            .message
            .contains("header CRC"));
        assert!(unwrap(&image[..66], "r")
            .unwrap_err()
            .message
            .contains("announces 4 bytes"));
        assert!(unwrap(&image[..10], "r")
            .unwrap_err()
            .message
            .contains("too short"));
        assert!(unwrap(&[0u8; 80], "r")
            .unwrap_err()
            .message
            .contains("magic"));
    }

    #[test]
    fn bad_arch_and_long_name() {
        let e = wrap(b"k", ImageKind::Kernel, "sparc", 0, 0, "").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::ConfigurationError);
        assert!(wrap(b"k", ImageKind::Kernel, "arm", 0, 0, &"n".repeat(33)).is_err());
        assert!(wrap(b"k", ImageKind::Kernel, "arm", 0, 0, &"n".repeat(32)).is_ok());
    }

    #[test]
    fn xip_entry() {
        assert_eq!(kernel_entry(0x8000, false), 0x8000);
        assert_eq!(kernel_entry(0x8000, true), 0x8040);
    }
}
