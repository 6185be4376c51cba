//! `labboot nfs` driven by a raw NFSv3 client over TCP: directory paging with cookies on 10,000
//! entries, handles that survive a restart, MKNOD/LINK/SYMLINK and ownership from `AUTH_SYS`,
//! unstable WRITE + COMMIT, client restrictions from the YAML config, portmap GETPORT, and
//! malformed or abandoned calls.

mod nfs_common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use labboot_tests::require;
use netboot::nfs::xdr::{Reader, Writer};
use nfs_common::{export_arg, sattr_mode, start, Client, MOUNT, NFS, PORTMAP};

/// Lists a directory page by page; returns every name seen (in order).
fn list_all(
    c: &mut Client,
    dir: &[u8],
    count: u32,
    plus: bool,
    mut between_pages: impl FnMut(usize),
) -> Vec<String> {
    let (mut cookie, mut verf) = (0u64, [0u8; 8]);
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let (entries, v, eof) = c.readdir_page(dir, cookie, verf, count, plus).unwrap();
        assert!(!entries.is_empty() || eof, "an empty page before the end");
        if plus {
            for (name, _, _, fh) in &entries {
                assert!(fh.is_some(), "READDIRPLUS gives a handle for {name}");
            }
        }
        names.extend(entries.iter().map(|e| e.0.clone()));
        if let Some(last) = entries.last() {
            cookie = last.2;
        }
        verf = v;
        pages += 1;
        between_pages(pages);
        if eof {
            return names;
        }
    }
}

#[test]
fn readdir_pages_10000_entries_exactly_once() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let mut want = BTreeSet::from([".".to_string(), "..".to_string()]);
    for i in 0..10_000 {
        let name = format!("file-with-a-longish-name-{i:05}");
        std::fs::write(big.join(&name), b"").unwrap();
        want.insert(name);
    }
    let server = start(0, &["--export".into(), export_arg("big", &big, "rw")]);
    let mut c = server.client(0, 0);
    let root = c.mount("/big").unwrap();
    for (plus, count) in [(false, 4096), (true, 8192), (false, 65536), (true, 131072)] {
        let names = list_all(&mut c, &root, count, plus, |_| {});
        assert_eq!(
            names.len(),
            want.len(),
            "plus={plus} count={count}: no duplicates"
        );
        let got: BTreeSet<String> = names.into_iter().collect();
        assert_eq!(got, want, "plus={plus} count={count}");
    }
    // Entries created and removed while listing: every entry present throughout is listed once.
    let mut added = 0;
    let names = list_all(&mut c, &root, 4096, false, |page| {
        if page % 10 == 0 {
            std::fs::write(big.join(format!("added-{page}")), b"").unwrap();
            std::fs::remove_file(big.join(format!("file-with-a-longish-name-{:05}", page)))
                .unwrap();
            added += 1;
        }
    });
    assert!(added > 5);
    let mut seen = BTreeSet::new();
    for n in &names {
        assert!(seen.insert(n.clone()), "{n} listed twice");
    }
    for n in &want {
        let removed = n
            .strip_prefix("file-with-a-longish-name-")
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i % 10 == 0 && i <= 10 * added);
        assert!(removed || seen.contains(n), "{n} missing");
    }
    // A page too small for one entry is TOOSMALL (10005), a foreign verifier BAD_COOKIE (10003).
    assert_eq!(
        c.readdir_page(&root, 0, [0; 8], 100, false).unwrap_err(),
        10005
    );
    let (first, _, _) = c.readdir_page(&root, 0, [0; 8], 4096, false).unwrap();
    let cookie = first.last().unwrap().2;
    assert_eq!(
        c.readdir_page(&root, cookie, *b"someverf", 4096, false)
            .unwrap_err(),
        10003
    );
}

#[test]
fn handles_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let exp = d.path().join("exp");
    std::fs::create_dir_all(exp.join("usr/lib/deep")).unwrap();
    std::fs::write(exp.join("usr/lib/deep/file"), b"still here").unwrap();
    let args = vec!["--export".to_string(), export_arg("exp", &exp, "rw")];
    let server = start(0, &args);
    let port = server.port;
    let mut c = server.client(0, 0);
    let root = c.mount("/exp").unwrap();
    let (dir, _) = c.walk(&root, "usr/lib/deep").unwrap();
    let (file, attr) = c.lookup(&dir, "file").unwrap();
    drop(c);
    drop(server);

    // A new process on the same port, asked with the old handles and no new MOUNT.
    let server = start(port, &args);
    let mut c = server.client(0, 0);
    assert_eq!(c.getattr(&file).unwrap(), attr);
    assert_eq!(
        c.read(&file, 0, 100).unwrap(),
        (b"still here".to_vec(), true)
    );
    assert_eq!(c.lookup(&dir, "file").unwrap().0, file);
    assert_eq!(c.getattr(&root).unwrap().kind, 2);
    // A file removed behind the server's back is stale, not another file.
    std::fs::remove_file(exp.join("usr/lib/deep/file")).unwrap();
    std::fs::write(exp.join("usr/lib/deep/other"), b"x").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.getattr(&file).unwrap_err(), 70);
    drop(c);
    drop(server);

    // The same directory under another export name: the old handles are stale.
    let server = start(0, &["--export".into(), export_arg("other", &exp, "rw")]);
    let mut c = server.client(0, 0);
    assert_eq!(c.getattr(&root).unwrap_err(), 70);
}

/// `DIR/exp`, the directory exported, holding `shared` (mode 0777).
fn export_with_shared_dir(dir: &Path) -> PathBuf {
    let exp = dir.join("exp");
    std::fs::create_dir(&exp).unwrap();
    std::fs::create_dir(exp.join("shared")).unwrap();
    std::fs::set_permissions(exp.join("shared"), std::fs::Permissions::from_mode(0o777)).unwrap();
    exp
}

/// An `rw` export open to every network squashes root by default: root's new files belong
/// to nobody, and root cannot write where nobody cannot.
#[test]
fn open_rw_exports_squash_root() {
    if !require::root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exp = export_with_shared_dir(d.path());
    let server = start(0, &["--export".into(), export_arg("exp", &exp, "rw")]);
    let mut admin = server.client(0, 0);
    let root = admin.mount("/exp").unwrap();
    let mut how = vec![0, 0, 0, 0];
    how.extend(sattr_mode(Some(0o644)));
    assert_eq!(admin.make(8, &root, "nope", &how).unwrap_err(), 13, "ACCES");
    let (shared, _) = admin.lookup(&root, "shared").unwrap();
    let (_, attr) = admin.make(8, &shared, "squashed", &how).unwrap();
    assert_eq!((attr.uid, attr.gid), (65534, 65534));
    let md = std::fs::metadata(exp.join("shared/squashed")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    let log = server.process.lines().join("\n");
    assert!(log.contains("root squashed, every network"), "{log}");
}

#[test]
fn root_filesystem_operations() {
    if !require::root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exp = export_with_shared_dir(d.path());
    std::fs::create_dir(exp.join("private")).unwrap();
    std::fs::set_permissions(exp.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A board's root filesystem: its root must stay root.
    let server = start(
        0,
        &[
            "--export".into(),
            export_arg("exp", &exp, "rw,no_root_squash"),
        ],
    );

    // A user's files get its uid/gid; it cannot write where the modes say no.
    let mut user = server.client(1234, 5678);
    let root = user.mount("/exp").unwrap();
    let (shared, _) = user.lookup(&root, "shared").unwrap();
    let mut how = vec![0, 0, 0, 0];
    how.extend(sattr_mode(Some(0o640)));
    let (f, attr) = user.make(8, &shared, "mine", &how).unwrap();
    assert_eq!((attr.uid, attr.gid, attr.mode), (1234, 5678, 0o640));
    let md = std::fs::metadata(exp.join("shared/mine")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o640)
    );
    let (private, _) = user
        .lookup(&root, "private")
        .unwrap_or_else(|_| panic!("lookup private"));
    assert_eq!(
        user.make(8, &private, "nope", &how).unwrap_err(),
        13,
        "ACCES"
    );

    // Unstable writes, then COMMIT with the same verifier; a stable write is FILE_SYNC.
    let (c1, v1) = user.write(&f, 0, b"hello ", 0).unwrap();
    let (c2, v2) = user.write(&f, 6, b"world", 0).unwrap();
    assert_eq!((c1, c2), (0, 0));
    assert_eq!(v1, v2);
    assert_eq!(user.commit(&f).unwrap(), v1);
    let (c3, _) = user.write(&f, 11, b"!", 2).unwrap();
    assert_eq!(c3, 2);
    assert_eq!(
        std::fs::read(exp.join("shared/mine")).unwrap(),
        b"hello world!"
    );
    // The owner may still write a file it made read-only (as with knfsd).
    let mut ro = vec![0, 0, 0, 0];
    ro.extend(sattr_mode(Some(0o444)));
    let (f2, _) = user.make(8, &shared, "readonly", &ro).unwrap();
    user.write(&f2, 0, b"data", 2).unwrap();

    // Root makes device nodes, FIFOs, symlinks, directories and hard links.
    let mut admin = server.client(0, 0);
    let mut chr = 4u32.to_be_bytes().to_vec();
    chr.extend(sattr_mode(Some(0o666)));
    chr.extend(1u32.to_be_bytes());
    chr.extend(5u32.to_be_bytes());
    let (_, zero) = admin.make(11, &root, "zero", &chr).unwrap();
    assert_eq!((zero.kind, zero.rdev, zero.mode), (4, (1, 5), 0o666));
    let md = std::fs::symlink_metadata(exp.join("zero")).unwrap();
    assert_eq!(md.rdev(), libc::makedev(1, 5));
    let mut fifo = 7u32.to_be_bytes().to_vec();
    fifo.extend(sattr_mode(Some(0o600)));
    let (_, p) = admin.make(11, &root, "fifo", &fifo).unwrap();
    assert_eq!((p.kind, p.mode), (7, 0o600));
    let mut sl = sattr_mode(None);
    let target = b"/usr/bin/../lib";
    sl.extend((target.len() as u32).to_be_bytes());
    sl.extend(target);
    sl.push(0);
    let (l, la) = admin.make(10, &root, "lnk", &sl).unwrap();
    assert_eq!(la.kind, 5);
    assert_eq!(admin.readlink(&l).unwrap(), target);
    assert_eq!(
        std::fs::read_link(exp.join("lnk"))
            .unwrap()
            .as_os_str()
            .as_encoded_bytes(),
        target
    );
    let (dir, da) = admin
        .make(9, &root, "sub", &sattr_mode(Some(0o2750)))
        .unwrap();
    assert_eq!((da.kind, da.mode), (2, 0o2750));
    admin.link(&f, &dir, "hard").unwrap();
    assert_eq!(
        std::fs::metadata(exp.join("sub/hard")).unwrap().ino(),
        std::fs::metadata(exp.join("shared/mine")).unwrap().ino()
    );
    assert_eq!(admin.getattr(&f).unwrap().nlink, 2);
    // SETATTR: owner, mode, size and times, as root; a user may not give files away.
    let mut sattr = Writer::new();
    sattr
        .bool(true)
        .u32(0o751)
        .bool(true)
        .u32(42)
        .bool(true)
        .u32(43);
    sattr
        .bool(true)
        .u64(3)
        .u32(2)
        .u32(1_000_000)
        .u32(5)
        .u32(2)
        .u32(2_000_000)
        .u32(7);
    let a = admin.setattr(&f2, &sattr.into_bytes()).unwrap();
    assert_eq!(
        (a.mode, a.uid, a.gid, a.size, a.mtime),
        (0o751, 42, 43, 3, 2_000_000)
    );
    let md = std::fs::metadata(exp.join("shared/readonly")).unwrap();
    assert_eq!(
        (
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            md.len(),
            md.mtime(),
            md.atime()
        ),
        (0o751, 42, 43, 3, 2_000_000, 1_000_000)
    );
    let mut give = Writer::new();
    give.bool(false)
        .bool(true)
        .u32(0)
        .bool(false)
        .bool(false)
        .u32(0)
        .u32(0);
    assert_eq!(user.setattr(&f, &give.into_bytes()).unwrap_err(), 1, "PERM");
    // Sizes, times and fsid as on disk; fsid is the same for every object of the export.
    let attr = admin.getattr(&f).unwrap();
    let md = std::fs::metadata(exp.join("shared/mine")).unwrap();
    assert_eq!(
        (attr.size, i64::from(attr.mtime), attr.fileid),
        (md.len(), md.mtime(), md.ino())
    );
    assert_eq!(attr.fsid, admin.getattr(&root).unwrap().fsid);
    // A hard link to a symlink links the symlink itself.
    admin.link(&l, &dir, "lnk2").unwrap();
    assert_eq!(
        std::fs::read_link(exp.join("sub/lnk2"))
            .unwrap()
            .as_os_str(),
        "/usr/bin/../lib"
    );
}

#[test]
fn config_file_limits_clients_and_portmap_answers() {
    let d = tempfile::tempdir().unwrap();
    let open = d.path().join("open");
    let closed = d.path().join("closed");
    std::fs::create_dir(&open).unwrap();
    std::fs::create_dir(&closed).unwrap();
    let cfg = d.path().join("labboot.yaml");
    std::fs::write(
        &cfg,
        format!(
            "nfs:\n  portmap: 127.0.0.1:0\n  exports:\n    - name: /open\n      dir: {}\n      clients: [127.0.0.0/8]\n    - name: /closed\n      dir: {}\n      access: rw\n      clients: [10.1.2.3]\n",
            open.display(),
            closed.display()
        ),
    )
    .unwrap();
    let mut server = start(0, &["--config".into(), cfg.display().to_string()]);
    let mut c = server.client(0, 0);
    let fh = c.mount("/open").unwrap();
    assert_eq!(c.getattr(&fh).unwrap().kind, 2);
    assert_eq!(c.mount("/closed").unwrap_err(), 13);
    assert_eq!(c.mount("/nonexistent").unwrap_err(), 2);

    let line = server
        .process
        .wait_for_line(
            r"nfs: portmap listening on 127\.0\.0\.1:\d+",
            Duration::from_secs(5),
        )
        .unwrap();
    let pm_port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    // GETPORT over TCP.
    let mut pm = Client::connect(pm_port, 0, 0);
    for (prog, prot, want) in [(NFS, 6, server.port), (MOUNT, 6, server.port), (NFS, 17, 0)] {
        let mut a = Writer::new();
        a.u32(prog).u32(3).u32(prot).u32(0);
        let body = pm.call(PORTMAP, 2, 3, &a.into_bytes());
        assert_eq!(
            Reader::new(&body).u32("port").unwrap(),
            u32::from(want),
            "{prog}/{prot}"
        );
    }
    // GETPORT over UDP.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = Writer::new();
    w.u32(77)
        .u32(0)
        .u32(2)
        .u32(PORTMAP)
        .u32(2)
        .u32(3)
        .u32(0)
        .u32(0)
        .u32(0)
        .u32(0);
    w.u32(MOUNT).u32(3).u32(6).u32(0);
    udp.send_to(&w.into_bytes(), ("127.0.0.1", pm_port))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = udp.recv(&mut buf).unwrap();
    let mut r = Reader::new(&buf[..n]);
    let head: Vec<u32> = (0..6).map(|_| r.u32("head").unwrap()).collect();
    assert_eq!(head, [77, 1, 0, 0, 0, 0]);
    assert_eq!(r.u32("port").unwrap(), u32::from(server.port));
}

#[test]
fn malformed_and_abandoned_calls_do_not_hurt() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), vec![7u8; 100_000]).unwrap();
    let server = start(0, &["--export".into(), export_arg("exp", d.path(), "rw")]);
    let addr = ("127.0.0.1", server.port);
    // A record mark announcing 2 GiB: the server closes the connection.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed");
    // Garbage records get GARBAGE_ARGS or nothing, and the connection keeps working.
    let mut c = server.client(0, 0);
    for junk in [
        &b""[..],
        b"\0\0\0\x41",
        &[0xffu8; 64][..],
        b"\0\0\0\x20short",
    ] {
        let (accept, _) = c.call_raw(NFS, 3, 1, junk);
        assert_eq!(accept, 4, "GARBAGE_ARGS for {junk:?}");
    }
    // A well-formed empty handle is an NFS error, BADHANDLE, not an RPC one.
    assert_eq!(c.getattr(b"").unwrap_err(), 10001);
    // A client that leaves in the middle of a record, and one that leaves with calls in flight.
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&[0x80, 0, 0x10, 0, 0, 0, 0, 1, 0, 0]).unwrap();
    }
    let root = c.mount("/exp").unwrap();
    let (f, _) = c.lookup(&root, "f").unwrap();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut a = Writer::new();
        a.opaque(&f).u64(0).u32(100_000);
        let mut w = Writer::new();
        w.u32(0)
            .u32(5)
            .u32(0)
            .u32(2)
            .u32(NFS)
            .u32(3)
            .u32(6)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0);
        w.fixed(&a.into_bytes());
        let mut bytes = w.into_bytes();
        let mark = (bytes.len() as u32 - 4) | 0x8000_0000;
        bytes[..4].copy_from_slice(&mark.to_be_bytes());
        for _ in 0..8 {
            s.write_all(&bytes).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (data, eof) = c.read(&f, 0, 100_000).unwrap();
    assert_eq!((data.len(), eof), (100_000, true));
    assert!(
        !server
            .process
            .lines()
            .iter()
            .any(|l| l.contains("panicked")),
        "{:?}",
        server.process.lines()
    );
}
