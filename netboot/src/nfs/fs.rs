//! The filesystem layer: one exported directory, reached only through descriptors.
//!
//! **Confinement.** Every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! relative to the export's root descriptor, and names from clients are single components (no
//! `/`, NUL, `.` or `..`, checked by [`check_name`]). The kernel therefore refuses anything that
//! would leave the export, whether by `..`, an absolute path or a symlink, including one swapped
//! in by a racing writer. Symlinks are read with `readlinkat` and handed to the client; the server
//! never follows them. `..` is answered from the server's own record of the path, and stops at
//! the export root.
//!
//! **Handles.** A handle is a magic, the export id (a hash of the export's name), the inode
//! number and the inode's birth time. Nothing in it is a path or a secret: it names what is on
//! disk, so it survives a server restart, and it cannot point outside the export because it is
//! only ever resolved *by searching the export*: a cached path is reopened beneath the root and
//! its inode and birth time compared, and when the cache has nothing (after a restart, or a
//! rename behind the server's back) the whole export is walked once with `getdents` (never
//! through a symlink) and every inode's path remembered, so one walk serves every handle the
//! clients still hold. A forged handle for an inode outside the export is never found and gets
//! `NFS3ERR_STALE`; walks run one at a time and at most every [`RESCAN_INTERVAL`] per export.
//! Inode numbers are only unique per filesystem: an export that spans mount points may confuse
//! clients, as with knfsd's `crossmnt`.
//!
//! **Credentials.** The server runs as root; each operation runs on a blocking thread whose
//! filesystem uid, gid and groups are switched to the caller's `AUTH_SYS` credential
//! ([`AsUser`]), so the kernel checks permissions and new files get the caller's uid/gid. As in
//! knfsd, the owner of a file may read and write it whatever its mode (a client creates a file
//! 0444 and then writes it). Root callers (uid 0, gid 0) need no switch (see [`AsUser`]).

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::attrcache::AttrCache;
use super::config::{Access, ExportSpec};
use super::rpc::Credential;
use super::status::NfsStat;

/// Bytes in an encoded handle: magic, export id (32 bits), inode (64), birth seconds (low 32
/// bits) and nanoseconds (32). As compact as a knfsd or ganesha handle: every READDIRPLUS entry
/// carries one, so a smaller handle puts more entries in each reply.
pub const HANDLE_LEN: usize = 24;
const HANDLE_MAGIC: &[u8; 4] = b"LBn2";

/// Least time between two walks of an export for inodes not in the cache.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// A decoded file handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    /// The export's id (32 bits, see [`export_id`]).
    pub export: u64,
    /// Inode number.
    pub ino: u64,
    /// Birth time (seconds modulo 2^32, nanoseconds, see [`born_key`]); zero where the
    /// filesystem does not record it.
    pub born: (i64, u32),
}

/// A birth time as handles carry it: the seconds' low 32 bits (unambiguous until 2106).
pub fn born_key(born: (i64, u32)) -> (i64, u32) {
    (i64::from(born.0 as u32), born.1)
}

impl Handle {
    /// The wire form (fixed length).
    pub fn encode(&self) -> [u8; HANDLE_LEN] {
        let mut b = [0u8; HANDLE_LEN];
        b[..4].copy_from_slice(HANDLE_MAGIC);
        b[4..8].copy_from_slice(&(self.export as u32).to_be_bytes());
        b[8..16].copy_from_slice(&self.ino.to_be_bytes());
        b[16..20].copy_from_slice(&(self.born.0 as u32).to_be_bytes());
        b[20..24].copy_from_slice(&self.born.1.to_be_bytes());
        b
    }

    /// Parses the wire form; `None` for anything this server did not make.
    pub fn decode(b: &[u8]) -> Option<Handle> {
        if b.len() != HANDLE_LEN || &b[..4] != HANDLE_MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(Handle {
            export: u64::from(u32_at(4)),
            ino: u64::from_be_bytes(b[8..16].try_into().unwrap_or([0; 8])),
            born: (i64::from(u32_at(16)), u32_at(20)),
        })
    }
}

/// The id of an export: FNV-1a of its name folded to 32 bits, so it is the same after a
/// restart (two names with one id are refused when the second is added).
pub fn export_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ (h >> 32)) & 0xffff_ffff
}

/// File types of NFSv3 (`ftype3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Regular file.
    Reg = 1,
    /// Directory.
    Dir = 2,
    /// Block device.
    Blk = 3,
    /// Character device.
    Chr = 4,
    /// Symbolic link.
    Lnk = 5,
    /// Socket.
    Sock = 6,
    /// FIFO.
    Fifo = 7,
}

/// What `statx` says about an inode, in the units NFSv3 wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// File type.
    pub kind: Kind,
    /// Permission bits (incl. setuid, setgid, sticky).
    pub mode: u32,
    /// Hard links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated on disk.
    pub used: u64,
    /// Device number (major, minor) of a device node.
    pub rdev: (u32, u32),
    /// Inode number.
    pub ino: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time.
    pub mtime: (i64, u32),
    /// Status change time.
    pub ctime: (i64, u32),
    /// Birth time, zero when unknown.
    pub born: (i64, u32),
}

impl Stat {
    fn from_statx(s: &libc::statx) -> Stat {
        let kind = match u32::from(s.stx_mode) & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Lnk,
            libc::S_IFBLK => Kind::Blk,
            libc::S_IFCHR => Kind::Chr,
            libc::S_IFSOCK => Kind::Sock,
            libc::S_IFIFO => Kind::Fifo,
            _ => Kind::Reg,
        };
        let t = |t: &libc::statx_timestamp| (t.tv_sec, t.tv_nsec);
        Stat {
            kind,
            mode: u32::from(s.stx_mode) & 0o7777,
            nlink: s.stx_nlink,
            uid: s.stx_uid,
            gid: s.stx_gid,
            size: s.stx_size,
            used: s.stx_blocks.saturating_mul(512),
            rdev: (s.stx_rdev_major, s.stx_rdev_minor),
            ino: s.stx_ino,
            atime: t(&s.stx_atime),
            mtime: t(&s.stx_mtime),
            ctime: t(&s.stx_ctime),
            born: if s.stx_mask & libc::STATX_BTIME != 0 {
                t(&s.stx_btime)
            } else {
                (0, 0)
            },
        }
    }
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `statx` of `name` in `dirfd` (or of `dirfd` itself for an empty name), never following.
fn statx_at(dirfd: RawFd, name: &CStr) -> io::Result<Stat> {
    // SAFETY: statx is plain old data; zero is a valid value.
    let mut s: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | libc::AT_NO_AUTOMOUNT
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: valid fd, NUL-terminated name, and a properly sized out-pointer.
    cvt(unsafe {
        libc::statx(
            dirfd,
            name.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut s,
        )
    })?;
    Ok(Stat::from_statx(&s))
}

/// Opens `path` beneath `root` without following any symlink and without leaving `root`.
fn open_beneath(root: RawFd, path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let path: &OsStr = if path.as_os_str().is_empty() {
        OsStr::new(".")
    } else {
        path.as_os_str()
    };
    let c = cstr(path.as_bytes())?;
    // SAFETY: open_how is plain old data.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid fd and pointers; the size matches the struct passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Checks a name sent by a client: one component, not `.` or `..`, at most 255 bytes.
pub fn check_name(name: &[u8]) -> Result<CString, NfsStat> {
    if name.len() > 255 {
        return Err(NfsStat::NAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(NfsStat::INVAL);
    }
    CString::new(name).map_err(|_| NfsStat::INVAL)
}

/// One entry read from a directory.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Name (may be `.` or `..`).
    pub name: Vec<u8>,
    /// Inode number as the directory records it.
    pub ino: u64,
    /// Whether the directory records it as a subdirectory.
    pub is_dir: bool,
    /// Seek position just after this entry: the NFS cookie that resumes after it.
    pub cookie: u64,
}

/// A directory stream (`fdopendir`) that can resume at a cookie (`seekdir`).
struct DirStream(*mut libc::DIR);

impl DirStream {
    fn open(fd: OwnedFd) -> io::Result<DirStream> {
        // SAFETY: fdopendir takes ownership of the descriptor on success.
        let dir = unsafe { libc::fdopendir(fd.as_raw_fd()) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(fd);
        Ok(DirStream(dir))
    }

    fn seek(&mut self, cookie: u64) {
        // SAFETY: a valid open DIR.
        unsafe { libc::seekdir(self.0, cookie as libc::c_long) }
    }

    fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        // SAFETY: errno is thread-local; readdir64 reports end and error both as NULL.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid open DIR; the entry is copied before the next call.
        let ent = unsafe { libc::readdir64(self.0) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(0) {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir64 returned a valid entry with a NUL-terminated name.
        let ent = unsafe { &*ent };
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) };
        Ok(Some(DirEntry {
            name: name.to_bytes().to_vec(),
            ino: ent.d_ino,
            is_dir: ent.d_type == libc::DT_DIR,
            cookie: ent.d_off as u64,
        }))
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: a valid open DIR, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// What a kept directory stream may be resumed for: the same directory, unchanged since (mtime
/// and ctime), listed by the same credential (the open checked its read permission).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListingKey {
    export: u64,
    ino: u64,
    born: (i64, u32),
    changed: ((i64, u32), (i64, u32)),
    cred: Option<Credential>,
}

/// A directory listing left open between two READDIR(PLUS) calls of one connection.
///
/// A client pages through a directory with the cookie of the last entry it received. Opening
/// the directory again and seeking there makes the file system re-read it from that hash
/// position (ext4 rebuilds its per-descriptor tree of names, and each `getdents` reads ahead
/// everything to the end of its buffer), so a directory of N pages costs N reads. The stream is
/// kept instead, with the one entry read ahead that did not fit, and the next call resumes it
/// when its cookie is exactly where the last one stopped and the directory has not changed
/// since; anything else opens afresh. Names only are carried over; every attribute is read
/// again for every call. Streams are kept per thread, and each connection reads and answers its
/// listings on a thread of its own, so this is a per-connection cache of [`KEPT_LISTINGS`].
struct OpenListing {
    key: ListingKey,
    next: u64,
    stream: DirStream,
    pending: Option<DirEntry>,
}

/// Directory streams a connection keeps open between calls.
pub const KEPT_LISTINGS: usize = 2;

thread_local! {
    static LISTINGS: std::cell::RefCell<Vec<OpenListing>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl OpenListing {
    /// The kept stream that continues `key`'s listing at `cookie`, if any (removed from the cache).
    fn take(key: &ListingKey, cookie: u64) -> Option<OpenListing> {
        if cookie == 0 {
            return None;
        }
        LISTINGS.with(|l| {
            let mut l = l.borrow_mut();
            let i = l.iter().position(|o| o.next == cookie && o.key == *key)?;
            Some(l.remove(i))
        })
    }

    /// Keeps `self` for the next call, dropping the oldest kept stream beyond [`KEPT_LISTINGS`].
    fn keep(self) {
        LISTINGS.with(|l| {
            let mut l = l.borrow_mut();
            l.retain(|o| o.key.ino != self.key.ino || o.key.export != self.key.export);
            if l.len() >= KEPT_LISTINGS {
                l.remove(0);
            }
            l.push(self);
        });
    }
}

/// Runs the current thread's filesystem calls as a client, until dropped (not nestable: dropping
/// returns to root).
///
/// `setfsuid`/`setfsgid` and the raw `setgroups` system call change only the calling thread
/// (glibc's `setgroups` would change every thread), so other operations are unaffected.
/// A root caller (uid 0, gid 0) is what the thread is already: its permission checks go by
/// capabilities, not groups, and its new files get uid 0 and gid 0, so nothing is switched.
pub struct AsUser {
    switched: bool,
}

impl AsUser {
    /// Switches to `cred` (`None`, i.e. `AUTH_NONE`, is nobody: 65534).
    pub fn new(cred: Option<&Credential>) -> AsUser {
        if cred.is_some_and(|c| c.uid == 0 && c.gid == 0) {
            return AsUser { switched: false };
        }
        let (uid, gid, gids) = match cred {
            Some(c) => (c.uid, c.gid, c.gids.as_slice()),
            None => (65534, 65534, &[][..]),
        };
        // SAFETY: these calls only change this thread's credentials; the slice outlives them.
        unsafe {
            libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr());
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        AsUser { switched: true }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if !self.switched {
            return;
        }
        // SAFETY: back to root for this thread.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
        }
    }
}

/// An object of the export, found from a handle.
#[derive(Debug)]
pub struct Obj {
    /// Its path relative to the export root (empty for the root).
    pub path: PathBuf,
    /// An `O_PATH` descriptor of it.
    pub fd: OwnedFd,
    /// Its attributes when it was opened.
    pub stat: Stat,
}

/// Time to set in SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// Leave as is.
    Keep,
    /// The server's clock.
    Now,
    /// This time (seconds, nanoseconds).
    At(i64, u32),
}

/// Attributes to set (`sattr3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: SetTime,
    /// New modification time.
    pub mtime: SetTime,
}

impl SetAttr {
    /// Sets nothing.
    pub const NONE: SetAttr = SetAttr {
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: SetTime::Keep,
        mtime: SetTime::Keep,
    };
}

/// What MKNOD creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A character device (major, minor).
    Chr(u32, u32),
    /// A block device (major, minor).
    Blk(u32, u32),
    /// A FIFO.
    Fifo,
    /// A unix socket's inode.
    Sock,
}

/// Hashes inode numbers with one multiply (they are not chosen by clients: a handle's inode is
/// only looked up, never inserted, unless the file exists), far cheaper than SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub struct InodeHasher(u64);

impl std::hash::Hasher for InodeHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by inode number.
pub type InodeMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<InodeHasher>>;

/// A directory served over NFS: its root descriptor and the inode → path cache.
#[derive(Debug)]
pub struct Export {
    spec: ExportSpec,
    id: u64,
    root: OwnedFd,
    root_stat: Stat,
    paths: Mutex<InodeMap<PathBuf>>,
    last_walk: Mutex<Option<Instant>>,
    attrs: AttrCache,
}

impl Export {
    /// Opens the export's directory.
    pub fn open(spec: ExportSpec) -> io::Result<Export> {
        let c = cstr(spec.dir().as_os_str().as_bytes())?;
        // SAFETY: NUL-terminated path; the result is checked.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: the kernel just gave us this descriptor.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        let root_stat = statx_at(root.as_raw_fd(), c"")?;
        let mut paths = InodeMap::default();
        paths.insert(root_stat.ino, PathBuf::new());
        let attrs = AttrCache::watch(spec.dir()).unwrap_or_else(|e| {
            tracing::info!(
                export = spec.name(),
                "nfs: attribute cache off (fanotify: {e}): every attribute is read from disk"
            );
            AttrCache::off()
        });
        Ok(Export {
            attrs,
            id: export_id(spec.name()),
            spec,
            root,
            root_stat,
            paths: Mutex::new(paths),
            last_walk: Mutex::new(None),
        })
    }

    /// The checked specification (name, directory, access, clients).
    pub fn spec(&self) -> &ExportSpec {
        &self.spec
    }

    /// The export's id (also its `fsid`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the export is read-only.
    pub fn read_only(&self) -> bool {
        self.spec.access() == Access::Ro
    }

    /// The handle of an inode of this export.
    pub fn handle_of(&self, st: &Stat) -> Handle {
        Handle {
            export: self.id,
            ino: st.ino,
            born: born_key(st.born),
        }
    }

    /// The handle of the export's root.
    pub fn root_handle(&self) -> Handle {
        self.handle_of(&self.root_stat)
    }

    fn remember(&self, ino: u64, path: PathBuf) {
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino, path);
    }

    /// Remembers that `ino` is `name` in `dir`; a listing repeated over an unchanged directory
    /// finds every path known already and allocates nothing.
    fn remember_entry(&self, ino: u64, dir: &Path, name: &[u8]) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        // Compared as bytes: `dir/name`, or `name` in the root.
        let dir = dir.as_os_str().as_bytes();
        let known = paths.get(&ino).is_some_and(|p| {
            let p = p.as_os_str().as_bytes();
            match p.strip_suffix(name) {
                Some(head) if dir.is_empty() => head.is_empty(),
                Some(head) => head.strip_suffix(b"/") == Some(dir),
                None => false,
            }
        });
        if !known {
            let path = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(name));
            paths.insert(ino, path);
        }
    }

    fn cached(&self, ino: u64) -> Option<PathBuf> {
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()
    }

    /// Opens `path` (relative) as `O_PATH` and checks it is the inode the handle names.
    fn try_open(&self, path: &Path, h: &Handle) -> Option<Obj> {
        let fd = open_beneath(self.root.as_raw_fd(), path, libc::O_PATH, 0).ok()?;
        let stat = statx_at(fd.as_raw_fd(), c"").ok()?;
        (stat.ino == h.ino && born_key(stat.born) == h.born).then(|| Obj {
            path: path.to_path_buf(),
            fd,
            stat,
        })
    }

    /// Finds the object a handle names, inside this export only.
    pub fn resolve(&self, h: &Handle) -> Result<Obj, NfsStat> {
        if h.export != self.id {
            return Err(NfsStat::STALE);
        }
        let from_cache = || self.cached(h.ino).and_then(|path| self.try_open(&path, h));
        if let Some(obj) = from_cache() {
            return Ok(obj);
        }
        // One walk at a time; callers that waited for it look in the refreshed cache first.
        let mut last = self.last_walk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(obj) = from_cache() {
            return Ok(obj);
        }
        if last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
            return Err(NfsStat::STALE);
        }
        self.walk();
        *last = Some(Instant::now());
        drop(last);
        from_cache().ok_or(NfsStat::STALE)
    }

    /// Walks the whole export breadth-first (never through symlinks) and remembers every path,
    /// so one walk after a restart serves every handle the clients still hold.
    fn walk(&self) {
        let started = Instant::now();
        let mut queue = VecDeque::from([PathBuf::new()]);
        let mut fresh = InodeMap::default();
        fresh.insert(self.root_stat.ino, PathBuf::new());
        while let Some(dir) = queue.pop_front() {
            let Ok(fd) = open_beneath(
                self.root.as_raw_fd(),
                &dir,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ) else {
                continue;
            };
            let Ok(mut stream) = DirStream::open(fd) else {
                continue;
            };
            while let Ok(Some(e)) = stream.next_entry() {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let path = dir.join(OsStr::from_bytes(&e.name));
                if e.is_dir {
                    queue.push_back(path.clone());
                }
                fresh.insert(e.ino, path);
            }
        }
        let n = fresh.len();
        *self.paths.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        tracing::info!(
            "nfs: walked export {} for unknown handles: {n} paths in {:?}",
            self.spec.name(),
            started.elapsed()
        );
    }

    /// The parent of an object (the root is its own parent), with the object's name.
    fn parent_of(&self, obj: &Obj) -> Result<(Obj, CString), NfsStat> {
        let parent_path = obj.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let fd = open_beneath(self.root.as_raw_fd(), &parent_path, libc::O_PATH, 0)?;
        let stat = statx_at(fd.as_raw_fd(), c"")?;
        let name = obj
            .path
            .file_name()
            .map(|n| cstr(n.as_bytes()))
            .transpose()?
            .unwrap_or_default();
        Ok((
            Obj {
                path: parent_path,
                fd,
                stat,
            },
            name,
        ))
    }

    /// Attributes of an object, freshly read.
    pub fn getattr(&self, obj: &Obj) -> Result<Stat, NfsStat> {
        Ok(statx_at(obj.fd.as_raw_fd(), c"")?)
    }

    /// LOOKUP: `name` in directory `dir`; `..` of the root is the root.
    pub fn lookup(
        &self,
        dir: &Obj,
        name: &[u8],
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        if dir.stat.kind != Kind::Dir {
            return Err(NfsStat::NOTDIR);
        }
        let path = match name {
            b"." => dir.path.clone(),
            b".." => dir.path.parent().unwrap_or(Path::new("")).to_path_buf(),
            _ => {
                let c = check_name(name)?;
                // One component of a directory inside the export, not followed if a symlink:
                // its attributes are the answer. Search permission is checked as the caller.
                let stat = {
                    let _user = AsUser::new(cred);
                    statx_at(dir.fd.as_raw_fd(), &c)?
                };
                self.remember_entry(stat.ino, &dir.path, name);
                return Ok((self.handle_of(&stat), stat));
            }
        };
        let fd = open_beneath(self.root.as_raw_fd(), &path, libc::O_PATH, 0)?;
        let stat = statx_at(fd.as_raw_fd(), c"")?;
        self.remember(stat.ino, path);
        Ok((self.handle_of(&stat), stat))
    }

    /// Looks up a path below the root, component by component (for MOUNT of a subdirectory).
    pub fn lookup_path(&self, rel: &str) -> Result<(Handle, Stat), NfsStat> {
        let mut h = self.root_handle();
        let mut stat = self.root_stat;
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            let dir = self.resolve(&h)?;
            (h, stat) = self.lookup(&dir, part.as_bytes(), Some(&Credential::default()))?;
        }
        Ok((h, stat))
    }

    /// READLINK: the link's target, as stored.
    pub fn readlink(&self, obj: &Obj) -> Result<Vec<u8>, NfsStat> {
        if obj.stat.kind != Kind::Lnk {
            return Err(NfsStat::INVAL);
        }
        let mut buf = vec![0u8; 4097];
        // SAFETY: an O_PATH descriptor of a symlink with an empty path reads that link.
        let n = unsafe {
            libc::readlinkat(
                obj.fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Opens a regular file for I/O as the current (client) user, or as root for its owner.
    fn open_file(
        &self,
        obj: &Obj,
        flags: i32,
        cred: Option<&Credential>,
    ) -> Result<OwnedFd, NfsStat> {
        match obj.stat.kind {
            Kind::Reg => {}
            Kind::Dir => return Err(NfsStat::ISDIR),
            _ => return Err(NfsStat::INVAL),
        }
        let open = || open_beneath(self.root.as_raw_fd(), &obj.path, flags, 0);
        let fd = {
            let _user = AsUser::new(cred);
            open()
        };
        let fd = match fd {
            Err(e)
                if e.raw_os_error() == Some(libc::EACCES)
                    && cred.is_some_and(|c| c.uid == obj.stat.uid) =>
            {
                open()
            }
            other => other,
        }?;
        let st = statx_at(fd.as_raw_fd(), c"")?;
        if st.ino != obj.stat.ino {
            return Err(NfsStat::STALE);
        }
        Ok(fd)
    }

    /// READ: fills `buf` from `offset` on; returns the bytes read and whether the end of file
    /// was reached.
    pub fn read(
        &self,
        obj: &Obj,
        offset: u64,
        buf: &mut [u8],
        cred: Option<&Credential>,
    ) -> Result<(usize, bool), NfsStat> {
        let fd = self.open_file(obj, libc::O_RDONLY, cred)?;
        if offset.saturating_add(buf.len() as u64) > i64::MAX as u64 {
            // Beyond any file Linux can hold: nothing to read.
            return Ok((0, true));
        }
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: valid fd; the pointer and length stay inside `buf`.
            let n = unsafe {
                libc::pread(
                    fd.as_raw_fd(),
                    buf[got..].as_mut_ptr().cast(),
                    buf.len() - got,
                    (offset + got as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        let size = if got == buf.len() {
            statx_at(fd.as_raw_fd(), c"")?.size
        } else {
            // A short read means the end of the file.
            0
        };
        Ok((got, offset + got as u64 >= size))
    }

    /// READ without copying: opens the file (as the caller) and says how many bytes from
    /// `offset` on the reply carries (at most `count`, up to the current end of the file) and
    /// whether that reaches the end. The caller sends them straight from the page cache.
    pub fn read_file(
        &self,
        obj: &Obj,
        offset: u64,
        count: usize,
        cred: Option<&Credential>,
    ) -> Result<(OwnedFd, usize, bool), NfsStat> {
        let fd = self.open_file(obj, libc::O_RDONLY, cred)?;
        let size = statx_at(fd.as_raw_fd(), c"")?.size;
        if offset >= size || offset > i64::MAX as u64 {
            return Ok((fd, 0, true));
        }
        let n = (size - offset).min(count as u64) as usize;
        Ok((fd, n, offset + n as u64 >= size))
    }

    /// WRITE: all of `data` at `offset`; `sync` forces data and metadata to disk first.
    pub fn write(
        &self,
        obj: &Obj,
        offset: u64,
        data: &[u8],
        sync: bool,
        cred: Option<&Credential>,
    ) -> Result<Stat, NfsStat> {
        self.writable()?;
        if offset.saturating_add(data.len() as u64) > i64::MAX as u64 {
            return Err(NfsStat::FBIG);
        }
        let fd = self.open_file(obj, libc::O_WRONLY, cred)?;
        let mut done = 0;
        while done < data.len() {
            // SAFETY: valid fd; the pointer and length stay inside `data`.
            let n = unsafe {
                libc::pwrite(
                    fd.as_raw_fd(),
                    data[done..].as_ptr().cast(),
                    data.len() - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            done += n as usize;
        }
        if sync {
            // SAFETY: valid fd.
            cvt(unsafe { libc::fsync(fd.as_raw_fd()) })?;
        }
        Ok(statx_at(fd.as_raw_fd(), c"")?)
    }

    /// COMMIT: flushes a file's unstable writes to disk.
    pub fn commit(&self, obj: &Obj) -> Result<Stat, NfsStat> {
        self.writable()?;
        if obj.stat.kind != Kind::Reg {
            return Ok(obj.stat);
        }
        let fd = open_beneath(self.root.as_raw_fd(), &obj.path, libc::O_RDONLY, 0)?;
        // SAFETY: valid fd.
        cvt(unsafe { libc::fsync(fd.as_raw_fd()) })?;
        Ok(statx_at(fd.as_raw_fd(), c"")?)
    }

    fn writable(&self) -> Result<(), NfsStat> {
        if self.read_only() {
            Err(NfsStat::ROFS)
        } else {
            Ok(())
        }
    }

    /// SETATTR, run as the caller (so only owners and root may chmod or chown).
    pub fn setattr(
        &self,
        obj: &Obj,
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<Stat, NfsStat> {
        self.writable()?;
        if let Some(size) = set.size {
            let fd = self.open_file(obj, libc::O_WRONLY, cred)?;
            // SAFETY: valid fd.
            cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
        }
        let _user = AsUser::new(cred);
        if set.uid.is_some() || set.gid.is_some() {
            let uid = set.uid.unwrap_or(u32::MAX);
            let gid = set.gid.unwrap_or(u32::MAX);
            // SAFETY: an O_PATH descriptor with AT_EMPTY_PATH changes that very inode.
            cvt(unsafe {
                libc::fchownat(
                    obj.fd.as_raw_fd(),
                    c"".as_ptr(),
                    uid,
                    gid,
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        if let Some(mode) = set.mode {
            if obj.stat.kind != Kind::Lnk {
                // A symlink has no mode of its own on Linux; for anything else the /proc
                // link of our descriptor names that inode, so nothing can be swapped in.
                let proc = cstr(format!("/proc/self/fd/{}", obj.fd.as_raw_fd()).as_bytes())?;
                // SAFETY: NUL-terminated path.
                cvt(unsafe { libc::chmod(proc.as_ptr(), mode & 0o7777) })?;
            }
        }
        if set.atime != SetTime::Keep || set.mtime != SetTime::Keep {
            let ts = |t: SetTime| match t {
                SetTime::Keep => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                SetTime::Now => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                SetTime::At(s, n) => libc::timespec {
                    tv_sec: s as libc::time_t,
                    tv_nsec: i64::from(n.min(999_999_999)) as libc::c_long,
                },
            };
            let times = [ts(set.atime), ts(set.mtime)];
            let (parent, name) = self.parent_of(obj)?;
            let (fd, name) = if obj.path.as_os_str().is_empty() {
                (obj.fd.as_raw_fd(), c"".to_owned())
            } else {
                (parent.fd.as_raw_fd(), name)
            };
            let flags = if name.is_empty() {
                libc::AT_EMPTY_PATH
            } else {
                libc::AT_SYMLINK_NOFOLLOW
            };
            // SAFETY: valid fd, NUL-terminated name, two timespecs.
            cvt(unsafe { libc::utimensat(fd, name.as_ptr(), times.as_ptr(), flags) })?;
        }
        Ok(statx_at(obj.fd.as_raw_fd(), c"")?)
    }

    /// Applies the attributes a creating call asked for, after the kernel made the inode.
    fn finish_create(
        &self,
        dir: &Obj,
        name: &CStr,
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        let path = dir.path.join(OsStr::from_bytes(name.to_bytes()));
        let fd = open_beneath(self.root.as_raw_fd(), &path, libc::O_PATH, 0)?;
        let stat = statx_at(fd.as_raw_fd(), c"")?;
        self.remember(stat.ino, path.clone());
        let obj = Obj { path, fd, stat };
        let stat = if *set != SetAttr::NONE {
            self.setattr(&obj, set, cred)?
        } else {
            stat
        };
        Ok((self.handle_of(&stat), stat))
    }

    /// CREATE: a regular file. `exclusive` (GUARDED or EXCLUSIVE) fails if the name exists;
    /// otherwise (UNCHECKED) an existing file is kept and only the attributes asked for are set.
    pub fn create(
        &self,
        dir: &Obj,
        name: &[u8],
        set: &SetAttr,
        exclusive: bool,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let mode = set.mode.unwrap_or(0o644);
        let made = {
            let _user = AsUser::new(cred);
            // SAFETY: valid dir fd and NUL-terminated single-component name.
            cvt(unsafe {
                libc::openat(
                    dir.fd.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    mode,
                )
            })
        };
        match made {
            Ok(fd) => {
                // SAFETY: the kernel just gave us this descriptor.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                // The umask applied at creation; set the mode exactly, plus size and times.
                let set = SetAttr {
                    mode: Some(mode),
                    ..*set
                };
                self.finish_create(dir, &c, &set, cred)
            }
            Err(e) if !exclusive && e.raw_os_error() == Some(libc::EEXIST) => {
                let existing = statx_at(dir.fd.as_raw_fd(), &c)?;
                if existing.kind != Kind::Reg {
                    return Err(NfsStat::EXIST);
                }
                self.finish_create(dir, &c, set, cred)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// MKDIR.
    pub fn mkdir(
        &self,
        dir: &Obj,
        name: &[u8],
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let mode = set.mode.unwrap_or(0o755);
        {
            let _user = AsUser::new(cred);
            // SAFETY: valid dir fd and NUL-terminated name.
            cvt(unsafe { libc::mkdirat(dir.fd.as_raw_fd(), c.as_ptr(), mode) })?;
        }
        let set = SetAttr {
            mode: Some(mode),
            ..*set
        };
        self.finish_create(dir, &c, &set, cred)
    }

    /// SYMLINK: the target is stored as given and never interpreted by the server.
    pub fn symlink(
        &self,
        dir: &Obj,
        name: &[u8],
        target: &[u8],
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let t = CString::new(target).map_err(|_| NfsStat::INVAL)?;
        {
            let _user = AsUser::new(cred);
            // SAFETY: NUL-terminated strings, valid dir fd.
            cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.fd.as_raw_fd(), c.as_ptr()) })?;
        }
        self.finish_create(dir, &c, &SetAttr::NONE, cred)
    }

    /// MKNOD: device nodes, FIFOs and sockets.
    pub fn mknod(
        &self,
        dir: &Obj,
        name: &[u8],
        kind: NodeKind,
        set: &SetAttr,
        cred: Option<&Credential>,
    ) -> Result<(Handle, Stat), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let perm = set.mode.unwrap_or(0o644) & 0o7777;
        let (fmt, dev) = match kind {
            NodeKind::Chr(ma, mi) => (libc::S_IFCHR, libc::makedev(ma, mi)),
            NodeKind::Blk(ma, mi) => (libc::S_IFBLK, libc::makedev(ma, mi)),
            NodeKind::Fifo => (libc::S_IFIFO, 0),
            NodeKind::Sock => (libc::S_IFSOCK, 0),
        };
        {
            let _user = AsUser::new(cred);
            // SAFETY: valid dir fd and NUL-terminated name.
            cvt(unsafe { libc::mknodat(dir.fd.as_raw_fd(), c.as_ptr(), fmt | perm, dev) })?;
        }
        let set = SetAttr {
            mode: Some(perm),
            ..*set
        };
        self.finish_create(dir, &c, &set, cred)
    }

    /// REMOVE (`rmdir` false) or RMDIR (`rmdir` true).
    pub fn remove(
        &self,
        dir: &Obj,
        name: &[u8],
        rmdir: bool,
        cred: Option<&Credential>,
    ) -> Result<(), NfsStat> {
        self.writable()?;
        let c = check_name(name)?;
        let _user = AsUser::new(cred);
        let flags = if rmdir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid dir fd and NUL-terminated name.
        cvt(unsafe { libc::unlinkat(dir.fd.as_raw_fd(), c.as_ptr(), flags) })?;
        Ok(())
    }

    /// RENAME within this export.
    pub fn rename(
        &self,
        from: &Obj,
        from_name: &[u8],
        to: &Obj,
        to_name: &[u8],
        cred: Option<&Credential>,
    ) -> Result<(), NfsStat> {
        self.writable()?;
        let a = check_name(from_name)?;
        let b = check_name(to_name)?;
        let moved = statx_at(from.fd.as_raw_fd(), &a)?;
        {
            let _user = AsUser::new(cred);
            // SAFETY: valid dir fds and NUL-terminated names.
            cvt(unsafe {
                libc::renameat(
                    from.fd.as_raw_fd(),
                    a.as_ptr(),
                    to.fd.as_raw_fd(),
                    b.as_ptr(),
                )
            })?;
        }
        let old = from.path.join(OsStr::from_bytes(from_name));
        let new = to.path.join(OsStr::from_bytes(to_name));
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if moved.kind == Kind::Dir {
            for p in paths.values_mut() {
                if let Ok(rest) = p.strip_prefix(&old) {
                    *p = new.join(rest);
                }
            }
        }
        paths.insert(moved.ino, new);
        Ok(())
    }

    /// LINK: a new name for `obj` in `dir` (a symlink is linked, not followed).
    pub fn link(
        &self,
        obj: &Obj,
        dir: &Obj,
        name: &[u8],
        cred: Option<&Credential>,
    ) -> Result<Stat, NfsStat> {
        self.writable()?;
        if obj.stat.kind == Kind::Dir {
            return Err(NfsStat::ISDIR);
        }
        let c = check_name(name)?;
        let (parent, old_name) = self.parent_of(obj)?;
        {
            let _user = AsUser::new(cred);
            // SAFETY: valid dir fds and NUL-terminated names; flags 0 does not follow links.
            cvt(unsafe {
                libc::linkat(
                    parent.fd.as_raw_fd(),
                    old_name.as_ptr(),
                    dir.fd.as_raw_fd(),
                    c.as_ptr(),
                    0,
                )
            })?;
        }
        Ok(statx_at(obj.fd.as_raw_fd(), c"")?)
    }

    /// Reads directory entries from `cookie` on, calling `take` for each until it says stop.
    ///
    /// Cookies are the directory's own seek positions (`d_off`), which stay valid while the
    /// directory changes, so a listing resumed after other clients' changes neither skips nor
    /// repeats entries that were there all along. A page that continues the calling thread's
    /// previous page of an unchanged directory resumes its open stream (`OpenListing`). Entries'
    /// attributes are read from disk, or for a root caller from the export's [`AttrCache`],
    /// which drops whatever the kernel reports changed before this call. Returns whether the
    /// end was reached.
    pub fn readdir(
        &self,
        dir: &Obj,
        cookie: u64,
        cred: Option<&Credential>,
        mut take: impl FnMut(&DirEntry, Option<(Handle, Stat)>) -> bool,
        plus: bool,
    ) -> Result<bool, NfsStat> {
        if dir.stat.kind != Kind::Dir {
            return Err(NfsStat::NOTDIR);
        }
        let _user = AsUser::new(cred);
        let key = ListingKey {
            export: self.id,
            ino: dir.stat.ino,
            born: dir.stat.born,
            changed: (dir.stat.mtime, dir.stat.ctime),
            cred: cred.cloned(),
        };
        let (mut stream, mut pending) = match OpenListing::take(&key, cookie) {
            Some(open) => (open.stream, open.pending),
            None => {
                // `.` of the handle's own descriptor: the same inode, opened for reading as the
                // caller (read permission checked), with no path to resolve again.
                // SAFETY: valid dir fd and a NUL-terminated name.
                let fd = cvt(unsafe {
                    libc::openat(
                        dir.fd.as_raw_fd(),
                        c".".as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    )
                })?;
                // SAFETY: the kernel just gave us this descriptor.
                let mut stream = DirStream::open(unsafe { OwnedFd::from_raw_fd(fd) })?;
                if cookie != 0 {
                    stream.seek(cookie);
                }
                (stream, None)
            }
        };
        // Root's answers do not depend on permissions, so they may come from the cache.
        let cache = plus && cred.is_some_and(|c| c.uid == 0) && self.attrs.is_on();
        let epoch = self.attrs.sync();
        let now = Instant::now();
        let mut last = cookie;
        loop {
            let raw = match pending.take() {
                Some(e) => e,
                None => match stream.next_entry()? {
                    Some(e) => e,
                    None => return Ok(true),
                },
            };
            let mut e = raw.clone();
            let is_parent = e.name == b"..";
            if is_parent && dir.path.as_os_str().is_empty() {
                e.ino = self.root_stat.ino;
            }
            let plus_info = if !plus {
                None
            } else if e.name == b"." {
                Some((self.handle_of(&dir.stat), dir.stat))
            } else if is_parent {
                // The parent was listed (so kept) just before, in a walk from the top.
                match self.attrs.get(e.ino, now).filter(|_| cache) {
                    Some(st) => Some((self.handle_of(&st), st)),
                    None => self.lookup(dir, b"..", cred).ok(),
                }
            } else {
                let kept = if cache {
                    self.attrs.get(e.ino, now)
                } else {
                    None
                };
                let st = match kept {
                    Some(st) => Some(st),
                    None => {
                        let c = cstr(&e.name)?;
                        let st = statx_at(dir.fd.as_raw_fd(), &c).ok();
                        if let (true, Some(st)) = (cache, st) {
                            self.attrs.put(st, now, epoch);
                        }
                        st
                    }
                };
                st.map(|st| {
                    self.remember_entry(st.ino, &dir.path, &e.name);
                    (self.handle_of(&st), st)
                })
            };
            if let Some((_, st)) = &plus_info {
                e.ino = st.ino;
            }
            if !take(&e, plus_info) {
                // The client asks for the rest with the cookie of the last entry it got: keep
                // the stream, with this entry read ahead, for that call.
                OpenListing::keep(OpenListing {
                    key,
                    next: last,
                    stream,
                    pending: Some(raw),
                });
                return Ok(false);
            }
            last = e.cookie;
        }
    }

    /// File-system totals for FSSTAT: bytes (total, free, available), files (total, free, available).
    pub fn fsstat(&self) -> Result<[u64; 6], NfsStat> {
        // SAFETY: statvfs is plain old data.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        cvt(unsafe { libc::fstatvfs(self.root.as_raw_fd(), &mut s) })?;
        let b = s.f_frsize;
        Ok([
            s.f_blocks * b,
            s.f_bfree * b,
            s.f_bavail * b,
            s.f_files,
            s.f_ffree,
            s.f_favail,
        ])
    }
}

/// The write verifier of this server instance: changes on every start, as COMMIT requires.
pub fn boot_verifier() -> [u8; 8] {
    static VERF: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    *VERF.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_be_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs::config::ExportConfig;

    fn export(dir: &Path, access: &str) -> Export {
        let c = ExportConfig::parse_spec(&format!("/t={}:{access}", dir.display())).unwrap();
        Export::open(ExportSpec::check(&c, "exports[0]").unwrap()).unwrap()
    }

    #[test]
    fn handles_round_trip_and_reject_junk() {
        let h = Handle {
            export: 1,
            ino: 2,
            born: (3, 4),
        };
        assert_eq!(Handle::decode(&h.encode()), Some(h));
        assert_eq!(Handle::decode(&h.encode()[..23]), None);
        assert_eq!(Handle::decode(&[0u8; 24]), None);
    }

    #[test]
    fn names_are_single_components() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(check_name(bad), Err(NfsStat::INVAL), "{bad:?}");
        }
        assert_eq!(check_name(&[b'a'; 256]), Err(NfsStat::NAMETOOLONG));
    }

    #[test]
    fn dotdot_stops_at_the_root_and_symlinks_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("etc")).unwrap();
        let ex = export(d.path(), "ro");
        let root = ex.resolve(&ex.root_handle()).unwrap();
        let (h, _) = ex.lookup(&root, b"..", None).unwrap();
        assert_eq!(h, ex.root_handle());
        let (h, st) = ex.lookup(&root, b"etc", None).unwrap();
        assert_eq!(st.kind, Kind::Lnk);
        let link = ex.resolve(&h).unwrap();
        assert_eq!(ex.readlink(&link).unwrap(), b"/etc");
        assert!(ex.lookup(&link, b"passwd", None).is_err());
        assert_eq!(
            ex.read(&link, 0, &mut [0; 10], None).unwrap_err(),
            NfsStat::INVAL
        );
    }

    #[test]
    fn forged_handles_outside_the_export_are_stale() {
        let d = tempfile::tempdir().unwrap();
        let ex = export(d.path(), "ro");
        let outside = statx_at(libc::AT_FDCWD, c"/etc/passwd").unwrap();
        let forged = ex.handle_of(&outside);
        assert_eq!(ex.resolve(&forged).unwrap_err(), NfsStat::STALE);
    }

    #[test]
    fn handles_resolve_in_a_fresh_export_after_restart() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), b"hello").unwrap();
        let h = {
            let ex = export(d.path(), "ro");
            let mut h = ex.root_handle();
            for n in ["a", "b", "f"] {
                let dir = ex.resolve(&h).unwrap();
                h = ex.lookup(&dir, n.as_bytes(), None).unwrap().0;
            }
            h
        };
        let ex = export(d.path(), "ro");
        let obj = ex.resolve(&h).unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(ex.read(&obj, 0, &mut buf, None).unwrap(), (5, true));
        assert_eq!(&buf[..5], b"hello");
    }

    #[test]
    fn one_walk_after_restart_serves_every_handle() {
        let d = tempfile::tempdir().unwrap();
        for dir in ["a/x", "b/y", "c"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        let handles: Vec<Handle> = {
            let ex = export(d.path(), "ro");
            ["a/x", "b/y", "c"]
                .iter()
                .map(|p| ex.lookup_path(p).unwrap().0)
                .collect()
        };
        let ex = export(d.path(), "ro");
        for h in &handles {
            assert_eq!(ex.resolve(h).unwrap().stat.ino, h.ino);
        }
    }

    #[test]
    fn unchecked_create_keeps_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"data").unwrap();
        std::fs::set_permissions(
            d.path().join("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let ex = export(d.path(), "rw");
        let root = ex.resolve(&ex.root_handle()).unwrap();
        let root_cred = Credential::default();
        let (_, st) = ex
            .create(&root, b"f", &SetAttr::NONE, false, Some(&root_cred))
            .unwrap();
        assert_eq!((st.mode, st.size), (0o600, 4));
        assert_eq!(
            ex.create(&root, b"f", &SetAttr::NONE, true, Some(&root_cred))
                .unwrap_err(),
            NfsStat::EXIST
        );
        let (_, st) = ex
            .create(&root, b"g", &SetAttr::NONE, true, Some(&root_cred))
            .unwrap();
        assert_eq!((st.mode, st.size, st.uid), (0o644, 0, 0));
    }

    /// Pages of `per_page` names through `readdir`, each resumed at the last cookie returned;
    /// `between` runs after each page.
    fn list_in_pages(ex: &Export, per_page: usize, mut between: impl FnMut(usize)) -> Vec<String> {
        let mut names = Vec::new();
        let mut cookie = 0;
        for page in 0.. {
            let dir = ex.resolve(&ex.root_handle()).unwrap();
            let mut got = 0;
            let eof = ex
                .readdir(
                    &dir,
                    cookie,
                    None,
                    |e, _| {
                        if got == per_page {
                            return false;
                        }
                        got += 1;
                        cookie = e.cookie;
                        names.push(String::from_utf8_lossy(&e.name).into_owned());
                        true
                    },
                    true,
                )
                .unwrap();
            if eof {
                break;
            }
            between(page);
        }
        names.retain(|n| n != "." && n != "..");
        names
    }

    #[test]
    fn kept_listings_resume_exactly_and_changes_start_afresh() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::write(d.path().join(format!("f{i:03}")), b"").unwrap();
        }
        let ex = export(d.path(), "rw");
        let mut want: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
        // Unchanged directory: every page resumes the kept stream; nothing lost or repeated.
        let kept = || LISTINGS.with(|l| l.borrow().len());
        let mut names = list_in_pages(&ex, 7, |_| assert_eq!(kept(), 1));
        names.sort();
        assert_eq!(names, want);
        // A change between pages: the next page opens the directory again at the cookie, so
        // the names that were there all along still come exactly once.
        let mut names = list_in_pages(&ex, 7, |page| {
            if page == 3 {
                std::fs::write(d.path().join("new"), b"").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        names.retain(|n| n != "new");
        names.sort();
        assert_eq!(names, want);
        // A listing from the start opens afresh and sees the new name.
        want.push("new".into());
        let mut names = list_in_pages(&ex, 1000, |_| {});
        names.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn read_only_exports_refuse_changes() {
        let d = tempfile::tempdir().unwrap();
        let ex = export(d.path(), "ro");
        let root = ex.resolve(&ex.root_handle()).unwrap();
        assert_eq!(
            ex.create(&root, b"x", &SetAttr::NONE, false, None)
                .unwrap_err(),
            NfsStat::ROFS
        );
        assert!(!d.path().join("x").exists());
    }

    /// READDIRPLUS for root may answer from the attribute cache, but a change made on the host
    /// between two listings shows in the second at once.
    #[test]
    fn a_host_change_shows_in_the_next_listing_for_root() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"1").unwrap();
        let ex = export(d.path(), "ro");
        let root = Credential::default();
        let mode_of_f = || {
            let dir = ex.resolve(&ex.root_handle()).unwrap();
            let mut mode = None;
            ex.readdir(
                &dir,
                0,
                Some(&root),
                |e, plus| {
                    if e.name == b"f" {
                        mode = plus.map(|(_, st)| (st.mode, st.size));
                    }
                    true
                },
                true,
            )
            .unwrap();
            mode.expect("f listed with attributes")
        };
        let on_disk = std::fs::metadata(d.path().join("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode_of_f(), (on_disk, 1));
        assert_eq!(mode_of_f(), (on_disk, 1), "listed again, unchanged");
        std::fs::set_permissions(d.path().join("f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert_eq!(mode_of_f(), (0o600, 1));
        std::fs::write(d.path().join("f"), b"12345").unwrap();
        assert_eq!(mode_of_f(), (0o600, 5));
    }
}
