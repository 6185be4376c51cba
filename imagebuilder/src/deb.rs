//! Unpacking Debian packages without dpkg: ar, then `data.tar.{xz,zst,gz}`, into a [`Tree`].
//!
//! Like mmdebstrap's `extract` variant, only the payload is unpacked and no maintainer script
//! runs (they would need the target's CPU). Modes, symlinks, hard links and owners are kept
//! exactly as the archive records them, which a non-root unpack to disk could not do. The
//! visitor form ([`visit`]) lets the kernel package be scanned without holding its hundreds of
//! megabytes of modules in memory.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tree::{normalize, Kind, Node, Tree};

/// One member of a package's data archive.
pub struct Entry<'a> {
    /// Normalised path (no leading `./`).
    pub path: String,
    /// Node kind; files carry no data here (read it from `reader`), hard links are [`Link::Hard`].
    pub link: Link,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The member's content (regular files only).
    pub reader: &'a mut dyn Read,
}

/// The type of an archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink(String),
    /// A hard link to an earlier member (normalised path).
    Hard(String),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A FIFO.
    Fifo,
}

fn bad(deb: &Path, msg: impl std::fmt::Display) -> Error {
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Error::package(&name, msg.to_string())
}

/// The decompressed tar stream of ar member `name` when it is `stem` (`data.tar`,
/// `control.tar`) with no compression, xz, gzip or zstd; `None` for any other member.
fn tar_member<'a>(
    deb: &Path,
    stem: &str,
    name: &str,
    member: impl Read + 'a,
) -> Result<Option<Box<dyn Read + 'a>>> {
    let Some(suffix) = name.strip_prefix(stem) else {
        return Ok(None);
    };
    Ok(Some(match suffix {
        "" => Box::new(member),
        ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
        ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
        ".zst" => Box::new(
            ruzstd::decoding::StreamingDecoder::new(member)
                .map_err(|e| bad(deb, format!("{name}: {e}")))?,
        ),
        _ => return Err(bad(deb, format!("unsupported payload {name}"))),
    }))
}

/// Calls `f` for every member of `deb`'s `data.tar.*`, in archive order.
pub fn visit(deb: &Path, mut f: impl FnMut(Entry<'_>) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(deb).map_err(|e| Error::io(deb, e))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(member) = ar.next_entry() {
        let member = member.map_err(|e| bad(deb, format!("not an ar archive: {e}")))?;
        let name = String::from_utf8_lossy(member.header().identifier()).to_string();
        let Some(reader) = tar_member(deb, "data.tar", &name, member)? else {
            continue;
        };
        let label = name.clone();
        visit_tar(reader, |m| bad(deb, format!("{label}: {m}")), &mut f)?;
        return Ok(());
    }
    Err(bad(deb, "no data.tar member"))
}

/// The `control` file of `deb`'s `control.tar.*` (its fields, as `dpkg-deb -f` shows them).
pub fn control(deb: &Path) -> Result<String> {
    let file = std::fs::File::open(deb).map_err(|e| Error::io(deb, e))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(member) = ar.next_entry() {
        let member = member.map_err(|e| bad(deb, format!("not an ar archive: {e}")))?;
        let name = String::from_utf8_lossy(member.header().identifier()).to_string();
        let Some(reader) = tar_member(deb, "control.tar", &name, member)? else {
            continue;
        };
        let mut text = None;
        let label = name.clone();
        visit_tar(
            reader,
            |m| bad(deb, format!("{label}: {m}")),
            |e| {
                if e.path == "control" && e.link == Link::File {
                    let mut s = String::new();
                    e.reader
                        .read_to_string(&mut s)
                        .map_err(|err| bad(deb, format!("{label}: control: {err}")))?;
                    text = Some(s);
                }
                Ok(())
            },
        )?;
        return text.ok_or_else(|| bad(deb, format!("{name} has no control file")));
    }
    Err(bad(deb, "no control.tar member"))
}

/// Calls `f` for every member of the tar stream `reader`, in archive order; `bad` turns a
/// message (which names the member where there is one) into the caller's error.
///
/// PAX and GNU long-name records are applied to the member they describe; global PAX headers
/// are skipped; sockets and other types are refused.
pub fn visit_tar(
    reader: impl Read,
    bad: impl Fn(String) -> Error,
    mut f: impl FnMut(Entry<'_>) -> Result<()>,
) -> Result<()> {
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let header = entry.header().clone();
        if header.entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let raw_path = entry.path().map_err(|e| bad(e.to_string()))?;
        let path = normalize(&raw_path.to_string_lossy()).map_err(|e| bad(e.to_string()))?;
        let link_target = || -> Result<String> {
            let l = header
                .link_name()
                .map_err(|e| bad(format!("{path}: {e}")))?
                .ok_or_else(|| bad(format!("{path}: link without target")))?;
            Ok(l.to_string_lossy().to_string())
        };
        let dev = || {
            (
                header.device_major().ok().flatten().unwrap_or(0),
                header.device_minor().ok().flatten().unwrap_or(0),
            )
        };
        let link = match header.entry_type() {
            tar::EntryType::Directory => Link::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => Link::File,
            tar::EntryType::Symlink => Link::Symlink(link_target()?),
            tar::EntryType::Link => {
                Link::Hard(normalize(&link_target()?).map_err(|e| bad(format!("{path}: {e}")))?)
            }
            tar::EntryType::Char => Link::Char(dev().0, dev().1),
            tar::EntryType::Block => Link::Block(dev().0, dev().1),
            tar::EntryType::Fifo => Link::Fifo,
            other => return Err(bad(format!("{path}: unsupported tar entry {other:?}"))),
        };
        let mode = header.mode().map_err(|e| bad(format!("{path}: {e}")))? & 0o7777;
        let uid = header.uid().map_err(|e| bad(format!("{path}: {e}")))?;
        let gid = header.gid().map_err(|e| bad(format!("{path}: {e}")))?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(bad(format!(
                "{path}: owner {uid}:{gid} does not fit 32 bits"
            )));
        };
        f(Entry {
            path,
            link,
            mode,
            uid,
            gid,
            reader: &mut entry,
        })?;
    }
    Ok(())
}

/// Stores one archive member in `tree` (a hard link shares its target's data); `bad` makes
/// the caller's error from a message naming the member.
pub fn insert_entry(tree: &mut Tree, e: Entry<'_>, bad: impl Fn(String) -> Error) -> Result<()> {
    let kind = match e.link {
        Link::Dir => Kind::Dir,
        Link::File => {
            let mut data = Vec::new();
            e.reader
                .read_to_end(&mut data)
                .map_err(|err| bad(format!("{}: {err}", e.path)))?;
            Kind::File(std::sync::Arc::new(data))
        }
        Link::Symlink(t) => Kind::Symlink(t),
        Link::Hard(target) => match tree.follow(&target) {
            Some((
                _,
                n @ Node {
                    kind: Kind::File(_),
                    ..
                },
            )) => n.kind.clone(),
            _ => return Err(bad(format!("{}: hard link to missing /{target}", e.path))),
        },
        Link::Char(major, minor) => Kind::CharDev { major, minor },
        Link::Block(major, minor) => Kind::BlockDev { major, minor },
        Link::Fifo => Kind::Fifo,
    };
    tree.insert(
        &e.path,
        Node {
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
        },
    )
    .map_err(|err| bad(err.to_string()))?;
    Ok(())
}

/// Unpacks every member of `deb` for which `keep(path)` holds into `tree`.
///
/// Returns the number of entries unpacked. A hard link shares its target's data; a hard link to
/// a member that was not kept is an error.
pub fn unpack(deb: &Path, tree: &mut Tree, mut keep: impl FnMut(&str) -> bool) -> Result<usize> {
    let mut count = 0;
    visit(deb, |e| {
        if e.path.is_empty() || !keep(&e.path) {
            return Ok(());
        }
        insert_entry(tree, e, |m| bad(deb, m))?;
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Builds a small .deb with dpkg-deb, its payload compressed with `compression`.
    fn build_deb(dir: &Path, compression: &str) -> std::path::PathBuf {
        let root = dir.join(format!("pkg-{compression}"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: labboot-test\nVersion: 1.0\nArchitecture: arm64\nMaintainer: t <t@example.org>\nDescription: test\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(root.join("etc/tool.conf"), b"x=1\n").unwrap();
        std::os::unix::fs::symlink("tool", root.join("usr/bin/tool-link")).unwrap();
        std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-hard")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::set_permissions(
            root.join("etc/tool.conf"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let out = dir.join(format!("t-{compression}.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--root-owner-group", &format!("-Z{compression}"), "--build"])
            .arg(&root)
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("dpkg-deb is needed (scripts/setup.sh installs dpkg)");
        assert!(status.success());
        out
    }

    fn check(compression: &str) {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_deb(dir.path(), compression);
        let mut tree = Tree::new();
        let n = unpack(&deb, &mut tree, |_| true).unwrap();
        assert!(n >= 6, "{n} entries");
        let tool = tree.get("usr/bin/tool").unwrap();
        assert_eq!(tool.mode, 0o4755);
        assert_eq!((tool.uid, tool.gid), (0, 0));
        assert_eq!(tool.data(), b"#!/bin/sh\necho hi\n");
        assert_eq!(tree.get("etc/tool.conf").unwrap().mode, 0o600);
        assert_eq!(
            tree.get("usr/bin/tool-link").unwrap().kind,
            Kind::Symlink("tool".into())
        );
        let hard = tree.get("usr/bin/tool-hard").unwrap();
        assert_eq!(hard.data(), tool.data());
    }

    #[test]
    fn unpacks_xz_payload() {
        check("xz");
    }

    #[test]
    fn unpacks_gzip_payload() {
        check("gzip");
    }

    #[test]
    fn unpacks_zstd_payload() {
        check("zstd");
    }

    /// dpkg-deb compresses control.tar like the payload: each is read back.
    #[test]
    fn control_fields_in_every_compression() {
        let dir = tempfile::tempdir().unwrap();
        for c in ["xz", "gzip", "zstd", "none"] {
            let deb = build_deb(dir.path(), c);
            let text = control(&deb).unwrap();
            let fields = &crate::apt::parse_stanzas(&text)[0];
            assert_eq!(fields["Package"], "labboot-test", "{c}");
            assert_eq!(fields["Version"], "1.0", "{c}");
        }
        let junk = dir.path().join("junk.deb");
        std::fs::write(&junk, b"!<arch>\n").unwrap();
        assert!(control(&junk)
            .unwrap_err()
            .to_string()
            .contains("no control.tar member"));
    }

    #[test]
    fn filter_keeps_only_chosen_paths() {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_deb(dir.path(), "xz");
        let mut tree = Tree::new();
        unpack(&deb, &mut tree, |p| p.starts_with("etc")).unwrap();
        assert!(tree.get("etc/tool.conf").is_some());
        assert!(tree.get("usr/bin/tool").is_none());
    }

    #[test]
    fn not_a_deb_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.deb");
        std::fs::write(&p, b"not an archive").unwrap();
        let e = unpack(&p, &mut Tree::new(), |_| true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("package junk.deb: "), "{e}");
    }
}
