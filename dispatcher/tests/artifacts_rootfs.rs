//! Unpacking rootfs and modules tarballs, and copying an overlay into a root: every kind of
//! entry, owners, modes and xattrs (as root), prefixes, and nothing ever written outside.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use dispatcher::artifacts::modules::{install_modules, unpack_modules};
use dispatcher::artifacts::rootfs::{copy_tree, unpack_rootfs};
use dispatcher::job::model::Compression;
use dispatcher::ErrorKind;

const MTIME: u64 = 1_600_000_000;
/// A `security.capability` value granting cap_net_raw (version 2, as setcap writes it).
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds tarballs entry by entry, pax xattr records and bad names included.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }

    fn add(&mut self, mut h: tar::Header, name: &str, data: &[u8]) -> &mut Self {
        h.set_size(data.len() as u64);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32, owner: (u64, u64)) -> &mut Self {
        self.add(
            Self::header(tar::EntryType::Directory, mode, owner),
            name,
            b"",
        )
    }

    fn file(&mut self, name: &str, mode: u32, owner: (u64, u64), data: &[u8]) -> &mut Self {
        self.add(
            Self::header(tar::EntryType::Regular, mode, owner),
            name,
            data,
        )
    }

    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, 0o777, (0, 0));
        h.set_link_name(target).unwrap();
        self.add(h, name, b"")
    }

    fn node(&mut self, kind: tar::EntryType, name: &str, mode: u32, dev: (u32, u32)) -> &mut Self {
        let mut h = Self::header(kind, mode, (0, 6));
        h.set_device_major(dev.0).unwrap();
        h.set_device_minor(dev.1).unwrap();
        self.add(h, name, b"")
    }

    /// A pax header with `SCHILY.xattr.*` records for the next entry.
    fn xattrs(&mut self, attrs: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (name, value) in attrs {
            let key = format!("SCHILY.xattr.{name}");
            let base = key.len() + value.len() + 3;
            let mut len = base + 1;
            while base + len.to_string().len() != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        self.0
            .append_data(&mut h, "PaxHeaders/x", &data[..])
            .unwrap();
        self
    }

    /// An entry whose name is written as is (the builder refuses `..`).
    fn raw_name(&mut self, kind: tar::EntryType, name: &[u8], link: &[u8]) -> &mut Self {
        let mut h = Self::header(kind, 0o644, (0, 0));
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.0.append(&h, &b""[..]).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn compress(data: &[u8], c: Option<Compression>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = dispatcher::artifacts::decompress::writer(&mut out, c).unwrap();
    std::io::Write::write_all(&mut w, data).unwrap();
    w.finish().unwrap();
    out
}

fn rootfs_tar() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("./", 0o711, (0, 0))
        .dir("etc", 0o755, (0, 0))
        .file("etc/passwd", 0o644, (0, 0), b"root:x:0:0::/root:/bin/sh\n")
        .link(tar::EntryType::Symlink, "etc/mtab", "/proc/self/mounts")
        .dir("usr/bin", 0o755, (0, 0))
        .xattrs(&[
            ("security.capability", &CAP_NET_RAW),
            ("user.labboot", b"hello"),
        ])
        .file("usr/bin/ping", 0o4755, (0, 0), b"ELF ping")
        .link(tar::EntryType::Link, "usr/bin/ping6", "usr/bin/ping")
        .link(tar::EntryType::Symlink, "bin", "usr/bin")
        .dir("home/u", 0o700, (1234, 5678))
        .file("home/u/notes", 0o600, (1234, 5678), b"mine")
        .dir("dev", 0o755, (0, 0))
        .node(tar::EntryType::Char, "dev/null", 0o666, (1, 3))
        .node(tar::EntryType::Block, "dev/sda", 0o660, (8, 0))
        .node(tar::EntryType::Fifo, "run/initctl", 0o600, (0, 0))
        .dir("tmp", 0o1777, (0, 0));
    t.finish()
}

fn check_rootfs(root: &Path) {
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(
        std::fs::read(root.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert_eq!(meta("etc/passwd").mode() & 0o7777, 0o644);
    assert_eq!(
        std::fs::read_link(root.join("etc/mtab")).unwrap(),
        Path::new("/proc/self/mounts")
    );
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let ping = meta("usr/bin/ping");
    assert_eq!(ping.mode() & 0o7777, 0o4755, "set-uid kept");
    assert_eq!(ping.ino(), meta("usr/bin/ping6").ino(), "hard link");
    assert_eq!(ping.nlink(), 2);
    assert_eq!(ping.mtime(), MTIME as i64);
    assert_eq!(
        xattr::get(root.join("usr/bin/ping"), "user.labboot")
            .unwrap()
            .unwrap(),
        b"hello"
    );
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(
        meta("etc").mtime(),
        MTIME as i64,
        "directory times set last"
    );
    assert_eq!(meta("home/u").mode() & 0o7777, 0o700);
    assert!(meta("run/initctl").file_type().is_fifo());
    let root_mode = std::fs::metadata(root).unwrap().mode() & 0o7777;
    assert_eq!(root_mode, 0o711, "the ./ entry sets the root's mode");
    if is_root() {
        assert_eq!(
            xattr::get(root.join("usr/bin/ping"), "security.capability")
                .unwrap()
                .unwrap(),
            CAP_NET_RAW,
            "capabilities survive the chown"
        );
        assert_eq!(
            (meta("home/u/notes").uid(), meta("home/u/notes").gid()),
            (1234, 5678)
        );
        assert_eq!((meta("home/u").uid(), meta("home/u").gid()), (1234, 5678));
        let null = meta("dev/null");
        assert!(null.file_type().is_char_device());
        assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let sda = meta("dev/sda");
        assert!(sda.file_type().is_block_device());
        assert_eq!((libc::major(sda.rdev()), libc::minor(sda.rdev())), (8, 0));
        assert_eq!(sda.gid(), 6);
    }
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn every_entry_kind_in_every_compression() {
    let tar = rootfs_tar();
    for c in [
        None,
        Some(Compression::Gz),
        Some(Compression::Xz),
        Some(Compression::Zstd),
        Some(Compression::Bz2),
    ] {
        let t = tempfile::tempdir().unwrap();
        let archive = t.path().join("rootfs.tar");
        std::fs::write(&archive, compress(&tar, c)).unwrap();
        let dest = t.path().join("root");
        // The compression is found from the data: no hint, and a wrong one, both work.
        unpack_rootfs(&archive, None, None, &dest).unwrap();
        check_rootfs(&dest);
        let dest2 = t.path().join("root2");
        unpack_rootfs(&archive, Some(Compression::Bz2), None, &dest2).unwrap();
        check_rootfs(&dest2);
    }
}

#[test]
fn gnu_tar_archives_unpack_like_gnu_tar() {
    if !is_root() {
        eprintln!("needs root (device nodes, owners); skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sh(&format!(
        "set -e; mkdir -p {s}/dev {s}/usr/bin {s}/home/u {s}/etc && cd {s} && \
         mknod dev/null c 1 3 && chmod 666 dev/null && mknod dev/sda b 8 0 && mkfifo dev/fifo && \
         echo ping > usr/bin/ping && chmod 4755 usr/bin/ping && ln usr/bin/ping usr/bin/ping6 && \
         setcap cap_net_raw+ep usr/bin/ping6 && chmod 4755 usr/bin/ping && \
         ln -s usr/bin bin && ln -s /proc/self/mounts etc/mtab && \
         echo notes > home/u/notes && chown -R 1234:5678 home/u && chmod 700 home/u && \
         python3 -c \"import os; os.setxattr('etc', 'user.dir', b'd')\" && \
         touch -h -d @1600000000 etc/mtab && \
         tar --xattrs --xattrs-include='*' --numeric-owner -cJf {t}/rootfs.tar.xz .",
        s = src.display(),
        t = t.path().display()
    ));
    let archive = t.path().join("rootfs.tar.xz");
    let ours = t.path().join("ours");
    unpack_rootfs(&archive, Some(Compression::Xz), None, &ours).unwrap();
    let gnu = t.path().join("gnu");
    sh(&format!(
        "mkdir {g} && tar --xattrs --xattrs-include='*' --numeric-owner -xpJf {a} -C {g}",
        g = gnu.display(),
        a = archive.display()
    ));
    let listing = |root: &Path| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && find . -printf '%p %y %m %U:%G %s %T@ %l\\n' | grep -v '^\\. ' | sort && \
                 python3 -c \"import os
for d, ds, fs in sorted(os.walk('.')):
    for n in sorted(ds + fs):
        p = os.path.join(d, n)
        for a in sorted(os.listxattr(p, follow_symlinks=False)):
            print(p, a, os.getxattr(p, a, follow_symlinks=False).hex())\" && \
                 stat -c '%n %t,%T %h' dev/null dev/sda usr/bin/ping",
                root.display()
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let (a, b) = (listing(&ours), listing(&gnu));
    assert_eq!(a, b, "ours:\n{a}\ngnu:\n{b}");
    assert!(a.contains("security.capability"), "{a}");
}

#[test]
fn escaping_entries_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dest = t.path().join("root");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            {
                let mut a = Tar::new();
                a.file("ok", 0o644, (0, 0), b"x").raw_name(
                    tar::EntryType::Regular,
                    b"../outside/evil",
                    b"",
                );
                a.finish()
            },
            "leaves the archive's root",
        ),
        (
            "inner dotdot",
            {
                let mut a = Tar::new();
                a.raw_name(tar::EntryType::Directory, b"a/../../outside/evil/", b"");
                a.finish()
            },
            "leaves the archive's root",
        ),
        (
            "hard link out",
            {
                let mut a = Tar::new();
                a.raw_name(tar::EntryType::Link, b"passwd", b"../../../etc/passwd");
                a.finish()
            },
            "leaves the root",
        ),
    ];
    for (what, tar, needle) in cases {
        let archive = t.path().join("bad.tar");
        std::fs::write(&archive, tar).unwrap();
        let e = unpack_rootfs(&archive, None, None, &dest).unwrap_err();
        assert_eq!(e.kind, ErrorKind::JobError, "{what}: {}", e.message);
        assert!(e.message.contains(needle), "{what}: {}", e.message);
        assert!(e.message.contains("bad.tar"), "{what}: {}", e.message);
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{what}");
    }
}

#[test]
fn symlinks_are_never_followed_out_of_the_root() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"safe").unwrap();
    let mut a = Tar::new();
    a.link(tar::EntryType::Symlink, "abs", outside.to_str().unwrap())
        .file("abs/evil", 0o644, (0, 0), b"evil")
        .link(tar::EntryType::Symlink, "up", "../../../../../..")
        .file("up/evil2", 0o644, (0, 0), b"evil")
        .link(
            tar::EntryType::Symlink,
            "victim",
            &format!("{}/victim", outside.display()),
        )
        .file(
            "victim",
            0o644,
            (0, 0),
            b"replaced the link, not its target",
        );
    let archive = t.path().join("links.tar");
    std::fs::write(&archive, a.finish()).unwrap();
    let dest = t.path().join("root");
    unpack_rootfs(&archive, None, None, &dest).unwrap();
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"safe");
    // Followed as the board would: inside the root.
    let inside = dest.join(outside.strip_prefix("/").unwrap()).join("evil");
    assert_eq!(std::fs::read(inside).unwrap(), b"evil");
    assert_eq!(std::fs::read(dest.join("evil2")).unwrap(), b"evil");
    assert!(!dest.join("victim").is_symlink());
}

#[test]
fn prefix_selects_the_root() {
    let mut a = Tar::new();
    a.dir("rootfs/", 0o755, (0, 0))
        .file("rootfs/etc/hostname", 0o644, (0, 0), b"board\n")
        .link(
            tar::EntryType::Link,
            "rootfs/etc/name",
            "rootfs/etc/hostname",
        )
        .file("other/secret", 0o600, (0, 0), b"no")
        .file("README", 0o644, (0, 0), b"no");
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("p.tar.gz");
    std::fs::write(&archive, compress(&a.finish(), Some(Compression::Gz))).unwrap();
    let dest = t.path().join("root");
    unpack_rootfs(&archive, Some(Compression::Gz), Some("rootfs/"), &dest).unwrap();
    assert_eq!(
        std::fs::read(dest.join("etc/hostname")).unwrap(),
        b"board\n"
    );
    assert_eq!(std::fs::read(dest.join("etc/name")).unwrap(), b"board\n");
    let names: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsStr::new("etc").to_os_string()]);
    assert_eq!(std::fs::metadata(&dest).unwrap().mode() & 0o7777, 0o755);

    let e = unpack_rootfs(&archive, None, Some("nothere/"), &t.path().join("r2")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert!(
        e.message.contains("nothing under the prefix /nothere"),
        "{}",
        e.message
    );
    let e = unpack_rootfs(&archive, None, Some("/rootfs/"), &t.path().join("r3")).unwrap_err();
    assert!(e.message.contains("relative"), "{}", e.message);
    let e = unpack_rootfs(&archive, None, Some("../x/"), &t.path().join("r4")).unwrap_err();
    assert!(e.message.contains(".."), "{}", e.message);
}

#[test]
fn corrupt_archives_are_job_errors() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("bad.tar.xz");
    let good = compress(&rootfs_tar(), Some(Compression::Xz));
    std::fs::write(&archive, &good[..good.len() / 2]).unwrap();
    let e = unpack_rootfs(&archive, Some(Compression::Xz), None, &t.path().join("r")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError, "{}", e.message);
    assert!(e.message.contains("bad.tar.xz"), "{}", e.message);
    std::fs::write(&archive, vec![7u8; 2048]).unwrap();
    let e = unpack_rootfs(&archive, None, None, &t.path().join("r")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError, "{}", e.message);
    let e = unpack_rootfs(&t.path().join("missing"), None, None, &t.path().join("r")).unwrap_err();
    assert!(e.message.contains("missing"), "{}", e.message);
}

fn modules_tar() -> Vec<u8> {
    // As `tar -C $INSTALL_MOD_PATH -cJf modules.tar.xz lib` makes it: `lib/` included.
    let mut a = Tar::new();
    a.dir("lib/", 0o755, (0, 0))
        .dir("lib/modules/", 0o755, (0, 0))
        .dir("lib/modules/6.1.0/", 0o755, (0, 0))
        .file(
            "lib/modules/6.1.0/modules.dep",
            0o644,
            (0, 0),
            b"kernel/x.ko:\n",
        )
        .file("lib/modules/6.1.0/kernel/x.ko", 0o644, (0, 0), b"ko")
        .link(
            tar::EntryType::Symlink,
            "lib/modules/6.1.0/build",
            "/usr/src/linux",
        );
    compress(&a.finish(), Some(Compression::Xz))
}

#[test]
fn modules_keep_a_merged_usr_lib_symlink() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("modules.tar.xz");
    std::fs::write(&archive, modules_tar()).unwrap();
    let root = t.path().join("root");
    sh(&format!(
        "mkdir -p {r}/usr/lib/aarch64-linux-gnu && ln -s usr/lib {r}/lib && \
         echo ld > {r}/usr/lib/aarch64-linux-gnu/ld.so",
        r = root.display()
    ));
    install_modules(&archive, Some(Compression::Xz), &root).unwrap();
    assert!(root.join("lib").is_symlink(), "lib -> usr/lib kept");
    assert_eq!(
        std::fs::read(root.join("usr/lib/modules/6.1.0/kernel/x.ko")).unwrap(),
        b"ko"
    );
    assert!(root.join("lib/aarch64-linux-gnu/ld.so").exists());

    // For a ramdisk: a temporary tree, removed when dropped.
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let tree = unpack_modules(&archive, None, &work).unwrap();
    assert_eq!(
        std::fs::read(tree.path().join("lib/modules/6.1.0/modules.dep")).unwrap(),
        b"kernel/x.ko:\n"
    );
    let kept = tree.path().to_path_buf();
    drop(tree);
    assert!(!kept.exists());

    let e = install_modules(&t.path().join("nope.tar"), None, &root).unwrap_err();
    assert!(e.message.contains("modules archive"), "{}", e.message);
}

#[test]
fn overlay_is_copied_into_the_root() {
    let t = tempfile::tempdir().unwrap();
    let overlay = t.path().join("overlay");
    let root = t.path().join("root");
    sh(&format!(
        "set -e; mkdir -p {o}/lava-1234/bin {o}/etc {o}/bin && \
         printf run > {o}/lava-1234/bin/lava-test-runner && chmod 750 {o}/lava-1234/bin/lava-test-runner && \
         ln -s bin/lava-test-runner {o}/lava-1234/runner && echo new > {o}/etc/motd && \
         echo tool > {o}/bin/lava-tool && chmod 755 {o}/bin/lava-tool && \
         touch -d @1600000000 {o}/lava-1234/bin/lava-test-runner && \
         mkdir -p {r}/etc {r}/usr/bin && chmod 700 {r}/etc && echo old > {r}/etc/motd && \
         ln -s /usr/bin {r}/bin",
        o = overlay.display(),
        r = root.display()
    ));
    copy_tree(&overlay, &root).unwrap();
    let runner = root.join("lava-1234/bin/lava-test-runner");
    assert_eq!(std::fs::read(&runner).unwrap(), b"run");
    let m = std::fs::metadata(&runner).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o750);
    assert_eq!(m.mtime(), 1_600_000_000);
    assert_eq!(
        std::fs::read_link(root.join("lava-1234/runner")).unwrap(),
        Path::new("bin/lava-test-runner")
    );
    assert_eq!(std::fs::read(root.join("etc/motd")).unwrap(), b"new\n");
    assert_eq!(
        std::fs::metadata(root.join("etc")).unwrap().mode() & 0o7777,
        0o700
    );
    // Through the root's absolute /bin -> /usr/bin, inside the root.
    assert!(root.join("bin").is_symlink());
    assert_eq!(
        std::fs::read(root.join("usr/bin/lava-tool")).unwrap(),
        b"tool\n"
    );
    assert!(!Path::new("/usr/bin/lava-tool").exists());
}
