//! Unpacking a root filesystem tarball (`nfsrootfs`) into a directory, and copying the test
//! overlay into such a tree.
//!
//! LAVA runs `tar -xf` as root. labboot reads the tarball itself (the `tar` crate parses it)
//! and creates every entry as GNU tar would as root: numeric owners, modes with set-id bits,
//! device nodes, FIFOs, symlinks, hard links, `SCHILY.xattr.*` extended attributes (file
//! capabilities included) and modification times (directories' last, so their own entries do
//! not disturb them). The compression is recognised by its magic bytes, like `tar -xf` does;
//! the job's `compression` only matters if the data has no recognisable magic.
//!
//! Nothing is written outside the destination: an entry with `..` is refused (the whole
//! unpack fails, naming it), leading `/` are dropped, and symlinks are never followed on the
//! host (see [`super::inroot`]). With a `prefix` (LAVA's `nfsrootfs: prefix:`), only entries
//! under that directory of the archive are unpacked, and that directory becomes the root;
//! LAVA unpacks everything and points the NFS root at the prefix, which shows the same tree.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::artifacts::decompress;
use crate::artifacts::inroot::{self, DirOutcome, Meta, Rel, Root};
use crate::error::{Error, Result};
use crate::job::model::Compression;

/// Unpacks the tarball `archive` into `dest` (created if missing); see the module
/// documentation.
pub fn unpack_rootfs(
    archive: &Path,
    compression: Option<Compression>,
    prefix: Option<&str>,
    dest: &Path,
) -> Result<()> {
    let what = format!("rootfs archive {}", archive.display());
    unpack_tar(archive, compression, prefix, dest, &what)
}

/// Unpacks a tarball as [`unpack_rootfs`] does; `what` names it in errors.
pub(crate) fn unpack_tar(
    archive: &Path,
    compression: Option<Compression>,
    prefix: Option<&str>,
    dest: &Path,
    what: &str,
) -> Result<()> {
    let prefix: Rel = match prefix {
        None => Rel::new(),
        Some(p) => {
            if p.starts_with('/') {
                return Err(Error::job(format!(
                    "{what}: prefix {p:?} must be relative to the archive's root"
                )));
            }
            inroot::rel_components(p.as_bytes())
                .ok_or_else(|| Error::job(format!("{what}: prefix {p:?} must not contain ..")))?
        }
    };
    let file = File::open(archive).map_err(|e| Error::infra(format!("{what}: {e}")))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let head = input
        .fill_buf()
        .map_err(|e| Error::infra(format!("{what}: {e}")))?;
    let found = decompress::detect(head);
    if let (Some(found), Some(said)) = (found, compression) {
        if found != said {
            tracing::warn!(
                "{what}: the job says {} but the data is {}",
                said.as_str(),
                found.as_str()
            );
        }
    }
    let use_compression = if found.is_some() || looks_like_tar(head) {
        found
    } else {
        compression
    };
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::infra(format!("{what}: creating {}: {e}", dest.display())))?;
    let reader = decompress::reader(input, use_compression);
    let mut tar = tar::Archive::new(reader);
    let root = Root::new(dest);
    let mut dirs: Vec<(PathBuf, (i64, u32))> = Vec::new();
    let mut unpacked = 0usize;
    let entries = tar.entries().map_err(|e| read_error(what, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(what, e))?;
        let name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&name).into_owned();
        let Some(rel) = inroot::rel_components(&name) else {
            return Err(Error::job(format!(
                "{what}: entry {shown:?} leaves the archive's root (..); refused"
            )));
        };
        let Some(rel) = under_prefix(&rel, &prefix) else {
            continue;
        };
        let created = unpack_entry(&root, &mut entry, &rel, &prefix, &mut dirs, what)
            .map_err(|e| e.context(format!("{what}: {shown}")))?;
        unpacked += usize::from(created);
    }
    for (dir, (secs, nanos)) in dirs.iter().rev() {
        inroot::set_mtime(dir, *secs, *nanos)
            .map_err(|e| Error::infra(format!("{what}: {}: {e}", dir.display())))?;
    }
    if unpacked == 0 && !prefix.is_empty() {
        return Err(Error::job(format!(
            "{what}: nothing under the prefix {}",
            inroot::show(&prefix)
        )));
    }
    Ok(())
}

/// Whether `head` (the first bytes of a file) is a tar header: `ustar` magic, or an old-style
/// header whose checksum adds up.
fn looks_like_tar(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&head[148..156]);
    let Ok(stored) = u32::from_str_radix(field.trim_matches(|c| c == ' ' || c == '\0'), 8) else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// A read error of the archive: the host's if the OS reported it, else the data's.
fn read_error(what: &str, e: io::Error) -> Error {
    if e.raw_os_error().is_some() {
        Error::infra(format!("reading {what}: {e}"))
    } else {
        Error::job(format!(
            "{what} is not a valid (compressed) tar archive: {e}"
        ))
    }
}

/// `rel` inside `prefix` (`None` if it is elsewhere).
fn under_prefix(rel: &[OsString], prefix: &[OsString]) -> Option<Rel> {
    rel.strip_prefix(prefix).map(<[OsString]>::to_vec)
}

/// Creates one entry. Returns whether something was created (pax headers are not).
fn unpack_entry<R: Read>(
    root: &Root,
    entry: &mut tar::Entry<'_, R>,
    rel: &[OsString],
    prefix: &[OsString],
    dirs: &mut Vec<(PathBuf, (i64, u32))>,
    what: &str,
) -> Result<bool> {
    use tar::EntryType as T;
    let host_err = |e: io::Error| Error::infra(e.to_string());
    let header = entry.header().clone();
    let kind = header.entry_type();
    if matches!(
        kind,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) || kind.as_byte() == b'V'
    {
        return Ok(false);
    }
    let pax = pax(entry).map_err(|e| Error::job(format!("bad pax header: {e}")))?;
    let meta = Meta {
        owner: match (header.uid(), header.gid()) {
            (Ok(u), Ok(g)) => Some((u as u32, g as u32)),
            _ => None,
        },
        mode: header.mode().unwrap_or(0o644),
        mtime: pax
            .mtime
            .or_else(|| header.mtime().ok().map(|t| (t as i64, 0))),
        xattrs: pax.xattrs,
    };
    if rel.is_empty() && !kind.is_dir() {
        tracing::debug!("{what}: an entry that is not a directory names the root; skipped");
        return Ok(false);
    }
    match kind {
        T::Directory => match root.make_dir(rel).map_err(host_err)? {
            DirOutcome::Created(host) | DirOutcome::Existing(host) => {
                inroot::apply(&host, &meta, false, false).map_err(host_err)?;
                if let Some(t) = meta.mtime {
                    dirs.push((host, t));
                }
            }
            DirOutcome::KeptSymlink => {}
        },
        T::Symlink => {
            let target = link_name(entry)?;
            let host = root.clear_for_file(rel).map_err(host_err)?;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &host)
                .map_err(host_err)?;
            inroot::apply(&host, &meta, true, true).map_err(host_err)?;
        }
        T::Link => {
            let target = link_name(entry)?;
            let shown = String::from_utf8_lossy(&target).into_owned();
            let target = inroot::rel_components(&target)
                .ok_or_else(|| Error::job(format!("hard link target {shown:?} leaves the root")))?;
            let target = under_prefix(&target, prefix).ok_or_else(|| {
                Error::job(format!(
                    "hard link target {shown:?} is outside the prefix {}",
                    inroot::show(prefix)
                ))
            })?;
            let existing = root.existing(&target).map_err(|e| {
                Error::job(format!(
                    "hard link target {shown:?} is not in the archive before it: {e}"
                ))
            })?;
            let host = root.clear_for_file(rel).map_err(host_err)?;
            std::fs::hard_link(&existing, &host).map_err(host_err)?;
        }
        T::Char | T::Block | T::Fifo => {
            let (ifmt, major, minor) = match kind {
                T::Char => (
                    libc::S_IFCHR,
                    dev(header.device_major()),
                    dev(header.device_minor()),
                ),
                T::Block => (
                    libc::S_IFBLK,
                    dev(header.device_major()),
                    dev(header.device_minor()),
                ),
                _ => (libc::S_IFIFO, 0, 0),
            };
            let host = root.clear_for_file(rel).map_err(host_err)?;
            inroot::make_node(&host, ifmt, major, minor).map_err(host_err)?;
            inroot::apply(&host, &meta, false, true).map_err(host_err)?;
        }
        _ => {
            // Regular files, contiguous and sparse files, and (as POSIX says) unknown types.
            let host = root.clear_for_file(rel).map_err(host_err)?;
            let mut f = inroot::create_file(&host).map_err(host_err)?;
            let size = entry.size();
            let copied = decompress::copy(entry, &mut f).map_err(|e| {
                if e.raw_os_error().is_some() {
                    Error::infra(format!("writing {}: {e}", host.display()))
                } else {
                    Error::job(format!("the archive is corrupt: {e}"))
                }
            })?;
            if copied != size {
                return Err(Error::job(format!(
                    "the archive ends after {copied} of its {size} bytes"
                )));
            }
            drop(f);
            inroot::apply(&host, &meta, false, true).map_err(host_err)?;
        }
    }
    Ok(true)
}

/// A device number field (0 when absent or unreadable).
fn dev(field: io::Result<Option<u32>>) -> u32 {
    field.ok().flatten().unwrap_or(0)
}

/// The link target of a symlink or hard link entry.
fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Vec<u8>> {
    match entry.link_name_bytes() {
        Some(t) if !t.is_empty() => Ok(t.into_owned()),
        _ => Err(Error::job("a link without a target".to_string())),
    }
}

/// What labboot uses of an entry's pax header.
#[derive(Default)]
struct Pax {
    /// `SCHILY.xattr.*` records (GNU tar's `--xattrs`).
    xattrs: Vec<(OsString, Vec<u8>)>,
    /// `mtime`, with its fraction (seconds, nanoseconds).
    mtime: Option<(i64, u32)>,
}

fn pax<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Pax> {
    let mut out = Pax::default();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.xattrs.push((
                    std::ffi::OsStr::from_bytes(name).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            } else if ext.key_bytes() == b"mtime" {
                out.mtime = parse_pax_time(ext.value_bytes());
            }
        }
    }
    Ok(out)
}

/// A pax time (`1700000000.123456789`, maybe negative) as seconds and nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    if secs < 0 && nanos > 0 {
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

/// Copies the contents of directory `src` into the tree `dest` (the test overlay into a
/// rootfs): directories are merged (existing ones keep their metadata), files, symlinks and
/// special files replace what is there, and modes, times and (as root) owners are kept.
/// Symlinks of `dest` are followed only inside it.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let root = Root::new(dest);
    copy_dir(&root, src, &mut Rel::new())
}

fn copy_dir(root: &Root, src_root: &Path, rel: &mut Rel) -> Result<()> {
    let here = rel.iter().fold(src_root.to_path_buf(), |p, c| p.join(c));
    let err = |p: &Path, e: io::Error| Error::infra(format!("copying {}: {e}", p.display()));
    let mut names: Vec<OsString> = std::fs::read_dir(&here)
        .map_err(|e| err(&here, e))?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| err(&here, e))?;
    names.sort();
    for name in names {
        let path = here.join(&name);
        let m = std::fs::symlink_metadata(&path).map_err(|e| err(&path, e))?;
        let ft = m.file_type();
        let meta = Meta {
            owner: Some((m.uid(), m.gid())),
            mode: m.mode() & 0o7777,
            mtime: Some((m.mtime(), m.mtime_nsec() as u32)),
            xattrs: Vec::new(),
        };
        rel.push(name);
        let to_err = |e: io::Error| {
            Error::infra(format!(
                "copying {} to {}{}: {e}",
                path.display(),
                root.path().display(),
                inroot::show(rel)
            ))
        };
        if ft.is_dir() {
            let created = match root.make_dir(rel).map_err(to_err)? {
                DirOutcome::Created(host) => {
                    inroot::apply(&host, &meta, false, false).map_err(to_err)?;
                    Some(host)
                }
                DirOutcome::Existing(_) | DirOutcome::KeptSymlink => None,
            };
            copy_dir(root, src_root, rel)?;
            // A new directory's time, once its contents are in.
            if let (Some(host), Some((secs, nanos))) = (created, meta.mtime) {
                inroot::set_mtime(&host, secs, nanos)
                    .map_err(|e| Error::infra(format!("{}: {e}", host.display())))?;
            }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| err(&path, e))?;
            let host = root.clear_for_file(rel).map_err(to_err)?;
            std::os::unix::fs::symlink(&target, &host).map_err(to_err)?;
            inroot::apply(&host, &meta, true, true).map_err(to_err)?;
        } else if ft.is_file() {
            let mut from = File::open(&path).map_err(|e| err(&path, e))?;
            let host = root.clear_for_file(rel).map_err(to_err)?;
            let mut to = inroot::create_file(&host).map_err(to_err)?;
            io::copy(&mut from, &mut to).map_err(to_err)?;
            drop(to);
            inroot::apply(&host, &meta, false, true).map_err(to_err)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let ifmt = m.mode() & libc::S_IFMT;
            let rdev = m.rdev() as libc::dev_t;
            let host = root.clear_for_file(rel).map_err(to_err)?;
            inroot::make_node(&host, ifmt, libc::major(rdev), libc::minor(rdev)).map_err(to_err)?;
            inroot::apply(&host, &meta, false, true).map_err(to_err)?;
        } else {
            tracing::debug!("{}: a socket, not copied", path.display());
        }
        rel.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_pax_time(b"1796380998.0581299910"),
            Some((1_796_380_998, 58_129_991))
        );
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.2x"), None);
    }

    #[test]
    fn tar_detection() {
        let mut h = tar::Header::new_old();
        h.set_path("a").unwrap();
        h.set_cksum();
        let mut block = h.as_bytes().to_vec();
        assert!(looks_like_tar(&block));
        block[0] = b'b';
        assert!(!looks_like_tar(&block));
        assert!(!looks_like_tar(&[0u8; 100]));
    }
}
