//! A GUID partition table (UEFI 2.10, chapter 5), written into a disk image file.
//!
//! The layout is the usual one: a protective MBR in LBA 0, the primary header in LBA 1 and its
//! 128 entries of 128 bytes in LBAs 2–33; the backup entries end one sector before the last
//! LBA, which holds the backup header. Every GUID is given by the caller (the image builder
//! derives them from the recipe), so the same partitions give the same bytes.

use std::io::{Seek, SeekFrom, Write};

/// Bytes per logical sector.
pub const SECTOR: u64 = 512;
/// Entries in each partition entry array (the minimum the specification allows a table).
const ENTRIES: u64 = 128;
/// Bytes per partition entry.
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by one entry array.
const ARRAY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// The first LBA a partition may use after the primary header and entries.
pub const FIRST_USABLE: u64 = 2 + ARRAY_SECTORS;

/// The EFI system partition's type.
pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// The type of an x86-64 root filesystem (the Discoverable Partitions Specification).
pub const ROOT_X86_64_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

/// A GUID in its on-disk byte order (the first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid([u8; 16]);

impl Guid {
    /// Parses the text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(text: &str) -> Option<Guid> {
        let groups: Vec<&str> = text.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if groups.len() != 5 || groups.iter().zip(lens).any(|(g, n)| g.len() != n) {
            return None;
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Some(Guid(b))
    }
}

/// One partition of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Partition type.
    pub type_guid: Guid,
    /// This partition's unique GUID (PARTUUID).
    pub guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Name (at most 36 UTF-16 code units).
    pub name: String,
}

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// The partitions do not fit the disk, overlap or are too many.
    #[error("partition table: {0}")]
    Layout(String),
    /// Writing the image failed.
    #[error("partition table: {0}")]
    Io(#[from] std::io::Error),
}

/// The last LBA a partition may use on a disk of `sectors` sectors.
pub fn last_usable(sectors: u64) -> u64 {
    sectors - 2 - ARRAY_SECTORS
}

/// Writes the protective MBR, both headers and both entry arrays of a disk of `size` bytes.
/// The partitions' contents are the caller's; nothing else of the image is touched.
pub fn write<D: Write + Seek>(
    disk: &mut D,
    size: u64,
    disk_guid: Guid,
    parts: &[Partition],
) -> Result<(), GptError> {
    if !size.is_multiple_of(SECTOR) || size / SECTOR < FIRST_USABLE + ARRAY_SECTORS + 2 {
        return Err(GptError::Layout(format!(
            "a disk of {size} bytes cannot hold a GPT"
        )));
    }
    let sectors = size / SECTOR;
    let last = sectors - 1;
    if parts.len() as u64 > ENTRIES {
        return Err(GptError::Layout(format!("{} partitions", parts.len())));
    }
    let mut sorted: Vec<&Partition> = parts.iter().collect();
    sorted.sort_by_key(|p| p.first_lba);
    let mut next = FIRST_USABLE;
    for p in &sorted {
        if p.first_lba < next || p.last_lba < p.first_lba || p.last_lba > last_usable(sectors) {
            return Err(GptError::Layout(format!(
                "partition {:?} (sectors {}–{}) overlaps another or leaves the usable sectors {}–{}",
                p.name,
                p.first_lba,
                p.last_lba,
                FIRST_USABLE,
                last_usable(sectors)
            )));
        }
        if p.name.encode_utf16().count() > 36 {
            return Err(GptError::Layout(format!(
                "partition name {:?} is longer than 36 UTF-16 units",
                p.name
            )));
        }
        next = p.last_lba + 1;
    }

    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in parts.iter().enumerate() {
        let e = &mut array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        for (j, unit) in p.name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let array_crc = crc32fast::hash(&array);

    let header = |my: u64, alternate: u64, entries_at: u64| -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable(sectors).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.0);
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };

    // Protective MBR: one partition of type 0xEE over the whole disk (capped at 2^32 - 1).
    let mut mbr = vec![0u8; SECTOR as usize];
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xee;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&(last.min(u32::MAX as u64) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let backup_entries = last - ARRAY_SECTORS;
    let writes: [(u64, Vec<u8>); 5] = [
        (0, mbr),
        (1, header(1, last, 2)),
        (2, array.clone()),
        (backup_entries, array),
        (last, header(last, 1, backup_entries)),
    ];
    for (lba, bytes) in writes {
        disk.seek(SeekFrom::Start(lba * SECTOR))?;
        disk.write_all(&bytes)?;
    }
    disk.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_to_disk_order() {
        let g = Guid::parse(ESP_TYPE).unwrap();
        assert_eq!(
            g.0,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93"), None);
        assert_eq!(Guid::parse("c12a7328f81f-11d2-ba4b-00a0c93ec93bb"), None);
        assert_eq!(Guid::parse("g12a7328-f81f-11d2-ba4b-00a0c93ec93b"), None);
    }

    fn part(first: u64, last: u64, name: &str) -> Partition {
        Partition {
            type_guid: Guid::parse(ESP_TYPE).unwrap(),
            guid: Guid::parse("01234567-89ab-4def-8123-456789abcdef").unwrap(),
            first_lba: first,
            last_lba: last,
            name: name.into(),
        }
    }

    #[test]
    fn refuses_overlaps_and_overruns() {
        let size = 8 << 20;
        let mut disk = std::io::Cursor::new(vec![0u8; size]);
        let g = Guid::parse(ROOT_X86_64_TYPE).unwrap();
        let two = [part(2048, 4095, "a"), part(4000, 8000, "b")];
        assert!(write(&mut disk, size as u64, g, &two).is_err());
        let past = [part(2048, (size as u64 / SECTOR) - 1, "a")];
        assert!(write(&mut disk, size as u64, g, &past).is_err());
        let early = [part(10, 100, "a")];
        assert!(write(&mut disk, size as u64, g, &early).is_err());
        let long = [part(2048, 4095, &"x".repeat(37))];
        assert!(write(&mut disk, size as u64, g, &long).is_err());
    }

    /// sfdisk (util-linux) reads back what was written, both copies checked.
    #[test]
    fn sfdisk_reads_the_table() {
        if std::process::Command::new("sfdisk")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("sfdisk (Debian package fdisk) is not installed: run `make setup`");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let size: u64 = 16 << 20;
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let mut root = part(6144, last_usable(size / SECTOR), "root");
        root.type_guid = Guid::parse(ROOT_X86_64_TYPE).unwrap();
        let parts = [part(2048, 6143, "esp"), root];
        let disk = Guid::parse("8f4e6c1a-0b2d-4e3f-9a5b-6c7d8e9f0a1b").unwrap();
        write(&mut f, size, disk, &parts).unwrap();
        drop(f);
        let out = std::process::Command::new("sfdisk")
            .args(["--json", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = &v["partitiontable"];
        assert_eq!(t["label"], "gpt");
        assert_eq!(t["id"], "8F4E6C1A-0B2D-4E3F-9A5B-6C7D8E9F0A1B");
        assert_eq!(t["firstlba"], 34);
        assert_eq!(t["lastlba"], size / SECTOR - 34);
        let p = t["partitions"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["start"], 2048);
        assert_eq!(p[0]["size"], 4096);
        assert_eq!(p[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(p[0]["name"], "esp");
        assert_eq!(p[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
        assert_eq!(p[1]["uuid"], "01234567-89AB-4DEF-8123-456789ABCDEF");
        let verify = std::process::Command::new("sfdisk")
            .args(["--verify", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout).to_string()
            + &String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success(), "{text}");
        assert!(
            !text.contains("corrupt") && !text.contains("invalid"),
            "{text}"
        );
    }
}
