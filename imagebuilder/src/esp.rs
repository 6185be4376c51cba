//! The EFI system partition: a FAT filesystem image holding the boot loader, its entries, the
//! kernel and the initrd, written without root or loop devices.
//!
//! mtools writes it (`mformat`, `mmd`, `mcopy`), straight into the image file. Reproducible like
//! the other outputs: the volume id comes from the caller (derived from the recipe), and every
//! timestamp is the build epoch: mtools takes SOURCE_DATE_EPOCH for the times it makes up
//! (directories, the volume label) and `mcopy -m` keeps the staged files' mtime, which is set to
//! the epoch; TZ is UTC. (fatfs, which writes the SD card, writes subdirectories whose `.` and
//! `..` entries fsck.fat rejects.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use crate::error::{Error, Result};

fn mtool(tool: &str, args: &[&std::ffi::OsStr], epoch: u32) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env_remove("MTOOLSRC")
        .output()
        .map_err(|e| {
            Error::step(
                "esp",
                format!("cannot run {tool} (mtools; scripts/setup.sh installs it): {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(Error::step(
            "esp",
            format!(
                "{tool} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Formats `image` (a file already of the partition's size) as FAT with `label` and
/// `volume_id`, and writes `files` (paths relative to the root, `/`-separated) into it, with
/// every timestamp at `epoch`; `scratch` (created, then removed) stages the files.
pub fn write(
    image: &Path,
    label: &str,
    volume_id: u32,
    epoch: u32,
    files: &BTreeMap<String, Vec<u8>>,
    scratch: &Path,
) -> Result<()> {
    let result = write_in(image, label, volume_id, epoch, files, scratch);
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn write_in(
    image: &Path,
    label: &str,
    volume_id: u32,
    epoch: u32,
    files: &BTreeMap<String, Vec<u8>>,
    scratch: &Path,
) -> Result<()> {
    let img = image.as_os_str();
    let serial = format!("{volume_id:08x}");
    mtool(
        "mformat",
        &[
            "-i".as_ref(),
            img,
            "-N".as_ref(),
            serial.as_ref(),
            "-v".as_ref(),
            label.as_ref(),
            "::".as_ref(),
        ],
        epoch,
    )?;
    let mut dirs = BTreeSet::new();
    for path in files.keys() {
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            dirs.insert(parent.to_string());
            at = parent;
        }
    }
    // BTreeSet order puts "EFI" before "EFI/BOOT": parents first.
    for d in &dirs {
        let target = format!("::/{d}");
        mtool("mmd", &["-i".as_ref(), img, target.as_ref()], epoch)?;
    }
    std::fs::create_dir_all(scratch).map_err(|e| Error::io(scratch, e))?;
    let mtime = UNIX_EPOCH + Duration::from_secs(epoch.into());
    for (i, (path, data)) in files.iter().enumerate() {
        let staged = scratch.join(format!("f{i}"));
        std::fs::write(&staged, data).map_err(|e| Error::io(&staged, e))?;
        std::fs::File::options()
            .write(true)
            .open(&staged)
            .and_then(|f| f.set_modified(mtime))
            .map_err(|e| Error::io(&staged, e))?;
        let target = format!("::/{path}");
        mtool(
            "mcopy",
            &[
                "-m".as_ref(),
                "-i".as_ref(),
                img,
                staged.as_os_str(),
                target.as_ref(),
            ],
            epoch,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fsck.fat -n` finds nothing to fix, mtools reads the files back, and a second write is
    /// byte-identical.
    #[test]
    fn fsck_and_mtools_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        let mut files = BTreeMap::new();
        files.insert("EFI/BOOT/BOOTX64.EFI".to_string(), vec![0x4d; 70_000]);
        files.insert("loader/loader.conf".to_string(), b"timeout 0\n".to_vec());
        files.insert(
            "loader/entries/labboot.conf".to_string(),
            b"title labboot\n".to_vec(),
        );
        files.insert("vmlinuz".to_string(), vec![7; 1 << 20]);
        let make = |path: &Path| {
            let img = std::fs::File::create(path).unwrap();
            img.set_len(64 << 20).unwrap();
            drop(img);
            write(
                path,
                "ESP",
                0x1234_5678,
                1_700_000_000,
                &files,
                &dir.path().join("s"),
            )
            .unwrap();
        };
        make(&path);
        let again = dir.path().join("again.img");
        make(&again);
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(&again).unwrap(),
            "two writes of the same files differ"
        );
        let fsck = std::process::Command::new("fsck.fat")
            .args(["-n", "-v", path.to_str().unwrap()])
            .output()
            .expect("fsck.fat (dosfstools)");
        let text = String::from_utf8_lossy(&fsck.stdout).to_string()
            + &String::from_utf8_lossy(&fsck.stderr);
        assert!(fsck.status.success(), "{text}");
        let mtype = std::process::Command::new("mtype")
            .args([
                "-i",
                path.to_str().unwrap(),
                "::/loader/entries/labboot.conf",
            ])
            .output()
            .expect("mtype (mtools)");
        assert_eq!(String::from_utf8_lossy(&mtype.stdout), "title labboot\n");
        let label = std::process::Command::new("mlabel")
            .args(["-i", path.to_str().unwrap(), "-s", "::"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&label.stdout).contains("ESP"),
            "{label:?}"
        );
    }
}
