//! NFSv3's shared XDR structures (RFC 1813 section 2.6): `sattr3` decoded from calls, and
//! `fattr3`, `post_op_attr` and `wcc_data` encoded into replies.

use super::Res;
use crate::nfs::fs::{Export, SetAttr, SetTime, Stat};
use crate::nfs::status::NfsStat;
use crate::nfs::xdr::{Reader, Writer, XdrError};

pub(super) fn sattr3(r: &mut Reader) -> Result<SetAttr, XdrError> {
    let mode = if r.bool("set_mode")? {
        Some(r.u32("mode")?)
    } else {
        None
    };
    let uid = if r.bool("set_uid")? {
        Some(r.u32("uid")?)
    } else {
        None
    };
    let gid = if r.bool("set_gid")? {
        Some(r.u32("gid")?)
    } else {
        None
    };
    let size = if r.bool("set_size")? {
        Some(r.u64("size")?)
    } else {
        None
    };
    let mut time = |field: &'static str| -> Result<SetTime, XdrError> {
        Ok(match r.u32(field)? {
            0 => SetTime::Keep,
            1 => SetTime::Now,
            2 => SetTime::At(i64::from(r.u32(field)?), r.u32(field)?),
            value => return Err(XdrError::BadValue { field, value }),
        })
    };
    let atime = time("set_atime")?;
    let mtime = time("set_mtime")?;
    Ok(SetAttr {
        mode,
        uid,
        gid,
        size,
        atime,
        mtime,
    })
}

pub(super) fn fattr3(w: &mut Writer, export: &Export, st: &Stat) {
    w.u32(st.kind as u32)
        .u32(st.mode)
        .u32(st.nlink)
        .u32(st.uid)
        .u32(st.gid)
        .u64(st.size)
        .u64(st.used)
        .u32(st.rdev.0)
        .u32(st.rdev.1)
        .u64(export.id())
        .u64(st.ino);
    for t in [st.atime, st.mtime, st.ctime] {
        w.u32(t.0 as u32).u32(t.1);
    }
}

pub(super) fn post_op_attr(w: &mut Writer, export: &Export, st: Option<&Stat>) {
    match st {
        Some(st) => {
            w.bool(true);
            fattr3(w, export, st);
        }
        None => {
            w.bool(false);
        }
    }
}

pub(super) fn wcc(w: &mut Writer, export: &Export, pre: Option<&Stat>, post: Option<&Stat>) {
    match pre {
        Some(st) => {
            w.bool(true).u64(st.size);
            w.u32(st.mtime.0 as u32).u32(st.mtime.1);
            w.u32(st.ctime.0 as u32).u32(st.ctime.1);
        }
        None => {
            w.bool(false);
        }
    }
    post_op_attr(w, export, post);
}

pub(super) fn wcc_none(w: &mut Writer) {
    w.bool(false).bool(false);
}

pub(super) fn status_wcc(w: &mut Writer, s: NfsStat, _: Option<()>) -> Res {
    w.u32(s.0);
    wcc_none(w);
    Ok(())
}
