//! Shared harness of the NFS end-to-end tests: `labboot nfs` on 127.0.0.1 (a free port, learnt
//! from its `nfs: listening on ADDR` line), libnfs URLs for it, and a small raw NFSv3 client for
//! what the libnfs tools cannot show (link targets, handles, cookies, credentials).
//!
//! The raw client encodes with `netboot::nfs::xdr`; the libnfs tests check that codec against a
//! foreign peer, so the raw tests can trust it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;
use netboot::nfs::xdr::{Reader, Writer};

/// NFS program number.
pub const NFS: u32 = 100_003;
/// MOUNT program number.
pub const MOUNT: u32 = 100_005;
/// Portmap program number.
pub const PORTMAP: u32 = 100_000;

/// A running `labboot nfs` and the port it listens on.
pub struct Server {
    /// The process (killed on drop).
    pub process: ServerProcess,
    /// The NFS/MOUNT TCP port.
    pub port: u16,
}

/// Starts `labboot nfs --listen 127.0.0.1:PORT` with `args` (e.g. `--export /a=DIR:rw`).
pub fn start(port: u16, args: &[String]) -> Server {
    let mut cmd = Command::new(labboot_bin());
    cmd.args(["nfs", "--listen", &format!("127.0.0.1:{port}")])
        .args(args);
    let process = ServerProcess::start(
        "labboot nfs",
        cmd,
        r"nfs: listening on 127\.0\.0\.1:\d+",
        Duration::from_secs(60),
    )
    .expect("labboot nfs starts");
    let line = process
        .lines()
        .into_iter()
        .find(|l| l.contains("nfs: listening on"))
        .expect("listening line");
    let port = line
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("port in the listening line");
    Server { process, port }
}

/// The `--export` argument for `name`, `dir` and `access` (`ro`/`rw`).
pub fn export_arg(name: &str, dir: &Path, access: &str) -> String {
    format!("/{name}={}:{access}", dir.display())
}

impl Server {
    /// A libnfs URL for `path` (e.g. `/tree/etc`) on this server, NFSv3, no portmap.
    pub fn url(&self, path: &str) -> String {
        format!(
            "nfs://127.0.0.1{path}?version=3&nfsport={0}&mountport={0}",
            self.port
        )
    }

    /// A raw client connected to this server as `uid`/`gid`.
    pub fn client(&self, uid: u32, gid: u32) -> Client {
        Client::connect(self.port, uid, gid)
    }
}

/// Runs a libnfs tool; returns (success, stdout, stderr).
pub fn run(tool: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A minimal NFSv3/MOUNT client over one TCP connection, with an `AUTH_SYS` credential.
pub struct Client {
    stream: TcpStream,
    xid: u32,
    /// Credential uid.
    pub uid: u32,
    /// Credential gid.
    pub gid: u32,
}

/// A reply's body after the RPC header, when the call was accepted and succeeded.
pub type Body = Vec<u8>;

/// One directory entry from READDIR(PLUS): name, fileid, cookie, handle (PLUS only).
pub type Entry = (String, u64, u64, Option<Vec<u8>>);

/// One READDIR(PLUS) page: entries, cookie verifier, eof.
pub type Page = (Vec<Entry>, [u8; 8], bool);

impl Client {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16, uid: u32, gid: u32) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to labboot nfs");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            stream,
            xid: 1,
            uid,
            gid,
        }
    }

    /// Sends one call and returns the RPC accept_stat and the rest of the reply.
    pub fn call_raw(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> (u32, Body) {
        self.xid += 1;
        let mut cred = Writer::new();
        cred.u32(0)
            .opaque(b"test")
            .u32(self.uid)
            .u32(self.gid)
            .u32(0);
        let mut w = Writer::new();
        w.u32(0)
            .u32(self.xid)
            .u32(0)
            .u32(2)
            .u32(prog)
            .u32(vers)
            .u32(proc_);
        w.u32(1).opaque(&cred.into_bytes()).u32(0).u32(0);
        w.fixed(args);
        let mut bytes = w.into_bytes();
        let mark = (bytes.len() as u32 - 4) | 0x8000_0000;
        bytes[..4].copy_from_slice(&mark.to_be_bytes());
        self.stream.write_all(&bytes).expect("send call");
        let mut record = Vec::new();
        loop {
            let mut mark = [0u8; 4];
            self.stream
                .read_exact(&mut mark)
                .expect("reply record mark");
            let mark = u32::from_be_bytes(mark);
            let mut frag = vec![0u8; (mark & 0x7fff_ffff) as usize];
            self.stream.read_exact(&mut frag).expect("reply fragment");
            record.extend_from_slice(&frag);
            if mark & 0x8000_0000 != 0 {
                break;
            }
        }
        let mut r = Reader::new(&record);
        assert_eq!(r.u32("xid").unwrap(), self.xid, "reply xid");
        assert_eq!(r.u32("mtype").unwrap(), 1, "a reply");
        assert_eq!(r.u32("stat").unwrap(), 0, "accepted");
        r.u32("verf.flavor").unwrap();
        r.opaque(400, "verf.body").unwrap();
        let accept = r.u32("accept_stat").unwrap();
        let rest = record[record.len() - r.remaining()..].to_vec();
        (accept, rest)
    }

    /// Sends one call that must be accepted with SUCCESS; returns the results.
    pub fn call(&mut self, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Body {
        let (accept, body) = self.call_raw(prog, vers, proc_, args);
        assert_eq!(accept, 0, "call {prog}/{vers}/{proc_} accepted");
        body
    }

    /// MOUNT MNT: the status and (on success) the root handle of `path`.
    pub fn mount(&mut self, path: &str) -> Result<Vec<u8>, u32> {
        let mut a = Writer::new();
        a.opaque(path.as_bytes());
        let body = self.call(MOUNT, 3, 1, &a.into_bytes());
        let mut r = Reader::new(&body);
        match r.u32("status").unwrap() {
            0 => Ok(r.opaque(64, "fh").unwrap().to_vec()),
            s => Err(s),
        }
    }

    /// LOOKUP `name` in `dir`: the handle and attributes, or the NFS status.
    pub fn lookup(&mut self, dir: &[u8], name: &str) -> Result<(Vec<u8>, Attr), u32> {
        let mut a = Writer::new();
        a.opaque(dir).opaque(name.as_bytes());
        let body = self.call(NFS, 3, 3, &a.into_bytes());
        let mut r = Reader::new(&body);
        match r.u32("status").unwrap() {
            0 => {
                let fh = r.opaque(64, "fh").unwrap().to_vec();
                assert!(r.bool("attr follows").unwrap());
                Ok((fh, Attr::read(&mut r)))
            }
            s => Err(s),
        }
    }

    /// LOOKUP of a `/`-separated path below `root`.
    pub fn walk(&mut self, root: &[u8], path: &str) -> Result<(Vec<u8>, Attr), u32> {
        let mut fh = root.to_vec();
        let mut attr = self.getattr(root)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            (fh, attr) = self.lookup(&fh, part)?;
        }
        Ok((fh, attr))
    }

    /// GETATTR.
    pub fn getattr(&mut self, fh: &[u8]) -> Result<Attr, u32> {
        let mut a = Writer::new();
        a.opaque(fh);
        let body = self.call(NFS, 3, 1, &a.into_bytes());
        let mut r = Reader::new(&body);
        match r.u32("status").unwrap() {
            0 => Ok(Attr::read(&mut r)),
            s => Err(s),
        }
    }

    /// SETATTR with a pre-encoded `sattr3`, unguarded: the new attributes.
    pub fn setattr(&mut self, fh: &[u8], sattr: &[u8]) -> Result<Attr, u32> {
        let mut a = Writer::new();
        a.opaque(fh).fixed(sattr).bool(false);
        let body = self.call(NFS, 3, 2, &a.into_bytes());
        let mut r = Reader::new(&body);
        let status = r.u32("status").unwrap();
        if r.bool("pre_op_attr follows").unwrap() {
            r.u64("size").unwrap();
            r.u64("mtime").unwrap();
            r.u64("ctime").unwrap();
        }
        match status {
            0 => {
                assert!(r.bool("post_op_attr follows").unwrap());
                Ok(Attr::read(&mut r))
            }
            s => Err(s),
        }
    }

    /// READLINK.
    pub fn readlink(&mut self, fh: &[u8]) -> Result<Vec<u8>, u32> {
        let mut a = Writer::new();
        a.opaque(fh);
        let body = self.call(NFS, 3, 5, &a.into_bytes());
        let mut r = Reader::new(&body);
        let status = r.u32("status").unwrap();
        skip_post_op_attr(&mut r);
        match status {
            0 => Ok(r.opaque(4096, "path").unwrap().to_vec()),
            s => Err(s),
        }
    }

    /// READ: data and eof.
    pub fn read(&mut self, fh: &[u8], offset: u64, count: u32) -> Result<(Vec<u8>, bool), u32> {
        let mut a = Writer::new();
        a.opaque(fh).u64(offset).u32(count);
        let body = self.call(NFS, 3, 6, &a.into_bytes());
        let mut r = Reader::new(&body);
        let status = r.u32("status").unwrap();
        skip_post_op_attr(&mut r);
        match status {
            0 => {
                let _count = r.u32("count").unwrap();
                let eof = r.bool("eof").unwrap();
                Ok((r.opaque(1 << 21, "data").unwrap().to_vec(), eof))
            }
            s => Err(s),
        }
    }

    /// WRITE with `stable` (0 unstable, 1 data sync, 2 file sync): (committed, verifier).
    pub fn write(
        &mut self,
        fh: &[u8],
        offset: u64,
        data: &[u8],
        stable: u32,
    ) -> Result<(u32, [u8; 8]), u32> {
        let mut a = Writer::new();
        a.opaque(fh)
            .u64(offset)
            .u32(data.len() as u32)
            .u32(stable)
            .opaque(data);
        let body = self.call(NFS, 3, 7, &a.into_bytes());
        let mut r = Reader::new(&body);
        let status = r.u32("status").unwrap();
        skip_wcc(&mut r);
        match status {
            0 => {
                assert_eq!(r.u32("count").unwrap() as usize, data.len());
                let committed = r.u32("committed").unwrap();
                let verf = r.fixed(8, "verf").unwrap().try_into().unwrap();
                Ok((committed, verf))
            }
            s => Err(s),
        }
    }

    /// COMMIT: the write verifier.
    pub fn commit(&mut self, fh: &[u8]) -> Result<[u8; 8], u32> {
        let mut a = Writer::new();
        a.opaque(fh).u64(0).u32(0);
        let body = self.call(NFS, 3, 21, &a.into_bytes());
        let mut r = Reader::new(&body);
        let status = r.u32("status").unwrap();
        skip_wcc(&mut r);
        match status {
            0 => Ok(r.fixed(8, "verf").unwrap().try_into().unwrap()),
            s => Err(s),
        }
    }

    /// A creating call (CREATE 8, MKDIR 9, SYMLINK 10, MKNOD 11) with pre-encoded `how`.
    pub fn make(
        &mut self,
        proc_: u32,
        dir: &[u8],
        name: &str,
        how: &[u8],
    ) -> Result<(Vec<u8>, Attr), u32> {
        let mut a = Writer::new();
        a.opaque(dir).opaque(name.as_bytes()).fixed(how);
        let body = self.call(NFS, 3, proc_, &a.into_bytes());
        let mut r = Reader::new(&body);
        match r.u32("status").unwrap() {
            0 => {
                assert!(r.bool("handle follows").unwrap());
                let fh = r.opaque(64, "fh").unwrap().to_vec();
                assert!(r.bool("attr follows").unwrap());
                Ok((fh, Attr::read(&mut r)))
            }
            s => Err(s),
        }
    }

    /// LINK `file` as `name` in `dir`.
    pub fn link(&mut self, file: &[u8], dir: &[u8], name: &str) -> Result<(), u32> {
        let mut a = Writer::new();
        a.opaque(file).opaque(dir).opaque(name.as_bytes());
        let body = self.call(NFS, 3, 15, &a.into_bytes());
        match Reader::new(&body).u32("status").unwrap() {
            0 => Ok(()),
            s => Err(s),
        }
    }

    /// One READDIR (`plus` false, `count`) or READDIRPLUS (`plus` true, dircount = maxcount
    /// / 4) page: entries (name, fileid, cookie, handle if any), verifier, eof.
    pub fn readdir_page(
        &mut self,
        dir: &[u8],
        cookie: u64,
        verf: [u8; 8],
        count: u32,
        plus: bool,
    ) -> Result<Page, u32> {
        let mut a = Writer::new();
        a.opaque(dir).u64(cookie).fixed(&verf);
        if plus {
            a.u32(count / 4).u32(count);
        } else {
            a.u32(count);
        }
        let body = self.call(NFS, 3, if plus { 17 } else { 16 }, &a.into_bytes());
        let mut r = Reader::new(&body);
        let status = r.u32("status").unwrap();
        skip_post_op_attr(&mut r);
        if status != 0 {
            return Err(status);
        }
        let verf = r.fixed(8, "verf").unwrap().try_into().unwrap();
        let mut entries = Vec::new();
        while r.bool("value follows").unwrap() {
            let fileid = r.u64("fileid").unwrap();
            let name = String::from_utf8_lossy(r.opaque(255, "name").unwrap()).into_owned();
            let cookie = r.u64("cookie").unwrap();
            let mut fh = None;
            if plus {
                skip_post_op_attr(&mut r);
                if r.bool("handle follows").unwrap() {
                    fh = Some(r.opaque(64, "fh").unwrap().to_vec());
                }
            }
            entries.push((name, fileid, cookie, fh));
        }
        let eof = r.bool("eof").unwrap();
        Ok((entries, verf, eof))
    }
}

/// The attributes a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// ftype3.
    pub kind: u32,
    /// Permission bits.
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: u64,
    /// Device numbers.
    pub rdev: (u32, u32),
    /// fsid.
    pub fsid: u64,
    /// fileid (inode).
    pub fileid: u64,
    /// mtime seconds.
    pub mtime: u32,
}

impl Attr {
    fn read(r: &mut Reader) -> Attr {
        let kind = r.u32("type").unwrap();
        let mode = r.u32("mode").unwrap();
        let nlink = r.u32("nlink").unwrap();
        let uid = r.u32("uid").unwrap();
        let gid = r.u32("gid").unwrap();
        let size = r.u64("size").unwrap();
        let _used = r.u64("used").unwrap();
        let rdev = (r.u32("major").unwrap(), r.u32("minor").unwrap());
        let fsid = r.u64("fsid").unwrap();
        let fileid = r.u64("fileid").unwrap();
        let _atime = r.u64("atime").unwrap();
        let mtime = r.u32("mtime").unwrap();
        let _ = r.u32("mtime.ns").unwrap();
        let _ctime = r.u64("ctime").unwrap();
        Attr {
            kind,
            mode,
            nlink,
            uid,
            gid,
            size,
            rdev,
            fsid,
            fileid,
            mtime,
        }
    }
}

fn skip_post_op_attr(r: &mut Reader) {
    if r.bool("attributes follow").unwrap() {
        Attr::read(r);
    }
}

fn skip_wcc(r: &mut Reader) {
    if r.bool("pre_op_attr follows").unwrap() {
        r.u64("size").unwrap();
        r.u64("mtime").unwrap();
        r.u64("ctime").unwrap();
    }
    skip_post_op_attr(r);
}

/// `sattr3` setting only the mode (or nothing with `None`).
pub fn sattr_mode(mode: Option<u32>) -> Vec<u8> {
    let mut w = Writer::new();
    match mode {
        Some(m) => w.bool(true).u32(m),
        None => w.bool(false),
    };
    w.bool(false).bool(false).bool(false).u32(0).u32(0);
    w.into_bytes()
}
