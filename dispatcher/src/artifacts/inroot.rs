//! Creating files inside a root tree (an NFS root, an unpacked modules tree) without ever
//! touching anything outside it.
//!
//! A rootfs is full of symlinks meant for the board: `lib -> usr/lib`, `/etc/mtab ->
//! /proc/self/mounts`, absolute ones included. Followed on the host, an absolute link or a
//! crafted archive (`link -> /etc`, then `link/passwd`) would write to the host. So paths are
//! resolved here one component at a time, as a chroot would: a symlink among the parents is
//! followed *inside* the tree (absolute targets from the tree's root, `..` stopping at it),
//! and the host path that is finally used goes through real directories only. The last
//! component is never followed: whatever is there is removed before a new file is created.
//!
//! One deliberate difference from GNU tar (which LAVA runs): a directory entry that meets a
//! symlink leading to a directory of the tree keeps the symlink (tar's
//! `--keep-directory-symlink`). Without it, a modules tarball holding `lib/` would replace a
//! merged-/usr root's `lib -> usr/lib` by a directory and break the root.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (Linux's limit).
const MAX_HOPS: usize = 40;

/// A directory tree that files are created in.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

/// A path inside the tree as components: no `.`, no `..`, no empty ones.
pub type Rel = Vec<OsString>;

/// The components of `path` inside a tree: `.` and leading `/` dropped; `None` if a `..`
/// would leave it.
pub fn rel_components(path: &[u8]) -> Option<Rel> {
    let mut out = Rel::new();
    for c in Path::new(OsStr::from_bytes(path)).components() {
        match c {
            Component::Normal(c) => out.push(c.to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Display form of a path inside the tree (`/` for the root).
pub fn show(rel: &[OsString]) -> String {
    let joined: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
    format!("/{}", joined.join("/"))
}

/// Ownership, permissions, time and extended attributes to give a new file.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// Owner and group (numeric); applied only when running as root.
    pub owner: Option<(u32, u32)>,
    /// Permission bits (`0o7777` mask); not used on symlinks.
    pub mode: u32,
    /// Modification (and access) time: seconds since the epoch and nanoseconds.
    pub mtime: Option<(i64, u32)>,
    /// Extended attributes (name, value), set after ownership (chown clears capabilities).
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// What [`Root::make_dir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirOutcome {
    /// A new directory at this host path.
    Created(PathBuf),
    /// A directory was already there, at this host path.
    Existing(PathBuf),
    /// A symlink to a directory of the tree was there and was kept.
    KeptSymlink,
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// Whether this process may give files any owner: root, or a service user holding CAP_CHOWN
/// in its effective set (the packaged unit runs as `labboot` with it), read once from
/// `/proc/self/status`.
pub fn is_root() -> bool {
    static MAY_CHOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MAY_CHOWN.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| effective_caps(&status))
            .is_some_and(|caps| caps & (1 << CAP_CHOWN) != 0)
    })
}

/// The capability number of CAP_CHOWN (linux/capability.h).
const CAP_CHOWN: u32 = 0;

/// The effective capability set from the text of `/proc/PID/status` (`CapEff:` in hex).
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        err(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL", p.display()),
        )
    })
}

impl Root {
    /// The tree at `path` (which must exist).
    pub fn new(path: &Path) -> Root {
        Root {
            path: path.to_path_buf(),
        }
    }

    /// The tree's own directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn host(&self, real: &[OsString]) -> PathBuf {
        real.iter().fold(self.path.clone(), |p, c| p.join(c))
    }

    /// Resolves `rel` to the real directories it leads to, following symlinks inside the tree;
    /// missing directories are created (mode 0755) when `create`.
    pub fn resolve_dir(&self, rel: &[OsString], create: bool) -> io::Result<Rel> {
        let mut todo: Vec<OsString> = rel.iter().rev().cloned().collect();
        let mut cur = Rel::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            if c.is_empty() || c == "." {
                continue;
            }
            cur.push(c);
            let host = self.host(&cur);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(err(
                            io::ErrorKind::InvalidInput,
                            format!("too many levels of symbolic links at {}", show(&cur)),
                        ));
                    }
                    let target = std::fs::read_link(&host)?;
                    cur.pop();
                    if target.is_absolute() {
                        cur.clear();
                    }
                    let parts: Vec<OsString> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(c) => Some(c.to_os_string()),
                            Component::ParentDir => Some(OsString::from("..")),
                            _ => None,
                        })
                        .collect();
                    todo.extend(parts.into_iter().rev());
                }
                Ok(_) => {
                    return Err(err(
                        io::ErrorKind::Other,
                        format!("{} is not a directory", show(&cur)),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&host)?;
                    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// The host path where the last component of `rel` goes, its parents resolved inside the
    /// tree (and created if missing). The last component itself is not followed.
    pub fn place(&self, rel: &[OsString]) -> io::Result<PathBuf> {
        let (name, parent) = rel
            .split_last()
            .ok_or_else(|| err(io::ErrorKind::InvalidInput, "the root itself".into()))?;
        let dir = self.resolve_dir(parent, true)?;
        Ok(self.host(&dir).join(name))
    }

    /// The host path of an existing non-directory at `rel` (for a hard link's target).
    pub fn existing(&self, rel: &[OsString]) -> io::Result<PathBuf> {
        let (name, parent) = rel
            .split_last()
            .ok_or_else(|| err(io::ErrorKind::InvalidInput, "the root itself".into()))?;
        let dir = self.resolve_dir(parent, false)?;
        let host = self.host(&dir).join(name);
        let m = std::fs::symlink_metadata(&host)?;
        if m.is_dir() {
            return Err(err(
                io::ErrorKind::Other,
                format!("{} is a directory", show(rel)),
            ));
        }
        Ok(host)
    }

    /// Makes room for a new non-directory at `rel`: removes a file or symlink there, or an
    /// empty directory. Returns the host path.
    pub fn clear_for_file(&self, rel: &[OsString]) -> io::Result<PathBuf> {
        let host = self.place(rel)?;
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&host).map_err(|e| {
                err(
                    e.kind(),
                    format!("cannot replace directory {} by a file: {e}", show(rel)),
                )
            })?,
            Ok(_) => std::fs::remove_file(&host)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(host)
    }

    /// Makes sure a directory is at `rel` (see [`DirOutcome`]); the root itself is `Existing`.
    pub fn make_dir(&self, rel: &[OsString]) -> io::Result<DirOutcome> {
        if rel.is_empty() {
            return Ok(DirOutcome::Existing(self.path.clone()));
        }
        let host = self.place(rel)?;
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => return Ok(DirOutcome::Existing(host)),
            Ok(m) if m.file_type().is_symlink() => {
                if self.resolve_dir(rel, false).is_ok() {
                    return Ok(DirOutcome::KeptSymlink);
                }
                std::fs::remove_file(&host)?;
            }
            Ok(_) => std::fs::remove_file(&host)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir(&host)?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700))?;
        Ok(DirOutcome::Created(host))
    }
}

/// Creates a new regular file at `host` (which must not exist; never follows a symlink).
pub fn create_file(host: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(host)
}

/// Creates a device node or FIFO at `host`; `kind` is `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
pub fn make_node(host: &Path, kind: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(host)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path; mknod only reads it.
    let r = unsafe { libc::mknod(c.as_ptr(), (kind | 0o600) as libc::mode_t, dev) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Applies `meta` to the new file at `host`, in the order that keeps set-id bits and file
/// capabilities: owner, mode, extended attributes, time. Symlinks get owner and time only.
pub fn apply(host: &Path, meta: &Meta, is_symlink: bool, set_time: bool) -> io::Result<()> {
    if let Some((uid, gid)) = meta.owner {
        if is_root() {
            std::os::unix::fs::lchown(host, Some(uid), Some(gid))?;
        }
    }
    if !is_symlink {
        std::fs::set_permissions(host, std::fs::Permissions::from_mode(meta.mode & 0o7777))?;
    }
    for (name, value) in &meta.xattrs {
        xattr::set(host, name, value).map_err(|e| {
            err(
                e.kind(),
                format!("extended attribute {}: {e}", name.to_string_lossy()),
            )
        })?;
    }
    if set_time {
        if let Some((secs, nanos)) = meta.mtime {
            set_mtime(host, secs, nanos)?;
        }
    }
    Ok(())
}

/// Sets access and modification time of `host` (a symlink itself, not its target).
pub fn set_mtime(host: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    let c = cpath(host)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos.min(999_999_999) as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid path and `times` two valid timespecs; utimensat only reads them.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> Rel {
        rel_components(s.as_bytes()).unwrap()
    }

    #[test]
    fn effective_capabilities_are_read_from_the_status_text() {
        let status = "Name:\tlabboot\nCapInh:\t0000000000000000\nCapPrm:\t0000000000003001\n\
                      CapEff:\t0000000000003001\nCapBnd:\t000001ffffffffff\n";
        let caps = effective_caps(status).unwrap();
        assert_ne!(caps & (1 << CAP_CHOWN), 0);
        assert_eq!(
            effective_caps("CapEff:\t0000000000003000\n").unwrap() & 1,
            0
        );
        assert_eq!(effective_caps("Name: x\n"), None);
        // This process: root, or holding CAP_CHOWN, or neither; the answer agrees with /proc.
        let own = effective_caps(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(is_root(), euid == 0 || own & 1 != 0);
    }

    #[test]
    fn components_refuse_dotdot() {
        assert_eq!(
            rel("./a//b/."),
            vec![OsString::from("a"), OsString::from("b")]
        );
        assert_eq!(
            rel("/abs/x"),
            vec![OsString::from("abs"), OsString::from("x")]
        );
        assert!(rel_components(b"a/../b").is_none());
        assert!(rel_components(b"../x").is_none());
        assert_eq!(show(&rel("a/b")), "/a/b");
        assert_eq!(show(&[]), "/");
    }

    #[test]
    fn symlinks_are_followed_inside_the_tree_only() {
        let outside = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", t.path().join("lib")).unwrap();
        std::os::unix::fs::symlink("/usr", t.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", t.path().join("up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("host")).unwrap();

        let p = root.place(&rel("lib/modules/x.ko")).unwrap();
        assert_eq!(p, t.path().join("usr/lib/modules/x.ko"));
        let p = root.place(&rel("abs/lib/y")).unwrap();
        assert_eq!(p, t.path().join("usr/lib/y"));
        let p = root.place(&rel("up/etc/passwd")).unwrap();
        assert_eq!(p, t.path().join("etc/passwd"));
        // An absolute link to a host directory is followed inside the tree, where it is new.
        let p = root.place(&rel("host/f")).unwrap();
        assert!(p.starts_with(t.path()));
        assert!(!p.starts_with(outside.path()));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        assert_eq!(root.make_dir(&rel("lib")).unwrap(), DirOutcome::KeptSymlink);
        assert!(t.path().join("lib").is_symlink());
    }

    #[test]
    fn last_component_is_replaced_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("f")).unwrap();
        let root = Root::new(t.path());
        let host = root.clear_for_file(&rel("f")).unwrap();
        let mut f = create_file(&host).unwrap();
        io::Write::write_all(&mut f, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn loops_are_refused() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", t.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", t.path().join("b")).unwrap();
        let e = Root::new(t.path()).place(&rel("a/x")).unwrap_err();
        assert!(e.to_string().contains("too many levels"));
    }
}
