//! The filesystem layer: one exported directory ([`Export`]), reached only through descriptors.
//!
//! **Confinement.** Every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! relative to the export's root descriptor, and names from clients are single components (no
//! `/`, NUL, `.` or `..`, checked by [`check_name`]). The kernel therefore refuses anything that
//! would leave the export, whether by `..`, an absolute path or a symlink, including one swapped
//! in by a racing writer. Symlinks are read with `readlinkat` and handed to the client; the server
//! never follows them. `..` is answered from the server's own record of the path, and stops at
//! the export root.
//!
//! **Handles.** A handle is a magic, the export id (a hash of the export's name), the inode
//! number and the inode's birth time. Nothing in it is a path or a secret: it names what is on
//! disk, so it survives a server restart, and it cannot point outside the export because it is
//! only ever resolved *by searching the export*: a cached path is reopened beneath the root and
//! its inode and birth time compared, and when the cache has nothing (after a restart, or a
//! rename behind the server's back) the whole export is walked once with `getdents` (never
//! through a symlink) and every inode's path remembered, so one walk serves every handle the
//! clients still hold. A forged handle for an inode outside the export is never found and gets
//! `NFS3ERR_STALE`; walks run on a thread of their own, one at a time and at most every
//! [`RESCAN_INTERVAL`] per export, and a call waits for one at most [`WALK_WAIT`] before it is
//! answered `NFS3ERR_JUKEBOX` (retry later).
//! Inode numbers are only unique per filesystem: an export that spans mount points may confuse
//! clients, as with knfsd's `crossmnt`.
//!
//! **Credentials.** The server runs as root; each operation runs on a blocking thread whose
//! filesystem uid, gid and groups are switched to the caller's `AUTH_SYS` credential
//! ([`AsUser`]), so the kernel checks permissions and new files get the caller's uid/gid. As in
//! knfsd, the owner of a file may read and write it whatever its mode (a client creates a file
//! 0444 and then writes it). Root callers (uid 0, gid 0) need no switch (see [`AsUser`]).
//!
//! **Layout.** This file holds the types and [`Export`] itself; `handles` makes and resolves
//! handles, `credentials` is the per-thread credential switch, `names` the operations on names
//! (LOOKUP, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RENAME, LINK, READLINK), `files` those on a
//! file's data and attributes (GETATTR, SETATTR, READ, WRITE, COMMIT), `readdir` the directory
//! listings, and `syscalls` the system calls behind them.

mod credentials;
mod files;
mod handles;
mod names;
mod readdir;
mod syscalls;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::attrcache::AttrCache;
use super::config::{Access, ExportSpec};
use super::status::NfsStat;
use syscalls::{cstr, statx_at};

pub use credentials::AsUser;
pub use files::boot_verifier;
pub use handles::{
    born_key, export_id, Handle, InodeHasher, InodeMap, HANDLE_LEN, MAX_WALK_PATHS,
    RESCAN_INTERVAL, WALK_WAIT,
};
pub use names::check_name;
pub use readdir::{DirEntry, KEPT_LISTINGS};

/// File types of NFSv3 (`ftype3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Regular file.
    Reg = 1,
    /// Directory.
    Dir = 2,
    /// Block device.
    Blk = 3,
    /// Character device.
    Chr = 4,
    /// Symbolic link.
    Lnk = 5,
    /// Socket.
    Sock = 6,
    /// FIFO.
    Fifo = 7,
}

/// What `statx` says about an inode, in the units NFSv3 wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// File type.
    pub kind: Kind,
    /// Permission bits (incl. setuid, setgid, sticky).
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated on disk.
    pub used: u64,
    /// Device number (major, minor) of a device node.
    pub rdev: (u32, u32),
    /// Inode number.
    pub ino: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time.
    pub mtime: (i64, u32),
    /// Status change time.
    pub ctime: (i64, u32),
    /// Birth time, zero when unknown.
    pub born: (i64, u32),
}

/// An object of the export, found from a handle.
#[derive(Debug)]
pub struct Obj {
    /// Its path relative to the export root (empty for the root).
    pub path: PathBuf,
    /// An `O_PATH` descriptor of it.
    pub fd: OwnedFd,
    /// Its attributes when it was opened.
    pub stat: Stat,
}

/// Time to set in SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// Leave as is.
    Keep,
    /// The server's clock.
    Now,
    /// This time (seconds, nanoseconds).
    At(i64, u32),
}

/// Attributes to set (`sattr3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: SetTime,
    /// New modification time.
    pub mtime: SetTime,
}

impl SetAttr {
    /// Sets nothing.
    pub const NONE: SetAttr = SetAttr {
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: SetTime::Keep,
        mtime: SetTime::Keep,
    };
}

/// What MKNOD creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A character device (major, minor).
    Chr(u32, u32),
    /// A block device (major, minor).
    Blk(u32, u32),
    /// A FIFO.
    Fifo,
    /// A unix socket's inode.
    Sock,
}

/// A directory served over NFS: its root descriptor and the inode → path cache.
#[derive(Debug)]
pub struct Export {
    spec: ExportSpec,
    id: u64,
    root: OwnedFd,
    root_stat: Stat,
    paths: Arc<Mutex<InodeMap<PathBuf>>>,
    walks: Arc<handles::Walks>,
    attrs: AttrCache,
}

impl Export {
    /// Opens the export's directory.
    pub fn open(spec: ExportSpec) -> io::Result<Export> {
        let c = cstr(spec.dir().as_os_str().as_bytes())?;
        let root = syscalls::open_dir_path(&c)?;
        let root_stat = statx_at(root.as_raw_fd(), c"")?;
        let mut paths = InodeMap::default();
        paths.insert(root_stat.ino, PathBuf::new());
        let attrs = AttrCache::watch(spec.dir()).unwrap_or_else(|e| {
            tracing::info!(
                export = spec.name(),
                "nfs: attribute cache off (fanotify: {e}): every attribute is read from disk"
            );
            AttrCache::off()
        });
        Ok(Export {
            attrs,
            id: export_id(spec.name()),
            spec,
            root,
            root_stat,
            paths: Arc::new(Mutex::new(paths)),
            walks: Arc::default(),
        })
    }

    /// The checked specification (name, directory, access, clients).
    pub fn spec(&self) -> &ExportSpec {
        &self.spec
    }

    /// The export's id (also its `fsid`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the export is read-only.
    pub fn read_only(&self) -> bool {
        self.spec.access() == Access::Ro
    }

    fn writable(&self) -> Result<(), NfsStat> {
        if self.read_only() {
            Err(NfsStat::ROFS)
        } else {
            Ok(())
        }
    }

    /// File-system totals for FSSTAT: bytes (total, free, available), files (total, free, available).
    pub fn fsstat(&self) -> Result<[u64; 6], NfsStat> {
        let s = syscalls::fstatvfs(self.root.as_raw_fd())?;
        let b = s.f_frsize;
        Ok([
            s.f_blocks * b,
            s.f_bfree * b,
            s.f_bavail * b,
            s.f_files,
            s.f_ffree,
            s.f_favail,
        ])
    }
}

/// An export of `dir` with `access` (`ro` or `rw`), for the tests of this layer.
#[cfg(test)]
fn test_export(dir: &std::path::Path, access: &str) -> Export {
    use crate::nfs::config::ExportConfig;
    let c = ExportConfig::parse_spec(&format!("/t={}:{access}", dir.display())).unwrap();
    Export::open(ExportSpec::check(&c, "exports[0]").unwrap()).unwrap()
}
