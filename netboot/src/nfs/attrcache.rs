//! Inode attributes kept between calls, dropped as soon as the kernel reports a change.
//!
//! A READDIRPLUS page carries the attributes of every entry; reading them with one `statx` per
//! entry is most of the server's work in a tree walk (a listing of 20,000 entries costs 20,000
//! path lookups in the kernel). This cache keeps what `statx` said, keyed by inode number, and
//! stays exact by listening to the export's filesystem through fanotify (`FAN_MARK_FILESYSTEM`,
//! `FAN_REPORT_FID`): every write, attribute change, create, delete and rename on that
//! filesystem, by this server, another process on the host or anything else, queues an event
//! naming the inode (or its directory) before the changing system call returns. [`AttrCache::sync`]
//! reads the queue to the end at the start of every call that uses the cache, so a change that
//! finished before a call began is never answered from the cache.
//!
//! Where an event's file handle cannot be mapped to an inode number (any filesystem but ext2/3/4,
//! whose handles are documented `[inode, generation]` pairs) or the queue overflowed, the whole
//! cache is dropped. What fanotify does not report is bounded by [`TTL`]: access times (reads
//! update atime without an event) and changes written through a shared `mmap`. Where fanotify
//! cannot be had (not root, a filesystem without file handles), the cache is off and every
//! attribute is read from disk, as it is for callers other than root (whose answer may depend on
//! their search permission on the directory).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::fs::{InodeMap, Stat};

/// Longest time an entry is used: what fanotify does not report (atime, `mmap` writes) is at
/// most this old, like the attributes a Linux client keeps itself (`acregmin`, 3 s).
pub const TTL: Duration = Duration::from_secs(3);

/// Entries kept at most; past this the cache starts afresh (about 130 bytes each).
pub const MAX_ENTRIES: usize = 100_000;

/// The changes the cache must hear of.
const EVENTS: u64 = libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_DELETE_SELF
    | libc::FAN_MOVE_SELF
    | libc::FAN_ONDIR;

/// ext2/3/4's `s_magic`: their file handles are `FILEID_INO32_GEN` (`[ino: u32, gen: u32]`).
const EXT4_SUPER_MAGIC: i64 = 0xEF53;
/// `FILEID_INO32_GEN` and `FILEID_INO32_GEN_PARENT`: the object's inode number comes first.
const FILEID_INO32_GEN: i32 = 1;
const FILEID_INO32_GEN_PARENT: i32 = 2;

/// The attribute cache of one export.
#[derive(Debug)]
pub struct AttrCache {
    /// The fanotify group, non-blocking; `None` when the cache is off.
    notify: Option<OwnedFd>,
    /// Whether event handles decode to inode numbers on this filesystem.
    ino32_handles: bool,
    entries: Mutex<Entries>,
}

/// The kept attributes and the number of syncs that found changes.
#[derive(Debug, Default)]
struct Entries {
    map: InodeMap<(Stat, Instant)>,
    epoch: u64,
}

/// What [`AttrCache::sync`] returns: the point up to which changes were applied. Attributes
/// read after it may be kept only while no later sync has applied a change, since that change
/// may have come after the read and its event is then gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(u64);

impl AttrCache {
    /// A cache that is always empty.
    pub fn off() -> AttrCache {
        AttrCache {
            notify: None,
            ino32_handles: false,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// A cache for the filesystem holding `dir`, or an error saying why there can be none.
    pub fn watch(dir: &Path) -> io::Result<AttrCache> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: plain flags; the result is checked.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_FID | libc::FAN_NONBLOCK,
                libc::O_RDONLY as libc::c_uint | libc::O_CLOEXEC as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        let notify = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: valid group descriptor and NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(
                notify.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                EVENTS,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statfs is a plain C struct of integers, for which all-zero bytes are valid.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `fs` is a live, writable statfs the kernel fills;
        // both outlive the call.
        let ino32_handles =
            unsafe { libc::statfs(path.as_ptr(), &mut fs) } == 0 && fs.f_type == EXT4_SUPER_MAGIC;
        Ok(AttrCache {
            notify: Some(notify),
            ino32_handles,
            entries: Mutex::new(Entries::default()),
        })
    }

    /// Whether the cache is in use.
    pub fn is_on(&self) -> bool {
        self.notify.is_some()
    }

    /// Applies every change the kernel has reported so far.
    pub fn sync(&self) -> Epoch {
        let Some(notify) = &self.notify else {
            return Epoch(0);
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: valid descriptor, buffer and length.
            let n = unsafe { libc::read(notify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN: the queue is empty. Any other error: trust nothing kept.
                if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                    entries.map.clear();
                    entries.epoch += 1;
                }
                return Epoch(entries.epoch);
            }
            entries.epoch += 1;
            if !self.apply(&buf[..n as usize], &mut entries.map) {
                entries.map.clear();
            }
        }
    }

    /// Drops the inodes named by the events in `buf`; false when one could not be mapped to
    /// an inode (the caller then drops everything).
    fn apply(&self, mut buf: &[u8], entries: &mut InodeMap<(Stat, Instant)>) -> bool {
        const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
        while buf.len() >= META {
            let u32_at =
                |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
            // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
            // metadata_len u16, mask u64, fd i32, pid i32.
            let event_len = u32_at(buf, 0) as usize;
            let metadata_len = usize::from(u16::from_ne_bytes([buf[6], buf[7]]));
            let mask = u64::from_ne_bytes(buf[8..16].try_into().unwrap());
            if event_len < META || event_len > buf.len() || metadata_len > event_len {
                return false;
            }
            if mask & libc::FAN_Q_OVERFLOW != 0 || !self.ino32_handles {
                return false;
            }
            let mut info = &buf[metadata_len..event_len];
            let mut named = false;
            // struct fanotify_event_info_header: info_type u8, pad u8, len u16; for a FID
            // record then fsid (8 bytes) and struct file_handle: handle_bytes u32,
            // handle_type i32, f_handle[handle_bytes].
            while info.len() >= 4 {
                let len = usize::from(u16::from_ne_bytes([info[2], info[3]]));
                if len < 4 || len > info.len() {
                    return false;
                }
                let record = &info[..len];
                if record[0] == libc::FAN_EVENT_INFO_TYPE_FID && len >= 4 + 8 + 8 + 4 {
                    let handle_bytes = u32_at(record, 12) as usize;
                    let handle_type = u32_at(record, 16) as i32;
                    let known =
                        handle_type == FILEID_INO32_GEN || handle_type == FILEID_INO32_GEN_PARENT;
                    if !known || handle_bytes < 8 {
                        return false;
                    }
                    entries.remove(&u64::from(u32_at(record, 20)));
                    named = true;
                }
                info = &info[len..];
            }
            if !named {
                return false;
            }
            buf = &buf[event_len..];
        }
        true
    }

    /// The attributes kept for `ino`, if they are younger than [`TTL`]; call [`sync`](Self::sync)
    /// first in the same call.
    pub fn get(&self, ino: u64, now: Instant) -> Option<Stat> {
        self.notify.as_ref()?;
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .map
            .get(&ino)
            .filter(|(_, at)| now.saturating_duration_since(*at) < TTL)
            .map(|(st, _)| *st)
    }

    /// Keeps `st`, read from disk at `at`, after the sync that returned `since`; nothing is
    /// kept if a later sync has applied changes (one of them may postdate the read).
    pub fn put(&self, st: Stat, at: Instant, since: Epoch) {
        if self.notify.is_none() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.epoch != since.0 {
            return;
        }
        if entries.map.len() >= MAX_ENTRIES {
            entries.map.clear();
        }
        entries.map.insert(st.ino, (st, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn stat_of(path: &Path) -> Stat {
        let m = std::fs::symlink_metadata(path).unwrap();
        // Only the fields the tests compare matter here.
        Stat {
            kind: super::super::fs::Kind::Reg,
            mode: m.mode() & 0o7777,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            used: 0,
            rdev: (0, 0),
            ino: m.ino(),
            atime: (0, 0),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            ctime: (m.ctime(), m.ctime_nsec() as u32),
            born: (0, 0),
        }
    }

    /// The cache on a scratch directory, or `None` (and a note) where fanotify is not allowed.
    fn cache_in(dir: &Path) -> Option<AttrCache> {
        match AttrCache::watch(dir) {
            Ok(c) => Some(c),
            // SAFETY: geteuid takes nothing, cannot fail and changes nothing.
            Err(e) if unsafe { libc::geteuid() } != 0 => {
                eprintln!("SKIPPED: fanotify needs root here ({e})");
                None
            }
            Err(e) => panic!("fanotify refused as root: {e}"),
        }
    }

    #[test]
    fn every_kind_of_change_drops_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let Some(cache) = cache_in(dir.path()) else {
            return;
        };
        let file = dir.path().join("f");
        std::fs::write(&file, b"one").unwrap();
        /// A named change made on the host.
        type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
        let changes: Vec<Change> = vec![
            (
                "write",
                Box::new(|| std::fs::write(&file, b"longer").unwrap()),
            ),
            (
                "chmod",
                Box::new(|| {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap()
                }),
            ),
            (
                "truncate",
                Box::new(|| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .unwrap()
                        .set_len(1)
                        .unwrap()
                }),
            ),
            (
                "link",
                Box::new(|| std::fs::hard_link(&file, dir.path().join("g")).unwrap()),
            ),
            (
                "unlink of the other name",
                Box::new(|| std::fs::remove_file(dir.path().join("g")).unwrap()),
            ),
            (
                "rename away and back",
                Box::new(|| {
                    std::fs::rename(&file, dir.path().join("f2")).unwrap();
                    std::fs::rename(dir.path().join("f2"), &file).unwrap();
                }),
            ),
            (
                "rename over it",
                Box::new(|| {
                    std::fs::write(dir.path().join("other"), b"other").unwrap();
                    std::fs::rename(dir.path().join("other"), &file).unwrap();
                }),
            ),
        ];
        for (what, change) in changes {
            let st = stat_of(&file);
            let epoch = cache.sync();
            cache.put(st, Instant::now(), epoch);
            cache.sync();
            assert_eq!(cache.get(st.ino, Instant::now()), Some(st), "{what}: kept");
            change();
            cache.sync();
            assert_eq!(cache.get(st.ino, Instant::now()), None, "{what}: dropped");
        }
        // A directory's own entry goes when a name is added to it.
        let d = stat_of(dir.path());
        let epoch = cache.sync();
        cache.put(d, Instant::now(), epoch);
        std::fs::write(dir.path().join("new"), b"").unwrap();
        cache.sync();
        assert_eq!(
            cache.get(d.ino, Instant::now()),
            None,
            "create in a directory"
        );
    }

    #[test]
    fn entries_expire_and_an_unwatched_cache_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let st = stat_of(&file);
        let off = AttrCache::off();
        off.put(st, Instant::now(), off.sync());
        assert_eq!(off.get(st.ino, Instant::now()), None);
        let Some(cache) = cache_in(dir.path()) else {
            return;
        };
        let t0 = Instant::now();
        cache.put(st, t0, cache.sync());
        assert_eq!(cache.get(st.ino, t0 + TTL / 2), Some(st));
        assert_eq!(cache.get(st.ino, t0 + TTL), None);
    }

    #[test]
    fn attributes_read_before_a_change_another_call_applied_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let Some(cache) = cache_in(dir.path()) else {
            return;
        };
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // Call A syncs and reads; the file changes; call B syncs (the event is consumed);
        // only then does A keep what it read.
        let a = cache.sync();
        let old = stat_of(&file);
        std::fs::write(&file, b"changed").unwrap();
        let _b = cache.sync();
        cache.put(old, Instant::now(), a);
        assert_eq!(cache.get(old.ino, Instant::now()), None);
    }
}
