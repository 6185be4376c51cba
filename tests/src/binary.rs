//! Locating the `labboot` binary that the end-to-end tests drive over its command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of the `labboot` binary, built once per test process with `cargo build -p appliance`.
///
/// `LABBOOT_BIN` overrides it (to test an installed binary). The build runs once even when
/// many tests ask at the same time; it is a no-op when `cargo test --workspace` already built it.
pub fn labboot_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("LABBOOT_BIN") {
            return PathBuf::from(path);
        }
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "appliance", "--bin", "labboot"])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo build for the labboot binary");
        assert!(status.success(), "cargo build -p appliance failed");
        target.join("debug").join("labboot")
    })
    .clone()
}

/// Writes an arm64 SD card for `board_id` with `labboot sdcard` (token `tok`, plus `extra`
/// arguments) and panics with its stderr if that fails.
pub fn make_sdcard(out: &Path, board_id: &str, extra: &[&str]) {
    let output = Command::new(labboot_bin())
        .args([
            "sdcard",
            "--board-id",
            board_id,
            "--token",
            "tok",
            "--arch",
            "arm64",
            "-o",
        ])
        .arg(out)
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run labboot sdcard");
    assert!(
        output.status.success(),
        "labboot sdcard failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
