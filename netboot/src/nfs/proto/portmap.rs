//! Portmap v2 (RFC 1833): GETPORT and DUMP answer with the NFS and MOUNT port; SET and UNSET
//! are refused.

use std::sync::atomic::Ordering;

use super::{Service, MOUNT_PROGRAM, NFS_PROGRAM};
use crate::nfs::xdr::{Reader, Writer, XdrError};

impl Service {
    pub(super) fn portmap2(
        &self,
        proc_: u32,
        r: &mut Reader,
        w: &mut Writer,
    ) -> Result<bool, XdrError> {
        let port = u32::from(self.nfs_port.load(Ordering::Relaxed));
        let served = [(NFS_PROGRAM, 3), (MOUNT_PROGRAM, 3)];
        match proc_ {
            0 => {}
            1 | 2 => {
                for f in ["prog", "vers", "prot", "port"] {
                    r.u32(f)?;
                }
                w.bool(false);
            }
            3 => {
                let prog = r.u32("prog")?;
                let vers = r.u32("vers")?;
                let prot = r.u32("prot")?;
                let _ = r.u32("port")?;
                // Only TCP (6) is served; 0 tells the client the mapping does not exist.
                let found = prot == 6 && served.contains(&(prog, vers));
                w.u32(if found { port } else { 0 });
            }
            4 => {
                for (prog, vers) in served {
                    w.bool(true).u32(prog).u32(vers).u32(6).u32(port);
                }
                w.bool(false);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}
