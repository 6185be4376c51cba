//! NFSv3 (RFC 1813), MOUNT v3 (RFC 1813 appendix I) and portmap v2 (RFC 1833) procedures: one
//! decoded call in, one encoded reply out, no sockets.
//!
//! [`Service::handle`] is synchronous and runs on a plain thread (a connection's own, or tokio's
//! blocking pool): the filesystem calls it makes block, and each runs under the caller's
//! credential (see [`super::fs::AsUser`]). [`Service::handle_with_file`] leaves a READ's data in
//! the file, for the socket loop to send without copying it ([`Reply::WithFile`]). The `_on`
//! variants take the TCP [`Connection`] the call came on and record it as a user of every export
//! the call resolves into, so that removing the export closes it ([`super::conns`]). Argument
//! decoding failures become `GARBAGE_ARGS`; unknown programs, versions and procedures get their
//! RPC errors; nothing a client sends can panic it (`tests::fuzz_tests` feeds it garbage).
//!
//! **Layout.** This file decodes the call and dispatches it; each procedure group has a file:
//! `nfs_attr` (GETATTR, SETATTR, ACCESS, FSSTAT, FSINFO, PATHCONF), `nfs_dir` (LOOKUP,
//! READDIR, READDIRPLUS), `nfs_read` (READ, READLINK), `nfs_write` (WRITE, COMMIT),
//! `nfs_names` (CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK), `mount` and
//! `portmap`; `wire` has the XDR structures they share.

mod mount;
mod nfs_attr;
mod nfs_dir;
mod nfs_names;
mod nfs_read;
mod nfs_write;
mod portmap;
#[cfg(test)]
mod tests;
mod wire;

use std::borrow::Cow;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use super::conns::Connection;
use super::exports::ExportTable;
use super::fs::{Export, Handle, Obj};
use super::rpc::{self, Accept, Call, Credential};
use super::status::NfsStat;
use super::xdr::{Reader, Writer, XdrError};

/// The NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// The MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The portmap (rpcbind) program number.
pub const PORTMAP_PROGRAM: u32 = 100_000;

/// Largest READ and WRITE payload offered to clients (FSINFO rtmax/wtmax).
pub const MAX_IO: u32 = 1024 * 1024;

/// The RPC programs of the NFS server over one export table.
#[derive(Debug)]
pub struct Service {
    table: ExportTable,
    nfs_port: AtomicU16,
}

/// READ data that follows a reply's head on the wire: `len` bytes of `file` from `offset`,
/// then XDR padding to a multiple of four.
#[derive(Debug)]
pub struct FileData {
    /// The file, opened for reading as the caller.
    pub file: OwnedFd,
    /// Where the data starts.
    pub offset: u64,
    /// How many bytes the head announced.
    pub len: usize,
}

/// A reply from [`Service::handle_with_file`].
#[derive(Debug)]
pub enum Reply {
    /// The whole reply (record-mark room first).
    Bytes(Writer),
    /// The head of a READ reply (record-mark room first), then file data.
    WithFile(Writer, FileData),
}

/// Who is calling: the peer address, its credential and its connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address (exports may be limited by it).
    pub addr: IpAddr,
    /// The `AUTH_SYS` credential, `None` for `AUTH_NONE`.
    pub cred: Option<Credential>,
    /// The TCP connection, recorded as a user of the exports the call resolves into.
    pub conn: Option<Arc<Connection>>,
}

/// The uid and gid a squashed root caller acts as (nobody and nogroup, as `AUTH_NONE` callers).
pub const ANON_ID: u32 = 65534;

impl Caller {
    /// The credential `export`'s operations run with: the caller's own, or, where the export
    /// squashes root, with uid 0, gid 0 and group 0 each replaced by [`ANON_ID`] (as knfsd's
    /// `root_squash` does).
    pub fn cred_for(&self, export: &Export) -> Option<Cow<'_, Credential>> {
        let cred = self.cred.as_ref()?;
        let rooted = cred.uid == 0 || cred.gid == 0 || cred.gids.contains(&0);
        if !rooted || !export.spec().root_squash() {
            return Some(Cow::Borrowed(cred));
        }
        let anon = |id: u32| if id == 0 { ANON_ID } else { id };
        Some(Cow::Owned(Credential {
            uid: anon(cred.uid),
            gid: anon(cred.gid),
            gids: cred.gids.iter().map(|&g| anon(g)).collect(),
        }))
    }
}

type Res = Result<(), XdrError>;

impl Service {
    /// A service over `table`.
    pub fn new(table: ExportTable) -> Service {
        Service {
            table,
            nfs_port: AtomicU16::new(0),
        }
    }

    /// The export table served.
    pub fn table(&self) -> &ExportTable {
        &self.table
    }

    /// Records the TCP port NFS and MOUNT are bound to, for portmap GETPORT.
    pub fn set_nfs_port(&self, port: u16) {
        self.nfs_port.store(port, Ordering::Relaxed);
    }

    /// Handles one RPC record from `addr`; `None` when nothing should be answered.
    ///
    /// The reply starts with four bytes of room for the record mark ([`rpc::finish_record`]).
    pub fn handle(&self, record: &[u8], addr: IpAddr) -> Option<Writer> {
        self.dispatch(record, addr, None, None)
    }

    /// [`Service::handle`] for a call that came on `conn`.
    pub fn handle_on(&self, record: &[u8], conn: &Arc<Connection>) -> Option<Writer> {
        self.dispatch(record, conn.peer().ip(), Some(conn), None)
    }

    /// Like [`Service::handle`], but a successful READ's data is left in the file
    /// ([`Reply::WithFile`]) for the caller to send from the page cache, not copied.
    pub fn handle_with_file(&self, record: &[u8], addr: IpAddr) -> Option<Reply> {
        self.with_file(record, addr, None)
    }

    /// [`Service::handle_with_file`] for a call that came on `conn`.
    pub fn handle_with_file_on(&self, record: &[u8], conn: &Arc<Connection>) -> Option<Reply> {
        self.with_file(record, conn.peer().ip(), Some(conn))
    }

    fn with_file(
        &self,
        record: &[u8],
        addr: IpAddr,
        conn: Option<&Arc<Connection>>,
    ) -> Option<Reply> {
        let mut file = None;
        let w = self.dispatch(record, addr, conn, Some(&mut file))?;
        Some(match file {
            Some(data) => Reply::WithFile(w, data),
            None => Reply::Bytes(w),
        })
    }

    fn dispatch(
        &self,
        record: &[u8],
        addr: IpAddr,
        conn: Option<&Arc<Connection>>,
        file: Option<&mut Option<FileData>>,
    ) -> Option<Writer> {
        let call = match Call::parse(record) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err((xid, e)) => {
                if record.len() < 4 {
                    return None;
                }
                tracing::debug!(client = %addr, "nfs: malformed call header: {e}");
                return Some(rpc::accepted(xid, Accept::GarbageArgs));
            }
        };
        if call.rpcvers != 2 {
            return Some(rpc::rpc_mismatch(call.xid));
        }
        if call.cred_flavor != rpc::AUTH_SYS && call.cred_flavor != rpc::AUTH_NONE {
            // The client may retry with AUTH_SYS.
            return Some(rpc::auth_error(call.xid, rpc::AUTH_TOOWEAK));
        }
        if let Some(e) = &call.bad_cred {
            tracing::debug!(client = %addr, "nfs: malformed AUTH_SYS credential: {e}");
            return Some(rpc::auth_error(call.xid, rpc::AUTH_BADCRED));
        }
        let caller = Caller {
            addr,
            cred: call.cred.clone(),
            conn: conn.cloned(),
        };
        let (xid, prog, vers, proc_) = (call.xid, call.prog, call.vers, call.proc_);
        let mut args = call.args;
        let mut w = rpc::accepted(xid, Accept::Success);
        let res = match (prog, vers) {
            (NFS_PROGRAM, 3) => self.nfs3(proc_, &mut args, &mut w, &caller, file),
            (NFS_PROGRAM, _) => {
                return Some(rpc::accepted(xid, Accept::ProgMismatch { low: 3, high: 3 }))
            }
            (MOUNT_PROGRAM, 3) => self.mount3(proc_, &mut args, &mut w, &caller),
            (MOUNT_PROGRAM, _) => {
                return Some(rpc::accepted(xid, Accept::ProgMismatch { low: 3, high: 3 }))
            }
            (PORTMAP_PROGRAM, 2) => self.portmap2(proc_, &mut args, &mut w),
            (PORTMAP_PROGRAM, _) => {
                return Some(rpc::accepted(xid, Accept::ProgMismatch { low: 2, high: 2 }))
            }
            _ => return Some(rpc::accepted(xid, Accept::ProgUnavail)),
        };
        match res {
            Ok(true) => Some(w),
            Ok(false) => Some(rpc::accepted(xid, Accept::ProcUnavail)),
            Err(e) => {
                tracing::debug!(client = %addr, "nfs: bad arguments to {prog}/{vers}/{proc_}: {e}");
                Some(rpc::accepted(xid, Accept::GarbageArgs))
            }
        }
    }

    /// Resolves a handle to its export and object, checking the client may use the export.
    fn open(&self, fh: &[u8], caller: &Caller) -> Result<(Arc<Export>, Obj), NfsStat> {
        let h = Handle::decode(fh).ok_or(NfsStat::BADHANDLE)?;
        let export = self.table.get(h.export).ok_or(NfsStat::STALE)?;
        if !export.spec().allows(caller.addr) {
            return Err(NfsStat::ACCES);
        }
        self.attach(&export, caller)?;
        let obj = export.resolve(&h)?;
        Ok((export, obj))
    }

    /// Records the caller's connection as a user of `export`; STALE if it was removed meanwhile.
    fn attach(&self, export: &Arc<Export>, caller: &Caller) -> Result<(), NfsStat> {
        match &caller.conn {
            Some(conn) if !self.table.attach(export, conn) => Err(NfsStat::STALE),
            _ => Ok(()),
        }
    }

    fn nfs3(
        &self,
        proc_: u32,
        r: &mut Reader,
        w: &mut Writer,
        c: &Caller,
        file: Option<&mut Option<FileData>>,
    ) -> Result<bool, XdrError> {
        match proc_ {
            0 => {}
            1 => self.getattr(r, w, c)?,
            2 => self.setattr(r, w, c)?,
            3 => self.lookup(r, w, c)?,
            4 => self.access(r, w, c)?,
            5 => self.readlink(r, w, c)?,
            6 => self.read(r, w, c, file)?,
            7 => self.write(r, w, c)?,
            8 => self.create(r, w, c)?,
            9 => self.mkdir(r, w, c)?,
            10 => self.symlink(r, w, c)?,
            11 => self.mknod(r, w, c)?,
            12 => self.remove(r, w, c, false)?,
            13 => self.remove(r, w, c, true)?,
            14 => self.rename(r, w, c)?,
            15 => self.link(r, w, c)?,
            16 => self.readdir(r, w, c, false)?,
            17 => self.readdir(r, w, c, true)?,
            18 => self.fsstat(r, w, c)?,
            19 => self.fsinfo(r, w, c)?,
            20 => self.pathconf(r, w, c)?,
            21 => self.commit(r, w, c)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}
