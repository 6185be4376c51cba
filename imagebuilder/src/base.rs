//! The recipe's `base`: a root filesystem tarball or directory the packages are unpacked over.
//!
//! The rule for owners and modes, so that a base gives the same tree wherever it is built:
//! - a **tarball** (`tar`, `tar.gz`, `tar.xz`, `tar.zst`, recognised by its first bytes, not its
//!   name) keeps the modes and numeric owners its headers record; user and group *names* in the
//!   headers are ignored, so the host's `/etc/passwd` never matters;
//! - a **directory** keeps the permission bits it has on disk (setuid, setgid and sticky
//!   included), but every entry is owned by `uid`:`gid` of the recipe's `base` (default 0:0,
//!   root), because an unprivileged copy on disk cannot carry other owners faithfully. Symlinks
//!   are kept as links (never followed), hard links share their data, device nodes and FIFOs
//!   are kept; sockets are refused.
//!
//! Times are not read from either: like package contents, every time in every output is the
//! build epoch. Entries are visited in byte order of their names, so the host's directory order
//! does not leak into the images.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::deb;
use crate::error::{Error, Result};
use crate::tree::{Kind, Node, Tree};

/// What a base is, as recognised from the file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    /// A directory on disk.
    Dir,
    /// An uncompressed tar file.
    Tar,
    /// A gzip-compressed tar file.
    TarGz,
    /// An xz-compressed tar file.
    TarXz,
    /// A zstd-compressed tar file.
    TarZst,
}

impl BaseKind {
    /// A short name for messages and the manifest (`directory`, `tar.gz`, …).
    pub fn name(self) -> &'static str {
        match self {
            BaseKind::Dir => "directory",
            BaseKind::Tar => "tar",
            BaseKind::TarGz => "tar.gz",
            BaseKind::TarXz => "tar.xz",
            BaseKind::TarZst => "tar.zst",
        }
    }
}

/// A checked `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    /// The path as written in the recipe (recorded in the manifest).
    pub written: String,
    /// The path on disk (relative ones are anchored at the recipe's folder).
    pub path: PathBuf,
    /// Tarball or directory.
    pub kind: BaseKind,
    /// Owner of every entry of a directory base.
    pub uid: u32,
    /// Group of every entry of a directory base.
    pub gid: u32,
}

/// Recognises `path` as a directory or a (compressed) tar file; the message says why not.
pub fn detect(path: &Path) -> std::result::Result<BaseKind, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        return Ok(BaseKind::Dir);
    }
    if !meta.is_file() {
        return Err(format!(
            "{} is neither a directory nor a file",
            path.display()
        ));
    }
    let mut head = [0u8; 512];
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(BaseKind::TarGz)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(BaseKind::TarXz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(BaseKind::TarZst)
    } else if head.len() == 512 && &head[257..262] == b"ustar" {
        Ok(BaseKind::Tar)
    } else {
        Err(format!(
            "{} is neither a directory nor a tar, tar.gz, tar.xz or tar.zst file",
            path.display()
        ))
    }
}

/// Adds the base's entries to `tree`; errors name `recipe`'s `base` field and the entry.
/// Returns the number of entries.
pub fn unpack(recipe: &str, base: &BaseSpec, tree: &mut Tree) -> Result<usize> {
    let bad = |m: String| Error::RecipeField {
        file: recipe.to_string(),
        field: "base".to_string(),
        message: format!("{}: {m}", base.written),
    };
    match base.kind {
        BaseKind::Dir => unpack_dir(base, tree, &bad),
        kind => {
            let file = std::fs::File::open(&base.path).map_err(|e| bad(e.to_string()))?;
            let file = std::io::BufReader::new(file);
            let reader: Box<dyn Read> = match kind {
                BaseKind::Tar => Box::new(file),
                BaseKind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
                BaseKind::TarXz => Box::new(liblzma::read::XzDecoder::new(file)),
                BaseKind::TarZst => Box::new(
                    ruzstd::decoding::StreamingDecoder::new(file)
                        .map_err(|e| bad(format!("zstd: {e}")))?,
                ),
                BaseKind::Dir => unreachable!("handled above"),
            };
            let mut count = 0;
            deb::visit_tar(reader, bad, |e| {
                if e.path.is_empty() && e.link != deb::Link::Dir {
                    return Err(bad("the archive's root is not a directory".into()));
                }
                deb::insert_entry(tree, e, bad)?;
                count += 1;
                Ok(())
            })?;
            Ok(count)
        }
    }
}

/// glibc's `major()` / `minor()` of a `dev_t`.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn unpack_dir(base: &BaseSpec, tree: &mut Tree, bad: &dyn Fn(String) -> Error) -> Result<usize> {
    let root_meta = std::fs::metadata(&base.path).map_err(|e| bad(e.to_string()))?;
    tree.insert(
        "",
        Node {
            uid: base.uid,
            gid: base.gid,
            ..Node::dir(root_meta.mode() & 0o7777)
        },
    )?;
    // (device, inode) of files seen with more than one link → their shared bytes.
    let mut links: BTreeMap<(u64, u64), Arc<Vec<u8>>> = BTreeMap::new();
    let mut count = 0;
    let mut stack: Vec<(PathBuf, String)> = vec![(base.path.clone(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| bad(format!("/{rel}: {e}")))? {
            let entry = entry.map_err(|e| bad(format!("/{rel}: {e}")))?;
            names.push(entry.file_name());
        }
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let name_str = name
                .to_str()
                .ok_or_else(|| bad(format!("/{rel}/{name:?}: name is not UTF-8")))?;
            let child_rel = if rel.is_empty() {
                name_str.to_string()
            } else {
                format!("{rel}/{name_str}")
            };
            let full = dir.join(&name);
            let meta =
                std::fs::symlink_metadata(&full).map_err(|e| bad(format!("/{child_rel}: {e}")))?;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                subdirs.push((full.clone(), child_rel.clone()));
                Kind::Dir
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                let data = match links.get(&key) {
                    Some(d) => d.clone(),
                    None => {
                        let d = Arc::new(
                            std::fs::read(&full).map_err(|e| bad(format!("/{child_rel}: {e}")))?,
                        );
                        if meta.nlink() > 1 {
                            links.insert(key, d.clone());
                        }
                        d
                    }
                };
                Kind::File(data)
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(&full).map_err(|e| bad(format!("/{child_rel}: {e}")))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| bad(format!("/{child_rel}: link target is not UTF-8")))?;
                Kind::Symlink(target.to_string())
            } else if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = split_dev(meta.rdev());
                if ft.is_char_device() {
                    Kind::CharDev { major, minor }
                } else {
                    Kind::BlockDev { major, minor }
                }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                return Err(bad(format!(
                    "/{child_rel}: a socket cannot be part of an image"
                )));
            };
            let mode = if matches!(kind, Kind::Symlink(_)) {
                0o777
            } else {
                meta.mode() & 0o7777
            };
            tree.insert(
                &child_rel,
                Node {
                    kind,
                    mode,
                    uid: base.uid,
                    gid: base.gid,
                },
            )
            .map_err(|e| bad(e.to_string()))?;
            count += 1;
        }
        // Pushed in reverse so the walk visits subdirectories in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// A directory with a setuid file, a 0600 file, a symlink, a hard link and a subdirectory.
    fn sample_dir(root: &Path) {
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            root.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::write(root.join("etc/secret"), b"s").unwrap();
        std::fs::set_permissions(
            root.join("etc/secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn spec(path: &Path, kind: BaseKind) -> BaseSpec {
        BaseSpec {
            written: path.file_name().unwrap().to_string_lossy().into_owned(),
            path: path.to_path_buf(),
            kind,
            uid: 0,
            gid: 0,
        }
    }

    /// GNU tar of `sample_dir` (etc/secret owned by 1000:1001, the rest by root), compressed
    /// by `compressor` (`gzip`, `xz`, `zstd`) unless it is empty.
    fn tarball(dir: &Path, compressor: &str, name: &str) -> PathBuf {
        let src = dir.join("src");
        if !src.exists() {
            sample_dir(&src);
        }
        let tar = dir.join(format!("{name}.plain"));
        let _ = std::fs::remove_file(&tar);
        for (owner, members) in [("0", &["bin", "usr"][..]), ("1000", &["etc"][..])] {
            let group = if owner == "0" { "0" } else { "1001" };
            let status = Command::new("tar")
                .arg(if owner == "0" { "-cf" } else { "-rf" })
                .arg(&tar)
                .args([format!("--owner={owner}"), format!("--group={group}")])
                .arg("-C")
                .arg(&src)
                .args(members)
                .status()
                .expect("GNU tar is needed");
            assert!(status.success());
        }
        let out = dir.join(name);
        if compressor.is_empty() {
            std::fs::rename(&tar, &out).unwrap();
        } else {
            let data = Command::new(compressor)
                .arg("-c")
                .arg(&tar)
                .output()
                .unwrap_or_else(|e| panic!("{compressor} is needed: {e}"));
            assert!(data.status.success());
            std::fs::write(&out, data.stdout).unwrap();
        }
        out
    }

    #[test]
    fn detects_each_format_by_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for (flag, name, kind) in [
            ("", "b.tar", BaseKind::Tar),
            ("gzip", "b.tgz", BaseKind::TarGz),
            ("xz", "b.txz", BaseKind::TarXz),
            ("zstd", "b.tar.zst", BaseKind::TarZst),
        ] {
            let p = tarball(dir.path(), flag, name);
            assert_eq!(detect(&p), Ok(kind), "{name}");
        }
        assert_eq!(detect(&dir.path().join("src")), Ok(BaseKind::Dir));
        let junk = dir.path().join("junk.tar.gz");
        std::fs::write(&junk, b"not a tarball at all").unwrap();
        let e = detect(&junk).unwrap_err();
        assert!(e.ends_with("is neither a directory nor a tar, tar.gz, tar.xz or tar.zst file"));
        let e = detect(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn tarballs_keep_their_owners_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        for (flag, name, kind) in [
            ("", "b.tar", BaseKind::Tar),
            ("gzip", "b.tar.gz", BaseKind::TarGz),
            ("xz", "b.tar.xz", BaseKind::TarXz),
            ("zstd", "b.tar.zst", BaseKind::TarZst),
        ] {
            let p = tarball(dir.path(), flag, name);
            let mut t = Tree::new();
            let n = unpack("r.yaml", &spec(&p, kind), &mut t).unwrap();
            assert!(n >= 6, "{name}: {n}");
            let tool = t.get("usr/bin/tool").unwrap();
            assert_eq!((tool.mode, tool.uid, tool.gid), (0o4755, 0, 0), "{name}");
            assert_eq!(t.get("usr/bin/tool2").unwrap().data(), b"#!/bin/sh\n");
            let secret = t.get("etc/secret").unwrap();
            assert_eq!((secret.mode, secret.uid, secret.gid), (0o600, 1000, 1001));
            assert_eq!(t.get("bin").unwrap().kind, Kind::Symlink("usr/bin".into()));
        }
    }

    #[test]
    fn a_directory_keeps_modes_and_takes_the_recipes_owner() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        sample_dir(&src);
        let mut t = Tree::new();
        let mut s = spec(&src, BaseKind::Dir);
        s.gid = 7;
        let n = unpack("r.yaml", &s, &mut t).unwrap();
        assert_eq!(n, 7);
        let tool = t.get("usr/bin/tool").unwrap();
        assert_eq!((tool.mode, tool.uid, tool.gid), (0o4755, 0, 7));
        assert_eq!(t.get("etc/secret").unwrap().mode, 0o600);
        assert_eq!(t.get("bin").unwrap().kind, Kind::Symlink("usr/bin".into()));
        assert_eq!(t.root().mode, 0o755);
        let (a, b) = (
            t.get("usr/bin/tool").unwrap(),
            t.get("usr/bin/tool2").unwrap(),
        );
        match (&a.kind, &b.kind) {
            (Kind::File(x), Kind::File(y)) => assert!(Arc::ptr_eq(x, y), "hard link shares data"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_tarball_names_the_field_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = tarball(dir.path(), "gzip", "b.tar.gz");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let e = unpack("r.yaml", &spec(&p, BaseKind::TarGz), &mut Tree::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.yaml: base: b.tar.gz: "), "{e}");
    }

    #[test]
    fn split_dev_matches_glibc() {
        // makedev(1, 3) and makedev(259, 70000)
        assert_eq!(split_dev(0x103), (1, 3));
        let dev: u64 = ((259u64 & 0xfff) << 8) | (70000u64 & 0xff) | ((70000u64 & !0xff) << 12);
        assert_eq!(split_dev(dev), (259, 70000));
    }
}
