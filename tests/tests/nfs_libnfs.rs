//! `labboot nfs` against libnfs's tools (Debian `libnfs-utils`): a recursive listing of a
//! Debian-like tree matches the directory exactly, 200 MiB copy both ways, read-only exports
//! refuse writes, and links pointing out of the export leak nothing.

mod nfs_common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use labboot_tests::require;
use nfs_common::{export_arg, run, start};
use sha2::{Digest, Sha256};

/// Builds a small Debian-like root filesystem in `root`.
fn build_tree(root: &Path) {
    let dirs = [
        "etc/apt/sources.list.d",
        "usr/bin",
        "usr/lib/x86_64-linux-gnu",
        "usr/share/doc/base-files",
        "var/log",
        "var/cache/apt",
        "tmp",
        "root",
        "home/user",
        "dev",
        "run",
        "many",
    ];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let files: [(&str, usize, u32, u32, u32); 10] = [
        ("etc/hostname", 6, 0o644, 0, 0),
        ("etc/shadow", 512, 0o640, 0, 42),
        ("etc/apt/sources.list.d/debian.sources", 4095, 0o644, 0, 0),
        ("usr/bin/env", 4096, 0o755, 0, 0),
        ("usr/bin/sudo", 65537, 0o4755, 0, 0),
        ("usr/lib/x86_64-linux-gnu/libc.so.6", 1_048_579, 0o755, 0, 0),
        ("usr/share/doc/base-files/copyright", 0, 0o644, 0, 0),
        ("var/log/syslog", 12_345, 0o600, 104, 4),
        ("home/user/.profile", 807, 0o644, 1000, 1000),
        ("home/user/notes with space.txt", 3, 0o400, 1000, 1000),
    ];
    for (path, size, mode, uid, gid) in files {
        let p = root.join(path);
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&p, data).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/etc/passwd", root.join("etc/passwd-host")).unwrap();
    symlink("../../etc", root.join("usr/share/up")).unwrap();
    symlink("does-not-exist", root.join("var/dangling")).unwrap();
    std::fs::hard_link(root.join("usr/bin/env"), root.join("usr/bin/env-hardlink")).unwrap();
    let fifo =
        std::ffi::CString::new(root.join("run/initctl").as_os_str().as_encoded_bytes()).unwrap();
    let null =
        std::ffi::CString::new(root.join("dev/null").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated paths; the test runs as root (device nodes need CAP_MKNOD).
    unsafe {
        assert_eq!(libc::mkfifo(fifo.as_ptr(), 0o600), 0);
        assert_eq!(
            libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
            0
        );
    }
    for i in 0..10_000 {
        std::fs::write(root.join(format!("many/entry-{i:05}")), b"").unwrap();
    }
}

/// What `nfs-ls -R` prints for every path below `root`: path → (mode string, nlink, uid, gid,
/// size). libnfs prints no type letter for FIFOs and sockets, and only the nine rwx bits.
fn expected_listing(root: &Path) -> BTreeMap<String, (String, u64, u32, u32, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let t = if ft.is_dir() {
                "d"
            } else if ft.is_symlink() {
                "l"
            } else if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else if ft.is_file() {
                "-"
            } else {
                ""
            };
            let mut mode = t.to_string();
            for (i, ch) in "rwxrwxrwx".chars().enumerate() {
                mode.push(if md.mode() & (0o400 >> i) != 0 {
                    ch
                } else {
                    '-'
                });
            }
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, (mode, md.nlink(), md.uid(), md.gid(), md.size()));
            if ft.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn parse_listing(text: &str) -> BTreeMap<String, (String, u64, u32, u32, u64)> {
    let re = regex::Regex::new(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+) (.*)$").unwrap();
    text.lines()
        .map(|l| {
            let c = re
                .captures(l)
                .unwrap_or_else(|| panic!("unexpected nfs-ls line {l:?}"));
            (
                c[6].to_string(),
                (
                    c[1].to_string(),
                    c[2].parse().unwrap(),
                    c[3].parse().unwrap(),
                    c[4].parse().unwrap(),
                    c[5].parse().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn recursive_listing_matches_the_directory() {
    if !require::root() || !require::tool("nfs-ls") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("tree");
    std::fs::create_dir(&root).unwrap();
    build_tree(&root);
    let server = start(0, &["--export".into(), export_arg("tree", &root, "ro")]);
    let (ok, out, err) = run("nfs-ls", &["-R", &server.url("/tree")]);
    assert!(ok, "nfs-ls failed: {err}");
    let got = parse_listing(&out);
    let want = expected_listing(&root);
    assert_eq!(got.len(), want.len(), "number of entries");
    for (path, w) in &want {
        assert_eq!(got.get(path), Some(w), "{path}");
    }
    assert!(want.len() > 10_000);

    // Link targets, which nfs-ls does not print, through READLINK.
    let mut c = server.client(0, 0);
    let fh = c.mount("/tree").unwrap();
    for link in ["bin", "etc/passwd-host", "usr/share/up", "var/dangling"] {
        let (lfh, attr) = c.walk(&fh, link).unwrap();
        assert_eq!(attr.kind, 5, "{link} is a symlink");
        let target = std::fs::read_link(root.join(link)).unwrap();
        assert_eq!(
            c.readlink(&lfh).unwrap(),
            target.as_os_str().as_encoded_bytes(),
            "{link}"
        );
    }
    // Full modes (setuid, sticky), device numbers, hard links.
    assert_eq!(c.walk(&fh, "usr/bin/sudo").unwrap().1.mode, 0o4755);
    assert_eq!(c.walk(&fh, "tmp").unwrap().1.mode, 0o1777);
    let null = c.walk(&fh, "dev/null").unwrap().1;
    assert_eq!((null.kind, null.rdev), (4, (1, 3)));
    assert_eq!(c.walk(&fh, "run/initctl").unwrap().1.kind, 7);
    let a = c.walk(&fh, "usr/bin/env").unwrap();
    let b = c.walk(&fh, "usr/bin/env-hardlink").unwrap();
    assert_eq!((a.0, a.1.nlink), (b.0, 2), "hard links share one handle");
}

fn sha256_file(p: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_vec()
}

#[test]
fn copies_200_mib_both_ways() {
    if !require::tool("nfs-cp") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exp = d.path().join("exp");
    std::fs::create_dir(&exp).unwrap();
    let src = d.path().join("src.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..200 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    let server = start(
        0,
        &[
            "--export".into(),
            export_arg("exp", &exp, "rw,no_root_squash"),
        ],
    );
    let up = server.url("/exp/up.bin");
    let (ok, _, err) = run("nfs-cp", &[src.to_str().unwrap(), &up]);
    assert!(ok, "nfs-cp to the server failed: {err}");
    assert_eq!(
        std::fs::metadata(exp.join("up.bin")).unwrap().len(),
        200 << 20
    );
    assert_eq!(sha256_file(&exp.join("up.bin")), sha256_file(&src));
    let back = d.path().join("back.bin");
    let (ok, _, err) = run("nfs-cp", &[&up, back.to_str().unwrap()]);
    assert!(ok, "nfs-cp from the server failed: {err}");
    assert_eq!(sha256_file(&back), sha256_file(&src));
}

#[test]
fn read_only_exports_refuse_writes() {
    if !require::tool("nfs-cp") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exp = d.path().join("exp");
    std::fs::create_dir(&exp).unwrap();
    std::fs::write(exp.join("existing"), b"original").unwrap();
    let src = d.path().join("src");
    std::fs::write(&src, b"new data").unwrap();
    let server = start(0, &["--export".into(), export_arg("ro", &exp, "ro")]);
    for target in ["/ro/new", "/ro/existing"] {
        let (ok, _, _) = run("nfs-cp", &[src.to_str().unwrap(), &server.url(target)]);
        assert!(!ok, "nfs-cp into a ro export succeeded ({target})");
    }
    assert!(!exp.join("new").exists());
    assert_eq!(std::fs::read(exp.join("existing")).unwrap(), b"original");
    // Through the raw client too: WRITE, CREATE and MKDIR get NFS3ERR_ROFS (30).
    let mut c = server.client(0, 0);
    let fh = c.mount("/ro").unwrap();
    let (file, _) = c.lookup(&fh, "existing").unwrap();
    assert_eq!(c.write(&file, 0, b"x", 2), Err(30));
    let mut how = vec![0, 0, 0, 0];
    how.extend(nfs_common::sattr_mode(Some(0o644)));
    assert_eq!(c.make(8, &fh, "new", &how).unwrap_err(), 30);
    assert_eq!(
        c.make(9, &fh, "dir", &nfs_common::sattr_mode(None))
            .unwrap_err(),
        30
    );
}

#[test]
fn links_out_of_the_export_leak_nothing() {
    if !require::tool("nfs-cat") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let exp = d.path().join("exp");
    std::fs::create_dir(&exp).unwrap();
    std::fs::write(d.path().join("secret"), b"outside the export").unwrap();
    symlink("/etc/passwd", exp.join("passwd")).unwrap();
    symlink("/etc", exp.join("etc")).unwrap();
    symlink("../secret", exp.join("secret")).unwrap();
    let server = start(
        0,
        &[
            "--export".into(),
            export_arg("exp", &exp, "rw,no_root_squash"),
        ],
    );
    for name in ["passwd", "secret", "etc/passwd"] {
        let (ok, out, _) = run("nfs-cat", &[&server.url(&format!("/exp/{name}"))]);
        assert!(!ok || out.is_empty(), "{name} leaked: {out}");
        assert!(
            !out.contains("root:") && !out.contains("outside"),
            "{name} leaked"
        );
    }
    let mut c = server.client(0, 0);
    let root = c.mount("/exp").unwrap();
    // Links are returned as links, and reading or walking through them fails on the server.
    let (link, attr) = c.lookup(&root, "passwd").unwrap();
    assert_eq!(attr.kind, 5);
    assert_eq!(c.readlink(&link).unwrap(), b"/etc/passwd");
    assert!(c.read(&link, 0, 4096).is_err());
    let (etc, _) = c.lookup(&root, "etc").unwrap();
    assert_eq!(c.lookup(&etc, "passwd").unwrap_err(), 20, "NOTDIR");
    // `..` at the root stays at the root, however often.
    let (up, _) = c.lookup(&root, "..").unwrap();
    assert_eq!(up, root);
    let (up2, _) = c.lookup(&up, "..").unwrap();
    assert_eq!(up2, root);
    assert!(c.mount("/exp/..").is_ok_and(|fh| fh == root));
    // Names with a slash are refused.
    assert!(c.lookup(&root, "../secret").is_err());
    // A forged handle naming an inode outside the export (same export id) is stale.
    let passwd = std::fs::metadata("/etc/passwd").unwrap();
    let mut forged = netboot::nfs::fs::Handle::decode(&root).expect("labboot's handle");
    forged.ino = passwd.ino();
    forged.born = (0, 0);
    let forged = forged.encode().to_vec();
    assert_eq!(c.getattr(&forged).unwrap_err(), 70, "STALE");
    assert!(c.read(&forged, 0, 100).is_err());
    // A handle of an unknown shape is BADHANDLE.
    assert_eq!(c.getattr(b"not a handle").unwrap_err(), 10001);
}
