//! The per-call credential switch: a thread's filesystem uid, gid and groups set to the
//! caller's for the length of one operation ([`AsUser`]).

use crate::nfs::rpc::Credential;

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
        // SAFETY: the kernel reads `gids.len()` group ids from `gids`, a live slice of `gid_t`
        // (u32) borrowed for the call; these system calls change only this thread's
        // credentials, which no Rust invariant depends on.
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
        // SAFETY: back to root for this thread only; an empty group list is passed as a NULL
        // pointer with length 0, which the kernel does not read.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>());
        }
    }
}
