//! The socket loop: one UDP socket for requests, one task (plus, for reads, a thread while the
//! client answers) and one ephemeral socket per transfer.
//!
//! The request socket only parses requests, confines names, enforces the transfer caps and
//! spawns; it never opens a file, so one slow resolver cannot delay other clients. Each transfer
//! binds its own socket on the same address with a new port (its TID, RFC 1350) and `connect`s
//! it to the client: the kernel then hands it the client's datagrams only, and an ICMP "port
//! unreachable" from a client that went away ends the transfer at once instead of after all
//! retries.
//!
//! Two caps bound what clients can hold: `max_transfers` in total ("server busy: N transfers in
//! progress") and `max_transfers_per_client` per client address ("too many transfers from this
//! address: N in progress"), so one address flooding requests leaves the other boards their
//! slots. Both refusals are ERROR packets (code 0) with the reason, and both warnings are
//! throttled. A transfer whose client never answers costs a few KiB while it waits (its thread
//! ends and its read-ahead is released, see [`super::sender`]) and is ended by its
//! retransmission budget (`timeout_ms`, doubling up to `max_timeout_ms`, `retries` times).
//!
//! Datagrams from any other address or port reach a second, unconnected socket bound to the
//! same address and port (`SO_REUSEADDR` on both; for a datagram from the client the connected
//! socket's exact match wins, so the data path never sees strays). The transfer's task answers
//! them with ERROR 5 "unknown transfer ID" (RFC 1350 §4: "an error packet should be sent to the
//! source of the incorrect packet, while not disturbing the transfer"), except ERROR packets,
//! which get no answer so that two servers cannot play ping-pong; the transfer goes on. The
//! warning about them is throttled ([`crate::throttle`]), one a minute for the whole server.
//!
//! Names chosen by clients appear in messages and logs cut to
//! [`NAME_SHOWN_CHARS`](super::error::NAME_SHOWN_CHARS) characters, and every ERROR packet is at
//! most 512 bytes ([`TftpError::to_packet`]).
//!
//! The protocol itself lives in [`super::transfer`] and
//! [`super::receive`]; this file only moves bytes and keeps time. The data path of a read runs
//! on a thread of its own with blocking calls while the client answers ([`super::sender`] says
//! why); the request socket and uploads stay on tokio.
//!
//! Shutdown: [`TftpServer::run`] stops taking requests when its shutdown future completes, tells
//! every transfer to send an ERROR and stop, waits up to [`SHUTDOWN_GRACE`] for them, and returns.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::TftpSettings;
use super::content::{BlockReader, Content};
use super::error::{shown, TftpError};
use super::options::{negotiate, Direction, Negotiated};
use super::packet::{ErrorCode, Mode, Packet, Request, DATA_HEADER_LEN};
use super::path::RequestPath;
use super::receive::{Reply, WriteTransfer};
use super::resolver::{DirResolver, Resolver};
use super::sender::{self, ReadPath, Step};
use super::transfer::{Outcome, ReadTransfer, Timing};
use super::upload::{Upload, UploadDir};
use crate::error::ServerError;
use crate::metrics::METRICS;
use crate::throttle::{SharedThrottle, LOG_INTERVAL};

pub use crate::common::SHUTDOWN_GRACE;

/// Stack of a read transfer's thread: the sender needs a few KiB, glibc rounds up to pages.
const SENDER_STACK: usize = 256 * 1024;

/// Upload bytes buffered before a write to disk.
const WRITE_CHUNK: usize = 256 * 1024;

/// A TFTP server: settings, where files come from, and where uploads go.
pub struct TftpServer {
    shared: Arc<Shared>,
}

struct Shared {
    settings: TftpSettings,
    resolver: Arc<dyn Resolver>,
    uploads: Option<UploadDir>,
    /// Transfers in progress per client address.
    clients: ClientCounts,
    /// Warnings about datagrams from foreign ports, over all transfers.
    strays: SharedThrottle,
    /// Warnings about requests refused by `max_transfers`.
    busy: SharedThrottle,
    /// Warnings about requests refused by `max_transfers_per_client`.
    busy_client: SharedThrottle,
    /// Warnings about names refused as access violations (`..`, control characters, …).
    escapes: SharedThrottle,
    /// Warnings about write requests while writes are disabled.
    writes_off: SharedThrottle,
    /// Warnings about reads the client stopped answering or that were aborted.
    abandoned: SharedThrottle,
}

impl std::fmt::Debug for TftpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpServer")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl TftpServer {
    /// A server answering reads from `resolver`, and writes into the settings' upload root if any.
    pub fn new(settings: TftpSettings, resolver: impl Resolver) -> io::Result<TftpServer> {
        let uploads = settings.upload_root().map(UploadDir::new).transpose()?;
        Ok(TftpServer {
            shared: Arc::new(Shared {
                settings,
                resolver: Arc::new(resolver),
                uploads,
                clients: ClientCounts::default(),
                strays: SharedThrottle::new(LOG_INTERVAL),
                busy: SharedThrottle::new(LOG_INTERVAL),
                busy_client: SharedThrottle::new(LOG_INTERVAL),
                escapes: SharedThrottle::new(LOG_INTERVAL),
                writes_off: SharedThrottle::new(LOG_INTERVAL),
                abandoned: SharedThrottle::new(LOG_INTERVAL),
            }),
        })
    }

    /// A server for the settings' root directory alone (what `labboot tftp` runs).
    pub fn serving_root(settings: TftpSettings) -> io::Result<TftpServer> {
        let resolver = DirResolver::new(settings.root())?;
        TftpServer::new(settings, resolver)
    }

    /// The settings this server runs with.
    pub fn settings(&self) -> &TftpSettings {
        &self.shared.settings
    }

    /// Binds the request socket to the configured listen address.
    pub async fn bind(&self) -> Result<UdpSocket, ServerError> {
        let addr = self.shared.settings.listen();
        UdpSocket::bind(addr)
            .await
            .map_err(ServerError::bind("tftp", addr))
    }

    /// Serves requests arriving on `socket` until `shutdown` completes.
    ///
    /// Logs `tftp: listening on ADDR (root DIR)` at info once running.
    pub async fn run(
        self,
        socket: UdpSocket,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let local = socket
            .local_addr()
            .map_err(ServerError::io("tftp: cannot read the socket's address"))?;
        tracing::info!(
            "tftp: listening on {local} (root {})",
            self.shared.settings.root().display()
        );
        let max = self.shared.settings.max_transfers();
        let permits = Arc::new(Semaphore::new(max));
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // Requests are small (RFC 2347 asks for at most 512 bytes); take anything up to 64 KiB.
        let mut buf = vec![0u8; 65536];
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = res {
                        if e.is_panic() {
                            tracing::error!("tftp: a transfer task panicked: {e}");
                        }
                    }
                }
                r = socket.recv_from(&mut buf) => match r {
                    Ok((n, peer)) => {
                        let ctx = RequestContext {
                            shared: &self.shared,
                            socket: &socket,
                            local_ip: local.ip(),
                            permits: &permits,
                            cancel: &cancel,
                        };
                        if let Some(job) = ctx.on_datagram(&buf[..n], peer).await {
                            tasks.spawn(job);
                        }
                    }
                    Err(e) => {
                        // E.g. ECONNREFUSED echoed from an earlier ERROR; never fatal.
                        tracing::debug!("tftp: receive on {local} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                },
            }
        }
        tracing::info!(
            "tftp: shutting down ({} transfers in progress)",
            tasks.len()
        );
        cancel.cancel();
        crate::common::drain(&mut tasks, SHUTDOWN_GRACE, "tftp", "transfers").await;
        Ok(())
    }
}

/// Everything the request socket needs to triage one datagram.
struct RequestContext<'a> {
    shared: &'a Arc<Shared>,
    socket: &'a UdpSocket,
    local_ip: IpAddr,
    permits: &'a Arc<Semaphore>,
    cancel: &'a CancellationToken,
}

type Job = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl RequestContext<'_> {
    /// Parses and checks a request; returns the transfer task to spawn, or answers/drops it.
    async fn on_datagram(&self, bytes: &[u8], peer: SocketAddr) -> Option<Job> {
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                let is_request = matches!(bytes, [0, 1 | 2, ..]);
                tracing::warn!(client = %peer, "tftp: malformed request: {e}");
                if is_request {
                    self.refuse(peer, &TftpError::illegal_operation(e.to_string()))
                        .await;
                }
                return None;
            }
        };
        let (request, write) = match packet {
            Packet::Read(r) => (r, false),
            Packet::Write(r) => (r, true),
            other => {
                // ACK/DATA/ERROR on the request port: a stray from an old transfer. Answering
                // could start a ping-pong with another server, so stay silent.
                tracing::debug!(client = %peer, "tftp: ignored {other:?} on the request port");
                return None;
            }
        };
        let kind = if write { "write" } else { "read" };
        let path = match RequestPath::parse(&request.filename) {
            Ok(p) => p,
            Err(e) => {
                if e.code == ErrorCode::AccessViolation {
                    match self.shared.escapes.hit_now() {
                        Some(count) => tracing::warn!(
                            client = %peer,
                            filename = ?shown(&request.filename), len = request.filename.len(),
                            "tftp: refused {kind} request: {}; {count} refused for this since the last warning",
                            e.message
                        ),
                        None => tracing::debug!(
                            client = %peer,
                            filename = ?shown(&request.filename), len = request.filename.len(),
                            "tftp: refused {kind} request: {}", e.message
                        ),
                    }
                } else {
                    tracing::info!(client = %peer, filename = ?shown(&request.filename), len = request.filename.len(), "tftp: {}", e.message);
                }
                self.refuse(peer, &e).await;
                return None;
            }
        };
        if write && self.shared.uploads.is_none() {
            match self.shared.writes_off.hit_now() {
                Some(count) => tracing::warn!(
                    client = %peer, path = %path.shown(),
                    "tftp: refused write request: writes are disabled (no upload_root); \
                     {count} refused for this since the last warning"
                ),
                None => tracing::debug!(
                    client = %peer, path = %path.shown(),
                    "tftp: refused write request: writes are disabled"
                ),
            }
            self.refuse(
                peer,
                &TftpError::access_violation("writes are disabled on this server"),
            )
            .await;
            return None;
        }
        let ip = peer.ip().to_canonical();
        let per_client = self.shared.settings.max_transfers_per_client();
        let slot = match self.shared.clients.enter(ip, per_client) {
            Ok(slot) => slot,
            Err(n) => {
                if let Some(count) = self.shared.busy_client.hit_now() {
                    tracing::warn!(
                        client = %peer, path = %path.shown(),
                        "tftp: refused {kind} request: {n} transfers from {ip} in progress \
                         (max_transfers_per_client); {count} refused for this since the last warning"
                    );
                }
                self.refuse(
                    peer,
                    &TftpError::new(
                        ErrorCode::NotDefined,
                        format!("too many transfers from this address: {n} in progress"),
                    ),
                )
                .await;
                return None;
            }
        };
        let Ok(permit) = Arc::clone(self.permits).try_acquire_owned() else {
            let max = self.shared.settings.max_transfers();
            if let Some(count) = self.shared.busy.hit_now() {
                tracing::warn!(
                    client = %peer, path = %path.shown(),
                    "tftp: refused {kind} request: {max} transfers in progress (max_transfers); \
                     {count} refused for this since the last warning"
                );
            }
            self.refuse(
                peer,
                &TftpError::new(
                    ErrorCode::NotDefined,
                    format!("server busy: {max} transfers in progress, try again later"),
                ),
            )
            .await;
            return None;
        };
        let transfer = Transfer {
            shared: Arc::clone(self.shared),
            local_ip: self.local_ip,
            peer,
            request,
            path,
            cancel: self.cancel.child_token(),
            _slot: slot,
            _permit: permit,
        };
        Some(if write {
            Box::pin(transfer.run_write())
        } else {
            Box::pin(transfer.run_read())
        })
    }

    async fn refuse(&self, peer: SocketAddr, error: &TftpError) {
        METRICS.tftp.refused.inc();
        if let Err(e) = self
            .socket
            .send_to(&error.to_packet().to_bytes(), peer)
            .await
        {
            tracing::debug!(client = %peer, "tftp: could not send ERROR: {e}");
        }
    }
}

/// One transfer task; dropping it (at the end, or on abort) returns its permit and its slot
/// among its client's transfers.
struct Transfer {
    shared: Arc<Shared>,
    local_ip: IpAddr,
    peer: SocketAddr,
    request: Request,
    path: RequestPath,
    cancel: CancellationToken,
    _slot: ClientSlot,
    _permit: OwnedSemaphorePermit,
}

/// Transfers in progress per client address (`max_transfers_per_client`).
#[derive(Debug, Clone, Default)]
struct ClientCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One transfer of a client; counted out when dropped.
#[derive(Debug)]
struct ClientSlot {
    counts: ClientCounts,
    ip: IpAddr,
}

impl ClientCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new transfer of `ip`, or the number it has in progress if that is `max`.
    fn enter(&self, ip: IpAddr, max: usize) -> Result<ClientSlot, usize> {
        let mut map = self.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return Err(*n);
        }
        *n += 1;
        Ok(ClientSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// The sockets of one transfer: `data` connected to the client, `strays` on the same address
/// and port for everything else (see the module doc).
struct Sockets {
    data: UdpSocket,
    strays: UdpSocket,
}

impl Transfer {
    /// The per-transfer sockets: same local address as the request socket, a new port.
    ///
    /// The data socket is bound without `SO_REUSEADDR`, so the kernel picks a port no other
    /// transfer uses, and gets it only after the bind, so that the strays socket may share it.
    fn sockets(&self) -> io::Result<Sockets> {
        use socket2::{Domain, Protocol, Socket, Type};
        let ip = match (self.local_ip, self.peer.ip()) {
            (ip, _) if !ip.is_unspecified() => ip,
            (_, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (_, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let any_port = SocketAddr::new(ip, 0);
        let new = || -> io::Result<Socket> {
            let s = Socket::new(
                Domain::for_address(any_port),
                Type::DGRAM,
                Some(Protocol::UDP),
            )?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let data = new()?;
        data.bind(&any_port.into())?;
        data.set_reuse_address(true)?;
        let local = data
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the transfer socket has no IP address"))?;
        data.connect(&self.peer.into())?;
        let strays = new()?;
        strays.set_reuse_address(true)?;
        strays.bind(&local.into())?;
        Ok(Sockets {
            data: UdpSocket::from_std(data.into())?,
            strays: UdpSocket::from_std(strays.into())?,
        })
    }

    /// Answers a datagram that reached the transfer's port from another address than the
    /// client's with ERROR 5; ERROR packets get no answer. Logged throttled.
    async fn on_stray(&self, strays: &UdpSocket, bytes: &[u8], from: SocketAddr) {
        let is_error = matches!(bytes, [0, 5, ..]);
        if !is_error {
            let e = TftpError::new(ErrorCode::UnknownTransferId, "unknown transfer ID");
            if let Err(e) = strays.send_to(&e.to_packet().to_bytes(), from).await {
                tracing::debug!(client = %from, "tftp: could not send ERROR 5: {e}");
            }
        }
        if let Some(n) = self.shared.strays.hit_now() {
            tracing::warn!(
                client = %self.peer, path = %self.path.shown(),
                "tftp: a packet from {from}, not the transfer's client, reached the transfer's \
                 port; {}; {n} such packets since the last warning",
                if is_error { "an ERROR, not answered" } else { "answered ERROR 5 (unknown transfer ID)" }
            );
        }
    }

    fn timing(&self, neg: &Negotiated) -> Timing {
        let mut t = self.shared.settings.timing();
        if let Some(client) = neg.timeout {
            t.timeout = client;
            t.max_timeout = t.max_timeout.max(client);
        }
        t
    }

    async fn send_error(&self, sock: &UdpSocket, error: &TftpError) {
        METRICS.tftp.refused.inc();
        let _ = sock.send(&error.to_packet().to_bytes()).await;
    }

    async fn run_read(self) {
        let started = Instant::now();
        let Sockets { data: sock, strays } = match self.sockets() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %self.peer, "tftp: cannot open a transfer socket: {e}");
                return;
            }
        };
        let content = match self.open().await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(client = %self.peer, path = %self.path.shown(), "tftp: read refused: {}", e.message);
                self.send_error(&sock, &e).await;
                return;
            }
        };
        let size = content.len();
        let neg = negotiate(
            &self.request.options,
            self.shared.settings.limits(),
            Direction::Read { size },
        );
        tracing::debug!(
            client = %self.peer, path = %self.path.shown(), size,
            blksize = neg.blksize, window = neg.window, "tftp: read started"
        );
        let machine = ReadTransfer::new(
            size,
            neg.blksize,
            neg.window,
            !neg.reply.is_empty(),
            self.timing(&neg),
            now(),
        );
        let reader = BlockReader::with_window(content, neg.blksize, neg.window);
        let oack = Packet::OptionAck {
            options: neg.reply.clone(),
        }
        .to_bytes();
        let sock = match sock.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %self.peer, "tftp: cannot hand the socket over: {e}");
                return;
            }
        };
        let path = ReadPath::new(sock, machine, reader, oack);
        let Some((machine, ended)) = self.drive(path, &strays).await else {
            return;
        };
        let gone = ended.gone;
        if let Some(e) = ended.read_error {
            tracing::warn!(path = %self.path.shown(), "tftp: read transfer failed: {e}");
        }
        let ms = started.elapsed().as_millis();
        let ok = !gone && matches!(machine.outcome(), Some(Outcome::Complete));
        METRICS
            .tftp
            .read_ended(ok, if ok { size } else { 0 }, machine.retransmitted());
        match (gone, machine.outcome()) {
            (true, _) => {
                tracing::info!(client = %self.peer, path = %self.path.shown(), "tftp: read ended: client went away")
            }
            (_, Some(Outcome::Complete)) => tracing::info!(
                client = %self.peer, path = %self.path.shown(), bytes = size, ms,
                blksize = neg.blksize, window = neg.window,
                retransmitted = machine.retransmitted(), "tftp: sent"
            ),
            (_, Some(Outcome::ClientError { code, message })) => tracing::info!(
                client = %self.peer, path = %self.path.shown(), "tftp: client ended the read: error {code} {:?}", shown(message)
            ),
            (_, Some(Outcome::TimedOut)) => match self.shared.abandoned.hit_now() {
                Some(count) => tracing::warn!(
                    client = %self.peer, path = %self.path.shown(),
                    "tftp: read abandoned: client stopped answering; \
                     {count} reads abandoned or aborted since the last warning"
                ),
                None => tracing::debug!(
                    client = %self.peer, path = %self.path.shown(), "tftp: read abandoned: client stopped answering"
                ),
            },
            (_, Some(Outcome::Aborted(why))) => match self.shared.abandoned.hit_now() {
                Some(count) => tracing::warn!(
                    client = %self.peer, path = %self.path.shown(),
                    "tftp: read aborted: {why}; {count} reads abandoned or aborted since the last warning"
                ),
                None => tracing::debug!(
                    client = %self.peer, path = %self.path.shown(), "tftp: read aborted: {why}"
                ),
            },
            (_, None) => {}
        }
    }

    /// Runs a read's data path to its end: on a thread of its own while the client answers,
    /// parked on this task (socket readable, retransmission deadline, shutdown) while it does
    /// not (see [`sender`]); strays are answered throughout. `None` if a thread could not be
    /// started or panicked (logged).
    async fn drive(
        &self,
        mut path: ReadPath,
        strays: &UdpSocket,
    ) -> Option<(ReadTransfer, sender::Ended)> {
        let mut buf = vec![0u8; 2048];
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let cancel = self.cancel.clone();
            let spawned = std::thread::Builder::new()
                .name("tftp-read".into())
                .stack_size(SENDER_STACK)
                .spawn(move || {
                    let step = path.run(&cancel);
                    let _ = tx.send((path, step));
                });
            if let Err(e) = spawned {
                tracing::warn!(client = %self.peer, path = %self.path.shown(), "tftp: cannot start a transfer thread: {e}");
                return None;
            }
            // Meanwhile, answer strays; the thread owns the data socket.
            let mut rx = rx;
            let done = loop {
                tokio::select! {
                    done = &mut rx => break done,
                    r = strays.recv_from(&mut buf) => match r {
                        Ok((n, from)) => self.on_stray(strays, &buf[..n], from).await,
                        Err(e) => tracing::debug!(client = %self.peer, "tftp: receive of a stray failed: {e}"),
                    },
                }
            };
            let Ok((p, step)) = done else {
                tracing::error!(client = %self.peer, path = %self.path.shown(), "tftp: the transfer thread panicked");
                return None;
            };
            path = p;
            if let Step::Ended(ended) = step {
                return Some((path.machine, ended));
            }
            // Parked: no thread until the client speaks, the deadline passes or shutdown.
            let Some(deadline) = path.machine.deadline() else {
                continue;
            };
            let registered = path
                .sock
                .set_nonblocking(true)
                .and_then(|()| UdpSocket::from_std(path.sock));
            let sock = match registered {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(client = %self.peer, "tftp: cannot wait on a transfer socket: {e}");
                    return None;
                }
            };
            let sleep = tokio::time::sleep_until(Instant::from_std(deadline));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    // Readable, or an ICMP error queued (the client went away).
                    _ = sock.ready(Interest::READABLE | Interest::ERROR) => break,
                    _ = &mut sleep => break,
                    _ = self.cancel.cancelled() => break,
                    r = strays.recv_from(&mut buf) => match r {
                        Ok((n, from)) => self.on_stray(strays, &buf[..n], from).await,
                        Err(e) => tracing::debug!(client = %self.peer, "tftp: receive of a stray failed: {e}"),
                    },
                }
            }
            path.sock = match sock.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(client = %self.peer, "tftp: cannot hand the socket over: {e}");
                    return None;
                }
            };
        }
    }

    /// Asks the resolver (on the blocking pool) and applies netascii if asked for.
    async fn open(&self) -> Result<Content, TftpError> {
        let resolver = Arc::clone(&self.shared.resolver);
        let peer = self.peer;
        let path = self.path.clone();
        let mode = self.request.mode;
        tokio::task::spawn_blocking(move || {
            let c = resolver.open(peer, &path)?;
            match mode {
                Mode::Octet => Ok(c),
                Mode::Netascii => c.to_netascii().map_err(|e| {
                    TftpError::new(ErrorCode::NotDefined, format!("{}: {e}", path.shown()))
                }),
            }
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!("tftp: resolver failed: {e}");
            Err(TftpError::new(ErrorCode::NotDefined, "internal error"))
        })
    }

    async fn run_write(self) {
        let started = Instant::now();
        let Some(uploads) = self.shared.uploads.clone() else {
            return;
        };
        let Sockets { data: sock, strays } = match self.sockets() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(client = %self.peer, "tftp: cannot open a transfer socket: {e}");
                return;
            }
        };
        let mut stray_buf = vec![0u8; 2048];
        let neg = negotiate(
            &self.request.options,
            self.shared.settings.limits(),
            Direction::Write,
        );
        let limit = self.shared.settings.max_upload_bytes();
        if neg.tsize.is_some_and(|t| t > limit) {
            let e = TftpError::new(
                ErrorCode::DiskFull,
                format!(
                    "upload of {} bytes exceeds the limit of {limit}",
                    neg.tsize.unwrap_or(0)
                ),
            );
            self.send_error(&sock, &e).await;
            return;
        }
        if self.request.mode == Mode::Netascii {
            let e = TftpError::illegal_operation("netascii uploads are not supported; use octet");
            self.send_error(&sock, &e).await;
            return;
        }
        let (peer, path) = (self.peer, self.path.clone());
        let created = tokio::task::spawn_blocking(move || uploads.create(peer, &path))
            .await
            .unwrap_or_else(|_| Err(TftpError::new(ErrorCode::NotDefined, "internal error")));
        let mut upload = match created {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::info!(client = %self.peer, path = %self.path.shown(), "tftp: write refused: {}", e.message);
                self.send_error(&sock, &e).await;
                return;
            }
        };
        let mut machine = WriteTransfer::new(
            neg.blksize,
            neg.window,
            limit,
            !neg.reply.is_empty(),
            self.timing(&neg),
            now(),
        );
        let oack = Packet::OptionAck {
            options: neg.reply.clone(),
        }
        .to_bytes();
        let mut inbuf = vec![0u8; usize::from(neg.blksize) + DATA_HEADER_LEN + 1];
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut next = Some(machine.start(now()));
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        let mut committed = false;
        loop {
            if let Some(reply) = next.take() {
                let bytes = match &reply {
                    Reply::OptionAck => oack.clone(),
                    Reply::Ack(n) => Packet::Ack { block: *n as u16 }.to_bytes(),
                    Reply::Error(e) => e.to_packet().to_bytes(),
                };
                if let Err(e) = sock.send(&bytes).await {
                    if is_gone(&e) {
                        break;
                    }
                }
            }
            let Some(deadline) = machine.deadline() else {
                break;
            };
            sleep.as_mut().reset(Instant::from_std(deadline));
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    next = Some(machine.abort(TftpError::new(ErrorCode::NotDefined, "server shutting down")));
                }
                r = sock.recv(&mut inbuf) => match r {
                    Ok(n) => match Packet::parse(&inbuf[..n]) {
                        Ok(p) => {
                            let receipt = machine.on_packet(&p, now());
                            if let (true, Packet::Data { data, .. }) = (receipt.deliver, &p) {
                                pending.extend_from_slice(data);
                            }
                            let mut reply = receipt.reply;
                            if receipt.deliver && (receipt.last || pending.len() >= WRITE_CHUNK) {
                                let res = flush(&mut upload, &mut pending, receipt.last).await;
                                match res {
                                    Ok(()) => committed |= receipt.last,
                                    Err(e) => {
                                        tracing::warn!(path = %self.path.shown(), "tftp: upload failed: {e}");
                                        reply = Some(machine.abort(TftpError::from_io(self.path.as_str(), &e)));
                                    }
                                }
                            }
                            next = reply;
                        }
                        Err(e) => tracing::debug!(client = %self.peer, "tftp: dropped malformed packet: {e}"),
                    },
                    Err(e) if is_gone(&e) => break,
                    Err(e) => tracing::debug!(client = %self.peer, "tftp: receive failed: {e}"),
                },
                _ = &mut sleep => next = machine.on_timeout(now()),
                r = strays.recv_from(&mut stray_buf) => match r {
                    Ok((n, from)) => self.on_stray(&strays, &stray_buf[..n], from).await,
                    Err(e) => tracing::debug!(client = %self.peer, "tftp: receive of a stray failed: {e}"),
                },
            }
        }
        METRICS.tftp.write_ended(committed, machine.bytes());
        if committed {
            tracing::info!(
                client = %self.peer, path = %self.path.shown(), bytes = machine.bytes(),
                ms = started.elapsed().as_millis(), "tftp: received"
            );
        } else {
            tracing::warn!(
                client = %self.peer, path = %self.path.shown(), outcome = ?machine.outcome(),
                "tftp: upload not completed; nothing was kept"
            );
        }
    }
}

/// Writes buffered upload bytes on the blocking pool; commits the file when `last`.
async fn flush(upload: &mut Option<Upload>, pending: &mut Vec<u8>, last: bool) -> io::Result<()> {
    let u = upload
        .take()
        .ok_or_else(|| io::Error::other("upload already finished"))?;
    let buf = std::mem::take(pending);
    let (u, buf, res) = tokio::task::spawn_blocking(move || {
        let mut u = u;
        let res = u.write(&buf);
        if res.is_err() || !last {
            return (Some(u), buf, res);
        }
        (None, buf, u.commit().map(drop))
    })
    .await
    .map_err(io::Error::other)?;
    *upload = u;
    *pending = buf;
    pending.clear();
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::config::TftpConfig;

    /// What came back on `s` within `wait`: (opcode, the ERROR's message).
    async fn reply(s: &UdpSocket, wait: Duration) -> Option<(u16, String)> {
        let mut buf = [0u8; 600];
        let n = tokio::time::timeout(wait, s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        let message = match Packet::parse(&buf[..n]) {
            Ok(Packet::Error { message, .. }) => message,
            _ => String::new(),
        };
        Some((op, message))
    }

    #[tokio::test]
    async fn the_per_client_cap_refuses_with_the_reason_and_warns_once() {
        let log = crate::testlog::Captured::start();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), vec![1u8; 5000]).unwrap();
        let mut config = TftpConfig::new(root.path());
        config.max_transfers_per_client = 3;
        config.timeout_ms = 5000;
        let server = TftpServer::serving_root(TftpSettings::try_from(config).unwrap()).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(server.run(socket, stop.clone().cancelled_owned()));
        // Ten requests from 127.0.0.1 that are never acknowledged.
        let mut clients = Vec::new();
        for _ in 0..10 {
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(b"\0\x01f\0octet\0", addr).await.unwrap();
            clients.push(c);
        }
        let mut replies = Vec::new();
        for c in &clients {
            replies.push(reply(c, Duration::from_secs(5)).await.expect("an answer"));
        }
        let served = replies.iter().filter(|r| r.0 == 3).count();
        let refused: Vec<&(u16, String)> = replies.iter().filter(|r| r.0 == 5).collect();
        assert_eq!((served, refused.len()), (3, 7), "{replies:?}");
        for r in refused {
            assert_eq!(r.1, "too many transfers from this address: 3 in progress");
        }
        // One warning for the seven refusals (throttled), naming the address and the setting.
        let warnings: Vec<String> = log
            .lines()
            .into_iter()
            .filter(|l| l.contains("max_transfers_per_client"))
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("WARN")
                && warnings[0].contains("3 transfers from 127.0.0.1 in progress"),
            "{}",
            warnings[0]
        );
        stop.cancel();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn repeated_escapes_and_writes_warn_once_a_minute() {
        let log = crate::testlog::Captured::start();
        let root = tempfile::tempdir().unwrap();
        let server =
            TftpServer::serving_root(TftpSettings::try_from(TftpConfig::new(root.path())).unwrap())
                .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = CancellationToken::new();
        let running = tokio::spawn(server.run(socket, stop.clone().cancelled_owned()));
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..20 {
            c.send_to(b"\0\x01../etc/passwd\0octet\0", addr)
                .await
                .unwrap();
            assert_eq!(reply(&c, Duration::from_secs(5)).await.unwrap().0, 5);
            c.send_to(b"\0\x02up\0octet\0", addr).await.unwrap();
            let (op, message) = reply(&c, Duration::from_secs(5)).await.unwrap();
            assert_eq!(
                (op, message.as_str()),
                (5, "writes are disabled on this server")
            );
        }
        let lines = log.lines();
        let warned = |needle: &str| {
            lines
                .iter()
                .filter(|l| l.starts_with("WARN") && l.contains(needle))
                .count()
        };
        // Each kind is told once (the first), the 19 others only at debug level.
        assert_eq!(warned("refused read request"), 1, "{lines:#?}");
        assert_eq!(warned("writes are disabled"), 1, "{lines:#?}");
        let debug = lines
            .iter()
            .filter(|l| l.starts_with("DEBUG") && l.contains("refused read request"))
            .count();
        assert_eq!(debug, 19, "{lines:#?}");
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}
