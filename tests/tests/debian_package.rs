//! The Debian package (`make deb`): `scripts/deb-test.sh` builds it twice around the `labboot`
//! binary this test run built (same sha256), runs lintian (no error), then installs it with apt
//! in a throwaway Debian 12 root made by mmdebstrap (cached under `target/debian/chroot/`), checks
//! `labboot --version`, `systemd-analyze verify`, the user, state directory, config and enabled
//! unit, and purges it (nothing left). Needs root, mmdebstrap and lintian.

use std::process::Command;

use labboot_tests::binary::{labboot_bin, workspace_root};
use labboot_tests::require;

#[test]
fn package_builds_installs_and_purges() {
    if !require::root() || !require::tool("mmdebstrap") || !require::tool("lintian") {
        return;
    }
    let bin = labboot_bin();
    let root = workspace_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/deb-test.sh"))
        .current_dir(&root)
        .env("LABBOOT_DEB_BINARY", &bin)
        .env_remove("LABBOOT_DEB")
        .output()
        .expect("run scripts/deb-test.sh");
    // Shown by the test harness on failure, or with --nocapture (step timings included).
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "scripts/deb-test.sh failed ({}); its output above says where",
        out.status
    );
}
