//! The accept loop and the connection limits of a listener: the registry of open connections,
//! what each is doing (for the idle rule), and which one a new connection replaces at the cap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connection::serve_connection;
use super::pool::WorkPool;
use super::{CALL_BUDGET_KIB, SHUTDOWN_GRACE};
use crate::nfs::config::NfsSettings;
use crate::nfs::conns::Connection;
use crate::nfs::proto::Service;
use crate::throttle::{monotonic, LogThrottle, SharedThrottle, LOG_INTERVAL};

/// The connection limits of one listener.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    max: usize,
    idle: Duration,
}

impl Limits {
    pub(super) fn of(settings: &NfsSettings) -> Limits {
        Limits {
            max: settings.max_connections(),
            idle: settings.idle_timeout(),
        }
    }
}

/// What the accept loop knows of one open connection, to pick one to close at the cap.
#[derive(Debug)]
pub(super) struct Live {
    peer: SocketAddr,
    /// [`monotonic`] milliseconds of the last call received or answered (of the accept, before
    /// the first call).
    last_call: AtomicU64,
    /// Calls received and not answered yet.
    calls: AtomicUsize,
    /// Whether a call was ever received.
    called: AtomicBool,
    /// Cancelled to close the connection for a new one.
    pub(super) evict: CancellationToken,
}

impl Live {
    fn new(peer: SocketAddr) -> Live {
        Live {
            peer,
            last_call: AtomicU64::new(now_ms()),
            calls: AtomicUsize::new(0),
            called: AtomicBool::new(false),
            evict: CancellationToken::new(),
        }
    }

    /// A call arrived.
    pub(super) fn call_started(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.called.store(true, Ordering::Relaxed);
        self.last_call.store(now_ms(), Ordering::Relaxed);
    }

    /// A call was answered (or dropped).
    pub(super) fn call_ended(&self) {
        self.last_call.store(now_ms(), Ordering::Relaxed);
        self.calls.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long the connection has been without a call; `None` while a call runs.
    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.calls.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last_call.load(Ordering::Relaxed);
        Some(Duration::from_millis(now_ms().saturating_sub(last)))
    }
}

fn now_ms() -> u64 {
    monotonic().as_millis() as u64
}

/// The open connections of one listener, by a private id.
#[derive(Debug, Default, Clone)]
struct Registry(Arc<Mutex<HashMap<u64, Arc<Live>>>>);

/// A connection's entry in the [`Registry`], removed when dropped.
struct Registered {
    registry: Registry,
    id: u64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Live>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, id: u64, live: Arc<Live>) -> Registered {
        self.lock().insert(id, live);
        Registered {
            registry: self.clone(),
            id,
        }
    }

    /// The connection idle the longest (no call running), not already being closed: among
    /// those that never sent a call if there are any, else among all.
    fn longest_idle(&self) -> Option<(Arc<Live>, Duration)> {
        self.lock()
            .values()
            .filter(|l| !l.evict.is_cancelled())
            .filter_map(|l| Some((Arc::clone(l), l.idle_for()?)))
            .max_by_key(|(l, idle)| (!l.called.load(Ordering::Relaxed), *idle))
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// A connection as its limits see it: its activity, and when it counts as idle.
pub(super) struct Tracked {
    pub(super) live: Arc<Live>,
    /// The server's call threads.
    pub(super) pool: Arc<WorkPool>,
    pub(super) idle: Duration,
    pub(super) idle_warnings: Arc<SharedThrottle>,
}

/// Throttled warnings of one listener.
struct Warnings {
    evicted: LogThrottle,
    waiting: LogThrottle,
    idle: Arc<SharedThrottle>,
}

/// Accepts TCP connections until cancelled; each gets its own task. At the cap, a new
/// connection takes the place of the one idle the longest (see the module doc).
pub(super) async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
    pool: Arc<WorkPool>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max));
    let budget = Arc::new(Semaphore::new(CALL_BUDGET_KIB));
    let registry = Registry::default();
    let mut warnings = Warnings {
        evicted: LogThrottle::new(LOG_INTERVAL),
        waiting: LogThrottle::new(LOG_INTERVAL),
        idle: Arc::new(SharedThrottle::new(LOG_INTERVAL)),
    };
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("nfs: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) =
            make_room(&permits, &registry, &limits, peer, &mut warnings, &cancel).await
        else {
            break;
        };
        next_id += 1;
        let live = Arc::new(Live::new(peer));
        let registered = registry.add(next_id, Arc::clone(&live));
        let service = Arc::clone(&service);
        let cancel = cancel.clone();
        let budget = Arc::clone(&budget);
        let tracked = Tracked {
            live,
            pool: Arc::clone(&pool),
            idle: limits.idle,
            idle_warnings: Arc::clone(&warnings.idle),
        };
        conns.spawn(async move {
            let _counted = crate::metrics::METRICS.nfs.connection();
            let r = serve_connection(
                stream,
                Connection::new(peer),
                service,
                budget,
                tracked,
                cancel,
            )
            .await;
            if let Err(e) = r {
                tracing::debug!(client = %peer, "nfs: connection ended: {e}");
            }
            drop(registered);
            drop(permit);
        });
    }
    // Every connection joins its thread once cancelled.
    while conns.join_next().await.is_some() {}
}

/// A connection permit for the connection just accepted from `peer`: a free one, else the one
/// of the connection idle the longest, which is closed for it; while every connection has a
/// call running, waits for one to end. `None` when the server shuts down meanwhile.
async fn make_room(
    permits: &Arc<Semaphore>,
    registry: &Registry,
    limits: &Limits,
    peer: SocketAddr,
    warnings: &mut Warnings,
    cancel: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    loop {
        if let Ok(p) = Arc::clone(permits).try_acquire_owned() {
            return Some(p);
        }
        let wait = match registry.longest_idle() {
            Some((victim, idle)) => {
                victim.evict.cancel();
                if let Some(n) = warnings.evicted.hit_now() {
                    tracing::warn!(
                        client = %peer,
                        "nfs: {} connections open (max_connections): closed the one idle the \
                         longest, from {} (no call for {} s), for a new one from {peer}; \
                         {n} closed for this since the last warning",
                        limits.max,
                        victim.peer,
                        idle.as_secs()
                    );
                }
                // Its task ends within moments (at most the grace its thread gets).
                SHUTDOWN_GRACE + Duration::from_secs(1)
            }
            None => {
                if let Some(n) = warnings.waiting.hit_now() {
                    tracing::warn!(
                        client = %peer,
                        "nfs: {} connections open (max_connections), each with a call running: \
                         a new one from {peer} waits for a call to end; {n} waited since the last \
                         warning",
                        limits.max
                    );
                }
                // Look again soon: a connection whose call ended can make room.
                Duration::from_millis(100)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return None,
            p = Arc::clone(permits).acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
