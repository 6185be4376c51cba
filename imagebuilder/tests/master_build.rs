//! End to end: the shipped recipe, built twice in different directories at different times,
//! gives the same bytes; another epoch changes only what carries timestamps.
//!
//! Downloads arm64 packages through the host's apt (after `scripts/setup.sh` added the arm64
//! architecture), into a cache that survives between runs: `$LABBOOT_CACHE`, else
//! `<target>/tmp/imagebuilder-cache`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imagebuilder::build::{build, Options, Progress};
use imagebuilder::manifest::Manifest;
use imagebuilder::recipe::Recipe;

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/master-arm64.yaml")
}

fn cache() -> PathBuf {
    std::env::var_os("LABBOOT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("imagebuilder-cache"))
}

/// Fails (or skips with LABBOOT_ALLOW_SKIP=1) unless dpkg knows arm64.
fn arm64_configured() -> bool {
    let out = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|a| a == "arm64")
    {
        return true;
    }
    if std::env::var_os("LABBOOT_ALLOW_SKIP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: needs the arm64 architecture in apt (run scripts/setup.sh)");
        return false;
    }
    panic!("this test needs the arm64 architecture in apt: run scripts/setup.sh");
}

fn run(out: &Path, epoch: Option<u32>) -> Manifest {
    let recipe = Recipe::load(&recipe_path()).unwrap();
    let opts = Options {
        out: out.to_path_buf(),
        cache: cache(),
        epoch,
    };
    build(&recipe, &opts, &mut Progress::plain()).unwrap_or_else(|e| panic!("build failed: {e}"))
}

fn hashes(m: &Manifest) -> BTreeMap<String, String> {
    m.outputs
        .iter()
        .map(|o| (o.name.clone(), o.sha256.clone()))
        .collect()
}

fn listing(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn shipped_recipe_is_reproducible_and_complete() {
    if !arm64_configured() {
        return;
    }
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::Builder::new()
        .prefix("other-place")
        .tempdir()
        .unwrap();
    let first = run(a.path(), None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = run(b.path(), None);

    // Same bytes, every output, and the manifests themselves.
    assert_eq!(hashes(&first), hashes(&second));
    let names: Vec<&str> = first
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .filter(|n| !n.starts_with("dtbs/"))
        .collect();
    assert_eq!(
        names,
        [
            "boot.scr",
            "initrd.cpio.gz",
            "rootfs.ext4",
            "rootfs.squashfs",
            "rootfs.tar.gz",
            "vmlinuz"
        ]
    );
    // The kernel package's device trees, vendor folders kept, each listed in the manifest.
    let dtbs: Vec<&str> = first
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .filter(|n| n.starts_with("dtbs/"))
        .collect();
    assert!(dtbs.len() > 100, "{} dtbs", dtbs.len());
    for want in ["dtbs/arm/juno.dtb", "dtbs/broadcom/bcm2711-rpi-4-b.dtb"] {
        assert!(dtbs.contains(&want), "{want} missing: {dtbs:?}");
    }
    assert!(dtbs
        .iter()
        .all(|d| d.ends_with(".dtb") && d.matches('/').count() == 2));
    assert_eq!(
        std::fs::read(a.path().join("manifest.json")).unwrap(),
        std::fs::read(b.path().join("manifest.json")).unwrap()
    );
    for o in &first.outputs {
        let on_disk = std::fs::read(a.path().join(&o.name)).unwrap();
        assert_eq!(on_disk.len() as u64, o.size, "{}", o.name);
    }

    // Another epoch: the images change, the kernel (no timestamps of ours) does not.
    let c = tempfile::tempdir().unwrap();
    let other = run(c.path(), Some(1_600_000_000));
    let (h1, h3) = (hashes(&first), hashes(&other));
    assert_ne!(h1["rootfs.squashfs"], h3["rootfs.squashfs"]);
    assert_ne!(h1["initrd.cpio.gz"], h3["initrd.cpio.gz"]);
    assert_ne!(h1["rootfs.tar.gz"], h3["rootfs.tar.gz"]);
    assert_ne!(h1["rootfs.ext4"], h3["rootfs.ext4"]);
    assert_eq!(h1["vmlinuz"], h3["vmlinuz"]);
    assert_eq!(h1["dtbs/arm/juno.dtb"], h3["dtbs/arm/juno.dtb"]);
    assert_ne!(
        h1["boot.scr"], h3["boot.scr"],
        "the script image header carries the epoch"
    );
    assert_eq!(first.inputs, other.inputs);
    assert_eq!(other.epoch, 1_600_000_000);

    // Inputs: every package with version and apt's sha256; the agent script by hash.
    assert!(first
        .inputs
        .iter()
        .any(|i| i.name == "nbd-client" && i.role == "initrd"));
    assert!(first
        .inputs
        .iter()
        .any(|i| i.name.starts_with("linux-image-6") && i.role == "kernel"));
    assert!(first
        .inputs
        .iter()
        .all(|i| i.sha256.len() == 64 && !i.version.is_empty()));
    assert_eq!(first.files[0].path, "/usr/sbin/labboot-agent");

    // The root filesystem, as unsquashfs sees it.
    let fs = listing(
        Command::new("unsquashfs")
            .arg("-lln")
            .arg(a.path().join("rootfs.squashfs")),
    );
    for want in [
        "-rwxr-xr-x 0/0",
        "squashfs-root/usr/bin/busybox",
        "squashfs-root/usr/sbin/labboot-agent",
        "squashfs-root/usr/sbin/init -> ../bin/busybox",
        "squashfs-root/etc/inittab",
    ] {
        assert!(fs.contains(want), "{want} missing from:\n{fs}");
    }
    assert!(
        fs.lines()
            .any(|l| l.starts_with("drwxrwxrwt 0/0") && l.ends_with("squashfs-root/tmp")),
        "{fs}"
    );
    // Every time is the epoch, the root directory's too.
    assert!(
        fs.lines()
            .all(|l| !l.contains("squashfs-root") || l.contains(" 2023-11-14 22:13 ")),
        "{fs}"
    );

    // The ext4 image: clean for e2fsck, the same owners and modes as the squashfs.
    let ext4 = a.path().join("rootfs.ext4");
    listing(Command::new("e2fsck").arg("-fn").arg(&ext4));
    let root_ls = listing(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&ext4));
    let tmp = root_ls
        .lines()
        .find(|l| l.trim_end().ends_with(" tmp"))
        .unwrap_or_else(|| panic!("no /tmp in:\n{root_ls}"));
    let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words(tmp).contains(" 41777 (2) 0 0 "), "{tmp}");
    let sbin_ls = listing(
        Command::new("debugfs")
            .args(["-R", "ls -l /usr/sbin"])
            .arg(&ext4),
    );
    let agent = sbin_ls
        .lines()
        .find(|l| l.trim_end().ends_with(" labboot-agent"))
        .unwrap_or_else(|| panic!("no labboot-agent in:\n{sbin_ls}"));
    assert!(words(agent).contains(" 100755 (1) 0 0 "), "{agent}");
    assert!(agent.contains("14-Nov-2023 22:13"), "{agent}");

    // The initrd, as GNU cpio sees it.
    let cpio_in = std::fs::File::open(a.path().join("initrd.cpio.gz")).unwrap();
    let gunzip = Command::new("gzip")
        .arg("-dc")
        .stdin(cpio_in)
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("initrd.cpio");
    std::fs::write(&archive, &gunzip.stdout).unwrap();
    let list = listing(
        Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&archive),
    );
    let version = first.kernel_version.clone().unwrap();
    for want in [
        "init".to_string(),
        "usr/bin/busybox".into(),
        "usr/sbin/nbd-client".into(),
        "usr/lib/ld-linux-aarch64.so.1".into(),
        "usr/lib/aarch64-linux-gnu/libgnutls.so.30".into(),
        format!("usr/lib/modules/{version}/modules.dep"),
        format!("usr/lib/modules/{version}/kernel/drivers/block/nbd.ko"),
        format!("usr/lib/modules/{version}/kernel/fs/overlayfs/overlay.ko"),
    ] {
        assert!(
            list.lines().any(|l| l == want),
            "{want} missing from the initrd:\n{list}"
        );
    }

    // modules.dep agrees with what the real modinfo reads from the same arm64 module.
    let x = tempfile::tempdir().unwrap();
    let status = Command::new("cpio")
        .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
        .arg(&archive)
        .current_dir(x.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mods = x.path().join(format!("usr/lib/modules/{version}"));
    let dep = std::fs::read_to_string(mods.join("modules.dep")).unwrap();
    let vnet = dep
        .lines()
        .find(|l| l.starts_with("kernel/drivers/net/virtio_net.ko:"))
        .unwrap();
    let ours: Vec<String> = vnet
        .split_whitespace()
        .skip(1)
        .map(|p| {
            p.rsplit('/')
                .next()
                .unwrap()
                .trim_end_matches(".ko")
                .to_string()
        })
        .collect();
    let modinfo = ["/usr/sbin/modinfo", "/sbin/modinfo"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let modinfo = modinfo.expect("this test needs modinfo (kmod): run scripts/setup.sh");
    let theirs = listing(
        Command::new(modinfo)
            .args(["-F", "depends"])
            .arg(mods.join("kernel/drivers/net/virtio_net.ko")),
    );
    let theirs: Vec<&str> = theirs.trim().split(',').filter(|d| !d.is_empty()).collect();
    assert!(
        !theirs.is_empty(),
        "modinfo found no dependencies of virtio_net"
    );
    for d in theirs {
        assert!(
            ours.iter().any(|o| o == d),
            "modinfo says virtio_net needs {d}; modules.dep: {vnet}"
        );
    }
    assert!(ours.contains(&"failover".to_string()), "{vnet}");
    let order = std::fs::read_to_string(x.path().join("etc/labboot/modules")).unwrap();
    let pos = |m: &str| {
        order
            .lines()
            .position(|l| l.ends_with(&format!("/{m}.ko")))
            .unwrap()
    };
    assert!(
        pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"),
        "{order}"
    );
}
