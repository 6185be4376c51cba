//! The NFS bad-input matrix (issue 16) against a `labboot nfs` process: one row per hostile or
//! malformed call — random, forged, cut and over-long file handles, a handle of another export,
//! of an export this client may not use and of a deleted file, `..` from the export root, names
//! with `/`, symlinks to `/etc` (never followed by the server), writes to an `ro` export, record
//! marks of 2 GiB, truncated XDR, wrong RPC versions, programs and procedures — each with the
//! answer RFC 1813 / RFC 5531 call for (the `nfsstat3`, the RPC `accept_stat`, a denied reply, or
//! a closed connection). After every row a new connection still gets the root's attributes and
//! reads a file.

mod nfs_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use netboot::nfs::fs::{export_id, Handle};
use netboot::nfs::xdr::{Reader, Writer};
use nfs_common::{sattr_mode, start, Client, Server, MOUNT, NFS};

// nfsstat3 (RFC 1813 §2.6).
const NOENT: u32 = 2;
const ACCES: u32 = 13;
const NOTDIR: u32 = 20;
const ISDIR: u32 = 21;
const INVAL: u32 = 22;
const ROFS: u32 = 30;
const NAMETOOLONG: u32 = 63;
const STALE: u32 = 70;
const BADHANDLE: u32 = 10001;
// accept_stat (RFC 5531 §9).
const PROG_UNAVAIL: u32 = 1;
const PROG_MISMATCH: u32 = 2;
const PROC_UNAVAIL: u32 = 3;
const GARBAGE_ARGS: u32 = 4;

/// What a row sends.
enum Send {
    /// One call on the matrix's long-lived connection: program, version, procedure, arguments.
    Call(u32, u32, u32, Vec<u8>),
    /// Raw bytes on a new connection (record marks included).
    Raw(Vec<u8>),
}

/// What a row expects.
#[derive(Debug)]
enum Expect {
    /// Accepted, SUCCESS, and the procedure's status is this `nfsstat3`.
    Status(u32),
    /// Accepted, SUCCESS, NFS3_OK, and these bytes appear in the results (a handle, a path).
    OkWith(Vec<u8>),
    /// Accepted with this `accept_stat` (not SUCCESS).
    Accept(u32),
    /// A reply whose words after the xid are these (e.g. a denied reply).
    Reply(Vec<u32>),
    /// No reply; a call sent after it on the same connection is answered.
    Ignored,
    /// The server closes the connection without a reply.
    Closed,
}

struct Row {
    name: &'static str,
    send: Send,
    expect: Expect,
}

/// The handles the rows use.
struct Handles {
    tree: Vec<u8>,
    f: Vec<u8>,
    sub: Vec<u8>,
    etc_link: Vec<u8>,
    up_link: Vec<u8>,
    rw_g: Vec<u8>,
    gone: Vec<u8>,
}

fn args(build: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    build(&mut w);
    w.into_bytes()
}

fn getattr(fh: &[u8]) -> Send {
    Send::Call(
        NFS,
        3,
        1,
        args(|w| {
            w.opaque(fh);
        }),
    )
}

fn lookup(dir: &[u8], name: &[u8]) -> Send {
    Send::Call(
        NFS,
        3,
        3,
        args(|w| {
            w.opaque(dir).opaque(name);
        }),
    )
}

fn read(fh: &[u8]) -> Send {
    Send::Call(
        NFS,
        3,
        6,
        args(|w| {
            w.opaque(fh).u64(0).u32(100);
        }),
    )
}

fn readlink(fh: &[u8]) -> Send {
    Send::Call(
        NFS,
        3,
        5,
        args(|w| {
            w.opaque(fh);
        }),
    )
}

fn write(fh: &[u8], stable: u32) -> Send {
    Send::Call(
        NFS,
        3,
        7,
        args(|w| {
            w.opaque(fh).u64(0).u32(5).u32(stable).opaque(b"evil!");
        }),
    )
}

/// `fh` with its export id replaced by that of `export`.
fn moved_to(fh: &[u8], export: &str) -> Vec<u8> {
    let mut h = Handle::decode(fh).expect("a handle of this server");
    h.export = export_id(export);
    h.encode().to_vec()
}

/// One call record: header with `rpcvers` and an `AUTH_SYS`-style credential of `flavor` and
/// `cred` body, then `args`; record mark in front.
fn record(rpcvers: u32, proc_: u32, flavor: u32, cred: &[u8], args: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(0)
        .u32(0x0bad_0001)
        .u32(0)
        .u32(rpcvers)
        .u32(NFS)
        .u32(3)
        .u32(proc_);
    w.u32(flavor).opaque(cred).u32(0).u32(0).fixed(args);
    let mut bytes = w.into_bytes();
    let mark = (bytes.len() as u32 - 4) | 0x8000_0000;
    bytes[..4].copy_from_slice(&mark.to_be_bytes());
    bytes
}

/// A well-formed `AUTH_SYS` body for root.
fn auth_sys() -> Vec<u8> {
    args(|w| {
        w.u32(0).opaque(b"matrix").u32(0).u32(0).u32(0);
    })
}

#[rustfmt::skip]
fn rows(h: &Handles) -> Vec<Row> {
    use Expect::*;
    let row = |name, send, expect| Row { name, send, expect };
    let forged = Handle { export: export_id("/tree"), ino: 0xdead_beef_0bad_f00d, born: (1, 2) }.encode().to_vec();
    let unknown_export = Handle { export: export_id("/nowhere"), ino: 2, born: (0, 0) }.encode().to_vec();
    let closed = Handle { export: export_id("/closed"), ino: 2, born: (0, 0) }.encode().to_vec();
    let random: Vec<u8> = (0..24u32).map(|i| (i.wrapping_mul(0x9e37_79b9) >> 13) as u8).collect();
    let getattr_args = args(|w| { w.opaque(&h.tree); });
    let cut_cred = args(|w| { w.u32(0).opaque(b"matrix").u32(0); });
    let many_gids = args(|w| { w.u32(0).opaque(b"matrix").u32(0).u32(0).u32(17); for g in 0..17 { w.u32(g); } });
    vec![
        // Handles (RFC 1813 §2.3.3): one this server never made is BADHANDLE; one it could have
        // made for an object that is not (or no longer) in that export is STALE.
        row("empty handle", getattr(b""), Status(BADHANDLE)),
        row("random 24-byte handle", getattr(&random), Status(BADHANDLE)),
        row("random 64-byte handle", getattr(&[0xa5; 64]), Status(BADHANDLE)),
        row("handle cut to 23 bytes", getattr(&h.f[..23]), Status(BADHANDLE)),
        row("handle of 65 bytes (nfs_fh3 is at most 64)", getattr(&[b'L'; 65]), Accept(GARBAGE_ARGS)),
        row("forged handle: real export, no such inode", getattr(&forged), Status(STALE)),
        row("handle of an export that does not exist", getattr(&unknown_export), Status(STALE)),
        row("handle of another export's file", getattr(&moved_to(&h.rw_g, "/tree")), Status(STALE)),
        row("handle of an export closed to this client", getattr(&closed), Status(ACCES)),
        row("handle of a deleted file", getattr(&h.gone), Status(STALE)),
        row("READ through a forged handle", read(&forged), Status(STALE)),
        // Names: `..` of the root is the root; nothing climbs out.
        row("LOOKUP .. from the export root", lookup(&h.tree, b".."), OkWith(h.tree.clone())),
        row("LOOKUP ../.. from the export root", lookup(&h.tree, b"../.."), Status(INVAL)),
        row("LOOKUP ../etc from the export root", lookup(&h.tree, b"../etc"), Status(INVAL)),
        row("LOOKUP a name with NUL", lookup(&h.tree, b"f\0x"), Status(INVAL)),
        row("LOOKUP a 256-byte name", lookup(&h.tree, &[b'n'; 256]), Status(NAMETOOLONG)),
        row("LOOKUP a missing name", lookup(&h.tree, b"missing"), Status(NOENT)),
        row("LOOKUP in a file", lookup(&h.f, b"x"), Status(NOTDIR)),
        row("READ of a directory", read(&h.sub), Status(ISDIR)),
        // Symlinks are the client's to follow: the server hands out the link, never its target.
        row("READLINK of a symlink to /etc", readlink(&h.etc_link), OkWith(b"/etc".to_vec())),
        row("LOOKUP through a symlink to /etc", lookup(&h.etc_link, b"passwd"), Status(NOTDIR)),
        row("LOOKUP through a symlink to ../../..", lookup(&h.up_link, b"etc"), Status(NOTDIR)),
        row("READ of a symlink to /etc", read(&h.etc_link), Status(INVAL)),
        // Writes to an ro export (RFC 1813: NFS3ERR_ROFS).
        row("WRITE to ro", write(&h.f, 2), Status(ROFS)),
        row("SETATTR on ro", Send::Call(NFS, 3, 2, args(|w| { w.opaque(&h.f).fixed(&sattr_mode(Some(0o777))).bool(false); })), Status(ROFS)),
        row("CREATE in ro", Send::Call(NFS, 3, 8, args(|w| { w.opaque(&h.tree).opaque(b"new").u32(0).fixed(&sattr_mode(None)); })), Status(ROFS)),
        row("MKDIR in ro", Send::Call(NFS, 3, 9, args(|w| { w.opaque(&h.tree).opaque(b"newdir").fixed(&sattr_mode(None)); })), Status(ROFS)),
        row("REMOVE in ro", Send::Call(NFS, 3, 12, args(|w| { w.opaque(&h.tree).opaque(b"f"); })), Status(ROFS)),
        // Truncated or impossible XDR: GARBAGE_ARGS, and the connection goes on.
        row("GETATTR without arguments", Send::Call(NFS, 3, 1, Vec::new()), Accept(GARBAGE_ARGS)),
        row("handle length 24, 4 bytes follow", Send::Call(NFS, 3, 1, b"\0\0\0\x18LBn2".to_vec()), Accept(GARBAGE_ARGS)),
        row("LOOKUP name length 1 GiB", Send::Call(NFS, 3, 3, args(|w| { w.opaque(&h.tree).u32(1 << 30); })), Accept(GARBAGE_ARGS)),
        row("WRITE cut after the offset", Send::Call(NFS, 3, 7, args(|w| { w.opaque(&h.f).u64(0); })), Accept(GARBAGE_ARGS)),
        row("WRITE with stable_how 7", write(&h.f, 7), Accept(GARBAGE_ARGS)),
        row("MNT without a path", Send::Call(MOUNT, 3, 1, Vec::new()), Accept(GARBAGE_ARGS)),
        // RPC dispatch (RFC 5531).
        row("NFS procedure 22", Send::Call(NFS, 3, 22, getattr_args.clone()), Accept(PROC_UNAVAIL)),
        row("NFS version 2", Send::Call(NFS, 2, 1, getattr_args.clone()), Reply(vec![1, 0, 0, 0, PROG_MISMATCH, 3, 3])),
        row("NFS version 4", Send::Call(NFS, 4, 1, getattr_args.clone()), Reply(vec![1, 0, 0, 0, PROG_MISMATCH, 3, 3])),
        row("unknown program", Send::Call(100_099, 1, 0, Vec::new()), Accept(PROG_UNAVAIL)),
        row("RPC version 3", Send::Raw(record(3, 1, 1, &auth_sys(), &getattr_args)), Reply(vec![1, 1, 0, 2, 2])),
        row("RPCSEC_GSS credential", Send::Raw(record(2, 1, 6, b"", &getattr_args)), Reply(vec![1, 1, 1, 5])),
        // A credential the server cannot read is MSG_DENIED / AUTH_ERROR / AUTH_BADCRED (1)
        // (RFC 5531 §9, as knfsd answers), not GARBAGE_ARGS, which would blame the arguments.
        row("AUTH_SYS credential cut after the uid", Send::Raw(record(2, 1, 1, &cut_cred, &getattr_args)), Reply(vec![1, 1, 1, 1])),
        row("AUTH_SYS credential with 17 groups", Send::Raw(record(2, 1, 1, &many_gids, &getattr_args)), Reply(vec![1, 1, 1, 1])),
        row("a REPLY sent to the server", Send::Raw([&[0x80, 0, 0, 12][..], &[0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0]].concat()), Ignored),
        row("record of just an xid", Send::Raw(vec![0x80, 0, 0, 4, 0, 0, 0, 9]), Reply(vec![1, 0, 0, 0, GARBAGE_ARGS])),
        // Record marks (RFC 5531 §11): a fragment the server will not buffer closes the connection.
        row("fragment length 0x7FFFFFFF", Send::Raw(vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 1]), Closed),
        row("last fragment of 0x7FFFFFFF", Send::Raw(vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]), Closed),
        row("fragments adding up past the limit", Send::Raw([&[0x00, 0x10, 0, 0][..], &vec![0; 0x10_0000], &[0x00, 0x10, 0, 0x01]].concat()), Closed),
    ]
}

/// One whole reply record from `s`, or `None` when the connection is closed first.
fn reply(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut rec = Vec::new();
    loop {
        let mut mark = [0u8; 4];
        if s.read_exact(&mut mark).is_err() {
            return None;
        }
        let mark = u32::from_be_bytes(mark);
        let mut frag = vec![0u8; (mark & 0x7fff_ffff) as usize];
        s.read_exact(&mut frag).ok()?;
        rec.extend_from_slice(&frag);
        if mark & 0x8000_0000 != 0 {
            return Some(rec);
        }
    }
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

fn run_row(server: &Server, c: &mut Client, h: &Handles, row: &Row) {
    let name = row.name;
    match (&row.send, &row.expect) {
        (Send::Call(prog, vers, proc_, a), Expect::Reply(want)) => {
            // A reply that is not "accepted, SUCCESS": check it word by word on a raw socket.
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut w = Writer::new();
            w.u32(0)
                .u32(0x0bad_0001)
                .u32(0)
                .u32(2)
                .u32(*prog)
                .u32(*vers)
                .u32(*proc_);
            w.u32(1).opaque(&auth_sys()).u32(0).u32(0).fixed(a);
            let mut bytes = w.into_bytes();
            let mark = (bytes.len() as u32 - 4) | 0x8000_0000;
            bytes[..4].copy_from_slice(&mark.to_be_bytes());
            s.write_all(&bytes).unwrap();
            let got = reply(&mut s).unwrap_or_else(|| panic!("{name}: connection closed"));
            assert_eq!(&words(&got)[1..], &want[..], "{name}");
        }
        (Send::Call(prog, vers, proc_, a), expect) => {
            let (accept, body) = c.call_raw(*prog, *vers, *proc_, a);
            match expect {
                Expect::Accept(want) => assert_eq!(accept, *want, "{name}: accept_stat"),
                Expect::Status(want) => {
                    assert_eq!(accept, 0, "{name}: accept_stat");
                    let status = Reader::new(&body).u32("status").unwrap();
                    assert_eq!(status, *want, "{name}: nfsstat3");
                }
                Expect::OkWith(bytes) => {
                    assert_eq!(accept, 0, "{name}: accept_stat");
                    assert_eq!(Reader::new(&body).u32("status").unwrap(), 0, "{name}");
                    assert!(
                        body.windows(bytes.len()).any(|w| w == &bytes[..]),
                        "{name}: {bytes:02x?} not in the results"
                    );
                }
                other => panic!("{name}: {other:?} does not apply to a call"),
            }
        }
        (Send::Raw(bytes), expect) => {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // The server may close while the bytes are still being written.
            let _ = s.write_all(bytes);
            match expect {
                Expect::Closed => {
                    let mut buf = [0u8; 64];
                    match s.read(&mut buf) {
                        Ok(0) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                        Ok(n) => panic!("{name}: got {n} bytes, expected the connection closed"),
                        Err(e) => panic!("{name}: expected the connection closed: {e}"),
                    }
                }
                Expect::Reply(want) => {
                    let got = reply(&mut s).unwrap_or_else(|| panic!("{name}: connection closed"));
                    assert_eq!(&words(&got)[1..], &want[..], "{name}");
                }
                Expect::Ignored => {
                    // A GETATTR after it: the first reply on the connection is the GETATTR's.
                    s.write_all(&record(
                        2,
                        1,
                        1,
                        &auth_sys(),
                        &args(|w| {
                            w.opaque(&h.tree);
                        }),
                    ))
                    .unwrap();
                    let got = reply(&mut s).unwrap_or_else(|| panic!("{name}: connection closed"));
                    assert_eq!(words(&got)[..6], [0x0bad_0001, 1, 0, 0, 0, 0], "{name}");
                }
                other => panic!("{name}: {other:?} does not apply to raw bytes"),
            }
        }
    }
}

/// Still serving: a new connection gets the root's attributes and reads `f`.
fn still_serves(server: &Server, h: &Handles, after: &str) {
    let mut c = server.client(0, 0);
    let attr = c
        .getattr(&h.tree)
        .unwrap_or_else(|s| panic!("after {after}: GETATTR of the root: {s}"));
    assert_eq!(attr.kind, 2, "after {after}: the root is a directory");
    let (data, eof) = c.read(&h.f, 0, 4).unwrap();
    assert_eq!((&data[..], eof), (&b"file"[..], true), "after {after}");
}

/// The exports, the server and the handles of the matrix.
fn setup(d: &std::path::Path) -> (Server, Handles) {
    let (tree, rw, closed) = (d.join("tree"), d.join("rw"), d.join("closed"));
    for dir in [&tree, &rw, &closed] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(tree.join("f"), b"file").unwrap();
    std::fs::create_dir(tree.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc", tree.join("etc")).unwrap();
    std::os::unix::fs::symlink("../../..", tree.join("up")).unwrap();
    std::fs::write(rw.join("g"), b"other export").unwrap();
    std::fs::write(rw.join("gone"), b"soon deleted").unwrap();
    std::fs::write(closed.join("h"), b"closed").unwrap();
    let cfg = d.join("labboot.yaml");
    std::fs::write(
        &cfg,
        format!(
            "nfs:\n  exports:\n    - name: /tree\n      dir: {}\n    - name: /rw\n      dir: {}\n      access: rw\n    - name: /closed\n      dir: {}\n      access: rw\n      clients: [10.1.2.3]\n",
            tree.display(),
            rw.display(),
            closed.display()
        ),
    )
    .unwrap();
    let server = start(0, &["--config".into(), cfg.display().to_string()]);
    let mut c = server.client(0, 0);
    let tree_root = c.mount("/tree").unwrap();
    assert_eq!(
        Handle::decode(&tree_root).map(|h| h.export),
        Some(export_id("/tree")),
        "handles carry export_id(name)"
    );
    assert_eq!(c.mount("/closed").unwrap_err(), ACCES);
    let rw_root = c.mount("/rw").unwrap();
    let lookup = |c: &mut Client, dir: &[u8], name: &str| c.lookup(dir, name).unwrap().0;
    let h = Handles {
        f: lookup(&mut c, &tree_root, "f"),
        sub: lookup(&mut c, &tree_root, "sub"),
        etc_link: lookup(&mut c, &tree_root, "etc"),
        up_link: lookup(&mut c, &tree_root, "up"),
        rw_g: lookup(&mut c, &rw_root, "g"),
        gone: lookup(&mut c, &rw_root, "gone"),
        tree: tree_root,
    };
    std::fs::remove_file(rw.join("gone")).unwrap();
    (server, h)
}

#[test]
fn every_bad_call_gets_its_answer_and_the_server_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let (server, h) = setup(d.path());
    let mut c = server.client(0, 0);
    let rows = rows(&h);
    assert!(rows.len() >= 40, "{} rows", rows.len());
    for row in &rows {
        run_row(&server, &mut c, &h, row);
        still_serves(&server, &h, row.name);
    }
    // The long-lived connection took every bad call and still works.
    assert_eq!(c.getattr(&h.tree).unwrap().kind, 2);
    let lines = server.process.lines();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "{}",
        lines.join("\n")
    );
}
