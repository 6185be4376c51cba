//! The socket side: the accept loop and, per connection, the handshake driver; the transmission
//! phase runs on threads of its own (`transmit`). The protocol itself lives in
//! [`super::handshake`], [`super::codec`] and [`super::dispatch`]; this file only moves bytes
//! and tasks.
//!
//! Per connection, one tokio task drives the handshake. Once an export is selected it hands the
//! socket to the connection's worker threads, which answer requests concurrently and send each
//! reply when it is finished (the protocol matches them by handle), and waits for them to end or
//! for the export's removal or the server's shutdown, which shut the socket down. Payload bytes
//! in flight per connection are bounded by [`IN_FLIGHT_BYTES`], so a client that pipelines
//! without reading replies stalls itself, not the server, and across all connections by
//! [`NbdSettings::max_bytes_in_flight`] ([`SharedBudget`]), so many such clients together
//! cannot pin the server's memory either. Sockets get `TCP_NODELAY`: replies are
//! whole messages and a client waits for each one.
//!
//! Limits at accept: at most [`NbdSettings::max_connections`] connections at once, and at most
//! [`NbdSettings::max_handshakes_per_client`] of one client address in the handshake (connected,
//! no export selected yet; each handshake ends after [`HANDSHAKE_TIMEOUT`] at the latest), so a
//! client that opens connections and never negotiates cannot take every slot from the boards.
//! A connection over either limit is closed at once; the warnings about them are throttled
//! ([`crate::throttle`]), one a minute per limit, with the number refused meanwhile.
//!
//! Shutdown: [`NbdServer::run`] stops accepting when its shutdown future completes, closes every
//! connection, waits up to [`SHUTDOWN_GRACE`] for their tasks, and returns. Removing an export
//! from the [`ExportTable`] closes that export's connections the same way.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::budget::SharedBudget;
use super::codec::{CodecError, ReplyEncoder};
use super::config::NbdSettings;
use super::export::{Backend, Export};
use super::handshake::{greeting, Handshake, HandshakeError, Progress, Selected};
use super::table::ExportTable;
use crate::error::ServerError;
use crate::throttle::{LogThrottle, LOG_INTERVAL};

pub use crate::common::SHUTDOWN_GRACE;

/// How long a client may take from connecting to selecting an export.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Payload bytes (read replies being built or sent, writes being applied) per connection.
pub const IN_FLIGHT_BYTES: usize = 64 << 20;

/// An NBD server: settings and the export table it serves.
#[derive(Debug)]
pub struct NbdServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: NbdSettings,
    table: ExportTable,
    /// Payload bytes in flight across every connection.
    budget: Arc<SharedBudget>,
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("connection closed in the middle of a request")]
    Truncated,
}

/// How a connection in transmission ended without an error.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ending {
    Disconnect,
    Closed,
    Removed,
    Shutdown,
    WriterFailed,
}

impl NbdServer {
    /// A server with the settings' exports opened into a new table; fails naming the file that
    /// cannot be opened.
    pub fn new(settings: NbdSettings) -> Result<NbdServer, ServerError> {
        let table = ExportTable::new();
        for spec in settings.exports() {
            let export = Export::open(&spec.name, &spec.path, spec.mode)
                .map_err(|error| ServerError::Export {
                    server: "nbd",
                    name: spec.name.clone(),
                    error,
                })?
                .with_allowed_clients(spec.allow.clone())
                .with_description(spec.description.clone());
            table
                .add(export)
                .map_err(|e| ServerError::Config(e.to_string()))?;
        }
        Ok(NbdServer::with_table(settings, table))
    }

    /// A server for an existing table (the settings' own export list is not opened).
    pub fn with_table(settings: NbdSettings, table: ExportTable) -> NbdServer {
        let budget = Arc::new(SharedBudget::new(settings.max_bytes_in_flight()));
        NbdServer {
            shared: Arc::new(Shared {
                settings,
                table,
                budget,
            }),
        }
    }

    /// A handle on the export table: add or remove exports through it while the server runs.
    pub fn table(&self) -> ExportTable {
        self.shared.table.clone()
    }

    /// The server-wide budget of payload bytes in flight (its peak and waits, for tests and
    /// metrics).
    pub fn budget(&self) -> Arc<SharedBudget> {
        Arc::clone(&self.shared.budget)
    }

    /// The settings this server runs with.
    pub fn settings(&self) -> &NbdSettings {
        &self.shared.settings
    }

    /// Binds the listening socket to the configured address.
    pub async fn bind(&self) -> Result<TcpListener, ServerError> {
        let addr = self.shared.settings.listen();
        TcpListener::bind(addr)
            .await
            .map_err(ServerError::bind("nbd", addr))
    }

    /// Serves connections arriving on `listener` until `shutdown` completes.
    ///
    /// Logs `nbd: listening on ADDR (N exports)` at info once running.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let local = listener
            .local_addr()
            .map_err(ServerError::io("nbd: cannot read the listener's address"))?;
        tracing::info!(
            "nbd: listening on {local} ({} exports)",
            self.shared.table.names().len()
        );
        let max = self.shared.settings.max_connections();
        let per_client = self.shared.settings.max_handshakes_per_client();
        let permits = Arc::new(Semaphore::new(max));
        let handshaking = Handshaking::default();
        let mut full = LogThrottle::new(LOG_INTERVAL);
        let mut busy_client = LogThrottle::new(LOG_INTERVAL);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = res {
                        if e.is_panic() {
                            tracing::error!("nbd: a connection task panicked: {e}");
                        }
                    }
                }
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let ip = peer.ip().to_canonical();
                        let Some(slot) = handshaking.enter(ip, per_client) else {
                            if let Some(n) = busy_client.hit_now() {
                                tracing::warn!(
                                    client = %peer,
                                    "nbd: refused connection: {per_client} connections from {ip} \
                                     are in the handshake already \
                                     (max_handshakes_per_client); {n} refused for this since the last warning"
                                );
                            }
                            continue;
                        };
                        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                            if let Some(n) = full.hit_now() {
                                tracing::warn!(
                                    client = %peer,
                                    "nbd: refused connection: {max} connections open \
                                     (max_connections); {n} refused for this since the last warning"
                                );
                            }
                            continue;
                        };
                        let shared = Arc::clone(&self.shared);
                        let stop = stop.child_token();
                        tasks.spawn(async move {
                            serve(&shared, stream, peer, slot, stop).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // E.g. EMFILE: wait a little instead of spinning.
                        tracing::warn!("nbd: accept on {local} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        tracing::info!("nbd: shutting down ({} connections open)", tasks.len());
        stop.cancel();
        crate::common::drain(&mut tasks, SHUTDOWN_GRACE, "nbd", "connections").await;
        Ok(())
    }
}

/// Connections in the handshake, per client address.
#[derive(Debug, Clone, Default)]
struct Handshaking(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection in the handshake; counted out when dropped.
#[derive(Debug)]
struct HandshakeSlot {
    handshaking: Handshaking,
    ip: IpAddr,
}

impl Handshaking {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection from `ip`, unless `max` of its connections hold one.
    fn enter(&self, ip: IpAddr, max: usize) -> Option<HandshakeSlot> {
        let mut map = self.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot {
            handshaking: self.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut map = self.handshaking.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// One connection from accept to close; every way it ends is logged. `slot` counts it among
/// its client's handshakes until an export is selected.
async fn serve(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    slot: HandshakeSlot,
    stop: CancellationToken,
) {
    let _counted = crate::metrics::METRICS.nbd.connection();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(client = %peer, "nbd: cannot set TCP_NODELAY: {e}");
    }
    let (mut rd, mut wr) = stream.into_split();
    let negotiated = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(shared, peer, &mut rd, &mut wr)) => r,
    };
    let (selected, leftover) = match negotiated {
        Err(_) => {
            tracing::warn!(client = %peer, "nbd: handshake timed out after {HANDSHAKE_TIMEOUT:?}");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(client = %peer, "nbd: closing connection: {e}");
            return;
        }
        Ok(Ok(None)) => {
            tracing::debug!(client = %peer, "nbd: client left during the handshake");
            return;
        }
        Ok(Ok(Some(s))) => s,
    };
    drop(slot);
    let name = selected.name.clone();
    let Some(attachment) = shared.table.attach(&name, peer.ip().to_canonical()) else {
        tracing::warn!(client = %peer, export = %name, "nbd: export removed during the handshake");
        return;
    };
    let export = Arc::clone(attachment.export());
    tracing::info!(
        client = %peer,
        export = %name,
        "nbd: connected ({}, {} bytes{})",
        export.mode(),
        export.size(),
        if selected.structured { ", structured replies" } else { "" }
    );
    let backend = Arc::new(export.connect(shared.settings.overlay()));
    let result = transmit(
        rd,
        wr,
        leftover,
        backend,
        ReplyEncoder::new(selected.structured),
        peer,
        name.clone(),
        super::transmit::ConnLimits {
            budget: Arc::clone(&shared.budget),
            send_timeout: shared.settings.send_timeout(),
        },
        attachment.removed(),
        &stop,
    )
    .await;
    match result {
        Ok(Ending::Disconnect) => {
            tracing::info!(client = %peer, export = %name, "nbd: disconnected")
        }
        Ok(Ending::Closed) => {
            tracing::info!(client = %peer, export = %name, "nbd: client closed the connection")
        }
        Ok(Ending::Removed) => {
            tracing::info!(client = %peer, export = %name, "nbd: closed: export removed")
        }
        Ok(Ending::Shutdown) => {
            tracing::info!(client = %peer, export = %name, "nbd: closed: server shutting down")
        }
        Ok(Ending::WriterFailed) => {
            tracing::info!(client = %peer, export = %name, "nbd: closed: cannot send replies")
        }
        Err(e) => tracing::warn!(client = %peer, export = %name, "nbd: closing connection: {e}"),
    }
    drop(attachment);
}

/// Drives the [`Handshake`] over the socket; `None` when the client left or aborted.
async fn handshake(
    shared: &Shared,
    peer: SocketAddr,
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
) -> Result<Option<(Selected, BytesMut)>, ConnError> {
    wr.write_all(&greeting()).await?;
    let catalog = shared.table.catalog(peer.ip().to_canonical());
    let mut hs = Handshake::new();
    let mut input = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    loop {
        let step = hs.step(&mut input, &catalog, &mut out);
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        match step? {
            Progress::NeedMore => {
                if rd.read_buf(&mut input).await? == 0 {
                    return Ok(None);
                }
            }
            Progress::Continue => {}
            Progress::Abort => return Ok(None),
            Progress::Selected(s) => return Ok(Some((s, input))),
        }
    }
}

/// Hands the negotiated socket to the transmission threads (`transmit`) and waits until
/// they are done, or closes the socket when the export is removed or the server stops.
#[allow(clippy::too_many_arguments)]
async fn transmit(
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    leftover: BytesMut,
    backend: Arc<Backend>,
    encoder: ReplyEncoder,
    peer: SocketAddr,
    export: String,
    limits: super::transmit::ConnLimits,
    removed: &CancellationToken,
    stop: &CancellationToken,
) -> Result<Ending, ConnError> {
    let stream = rd
        .reunite(wr)
        .map_err(|_| io::Error::other("socket halves do not match"))?
        .into_std()?;
    let mut running =
        super::transmit::start(stream, leftover, backend, encoder, peer, export, limits)?;
    let ending = tokio::select! {
        r = &mut running.done => return r.unwrap_or(Ok(Ending::Closed)),
        _ = removed.cancelled() => Ending::Removed,
        _ = stop.cancelled() => Ending::Shutdown,
    };
    running.close();
    // The threads leave after the request each one holds; a pread stuck on a slow disk does
    // not hold the connection's task longer than the grace period.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut running.done).await;
    Ok(ending)
}
