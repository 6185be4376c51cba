//! The master root filesystem image, written with backhand (pinned in the workspace).
//!
//! backhand takes the tree's nodes with their own modes and owners, so no root is needed and
//! no host metadata leaks in. The superblock time and every inode time are the build epoch, the
//! root directory's mode and owner are set explicitly, and nodes are pushed in the tree's sorted
//! order; gzip is used (mksquashfs's default, and the kernel config of every Debian arch has it).

use std::io::{Cursor, Read};
use std::sync::Arc;

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use crate::error::{Error, Result};
use crate::tree::{Kind, Tree};

/// A reader over shared file bytes, so the writer can hold them without copying.
struct Shared(Cursor<Arc<Vec<u8>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.0.position() as usize;
        let data = self.0.get_ref();
        let n = buf.len().min(data.len().saturating_sub(pos));
        buf[..n].copy_from_slice(&data[pos..pos + n]);
        self.0.set_position((pos + n) as u64);
        Ok(n)
    }
}

/// The kernel's `new_encode_dev`, as squashfs stores device numbers.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Writes `tree` as a squashfs image, every time set to `mtime`.
pub fn write(tree: &Tree, mtime: u32, out: impl std::io::Write + std::io::Seek) -> Result<u64> {
    let err = |e: backhand::BackhandError| Error::step("squashfs", e.to_string());
    let mut fs = FilesystemWriter::default();
    fs.set_time(mtime);
    fs.set_root_mode(tree.root().mode as u16);
    fs.set_root_uid(tree.root().uid);
    fs.set_root_gid(tree.root().gid);
    fs.set_compressor(FilesystemCompressor::new(Compressor::Gzip, None).map_err(err)?);
    for (path, node) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        let header = NodeHeader::new(node.mode as u16, node.uid, node.gid, mtime);
        let p = format!("/{path}");
        match &node.kind {
            Kind::Dir => fs.push_dir(&p, header),
            Kind::File(data) => fs.push_file(Shared(Cursor::new(data.clone())), &p, header),
            Kind::Symlink(target) => fs.push_symlink(target.as_str(), &p, header),
            Kind::CharDev { major, minor } => {
                fs.push_char_device(encode_dev(*major, *minor), &p, header)
            }
            Kind::BlockDev { major, minor } => {
                fs.push_block_device(encode_dev(*major, *minor), &p, header)
            }
            Kind::Fifo => fs.push_fifo(&p, header),
        }
        .map_err(|e| Error::step("squashfs", format!("/{path}: {e}")))?;
    }
    let (_, size) = fs.write(out).map_err(err)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;
    use std::process::Command;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.insert("bin/busybox", Node::file(0o755, vec![7u8; 300_000]))
            .unwrap();
        t.insert("bin/sh", Node::symlink("busybox")).unwrap();
        let mut shadow = Node::file(0o640, b"root:*:1::::::\n".to_vec());
        shadow.gid = 42;
        t.insert("etc/shadow", shadow).unwrap();
        let mut null = Node::dir(0o666);
        null.kind = Kind::CharDev { major: 1, minor: 3 };
        t.insert("dev/null", null).unwrap();
        t
    }

    fn image(mtime: u32) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        write(&sample(), mtime, &mut buf).unwrap();
        buf.into_inner()
    }

    #[test]
    fn unsquashfs_lists_modes_owners_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("root.squashfs");
        std::fs::write(&img, image(1_700_000_000)).unwrap();
        let out = Command::new("unsquashfs")
            .arg("-lln")
            .arg(&img)
            .output()
            .expect("unsquashfs is needed (scripts/setup.sh installs squashfs-tools)");
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
            line("squashfs-root").starts_with("drwxr-xr-x 0/0"),
            "{text}"
        );
        assert!(
            line("squashfs-root/bin/busybox").starts_with("-rwxr-xr-x 0/0"),
            "{text}"
        );
        assert!(
            line("squashfs-root/bin/busybox").contains(" 300000 2023-11-14"),
            "{text}"
        );
        assert!(
            line("bin/sh -> busybox").starts_with("lrwxrwxrwx 0/0"),
            "{text}"
        );
        assert!(
            line("squashfs-root/etc/shadow").starts_with("-rw-r----- 0/42"),
            "{text}"
        );
        assert!(
            line("squashfs-root/dev/null").starts_with("crw-rw-rw- 0/0"),
            "{text}"
        );
        assert!(line("squashfs-root/dev/null").contains("1,  3"), "{text}");
    }

    #[test]
    fn same_tree_same_bytes_other_epoch_other_bytes() {
        assert_eq!(image(1_700_000_000), image(1_700_000_000));
        assert_ne!(image(1_700_000_000), image(1_600_000_000));
    }
}
