//! Tests of the server over real sockets on 127.0.0.1: serving until shutdown, eviction at the
//! connection cap, the idle timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::nfs::config::{ExportConfig, NfsConfig};
use crate::nfs::proto::NFS_PROGRAM;
use crate::nfs::xdr::{Reader, Writer};
use crate::ServerError;

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
        exports: vec![ExportConfig::parse_spec(&format!("/a={}", dir.path().display())).unwrap()],
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
