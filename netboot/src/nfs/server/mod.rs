//! The socket loops: NFS and MOUNT on one TCP listener, and the optional portmap responder.
//!
//! Each TCP connection has a thread of its own with a blocking socket: it cuts records
//! ([`super::rpc::RecordBuffer`]), answers quick calls (lookups, attributes, listings) itself
//! and hands every other call to the server's own call threads (`pool`,
//! [`NfsSettings::workers`]), at most [`MAX_IN_FLIGHT`] per
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
//! Each connection is a [`Connection`](super::Connection) to the export table: when an export
//! it used is removed (the rule is in [`super::conns`]), its socket is shut down as at
//! shutdown, so the client has to reconnect, and then gets `NFS3ERR_STALE` for the removed
//! export's handles.
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
//!
//! **Layout.** This file holds [`NfsServer`] and the portmap datagram loop; `accept` the accept
//! loop and the connection limits, `connection` a connection's thread and its replies.

mod accept;
mod connection;
mod pool;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::NfsSettings;
use super::exports::{ExportError, ExportTable};
use super::proto::Service;
use super::rpc;
use crate::error::ServerError;
use accept::{accept_loop, Limits};
use pool::WorkPool;

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
pub use crate::common::SHUTDOWN_GRACE;

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
            .map_err(ServerError::bind("nfs", addr))
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
        let pool = Arc::new(
            WorkPool::start(self.settings.workers())
                .map_err(ServerError::io("nfs: cannot start the call threads"))?,
        );
        if let Some(addr) = self.settings.portmap() {
            let udp = UdpSocket::bind(addr)
                .await
                .map_err(ServerError::bind("portmap", addr))?;
            let addr = udp.local_addr().map_err(ServerError::io(
                "nfs: cannot read the portmap socket's address",
            ))?;
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(ServerError::bind("portmap", addr))?;
            tracing::info!("nfs: portmap listening on {addr}");
            tasks.spawn(serve_udp(udp, Arc::clone(&self.service), cancel.clone()));
            tasks.spawn(accept_loop(
                tcp,
                Arc::clone(&self.service),
                Limits::of(&self.settings),
                Arc::clone(&pool),
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
            Arc::clone(&pool),
            cancel.clone(),
        ));
        shutdown.await;
        tracing::info!("nfs: shutting down");
        cancel.cancel();
        crate::common::drain(&mut tasks, SHUTDOWN_GRACE, "nfs", "listeners").await;
        // The connections are gone; their last calls end, then the threads are joined.
        pool.stop(SHUTDOWN_GRACE).await;
        Ok(())
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
