//! One TCP connection: its thread with a blocking socket, which cuts records, answers quick
//! calls itself and hands the others to the blocking pool, and the replies they write (READ
//! data sent from the file).

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::accept::Tracked;
use super::{CALL_BUDGET_KIB, MAX_IN_FLIGHT, SEND_TIMEOUT, SHUTDOWN_GRACE};
use crate::nfs::conns::Connection;
use crate::nfs::proto::{FileData, Reply, Service, NFS_PROGRAM};
use crate::nfs::rpc::{self, RecordBuffer};
use crate::nfs::xdr::{self, Writer};

/// Serves one TCP connection until EOF, error, a malformed stream, the removal of an export
/// it used, its idle timeout, or its eviction for a new connection.
///
/// The connection's reads and its quick calls run on a thread of its own with a blocking socket
/// ([`connection_thread`]); this future waits for that thread and, when it returns early (an
/// export removed) or is dropped (server shutdown), shuts the socket down so the thread's
/// blocking read returns at once.
pub(super) async fn serve_connection(
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
        pool,
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
            let call_live = Arc::clone(&live);
            let queued = pool.run(move || {
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
                call_live.call_ended();
                drop(permits);
            });
            if !queued {
                // The server is stopping: the call is dropped unanswered, as at a disconnect.
                live.call_ended();
                failed = Some(io::Error::other("nfs: the call threads have stopped"));
                break;
            }
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
/// stream open between pages in a per-thread cache (see
/// [`crate::nfs::fs::Export::readdir`]). READ, WRITE, COMMIT and every change go to the
/// blocking pool, so a client's pipelined I/O runs in parallel. The one slow thing a quick call
/// can do, walking an export for handles unknown after a restart, happens at most once per
/// [`crate::nfs::fs::RESCAN_INTERVAL`] per export.
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
