//! NFSv3 procedures that write an object's data: WRITE and COMMIT, with the server's write
//! verifier.

use super::wire::{status_wcc, wcc};
use super::{Caller, Res, Service};
use crate::metrics::METRICS;
use crate::nfs::fs::boot_verifier;
use crate::nfs::rpc;
use crate::nfs::xdr::{Reader, Writer, XdrError};

impl Service {
    pub(super) fn write(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "file")?;
        let offset = r.u64("offset")?;
        let count = r.u32("count")?;
        let stable = r.u32("stable")?;
        if stable > 2 {
            return Err(XdrError::BadValue {
                field: "stable",
                value: stable,
            });
        }
        let data = r.opaque(rpc::MAX_RECORD, "data")?;
        let data = &data[..data.len().min(count as usize)];
        let (export, obj) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        match export.write(
            &obj,
            offset,
            data,
            stable != 0,
            c.cred_for(&export).as_deref(),
        ) {
            Ok(st) => {
                METRICS.nfs.written(export.spec().name(), data.len() as u64);
                w.u32(0);
                wcc(w, &export, Some(&obj.stat), Some(&st));
                // DATA_SYNC and FILE_SYNC are both answered with FILE_SYNC: fsync covers both.
                w.u32(data.len() as u32)
                    .u32(if stable == 0 { 0 } else { 2 })
                    .fixed(&boot_verifier());
            }
            Err(s) => {
                w.u32(s.0);
                wcc(w, &export, Some(&obj.stat), None);
            }
        }
        Ok(())
    }

    pub(super) fn commit(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "file")?;
        let _offset = r.u64("offset")?;
        let _count = r.u32("count")?;
        let (export, obj) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        match export.commit(&obj) {
            Ok(st) => {
                w.u32(0);
                wcc(w, &export, Some(&obj.stat), Some(&st));
                w.fixed(&boot_verifier());
            }
            Err(s) => {
                w.u32(s.0);
                wcc(w, &export, Some(&obj.stat), None);
            }
        }
        Ok(())
    }
}
