//! `labboot nbd` against the NBD project's and QEMU's own clients: `nbdinfo` sees the exports,
//! their sizes and flags; `qemu-img convert` and `nbdcopy --connections 4` copy a 256 MiB image
//! byte for byte; bad command lines and configs fail with one line naming the problem.

mod nbd_common;

use std::process::Command;

use labboot_tests::binary::labboot_bin;
use labboot_tests::require;
use nbd_common::{pattern_image, run, sha256, Nbd};

/// The `key: value` lines nbdinfo prints for one export (from `export="NAME":` to the next).
fn export_block<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("export=\"{name}\":");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with("export="))
        .map(str::trim)
        .collect()
}

#[test]
fn nbdinfo_lists_exports_with_sizes_and_flags() {
    if !require::tool("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let master = pattern_image(dir.path(), "master.img", 3 << 20);
    let job = pattern_image(dir.path(), "job.img", (1 << 20) + 512);
    let nbd = Nbd::start(
        &[
            format!("master={}", master.display()),
            format!("overlay={}:cow", master.display()),
            format!("job7={}:rw", job.display()),
        ],
        &[],
    );
    let list = run(Command::new("nbdinfo").arg("--list").arg(nbd.uri("")));
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let expect = [
        (
            "master",
            vec![
                "export-size: 3145728 (3M)",
                "is_read_only: true",
                "can_multi_conn: true",
                "can_flush: true",
                "can_cache: true",
                "can_trim: false",
                "can_zero: false",
                "can_fua: false",
            ],
        ),
        (
            "overlay",
            vec![
                "export-size: 3145728 (3M)",
                "is_read_only: false",
                "can_multi_conn: false",
                "can_trim: true",
                "can_zero: true",
                "can_fua: true",
            ],
        ),
        (
            "job7",
            vec![
                "export-size: 1049088",
                "is_read_only: false",
                "can_multi_conn: true",
                "can_trim: true",
                "can_zero: true",
                "can_fua: true",
            ],
        ),
    ];
    for (name, lines) in &expect {
        let block = export_block(&list, name);
        for want in lines {
            assert!(
                block.iter().any(|l| l.starts_with(want)),
                "nbdinfo --list: export {name} lacks `{want}`:\n{list}"
            );
        }
        assert!(block.contains(&"block_size_maximum: 33554432"), "{list}");
        assert!(block.contains(&"block_size_minimum: 1"), "{list}");
    }

    // One export by URI: the same facts, and nbdinfo negotiated structured replies.
    let one = run(Command::new("nbdinfo").arg(nbd.uri("job7")));
    let one = String::from_utf8_lossy(&one.stdout).into_owned();
    assert!(one.contains("using structured packets"), "{one}");
    for want in expect[2].1.iter() {
        assert!(
            export_block(&one, "job7")
                .iter()
                .any(|l| l.starts_with(want)),
            "nbdinfo job7 lacks `{want}`:\n{one}"
        );
    }
    let size = run(Command::new("nbdinfo").arg("--size").arg(nbd.uri("master")));
    assert_eq!(String::from_utf8_lossy(&size.stdout).trim(), "3145728");
    // An unknown export is an error for the client, and the server logs nothing worse.
    let missing = Command::new("nbdinfo")
        .arg(nbd.uri("nope"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn qemu_img_and_nbdcopy_copy_256_mib_byte_identical() {
    if !require::tool("qemu-img") || !require::tool("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let master = pattern_image(dir.path(), "master.img", 256 << 20);
    let want = sha256(&master);
    let nbd = Nbd::start(
        &[
            format!("master={}", master.display()),
            format!("overlay={}:cow", master.display()),
        ],
        &[],
    );
    let info = run(Command::new("qemu-img").arg("info").arg(nbd.uri("master")));
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(
        info.contains("virtual size: 256 MiB (268435456 bytes)"),
        "{info}"
    );
    assert!(info.contains("file format: raw"), "{info}");

    let by_qemu = dir.path().join("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(nbd.uri("master"))
        .arg(&by_qemu));
    assert_eq!(sha256(&by_qemu), want, "qemu-img convert copy differs");
    std::fs::remove_file(&by_qemu).unwrap();

    for export in ["master", "overlay"] {
        let by_nbdcopy = dir.path().join(format!("{export}.nbdcopy.raw"));
        run(Command::new("nbdcopy")
            .args(["--connections", "4"])
            .arg(nbd.uri(export))
            .arg(&by_nbdcopy));
        assert_eq!(sha256(&by_nbdcopy), want, "nbdcopy of {export} differs");
        std::fs::remove_file(&by_nbdcopy).unwrap();
    }
    assert_eq!(sha256(&master), want, "the served file changed");
    // Every connection ended with NBD_CMD_DISC or a close, none with an error.
    let lines = nbd.process.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn bad_exports_and_configs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let fail = |args: &[&str]| {
        let out = Command::new(labboot_bin())
            .arg("nbd")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = fail(&[
        "--listen",
        "127.0.0.1:0",
        "--export",
        "m=/nonexistent/x.img",
    ]);
    assert!(
        err.starts_with("labboot: export \"m\": /nonexistent/x.img: "),
        "{err}"
    );
    let err = fail(&["--listen", "127.0.0.1:0"]);
    assert!(err.contains("no exports"), "{err}");
    let config = dir.path().join("labboot.yaml");
    std::fs::write(
        &config,
        "nbd:\n  listen: 127.0.0.1:0\n  exports:\n    - name: m\n      path: /x\n      mode: rx\n",
    )
    .unwrap();
    let err = fail(&["--config", config.to_str().unwrap()]);
    assert!(
        err.contains("nbd.exports[0].mode: unknown export mode \"rx\""),
        "{err}"
    );
    std::fs::write(&config, "nbd:\n  listen: 127.0.0.1:0\n  exprts: []\n").unwrap();
    let err = fail(&["--config", config.to_str().unwrap()]);
    assert!(err.contains("unknown field `exprts`"), "{err}");
}

#[test]
fn config_file_exports_are_served() {
    if !require::tool("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "m.img", 1 << 20);
    let config = dir.path().join("labboot.yaml");
    std::fs::write(
        &config,
        format!(
            "tftp:\n  root: /srv\nnbd:\n  listen: 127.0.0.1:0\n  exports:\n    - name: fromfile\n      path: {}\n      description: the master image\n    - name: hidden\n      path: {}\n      allow: [10.9.9.0/24]\n",
            img.display(),
            img.display()
        ),
    )
    .unwrap();
    let nbd = Nbd::start(&[], &["--config", config.to_str().unwrap()]);
    let list = run(Command::new("nbdinfo").arg("--list").arg(nbd.uri("")));
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("export=\"fromfile\":"), "{list}");
    assert!(list.contains("description: the master image"), "{list}");
    assert!(
        !list.contains("hidden"),
        "an export restricted to 10.9.9.0/24 is listed to 127.0.0.1:\n{list}"
    );
    let refused = Command::new("nbdinfo")
        .arg(nbd.uri("hidden"))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "127.0.0.1 reached a restricted export"
    );
}
