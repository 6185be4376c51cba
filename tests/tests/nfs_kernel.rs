//! The Linux kernel as an NFS client of `labboot nfs`: QEMU arm64 boots the master built by
//! `labboot image build` (Debian's kernel, the generated initrd) with `labboot.root=nfs:…`, in a
//! private network namespace where `labboot dhcp` hands out the address and `labboot nfs` serves
//! the extracted `rootfs.tar.gz` and answers portmap on port 111 (the initrd's busybox `mount`
//! passes text options; the kernel asks the portmapper for the NFS and MOUNT ports).
//!
//! * Read-only root with a tmpfs overlay (issue 6's boot test with an NFS root): the master
//!   comes up, a file written in `/` is visible in the guest, the host directory is unchanged.
//! * Read-write root (`labboot.overlay=none`): the guest creates, renames, links, symlinks,
//!   makes FIFOs and device nodes, changes owners and modes, deletes, and lists `/usr`; the host
//!   directory must show exactly that. Then the server is killed and started again while a guest
//!   loop writes and reads files through handles it already holds; the loop must finish with the
//!   right contents.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use labboot_tests::binary::labboot_bin;
use labboot_tests::console::Console;
use labboot_tests::netns::Netns;
use labboot_tests::process::ServerProcess;
use labboot_tests::qemu::{Board, QEMU_ARM64};
use labboot_tests::require;
use sha2::{Digest, Sha256};

const BOOT: Duration = Duration::from_secs(240);

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The master's outputs, built once per test process from the shipped recipe (packages cached
/// under the target directory, shared with `image_boot.rs`).
fn master() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = tmp.join("nfs-kernel-master");
        labboot_tests::master::build_master(tmp, &out);
        out
    })
}

/// Extracts the master's `rootfs.tar.gz` into `dir` as root (owners, modes and device nodes kept).
fn extract_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("tar")
        .args(["--numeric-owner", "-xpzf"])
        .arg(master().join("rootfs.tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "tar could not extract rootfs.tar.gz");
}

/// What `path` is on disk, as the comparisons need it: type, mode, owner, links, size, device,
/// link target, content hash and modification time.
fn describe(path: &Path) -> String {
    let m = std::fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let extra = if ft.is_symlink() {
        format!("-> {:?}", std::fs::read_link(path).unwrap())
    } else if ft.is_file() {
        sha256_hex(&std::fs::read(path).unwrap())
    } else {
        String::new()
    };
    format!(
        "mode={:o} owner={}:{} nlink={} size={} rdev={:x} mtime={}.{} {extra}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        m.size(),
        m.rdev(),
        m.mtime(),
        m.mtime_nsec()
    )
}

/// Every entry below `root` (relative path → [`describe`]), not following symlinks.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let here = root.join(rel);
        out.insert(rel.to_path_buf(), describe(&here));
        if std::fs::symlink_metadata(&here).unwrap().is_dir() {
            for e in std::fs::read_dir(&here).unwrap() {
                walk(root, &rel.join(e.unwrap().file_name()), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// The virtual lab of one test: a namespace with a tap, `labboot dhcp` and `labboot nfs`
/// (NFS on 10.77.0.1:2049, portmap on 10.77.0.1:111) exporting `root` as `/master`.
struct Lab {
    ns: Netns,
    tap: String,
    root: PathBuf,
    access: &'static str,
    _dhcp: ServerProcess,
    nfs: ServerProcess,
}

impl Lab {
    fn start(root: &Path, access: &'static str) -> Lab {
        let ns = Netns::new("nfk").unwrap();
        let tap = ns.add_tap("nfktap0", "10.77.0.1/24").unwrap();
        let dhcp = labboot_tests::master::start_dhcp(&ns, &tap);
        let nfs = start_nfs(&ns, root, access);
        Lab {
            ns,
            tap,
            root: root.to_path_buf(),
            access,
            _dhcp: dhcp,
            nfs,
        }
    }

    /// Kills the NFS server (SIGKILL), leaves it down for `down`, and starts it again on the
    /// same address and export.
    fn restart_nfs(&mut self, down: Duration) {
        self.nfs.kill();
        std::thread::sleep(down);
        self.nfs = start_nfs(&self.ns, &self.root, self.access);
    }

    /// Boots the master with its root on this lab's export and `extra` kernel arguments.
    fn boot(&self, extra: &str) -> Board {
        let out = master();
        let append = format!(
            "console=ttyAMA0 panic=-1 labboot.board=board7 \
             labboot.root=nfs:10.77.0.1:/master {extra}"
        );
        Board::boot_kernel(
            &self.ns,
            &self.tap,
            &out.join("vmlinuz"),
            &out.join("initrd.cpio.gz"),
            &append,
        )
        .expect("start the QEMU board")
    }
}

fn start_nfs(ns: &Netns, root: &Path, access: &str) -> ServerProcess {
    let mut nfs = ns.command(labboot_bin());
    nfs.args(["--log", "info", "nfs", "--listen", "10.77.0.1:2049"])
        .args(["--portmap", "10.77.0.1:111", "--export"])
        .arg(format!("/master={}:{access}", root.display()));
    ServerProcess::start(
        "labboot nfs",
        nfs,
        r"nfs: listening on 10\.77\.0\.1:2049",
        Duration::from_secs(30),
    )
    .unwrap()
}

/// Runs `command` at the guest's shell and returns its exit status. The status line is built by
/// the shell (`$((…))`), so the echo of the typed command never matches it.
fn run(console: &mut Console, command: &str, timeout: Duration) -> u32 {
    console
        .send_line(&format!("{command}; echo \"exit-status=$((1000+$?))\""))
        .unwrap();
    let caps = console
        .expect_captures(r"exit-status=1(\d\d\d)", timeout)
        .unwrap();
    caps[1].parse().unwrap()
}

#[test]
fn master_boots_from_a_read_only_nfs_root_with_a_tmpfs_overlay() {
    if !(require::root() && require::tool(QEMU_ARM64) && require::tool("tar")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    extract_rootfs(&root);
    let before = tree(&root);
    let lab = Lab::start(&root, "ro");

    let mut board = lab.boot("");
    let console = board.console();
    console
        .expect(
            r"labboot-master board=board7 root=nfs:10\.77\.0\.1:/master overlay=tmpfs",
            BOOT,
        )
        .unwrap();
    console
        .send_line("echo written-by-test >/probe; echo \"probe=$(cat /probe)\"")
        .unwrap();
    console
        .expect(r"probe=written-by-test", Duration::from_secs(60))
        .unwrap();
    // The lower layer is the NFS export, mounted read-only.
    let status = run(
        console,
        "grep -q ' /run/labboot/lower nfs ro,' /proc/mounts",
        Duration::from_secs(30),
    );
    assert_eq!(status, 0, "the NFS lower layer is not mounted read-only");
    drop(board);

    assert!(
        !root.join("probe").exists(),
        "the guest's write reached the export"
    );
    let after = tree(&root);
    assert_eq!(after, before, "the read-only export changed on the host");
}

/// Run by the guest on its read-write NFS root: every kind of change a root filesystem sees.
const GUEST_CHANGES: &str = r#"set -ex
mkdir /t
cd /t
echo hello >a
mv a b
ln b c
ln b c2
rm c2
ln -s b d
ln -s /nonexistent/x e
mkfifo f
mknod g c 1 3
mknod h b 7 0
mkdir dir
echo x >dir/x
mv dir/x dir/y
rm dir/y
rmdir dir
echo gone >k
rm k
chown 1234:5678 b
chmod 640 b
mkdir m
echo one >m/one
mv m n
echo two >>n/one
mkdir sub
echo deep >sub/file
chmod 4755 sub/file
chown 42:43 sub
dd if=/dev/urandom of=big bs=65536 count=16 2>/dev/null
set +x
echo "big-sha256=$(sha256sum big)"
ls -lR /usr >/root/ls-usr.txt
sync
"#;

/// Run by the guest while the server restarts: files written and read back, one held open.
const GUEST_LOOP: &str = r#"set -e
mkdir /loop
exec 3>/loop/held
i=0
while [ $i -lt 40 ]; do
	echo "round $i" >/loop/f$i
	echo "round $i" >&3
	[ "$(cat /loop/f$i)" = "round $i" ]
	if [ $i -gt 0 ]; then [ "$(cat /loop/f$((i - 1)))" = "round $((i - 1))" ]; fi
	echo "loop $i"
	i=$((i + 1))
	sleep 0.25
done
exec 3>&-
sync
"#;

/// The `ls -lR` listing the guest wrote, as directory → name → (type and mode, links, size).
fn parse_ls(text: &str) -> BTreeMap<String, BTreeMap<String, (String, u64, String)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (String, u64, String)>> = BTreeMap::new();
    let mut dir = String::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("total ") {
            continue;
        }
        if let Some(d) = line.strip_suffix(':') {
            dir = d.to_string();
            out.entry(dir.clone()).or_default();
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 9, "unexpected ls -l line: {line:?}");
        let device = f[0].starts_with('c') || f[0].starts_with('b');
        let (size, rest) = if device {
            (format!("{} {}", f[4], f[5]), &f[9..])
        } else {
            (f[4].to_string(), &f[8..])
        };
        let name = rest
            .split(|w| *w == "->")
            .next()
            .unwrap_or_default()
            .join(" ");
        out.entry(dir.clone())
            .or_default()
            .insert(name, (f[0].to_string(), f[1].parse().unwrap(), size));
    }
    out
}

/// The same view of `dir` (an absolute guest path under `root`) from the host, recursively.
fn host_ls(
    root: &Path,
    dir: &str,
    out: &mut BTreeMap<String, BTreeMap<String, (String, u64, String)>>,
) {
    let mut entries = BTreeMap::new();
    let mut subdirs = Vec::new();
    for e in std::fs::read_dir(root.join(dir.trim_start_matches('/'))).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_socket() {
            's'
        } else {
            '-'
        };
        let size = if kind == 'c' || kind == 'b' {
            let (ma, mi) = (libc_major(m.rdev()), libc_minor(m.rdev()));
            format!("{ma}, {mi}")
        } else {
            m.size().to_string()
        };
        entries.insert(
            name.clone(),
            (format!("{kind}{}", perms(m.mode())), m.nlink(), size),
        );
        if kind == 'd' {
            subdirs.push(format!("{dir}/{name}"));
        }
    }
    out.insert(dir.to_string(), entries);
    for d in subdirs {
        host_ls(root, &d, out);
    }
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// `ls -l`'s nine permission characters.
fn perms(mode: u32) -> String {
    let mut s = String::new();
    for (shift, special, set_x, set_nox) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set_x,
            (false, true) => set_nox,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    let bits = mode & 7;
    s.push(if bits & 4 != 0 { 'r' } else { '-' });
    s.push(if bits & 2 != 0 { 'w' } else { '-' });
    s.push(match (bits & 1 != 0, mode & 0o1000 != 0) {
        (true, true) => 't',
        (false, true) => 'T',
        (true, false) => 'x',
        (false, false) => '-',
    });
    s
}

#[test]
fn read_write_nfs_root_shows_the_guests_changes_and_survives_a_server_restart() {
    if !(require::root() && require::tool(QEMU_ARM64) && require::tool("tar")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    extract_rootfs(&root);
    // The guest's scripts are put in the export before it boots.
    std::fs::write(root.join("root/nfs-changes.sh"), GUEST_CHANGES).unwrap();
    std::fs::write(root.join("root/nfs-loop.sh"), GUEST_LOOP).unwrap();
    // A board's root filesystem: its root stays root.
    let mut lab = Lab::start(&root, "rw,no_root_squash");

    let mut board = lab.boot("labboot.overlay=none");
    let console = board.console();
    console
        .expect(
            r"labboot-master board=board7 root=nfs:10\.77\.0\.1:/master overlay=none",
            BOOT,
        )
        .unwrap();
    let status = run(console, "sh /root/nfs-changes.sh", Duration::from_secs(180));
    assert_eq!(status, 0, "the guest's changes failed (see the console)");
    let out = console.output();
    let big_sha = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("big-sha256="))
        .and_then(|l| l.split_whitespace().next())
        .expect("the guest printed big's sha256")
        .to_string();

    // Exactly what the guest did, as the host sees it.
    let t = root.join("t");
    let mut names: Vec<String> = tree(&t).keys().map(|p| p.display().to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        ["", "b", "big", "c", "d", "e", "f", "g", "h", "n", "n/one", "sub", "sub/file"],
        "the entries under /t"
    );
    let meta = |p: &str| std::fs::symlink_metadata(t.join(p)).unwrap();
    let b = meta("b");
    assert!(b.is_file());
    assert_eq!(
        (b.mode() & 0o7777, b.uid(), b.gid(), b.nlink()),
        (0o640, 1234, 5678, 2),
        "b: mode, owner, links"
    );
    assert_eq!(std::fs::read(t.join("b")).unwrap(), b"hello\n");
    assert_eq!(meta("c").ino(), b.ino(), "c is a hard link of b");
    assert_eq!(std::fs::read_link(t.join("d")).unwrap(), Path::new("b"));
    assert_eq!(
        std::fs::read_link(t.join("e")).unwrap(),
        Path::new("/nonexistent/x")
    );
    for l in ["d", "e"] {
        assert!(meta(l).file_type().is_symlink(), "{l} is a symlink");
        assert_eq!((meta(l).uid(), meta(l).gid()), (0, 0), "{l}'s owner");
    }
    let f = meta("f");
    assert!(f.file_type().is_fifo());
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o644, 0, 0));
    let g = meta("g");
    assert!(g.file_type().is_char_device());
    assert_eq!((libc_major(g.rdev()), libc_minor(g.rdev())), (1, 3));
    assert_eq!(g.mode() & 0o7777, 0o644);
    let h = meta("h");
    assert!(h.file_type().is_block_device());
    assert_eq!((libc_major(h.rdev()), libc_minor(h.rdev())), (7, 0));
    assert!(meta("n").is_dir());
    assert_eq!(std::fs::read(t.join("n/one")).unwrap(), b"one\ntwo\n");
    let sub = meta("sub");
    assert_eq!(
        (sub.mode() & 0o7777, sub.uid(), sub.gid()),
        (0o755, 42, 43),
        "sub: mode, owner"
    );
    let file = meta("sub/file");
    assert_eq!((file.mode() & 0o7777, file.uid()), (0o4755, 0));
    assert_eq!(std::fs::read(t.join("sub/file")).unwrap(), b"deep\n");
    let big = std::fs::read(t.join("big")).unwrap();
    assert_eq!(big.len(), 1 << 20);
    assert_eq!(sha256_hex(&big), big_sha, "big's content");

    // `ls -lR /usr` in the guest = the host's view: names, types, modes, links, sizes.
    let listing = std::fs::read_to_string(root.join("root/ls-usr.txt")).unwrap();
    let guest = parse_ls(&listing);
    let mut host = BTreeMap::new();
    host_ls(&root, "/usr", &mut host);
    assert!(
        guest.len() > 3,
        "the guest listed {} directories",
        guest.len()
    );
    assert_eq!(
        guest, host,
        "ls -lR /usr in the guest differs from the host"
    );

    // The server restarts while a loop in the guest writes and reads files.
    console
        .send_line("sh /root/nfs-loop.sh; echo \"loop-status=$((1000+$?))\"")
        .unwrap();
    console
        .expect(r"loop 5\r?\n", Duration::from_secs(120))
        .unwrap();
    // Down long enough that the guest's calls must wait and be sent again.
    lab.restart_nfs(Duration::from_secs(2));
    assert!(
        !console.output().contains("loop-status=1"),
        "the loop ended before the server was back"
    );
    let caps = board
        .console()
        .expect_captures(r"loop-status=1(\d\d\d)", Duration::from_secs(240))
        .unwrap();
    assert_eq!(caps[1], "000", "the guest loop failed across the restart");
    lab.nfs
        .wait_for_line(r"walked export /master", Duration::from_secs(5))
        .expect("the restarted server resolved handles it had not handed out");
    let held = std::fs::read_to_string(root.join("loop/held")).unwrap();
    let want: String = (0..40).map(|i| format!("round {i}\n")).collect();
    assert_eq!(held, want, "the file held open across the restart");
    for i in 0..40 {
        assert_eq!(
            std::fs::read_to_string(root.join(format!("loop/f{i}"))).unwrap(),
            format!("round {i}\n")
        );
    }
}
