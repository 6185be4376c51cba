//! NFSv3 status codes (`nfsstat3`, RFC 1813 §2.6) and the mapping from `errno`.

use std::io;

/// An `nfsstat3` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfsStat(pub u32);

impl NfsStat {
    /// Success.
    pub const OK: NfsStat = NfsStat(0);
    /// Not owner.
    pub const PERM: NfsStat = NfsStat(1);
    /// No such file or directory.
    pub const NOENT: NfsStat = NfsStat(2);
    /// I/O error.
    pub const IO: NfsStat = NfsStat(5);
    /// Permission denied.
    pub const ACCES: NfsStat = NfsStat(13);
    /// File exists.
    pub const EXIST: NfsStat = NfsStat(17);
    /// Cross-device link.
    pub const XDEV: NfsStat = NfsStat(18);
    /// Not a directory.
    pub const NOTDIR: NfsStat = NfsStat(20);
    /// Is a directory.
    pub const ISDIR: NfsStat = NfsStat(21);
    /// Invalid argument.
    pub const INVAL: NfsStat = NfsStat(22);
    /// File too large.
    pub const FBIG: NfsStat = NfsStat(27);
    /// No space left.
    pub const NOSPC: NfsStat = NfsStat(28);
    /// Read-only file system.
    pub const ROFS: NfsStat = NfsStat(30);
    /// Too many hard links.
    pub const MLINK: NfsStat = NfsStat(31);
    /// Name too long.
    pub const NAMETOOLONG: NfsStat = NfsStat(63);
    /// Directory not empty.
    pub const NOTEMPTY: NfsStat = NfsStat(66);
    /// Quota exceeded.
    pub const DQUOT: NfsStat = NfsStat(69);
    /// Stale file handle.
    pub const STALE: NfsStat = NfsStat(70);
    /// Illegal file handle.
    pub const BADHANDLE: NfsStat = NfsStat(10001);
    /// SETATTR guard failed.
    pub const NOT_SYNC: NfsStat = NfsStat(10002);
    /// READDIR cookie is stale.
    pub const BAD_COOKIE: NfsStat = NfsStat(10003);
    /// Operation not supported.
    pub const NOTSUPP: NfsStat = NfsStat(10004);
    /// Buffer too small.
    pub const TOOSMALL: NfsStat = NfsStat(10005);
    /// Server error.
    pub const SERVERFAULT: NfsStat = NfsStat(10006);
    /// Object type not supported.
    pub const BADTYPE: NfsStat = NfsStat(10007);
    /// The server is busy with the request (here: a walk of the export); retry later.
    pub const JUKEBOX: NfsStat = NfsStat(10008);
}

impl From<io::Error> for NfsStat {
    fn from(e: io::Error) -> NfsStat {
        match e.raw_os_error() {
            Some(libc::EPERM) => NfsStat::PERM,
            Some(libc::ENOENT) => NfsStat::NOENT,
            Some(libc::EACCES) => NfsStat::ACCES,
            Some(libc::EEXIST) => NfsStat::EXIST,
            Some(libc::EXDEV) => NfsStat::XDEV,
            Some(libc::ENOTDIR) => NfsStat::NOTDIR,
            Some(libc::EISDIR) => NfsStat::ISDIR,
            Some(libc::EINVAL) => NfsStat::INVAL,
            Some(libc::EFBIG) => NfsStat::FBIG,
            Some(libc::ENOSPC) => NfsStat::NOSPC,
            Some(libc::EROFS) => NfsStat::ROFS,
            Some(libc::EMLINK) => NfsStat::MLINK,
            Some(libc::ENAMETOOLONG) => NfsStat::NAMETOOLONG,
            Some(libc::ENOTEMPTY) => NfsStat::NOTEMPTY,
            Some(libc::EDQUOT) => NfsStat::DQUOT,
            Some(libc::ESTALE) => NfsStat::STALE,
            // openat2 refuses to leave the root or cross a symlink.
            Some(libc::ELOOP) => NfsStat::ACCES,
            Some(libc::EOPNOTSUPP) => NfsStat::NOTSUPP,
            _ => NfsStat::IO,
        }
    }
}
