//! MOUNT v3 (RFC 1813 appendix I): MNT, which finds an export (or a directory below one) for
//! the client, and the NULL, DUMP, UMNT, UMNTALL and EXPORT procedures.

use super::{Caller, Service};
use crate::nfs::fs::{Handle, Kind};
use crate::nfs::rpc;
use crate::nfs::status::NfsStat;
use crate::nfs::xdr::{Reader, Writer, XdrError};

impl Service {
    pub(super) fn mount3(
        &self,
        proc_: u32,
        r: &mut Reader,
        w: &mut Writer,
        c: &Caller,
    ) -> Result<bool, XdrError> {
        match proc_ {
            0 | 3 | 4 => {
                if proc_ == 3 {
                    r.opaque(1024, "dirpath")?;
                }
            }
            1 => {
                let path = r.opaque(1024, "dirpath")?;
                let path = String::from_utf8_lossy(path);
                match self.mnt(&path, c) {
                    Ok(h) => {
                        tracing::info!(client = %c.addr, "nfs: mount {path}");
                        // One flavor: AUTH_SYS.
                        w.u32(0).opaque(&h.encode()).u32(1).u32(rpc::AUTH_SYS);
                    }
                    Err(s) => {
                        tracing::info!(client = %c.addr, "nfs: mount {path} refused ({})", s.0);
                        w.u32(s.0);
                    }
                }
            }
            2 => {
                w.bool(false);
            }
            5 => {
                for e in self.table.all() {
                    w.bool(true).opaque(e.spec().name().as_bytes());
                    w.bool(false);
                }
                w.bool(false);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn mnt(&self, path: &str, c: &Caller) -> Result<Handle, NfsStat> {
        let (export, rest) = self.table.find_by_path(path).ok_or(NfsStat::NOENT)?;
        if !export.spec().allows(c.addr) {
            return Err(NfsStat::ACCES);
        }
        self.attach(&export, c).map_err(|_| NfsStat::NOENT)?;
        let (h, st) = export.lookup_path(rest)?;
        if st.kind != Kind::Dir {
            return Err(NfsStat::NOTDIR);
        }
        Ok(h)
    }
}
