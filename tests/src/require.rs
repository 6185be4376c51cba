//! Preconditions of the end-to-end tests.
//!
//! A test that needs root, `/dev/kvm` or a peer tool calls these first. When the precondition is
//! missing the test fails with a message that names it: CI is root with every peer installed by
//! `scripts/setup.sh`, so a missing tool is a setup bug, never a reason to skip silently.
//! Setting `LABBOOT_ALLOW_SKIP=1` turns the failure into a printed skip for developers' machines.

use std::path::Path;

/// Outcome of a precondition check: `true` means go on, `false` means the test was skipped.
#[must_use]
pub fn tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    check(
        found,
        &format!("the peer tool `{name}` (run scripts/setup.sh)"),
    )
}

/// Requires that the test runs as root (network namespaces, tap devices).
#[must_use]
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    check(euid == 0, "root (network namespaces and tap devices)")
}

/// Requires that a file exists, e.g. U-Boot's firmware image.
#[must_use]
pub fn file(path: &str) -> bool {
    check(
        Path::new(path).exists(),
        &format!("the file {path} (run scripts/setup.sh)"),
    )
}

fn check(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("LABBOOT_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: this test needs {what}");
        return false;
    }
    panic!("this test needs {what}; set LABBOOT_ALLOW_SKIP=1 to skip it on a developer machine");
}
