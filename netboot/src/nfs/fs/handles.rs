//! File handles: their wire form, and how one is resolved to an object by searching the
//! export only (a cached path, else one walk of the export).
//!
//! A walk runs on a thread of its own (`nfs-walk`), one per export at a time and at most every
//! [`RESCAN_INTERVAL`]; a call that needs it waits up to [`WALK_WAIT`] and is then answered
//! `NFS3ERR_JUKEBOX` (the client retries later), so forged handles can neither hold a
//! connection's thread for the length of a walk of a large export nor start walks back to
//! back. A walk remembers at most [`MAX_WALK_PATHS`] paths.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::syscalls::{cstr, open_beneath, statx_at, DirStream};
use super::{Export, Obj, Stat};
use crate::nfs::status::NfsStat;

/// Bytes in an encoded handle: magic, export id (32 bits), inode (64), birth seconds (low 32
/// bits) and nanoseconds (32). As compact as a knfsd or ganesha handle: every READDIRPLUS entry
/// carries one, so a smaller handle puts more entries in each reply.
pub const HANDLE_LEN: usize = 24;
const HANDLE_MAGIC: &[u8; 4] = b"LBn2";

/// Least time between two walks of an export for inodes not in the cache.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// How long a call waits for a walk before it is answered `NFS3ERR_JUKEBOX`.
pub const WALK_WAIT: Duration = Duration::from_secs(1);

/// Paths one walk remembers at most (about 100 bytes each).
pub const MAX_WALK_PATHS: usize = 4_000_000;

/// The walks of one export: whether one runs, and when the last one ended.
#[derive(Debug, Default)]
pub struct Walks {
    state: Mutex<WalkState>,
    ended: Condvar,
    started: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct WalkState {
    running: bool,
    last: Option<Instant>,
}

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

impl Export {
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

    pub(super) fn remember(&self, ino: u64, path: PathBuf) {
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino, path);
    }

    /// Remembers that `ino` is `name` in `dir`; a listing repeated over an unchanged directory
    /// finds every path known already and allocates nothing.
    pub(super) fn remember_entry(&self, ino: u64, dir: &Path, name: &[u8]) {
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
        let mut state = self.walks.state.lock().unwrap_or_else(|p| p.into_inner());
        // A walk may have ended while this call waited for the lock.
        if let Some(obj) = from_cache() {
            return Ok(obj);
        }
        if !state.running {
            if state.last.is_some_and(|t| t.elapsed() < RESCAN_INTERVAL) {
                return Err(NfsStat::STALE);
            }
            self.start_walk()?;
            state.running = true;
        }
        let (state, waited) = self
            .walks
            .ended
            .wait_timeout_while(state, WALK_WAIT, |s| s.running)
            .unwrap_or_else(|p| p.into_inner());
        drop(state);
        if waited.timed_out() {
            return Err(NfsStat::JUKEBOX);
        }
        from_cache().ok_or(NfsStat::STALE)
    }

    /// Starts a walk of the whole export on a thread of its own; it replaces the path cache
    /// and wakes the calls waiting for it when done.
    fn start_walk(&self) -> Result<(), NfsStat> {
        let root = self.root.try_clone().map_err(|_| NfsStat::JUKEBOX)?;
        let root_ino = self.root_stat.ino;
        let name = self.spec.name().to_string();
        let paths = Arc::clone(&self.paths);
        let walks = Arc::clone(&self.walks);
        walks
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::Builder::new()
            .name("nfs-walk".into())
            .spawn(move || {
                let started = Instant::now();
                let fresh = walk(&root, root_ino, &name);
                let n = fresh.len();
                *paths.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
                let mut state = walks.state.lock().unwrap_or_else(|p| p.into_inner());
                state.running = false;
                state.last = Some(Instant::now());
                walks.ended.notify_all();
                drop(state);
                tracing::info!(
                    "nfs: walked export {name} for unknown handles: {n} paths in {:?}",
                    started.elapsed()
                );
            })
            .map(|_| ())
            .map_err(|e| {
                tracing::warn!(
                    "nfs: cannot start a walk of export {}: {e}",
                    self.spec.name()
                );
                NfsStat::JUKEBOX
            })
    }

    /// The parent of an object (the root is its own parent), with the object's name.
    pub(super) fn parent_of(&self, obj: &Obj) -> Result<(Obj, CString), NfsStat> {
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
}

/// Walks the export under `root` breadth-first (never through symlinks) and returns every
/// path by inode, so one walk after a restart serves every handle the clients still hold; stops
/// at [`MAX_WALK_PATHS`].
fn walk(root: &OwnedFd, root_ino: u64, name: &str) -> InodeMap<PathBuf> {
    let mut queue = VecDeque::from([PathBuf::new()]);
    let mut fresh = InodeMap::default();
    fresh.insert(root_ino, PathBuf::new());
    while let Some(dir) = queue.pop_front() {
        let Ok(fd) = open_beneath(
            root.as_raw_fd(),
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
            if fresh.len() >= MAX_WALK_PATHS {
                tracing::warn!(
                    "nfs: export {name} has more than {MAX_WALK_PATHS} paths; \
                     the walk for unknown handles stops there"
                );
                return fresh;
            }
            let path = dir.join(OsStr::from_bytes(&e.name));
            if e.is_dir {
                queue.push_back(path.clone());
            }
            fresh.insert(e.ino, path);
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::super::test_export as export;
    use super::*;

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
    fn forged_handles_start_one_walk_off_the_callers_thread() {
        let log = crate::testlog::Captured::start();
        let d = tempfile::tempdir().unwrap();
        for i in 0..200 {
            std::fs::create_dir_all(d.path().join(format!("d{}/e{i}", i % 10))).unwrap();
        }
        let ex = Arc::new(export(d.path(), "ro"));
        // Eight callers with forged handles at once: all STALE, after one walk.
        let callers: Vec<_> = (0..8u64)
            .map(|i| {
                let ex = Arc::clone(&ex);
                std::thread::spawn(move || {
                    let forged = Handle {
                        export: ex.id,
                        ino: 0xdead_0000 + i,
                        born: (1, 2),
                    };
                    ex.resolve(&forged).unwrap_err()
                })
            })
            .collect();
        for c in callers {
            assert_eq!(c.join().unwrap(), NfsStat::STALE);
        }
        // Within RESCAN_INTERVAL another forged handle starts no walk.
        let forged = Handle {
            export: ex.id,
            ino: 0xbeef,
            born: (1, 2),
        };
        assert_eq!(ex.resolve(&forged).unwrap_err(), NfsStat::STALE);
        // The walk ran on its own thread and found the 211 paths.
        let walks: Vec<String> = log
            .lines()
            .into_iter()
            .filter(|l| l.contains("walked export"))
            .collect();
        assert!(
            walks.is_empty(),
            "the walk logs from its own thread: {walks:?}"
        );
        let started = ex.walks.started.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(started, 1, "one walk for nine forged handles");
        let state = ex.walks.state.lock().unwrap();
        assert!(!state.running && state.last.is_some());
        drop(state);
        assert_eq!(ex.paths.lock().unwrap().len(), 211);
    }
}
