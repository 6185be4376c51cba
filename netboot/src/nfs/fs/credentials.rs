//! The per-call credential switch: a thread's filesystem uid, gid and groups set to the
//! caller's for the length of one operation ([`AsUser`]), every step checked.

use std::time::Duration;

use crate::nfs::rpc::Credential;
use crate::nfs::status::NfsStat;
use crate::throttle::SharedThrottle;

/// One warning a minute when switches fail (a server without CAP_SETUID/CAP_SETGID fails them
/// all).
static SWITCH_FAILED: SharedThrottle = SharedThrottle::new(Duration::from_secs(60));

/// Runs the current thread's filesystem calls as a client, until dropped (not nestable: dropping
/// returns to root).
///
/// `setfsuid`/`setfsgid` and the raw `setgroups` system call change only the calling thread
/// (glibc's `setgroups` would change every thread), so other operations are unaffected.
/// Every call starts from filesystem uid and gid 0; a root caller (uid 0, gid 0) stays there:
/// its permission checks go by capabilities, not groups, and its new files get uid 0 and gid 0.
/// A switch that does not take (no CAP_SETUID/CAP_SETGID, say) refuses the call: running it
/// as the server's own identity would bypass the caller's permissions.
pub struct AsUser {
    switched: bool,
}

impl AsUser {
    /// Switches to `cred` (`None`, i.e. `AUTH_NONE`, is nobody: 65534); `SERVERFAULT` when any
    /// step fails (the thread is back to root then).
    pub fn new(cred: Option<&Credential>) -> Result<AsUser, NfsStat> {
        // From filesystem uid 0 first, whatever user the server runs as (a service user with
        // capabilities starts at its own uid): the kernel drops the capabilities that bypass
        // file permissions only when the filesystem uid goes from 0 to another.
        // SAFETY: these calls change only this thread's filesystem ids; no memory is passed.
        let at_root = unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
            libc::setfsuid(u32::MAX) == 0 && libc::setfsgid(u32::MAX) == 0
        };
        if !at_root {
            return Err(refuse("setfsuid(0)/setfsgid(0) did not take"));
        }
        if cred.is_some_and(|c| c.uid == 0 && c.gid == 0) {
            return Ok(AsUser { switched: false });
        }
        let (uid, gid, gids) = match cred {
            Some(c) => (c.uid, c.gid, c.gids.as_slice()),
            None => (65534, 65534, &[][..]),
        };
        let user = AsUser { switched: true };
        // SAFETY: the kernel reads `gids.len()` group ids from `gids`, a live slice of `gid_t`
        // (u32) borrowed for the call; it changes only this thread's credentials.
        let groups = unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) };
        if groups != 0 {
            let e = std::io::Error::last_os_error();
            return Err(refuse(&format!("setgroups({} groups): {e}", gids.len())));
        }
        // setfsuid/setfsgid return the previous id whether or not they changed it; asking with
        // an invalid id (-1) changes nothing and returns the current one.
        // SAFETY: these calls change only this thread's filesystem ids; no memory is passed.
        let (fsgid, fsuid) = unsafe {
            libc::setfsgid(gid);
            let g = libc::setfsgid(u32::MAX) as u32;
            libc::setfsuid(uid);
            let u = libc::setfsuid(u32::MAX) as u32;
            (g, u)
        };
        if fsgid != gid || fsuid != uid {
            return Err(refuse(&format!(
                "setfsuid({uid})/setfsgid({gid}) left uid {fsuid} gid {fsgid}"
            )));
        }
        Ok(user)
    }
}

/// The call is refused (the caller's `AsUser` drops back to root); logged once a minute.
fn refuse(what: &str) -> NfsStat {
    if let Some(n) = SWITCH_FAILED.hit_now() {
        tracing::error!(
            "nfs: cannot act as the caller ({what}); the call is refused with SERVERFAULT ({n} refused since the last warning). Does the server have CAP_SETUID and CAP_SETGID?"
        );
    }
    NfsStat::SERVERFAULT
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_ids() -> (u32, u32) {
        // SAFETY: -1 is not an id: these only read this thread's filesystem ids.
        unsafe {
            (
                libc::setfsuid(u32::MAX) as u32,
                libc::setfsgid(u32::MAX) as u32,
            )
        }
    }

    #[test]
    fn switches_on_a_thread_of_its_own_and_back() {
        std::thread::spawn(|| {
            // SAFETY: geteuid takes nothing, cannot fail and changes nothing.
            if unsafe { libc::geteuid() } != 0 {
                // Without the capabilities every switch is refused, never run as ourselves.
                let cred = Credential {
                    uid: 1000,
                    gid: 1000,
                    gids: vec![],
                };
                assert_eq!(AsUser::new(Some(&cred)).err(), Some(NfsStat::SERVERFAULT));
                return;
            }
            let cred = Credential {
                uid: 1234,
                gid: 4321,
                gids: vec![4321, 7],
            };
            {
                let _user = AsUser::new(Some(&cred)).expect("root switches");
                assert_eq!(fs_ids(), (1234, 4321));
            }
            assert_eq!(fs_ids(), (0, 0));
            {
                let _nobody = AsUser::new(None).expect("root switches");
                assert_eq!(fs_ids(), (65534, 65534));
            }
            assert_eq!(fs_ids(), (0, 0));
        })
        .join()
        .unwrap();
    }
}
