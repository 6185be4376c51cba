//! `labboot sdcard`: the image is reproducible, its FAT partition passes `fsck.fat -n`, and
//! mtools reads back the bootstrap script and the identity file.

use std::path::Path;
use std::process::Command;

use labboot_tests::binary::{labboot_bin, make_sdcard};
use labboot_tests::require;

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn card_is_reproducible_and_fsck_clean() {
    if !require::tool("fsck.fat") || !require::tool("mtype") || !require::tool("dumpimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    make_sdcard(&a, "rack3-slot12", &["--mac", "02:00:00:00:12:34"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    make_sdcard(&b, "rack3-slot12", &["--mac", "02:00:00:00:12:34"]);
    assert_eq!(
        sha256(&a),
        sha256(&b),
        "same arguments must give the same bytes"
    );
    assert_eq!(std::fs::metadata(&a).unwrap().len(), 16 << 20);

    // The partition starts at 1 MiB and runs to the end.
    let image = std::fs::read(&a).unwrap();
    assert_eq!(&image[510..512], &[0x55, 0xaa]);
    let entry = &image[446..462];
    assert_eq!(entry[0], 0x80, "partition 1 is bootable");
    assert_eq!(u32::from_le_bytes(entry[8..12].try_into().unwrap()), 2048);
    let part = dir.path().join("part.img");
    std::fs::write(&part, &image[1 << 20..]).unwrap();
    let fsck = Command::new("fsck.fat")
        .arg("-n")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck.fat -n found errors:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );

    let mtype = |name: &str| {
        let out = Command::new("mtype")
            .arg("-i")
            .arg(format!("{}@@1M", a.display()))
            .arg(format!("::{name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mtype {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let id = String::from_utf8(mtype("labboot.id")).unwrap();
    assert!(id.contains("board_id=rack3-slot12\n"), "{id}");
    assert!(id.contains("board_token=tok\n"), "{id}");
    assert!(id.contains("ethaddr=02:00:00:00:12:34\n"), "{id}");

    let script = dir.path().join("boot.scr");
    std::fs::write(&script, mtype("boot.scr")).unwrap();
    let listing = Command::new("dumpimage")
        .arg("-l")
        .arg(&script)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("AArch64 Linux Script (uncompressed)"),
        "{listing}"
    );

    // Another board, another card.
    let c = dir.path().join("c.img");
    make_sdcard(&c, "rack3-slot13", &["--size", "32M"]);
    assert_eq!(std::fs::metadata(&c).unwrap().len(), 32 << 20);
    assert_ne!(sha256(&a), sha256(&c));
}

#[test]
fn bad_identity_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("x.img");
    for (args, expect) in [
        (
            vec!["--board-id", "a/b", "--token", "t"],
            "board_id contains '/'",
        ),
        (
            vec![
                "--board-id",
                "a",
                "--token",
                "t",
                "--mac",
                "zz:00:00:00:00:00",
            ],
            "ethaddr \"zz:00:00:00:00:00\" is not a MAC",
        ),
        (
            vec!["--board-id", "a", "--token", "t", "--size", "1M"],
            "smaller than the minimum",
        ),
    ] {
        let out = Command::new(labboot_bin())
            .arg("sdcard")
            .args(&args)
            .args(["--arch", "arm64", "-o"])
            .arg(&out_path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out_path.exists(), "no image is left behind on failure");
    }
}
