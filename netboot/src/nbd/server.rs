//! The socket side: the accept loop and, per connection, the handshake driver and the
//! transmission loop. The protocol itself lives in [`super::handshake`], [`super::codec`] and
//! [`super::dispatch`]; this file only moves bytes and tasks.
//!
//! Per connection, one task reads and decodes requests and spawns one task per request; each runs
//! its blocking file operation on tokio's blocking pool and hands the finished reply to a single
//! writer task, so replies leave in completion order (the protocol matches them by handle).
//! Payload bytes in flight per connection are bounded by [`IN_FLIGHT_BYTES`] (a semaphore whose
//! permits are returned once the reply is written), so a client that pipelines without reading
//! replies stalls itself, not the server. Sockets get `TCP_NODELAY`: replies are whole messages
//! and a client waits for each one.
//!
//! Shutdown: [`NbdServer::run`] stops accepting when its shutdown future completes, closes every
//! connection, waits up to [`SHUTDOWN_GRACE`] for their tasks, and returns. Removing an export
//! from the [`ExportTable`] closes that export's connections the same way.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use super::codec::{CodecError, Command, Reply, ReplyEncoder, RequestDecoder};
use super::config::NbdSettings;
use super::dispatch;
use super::export::{Backend, Export};
use super::handshake::{greeting, Handshake, HandshakeError, Progress, Selected};
use super::proto::errno;
use super::table::ExportTable;

/// How long shutdown waits for connections to close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a client may take from connecting to selecting an export.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Payload bytes (read replies being built or sent, writes being applied) per connection.
pub const IN_FLIGHT_BYTES: usize = 64 << 20;

/// Replies smaller than this are gathered into one write when several are waiting.
const COALESCE_BELOW: usize = 64 * 1024;

/// An NBD server: settings and the export table it serves.
#[derive(Debug)]
pub struct NbdServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: NbdSettings,
    table: ExportTable,
}

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
enum ConnError {
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
enum Ending {
    Disconnect,
    Closed,
    Removed,
    Shutdown,
    WriterFailed,
}

impl NbdServer {
    /// A server with the settings' exports opened into a new table; fails naming the file that
    /// cannot be opened.
    pub fn new(settings: NbdSettings) -> io::Result<NbdServer> {
        let table = ExportTable::new();
        for spec in settings.exports() {
            let export = Export::open(&spec.name, &spec.path, spec.mode)
                .map_err(|e| io::Error::new(e.kind(), format!("export {:?}: {e}", spec.name)))?
                .with_allowed_clients(spec.allow.clone())
                .with_description(spec.description.clone());
            table
                .add(export)
                .map_err(|e| io::Error::new(io::ErrorKind::AlreadyExists, e))?;
        }
        Ok(NbdServer::with_table(settings, table))
    }

    /// A server for an existing table (the settings' own export list is not opened).
    pub fn with_table(settings: NbdSettings, table: ExportTable) -> NbdServer {
        NbdServer {
            shared: Arc::new(Shared { settings, table }),
        }
    }

    /// A handle on the export table: add or remove exports through it while the server runs.
    pub fn table(&self) -> ExportTable {
        self.shared.table.clone()
    }

    /// The settings this server runs with.
    pub fn settings(&self) -> &NbdSettings {
        &self.shared.settings
    }

    /// Binds the listening socket to the configured address.
    pub async fn bind(&self) -> io::Result<TcpListener> {
        let addr = self.shared.settings.listen();
        TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind nbd socket {addr}: {e}")))
    }

    /// Serves connections arriving on `listener` until `shutdown` completes.
    ///
    /// Logs `nbd: listening on ADDR (N exports)` at info once running.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let local = listener.local_addr()?;
        tracing::info!(
            "nbd: listening on {local} ({} exports)",
            self.shared.table.names().len()
        );
        let max = self.shared.settings.max_connections();
        let permits = Arc::new(Semaphore::new(max));
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
                        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                            tracing::warn!(client = %peer, "nbd: refused connection: {max} connections open");
                            continue;
                        };
                        let shared = Arc::clone(&self.shared);
                        let stop = stop.child_token();
                        tasks.spawn(async move {
                            serve(&shared, stream, peer, stop).await;
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
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "nbd: {} connections did not close in time; aborted",
                tasks.len()
            );
            tasks.abort_all();
        }
        Ok(())
    }
}

/// One connection from accept to close; every way it ends is logged.
async fn serve(shared: &Shared, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
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
    let conn = Transmission {
        backend,
        encoder: ReplyEncoder::new(selected.structured),
        peer,
        export: name.clone(),
    };
    let result = conn
        .run(rd, wr, leftover, attachment.removed(), &stop)
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

/// One connection in the transmission phase.
struct Transmission {
    backend: Arc<Backend>,
    encoder: ReplyEncoder,
    peer: SocketAddr,
    export: String,
}

type Outgoing = (Bytes, OwnedSemaphorePermit);

impl Transmission {
    async fn run(
        &self,
        mut rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        mut input: BytesMut,
        removed: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<Ending, ConnError> {
        let (tx, rx) = mpsc::unbounded_channel::<Outgoing>();
        let writer_failed = CancellationToken::new();
        let mut writer = tokio::spawn(write_replies(wr, rx, writer_failed.clone()));
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
        let mut decoder = RequestDecoder::default();
        let mut tasks = JoinSet::new();
        input.reserve(256 * 1024);
        let ending = loop {
            let request = match decoder.decode(&mut input) {
                Ok(r) => r,
                Err(e) => break Err(ConnError::from(e)),
            };
            if let Some(req) = request {
                if matches!(req.command, Command::Disconnect) {
                    break Ok(Ending::Disconnect);
                }
                let cost = match &req.command {
                    Command::Read => req.len.clamp(1, super::proto::MAX_PAYLOAD),
                    Command::Write(data) => (data.len() as u32).max(1),
                    _ => 1,
                };
                let permit = tokio::select! {
                    p = Arc::clone(&in_flight).acquire_many_owned(cost) => {
                        p.expect("the in-flight semaphore is never closed")
                    }
                    _ = removed.cancelled() => break Ok(Ending::Removed),
                    _ = stop.cancelled() => break Ok(Ending::Shutdown),
                    _ = writer_failed.cancelled() => break Ok(Ending::WriterFailed),
                };
                tasks.spawn(self.request(req, tx.clone(), permit));
                while let Some(done) = tasks.try_join_next() {
                    log_panic(done, self.peer);
                }
                continue;
            }
            if input.capacity() - input.len() < 64 * 1024 {
                input.reserve(256 * 1024);
            }
            tokio::select! {
                _ = removed.cancelled() => break Ok(Ending::Removed),
                _ = stop.cancelled() => break Ok(Ending::Shutdown),
                _ = writer_failed.cancelled() => break Ok(Ending::WriterFailed),
                r = rd.read_buf(&mut input) => match r {
                    Ok(0) if input.is_empty() => break Ok(Ending::Closed),
                    Ok(0) => break Err(ConnError::Truncated),
                    Ok(_) => {}
                    Err(e) => break Err(e.into()),
                },
            }
        };
        match ending {
            Ok(Ending::Disconnect) => {
                // Requests sent before NBD_CMD_DISC still get their replies, unless the export
                // goes away or the server stops meanwhile.
                let drain = async {
                    while let Some(done) = tasks.join_next().await {
                        log_panic(done, self.peer);
                    }
                    drop(tx);
                    let _ = (&mut writer).await;
                };
                tokio::select! {
                    _ = drain => {}
                    _ = removed.cancelled() => writer.abort(),
                    _ = stop.cancelled() => writer.abort(),
                }
            }
            _ => {
                tasks.abort_all();
                writer.abort();
            }
        }
        ending
    }

    /// The task of one request: the blocking operation, then its reply to the writer.
    fn request(
        &self,
        req: super::codec::Request,
        tx: mpsc::UnboundedSender<Outgoing>,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send + 'static {
        let backend = Arc::clone(&self.backend);
        let encoder = self.encoder;
        let peer = self.peer;
        let export = self.export.clone();
        async move {
            let (handle, what, offset, len) = (
                req.handle,
                dispatch::name(&req.command),
                req.offset,
                req.len,
            );
            let done =
                tokio::task::spawn_blocking(move || dispatch::execute(req, &backend, encoder))
                    .await;
            let reply = match done {
                Ok((bytes, None)) => bytes,
                Ok((bytes, Some(e))) => {
                    tracing::info!(
                        client = %peer,
                        export = %export,
                        "nbd: {what} of {len} bytes at {offset} failed: {e}"
                    );
                    bytes
                }
                Err(e) => {
                    tracing::error!(client = %peer, export = %export, "nbd: {what} task failed: {e}");
                    let mut out = BytesMut::new();
                    let mut enc = encoder;
                    enc.encode(
                        Reply::Error {
                            handle,
                            errno: errno::EIO,
                            message: "internal error".into(),
                        },
                        &mut out,
                    )
                    .expect("encoding into memory cannot fail");
                    out.freeze()
                }
            };
            // The receiver is gone only when the connection is closing anyway.
            let _ = tx.send((reply, permit));
        }
    }
}

/// The writer task: sends replies in the order they complete, gathering small ones.
async fn write_replies(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    failed: CancellationToken,
) {
    let mut batch = BytesMut::new();
    let mut permits = Vec::new();
    while let Some((bytes, permit)) = rx.recv().await {
        let result = if bytes.len() >= COALESCE_BELOW {
            wr.write_all(&bytes).await
        } else {
            batch.extend_from_slice(&bytes);
            permits.push(permit);
            while batch.len() < COALESCE_BELOW {
                match rx.try_recv() {
                    Ok((more, p)) if more.len() < COALESCE_BELOW => {
                        batch.extend_from_slice(&more);
                        permits.push(p);
                    }
                    Ok((more, p)) => {
                        batch.extend_from_slice(&more);
                        permits.push(p);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let r = wr.write_all(&batch).await;
            batch.clear();
            permits.clear();
            r
        };
        if result.is_err() {
            failed.cancel();
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn log_panic(done: Result<(), tokio::task::JoinError>, peer: SocketAddr) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(client = %peer, "nbd: a request task panicked: {e}");
        }
    }
}
