//! Which TCP connections use which export, so that removing an export closes its connections.
//!
//! NFS has no notion of "the export a connection is on": a client mounts through MOUNT (often
//! on a connection of its own) and then sends file handles, each naming its export, on any
//! connection. So a [`Connection`] is recorded as a *user* of an export the first time one of
//! its calls resolves into it: a MOUNT MNT that found the export, or an NFS call whose file
//! handle named it (and that the client was allowed to use). Removing the export from the
//! [`ExportTable`](super::ExportTable) cancels [`Connection::closed`] of every user, and the
//! socket loop shuts those sockets down at once. A connection that never touched the export
//! (another board's, portmap, MOUNT's NULL, EXPORT or UMNT) stays open. A client that shares
//! one connection among several mounts of this server (Linux does, per server address) loses
//! it too; it reconnects and sends its calls into the other exports again, as after any
//! dropped connection.
//!
//! Registration and removal take the same small lock, so a call racing with the removal either
//! registers first (and its connection is closed) or finds the export gone (and answers
//! `NFS3ERR_STALE`). A connection forgets its registrations when it is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio_util::sync::CancellationToken;

use super::fs::Export;

/// One client connection as the export table sees it.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    peer: SocketAddr,
    closed: CancellationToken,
    /// The exports this connection is registered with (usually one).
    used: Mutex<Vec<Used>>,
}

#[derive(Debug)]
struct Used {
    /// Compared by address only; the weak reference keeps the address from being reused.
    export: Weak<Export>,
    users: Weak<Users>,
}

impl Connection {
    /// A connection from `peer`, registered with no export yet.
    pub fn new(peer: SocketAddr) -> Arc<Connection> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Connection {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            peer,
            closed: CancellationToken::new(),
            used: Mutex::new(Vec::new()),
        })
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Cancelled when an export this connection used is removed: close the connection then.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Whether this connection is registered as a user of `export`.
    pub fn uses(&self, export: &Arc<Export>) -> bool {
        self.lock()
            .iter()
            .any(|u| std::ptr::eq(u.export.as_ptr(), Arc::as_ptr(export)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Used>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for used in self.lock().drain(..) {
            if let Some(users) = used.users.upgrade() {
                users.lock().conns.remove(&self.id);
            }
        }
    }
}

/// The connections using one export, and whether it was removed.
#[derive(Debug, Default)]
pub(super) struct Users {
    inner: Mutex<UsersInner>,
}

#[derive(Debug, Default)]
struct UsersInner {
    removed: bool,
    conns: HashMap<u64, CancellationToken>,
}

impl Users {
    /// Records `conn` as a user of `export` (whose users these are); `false` if the export
    /// was removed meanwhile.
    pub(super) fn register(self: &Arc<Self>, export: &Arc<Export>, conn: &Connection) -> bool {
        if conn.uses(export) {
            // Registered already: if the export is being removed, this connection is closing.
            return true;
        }
        let mut inner = self.lock();
        if inner.removed {
            return false;
        }
        inner.conns.insert(conn.id, conn.closed.clone());
        conn.lock().push(Used {
            export: Arc::downgrade(export),
            users: Arc::downgrade(self),
        });
        true
    }

    /// Marks the export removed and closes every user; returns how many there were.
    pub(super) fn close_all(&self) -> usize {
        let mut inner = self.lock();
        inner.removed = true;
        let conns = std::mem::take(&mut inner.conns);
        for token in conns.values() {
            token.cancel();
        }
        conns.len()
    }

    /// Connections registered now.
    pub(super) fn count(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UsersInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
