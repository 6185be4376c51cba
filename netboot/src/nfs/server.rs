//! The socket loops: NFS and MOUNT on one TCP listener, and the optional portmap responder.
//!
//! Each TCP connection has a reader that cuts records ([`super::rpc::RecordBuffer`]) and a
//! writer fed through a channel; every call runs on the blocking pool, at most
//! [`MAX_IN_FLIGHT`] per connection, so one client's slow READ does not hold up its other calls
//! (Linux clients pipeline many calls on one connection). When a client disconnects, even
//! mid-record, the connection's tasks are aborted and its buffers dropped; calls already running
//! on the blocking pool finish and their replies are discarded. Across all connections, calls
//! waiting or running hold at most [`CALL_BUDGET_KIB`] of records, so many clients sending large
//! WRITEs at once are slowed down rather than exhausting memory.
//!
//! Shutdown: [`NfsServer::run`] stops accepting when its shutdown future completes, cancels every
//! connection and waits up to [`SHUTDOWN_GRACE`] for them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::NfsSettings;
use super::exports::{ExportError, ExportTable};
use super::proto::{Service, NFS_PROGRAM};
use super::rpc::{self, RecordBuffer};

/// Calls of one connection executing at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// KiB of received records that calls may hold at once, over all connections.
pub const CALL_BUDGET_KIB: usize = 256 * 1024;
/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long shutdown waits for connections to finish their calls.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// An NFSv3 server: settings, the export table, and the RPC programs over it.
#[derive(Debug)]
pub struct NfsServer {
    settings: NfsSettings,
    service: Arc<Service>,
}

impl NfsServer {
    /// A server with the settings' exports in its table.
    pub fn new(settings: NfsSettings) -> Result<NfsServer, ExportError> {
        let table = Arc::new(ExportTable::new());
        for spec in settings.exports() {
            table.add_checked(spec.clone())?;
        }
        Ok(NfsServer {
            settings,
            service: Arc::new(Service::new(table)),
        })
    }

    /// The export table: add and remove exports through it while the server runs.
    pub fn exports(&self) -> Arc<ExportTable> {
        Arc::clone(self.service.table())
    }

    /// The settings this server runs with.
    pub fn settings(&self) -> &NfsSettings {
        &self.settings
    }

    /// Binds the NFS/MOUNT listener to the configured address.
    pub async fn bind(&self) -> io::Result<TcpListener> {
        let addr = self.settings.listen();
        TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind nfs socket {addr}: {e}")))
    }

    /// Serves NFS and MOUNT on `listener` (and portmap, if configured) until `shutdown`.
    ///
    /// Logs `nfs: listening on ADDR` (and `nfs: portmap listening on ADDR`) once running.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let local = listener.local_addr()?;
        self.service.set_nfs_port(local.port());
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let Some(addr) = self.settings.portmap() {
            let udp = UdpSocket::bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind portmap socket {addr}: {e}"))
            })?;
            let addr = udp.local_addr()?;
            let tcp = TcpListener::bind(addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind portmap socket {addr}: {e}"))
            })?;
            tracing::info!("nfs: portmap listening on {addr}");
            tasks.spawn(serve_udp(udp, Arc::clone(&self.service), cancel.clone()));
            tasks.spawn(accept_loop(tcp, Arc::clone(&self.service), cancel.clone()));
        }
        tracing::info!(
            "nfs: listening on {local} (exports: {})",
            self.service.table().names().join(", ")
        );
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&self.service),
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

/// Accepts TCP connections until cancelled; each gets its own task.
async fn accept_loop(listener: TcpListener, service: Arc<Service>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let budget = Arc::new(Semaphore::new(CALL_BUDGET_KIB));
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let service = Arc::clone(&service);
                    let cancel = cancel.clone();
                    let budget = Arc::clone(&budget);
                    conns.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            r = serve_connection(stream, peer, service, budget) => {
                                if let Err(e) = r {
                                    tracing::debug!(client = %peer, "nfs: connection ended: {e}");
                                }
                            }
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("nfs: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

/// Serves one TCP connection until EOF, error or a malformed stream.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<Service>,
    budget: Arc<Semaphore>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
    let writer = async move {
        while let Some(reply) = rx.recv().await {
            wr.write_all(&reply).await?;
        }
        io::Result::Ok(())
    };
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The reader owns `tx`: when it returns, the writer drains the last replies and stops.
    let reader = async move {
        let mut calls = JoinSet::new();
        let mut records = RecordBuffer::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                if records.is_mid_record() {
                    tracing::debug!(client = %peer, "nfs: client left in the middle of a call");
                }
                // Let calls already received finish and be answered.
                while calls.join_next().await.is_some() {}
                return io::Result::Ok(());
            }
            records.extend(&buf[..n]);
            while let Some(record) = records
                .next_record()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                if is_quick(&record) {
                    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        service.handle(&record, peer.ip())
                    }));
                    match reply {
                        Ok(Some(w)) => {
                            let _ = tx.send(rpc::finish_record(w)).await;
                        }
                        Ok(None) => {}
                        Err(_) => tracing::error!(client = %peer, "nfs: a call panicked"),
                    }
                    continue;
                }
                let permit = Arc::clone(&in_flight)
                    .acquire_owned()
                    .await
                    .map_err(io::Error::other)?;
                let kib = (record.len() / 1024 + 1).min(CALL_BUDGET_KIB) as u32;
                let bytes = Arc::clone(&budget)
                    .acquire_many_owned(kib)
                    .await
                    .map_err(io::Error::other)?;
                let service = Arc::clone(&service);
                let tx = tx.clone();
                calls.spawn(async move {
                    let reply = tokio::task::spawn_blocking(move || {
                        service.handle(&record, peer.ip()).map(rpc::finish_record)
                    })
                    .await;
                    drop((permit, bytes));
                    match reply {
                        Ok(Some(bytes)) => {
                            let _ = tx.send(bytes).await;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(client = %peer, "nfs: a call panicked: {e}"),
                    }
                });
            }
            while calls.try_join_next().is_some() {}
        }
    };
    let (r, w) = tokio::join!(reader, writer);
    r.and(w)
}

/// Whether a call is answered inline by the connection's task: lookups, attributes and
/// directory listings touch only cached metadata (microseconds), and a hop to the blocking pool
/// or `block_in_place`'s hand-over of the worker costs more than the call itself (measured: four
/// futex waits per call, and a recursive listing is thousands of calls one after the other).
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
    use crate::nfs::xdr::{Reader, Writer};

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
        let table = server.exports();
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
}
