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
//! RPC errors; nothing a client sends can panic it (`fuzz_tests` below feeds it garbage).

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use super::conns::Connection;
use super::exports::ExportTable;
use super::fs::{
    boot_verifier, Export, Handle, Kind, NodeKind, Obj, SetAttr, SetTime, Stat, HANDLE_LEN,
};
use super::rpc::{self, Accept, Call, Credential};
use super::status::NfsStat;
use super::xdr::{Reader, Writer, XdrError};
use crate::metrics::METRICS;

/// The NFS program number.
pub const NFS_PROGRAM: u32 = 100_003;
/// The MOUNT program number.
pub const MOUNT_PROGRAM: u32 = 100_005;
/// The portmap (rpcbind) program number.
pub const PORTMAP_PROGRAM: u32 = 100_000;

/// Largest READ and WRITE payload offered to clients (FSINFO rtmax/wtmax).
pub const MAX_IO: u32 = 1024 * 1024;

const ACCESS_READ: u32 = 0x01;
const ACCESS_LOOKUP: u32 = 0x02;
const ACCESS_MODIFY: u32 = 0x04;
const ACCESS_EXTEND: u32 = 0x08;
const ACCESS_DELETE: u32 = 0x10;
const ACCESS_EXECUTE: u32 = 0x20;

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
            // AUTH_TOOWEAK: the client may retry with AUTH_SYS.
            return Some(rpc::auth_error(call.xid, 5));
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

    fn getattr(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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

    fn setattr(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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
        let res = export.setattr(&obj, &set, c.cred.as_ref());
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

    fn lookup(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "what.dir")?;
        let name = r.opaque(1024, "what.name")?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => {
                w.u32(s.0).bool(false);
                return Ok(());
            }
        };
        match export.lookup(&dir, name, c.cred.as_ref()) {
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

    fn access(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "object")?;
        let want = r.u32("access")?;
        match self.open(fh, c) {
            Ok((export, obj)) => {
                let allowed = allowed_access(&obj.stat, c.cred.as_ref(), export.read_only());
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

    fn readlink(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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

    fn read(
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
            match export.read_file(&obj, offset, count as usize, c.cred.as_ref()) {
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
            let (n, e) = export.read(&obj, offset, buf, c.cred.as_ref())?;
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

    fn write(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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
        match export.write(&obj, offset, data, stable != 0, c.cred.as_ref()) {
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

    fn commit(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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

    /// Shared tail of CREATE, MKDIR, SYMLINK and MKNOD.
    fn created(
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

    fn create(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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
        let cred = c.cred.as_ref();
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

    fn mkdir(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "where.dir")?;
        let name = r.opaque(1024, "where.name")?;
        let set = sattr3(r)?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = export.mkdir(&dir, name, &set, c.cred.as_ref());
        self.created(w, &export, &dir, res)
    }

    fn symlink(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
        let fh = r.opaque(64, "where.dir")?;
        let name = r.opaque(1024, "where.name")?;
        let _set = sattr3(r)?;
        let target = r.opaque(4096, "symlink.symlink_data")?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = export.symlink(&dir, name, target, c.cred.as_ref());
        self.created(w, &export, &dir, res)
    }

    fn mknod(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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
            Some(node) => export.mknod(&dir, name, node, &set, c.cred.as_ref()),
            None => Err(NfsStat::BADTYPE),
        };
        self.created(w, &export, &dir, res)
    }

    fn remove(&self, r: &mut Reader, w: &mut Writer, c: &Caller, rmdir: bool) -> Res {
        let fh = r.opaque(64, "object.dir")?;
        let name = r.opaque(1024, "object.name")?;
        let (export, dir) = match self.open(fh, c) {
            Ok(x) => x,
            Err(s) => return status_wcc(w, s, None),
        };
        let res = export.remove(&dir, name, rmdir, c.cred.as_ref());
        let post = export.getattr(&dir).ok();
        w.u32(res.err().unwrap_or(NfsStat::OK).0);
        wcc(w, &export, Some(&dir.stat), post.as_ref());
        Ok(())
    }

    fn rename(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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
            export.rename(&from, from_name, &to, to_name, c.cred.as_ref())
        };
        w.u32(res.err().unwrap_or(NfsStat::OK).0);
        let post = export.getattr(&from).ok();
        wcc(w, &export, Some(&from.stat), post.as_ref());
        let post = to_export.getattr(&to).ok();
        wcc(w, &to_export, Some(&to.stat), post.as_ref());
        Ok(())
    }

    fn link(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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
            export.link(&obj, &dir, name, c.cred.as_ref())
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

    fn readdir(&self, r: &mut Reader, w: &mut Writer, c: &Caller, plus: bool) -> Res {
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
            c.cred.as_ref(),
            |e, info| {
                let name_len = 4 + e.name.len() + super::xdr::pad(e.name.len());
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

    fn fsstat(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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

    fn fsinfo(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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

    fn pathconf(&self, r: &mut Reader, w: &mut Writer, c: &Caller) -> Res {
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

    fn mount3(
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

    fn mnt(&self, path: &str, c: &Caller) -> Result<Handle, NfsStat> {
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

    fn portmap2(&self, proc_: u32, r: &mut Reader, w: &mut Writer) -> Result<bool, XdrError> {
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

/// The READDIR cookie verifier of a directory: its identity, because cookies (seek positions)
/// stay valid across changes; a different verifier means the handle now names another directory.
fn cookie_verifier(st: &Stat) -> [u8; 8] {
    (st.ino ^ (st.born.0 as u64).rotate_left(32) ^ u64::from(st.born.1)).to_be_bytes()
}

fn sattr3(r: &mut Reader) -> Result<SetAttr, XdrError> {
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

fn fattr3(w: &mut Writer, export: &Export, st: &Stat) {
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

fn post_op_attr(w: &mut Writer, export: &Export, st: Option<&Stat>) {
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

fn wcc(w: &mut Writer, export: &Export, pre: Option<&Stat>, post: Option<&Stat>) {
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

fn wcc_none(w: &mut Writer) {
    w.bool(false).bool(false);
}

fn status_wcc(w: &mut Writer, s: NfsStat, _: Option<()>) -> Res {
    w.u32(s.0);
    wcc_none(w);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs::config::ExportConfig;

    fn call(prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut cred = Writer::new();
        cred.u32(0).opaque(b"t").u32(0).u32(0).u32(0);
        let mut w = Writer::new();
        w.u32(1).u32(0).u32(2).u32(prog).u32(vers).u32(proc_);
        w.u32(rpc::AUTH_SYS)
            .opaque(&cred.into_bytes())
            .u32(0)
            .u32(0);
        w.fixed(args);
        w.into_bytes()
    }

    fn service(dir: &std::path::Path, spec: &str) -> Service {
        let table = ExportTable::new();
        table
            .add(&ExportConfig::parse_spec(&format!("{spec}={}:rw", dir.display())).unwrap())
            .unwrap();
        Service::new(table)
    }

    /// Reply status after the RPC header (xid, REPLY, ACCEPTED, verifier, accept_stat).
    fn accept_stat(reply: &Writer) -> u32 {
        let b = reply.clone().into_bytes();
        u32::from_be_bytes(b[4 + 20..4 + 24].try_into().unwrap())
    }

    #[test]
    fn mount_then_getattr() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), "/a");
        let mut args = Writer::new();
        args.opaque(b"/a");
        let reply = s.handle(
            &call(MOUNT_PROGRAM, 3, 1, &args.into_bytes()),
            [127, 0, 0, 1].into(),
        );
        let bytes = reply.unwrap().into_bytes();
        let mut r = Reader::new(&bytes[4 + 24..]);
        assert_eq!(r.u32("status").unwrap(), 0);
        let fh = r.opaque(64, "fh").unwrap().to_vec();
        let mut args = Writer::new();
        args.opaque(&fh);
        let reply = s.handle(
            &call(NFS_PROGRAM, 3, 1, &args.into_bytes()),
            [127, 0, 0, 1].into(),
        );
        let bytes = reply.unwrap().into_bytes();
        let mut r = Reader::new(&bytes[4 + 24..]);
        assert_eq!(r.u32("status").unwrap(), 0);
        assert_eq!(r.u32("type").unwrap(), 2);
    }

    #[test]
    fn read_with_file_leaves_the_data_in_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"0123456789").unwrap();
        let s = service(d.path(), "/a");
        let ip = [127, 0, 0, 1].into();
        let export = s.table().all()[0].clone();
        let (fh, _) = export.lookup_path("f").unwrap();
        let read = |offset: u64, count: u32| {
            let mut args = Writer::new();
            args.opaque(&fh.encode()).u64(offset).u32(count);
            s.handle_with_file(&call(NFS_PROGRAM, 3, 6, &args.into_bytes()), ip)
                .unwrap()
        };
        // Head: status, attributes, count, eof, opaque length; the data stays in the file.
        let head_of = |w: Writer| {
            let b = w.into_bytes();
            let mut r = Reader::new(&b[4 + 24..]);
            assert_eq!(r.u32("status").unwrap(), 0);
            assert!(r.bool("attributes_follow").unwrap());
            r.fixed(84, "attributes").unwrap();
            let n = r.u32("count").unwrap();
            let eof = r.bool("eof").unwrap();
            assert_eq!(r.u32("data length").unwrap(), n);
            assert_eq!(r.remaining(), 0, "no data in the head");
            (n, eof)
        };
        match read(3, 4) {
            Reply::WithFile(w, data) => {
                assert_eq!(head_of(w), (4, false));
                assert_eq!((data.offset, data.len), (3, 4));
            }
            Reply::Bytes(_) => panic!("a READ with data is sent from the file"),
        }
        match read(7, 100) {
            Reply::WithFile(w, data) => {
                assert_eq!(head_of(w), (3, true));
                assert_eq!((data.offset, data.len), (7, 3));
            }
            Reply::Bytes(_) => panic!("a READ with data is sent from the file"),
        }
        match read(10, 100) {
            Reply::Bytes(w) => assert_eq!(head_of(w), (0, true)),
            Reply::WithFile(..) => panic!("nothing to send past the end"),
        }
    }

    #[test]
    fn exports_come_and_go_at_run_time() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), "/a");
        let ip = [127, 0, 0, 1].into();
        let job = s
            .table()
            .add(&ExportConfig::parse_spec(&format!("/jobs/1={}:rw", d.path().display())).unwrap())
            .unwrap();
        let mut args = Writer::new();
        args.opaque(&job.root_handle().encode());
        let getattr = call(NFS_PROGRAM, 3, 1, &args.into_bytes());
        let status = |w: Writer| {
            let b = w.into_bytes();
            u32::from_be_bytes(b[28..32].try_into().unwrap())
        };
        assert_eq!(status(s.handle(&getattr, ip).unwrap()), 0);
        assert!(s.table().remove("/jobs/1"));
        assert_eq!(status(s.handle(&getattr, ip).unwrap()), NfsStat::STALE.0);
    }

    #[test]
    fn calls_on_a_connection_make_it_a_user_of_their_export() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), "/a");
        let root = s.table().all()[0].root_handle().encode();
        let mut args = Writer::new();
        args.opaque(&root);
        let getattr = call(NFS_PROGRAM, 3, 1, &args.into_bytes());
        let mut args = Writer::new();
        args.opaque(b"/a");
        let mnt = call(MOUNT_PROGRAM, 3, 1, &args.into_bytes());
        let peer = "127.0.0.1:900".parse().unwrap();
        let (by_handle, by_mount, listing) = (
            Connection::new(peer),
            Connection::new(peer),
            Connection::new(peer),
        );
        s.handle_on(&getattr, &by_handle).unwrap();
        s.handle_with_file_on(&mnt, &by_mount).unwrap();
        s.handle_on(&call(MOUNT_PROGRAM, 3, 5, &[]), &listing)
            .unwrap();
        s.handle(&getattr, peer.ip()).unwrap();
        assert_eq!(s.table().connections("/a"), Some(2));
        assert!(s.table().remove("/a"));
        assert!(by_handle.closed().is_cancelled() && by_mount.closed().is_cancelled());
        assert!(!listing.closed().is_cancelled());
    }

    #[test]
    fn unknown_programs_and_versions() {
        let d = tempfile::tempdir().unwrap();
        let s = service(d.path(), "/a");
        let ip = [127, 0, 0, 1].into();
        assert_eq!(
            accept_stat(&s.handle(&call(123, 1, 0, &[]), ip).unwrap()),
            1
        );
        assert_eq!(
            accept_stat(&s.handle(&call(NFS_PROGRAM, 4, 0, &[]), ip).unwrap()),
            2
        );
        assert_eq!(
            accept_stat(&s.handle(&call(NFS_PROGRAM, 3, 99, &[]), ip).unwrap()),
            3
        );
        assert_eq!(
            accept_stat(&s.handle(&call(NFS_PROGRAM, 3, 1, &[]), ip).unwrap()),
            4
        );
    }

    #[test]
    fn fuzz_tests() {
        // Every prefix and many corruptions of valid calls: replies or silence, never a panic.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let s = service(d.path(), "/a");
        let ip = [127, 0, 0, 1].into();
        let root = s.table().all()[0].root_handle().encode();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for proc_ in 0..23 {
            let mut args = Writer::new();
            args.opaque(&root)
                .opaque(b"f")
                .u64(0)
                .u32(4096)
                .u32(4096)
                .u32(1)
                .opaque(b"data");
            let msg = call(NFS_PROGRAM, 3, proc_, &args.into_bytes());
            for n in 0..msg.len() {
                let _ = s.handle(&msg[..n], ip);
            }
            for _ in 0..200 {
                let mut m = msg.clone();
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % m.len();
                m[i] = (seed >> 32) as u8;
                let _ = s.handle(&m, ip);
            }
        }
        let mut null = s.handle(&call(NFS_PROGRAM, 3, 0, &[]), ip).unwrap();
        assert_eq!(accept_stat(&null), 0);
        null.truncate(0);
    }

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
