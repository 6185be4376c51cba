//! The system calls of the filesystem layer's operations, each behind a safe wrapper that
//! checks its result: all of its `unsafe` except the credential switch ([`super::AsUser`]).
//!
//! Descriptors are passed as [`RawFd`]: a wrong or closed descriptor makes the kernel answer
//! `EBADF`, which is an error, not undefined behaviour. What the kernel reads or writes through
//! a pointer (names, buffers, out-structures) is always a Rust value borrowed for the call.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{DirEntry, Kind, Stat};

impl Stat {
    fn from_statx(s: &libc::statx) -> Stat {
        let kind = match u32::from(s.stx_mode) & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Lnk,
            libc::S_IFBLK => Kind::Blk,
            libc::S_IFCHR => Kind::Chr,
            libc::S_IFSOCK => Kind::Sock,
            libc::S_IFIFO => Kind::Fifo,
            _ => Kind::Reg,
        };
        let t = |t: &libc::statx_timestamp| (t.tv_sec, t.tv_nsec);
        Stat {
            kind,
            mode: u32::from(s.stx_mode) & 0o7777,
            nlink: s.stx_nlink,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            used: s.stx_blocks.saturating_mul(512),
            rdev: (s.stx_rdev_major, s.stx_rdev_minor),
            ino: s.stx_ino,
            atime: t(&s.stx_atime),
            mtime: t(&s.stx_mtime),
            ctime: t(&s.stx_ctime),
            born: if s.stx_mask & libc::STATX_BTIME != 0 {
                t(&s.stx_btime)
            } else {
                (0, 0)
            },
        }
    }
}

/// `bytes` as a C string; `EINVAL` if it holds a NUL.
pub(super) fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `statx` of `name` in `dirfd` (or of `dirfd` itself for an empty name), never following.
pub(super) fn statx_at(dirfd: RawFd, name: &CStr) -> io::Result<Stat> {
    // SAFETY: `statx` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut s: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | libc::AT_NO_AUTOMOUNT
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: `name` is NUL-terminated and `s` is a live, writable `statx` the kernel fills;
    // both outlive the call.
    cvt(unsafe {
        libc::statx(
            dirfd,
            name.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut s,
        )
    })?;
    Ok(Stat::from_statx(&s))
}

/// Opens `path` beneath `root` without following any symlink and without leaving `root`.
pub(super) fn open_beneath(root: RawFd, path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let path: &OsStr = if path.as_os_str().is_empty() {
        OsStr::new(".")
    } else {
        path.as_os_str()
    };
    let c = cstr(path.as_bytes())?;
    // SAFETY: `open_how` is a plain C struct of integers, for which all-zero bytes are valid
    // (and zero is what the kernel wants in every field not set below).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads a NUL-terminated path (`c`) and an `open_how` of exactly the size
    // passed (`how`), both alive for the call; it writes nothing of ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 just returned this descriptor: it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a directory by absolute path as `O_PATH` (an export's root).
pub(super) fn open_dir_path(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: open just returned this descriptor: it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dirfd, name, flags, mode)`.
pub(super) fn openat(dirfd: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; the mode is passed as the
    // `mode_t` the variadic argument expects.
    let fd = cvt(unsafe { libc::openat(dirfd, name.as_ptr(), flags, mode as libc::mode_t) })?;
    // SAFETY: openat just returned this descriptor: it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the target of the symlink `fd` is an `O_PATH` descriptor of into `buf`; the length.
pub(super) fn readlink_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the empty path is NUL-terminated (with an `O_PATH` descriptor of a symlink it
    // reads that link); the kernel writes at most `buf.len()` bytes into `buf`, borrowed
    // mutably for the call.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `pread` into `buf` at `offset` (at most `i64::MAX`); the bytes read.
pub(super) fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, borrowed mutably for the
    // call.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `pwrite` of `data` at `offset` (at most `i64::MAX`); the bytes written.
pub(super) fn pwrite(fd: RawFd, data: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `data.len()` bytes from `data`, borrowed for the call.
    let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset as libc::off_t) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `fsync`.
pub(super) fn fsync(fd: RawFd) -> io::Result<()> {
    // SAFETY: no pointer is passed; a bad descriptor is an error.
    cvt(unsafe { libc::fsync(fd) })?;
    Ok(())
}

/// `ftruncate` to `size` (at most `i64::MAX`).
pub(super) fn ftruncate(fd: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: no pointer is passed; a bad descriptor or size is an error.
    cvt(unsafe { libc::ftruncate(fd, size as libc::off_t) })?;
    Ok(())
}

/// Changes the owner of the very inode `fd` is an `O_PATH` descriptor of (`u32::MAX`: keep).
pub(super) fn fchown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: the empty path is NUL-terminated; with AT_EMPTY_PATH it names `fd` itself.
    cvt(unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `chmod` of a path.
pub(super) fn chmod(path: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::chmod(path.as_ptr(), mode) })?;
    Ok(())
}

/// `utimensat(fd, name, [atime, mtime], flags)`.
pub(super) fn utimensat(
    fd: RawFd,
    name: &CStr,
    times: &[libc::timespec; 2],
    flags: i32,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `times` is the array of two timespecs the call
    // reads; both outlive it.
    cvt(unsafe { libc::utimensat(fd, name.as_ptr(), times.as_ptr(), flags) })?;
    Ok(())
}

/// `mkdirat`.
pub(super) fn mkdirat(dirfd: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) })?;
    Ok(())
}

/// `symlinkat(target, dirfd, name)`.
pub(super) fn symlinkat(target: &CStr, dirfd: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dirfd, name.as_ptr()) })?;
    Ok(())
}

/// `mknodat`.
pub(super) fn mknodat(dirfd: RawFd, name: &CStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mknodat(dirfd, name.as_ptr(), mode, dev) })?;
    Ok(())
}

/// `unlinkat`.
pub(super) fn unlinkat(dirfd: RawFd, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::unlinkat(dirfd, name.as_ptr(), flags) })?;
    Ok(())
}

/// `renameat`.
pub(super) fn renameat(from: RawFd, from_name: &CStr, to: RawFd, to_name: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call.
    cvt(unsafe { libc::renameat(from, from_name.as_ptr(), to, to_name.as_ptr()) })?;
    Ok(())
}

/// `linkat` with flags 0 (a symlink is linked, not followed).
pub(super) fn linkat(from: RawFd, from_name: &CStr, to: RawFd, to_name: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and outlive the call.
    cvt(unsafe { libc::linkat(from, from_name.as_ptr(), to, to_name.as_ptr(), 0) })?;
    Ok(())
}

/// `fstatvfs`.
pub(super) fn fstatvfs(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: `statvfs` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `s` is a live, writable `statvfs` the kernel fills.
    cvt(unsafe { libc::fstatvfs(fd, &mut s) })?;
    Ok(s)
}

/// A directory stream (`fdopendir`) that can resume at a cookie (`seekdir`).
pub(super) struct DirStream(*mut libc::DIR);

impl DirStream {
    pub(super) fn open(fd: OwnedFd) -> io::Result<DirStream> {
        // SAFETY: `fd` is an open descriptor we own; on success the DIR owns it (closedir
        // closes it), so it is forgotten below; on failure it stays ours and is closed.
        let dir = unsafe { libc::fdopendir(fd.as_raw_fd()) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(fd);
        Ok(DirStream(dir))
    }

    pub(super) fn seek(&mut self, cookie: u64) {
        // SAFETY: `self.0` is a DIR from a successful fdopendir, not closed before drop.
        unsafe { libc::seekdir(self.0, cookie as libc::c_long) }
    }

    pub(super) fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        // SAFETY: `__errno_location` points at this thread's errno, writable; readdir64 reports
        // both the end and an error as NULL, so errno is cleared to tell them apart.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `self.0` is a DIR from a successful fdopendir, not closed before drop, and used
        // by this thread only (`&mut self`).
        let ent = unsafe { libc::readdir64(self.0) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(0) {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: a non-NULL result points at an entry inside the DIR, valid until the next
        // readdir64 or closedir on it, neither of which can happen while `self` is borrowed
        // here; it is copied out below.
        let ent = unsafe { &*ent };
        // SAFETY: as above; `d_name` is NUL-terminated within the entry.
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) };
        Ok(Some(DirEntry {
            name: name.to_bytes().to_vec(),
            ino: ent.d_ino,
            is_dir: ent.d_type == libc::DT_DIR,
            cookie: ent.d_off as u64,
        }))
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a DIR from a successful fdopendir, closed only here, once.
        unsafe { libc::closedir(self.0) };
    }
}
