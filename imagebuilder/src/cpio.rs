//! The initramfs archive: cpio "newc", written so that the same tree gives the same bytes.
//!
//! GNU cpio would copy the host's inode numbers, owners and times; here entries come from the
//! sorted [`Tree`], inode numbers are assigned in that order, every owner is root (the initrd is
//! root's), every mtime is the build epoch, and the gzip header's mtime is 0 with no file name.

use std::io::Write;

use flate2::{Compression, GzBuilder};

use crate::tree::{Kind, Tree};

fn header(out: &mut Vec<u8>, fields: [u32; 13], name: &str) {
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The newc archive of `tree` (the root directory is left out, as the kernel's rootfs exists).
pub fn newc(tree: &Tree, mtime: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(tree.data_size() as usize + tree.len() * 128);
    let mut ino = 0u32;
    for (path, node) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        ino += 1;
        let data = node.data();
        let (rmaj, rmin) = match node.kind {
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let nlink = if node.kind == Kind::Dir { 2 } else { 1 };
        let fields = [
            ino,
            node.type_bits() | (node.mode & 0o7777),
            0,
            0,
            nlink,
            mtime,
            data.len() as u32,
            0,
            0,
            rmaj,
            rmin,
            path.len() as u32 + 1,
            0,
        ];
        header(&mut out, fields, path);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(
        &mut out,
        [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0],
        "TRAILER!!!",
    );
    out
}

/// gzip of `data` with a fixed header: mtime 0, no name, best compression.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;
    use sha2::{Digest, Sha256};
    use std::process::{Command, Stdio};

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.insert("bin/busybox", Node::file(0o755, b"\x7fELF-fake".to_vec()))
            .unwrap();
        t.insert("bin/sh", Node::symlink("busybox")).unwrap();
        t.insert("init", Node::file(0o755, b"#!/bin/sh\n".to_vec()))
            .unwrap();
        let mut con = Node::dir(0o600);
        con.kind = Kind::CharDev { major: 5, minor: 1 };
        t.insert("dev/console", con).unwrap();
        t
    }

    #[test]
    fn bytes_are_stable() {
        let a = newc(&sample(), 1_700_000_000);
        assert_eq!(a, newc(&sample(), 1_700_000_000));
        assert_eq!(a.len() % 4, 0);
        // First entry, field by field: ino 1, dir 0755, root, 2 links, mtime 0x6553F100.
        let first = concat!(
            "070701", "00000001", "000041ED", "00000000", "00000000", "00000002", "6553F100",
            "00000000", "00000000", "00000000", "00000000", "00000000", "00000004", "00000000",
            "bin\0", "\0\0"
        );
        assert_eq!(&a[..first.len()], first.as_bytes());
        assert!(a.ends_with(b"TRAILER!!!\0\0\0\0"));
        // The whole archive, pinned: a change to the writer's layout shows up here.
        let digest = crate::recipe::hex(&Sha256::digest(&a));
        assert_eq!(
            digest,
            "541fc28f2510c9bd645824844460b8ffba7921cc67ebd2d0900c6f08400fc0bf"
        );
        assert_ne!(a, newc(&sample(), 1));
        let gz = gzip(&a).unwrap();
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime must be 0");
        assert_eq!(gz[3] & 0x08, 0, "no file name in the gzip header");
        assert_eq!(gz, gzip(&a).unwrap());
    }

    #[test]
    fn gnu_cpio_lists_what_we_wrote() {
        let a = newc(&sample(), 1_700_000_000);
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio is needed (scripts/setup.sh installs it)");
        child.stdin.take().unwrap().write_all(&a).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("-rwxr-xr-x") && lines[1].contains(" root "),
            "{text}"
        );
        assert!(
            lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with("bin/sh -> busybox"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("crw-------") && lines[4].contains("5,"),
            "{text}"
        );
        assert!(text.contains("Nov 14  2023"), "{text}");
    }
}
