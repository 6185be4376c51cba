//! A rebuilt ramdisk boots: an arm64 kernel in QEMU runs a script of the appended overlay as
//! its init, through the ramdisk's own `lib -> usr/lib` symlink, in every compression.
//!
//! Needs an arm64 kernel Image and a gzip initramfs with busybox and a merged /usr (labboot's
//! master image build leaves both in `target/tmp/dispatch-master/`); set
//! `ARTIFACTS_QEMU_KERNEL` and `ARTIFACTS_QEMU_INITRD` to use others. Ignored by default
//! (it takes a minute): `cargo test -p dispatcher --test artifacts_ramdisk_qemu -- --ignored`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use dispatcher::artifacts::ramdisk::{rebuild_ramdisk, RamdiskSpec};
use dispatcher::job::model::Compression;

fn input(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default));
    path.exists().then_some(path)
}

#[test]
#[ignore = "boots a kernel in QEMU (about a minute)"]
fn rebuilt_ramdisk_boots() {
    let (Some(kernel), Some(initrd)) = (
        input(
            "ARTIFACTS_QEMU_KERNEL",
            "../target/tmp/dispatch-master/vmlinuz",
        ),
        input(
            "ARTIFACTS_QEMU_INITRD",
            "../target/tmp/dispatch-master/initrd.cpio.gz",
        ),
    ) else {
        eprintln!("no kernel or initramfs to boot; skipped");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let overlay = t.path().join("overlay/lava-1234");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("hello"),
        "#!/bin/sh\n/bin/busybox mount -t proc proc /proc\n\
         echo LABBOOT-$(/bin/busybox cat /lava-1234/tag)-$(/bin/busybox ls /usr/lib/modules/6.1.0/kernel)\n\
         /bin/busybox poweroff -f\n",
    )
    .unwrap();
    std::fs::set_permissions(
        overlay.join("hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(overlay.join("tag"), "OVERLAY").unwrap();
    let modules = t.path().join("modules/lib/modules/6.1.0/kernel");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("MODULES"), "").unwrap();

    // Uncompressed first, then each compression, from the gzip original.
    let plain = t.path().join("plain.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc < {} > {}",
            initrd.display(),
            plain.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    for (c, source) in [
        (None, &plain),
        (Some(Compression::Gz), &initrd),
        (Some(Compression::Xz), &initrd),
        (Some(Compression::Zstd), &initrd),
        (Some(Compression::Bz2), &initrd),
    ] {
        // Recompress the original in `c` so that rebuild keeps `c`.
        let input = t.path().join("input");
        let recompress = match c {
            None => "cat".to_string(),
            Some(Compression::Gz) => "gzip".into(),
            Some(Compression::Xz) => "xz --check=crc32".into(),
            Some(Compression::Zstd) => "zstd -q".into(),
            Some(Compression::Bz2) => "bzip2".into(),
        };
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} < {} | {recompress} > {}",
                if source == &plain { "cat" } else { "gzip -dc" },
                source.display(),
                input.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        let output = t.path().join("ramdisk.uboot");
        let spec = RamdiskSpec {
            add_uboot_header: Some("arm64".into()),
            compression: c,
            add: vec![t.path().join("overlay"), t.path().join("modules")],
            ..RamdiskSpec::default()
        };
        rebuild_ramdisk(&input, &spec, &output).unwrap();
        // QEMU's -initrd takes the data without the U-Boot header.
        let data = std::fs::read(&output).unwrap();
        let initrd_file = t.path().join("initrd");
        std::fs::write(&initrd_file, &data[64..]).unwrap();
        let out = Command::new("timeout")
            .args([
                "120",
                "qemu-system-aarch64",
                "-M",
                "virt",
                "-cpu",
                "cortex-a57",
                "-m",
                "512",
            ])
            .args(["-nographic", "-no-reboot", "-net", "none", "-kernel"])
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd_file)
            .args([
                "-append",
                "console=ttyAMA0 rdinit=/lava-1234/hello panic=-1 quiet",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(
            console.contains("LABBOOT-OVERLAY-MODULES"),
            "{c:?}: the overlay script did not run:\n{console}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{c:?}: booted");
    }
}
