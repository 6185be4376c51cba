//! The master root filesystem image, written with backhand (pinned in the workspace).
//!
//! backhand takes the tree's nodes with their own modes and owners, so no root is needed and
//! no host metadata leaks in. The superblock time and every inode time are the build epoch, the
//! root directory's mode and owner are set explicitly, and nodes are pushed in the tree's sorted
//! order; gzip is used (mksquashfs's default, and the kernel config of every Debian arch has it).
//!
//! backhand 0.25.5 has no setter for the root directory's time and writes 0 there, so after
//! writing, [`set_root_mtime`] patches the root inode in the image (see its doc for how).

use std::io::{Cursor, Read, Write};
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

/// Writes `tree` as a squashfs image, every time (the root directory's included) set to
/// `mtime`; returns the image's size.
pub fn write(tree: &Tree, mtime: u32, mut out: impl Write) -> Result<u64> {
    let mut image = Cursor::new(Vec::new());
    write_backhand(tree, mtime, &mut image)?;
    let mut image = image.into_inner();
    set_root_mtime(&mut image, mtime)?;
    out.write_all(&image)
        .and_then(|()| out.flush())
        .map_err(|e| Error::step("squashfs", e.to_string()))?;
    Ok(image.len() as u64)
}

fn write_backhand(
    tree: &Tree,
    mtime: u32,
    out: impl std::io::Write + std::io::Seek,
) -> Result<u64> {
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

/// Size of a squashfs metadata block's payload.
const METADATA_BLOCK: usize = 8192;
/// Header bit of a metadata block stored uncompressed.
const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// "No such table" in a superblock table pointer.
const NO_TABLE: u64 = u64::MAX;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Sets the root directory inode's mtime in a gzip squashfs 4.0 image written by backhand.
///
/// Layout (squashfs 4.0, little endian): the superblock holds `root_inode` at byte 32 (metadata
/// block offset from the inode table << 16 | offset in that block's payload), `bytes_used` at
/// 40 and the table positions `id` 48, `xattr` 56, `inode` 64, `directory` 72, `fragment` 80,
/// `export` 88. The inode table is a run of metadata blocks (a 2-byte header: payload length,
/// bit 15 = stored uncompressed; payload at most 8 KiB) and an inode starts with type (u16),
/// mode, uid index, gid index (u16 each) and `mtime` (u32) at byte 8.
///
/// backhand writes the root inode last, so only the metadata blocks from the root's onwards
/// are decompressed, patched and recompressed; everything after them (directory, fragment,
/// export and id tables) moves by the change in length, and every absolute pointer to it (the
/// superblock's and those in the lookup-table indexes) moves with it. References *into* the
/// inode and directory tables are relative to their starts and do not change. Anything this
/// does not expect (another compressor, an xattr table, a root inode that is not the last one)
/// is an error rather than a guess.
pub fn set_root_mtime(img: &mut Vec<u8>, mtime: u32) -> Result<()> {
    let bad = |m: &str| {
        Error::step(
            "squashfs",
            format!("setting the root directory's time: {m}"),
        )
    };
    if img.len() < 96 || &img[0..4] != b"hsqs" || le16(img, 28) != 4 {
        return Err(bad("not a squashfs 4.0 image"));
    }
    if le16(img, 20) != 1 {
        return Err(bad("only gzip images are handled"));
    }
    if le64(img, 56) != NO_TABLE {
        return Err(bad("images with an xattr table are not handled"));
    }
    let root_ref = le64(img, 32);
    let (root_block, root_offset) = ((root_ref >> 16) as usize, (root_ref & 0xffff) as usize);
    let bytes_used = le64(img, 40) as usize;
    let inode_table = le64(img, 64) as usize;
    let dir_table = le64(img, 72) as usize;
    if !(inode_table < dir_table && dir_table <= bytes_used && bytes_used <= img.len()) {
        return Err(bad("table positions out of order"));
    }
    // Walk the inode table's metadata blocks to the one holding the root inode.
    let first = inode_table + root_block;
    let mut pos = inode_table;
    while pos < first {
        let header = le16(img, pos);
        pos += 2 + usize::from(header & !METADATA_UNCOMPRESSED);
    }
    if pos != first {
        return Err(bad("the root inode reference is not on a metadata block"));
    }
    let mut payload = Vec::new();
    while pos < dir_table {
        if pos + 2 > dir_table {
            return Err(bad("truncated metadata block header"));
        }
        let header = le16(img, pos);
        let len = usize::from(header & !METADATA_UNCOMPRESSED);
        let data = img
            .get(pos + 2..pos + 2 + len)
            .filter(|_| pos + 2 + len <= dir_table)
            .ok_or_else(|| bad("metadata block runs past the inode table"))?;
        if header & METADATA_UNCOMPRESSED != 0 {
            payload.extend_from_slice(data);
        } else {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut payload)
                .map_err(|e| bad(&format!("inode table block: {e}")))?;
        }
        pos += 2 + len;
    }
    // The root must be a directory inode, and the last inode of the table.
    let kind = payload
        .get(root_offset..root_offset + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("root inode offset past the table"))?;
    let size = match kind {
        1 => 32,
        8 => {
            let index_count = payload
                .get(root_offset + 24..root_offset + 26)
                .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                .ok_or_else(|| bad("truncated root inode"))?;
            let mut end = root_offset + 40;
            for _ in 0..index_count {
                let name_size = payload
                    .get(end + 8..end + 12)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .ok_or_else(|| bad("truncated root inode index"))?;
                end += 12 + name_size + 1;
            }
            end - root_offset
        }
        _ => {
            return Err(bad(&format!(
                "the root inode has type {kind}, not a directory"
            )))
        }
    };
    if root_offset + size != payload.len() {
        return Err(bad("the root inode is not the last inode of the table"));
    }
    payload[root_offset + 8..root_offset + 12].copy_from_slice(&mtime.to_le_bytes());

    let mut blocks = Vec::new();
    for chunk in payload.chunks(METADATA_BLOCK) {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(chunk)
            .map_err(|e| bad(&format!("compressing: {e}")))?;
        let packed = z.finish().map_err(|e| bad(&format!("compressing: {e}")))?;
        if packed.len() < chunk.len() {
            blocks.extend_from_slice(&(packed.len() as u16).to_le_bytes());
            blocks.extend_from_slice(&packed);
        } else {
            blocks.extend_from_slice(&(chunk.len() as u16 | METADATA_UNCOMPRESSED).to_le_bytes());
            blocks.extend_from_slice(chunk);
        }
    }
    let delta = blocks.len() as i64 - (dir_table - first) as i64;
    let shift = |v: u64| -> u64 {
        if v != NO_TABLE && v as usize >= dir_table {
            (v as i64 + delta) as u64
        } else {
            v
        }
    };
    let mut out = Vec::with_capacity(img.len() + blocks.len());
    out.extend_from_slice(&img[..first]);
    out.extend_from_slice(&blocks);
    out.extend_from_slice(&img[dir_table..bytes_used]);
    let new_used = out.len();
    // Superblock pointers, then the lookup tables' indexes (each an array of u64 positions).
    for at in [48, 72, 80, 88] {
        let v = le64(&out, at);
        put64(&mut out, at, shift(v));
    }
    put64(&mut out, 40, new_used as u64);
    let frag_count = le32(&out, 16) as usize;
    let id_count = usize::from(le16(&out, 26));
    let inode_count = le32(&out, 4) as usize;
    let tables = [
        (80, frag_count * 16),
        (48, id_count * 4),
        (88, inode_count * 8),
    ];
    for (at, table_bytes) in tables {
        let index = le64(&out, at);
        if index == NO_TABLE || table_bytes == 0 {
            continue;
        }
        let entries = table_bytes.div_ceil(METADATA_BLOCK);
        let index = index as usize;
        if index + entries * 8 > new_used {
            return Err(bad("a lookup table index runs past the image"));
        }
        for i in 0..entries {
            let v = le64(&out, index + i * 8);
            put64(&mut out, index + i * 8, shift(v));
        }
    }
    // backhand's padding: to the next multiple of 4 KiB past the end (a whole page if aligned).
    let padded = (new_used / 4096 + 1) * 4096;
    out.resize(padded, 0);
    *img = out;
    Ok(())
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
        // The root directory too carries the epoch (backhand alone writes 1970-01-01).
        assert!(
            line("squashfs-root").contains(" 2023-11-14 22:13 squashfs-root"),
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
    fn root_mtime_patch_keeps_every_table_readable() {
        // Enough entries for several inode and directory metadata blocks, many owners, and a
        // root directory large enough to get an extended inode with an index.
        let mut t = sample();
        for i in 0..3000 {
            let mut n = Node::file(0o644, format!("file {i}\n").into_bytes());
            n.uid = i % 40;
            t.insert(&format!("many-entries-in-the-root-{i:05}"), n)
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("big.squashfs");
        let mut buf = Vec::new();
        write(&t, 1_700_000_000, &mut buf).unwrap();
        assert_eq!(buf.len() % 4096, 0);
        std::fs::write(&img, &buf).unwrap();
        let stat = Command::new("unsquashfs")
            .arg("-stat")
            .arg(&img)
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&stat.stdout).into_owned();
        assert!(stat.contains("Number of inodes 3008"), "{stat}");
        let out = Command::new("unsquashfs")
            .args(["-lln", "-d", "r"])
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = text.lines().find(|l| l.ends_with(" r")).unwrap();
        assert!(root.contains(" 2023-11-14 22:13 r"), "{root}");
        let last = text
            .lines()
            .find(|l| l.ends_with("r/many-entries-in-the-root-02999"))
            .unwrap();
        assert!(last.starts_with("-rw-r--r-- 39/0 "), "{last}");
        // Extracting reads every table and every file's data.
        let x = dir.path().join("x");
        let out = Command::new("unsquashfs")
            .args(["-n", "-d"])
            .arg(&x)
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(x.join("many-entries-in-the-root-01234")).unwrap(),
            b"file 1234\n"
        );
    }

    #[test]
    fn root_mtime_patch_refuses_what_it_does_not_know() {
        let mut junk = vec![0u8; 200];
        assert!(set_root_mtime(&mut junk, 1)
            .unwrap_err()
            .to_string()
            .contains("not a squashfs 4.0"));
        let mut img = image(1);
        img[20] = 4; // xz
        assert!(set_root_mtime(&mut img, 1)
            .unwrap_err()
            .to_string()
            .contains("only gzip"));
    }

    #[test]
    fn same_tree_same_bytes_other_epoch_other_bytes() {
        assert_eq!(image(1_700_000_000), image(1_700_000_000));
        assert_ne!(image(1_700_000_000), image(1_600_000_000));
    }
}
