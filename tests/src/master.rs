//! The shipped master image and the DHCP server of the master-boot labs (`image_boot.rs`,
//! `nfs_kernel.rs`): both boot the master on 10.77.0.0/24 inside a test's own namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::binary::{labboot_bin, workspace_root};
use crate::netns::Netns;
use crate::process::ServerProcess;

/// Builds `imagebuilder/recipes/master-arm64.yaml` into `out`, with packages cached under
/// `$LABBOOT_CACHE` or `tmp/imagebuilder-cache` (pass the test's `CARGO_TARGET_TMPDIR`).
pub fn build_master(tmp: &Path, out: &Path) {
    let cache = std::env::var_os("LABBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.join("imagebuilder-cache"));
    let status = Command::new(labboot_bin())
        .args(["image", "build", "-q"])
        .arg(workspace_root().join("imagebuilder/recipes/master-arm64.yaml"))
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(&cache)
        .status()
        .unwrap();
    assert!(status.success(), "labboot image build failed");
}

/// Starts `labboot dhcp` on `tap` in `ns` as 10.77.0.1, leasing 10.77.0.10–20.
pub fn start_dhcp(ns: &Netns, tap: &str) -> ServerProcess {
    let mut dhcp = ns.command(labboot_bin().to_str().unwrap());
    dhcp.args(["--log", "info", "dhcp", "--interface", tap])
        .args(["--server-ip", "10.77.0.1"])
        .args(["--pool", "10.77.0.10-10.77.0.20", "--prefix", "24"]);
    ServerProcess::start(
        "labboot dhcp",
        dhcp,
        "listening on",
        Duration::from_secs(30),
    )
    .unwrap()
}
