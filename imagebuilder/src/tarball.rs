//! `rootfs.tar.gz`: the same tree for NFS roots and LAVA's `nfsrootfs`.
//!
//! Written from the staged [`Tree`] rather than from disk so owners, modes and device nodes are
//! the recipe's and the packages' without root, with GNU headers, numeric owners only (no user
//! names from the host), every mtime the epoch and a gzip header with mtime 0.

use std::io::Write;

use crate::error::{Error, Result};
use crate::tree::{Kind, Tree};

/// Writes `tree` as a gzip'd tar: GNU headers, numeric owners, every mtime = `mtime`.
pub fn write(tree: &Tree, mtime: u32, out: impl Write) -> Result<()> {
    let err = |e: std::io::Error| Error::step("tar", e.to_string());
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (path, node) in tree.iter() {
        let mut h = tar::Header::new_gnu();
        h.set_mode(node.mode);
        h.set_uid(node.uid as u64);
        h.set_gid(node.gid as u64);
        h.set_mtime(mtime as u64);
        h.set_size(0);
        let name = if path.is_empty() { "." } else { path };
        match &node.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, format!("{name}/"), std::io::empty())
                    .map_err(err)?;
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, &data[..]).map_err(err)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, name, target).map_err(err)?;
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let t = if matches!(node.kind, Kind::CharDev { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                h.set_entry_type(t);
                h.set_device_major(*major).map_err(err)?;
                h.set_device_minor(*minor).map_err(err)?;
                b.append_data(&mut h, name, std::io::empty()).map_err(err)?;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, name, std::io::empty()).map_err(err)?;
            }
        }
    }
    b.into_inner().map_err(err)?.finish().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;
    use std::process::Command;

    #[test]
    fn gnu_tar_lists_owners_modes_links_and_devices() {
        let mut t = Tree::new();
        t.insert("usr/bin/busybox", Node::file(0o4755, b"bb".to_vec()))
            .unwrap();
        t.insert("bin", Node::symlink("usr/bin")).unwrap();
        let mut shadow = Node::file(0o640, b"root:*:1::::::\n".to_vec());
        shadow.gid = 42;
        t.insert("etc/shadow", shadow).unwrap();
        let mut null = Node::dir(0o666);
        null.kind = Kind::CharDev { major: 1, minor: 3 };
        t.insert("dev/null", null).unwrap();
        let mut a = Vec::new();
        write(&t, 1_700_000_000, &mut a).unwrap();
        let mut b = Vec::new();
        write(&t, 1_700_000_000, &mut b).unwrap();
        assert_eq!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.tar.gz");
        std::fs::write(&path, &a).unwrap();
        let out = Command::new("tar")
            .args(["-tvzf"])
            .arg(&path)
            .args(["--numeric-owner", "--full-time"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let line = |suffix: &str| {
            text.lines()
                .find(|l| l.ends_with(suffix))
                .unwrap_or_else(|| panic!("{suffix} in {text}"))
        };
        assert!(
            line(" usr/bin/busybox").starts_with("-rwsr-xr-x 0/0"),
            "{text}"
        );
        assert!(
            line(" bin -> usr/bin").starts_with("lrwxrwxrwx 0/0"),
            "{text}"
        );
        assert!(line(" etc/shadow").starts_with("-rw-r----- 0/42"), "{text}");
        assert!(line(" dev/null").starts_with("crw-rw-rw- 0/0"), "{text}");
        assert!(
            line(" etc/shadow").contains("2023-11-14 22:13:20"),
            "{text}"
        );
    }
}
