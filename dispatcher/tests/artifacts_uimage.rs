//! uImages made by labboot are byte for byte those of the real mkimage (u-boot-tools), and
//! `dumpimage -l` reads them.
//!
//! One test only: it sets `SOURCE_DATE_EPOCH` for the whole process before anything reads it.

use std::process::Command;

use dispatcher::artifacts::uimage::{kernel_entry, unwrap, wrap, ImageKind};

fn mkimage(args: &[&str], data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    std::fs::write(&input, data).unwrap();
    let out = Command::new("mkimage")
        .args(args)
        .arg("-d")
        .arg(&input)
        .arg(&output)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(output).unwrap()
}

fn dumpimage(image: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("img");
    std::fs::write(&file, image).unwrap();
    let out = Command::new("dumpimage")
        .arg("-l")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn identical_to_mkimage() {
    // SAFETY (of the process): the only test of this binary, set before any thread reads it.
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let kernel: Vec<u8> = (0..100_003u32).map(|i| (i % 253) as u8).collect();

    for (arch, load, xip, name) in [
        ("arm", 0x8000_8000u32, false, ""),
        ("arm", 0x0200_0000, true, "Linux-6.1"),
        (
            "arm64",
            0x8008_0000,
            false,
            "a name of exactly 32 bytes......",
        ),
    ] {
        let entry = kernel_entry(load, xip);
        let ours = wrap(&kernel, ImageKind::Kernel, arch, load, entry, name).unwrap();
        let (a, e) = (format!("{load:#x}"), format!("{entry:#x}"));
        let mut args = vec![
            "-A", arch, "-O", "linux", "-T", "kernel", "-C", "none", "-a", &a, "-e", &e,
        ];
        if !name.is_empty() {
            args.extend(["-n", name]);
        }
        assert_eq!(ours, mkimage(&args, &kernel), "kernel {arch} {name:?}");
        assert_eq!(unwrap(&ours, "k").unwrap(), &kernel[..]);
        let listing = dumpimage(&ours);
        assert!(listing.contains("Kernel Image (uncompressed)"), "{listing}");
        assert!(
            listing.contains(&format!("Load Address: {load:08x}")),
            "{listing}"
        );
        assert!(
            listing.contains(&format!("Entry Point:  {entry:08x}")),
            "{listing}"
        );
    }

    // The ramdisk header LAVA writes: `mkimage -A <arch> -T ramdisk -C none` (no -O, -n, -a, -e).
    let ramdisk = b"070701 not really a cpio, mkimage does not care".to_vec();
    for arch in ["arm", "arm64"] {
        let ours = wrap(&ramdisk, ImageKind::Ramdisk, arch, 0, 0, "").unwrap();
        let theirs = mkimage(&["-A", arch, "-T", "ramdisk", "-C", "none"], &ramdisk);
        assert_eq!(ours, theirs, "ramdisk {arch}");
        let listing = dumpimage(&ours);
        assert!(
            listing.contains("RAMDisk Image (uncompressed)"),
            "{listing}"
        );
        assert!(
            listing.contains("Created:      Tue Nov 14 22:13:20 2023"),
            "{listing}"
        );
    }

    // mkimage refuses empty data ("Input file ... is empty, bailing out"); so does wrap.
    assert!(wrap(b"", ImageKind::Kernel, "arm", 0, 0, "e").is_err());
}
