//! The socket loops: NFS and MOUNT on one TCP listener, and the optional portmap responder.
//!
//! Each TCP connection has a thread of its own with a blocking socket: it cuts records
//! ([`super::rpc::RecordBuffer`]), answers quick calls (lookups, attributes, listings) itself
//! and hands every other call to tokio's blocking pool, at most [`MAX_IN_FLIGHT`] per
//! connection, so one client's slow READ does not hold up its other calls (Linux clients
//! pipeline many calls on one connection); a call on the pool writes its own reply, under the
//! connection's write lock, waiting at most [`SEND_TIMEOUT`] for a client that does not read
//! (then the connection is closed). A client that calls one thing at a time (a recursive
//! listing is thousands of calls in a row) is thus answered with one `recv` and one `send` per
//! call, with no hand-over between threads: with the connection served by tokio's workers, every call woke
//! a second worker (measured: 0.14 s per 20,200-entry walk with two workers, 0.10 s with one).
//! When a client disconnects, even mid-record, the thread stops reading and its buffers are
//! dropped; calls already running finish and their replies are discarded. Across all
//! connections, calls waiting or running hold at most [`CALL_BUDGET_KIB`] of records, so many
//! clients sending large WRITEs at once are slowed down rather than exhausting memory.
//!
//! Each connection is a [`Connection`] to the export table: when an export it used is removed
//! (the rule is in [`super::conns`]), its socket is shut down as at shutdown, so the client
//! has to reconnect, and then gets `NFS3ERR_STALE` for the removed export's handles.
//!
//! Connection limits, after the Linux server's: a listener serves at most
//! [`NfsSettings::max_connections`] connections; at that cap, a new connection closes the one
//! that has been idle the longest (no call running, oldest last call) to take its place,
//! looking first among connections that never sent a call, so that a flood of silent
//! connections replaces its own members rather than the boards' mounts. If every connection
//! has a call running, the new one waits until a call ends. A connection without a call for
//! [`NfsSettings::idle_timeout`] is closed, whether it sends nothing or trickles a record that
//! never completes; a client reconnects when it next needs the server, as after any dropped
//! connection. So connections that never send an RPC cannot lock the clients out. The lines
//! about evicted, idle and waiting connections are throttled ([`crate::throttle`]), one a
//! minute of each kind with the number meanwhile.
//!
//! Shutdown: [`NfsServer::run`] stops accepting when its shutdown future completes, cancels every
//! connection (shutting its socket down, so its thread's read returns) and waits up to
//! [`SHUTDOWN_GRACE`] for them.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::NfsSettings;
use super::conns::Connection;
use super::exports::{ExportError, ExportTable};
use super::proto::{FileData, Reply, Service, NFS_PROGRAM};
use super::rpc::{self, RecordBuffer};
use super::xdr::{self, Writer};
use crate::error::ServerError;
use crate::throttle::{monotonic, LogThrottle, SharedThrottle, LOG_INTERVAL};

/// Calls of one connection executing at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// KiB of received records that calls may hold at once, over all connections.
pub const CALL_BUDGET_KIB: usize = 256 * 1024;
/// The default of [`NfsSettings::max_connections`]: connections served at once (each on a
/// thread of its own).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a reply may wait for a client that does not read; then the connection is closed
/// (replies are written by the calls' threads, which must not wait forever).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for connections to finish their calls.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// An NFSv3 server: settings, the export table, and the RPC programs over it.
#[derive(Debug)]
pub struct NfsServer {
    settings: NfsSettings,
    service: Arc<Service>,
}

impl NfsServer {
    /// A server with the settings' exports in a new table.
    pub fn new(settings: NfsSettings) -> Result<NfsServer, ExportError> {
        let table = ExportTable::new();
        for spec in settings.exports() {
            table.add_checked(spec.clone())?;
        }
        Ok(NfsServer::with_table(settings, table))
    }

    /// A server for an existing table (the settings' own export list is not added).
    pub fn with_table(settings: NfsSettings, table: ExportTable) -> NfsServer {
        NfsServer {
            settings,
            service: Arc::new(Service::new(table)),
        }
    }

    /// A handle on the export table: add and remove exports through it while the server runs.
    pub fn table(&self) -> ExportTable {
        self.service.table().clone()
    }

    /// The settings this server runs with.
    pub fn settings(&self) -> &NfsSettings {
        &self.settings
    }

    /// Binds the NFS/MOUNT listener to the configured address.
    pub async fn bind(&self) -> Result<TcpListener, ServerError> {
        let addr = self.settings.listen();
        TcpListener::bind(addr)
            .await
            .map_err(|error| ServerError::Bind {
                server: "nfs",
                addr,
                error,
            })
    }

    /// Serves NFS and MOUNT on `listener` (and portmap, if configured) until `shutdown`.
    ///
    /// Logs `nfs: listening on ADDR` (and `nfs: portmap listening on ADDR`) once running.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let local = listener
            .local_addr()
            .map_err(ServerError::io("nfs: cannot read the listener's address"))?;
        self.service.set_nfs_port(local.port());
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let Some(addr) = self.settings.portmap() {
            let portmap = |addr| {
                move |error| ServerError::Bind {
                    server: "portmap",
                    addr,
                    error,
                }
            };
            let udp = UdpSocket::bind(addr).await.map_err(portmap(addr))?;
            let addr = udp.local_addr().map_err(ServerError::io(
                "nfs: cannot read the portmap socket's address",
            ))?;
            let tcp = TcpListener::bind(addr).await.map_err(portmap(addr))?;
            tracing::info!("nfs: portmap listening on {addr}");
            tasks.spawn(serve_udp(udp, Arc::clone(&self.service), cancel.clone()));
            tasks.spawn(accept_loop(
                tcp,
                Arc::clone(&self.service),
                Limits::of(&self.settings),
                cancel.clone(),
            ));
        }
        tracing::info!(
            "nfs: listening on {local} (exports: {})",
            self.service.table().names().join(", ")
        );
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&self.service),
            Limits::of(&self.settings),
            cancel.clone(),
        ));
        shutdown.await;
        tracing::info!("nfs: shutting down");
        cancel.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("nfs: connections did not stop in time; aborted");
            tasks.abort_all();
        }
        Ok(())
    }
}

/// The connection limits of one listener.
#[derive(Debug, Clone)]
struct Limits {
    max: usize,
    idle: Duration,
}

impl Limits {
    fn of(settings: &NfsSettings) -> Limits {
        Limits {
            max: settings.max_connections(),
            idle: settings.idle_timeout(),
        }
    }
}

/// What the accept loop knows of one open connection, to pick one to close at the cap.
#[derive(Debug)]
struct Live {
    peer: SocketAddr,
    /// [`monotonic`] milliseconds of the last call received or answered (of the accept, before
    /// the first call).
    last_call: AtomicU64,
    /// Calls received and not answered yet.
    calls: AtomicUsize,
    /// Whether a call was ever received.
    called: AtomicBool,
    /// Cancelled to close the connection for a new one.
    evict: CancellationToken,
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
    fn call_started(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.called.store(true, Ordering::Relaxed);
        self.last_call.store(now_ms(), Ordering::Relaxed);
    }

    /// A call was answered (or dropped).
    fn call_ended(&self) {
        self.last_call.store(now_ms(), Ordering::Relaxed);
        self.calls.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long the connection has been without a call; `None` while a call runs.
    fn idle_for(&self) -> Option<Duration> {
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
struct Tracked {
    live: Arc<Live>,
    idle: Duration,
    idle_warnings: Arc<SharedThrottle>,
}

/// Throttled warnings of one listener.
struct Warnings {
    evicted: LogThrottle,
    waiting: LogThrottle,
    idle: Arc<SharedThrottle>,
}

/// Accepts TCP connections until cancelled; each gets its own task. At the cap, a new
/// connection takes the place of the one idle the longest (see the module doc).
async fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    limits: Limits,
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

/// Serves one TCP connection until EOF, error, a malformed stream, the removal of an export
/// it used, its idle timeout, or its eviction for a new connection.
///
/// The connection's reads and its quick calls run on a thread of its own with a blocking socket
/// ([`connection_thread`]); this future waits for that thread and, when it returns early (an
/// export removed) or is dropped (server shutdown), shuts the socket down so the thread's
/// blocking read returns at once.
async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Connection>,
    service: Arc<Service>,
    budget: Arc<Semaphore>,
    tracked: Tracked,
    cancel: CancellationToken,
) -> io::Result<()> {
    /// Shuts the socket down when the connection's future is dropped.
    struct ShutdownOnDrop(std::net::TcpStream);
    impl Drop for ShutdownOnDrop {
        fn drop(&mut self) {
            let _ = self.0.shutdown(std::net::Shutdown::Both);
        }
    }
    stream.set_nodelay(true)?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(SEND_TIMEOUT))?;
    let _shutdown = ShutdownOnDrop(stream.try_clone()?);
    let runtime = tokio::runtime::Handle::current();
    let (done, finished) = tokio::sync::oneshot::channel();
    let closed = conn.closed().clone();
    let evicted = tracked.live.evict.clone();
    let peer = conn.peer();
    std::thread::Builder::new()
        .name("nfs-conn".into())
        .spawn(move || {
            let r = connection_thread(stream, conn, service, budget, tracked, runtime);
            let _ = done.send(r);
        })?;
    let mut finished = finished;
    let result = tokio::select! {
        r = &mut finished => return r.unwrap_or(Ok(())),
        () = closed.cancelled() => {
            tracing::info!(client = %peer, "nfs: closing connection: an export it used was removed");
            Ok(())
        }
        () = cancel.cancelled() => Ok(()),
        // The accept loop logs why.
        () = evicted.cancelled() => Ok(()),
    };
    // Shut the socket down and join the connection's thread: its blocking read returns at once
    // and the call it runs, if any, completes first.
    drop(_shutdown);
    if tokio::time::timeout(SHUTDOWN_GRACE, finished)
        .await
        .is_err()
    {
        tracing::warn!(client = %peer, "nfs: the connection's thread did not end in time");
    }
    result
}

/// The reply stream of a connection, shared by its thread and its calls on the blocking pool.
type ReplySink = Arc<std::sync::Mutex<std::net::TcpStream>>;

/// Writes one reply; on a failure (a client gone, or not reading for [`SEND_TIMEOUT`]) the
/// stream may hold part of a record, so the connection is shut down.
fn send_reply(sink: &ReplySink, reply: &[u8]) -> io::Result<()> {
    let mut stream = sink.lock().unwrap_or_else(|p| p.into_inner());
    let sent = stream.write_all(reply);
    if sent.is_err() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    sent
}

/// Writes a READ reply's head, then its data straight from the file's pages (`sendfile`: no
/// copy into a reply buffer), then the XDR padding. The head announced the length; if the file
/// shrank meanwhile the record cannot be completed, so the connection is shut down (the client
/// sends the call again on a new one).
fn send_file_reply(sink: &ReplySink, head: Writer, data: FileData) -> io::Result<()> {
    let pad = xdr::pad(data.len);
    let head = rpc::finish_record_with(head, data.len + pad);
    let mut stream = sink.lock().unwrap_or_else(|p| p.into_inner());
    let mut send = || -> io::Result<()> {
        stream.write_all(&head)?;
        let mut offset = data.offset as libc::off_t;
        let mut left = data.len;
        while left > 0 {
            // SAFETY: valid socket and file descriptors; the kernel updates `offset`.
            let n = unsafe {
                libc::sendfile(stream.as_raw_fd(), data.file.as_raw_fd(), &mut offset, left)
            };
            match n {
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while a READ was sent",
                    ))
                }
                n => left -= n as usize,
            }
        }
        stream.write_all(&[0u8; 3][..pad])
    };
    let sent = send();
    if sent.is_err() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    sent
}

/// Reads records from a blocking socket: quick calls are answered right here, the others run on
/// the runtime's blocking pool (at most [`MAX_IN_FLIGHT`] per connection, within the shared
/// budget; the thread waits for permits, so a client cannot queue more) and answer themselves.
///
/// The socket's receive timeout keeps the idle rule: the thread returns when the connection has
/// been without a call for the tracked idle time (checked when a read times out, and after
/// every read that completed no call, so a trickled record does not keep it open).
fn connection_thread(
    stream: std::net::TcpStream,
    conn: Arc<Connection>,
    service: Arc<Service>,
    budget: Arc<Semaphore>,
    tracked: Tracked,
    runtime: tokio::runtime::Handle,
) -> io::Result<()> {
    use std::io::Read;
    let peer = conn.peer();
    let sink: ReplySink = Arc::new(std::sync::Mutex::new(stream.try_clone()?));
    let mut rd = stream;
    let Tracked {
        live,
        idle,
        idle_warnings,
    } = tracked;
    // The receive timeout now, re-armed only when it must change.
    let mut timeout = idle;
    rd.set_read_timeout(Some(timeout))?;
    let mut rearm = |rd: &std::net::TcpStream, want: Duration| -> io::Result<()> {
        let want = want.max(Duration::from_millis(1));
        if want != timeout {
            rd.set_read_timeout(Some(want))?;
            timeout = want;
        }
        Ok(())
    };
    let idle_out = |quiet: Duration, how: &str| {
        if let Some(n) = idle_warnings.hit_now() {
            tracing::info!(
                client = %peer,
                "nfs: closing connection: no call for {} s ({how}; idle_timeout_secs is {}); \
                 {n} idle connections closed since the last such line",
                quiet.as_secs(),
                idle.as_secs()
            );
        }
    };
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut records = RecordBuffer::new();
    let mut buf = vec![0u8; 256 * 1024];
    let result = loop {
        let n = match rd.read(&mut buf) {
            Ok(0) => {
                if records.is_mid_record() {
                    tracing::debug!(client = %peer, "nfs: client left in the middle of a call");
                }
                break Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let rearmed = match live.idle_for() {
                    // A call runs: not idle; look again a full period later.
                    None => rearm(&rd, idle),
                    Some(quiet) if quiet >= idle => {
                        idle_out(quiet, "the client is silent");
                        break Ok(());
                    }
                    Some(quiet) => rearm(&rd, idle - quiet),
                };
                if let Err(e) = rearmed {
                    break Err(e);
                }
                continue;
            }
            Err(e) => break Err(e),
        };
        records.extend(&buf[..n]);
        let mut called = false;
        let mut failed = None;
        loop {
            let record = match records.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    failed = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
            };
            called = true;
            live.call_started();
            if is_quick(&record) {
                let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    service.handle_on(&record, &conn)
                }));
                let sent = match reply {
                    Ok(Some(w)) => send_reply(&sink, &rpc::finish_record(w)),
                    Ok(None) => Ok(()),
                    Err(_) => {
                        tracing::error!(client = %peer, "nfs: a call panicked");
                        Ok(())
                    }
                };
                live.call_ended();
                if let Err(e) = sent {
                    failed = Some(e);
                    break;
                }
                continue;
            }
            let kib = (record.len() / 1024 + 1).min(CALL_BUDGET_KIB) as u32;
            let permits = runtime.block_on(async {
                let call = Arc::clone(&in_flight).acquire_owned().await.ok()?;
                let bytes = Arc::clone(&budget).acquire_many_owned(kib).await.ok()?;
                Some((call, bytes))
            });
            let Some(permits) = permits else {
                live.call_ended();
                failed = Some(io::Error::other("nfs: call limits closed"));
                break;
            };
            let service = Arc::clone(&service);
            let sink = Arc::clone(&sink);
            let conn = Arc::clone(&conn);
            let live = Arc::clone(&live);
            runtime.spawn_blocking(move || {
                let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    service.handle_with_file_on(&record, &conn)
                }));
                // A failed send means the client is gone; the reader sees it too.
                match reply {
                    Ok(Some(Reply::Bytes(w))) => {
                        let _ = send_reply(&sink, &rpc::finish_record(w));
                    }
                    Ok(Some(Reply::WithFile(head, data))) => {
                        let _ = send_file_reply(&sink, head, data);
                    }
                    Ok(None) => {}
                    Err(_) => tracing::error!(client = %peer, "nfs: a call panicked"),
                }
                live.call_ended();
                drop(permits);
            });
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if called {
            if let Err(e) = rearm(&rd, idle) {
                break Err(e);
            }
        } else if let Some(quiet) = live.idle_for().filter(|q| *q >= idle) {
            idle_out(quiet, "only part of a call arrived");
            break Ok(());
        }
    };
    // Let calls already received finish and be answered before the socket closes.
    let _ = runtime.block_on(in_flight.acquire_many(MAX_IN_FLIGHT as u32));
    let _ = sink.lock().unwrap_or_else(|p| p.into_inner()).flush();
    result
}

/// Whether a call is answered inline by the connection's thread: lookups, attributes and
/// directory listings touch only cached metadata (microseconds), and a hop to the blocking pool
/// costs more than the call itself (measured: four futex waits per call, and a recursive
/// listing is thousands of calls one after the other). Listings also keep their directory
/// stream open between pages in a per-thread cache (see [`super::fs::Export::readdir`]).
/// READ, WRITE, COMMIT and every change go to the blocking pool, so a client's pipelined I/O
/// runs in parallel. The one slow thing a quick call can do, walking an export for handles
/// unknown after a restart, happens at most once per [`super::fs::RESCAN_INTERVAL`] per export.
fn is_quick(record: &[u8]) -> bool {
    let word = |i: usize| {
        record
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (word(12), word(20)) {
        (Some(NFS_PROGRAM), Some(proc_)) => matches!(proc_, 0 | 1 | 3 | 4 | 5 | 16..=20),
        _ => true,
    }
}

/// Answers RPC datagrams (portmap over UDP) until cancelled.
async fn serve_udp(socket: UdpSocket, service: Arc<Service>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    if let Some(reply) = service.handle(&buf[..n], peer.ip()) {
                        let _ = socket.send_to(&rpc::finish_datagram(reply), peer).await;
                    }
                }
                Err(e) => {
                    tracing::debug!("nfs: portmap receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nfs::config::{ExportConfig, NfsConfig};
    use crate::nfs::xdr::Reader;
    use crate::ServerError;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn null_call(xid: u32) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(0).u32(xid).u32(0).u32(2).u32(100_003).u32(3).u32(0);
        w.u32(0).u32(0).u32(0).u32(0);
        let mut b = w.into_bytes();
        let mark = (b.len() as u32 - 4) | 0x8000_0000;
        b[..4].copy_from_slice(&mark.to_be_bytes());
        b
    }

    #[tokio::test]
    async fn serves_until_shutdown_then_returns() {
        let d = tempfile::tempdir().unwrap();
        let config = NfsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            exports: vec![ExportConfig::parse_spec(&format!("/a={}", d.path().display())).unwrap()],
            ..NfsConfig::default()
        };
        let server = NfsServer::new(NfsSettings::try_from(config).unwrap()).unwrap();
        let table = server.table();
        let listener = server.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));

        // Two pipelined NULL calls on one connection, answered on the current-thread runtime.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut calls = null_call(7);
        calls.extend(null_call(8));
        s.write_all(&calls).await.unwrap();
        let mut xids = Vec::new();
        for _ in 0..2 {
            let mut mark = [0u8; 4];
            s.read_exact(&mut mark).await.unwrap();
            let mut reply = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
            s.read_exact(&mut reply).await.unwrap();
            xids.push(Reader::new(&reply).u32("xid").unwrap());
        }
        xids.sort();
        assert_eq!(xids, [7, 8]);

        // The table handed out is the one served.
        assert_eq!(table.names(), ["/a"]);
        assert!(table.remove("/a"));

        stop.send(()).unwrap();
        tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), run)
            .await
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
        // The open connection was closed by the shutdown.
        let mut buf = [0u8; 4];
        assert_eq!(s.read(&mut buf).await.unwrap_or(0), 0);
    }

    /// An RPC call as root with AUTH_SYS.
    fn call(xid: u32, prog: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut cred = Writer::new();
        cred.u32(0).opaque(b"test").u32(0).u32(0).u32(0);
        let mut w = Writer::new();
        w.u32(0).u32(xid).u32(0).u32(2).u32(prog).u32(3).u32(proc_);
        w.u32(1).opaque(&cred.into_bytes()).u32(0).u32(0);
        w.fixed(args);
        let mut b = w.into_bytes();
        let mark = (b.len() as u32 - 4) | 0x8000_0000;
        b[..4].copy_from_slice(&mark.to_be_bytes());
        b
    }

    /// Sends `call` and returns the results after the accepted-SUCCESS header.
    async fn roundtrip(s: &mut TcpStream, xid: u32, call: &[u8]) -> Vec<u8> {
        s.write_all(call).await.unwrap();
        let mut mark = [0u8; 4];
        s.read_exact(&mut mark).await.unwrap();
        let mut record = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
        s.read_exact(&mut record).await.unwrap();
        let mut r = Reader::new(&record);
        assert_eq!(r.u32("xid").unwrap(), xid);
        assert_eq!(r.u32("mtype").unwrap(), 1);
        assert_eq!(r.u32("stat").unwrap(), 0);
        r.u32("verf.flavor").unwrap();
        r.opaque(400, "verf.body").unwrap();
        assert_eq!(r.u32("accept_stat").unwrap(), 0);
        record[record.len() - r.remaining()..].to_vec()
    }

    /// Whether the server closed `s` (EOF or reset) within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(within, s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    struct Running {
        addr: std::net::SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
        run: tokio::task::JoinHandle<Result<(), ServerError>>,
        _dir: tempfile::TempDir,
    }

    /// A server on 127.0.0.1 exporting an empty `/a`, with `tweak` applied to its config.
    async fn start(tweak: impl FnOnce(&mut NfsConfig)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NfsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            exports: vec![
                ExportConfig::parse_spec(&format!("/a={}", dir.path().display())).unwrap(),
            ],
            ..NfsConfig::default()
        };
        tweak(&mut config);
        let server = NfsServer::new(NfsSettings::try_from(config).unwrap()).unwrap();
        let listener = server.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop,
            run,
            _dir: dir,
        }
    }

    impl Running {
        async fn stop(self) {
            self.stop.send(()).unwrap();
            tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), self.run)
                .await
                .expect("run returns after shutdown")
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn at_the_cap_a_new_client_takes_the_place_of_the_longest_idle_connection() {
        let log = crate::testlog::Captured::start();
        let server = start(|c| c.max_connections = 4).await;
        // A board's connection that made a call, then stays quiet.
        let mut board = TcpStream::connect(server.addr).await.unwrap();
        roundtrip(&mut board, 9, &call(9, NFS_PROGRAM, 0, &[])).await;
        // Ten connections that never send an RPC: with the board's, the first three fill the
        // cap; each later one closes the silent connection idle the longest.
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // A real client is served within seconds: NULL, then MOUNT of /a.
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            let mut c = TcpStream::connect(server.addr).await.unwrap();
            assert!(roundtrip(&mut c, 1, &call(1, NFS_PROGRAM, 0, &[]))
                .await
                .is_empty());
            let mut path = Writer::new();
            path.opaque(b"/a");
            let mnt = roundtrip(&mut c, 2, &call(2, 100_005, 1, &path.into_bytes())).await;
            assert_eq!(Reader::new(&mnt).u32("mountstat3").unwrap(), 0, "MNT /a");
            c
        })
        .await
        .expect("a new client is served while idle connections fill the cap");
        // 12 connections for 4 places: 8 silent ones were closed; the board's and the client's
        // stay open.
        let mut closed = 0;
        for s in &mut idle {
            if closed_within(s, Duration::from_millis(300)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 8);
        roundtrip(&mut board, 10, &call(10, NFS_PROGRAM, 0, &[])).await;
        // The evictions were logged once (throttled), naming the cap.
        let evictions: Vec<String> = log
            .lines()
            .into_iter()
            .filter(|l| l.contains("closed the one idle the longest"))
            .collect();
        assert_eq!(evictions.len(), 1, "{evictions:#?}");
        assert!(
            evictions[0].starts_with("WARN")
                && evictions[0].contains("nfs: 4 connections open (max_connections)"),
            "{}",
            evictions[0]
        );
        drop(served);
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_without_a_call_are_closed_after_the_idle_timeout() {
        let server = start(|c| c.idle_timeout_secs = 1).await;
        // One connection sends nothing, one trickles a record that never completes, one calls
        // NULL every 100 ms.
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut trickle = TcpStream::connect(server.addr).await.unwrap();
        let mut busy = TcpStream::connect(server.addr).await.unwrap();
        trickle
            .write_all(&(100u32 | 0x8000_0000).to_be_bytes())
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut xid = 0;
        let mut trickle_closed = false;
        while started.elapsed() < Duration::from_millis(2500) {
            xid += 1;
            roundtrip(&mut busy, xid, &call(xid, NFS_PROGRAM, 0, &[])).await;
            if !trickle_closed {
                trickle_closed = trickle.write_all(b"x").await.is_err()
                    || closed_within(&mut trickle, Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            closed_within(&mut silent, Duration::from_secs(10)).await,
            "silent one closed"
        );
        assert!(
            trickle_closed || closed_within(&mut trickle, Duration::from_secs(10)).await,
            "trickling one closed"
        );
        // The busy one is still served.
        xid += 1;
        roundtrip(&mut busy, xid, &call(xid, NFS_PROGRAM, 0, &[])).await;
        server.stop().await;
    }
}
