//! NFSv3 procedures that change a directory's names: CREATE, MKDIR, SYMLINK, MKNOD, REMOVE,
//! RMDIR, RENAME and LINK.

use super::wire::{post_op_attr, sattr3, status_wcc, wcc, wcc_none};
use super::{Caller, Res, Service};
use crate::nfs::fs::{Export, Handle, NodeKind, Obj, SetAttr, SetTime, Stat};
use crate::nfs::status::NfsStat;
use crate::nfs::xdr::{Reader, Writer, XdrError};

impl Service {
    /// Shared tail of CREATE, MKDIR, SYMLINK and MKNOD.
    pub(super) fn created(
        &self,
        w: &mut Writer,
        export: &Export,
        dir: &Obj,
        res: Result<(Handle, Stat), NfsStat>,
    ) -> Res {
        let post = export.getattr(dir).ok();
        match res {
            Ok((h, st)) => {
                w.u32(0).bool(true).opaque(&h.encode());
                post_op_attr(w, export, Some(&st));
            }
            Err(s) => {
                w.u32(s.0);
            }
        }
        wcc(w, export, Some(&dir.stat), post.as_ref());
        Ok(())
    }

    pub(super) fn create(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "where.dir")?;
        let name = r.opaque(1024, "where.name")?.to_vec();
        let how = r.u32("how.mode")?;
        let (set, verf) = match how {
            0 | 1 => (sattr3(r)?, None),
            2 => (SetAttr::NONE, Some(r.fixed(8, "how.verf")?)),
            value => {
                return Err(XdrError::BadValue {
                    field: "how.mode",
                    value,
                })
            }
        };
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let cred = c.cred_for(&export);
        let cred = cred.as_deref();
        let res = match verf {
            None => export.create(&dir, &name, &set, how == 1, cred),
            Some(v) => {
                // Exclusive create keeps the verifier in the times, like knfsd; a retransmitted
                // CREATE finds its own file and succeeds.
                let secs = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                let nsecs = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) % 1_000_000_000;
                let set = SetAttr {
                    atime: SetTime::At(i64::from(secs), nsecs),
                    mtime: SetTime::At(i64::from(secs), nsecs),
                    ..SetAttr::NONE
                };
                match export.create(&dir, &name, &set, true, cred) {
                    Err(NfsStat::EXIST) => match export.lookup(&dir, &name, cred) {
                        Ok((h, st)) if st.mtime == (i64::from(secs), nsecs) => Ok((h, st)),
                        _ => Err(NfsStat::EXIST),
                    },
                    other => other,
                }
            }
        };
        self.created(w, &export, &dir, res)
    }

    pub(super) fn mkdir(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "where.dir")?;
        let name = r.opaque(1024, "where.name")?;
        let set = sattr3(r)?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = export.mkdir(&dir, name, &set, c.cred_for(&export).as_deref());
        self.created(w, &export, &dir, res)
    }

    pub(super) fn symlink(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "where.dir")?;
        let name = r.opaque(1024, "where.name")?;
        let _set = sattr3(r)?;
        let target = r.opaque(4096, "symlink.symlink_data")?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = export.symlink(&dir, name, target, c.cred_for(&export).as_deref());
        self.created(w, &export, &dir, res)
    }

    pub(super) fn mknod(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "where.dir")?;
        let name = r.opaque(1024, "where.name")?;
        let kind = r.u32("what.type")?;
        let (set, node) = match kind {
            3 | 4 => {
                let set = sattr3(r)?;
                let (ma, mi) = (r.u32("spec.major")?, r.u32("spec.minor")?);
                let node = if kind == 3 {
                    NodeKind::Blk(ma, mi)
                } else {
                    NodeKind::Chr(ma, mi)
                };
                (set, Some(node))
            }
            6 => (sattr3(r)?, Some(NodeKind::Sock)),
            7 => (sattr3(r)?, Some(NodeKind::Fifo)),
            _ => (SetAttr::NONE, None),
        };
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = match node {
            Some(node) => export.mknod(&dir, name, node, &set, c.cred_for(&export).as_deref()),
            None => Err(NfsStat::BADTYPE),
        };
        self.created(w, &export, &dir, res)
    }

    pub(super) fn remove(&self, r: &mut Reader, w: &mut Writer, c: &Caller, rmdir: bool) -> Res {
        let fh = r.opaque(64, "object.dir")?;
        let name = r.opaque(1024, "object.name")?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = export.remove(&dir, name, rmdir, c.cred_for(&export).as_deref());
        let post = export.getattr(&dir).ok();
        w.u32(res.err().unwrap_or(NfsStat::OK).0);
        wcc(w, &export, Some(&dir.stat), post.as_ref());
        Ok(())
    }

    pub(super) fn rename(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let from_fh = r.opaque(64, "from.dir")?;
        let from_name = r.opaque(1024, "from.name")?;
        let to_fh = r.opaque(64, "to.dir")?;
        let to_name = r.opaque(1024, "to.name")?;
        let opened = self
            .open(from_fh, c)
            .and_then(|a| Ok((a, self.open(to_fh, c)?)));
        let ((export, from), (to_export, to)) = match opened {
            Ok(x) => x,
            Err(s) => {
                w.u32(s.0);
                wcc_none(w);
                wcc_none(w);
                return Ok(());
            }
        };
        let res = if export.id() != to_export.id() {
            Err(NfsStat::XDEV)
        } else {
            export.rename(
                &from,
                from_name,
                &to,
                to_name,
                c.cred_for(&export).as_deref(),
            )
        };
        w.u32(res.err().unwrap_or(NfsStat::OK).0);
        let post = export.getattr(&from).ok();
        wcc(w, &export, Some(&from.stat), post.as_ref());
        let post = to_export.getattr(&to).ok();
        wcc(w, &to_export, Some(&to.stat), post.as_ref());
        Ok(())
    }

    pub(super) fn link(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "file")?;
        let dir_fh = r.opaque(64, "link.dir")?;
        let name = r.opaque(1024, "link.name")?;
        let opened = self
            .open(fh, c)
            .and_then(|a| Ok((a, self.open(dir_fh, c)?)));
        let ((export, obj), (dir_export, dir)) = match opened {
            Ok(x) => x,
            Err(s) => {
                w.u32(s.0).bool(false);
                wcc_none(w);
                return Ok(());
            }
        };
        let res = if export.id() != dir_export.id() {
            Err(NfsStat::XDEV)
        } else {
            export.link(&obj, &dir, name, c.cred_for(&export).as_deref())
        };
        let post_dir = export.getattr(&dir).ok();
        match res {
            Ok(st) => {
                w.u32(0);
                post_op_attr(w, &export, Some(&st));
            }
            Err(s) => {
                w.u32(s.0);
                post_op_attr(w, &export, Some(&obj.stat));
            }
        }
        wcc(w, &export, Some(&dir.stat), post_dir.as_ref());
        Ok(())
    }
}
