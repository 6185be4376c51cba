//! Operations on names in a directory: LOOKUP, READLINK and the calls that create, remove,
//! rename and link names, each run as the caller.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::syscalls::{self, open_beneath, statx_at};
use super::{AsUser, Export, Handle, Kind, NodeKind, Obj, SetAttr, Stat};
use crate::nfs::rpc::Credential;
use crate::nfs::status::NfsStat;

/// Checks a name sent by a client: one component, not `.` or `..`, at most 255 bytes.
pub fn check_name(name: &[u8]) -> Result<CString, NfsStat> {
    if name.len() > 255 {
        return Err(NfsStat::NAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(NfsStat::INVAL);
    }
    CString::new(name).map_err(|_| NfsStat::INVAL)
}

impl Export {
    /// LOOKUP: `name` in directory `dir`; `..` of the root is the root.
    pub fn lookup(
        &self,
        dir: &Obj,
        name: &[u8],
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        if dir.stat.kind != Kind::Dir {
            return Err(NfsStat::NOTDIR);
        }
        let path = match name {
            b"." => dir.path.clone(),
            b".." => dir.path.parent().unwrap_or(Path::new("")).to_path_buf(),
            _ => {
                let c = check_name(name)?;
                // One component of a directory inside the export, not followed if a symlink:
                // its attributes are the answer. Search permission is checked as the caller.
                let stat = {
                    let _user = AsUser::new(cred)?;
                    statx_at(dir.fd.as_raw_fd(), &c)?
                };
                self.remember_entry(stat.ino, &dir.path, name);
                return Ok((self.handle_of(&stat), stat));
            }
        };
        let fd = open_beneath(self.root.as_raw_fd(), &path, libc::O_PATH, 0)?;
        let stat = statx_at(fd.as_raw_fd(), c"")?;
        self.remember(stat.ino, path);
        Ok((self.handle_of(&stat), stat))
    }

    /// Looks up a path below the root, component by component (for MOUNT of a subdirectory).
    pub fn lookup_path(&self, rel: &str) -> Result<(Handle, Stat), NfsStat> {
        let mut h = self.root_handle();
        let mut stat = self.root_stat;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            let dir = self.resolve(&h)?;
            (h, stat) = self.lookup(&dir, part.as_bytes(), Some(&Credential::default()))?;
        }
        Ok((h, stat))
    }

    /// READLINK: the link's target, as stored.
    pub fn readlink(&self, obj: &Obj) -> Result<Vec<u8>, NfsStat> {
        if obj.stat.kind != Kind::Lnk {
            return Err(NfsStat::INVAL);
        }
        let mut buf = vec![0u8; 4097];
        let n = syscalls::readlink_fd(obj.fd.as_raw_fd(), &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Applies the attributes a creating call asked for, after the kernel made the inode.
    fn finish_create(
        &self,
        dir: &Obj,
        name: &CStr,
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        let path = dir.path.join(OsStr::from_bytes(name.to_bytes()));
        let fd = open_beneath(self.root.as_raw_fd(), &path, libc::O_PATH, 0)?;
        let stat = statx_at(fd.as_raw_fd(), c"")?;
        self.remember(stat.ino, path.clone());
        let obj = Obj { path, fd, stat };
        let stat = if *set != SetAttr::NONE {
            self.setattr(&obj, set, cred)?
        } else {
            stat
        };
        Ok((self.handle_of(&stat), stat))
    }

    /// CREATE: a regular file. `exclusive` (GUARDED or EXCLUSIVE) fails if the name exists;
    /// otherwise (UNCHECKED) an existing file is kept and only the attributes asked for are set.
    pub fn create(
        &self,
        dir: &Obj,
        name: &[u8],
        set: &SetAttr,
        exclusive: bool,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let mode = set.mode.unwrap_or(0o644);
        let made = {
            let _user = AsUser::new(cred)?;
            syscalls::openat(
                dir.fd.as_raw_fd(),
                &c,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode,
            )
        };
        match made {
            Ok(fd) => {
                drop(fd);
                // The umask applied at creation; set the mode exactly, plus size and times.
                let set = SetAttr {
                    mode: Some(mode),
                    ..*set
                };
                self.finish_create(dir, &c, &set, cred)
            }
            Err(e) if !exclusive && e.raw_os_error() == Some(libc::EEXIST) => {
                let existing = statx_at(dir.fd.as_raw_fd(), &c)?;
                if existing.kind != Kind::Reg {
                    return Err(NfsStat::EXIST);
                }
                self.finish_create(dir, &c, set, cred)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// MKDIR.
    pub fn mkdir(
        &self,
        dir: &Obj,
        name: &[u8],
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let mode = set.mode.unwrap_or(0o755);
        {
            let _user = AsUser::new(cred)?;
            syscalls::mkdirat(dir.fd.as_raw_fd(), &c, mode)?;
        }
        let set = SetAttr {
            mode: Some(mode),
            ..*set
        };
        self.finish_create(dir, &c, &set, cred)
    }

    /// SYMLINK: the target is stored as given and never interpreted by the server.
    pub fn symlink(
        &self,
        dir: &Obj,
        name: &[u8],
        target: &[u8],
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let t = CString::new(target).map_err(|_| NfsStat::INVAL)?;
        {
            let _user = AsUser::new(cred)?;
            syscalls::symlinkat(&t, dir.fd.as_raw_fd(), &c)?;
        }
        self.finish_create(dir, &c, &SetAttr::NONE, cred)
    }

    /// MKNOD: device nodes, FIFOs and sockets.
    pub fn mknod(
        &self,
        dir: &Obj,
        name: &[u8],
        kind: NodeKind,
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let perm = set.mode.unwrap_or(0o644) & 0o7777;
        let (fmt, dev) = match kind {
            NodeKind::Chr(ma, mi) => (libc::S_IFCHR, libc::makedev(ma, mi)),
            NodeKind::Blk(ma, mi) => (libc::S_IFBLK, libc::makedev(ma, mi)),
            NodeKind::Fifo => (libc::S_IFIFO, 0),
            NodeKind::Sock => (libc::S_IFSOCK, 0),
        };
        {
            let _user = AsUser::new(cred)?;
            syscalls::mknodat(dir.fd.as_raw_fd(), &c, fmt | perm, dev)?;
        }
        let set = SetAttr {
            mode: Some(perm),
            ..*set
        };
        self.finish_create(dir, &c, &set, cred)
    }

    /// REMOVE (`rmdir` false) or RMDIR (`rmdir` true).
    pub fn remove(
        &self,
        dir: &Obj,
        name: &[u8],
        rmdir: bool,
        cred: Option<&Credential>,
    ) -> Result<(), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let _user = AsUser::new(cred)?;
        let flags = if rmdir { libc::AT_REMOVEDIR } else { 0 };
        syscalls::unlinkat(dir.fd.as_raw_fd(), &c, flags)?;
        Ok(())
    }

    /// RENAME within this export.
    pub fn rename(
        &self,
        from: &Obj,
        from_name: &[u8],
        to: &Obj,
        to_name: &[u8],
        cred: Option<&Credential>,
    ) -> Result<(), NfsStat> {
        self.writable()?;
        let a = check_name(from_name)?;
        let b = check_name(to_name)?;
        let moved = statx_at(from.fd.as_raw_fd(), &a)?;
        {
            let _user = AsUser::new(cred)?;
            syscalls::renameat(from.fd.as_raw_fd(), &a, to.fd.as_raw_fd(), &b)?;
        }
        let old = from.path.join(OsStr::from_bytes(from_name));
        let new = to.path.join(OsStr::from_bytes(to_name));
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if moved.kind == Kind::Dir {
            for p in paths.values_mut() {
                if let Ok(rest) = p.strip_prefix(&old) {
                    *p = new.join(rest);
                }
            }
        }
        paths.insert(moved.ino, new);
        Ok(())
    }

    /// LINK: a new name for `obj` in `dir` (a symlink is linked, not followed).
    pub fn link(
        &self,
        obj: &Obj,
        dir: &Obj,
        name: &[u8],
        cred: Option<&Credential>,
    ) -> Result<Stat, NfsStat> {
        self.writable()?;
        if obj.stat.kind == Kind::Dir {
            return Err(NfsStat::ISDIR);
        }
        let c = check_name(name)?;
        let (parent, old_name) = self.parent_of(obj)?;
        {
            let _user = AsUser::new(cred)?;
            syscalls::linkat(parent.fd.as_raw_fd(), &old_name, dir.fd.as_raw_fd(), &c)?;
        }
        Ok(statx_at(obj.fd.as_raw_fd(), c"")?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_export as export;
    use super::*;

    #[test]
    fn names_are_single_components() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(check_name(bad), Err(NfsStat::INVAL), "{bad:?}");
        }
        assert_eq!(check_name(&[b'a'; 256]), Err(NfsStat::NAMETOOLONG));
    }

    #[test]
    fn dotdot_stops_at_the_root_and_symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).unwrap();
        let ex = export(d.path(), "ro");
        let root = ex.resolve(&ex.root_handle()).unwrap();
        let (h, _) = ex.lookup(&root, b"..", None).unwrap();
        assert_eq!(h, ex.root_handle());
        let (h, st) = ex.lookup(&root, b"etc", None).unwrap();
        assert_eq!(st.kind, Kind::Lnk);
        let link = ex.resolve(&h).unwrap();
        assert_eq!(ex.readlink(&link).unwrap(), b"/etc");
        assert!(ex.lookup(&link, b"passwd", None).is_err());
        assert_eq!(
            ex.read(&link, 0, &mut [0; 10], None).unwrap_err(),
            NfsStat::INVAL
        );
    }

    #[test]
    fn unchecked_create_keeps_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"data").unwrap();
        std::fs::set_permissions(
            d.path().join("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let ex = export(d.path(), "rw");
        let root = ex.resolve(&ex.root_handle()).unwrap();
        let root_cred = Credential::default();
        let (_, st) = ex
            .create(&root, b"f", &SetAttr::NONE, false, Some(&root_cred))
            .unwrap();
        assert_eq!((st.mode, st.size), (0o600, 4));
        assert_eq!(
            ex.create(&root, b"f", &SetAttr::NONE, true, Some(&root_cred))
                .unwrap_err(),
            NfsStat::EXIST
        );
        let (_, st) = ex
            .create(&root, b"g", &SetAttr::NONE, true, Some(&root_cred))
            .unwrap();
        assert_eq!((st.mode, st.size, st.uid), (0o644, 0, 0));
    }

    #[test]
    fn read_only_exports_refuse_changes() {
        let d = tempfile::tempdir().unwrap();
        let ex = export(d.path(), "ro");
        let root = ex.resolve(&ex.root_handle()).unwrap();
        assert_eq!(
            ex.create(&root, b"x", &SetAttr::NONE, false, None)
                .unwrap_err(),
            NfsStat::ROFS
        );
        assert!(!d.path().join("x").exists());
    }
}
