//! `labboot image build` on bad recipes: each fails in seconds with one line naming the
//! problem, exit status 1, and nothing written to the output directory. (The time each took is
//! printed, not asserted: tests never assert on timing.)

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use labboot_tests::binary::labboot_bin;

const GOOD_HEAD: &str = "arch: arm64\nsuite: bookworm\nepoch: 1700000000\n";

/// Runs `labboot image build` on `recipe` text; returns (status, stderr).
fn build(dir: &Path, recipe: &str) -> (i32, String) {
    let path = dir.join("recipe.yaml");
    std::fs::write(&path, recipe).unwrap();
    let started = Instant::now();
    let out = Command::new(labboot_bin())
        .args(["image", "build"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    eprintln!("failed after {:.1} s", started.elapsed().as_secs_f64());
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Progress lines ("imagebuilder: …") may precede it; the error is one line, the last.
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("imagebuilder: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected, got:\n{stderr}");
    assert!(
        stderr.lines().last() == Some(errors[0]) && errors[0].starts_with("labboot: "),
        "{stderr}"
    );
    let out_dir = dir.join("out");
    let written = std::fs::read_dir(&out_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        written,
        0,
        "a failed build left files in {}",
        out_dir.display()
    );
    (out.status.code().unwrap_or(-1), errors[0].to_string())
}

#[test]
fn bad_yaml_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = build(dir.path(), "arch: arm64\n\tsuite: bookworm\n");
    assert_eq!(code, 1);
    assert!(
        err.contains("recipe.yaml: ") && err.contains("line 2 column 1"),
        "{err}"
    );
}

#[test]
fn unknown_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = build(
        dir.path(),
        &format!("{GOOD_HEAD}packages: [busybox-static]\noutputs: [squashfs]\npakages: []\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("recipe.yaml: unknown field `pakages`"),
        "{err}"
    );
}

#[test]
fn wrong_arch_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = build(
        dir.path(),
        "arch: arm65\nsuite: bookworm\npackages: [busybox-static]\noutputs: [squashfs]\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.ends_with("recipe.yaml: arch: \"arm65\" is not one of arm64, armhf, amd64, riscv64"),
        "{err}"
    );
}

#[test]
fn missing_source_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = build(
        dir.path(),
        &format!("{GOOD_HEAD}packages: [busybox-static]\noutputs: [squashfs]\nfiles:\n  - {{path: /etc/agent, source: agent.sh}}\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("recipe.yaml: files[0].source: ") && err.contains("agent.sh: No such file"),
        "{err}"
    );
}

#[test]
fn unknown_package_is_named_by_index() {
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&foreign.stdout).contains("arm64") {
        assert!(
            std::env::var_os("LABBOOT_ALLOW_SKIP").is_some_and(|v| v == "1"),
            "this test needs the arm64 architecture in apt: run scripts/setup.sh"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = build(
        dir.path(),
        &format!(
            "{GOOD_HEAD}packages: [busybox-static, no-such-package-labboot]\noutputs: [squashfs]\n"
        ),
    );
    assert_eq!(code, 1);
    assert!(
        err.ends_with("recipe.yaml: packages[1]: apt has no package no-such-package-labboot for arm64 (or all)"),
        "{err}"
    );
}

#[test]
fn unconfigured_arch_says_how_to_add_it() {
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&foreign.stdout).contains("riscv64") {
        return; // this host fetches riscv64 packages: nothing to refuse
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = build(dir.path(), "arch: riscv64\nsuite: bookworm\nepoch: 1\npackages: [busybox-static]\noutputs: [squashfs]\n");
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "labboot: apt: architecture riscv64 is not configured: run `dpkg --add-architecture riscv64 && apt-get update` (scripts/setup.sh does)"
    );
}

#[test]
fn a_base_that_is_not_a_tarball_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rootfs.tar.gz"), b"not gzip at all").unwrap();
    let (code, err) = build(
        dir.path(),
        &format!("{GOOD_HEAD}base: rootfs.tar.gz\noutputs: [squashfs]\n"),
    );
    assert_eq!(code, 1);
    assert!(
        err.starts_with("labboot: ")
            && err.contains("recipe.yaml: base: ")
            && err.ends_with(
                "rootfs.tar.gz is neither a directory nor a tar, tar.gz, tar.xz or tar.zst file"
            ),
        "{err}"
    );
}
