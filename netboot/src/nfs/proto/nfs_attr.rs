//! NFSv3 procedures on attributes and the file system: GETATTR, SETATTR, ACCESS, FSSTAT,
//! FSINFO and PATHCONF.

use super::wire::{fattr3, post_op_attr, sattr3, status_wcc, wcc};
use super::{Caller, Res, Service, MAX_IO};
use crate::nfs::fs::{Kind, Stat};
use crate::nfs::rpc::Credential;
use crate::nfs::status::NfsStat;
use crate::nfs::xdr::{Reader, Writer};

const ACCESS_READ: u32 = 0x01;
const ACCESS_LOOKUP: u32 = 0x02;
const ACCESS_MODIFY: u32 = 0x04;
const ACCESS_EXTEND: u32 = 0x08;
const ACCESS_DELETE: u32 = 0x10;
const ACCESS_EXECUTE: u32 = 0x20;

impl Service {
    pub(super) fn getattr(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "object")?;
        match self.open(fh, c).and_then(|(e, o)| Ok((e.getattr(&o)?, e))) {
            Ok((st, e)) => {
                w.u32(0);
                fattr3(w, &e, &st);
            }
            Err(s) => {
                w.u32(s.0);
            }
        }
        Ok(())
    }

    pub(super) fn setattr(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "object")?;
        let set = sattr3(r)?;
        let guard = if r.bool("guard.check")? {
            Some((r.u32("guard.ctime")?, r.u32("guard.ctime")?))
        } else {
            None
        };
        let (export, obj) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        if let Some((s, ns)) = guard {
            if (obj.stat.ctime.0 as u32, obj.stat.ctime.1) != (s, ns) {
                w.u32(NfsStat::NOT_SYNC.0);
                wcc(w, &export, Some(&obj.stat), Some(&obj.stat));
                return Ok(());
            }
        }
        let res = export.setattr(&obj, &set, c.cred_for(&export).as_deref());
        match res {
            Ok(st) => {
                w.u32(0);
                wcc(w, &export, Some(&obj.stat), Some(&st));
            }
            Err(s) => {
                w.u32(s.0);
                let post = export.getattr(&obj).ok();
                wcc(w, &export, Some(&obj.stat), post.as_ref());
            }
        }
        Ok(())
    }

    pub(super) fn access(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "object")?;
        let want = r.u32("access")?;
        match self.open(fh, c) {
            Ok((export, obj)) => {
                let allowed = allowed_access(
                    &obj.stat,
                    c.cred_for(&export).as_deref(),
                    export.read_only(),
                );
                w.u32(0);
                post_op_attr(w, &export, Some(&obj.stat));
                w.u32(want & allowed);
            }
            Err(s) => {
                w.u32(s.0).bool(false);
            }
        }
        Ok(())
    }

    pub(super) fn fsstat(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "fsroot")?;
        match self.open(fh, c).and_then(|(e, o)| Ok((e.fsstat()?, e, o))) {
            Ok((v, export, obj)) => {
                w.u32(0);
                post_op_attr(w, &export, Some(&obj.stat));
                for x in v {
                    w.u64(x);
                }
                w.u32(0);
            }
            Err(s) => {
                w.u32(s.0).bool(false);
            }
        }
        Ok(())
    }

    pub(super) fn fsinfo(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "fsroot")?;
        match self.open(fh, c) {
            Ok((export, obj)) => {
                w.u32(0);
                post_op_attr(w, &export, Some(&obj.stat));
                // rtmax rtpref rtmult wtmax wtpref wtmult dtpref
                w.u32(MAX_IO).u32(MAX_IO).u32(4096);
                w.u32(MAX_IO).u32(MAX_IO).u32(4096);
                w.u32(64 * 1024);
                w.u64(u64::MAX >> 1);
                w.u32(0).u32(1);
                // FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME
                w.u32(0x1 | 0x2 | 0x8 | 0x10);
            }
            Err(s) => {
                w.u32(s.0).bool(false);
            }
        }
        Ok(())
    }

    pub(super) fn pathconf(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "object")?;
        match self.open(fh, c) {
            Ok((export, obj)) => {
                w.u32(0);
                post_op_attr(w, &export, Some(&obj.stat));
                // linkmax, name_max, no_trunc, chown_restricted, case_insensitive, case_preserving
                w.u32(65000)
                    .u32(255)
                    .bool(true)
                    .bool(true)
                    .bool(false)
                    .bool(true);
            }
            Err(s) => {
                w.u32(s.0).bool(false);
            }
        }
        Ok(())
    }
}

/// The ACCESS bits `cred` has on an object, from its mode as the kernel would judge them.
fn allowed_access(st: &Stat, cred: Option<&Credential>, read_only: bool) -> u32 {
    let is_dir = st.kind == Kind::Dir;
    let any_x = st.mode & 0o111 != 0;
    let rwx = match cred {
        Some(c) if c.uid == 0 => 0o6 | if is_dir || any_x { 1 } else { 0 },
        Some(c) if c.uid == st.uid => (st.mode >> 6) & 7,
        Some(c) if c.gid == st.gid || c.gids.contains(&st.gid) => (st.mode >> 3) & 7,
        _ => st.mode & 7,
    };
    let mut bits = 0;
    if rwx & 4 != 0 {
        bits |= ACCESS_READ;
    }
    if rwx & 2 != 0 {
        bits |= ACCESS_MODIFY | ACCESS_EXTEND | if is_dir { ACCESS_DELETE } else { 0 };
    }
    if rwx & 1 != 0 {
        bits |= if is_dir {
            ACCESS_LOOKUP
        } else {
            ACCESS_EXECUTE
        };
    }
    if read_only {
        bits &= !(ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE);
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_follows_mode_bits() {
        let st = Stat {
            kind: Kind::Reg,
            mode: 0o640,
            nlink: 1,
            uid: 10,
            gid: 20,
            size: 0,
            used: 0,
            rdev: (0, 0),
            ino: 1,
            atime: (0, 0),
            mtime: (0, 0),
            ctime: (0, 0),
            born: (0, 0),
        };
        let who = |uid, gid| Credential {
            uid,
            gid,
            gids: vec![],
        };
        assert_eq!(allowed_access(&st, Some(&who(10, 0)), false), 0x0d);
        assert_eq!(allowed_access(&st, Some(&who(11, 20)), false), 0x01);
        assert_eq!(allowed_access(&st, Some(&who(11, 21)), false), 0);
        assert_eq!(allowed_access(&st, Some(&who(0, 0)), true), 0x01);
    }
}
