//! NFSv3 procedures that read a directory: LOOKUP, READDIR and READDIRPLUS.

use super::wire::post_op_attr;
use super::{Caller, Res, Service};
use crate::nfs::fs::{Kind, Stat, HANDLE_LEN};
use crate::nfs::rpc;
use crate::nfs::status::NfsStat;
use crate::nfs::xdr::{self, Reader, Writer};

impl Service {
    pub(super) fn lookup(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "what.dir")?;
        let name = r.opaque(1024, "what.name")?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => {
                w.u32(s.0).bool(false);
                return Ok(());
            }
        };
        match export.lookup(&dir, name, c.cred_for(&export).as_deref()) {
            Ok((h, st)) => {
                w.u32(0).opaque(&h.encode());
                post_op_attr(w, &export, Some(&st));
                post_op_attr(w, &export, Some(&dir.stat));
            }
            Err(s) => {
                w.u32(s.0);
                post_op_attr(w, &export, Some(&dir.stat));
            }
        }
        Ok(())
    }

    pub(super) fn readdir(&self, r: &mut Reader, w: &mut Writer, c: &Caller, plus: bool) -> Res {
        let fh = r.opaque(64, "dir")?;
        let cookie = r.u64("cookie")?;
        let verf: [u8; 8] = r.fixed(8, "cookieverf")?.try_into().unwrap_or([0; 8]);
        let (dircount, maxcount) = if plus {
            (r.u32("dircount")? as usize, r.u32("maxcount")? as usize)
        } else {
            let count = r.u32("count")? as usize;
            (usize::MAX, count)
        };
        let maxcount = maxcount.min(rpc::MAX_RECORD / 2);
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => {
                w.u32(s.0).bool(false);
                return Ok(());
            }
        };
        let expected = cookie_verifier(&dir.stat);
        if cookie != 0 && verf != [0; 8] && verf != expected {
            w.u32(NfsStat::BAD_COOKIE.0);
            post_op_attr(w, &export, Some(&dir.stat));
            return Ok(());
        }
        if dir.stat.kind != Kind::Dir {
            w.u32(NfsStat::NOTDIR.0);
            post_op_attr(w, &export, Some(&dir.stat));
            return Ok(());
        }
        // Fixed part: status, post_op_attr, verifier, end of list, eof.
        let mut used = 4 + 4 + 84 + 8 + 4 + 4;
        let mut dir_used = 0usize;
        let mut entries = Writer::new();
        let mut n = 0usize;
        let res = export.readdir(
            &dir,
            cookie,
            c.cred_for(&export).as_deref(),
            |e, info| {
                let name_len = 4 + e.name.len() + xdr::pad(e.name.len());
                let dir_part = 8 + name_len + 8;
                let size = 4 + dir_part + if plus { 4 + 84 + 4 + 4 + HANDLE_LEN } else { 0 };
                if used + size > maxcount || (plus && dir_used + dir_part > dircount && n > 0) {
                    return false;
                }
                used += size;
                dir_used += dir_part;
                n += 1;
                entries.bool(true).u64(e.ino).opaque(&e.name).u64(e.cookie);
                if plus {
                    match info {
                        Some((h, st)) => {
                            post_op_attr(&mut entries, &export, Some(&st));
                            entries.bool(true).opaque(&h.encode());
                        }
                        None => {
                            entries.bool(false).bool(false);
                        }
                    }
                }
                true
            },
            plus,
        );
        match res {
            Ok(eof) if n > 0 || eof => {
                w.u32(0);
                post_op_attr(w, &export, Some(&dir.stat));
                w.fixed(&expected);
                w.fixed(&entries.into_bytes());
                w.bool(false).bool(eof);
            }
            Ok(_) => {
                w.u32(NfsStat::TOOSMALL.0);
                post_op_attr(w, &export, Some(&dir.stat));
            }
            Err(s) => {
                w.u32(s.0);
                post_op_attr(w, &export, Some(&dir.stat));
            }
        }
        Ok(())
    }
}

/// The READDIR cookie verifier of a directory: its identity, because cookies (seek positions)
/// stay valid across changes; a different verifier means the handle now names another directory.
fn cookie_verifier(st: &Stat) -> [u8; 8] {
    (st.ino ^ (st.born.0 as u64).rotate_left(32) ^ u64::from(st.born.1)).to_be_bytes()
}
