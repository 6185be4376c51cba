//! The `disk` output: `disk.img`, a UEFI-bootable disk, and the same as `disk.qcow2`.
//!
//! ```text
//! LBA 0–33        protective MBR, primary GPT
//! 1 MiB           EFI system partition (FAT): EFI/BOOT/BOOTX64.EFI (systemd-boot),
//!                 loader/loader.conf, loader/entries/labboot.conf, labboot/vmlinuz,
//!                 labboot/initrd.img
//! 1 MiB + ESP     root partition: rootfs.ext4, byte for byte
//! last 33 LBAs    backup GPT (after 1 MiB of slack, the disk a whole number of MiB)
//! ```
//!
//! systemd-boot sits at the removable-media path, so firmware boots the disk with no NVRAM
//! entry. Nothing needs root or a loop device: the partitions are files written into the
//! image at their offsets. The disk, ESP and root GUIDs and the FAT volume id derive from the
//! recipe's sha256, times are the epoch, so the same inputs give the same bytes; `qemu-img
//! convert` writes no time or random field into a qcow2 header, so the qcow2 follows.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use crate::deb;
use crate::error::{Error, Result};
use crate::ext4::derived_uuid;
use crate::gpt::{self, Guid, Partition, SECTOR};
use crate::recipe::DiskSpec;

const MIB: u64 = 1 << 20;
/// Where systemd-boot's UEFI binary is in its package (`systemd-boot-efi`).
const LOADER_PATH: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

fn guid(what: &str, recipe_sha256: &str) -> Guid {
    Guid::parse(&derived_uuid(what, recipe_sha256)).expect("derived_uuid gives a GUID")
}

/// systemd-boot's UEFI binary from the loader package.
fn loader_efi(loader_deb: &Path) -> Result<Vec<u8>> {
    let mut efi = None;
    deb::visit(loader_deb, |e| {
        if e.path == LOADER_PATH {
            let mut data = Vec::new();
            e.reader
                .read_to_end(&mut data)
                .map_err(|err| Error::io(loader_deb, err))?;
            efi = Some(data);
        }
        Ok(())
    })?;
    let name = loader_deb
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    efi.ok_or_else(|| Error::package(&name, format!("no /{LOADER_PATH} in the package")))
}

/// The files of the EFI system partition.
fn esp_files(
    spec: &DiskSpec,
    efi: Vec<u8>,
    vmlinuz: Vec<u8>,
    initrd: Vec<u8>,
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("EFI/BOOT/BOOTX64.EFI".to_string(), efi);
    files.insert(
        "loader/loader.conf".to_string(),
        b"default labboot.conf\ntimeout 0\nconsole-mode keep\neditor no\n".to_vec(),
    );
    files.insert(
        "loader/entries/labboot.conf".to_string(),
        format!(
            "title labboot appliance\nlinux /labboot/vmlinuz\ninitrd /labboot/initrd.img\noptions {}\n",
            spec.cmdline
        )
        .into_bytes(),
    );
    files.insert("labboot/vmlinuz".to_string(), vmlinuz);
    files.insert("labboot/initrd.img".to_string(), initrd);
    files
}

/// Copies `len` bytes from `src` to `dst` at `offset`, seeking over blocks of zeros so that
/// the image stays sparse.
fn copy_sparse(src: &mut impl Read, dst: &mut File, offset: u64, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        src.read_exact(&mut buf[..n])?;
        if buf[..n].iter().any(|b| *b != 0) {
            dst.seek(SeekFrom::Start(offset + done))?;
            dst.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    Ok(())
}

/// Writes `disk.img` and `disk.qcow2` into `out` from the `rootfs.ext4`, `vmlinuz` and
/// `initrd.cpio.gz` already there and the loader package.
pub fn write(
    out: &Path,
    spec: &DiskSpec,
    loader_deb: &Path,
    epoch: u32,
    recipe_sha256: &str,
) -> Result<()> {
    let read = |name: &str| {
        let p = out.join(name);
        std::fs::read(&p).map_err(|e| Error::io(&p, e))
    };
    let files = esp_files(
        spec,
        loader_efi(loader_deb)?,
        read("vmlinuz")?,
        read("initrd.cpio.gz")?,
    );
    let payload: u64 = files.values().map(|d| d.len() as u64).sum();
    if payload + 4 * MIB > spec.esp_size {
        return Err(Error::step(
            "disk",
            format!(
                "the EFI partition's files take {} MiB: disk.esp_size ({} MiB) is too small",
                payload.div_ceil(MIB),
                spec.esp_size / MIB
            ),
        ));
    }
    let esp_path = out.join(format!(".esp.tmp{}", std::process::id()));
    let volume_id = u32::from_str_radix(&derived_uuid("esp-volume", recipe_sha256)[..8], 16)
        .expect("hex digits");
    let esp_written = File::create(&esp_path)
        .and_then(|f| f.set_len(spec.esp_size))
        .map_err(|e| Error::io(&esp_path, e))
        .and_then(|()| {
            crate::esp::write(
                &esp_path,
                "LABBOOT-ESP",
                volume_id,
                epoch,
                &files,
                &out.join(format!(".esp.stage{}", std::process::id())),
            )
        });
    if esp_written.is_err() {
        let _ = std::fs::remove_file(&esp_path);
    }
    esp_written?;
    let result = assemble(out, spec, &esp_path, recipe_sha256);
    let _ = std::fs::remove_file(&esp_path);
    result?;
    qcow2(out)
}

/// `disk.img` from the ESP image at `esp_path` and `rootfs.ext4`.
fn assemble(out: &Path, spec: &DiskSpec, esp_path: &Path, recipe_sha256: &str) -> Result<()> {
    let root_path = out.join("rootfs.ext4");
    let mut root = File::open(&root_path).map_err(|e| Error::io(&root_path, e))?;
    let root_len = root.metadata().map_err(|e| Error::io(&root_path, e))?.len();
    let esp_first = MIB / SECTOR;
    let root_first = esp_first + spec.esp_size / SECTOR;
    let root_sectors = root_len.div_ceil(SECTOR);
    let size = (root_first * SECTOR + root_sectors * SECTOR + MIB).div_ceil(MIB) * MIB;
    let parts = [
        Partition {
            type_guid: Guid::parse(gpt::ESP_TYPE).expect("constant"),
            guid: guid("esp-partition", recipe_sha256),
            first_lba: esp_first,
            last_lba: root_first - 1,
            name: "EFI system".into(),
        },
        Partition {
            type_guid: Guid::parse(gpt::ROOT_X86_64_TYPE).expect("constant"),
            guid: guid("root-partition", recipe_sha256),
            first_lba: root_first,
            last_lba: root_first + root_sectors - 1,
            name: "labboot root".into(),
        },
    ];

    let tmp = out.join(format!(".disk.img.tmp{}", std::process::id()));
    let written = (|| -> Result<()> {
        let mut img = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        img.set_len(size).map_err(|e| Error::io(&tmp, e))?;
        let mut esp = File::open(esp_path).map_err(|e| Error::io(esp_path, e))?;
        copy_sparse(&mut esp, &mut img, esp_first * SECTOR, spec.esp_size)
            .map_err(|e| Error::io(&tmp, e))?;
        copy_sparse(&mut root, &mut img, root_first * SECTOR, root_len)
            .map_err(|e| Error::io(&tmp, e))?;
        gpt::write(&mut img, size, guid("disk", recipe_sha256), &parts)
            .map_err(|e| Error::step("disk", e.to_string()))?;
        img.sync_all().map_err(|e| Error::io(&tmp, e))?;
        let dest = out.join("disk.img");
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `disk.qcow2` from `disk.img`, with `qemu-img convert`.
fn qcow2(out: &Path) -> Result<()> {
    let tmp = out.join(format!(".disk.qcow2.tmp{}", std::process::id()));
    let result = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(out.join("disk.img"))
        .arg(&tmp)
        .output();
    let fail = |m: String| {
        let _ = std::fs::remove_file(&tmp);
        Err(Error::step("disk", m))
    };
    match result {
        Err(e) => fail(format!(
            "cannot run qemu-img (qemu-utils; scripts/setup.sh installs it): {e}"
        )),
        Ok(o) if !o.status.success() => fail(format!(
            "qemu-img convert failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => {
            let dest = out.join("disk.qcow2");
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A loader package with a stand-in systemd-boot, made by dpkg-deb.
    fn loader_deb(dir: &Path) -> std::path::PathBuf {
        let root = dir.join("loader");
        let efi = root.join(LOADER_PATH);
        std::fs::create_dir_all(efi.parent().unwrap()).unwrap();
        std::fs::write(&efi, b"MZ stand-in loader").unwrap();
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: systemd-boot-efi\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: t\n",
        )
        .unwrap();
        let deb = dir.join("loader.deb");
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb));
        deb
    }

    /// The disk's table, ESP and root read back with sfdisk, mtools, e2fsprogs and qemu-img.
    #[test]
    fn partitions_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("vmlinuz"), vec![0x4b; 300_000]).unwrap();
        std::fs::write(out.join("initrd.cpio.gz"), vec![0x1f; 200_000]).unwrap();
        let root = out.join("rootfs.ext4");
        run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "labboot-root"])
            .arg(&root)
            .arg("8M"));
        let spec = DiskSpec {
            loader: "systemd-boot-efi".into(),
            cmdline: "labboot.root=disk:LABEL=labboot-root console=ttyS0".into(),
            esp_size: 32 << 20,
        };
        let deb = loader_deb(dir.path());
        write(&out, &spec, &deb, 1_700_000_000, &"ab".repeat(32)).unwrap();
        let img = out.join("disk.img");

        let table: serde_json::Value =
            serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
        let parts = table["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(parts.len(), 2, "{table}");
        assert_eq!(parts[0]["start"], 2048);
        assert_eq!(parts[0]["size"], (32 << 20) / 512);
        assert_eq!(parts[1]["start"], 2048 + (32 << 20) / 512);
        assert_eq!(parts[1]["size"], (8 << 20) / 512);

        let esp = format!("{}@@1M", img.display());
        let entry = run(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
            "-i",
            &esp,
            "::/loader/entries/labboot.conf",
        ]));
        assert!(
            entry.contains("options labboot.root=disk:LABEL=labboot-root console=ttyS0"),
            "{entry}"
        );
        let efi = run(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
            "-i",
            &esp,
            "::/EFI/BOOT/BOOTX64.EFI",
        ]));
        assert_eq!(efi, "MZ stand-in loader");

        // The root partition is rootfs.ext4, byte for byte.
        let bytes = std::fs::read(&img).unwrap();
        let at = (2048 + (32 << 20) / 512) * 512;
        assert!(bytes[at..at + (8 << 20)] == std::fs::read(&root).unwrap()[..]);

        run(Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(&img)
            .arg(out.join("disk.qcow2")));

        // Too small an ESP is refused, naming the field.
        let small = DiskSpec {
            esp_size: 1 << 20,
            ..spec
        };
        let e = write(&out, &small, &deb, 0, "x").unwrap_err().to_string();
        assert!(e.contains("disk.esp_size (1 MiB) is too small"), "{e}");
    }
}
