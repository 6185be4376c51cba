//! NFSv3 procedures that read an object's data: READ (copied into the reply, or left in the
//! file for the socket loop to send) and READLINK.

use super::wire::post_op_attr;
use super::{Caller, FileData, Res, Service, MAX_IO};
use crate::metrics::METRICS;
use crate::nfs::status::NfsStat;
use crate::nfs::xdr::{Reader, Writer};

impl Service {
    pub(super) fn readlink(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "symlink")?;
        match self.open(fh, c) {
            Ok((export, obj)) => match export.readlink(&obj) {
                Ok(target) => {
                    w.u32(0);
                    post_op_attr(w, &export, Some(&obj.stat));
                    w.opaque(&target);
                }
                Err(s) => {
                    w.u32(s.0);
                    post_op_attr(w, &export, Some(&obj.stat));
                }
            },
            Err(s) => {
                w.u32(s.0).bool(false);
            }
        }
        Ok(())
    }

    pub(super) fn read(
        &self,
        r: &mut Reader,
        w: &mut Writer,
        c: &Caller,
        file: Option<&mut Option<FileData>>,
    ) -> Res {
        let fh = r.opaque(64, "file")?;
        let offset = r.u64("offset")?;
        let count = r.u32("count")?.min(MAX_IO);
        let (export, obj) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => {
                w.u32(s.0).bool(false);
                return Ok(());
            }
        };
        if let Some(slot) = file {
            // The reply's head says how many bytes follow; they are sent from the file.
            match export.read_file(&obj, offset, count as usize, c.cred_for(&export).as_deref()) {
                Ok((fd, n, eof)) => {
                    METRICS.nfs.read(export.spec().name(), n as u64);
                    w.u32(0);
                    post_op_attr(w, &export, Some(&obj.stat));
                    w.u32(n as u32).bool(eof).u32(n as u32);
                    if n > 0 {
                        *slot = Some(FileData {
                            file: fd,
                            offset,
                            len: n,
                        });
                    }
                }
                Err(s) => {
                    w.u32(s.0);
                    post_op_attr(w, &export, Some(&obj.stat));
                }
            }
            return Ok(());
        }
        // The data is read straight into the reply; count and eof are filled in after.
        let start = w.len();
        w.reserve(count as usize + 128);
        w.u32(0);
        post_op_attr(w, &export, Some(&obj.stat));
        let count_at = w.len();
        w.u32(0).bool(false);
        let mut eof = false;
        let res = w.opaque_in_place(count as usize, |buf| {
            let (n, e) = export.read(&obj, offset, buf, c.cred_for(&export).as_deref())?;
            eof = e;
            Ok::<_, NfsStat>(n)
        });
        match res {
            Ok(n) => {
                METRICS.nfs.read(export.spec().name(), n as u64);
                let b = w.bytes_mut();
                b[count_at..count_at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                b[count_at + 4..count_at + 8].copy_from_slice(&u32::from(eof).to_be_bytes());
            }
            Err(s) => {
                w.truncate(start);
                w.u32(s.0);
                post_op_attr(w, &export, Some(&obj.stat));
            }
        }
        Ok(())
    }
}
