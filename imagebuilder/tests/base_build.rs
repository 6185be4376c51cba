//! A recipe's `base`: a GNU tar tarball under a package (busybox-static, fetched through the
//! host's apt like master_build.rs does), and a directory on its own (no apt at all). The images
//! carry the tarball's owners and modes, the directory's modes with the recipe's owner, the
//! epoch as every time, and two builds give the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagebuilder::build::{build, Options, Progress};
use imagebuilder::manifest::Manifest;
use imagebuilder::recipe::Recipe;

fn cache() -> PathBuf {
    std::env::var_os("LABBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("imagebuilder-cache"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line<'a>(text: &'a str, suffix: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_end().ends_with(suffix))
        .unwrap_or_else(|| panic!("{suffix} missing from:\n{text}"))
}

/// A small root filesystem on disk: a setuid tool, a user's home, a sticky /tmp.
fn sample_root(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in ["etc", "home/ann", "tmp", "usr/local/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/motd"), "from the base\n").unwrap();
    std::fs::write(root.join("home/ann/notes"), "ann's\n").unwrap();
    std::fs::write(root.join("usr/local/bin/tool"), "#!/bin/sh\n").unwrap();
    for (p, m) in [
        ("usr/local/bin/tool", 0o4755),
        ("home/ann", 0o700),
        ("tmp", 0o1777),
    ] {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn build_into(recipe_path: &Path, out: &Path) -> Manifest {
    let recipe = Recipe::load(recipe_path).unwrap_or_else(|e| panic!("{e}"));
    let opts = Options::new(out.to_path_buf(), cache());
    build(&recipe, &opts, &mut Progress::plain()).unwrap_or_else(|e| panic!("build failed: {e}"))
}

#[test]
fn a_tarball_base_under_a_package_keeps_its_owners() {
    let arch = run_ok(Command::new("dpkg").arg("--print-foreign-architectures"));
    if !arch.split_whitespace().any(|a| a == "arm64") {
        assert!(
            std::env::var_os("LABBOOT_ALLOW_SKIP").is_some_and(|v| v == "1"),
            "this test needs the arm64 architecture in apt: run scripts/setup.sh"
        );
        eprintln!("SKIPPED: needs the arm64 architecture in apt");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sample_root(&src);
    // GNU tar, root-owned except /home/ann (1000:1000), host timestamps left as they are.
    let tar = dir.path().join("base.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .args(["--owner=0", "--group=0", "--exclude=./home/ann", "-C"])
            .arg(&src)
            .arg("."),
    );
    run_ok(
        Command::new("tar")
            .arg("-rf")
            .arg(&tar)
            .args(["--owner=1000", "--group=1000", "-C"])
            .arg(&src)
            .arg("./home/ann"),
    );
    run_ok(Command::new("zstd").args(["-q", "--rm"]).arg(&tar));
    let recipe = dir.path().join("recipe.yaml");
    std::fs::write(
        &recipe,
        "arch: arm64\nsuite: bookworm\nepoch: 1700000000\nbase: base.tar.zst\n\
         packages: [busybox-static]\noutputs: [squashfs, tar, ext4]\n",
    )
    .unwrap();
    let a = build_into(&recipe, &dir.path().join("a"));
    let b = build_into(&recipe, &dir.path().join("b"));
    assert_eq!(a.outputs, b.outputs, "two builds differ");
    let base = a.base.as_ref().expect("the manifest records the base");
    assert_eq!(
        (base.path.as_str(), base.kind.as_str()),
        ("base.tar.zst", "tar.zst")
    );
    assert_eq!(base.sha256.as_ref().map(String::len), Some(64));

    let fs = run_ok(
        Command::new("unsquashfs")
            .arg("-lln")
            .arg(dir.path().join("a/rootfs.squashfs")),
    );
    assert!(line(&fs, "squashfs-root/home/ann").starts_with("drwx------ 1000/1000"));
    assert!(line(&fs, "squashfs-root/home/ann/notes").starts_with("-rw-r--r-- 1000/1000"));
    assert!(line(&fs, "squashfs-root/usr/local/bin/tool").starts_with("-rwsr-xr-x 0/0"));
    assert!(line(&fs, "squashfs-root/tmp").starts_with("drwxrwxrwt 0/0"));
    // The package went on top, in the base's layout (no merged-/usr links are added).
    assert!(line(&fs, "squashfs-root/bin/busybox").starts_with("-rwxr-xr-x 0/0"));
    assert!(
        fs.lines()
            .all(|l| !l.contains("squashfs-root") || l.contains(" 2023-11-14 22:13 ")),
        "a time other than the epoch:\n{fs}"
    );
    let tar_list = run_ok(
        Command::new("tar")
            .args(["-tvzf"])
            .arg(dir.path().join("a/rootfs.tar.gz"))
            .args(["--numeric-owner", "--full-time"]),
    );
    assert!(line(&tar_list, " home/ann/").starts_with("drwx------ 1000/1000"));
    let ext4 = dir.path().join("a/rootfs.ext4");
    run_ok(Command::new("e2fsck").arg("-fn").arg(&ext4));
    let ls = run_ok(
        Command::new("debugfs")
            .args(["-R", "ls -l /home"])
            .arg(&ext4),
    );
    let ann = line(&ls, " ann")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(ann.contains(" 40700 (2) 1000 1000 "), "{ann}");
}

#[test]
fn a_directory_base_alone_takes_modes_from_disk_and_the_recipes_owner() {
    let dir = tempfile::tempdir().unwrap();
    sample_root(&dir.path().join("tree"));
    let recipe = dir.path().join("recipe.yaml");
    std::fs::write(
        &recipe,
        "arch: arm64\nsuite: bookworm\nepoch: 1700000000\nbase: {path: tree, gid: 50}\n\
         files:\n  - {path: /etc/hostname, content: \"b1\\n\"}\noutputs: [squashfs]\n",
    )
    .unwrap();
    let m = build_into(&recipe, &dir.path().join("out"));
    assert!(m.inputs.is_empty(), "no package was needed: {:?}", m.inputs);
    assert_eq!(m.base.as_ref().map(|b| b.entries), Some(10));
    let fs = run_ok(
        Command::new("unsquashfs")
            .arg("-lln")
            .arg(dir.path().join("out/rootfs.squashfs")),
    );
    assert!(line(&fs, "squashfs-root/home/ann").starts_with("drwx------ 0/50"));
    assert!(line(&fs, "squashfs-root/usr/local/bin/tool").starts_with("-rwsr-xr-x 0/50"));
    assert!(line(&fs, "squashfs-root/tmp").starts_with("drwxrwxrwt 0/50"));
    // Recipe files keep their own owner (root by default) over the base's rule.
    assert!(line(&fs, "squashfs-root/etc/hostname").starts_with("-rw-r--r-- 0/0"));
}
