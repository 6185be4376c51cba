//! Directory listings (READDIR, READDIRPLUS): entries resumed at the directory's own cookies,
//! with the stream kept open between two pages of one listing on the connection's thread.

use std::os::fd::AsRawFd;
use std::time::Instant;

use super::syscalls::{self, cstr, statx_at, DirStream};
use super::{AsUser, Export, Handle, Kind, Obj, Stat};
use crate::nfs::rpc::Credential;
use crate::nfs::status::NfsStat;

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

impl Export {
    /// Reads directory entries from `cookie` on, calling `take` for each until it says stop.
    ///
    /// Cookies are the directory's own seek positions (`d_off`), which stay valid while the
    /// directory changes, so a listing resumed after other clients' changes neither skips nor
    /// repeats entries that were there all along. A page that continues the calling thread's
    /// previous page of an unchanged directory resumes its open stream (`OpenListing`). Entries'
    /// attributes are read from disk, or for a root caller from the export's
    /// [`AttrCache`](crate::nfs::attrcache::AttrCache), which drops whatever the kernel reports
    /// changed before this call. Returns whether the end was reached.
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
        let _user = AsUser::new(cred)?;
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
                let fd = syscalls::openat(
                    dir.fd.as_raw_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    0,
                )?;
                let mut stream = DirStream::open(fd)?;
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_export as export;
    use super::*;

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
