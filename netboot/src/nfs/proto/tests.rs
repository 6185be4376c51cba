//! Tests of the RPC programs as a whole: records in, replies out, on exports in scratch
//! directories (and garbage in, never a panic).

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

/// CREATE `name` in the export's root as root (uid 0, gid 0): the status and the new file's
/// owner, when there is one.
fn create_as_root(s: &Service, name: &str) -> (u32, Option<(u32, u32)>) {
    use std::os::unix::fs::MetadataExt;
    let export = s.table().all()[0].clone();
    let mut args = Writer::new();
    args.opaque(&export.root_handle().encode())
        .opaque(name.as_bytes())
        .u32(0); // UNCHECKED
    for _ in 0..6 {
        args.u32(0); // sattr3: nothing set
    }
    let reply = s
        .handle(
            &call(NFS_PROGRAM, 3, 8, &args.into_bytes()),
            [127, 0, 0, 1].into(),
        )
        .unwrap();
    let b = reply.into_bytes();
    let status = Reader::new(&b[4 + 24..]).u32("status").unwrap();
    let owner = std::fs::metadata(export.spec().dir().join(name))
        .ok()
        .map(|m| (m.uid(), m.gid()));
    (status, owner)
}

#[test]
fn root_squash_makes_root_nobody_on_open_rw_exports() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid takes nothing, cannot fail and changes nothing.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the credential switch needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // An rw export open to every network: root is squashed by default.
    let s = service(d.path(), "/a");
    assert_eq!(create_as_root(&s, "denied"), (NfsStat::ACCES.0, None));
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(
        create_as_root(&s, "squashed"),
        (0, Some((ANON_ID, ANON_ID)))
    );

    // Asked not to squash: root stays root.
    let d = tempfile::tempdir().unwrap();
    let table = ExportTable::new();
    let spec = format!("/b={}:rw,no_root_squash", d.path().display());
    table
        .add(&ExportConfig::parse_spec(&spec).unwrap())
        .unwrap();
    let s = Service::new(table);
    assert_eq!(create_as_root(&s, "root"), (0, Some((0, 0))));

    // Limited to the boards' network: not squashed unless asked.
    let d = tempfile::tempdir().unwrap();
    let table = ExportTable::new();
    let mut c = ExportConfig::parse_spec(&format!("/c={}:rw", d.path().display())).unwrap();
    c.clients = vec!["127.0.0.0/8".into()];
    table.add(&c).unwrap();
    let s = Service::new(table);
    assert_eq!(create_as_root(&s, "board"), (0, Some((0, 0))));
}
