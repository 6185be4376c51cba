//! The tiny SD card: an MBR with one bootable FAT partition holding `boot.scr` (the generic
//! bootstrap script as a script image) and `labboot.id` (the board's identity).
//!
//! The image is reproducible: the disk signature and volume id derive from the board id, every
//! FAT timestamp is the DOS epoch (1980-01-01), and the script image's time is the one given.
//! Both files live in the root directory (fatfs 0.3 writes faulty `.`/`..` entries in
//! subdirectories), and the partition starts at 1 MiB, as SD cards want.

use std::io::{self, Read, Seek, SeekFrom, Write};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use mbrman::{MBRPartitionEntry, BOOT_ACTIVE, CHS, MBR};

use crate::bootstrap::{bootstrap_script, Identity, IDENTITY_FILE};
use crate::image::{build_script, Arch, BuildError, ScriptSpec};

/// Sector size of the card.
pub const SECTOR: u64 = 512;
/// First sector of the FAT partition (1 MiB).
pub const PARTITION_START: u64 = 2048;
/// Smallest card labboot writes.
pub const MIN_SIZE: u64 = 4 << 20;
/// Largest card labboot writes (the FAT partition stays FAT16/FAT32 and the MBR addresses it).
pub const MAX_SIZE: u64 = 2 << 30;
/// Default card size.
pub const DEFAULT_SIZE: u64 = 16 << 20;
/// Name of the bootstrap script on the card (found by U-Boot's distro boot).
pub const BOOT_SCRIPT: &str = "boot.scr";

/// What goes on one board's card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdCardSpec {
    /// The board's identity.
    pub identity: Identity,
    /// Architecture in the bootstrap script's image header.
    pub arch: Arch,
    /// Size of the whole image in bytes (a multiple of 512).
    pub size: u64,
    /// `ih_time` of the bootstrap script image.
    pub time: u32,
}

/// Why a card could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdCardError {
    /// The size is out of range or not whole sectors.
    #[error("card size {size} bytes: {reason}")]
    BadSize {
        /// The size asked for.
        size: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The bootstrap script image could not be built.
    #[error("bootstrap script: {0}")]
    Script(#[from] BuildError),
    /// Writing the partition table failed.
    #[error("partition table: {0}")]
    Mbr(String),
    /// Writing the FAT filesystem failed.
    #[error("FAT filesystem: {0}")]
    Fat(#[source] io::Error),
}

/// FAT timestamps fixed at the DOS epoch, so the image does not depend on the clock.
#[derive(Debug)]
struct DosEpoch;

impl fatfs::TimeProvider for DosEpoch {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static DOS_EPOCH: DosEpoch = DosEpoch;

/// Writes the card image onto `disk`, which must already be `spec.size` bytes long.
pub fn write_sdcard<D: Read + Write + Seek>(
    disk: &mut D,
    spec: &SdCardSpec,
) -> Result<(), SdCardError> {
    check_size(spec.size)?;
    let script = build_script(
        &ScriptSpec {
            arch: spec.arch,
            name: "labboot bootstrap".into(),
            time: spec.time,
        },
        bootstrap_script().as_bytes(),
    )?;
    let seed = crc32fast::hash(spec.identity.board_id.as_bytes());
    let sectors = spec.size / SECTOR - PARTITION_START;

    // The filesystem first: its type decides the partition type.
    let fat_type = {
        let mut part = Window::new(&mut *disk, PARTITION_START * SECTOR, sectors * SECTOR);
        fatfs::format_volume(
            &mut part,
            FormatVolumeOptions::new()
                .volume_id(seed)
                .volume_label(*b"LABBOOT    "),
        )
        .map_err(SdCardError::Fat)?;
        let fs = FileSystem::new(&mut part, FsOptions::new().time_provider(&DOS_EPOCH))
            .map_err(SdCardError::Fat)?;
        let identity = spec.identity.to_file();
        let files: [(&str, &[u8]); 2] =
            [(BOOT_SCRIPT, &script), (IDENTITY_FILE, identity.as_bytes())];
        for (name, content) in files {
            let mut file = fs.root_dir().create_file(name).map_err(SdCardError::Fat)?;
            file.truncate().map_err(SdCardError::Fat)?;
            file.write_all(content).map_err(SdCardError::Fat)?;
            file.flush().map_err(SdCardError::Fat)?;
        }
        let fat_type = fs.fat_type();
        fs.unmount().map_err(SdCardError::Fat)?;
        fat_type
    };

    let mut mbr = MBR::new_from(disk, SECTOR as u32, seed.to_le_bytes())
        .map_err(|e| SdCardError::Mbr(e.to_string()))?;
    mbr[1] = MBRPartitionEntry {
        boot: BOOT_ACTIVE,
        first_chs: CHS::empty(),
        sys: partition_type(fat_type),
        last_chs: CHS::empty(),
        starting_lba: PARTITION_START as u32,
        sectors: sectors as u32,
    };
    mbr.write_into(disk)
        .map_err(|e| SdCardError::Mbr(e.to_string()))?;
    disk.flush().map_err(SdCardError::Fat)?;
    Ok(())
}

/// Builds the card image in memory.
pub fn build_sdcard(spec: &SdCardSpec) -> Result<Vec<u8>, SdCardError> {
    check_size(spec.size)?;
    let mut disk = io::Cursor::new(vec![0u8; spec.size as usize]);
    write_sdcard(&mut disk, spec)?;
    Ok(disk.into_inner())
}

fn check_size(size: u64) -> Result<(), SdCardError> {
    let reason = if !size.is_multiple_of(SECTOR) {
        format!("not a multiple of {SECTOR}-byte sectors")
    } else if size < MIN_SIZE {
        format!("smaller than the minimum of {} MiB", MIN_SIZE >> 20)
    } else if size > MAX_SIZE {
        format!("larger than the maximum of {} MiB", MAX_SIZE >> 20)
    } else {
        return Ok(());
    };
    Err(SdCardError::BadSize { size, reason })
}

/// MBR partition type of a FAT filesystem (LBA variants).
fn partition_type(fat: FatType) -> u8 {
    match fat {
        FatType::Fat12 => 0x01,
        FatType::Fat16 => 0x0e,
        FatType::Fat32 => 0x0c,
    }
}

/// A byte range of a disk seen as a disk of its own (the FAT partition).
struct Window<'a, D> {
    inner: &'a mut D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, D: Seek> Window<'a, D> {
    fn new(inner: &'a mut D, start: u64, len: u64) -> Self {
        Window {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    fn remaining(&self, want: usize) -> usize {
        want.min(self.len.saturating_sub(self.pos) as usize)
    }
}

impl<D: Read + Seek> Read for Window<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.remaining(buf.len());
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: Write + Seek> Write for Window<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.remaining(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Seek> Seek for Window<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(n) if n <= self.len => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::inspect;

    fn spec() -> SdCardSpec {
        SdCardSpec {
            identity: Identity::new("board-1", "tok", None).unwrap(),
            arch: Arch::Arm64,
            size: DEFAULT_SIZE,
            time: 0,
        }
    }

    #[test]
    fn card_holds_script_and_identity() {
        let image = build_sdcard(&spec()).unwrap();
        let mut disk = io::Cursor::new(image);
        let mbr = MBR::read_from(&mut disk, 512).unwrap();
        assert_eq!(mbr[1].starting_lba, 2048);
        assert!(mbr[1].is_active());
        let part = Window::new(
            &mut disk,
            PARTITION_START * SECTOR,
            DEFAULT_SIZE - PARTITION_START * SECTOR,
        );
        let fs = FileSystem::new(part, FsOptions::new()).unwrap();
        let mut script = Vec::new();
        fs.root_dir()
            .open_file(BOOT_SCRIPT)
            .unwrap()
            .read_to_end(&mut script)
            .unwrap();
        let listing = inspect(&script).unwrap();
        assert!(String::from_utf8_lossy(listing.part(&script, 0).unwrap())
            .contains("labboot/${board_id}/boot.scr"));
        let mut id = String::new();
        fs.root_dir()
            .open_file(IDENTITY_FILE)
            .unwrap()
            .read_to_string(&mut id)
            .unwrap();
        assert_eq!(Identity::parse(&id).unwrap().board_id, "board-1");
    }

    #[test]
    fn same_spec_same_bytes() {
        assert_eq!(
            build_sdcard(&spec()).unwrap(),
            build_sdcard(&spec()).unwrap()
        );
        let mut other = spec();
        other.identity = Identity::new("board-2", "tok", None).unwrap();
        assert_ne!(
            build_sdcard(&spec()).unwrap(),
            build_sdcard(&other).unwrap()
        );
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        let mut s = spec();
        s.size = 1 << 20;
        assert!(matches!(build_sdcard(&s), Err(SdCardError::BadSize { .. })));
        s.size = DEFAULT_SIZE + 1;
        assert!(matches!(build_sdcard(&s), Err(SdCardError::BadSize { .. })));
    }
}
