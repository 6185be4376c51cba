//! Operations on an object's data and attributes: GETATTR, SETATTR, READ, WRITE and COMMIT,
//! and the write verifier COMMIT answers with.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::SystemTime;

use super::syscalls::{self, cstr, open_beneath, statx_at};
use super::{AsUser, Export, Kind, Obj, SetAttr, SetTime, Stat};
use crate::nfs::rpc::Credential;
use crate::nfs::status::NfsStat;

impl Export {
    /// Attributes of an object, freshly read.
    pub fn getattr(&self, obj: &Obj) -> Result<Stat, NfsStat> {
        Ok(statx_at(obj.fd.as_raw_fd(), c"")?)
    }

    /// Opens a regular file for I/O as the current (client) user, or as root for its owner.
    fn open_file(
        &self,
        obj: &Obj,
        flags: i32,
        cred: Option<&Credential>,
    ) -> Result<OwnedFd, NfsStat> {
        match obj.stat.kind {
            Kind::Reg => {}
            Kind::Dir => return Err(NfsStat::ISDIR),
            _ => return Err(NfsStat::INVAL),
        }
        let open = || open_beneath(self.root.as_raw_fd(), &obj.path, flags, 0);
        let fd = {
            let _user = AsUser::new(cred)?;
            open()
        };
        let fd = match fd {
            Err(e)
                if e.raw_os_error() == Some(libc::EACCES)
                    && cred.is_some_and(|c| c.uid == obj.stat.uid) =>
            {
                open()
            }
            other => other,
        }?;
        let st = statx_at(fd.as_raw_fd(), c"")?;
        if st.ino != obj.stat.ino {
            return Err(NfsStat::STALE);
        }
        Ok(fd)
    }

    /// READ: fills `buf` from `offset` on; returns the bytes read and whether the end of file
    /// was reached.
    pub fn read(
        &self,
        obj: &Obj,
        offset: u64,
        buf: &mut [u8],
        cred: Option<&Credential>,
    ) -> Result<(usize, bool), NfsStat> {
        let fd = self.open_file(obj, libc::O_RDONLY, cred)?;
        if offset.saturating_add(buf.len() as u64) > i64::MAX as u64 {
            // Beyond any file Linux can hold: nothing to read.
            return Ok((0, true));
        }
        let mut got = 0;
        while got < buf.len() {
            let n = match syscalls::pread(fd.as_raw_fd(), &mut buf[got..], offset + got as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                break;
            }
            got += n;
        }
        let size = if got == buf.len() {
            statx_at(fd.as_raw_fd(), c"")?.size
        } else {
            // A short read means the end of the file.
            0
        };
        Ok((got, offset + got as u64 >= size))
    }

    /// READ without copying: opens the file (as the caller) and says how many bytes from
    /// `offset` on the reply carries (at most `count`, up to the current end of the file) and
    /// whether that reaches the end. The caller sends them straight from the page cache.
    pub fn read_file(
        &self,
        obj: &Obj,
        offset: u64,
        count: usize,
        cred: Option<&Credential>,
    ) -> Result<(OwnedFd, usize, bool), NfsStat> {
        let fd = self.open_file(obj, libc::O_RDONLY, cred)?;
        let size = statx_at(fd.as_raw_fd(), c"")?.size;
        if offset >= size || offset > i64::MAX as u64 {
            return Ok((fd, 0, true));
        }
        let n = (size - offset).min(count as u64) as usize;
        Ok((fd, n, offset + n as u64 >= size))
    }

    /// WRITE: all of `data` at `offset`; `sync` forces data and metadata to disk first.
    pub fn write(
        &self,
        obj: &Obj,
        offset: u64,
        data: &[u8],
        sync: bool,
        cred: Option<&Credential>,
    ) -> Result<Stat, NfsStat> {
        self.writable()?;
        if offset.saturating_add(data.len() as u64) > i64::MAX as u64 {
            return Err(NfsStat::FBIG);
        }
        let fd = self.open_file(obj, libc::O_WRONLY, cred)?;
        let mut done = 0;
        while done < data.len() {
            match syscalls::pwrite(fd.as_raw_fd(), &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if sync {
            syscalls::fsync(fd.as_raw_fd())?;
        }
        Ok(statx_at(fd.as_raw_fd(), c"")?)
    }

    /// COMMIT: flushes a file's unstable writes to disk.
    pub fn commit(&self, obj: &Obj) -> Result<Stat, NfsStat> {
        self.writable()?;
        if obj.stat.kind != Kind::Reg {
            return Ok(obj.stat);
        }
        let fd = open_beneath(self.root.as_raw_fd(), &obj.path, libc::O_RDONLY, 0)?;
        syscalls::fsync(fd.as_raw_fd())?;
        Ok(statx_at(fd.as_raw_fd(), c"")?)
    }

    /// SETATTR, run as the caller (so only owners and root may chmod or chown).
    pub fn setattr(
        &self,
        obj: &Obj,
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<Stat, NfsStat> {
        self.writable()?;
        if let Some(size) = set.size {
            let fd = self.open_file(obj, libc::O_WRONLY, cred)?;
            syscalls::ftruncate(fd.as_raw_fd(), size)?;
        }
        let _user = AsUser::new(cred)?;
        if set.uid.is_some() || set.gid.is_some() {
            let uid = set.uid.unwrap_or(u32::MAX);
            let gid = set.gid.unwrap_or(u32::MAX);
            // An O_PATH descriptor with AT_EMPTY_PATH changes that very inode.
            syscalls::fchown_fd(obj.fd.as_raw_fd(), uid, gid)?;
        }
        if let Some(mode) = set.mode {
            if obj.stat.kind != Kind::Lnk {
                // A symlink has no mode of its own on Linux; for anything else the /proc
                // link of our descriptor names that inode, so nothing can be swapped in.
                let proc = cstr(format!("/proc/self/fd/{}", obj.fd.as_raw_fd()).as_bytes())?;
                syscalls::chmod(&proc, mode & 0o7777)?;
            }
        }
        if set.atime != SetTime::Keep || set.mtime != SetTime::Keep {
            let ts = |t: SetTime| match t {
                SetTime::Keep => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                SetTime::Now => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                SetTime::At(s, n) => libc::timespec {
                    tv_sec: s as libc::time_t,
                    tv_nsec: i64::from(n.min(999_999_999)) as libc::c_long,
                },
            };
            let times = [ts(set.atime), ts(set.mtime)];
            let (parent, name) = self.parent_of(obj)?;
            let (fd, name) = if obj.path.as_os_str().is_empty() {
                (obj.fd.as_raw_fd(), c"".to_owned())
            } else {
                (parent.fd.as_raw_fd(), name)
            };
            let flags = if name.is_empty() {
                libc::AT_EMPTY_PATH
            } else {
                libc::AT_SYMLINK_NOFOLLOW
            };
            syscalls::utimensat(fd, &name, &times, flags)?;
        }
        Ok(statx_at(obj.fd.as_raw_fd(), c"")?)
    }
}

/// The write verifier of this server instance: changes on every start, as COMMIT requires.
pub fn boot_verifier() -> [u8; 8] {
    static VERF: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    *VERF.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_be_bytes()
    })
}
