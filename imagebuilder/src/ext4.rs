//! `rootfs.ext4`: the staged tree as an ext4 image, made by e2fsprogs without root.
//!
//! `mke2fs -d DIR` copies a directory into a new filesystem, taking owners, modes and times
//! from what it finds on disk, and it needs device nodes to exist on disk. An unprivileged
//! build can do neither faithfully, so the image is made in two steps:
//!
//! 1. the tree's directories, files and symlinks are written to a scratch directory (files
//!    0644, directories 0755, so that mke2fs can read them whoever runs the build) and
//!    `mke2fs -t ext4 -d` packs it;
//! 2. one `debugfs -w` run then creates the device nodes and FIFOs and sets every inode's
//!    mode, owner and four times (`set_inode_field`) to the tree's values and the epoch.
//!
//! What makes the bytes reproducible: the UUID and the directory hash seed are derived from
//! the recipe's sha256; `E2FSPROGS_FAKE_TIME` gives the superblock and lost+found the epoch;
//! a private `MKE2FS_CONFIG` fixes features, block size, inode size and ratio (the host's
//! `/etc/mke2fs.conf` is not read); `LC_ALL=C` makes mke2fs's `scandir`/`alphasort` order
//! bytewise, so inode numbers follow the tree's order whatever the host's directory order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::recipe::Ext4Spec;
use crate::tree::{Kind, Tree};

/// The features, sizes and ratios of every labboot ext4 image (an `mke2fs.conf`).
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 0
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tlabboot = {
\t}
";

/// A UUID (RFC 4122 variant, version 8: "custom") from sha256(`what` ‖ `recipe_sha256`).
pub fn derived_uuid(what: &str, recipe_sha256: &str) -> String {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    h.update(b":");
    h.update(recipe_sha256.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The image size when the recipe gives none: the tree's blocks plus a quarter, the journal
/// and some room, rounded up to a MiB.
pub fn auto_size(tree: &Tree) -> u64 {
    let mut blocks: u64 = 0;
    for (_, node) in tree.iter() {
        blocks += match &node.kind {
            Kind::File(d) => (d.len() as u64).div_ceil(4096),
            Kind::Dir => 1,
            Kind::Symlink(t) if t.len() >= 60 => 1,
            _ => 0,
        };
    }
    let bytes = blocks * 4096 + blocks * 1024 + (tree.len() as u64) * 256 + (24 << 20);
    bytes.div_ceil(1 << 20) << 20
}

/// A path as a debugfs argument (double-quoted); paths debugfs cannot quote are refused.
/// A backslash is taken literally inside debugfs's quotes (systemd's unit names have them:
/// `system-systemd\x2dcryptsetup.slice`).
fn quoted(path: &str) -> Result<String> {
    if path.contains(['"', '\n']) {
        return Err(Error::step(
            "ext4",
            format!("/{path}: debugfs cannot name a path with '\"' or a newline"),
        ));
    }
    Ok(format!("\"/{path}\""))
}

/// The debugfs commands that create the special files and set every inode's mode, owner and
/// times.
fn fixups(tree: &Tree, epoch: u32) -> Result<String> {
    let mut cmds = String::new();
    for (path, node) in tree.iter() {
        let special = match &node.kind {
            Kind::CharDev { major, minor } => Some(format!("c {major} {minor}")),
            Kind::BlockDev { major, minor } => Some(format!("b {major} {minor}")),
            Kind::Fifo => Some("p".to_string()),
            _ => None,
        };
        if let Some(how) = special {
            // debugfs's mknod takes a name in the current directory, not a path.
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if name.contains([' ', '"', '\n', '\\']) {
                return Err(Error::step(
                    "ext4",
                    format!("/{path}: debugfs cannot create a node with this name"),
                ));
            }
            cmds.push_str(&format!("cd {}\nmknod {name} {how}\ncd /\n", quoted(dir)?));
        }
        let p = quoted(path)?;
        let mode = node.type_bits() | node.mode;
        cmds.push_str(&format!(
            "sif {p} mode 0{mode:o}\nsif {p} uid {}\nsif {p} gid {}\n",
            node.uid, node.gid
        ));
        for field in ["atime", "ctime", "mtime", "crtime"] {
            cmds.push_str(&format!("sif {p} {field} @{epoch}\n"));
        }
    }
    Ok(cmds)
}

/// Writes the tree's directories, files and symlinks under `dir` (which must not exist).
fn stage(tree: &Tree, dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| Error::io(dir, e))?;
    for (path, node) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        let full = dir.join(path);
        match &node.kind {
            Kind::Dir => std::fs::create_dir(&full).map_err(|e| Error::io(&full, e))?,
            Kind::File(data) => {
                std::fs::write(&full, &data[..]).map_err(|e| Error::io(&full, e))?
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &full).map_err(|e| Error::io(&full, e))?
            }
            // Created by debugfs afterwards: mknod needs privileges.
            Kind::CharDev { .. } | Kind::BlockDev { .. } | Kind::Fifo => {}
        }
    }
    Ok(())
}

fn run(cmd: &mut Command, tool: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        Error::step(
            "ext4",
            format!("cannot run {tool} (e2fsprogs; scripts/setup.sh installs it): {e}"),
        )
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(Error::step(
            "ext4",
            format!("{tool} failed ({}): {line}", out.status),
        ));
    }
    Ok(stderr)
}

/// Writes `tree` as an ext4 image at `image` (replaced if it exists), using `scratch` (a
/// directory that must not exist; removed afterwards) for the staged copy.
///
/// `recipe_sha256` seeds the UUID and the hash seed; every time is `epoch`.
pub fn write(
    tree: &Tree,
    epoch: u32,
    spec: &Ext4Spec,
    recipe_sha256: &str,
    scratch: &Path,
    image: &Path,
) -> Result<()> {
    let result = write_in(tree, epoch, spec, recipe_sha256, scratch, image);
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn write_in(
    tree: &Tree,
    epoch: u32,
    spec: &Ext4Spec,
    recipe_sha256: &str,
    scratch: &Path,
    image: &Path,
) -> Result<()> {
    std::fs::create_dir(scratch).map_err(|e| Error::io(scratch, e))?;
    let root: PathBuf = scratch.join("root");
    stage(tree, &root)?;
    let conf = scratch.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(|e| Error::io(&conf, e))?;
    let size = spec.size.unwrap_or_else(|| auto_size(tree));
    // Inodes for the tree and a quarter more; a recipe that sets a size (a root that is
    // written to, like the appliance VM's) gets mke2fs's usual one per 16 KiB if that is more.
    let inodes = ((tree.len() as u64 + 16) * 5 / 4 + 64).max(spec.size.unwrap_or(0) / 16384);
    let _ = std::fs::remove_file(image);
    let uuid = derived_uuid("ext4-uuid", recipe_sha256);
    let seed = derived_uuid("ext4-hash-seed", recipe_sha256);
    let env = |c: &mut Command| {
        c.env("LC_ALL", "C")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .env("MKE2FS_CONFIG", &conf)
            .env_remove("MKE2FS_SYNC")
            .env_remove("MKE2FS_DEVICE_SECTSIZE")
            .env_remove("MKE2FS_DEVICE_PHYS_SECTSIZE")
            .env_remove("MKE2FS_FIRST_META_BG")
            .env_remove("E2FSPROGS_LIBMAGIC_SUPPRESS");
    };
    let mut mke2fs = Command::new("mke2fs");
    env(&mut mke2fs);
    mke2fs
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-T",
            "labboot",
            "-L",
            "labboot-root",
        ])
        .arg("-d")
        .arg(&root)
        .args(["-U", &uuid, "-N", &inodes.to_string()])
        .arg("-E")
        .arg(format!("hash_seed={seed},root_owner=0:0,nodiscard"))
        .arg(image)
        .arg(format!("{}k", size / 1024));
    run(&mut mke2fs, "mke2fs")?;

    let cmds_path = scratch.join("debugfs.cmds");
    let mut f = std::fs::File::create(&cmds_path).map_err(|e| Error::io(&cmds_path, e))?;
    f.write_all(fixups(tree, epoch)?.as_bytes())
        .map_err(|e| Error::io(&cmds_path, e))?;
    drop(f);
    let mut debugfs = Command::new("debugfs");
    env(&mut debugfs);
    debugfs.arg("-w").arg("-f").arg(&cmds_path).arg(image);
    let stderr = run(&mut debugfs, "debugfs")?;
    // debugfs reports a failed command on stderr and still exits 0.
    if let Some(line) = stderr
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
    {
        return Err(Error::step("ext4", format!("debugfs: {line}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.insert("usr/bin/busybox", Node::file(0o4755, vec![7u8; 100_000]))
            .unwrap();
        t.insert("bin", Node::symlink("usr/bin")).unwrap();
        let mut shadow = Node::file(0o640, b"root:*:1::::::\n".to_vec());
        shadow.gid = 42;
        t.insert("etc/shadow", shadow).unwrap();
        let mut home = Node::dir(0o700);
        home.uid = 70000;
        home.gid = 70001;
        t.insert("home/user", home).unwrap();
        let mut null = Node::dir(0o666);
        null.kind = Kind::CharDev { major: 1, minor: 3 };
        t.insert("dev/null", null).unwrap();
        let mut fifo = Node::dir(0o600);
        fifo.kind = Kind::Fifo;
        t.insert("run/initctl", fifo).unwrap();
        t.insert("tmp", Node::dir(0o1777)).unwrap();
        t
    }

    fn build(dir: &Path, name: &str, epoch: u32) -> Vec<u8> {
        let img = dir.join(name);
        write(
            &sample(),
            epoch,
            &Ext4Spec::default(),
            "00ff",
            &dir.join(format!("{name}.scratch")),
            &img,
        )
        .unwrap();
        assert!(!dir.join(format!("{name}.scratch")).exists());
        std::fs::read(img).unwrap()
    }

    fn tool(cmd: &mut Command) -> String {
        let out = cmd
            .output()
            .expect("e2fsprogs is needed (scripts/setup.sh)");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn two_builds_same_bytes_clean_fsck_and_the_trees_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let a = build(dir.path(), "a.ext4", 1_700_000_000);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = build(dir.path(), "b.ext4", 1_700_000_000);
        assert!(a == b, "two builds differ");
        assert!(a != build(dir.path(), "c.ext4", 1_600_000_000));
        let img = dir.path().join("a.ext4");
        tool(Command::new("e2fsck").arg("-fn").arg(&img));
        let ls = |p: &str| {
            tool(
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("ls -l {p}"))
                    .arg(&img),
            )
        };
        let line = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.trim_end().ends_with(&format!(" {name}")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let usr_bin = ls("/usr/bin");
        assert!(line(&usr_bin, "busybox").contains(" 104755 (1) 0 0 100000 14-Nov-2023 22:13"));
        let root = ls("/");
        assert!(
            line(&root, "bin").contains(" 120777 (7) 0 0 7 14-Nov-2023"),
            "{root}"
        );
        assert!(line(&root, "tmp").contains(" 41777 (2) 0 0 "), "{root}");
        assert!(line(&root, ".").contains(" 40755 (2) 0 0 "), "{root}");
        assert!(line(&ls("/etc"), "shadow").contains(" 100640 (1) 0 42 "));
        assert!(line(&ls("/home"), "user").contains(" 40700 (2) 70000 70001 "));
        assert!(line(&ls("/dev"), "null").contains(" 20666 (3) 0 0 "));
        assert!(line(&ls("/run"), "initctl").contains(" 10600 (5) 0 0 "));
        let stat = tool(
            Command::new("debugfs")
                .arg("-R")
                .arg("stat /usr/bin/busybox")
                .arg(&img),
        );
        for t in ["ctime", "atime", "mtime", "crtime"] {
            assert!(
                stat.contains(&format!("{t}: 0x6553f100:00000000")),
                "{t}: {stat}"
            );
        }
        let sb = tool(Command::new("dumpe2fs").arg("-h").arg(&img));
        let uuid = derived_uuid("ext4-uuid", "00ff");
        assert!(
            sb.contains(&format!("Filesystem UUID:          {uuid}")),
            "{sb}"
        );
        assert!(
            sb.contains("Filesystem created:       Tue Nov 14 22:13:20 2023"),
            "{sb}"
        );
    }

    #[test]
    fn uuids_are_rfc4122_and_differ_by_purpose() {
        let u = derived_uuid("ext4-uuid", "abc");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, derived_uuid("ext4-hash-seed", "abc"));
    }

    #[test]
    fn a_too_small_size_is_mke2fs_s_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(
            &sample(),
            1,
            &Ext4Spec {
                size: Some(4 << 20),
            },
            "00",
            &dir.path().join("s"),
            &dir.path().join("x.ext4"),
        );
        // 4 MiB holds the sample (mke2fs needs no journal that small): the call succeeds...
        assert!(e.is_ok(), "{e:?}");
        let mut big = sample();
        big.insert("big", Node::file(0o644, vec![1u8; 8 << 20]))
            .unwrap();
        // ...and one 8 MiB file does not fit.
        let e = write(
            &big,
            1,
            &Ext4Spec {
                size: Some(4 << 20),
            },
            "00",
            &dir.path().join("s"),
            &dir.path().join("x.ext4"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("ext4: mke2fs failed"), "{e}");
        assert!(!dir.path().join("s").exists());
    }
}
