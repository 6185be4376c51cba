//! The transmission phase of one connection, on threads of its own.
//!
//! After the handshake (on tokio) the socket is handed to [`WORKERS`] threads and made blocking.
//! The threads take turns at the socket's read side: whichever holds the input lock decodes the
//! next request (receiving more bytes when the buffer holds no whole request), lets the lock go
//! and answers the request itself, so requests run concurrently and replies leave in the order
//! they are finished. A reply is written under the output lock, whole.
//!
//! A READ of an `ro` or `cow` export is not copied out of the page cache: the worker writes the
//! reply header into a pipe of its own and splices the file range after it (page references,
//! no copy; a cold page is read from disk here, outside the output lock), writing a `cow`
//! overlay's dirty bytes between the spliced runs; then, holding the output lock, it splices the
//! pipe into the socket (zero-copy TCP). Reads of `rw` exports and reads larger than the pipe
//! pread into the reply buffer (one copy) and send it. Every failure before the header leaves is
//! answered with an error reply; the data of a reply is never cut short. Sockets get a small
//! `TCP_NOTSENT_LOWAT` ([`NOTSENT_LOWAT`]).
//!
//! Compared with the earlier reader task, blocking-pool pread and writer task on tokio, a
//! request costs no thread hand-off in the common case and no copy of its data on the server:
//! figures in `bench/README.md`.
//!
//! Ending: the first thread to see the end (NBD_CMD_DISC, end of stream, a bad frame, a failed
//! send) records why; anything but a disconnect also shuts the socket down, which wakes the
//! others. After NBD_CMD_DISC the threads finish the requests they hold and the last one out
//! closes the write side. [`Running::close`] (export removed, server stopping) shuts the socket
//! down from outside. Payload bytes held per connection are bounded by [`IN_FLIGHT_BYTES`], and
//! across all connections by the server's [`SharedBudget`].

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

use super::budget::SharedBudget;
use super::codec::{Command, ReplyEncoder, Request, RequestDecoder};
use super::dispatch;
use super::export::{Backend, OpError};
use super::overlay::Piece;
use super::proto::MAX_PAYLOAD;
use super::server::{ConnError, Ending, IN_FLIGHT_BYTES};

/// Threads answering one connection's requests.
pub const WORKERS: usize = 4;

/// Pipe size asked for per worker; the kernel may grant less (then larger reads are copied).
const PIPE_BYTES: libc::c_int = 4 << 20;

/// Unsent bytes a connection's socket may queue before a send waits (`TCP_NOTSENT_LOWAT`).
///
/// Without it the send queue fills up to the socket buffer while the client's window is shut;
/// the client's window updates then push the queued replies out, so the client's thread does
/// the sending side's TCP (and, on loopback, receive) work. Measured with nbdcopy over 4
/// connections this doubled the client's CPU time; 16–64 KiB gave the shortest copies, 128 KiB
/// was 10–20 % slower. Bytes in flight (sent, not yet acknowledged) are not limited by it.
const NOTSENT_LOWAT: libc::c_int = 32 * 1024;

/// Stack size of the worker threads (their buffers live on the heap).
const STACK: usize = 256 * 1024;

/// What the server gives every connection: the shared byte budget and the send timeout.
pub(super) struct ConnLimits {
    /// Payload bytes in flight across every connection.
    pub budget: Arc<SharedBudget>,
    /// How long a reply may wait for a client that reads nothing.
    pub send_timeout: std::time::Duration,
}

/// How a finished connection ended.
pub(super) type Outcome = Result<Ending, ConnError>;

/// A connection whose transmission phase runs on its threads.
pub(super) struct Running {
    shared: Arc<Shared>,
    /// Completes when the last thread has left.
    pub done: oneshot::Receiver<Outcome>,
}

impl Running {
    /// Shuts the socket down: the threads stop after the request each one holds.
    pub fn close(&self) {
        self.shared.stop(None);
    }
}

/// Starts the threads serving `sock` (already negotiated; `input` holds bytes received after the
/// handshake). Fails only when not even one thread can be started.
pub(super) fn start(
    sock: TcpStream,
    input: BytesMut,
    backend: Arc<Backend>,
    encoder: ReplyEncoder,
    peer: SocketAddr,
    export: String,
    limits: ConnLimits,
) -> io::Result<Running> {
    sock.set_nonblocking(false)?;
    // A reply that waits this long for a client that reads nothing fails, which closes the
    // connection and gives back the bytes its requests held.
    sock.set_write_timeout(Some(limits.send_timeout))?;
    if let Err(e) = set_notsent_lowat(&sock, NOTSENT_LOWAT) {
        tracing::debug!(client = %peer, "nbd: cannot set TCP_NOTSENT_LOWAT: {e}");
    }
    let (tx, done) = oneshot::channel();
    let shared = Arc::new(Shared {
        sock,
        input: Mutex::new(Input {
            buf: input,
            decoder: RequestDecoder::default(),
        }),
        output: Mutex::new(()),
        budget: Mutex::new(IN_FLIGHT_BYTES),
        budget_freed: Condvar::new(),
        server_budget: limits.budget,
        send_timeout: limits.send_timeout,
        stopping: AtomicBool::new(false),
        outcome: Mutex::new(None),
        live: AtomicUsize::new(WORKERS),
        done: Mutex::new(Some(tx)),
        backend,
        encoder,
        peer,
        bytes: crate::metrics::METRICS.nbd.export(&export),
        export,
    });
    let mut started = 0;
    for i in 0..WORKERS {
        let worker = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-{}", shared.peer.port()))
            .stack_size(STACK)
            .spawn(move || {
                let guard = Leaving(&worker);
                guard.0.work();
            });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => {
                tracing::warn!(client = %shared.peer, "nbd: cannot start worker thread {i}: {e}");
                // This thread will never leave: count it out now.
                shared.leave();
            }
        }
    }
    if started == 0 {
        return Err(io::Error::other("no worker thread could be started"));
    }
    Ok(Running { shared, done })
}

struct Input {
    buf: BytesMut,
    decoder: RequestDecoder,
}

struct Shared {
    sock: TcpStream,
    input: Mutex<Input>,
    output: Mutex<()>,
    /// Payload bytes that may still be taken in (requests decoded but not yet answered).
    budget: Mutex<usize>,
    budget_freed: Condvar,
    /// The same bytes counted across every connection of the server.
    server_budget: Arc<SharedBudget>,
    send_timeout: std::time::Duration,
    stopping: AtomicBool,
    outcome: Mutex<Option<Outcome>>,
    live: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<Outcome>>>,
    backend: Arc<Backend>,
    encoder: ReplyEncoder,
    peer: SocketAddr,
    /// The export's byte counters.
    bytes: Arc<crate::metrics::ExportBytes>,
    export: String,
}

/// Counts a worker out when it returns or unwinds.
struct Leaving<'a>(&'a Arc<Shared>);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(client = %self.0.peer, "nbd: a worker thread panicked");
            self.0.stop(Some(Err(ConnError::Io(io::Error::other(
                "worker panicked",
            )))));
        }
        self.0.leave();
    }
}

/// Locks `m`, taking the data of a poisoned lock as it is (a panicking worker has already shut
/// the connection down).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// One worker: take a request, answer it, until the connection ends.
    fn work(&self) {
        let mut pipe = Pipe::new()
            .map_err(
                |e| tracing::debug!(client = %self.peer, "nbd: no pipe, reads will be copied: {e}"),
            )
            .ok();
        while let Some((req, cost)) = self.next_request() {
            let sent = self.answer(req, &mut pipe);
            self.release(cost);
            if let Err(e) = sent {
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    tracing::info!(
                        client = %self.peer,
                        "nbd: the client read no reply for {:?} (send_timeout_secs); closing",
                        self.send_timeout
                    );
                } else {
                    tracing::debug!(client = %self.peer, "nbd: send failed: {e}");
                }
                self.stop(Some(Ok(Ending::WriterFailed)));
                return;
            }
        }
    }

    /// Records why the connection ends (the first reason wins) and, unless the client asked to
    /// disconnect, shuts the socket down so every thread wakes up.
    fn stop(&self, why: Option<Outcome>) {
        let graceful = matches!(why, Some(Ok(Ending::Disconnect)));
        if let Some(why) = why {
            let mut outcome = lock(&self.outcome);
            if outcome.is_none() {
                *outcome = Some(why);
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        if !graceful {
            let _ = self.sock.shutdown(Shutdown::Both);
        }
        let _budget = lock(&self.budget);
        self.budget_freed.notify_all();
    }

    /// A worker leaves; the last one closes the write side and reports the outcome.
    fn leave(&self) {
        if self.live.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let _ = self.sock.shutdown(Shutdown::Write);
        let outcome = lock(&self.outcome).take().unwrap_or(Ok(Ending::Closed));
        if let Some(tx) = lock(&self.done).take() {
            let _ = tx.send(outcome);
        }
    }

    /// The next request and the payload budget it holds; `None` once the connection ends.
    fn next_request(&self) -> Option<(Request, usize)> {
        let mut input = lock(&self.input);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return None;
            }
            let Input { buf, decoder } = &mut *input;
            match decoder.decode(buf) {
                Err(e) => {
                    self.stop(Some(Err(e.into())));
                    return None;
                }
                Ok(Some(req)) => {
                    if matches!(req.command, Command::Disconnect) {
                        self.stop(Some(Ok(Ending::Disconnect)));
                        return None;
                    }
                    let cost = match &req.command {
                        Command::Read => req.len.clamp(1, MAX_PAYLOAD) as usize,
                        Command::Write(data) => data.len().max(1),
                        _ => 1,
                    };
                    if !self.acquire(cost) {
                        return None;
                    }
                    // The connection's own bytes first, then the server's: while the server is
                    // at its cap this connection holds the input and reads no more requests.
                    if !self.server_budget.take(cost, &self.stopping) {
                        self.release_own(cost);
                        return None;
                    }
                    return Some((req, cost));
                }
                Ok(None) => {}
            }
            if buf.capacity() - buf.len() < 64 * 1024 {
                buf.reserve(256 * 1024);
            }
            match recv_into(&self.sock, buf) {
                Ok(0) if buf.is_empty() => {
                    self.stop(Some(Ok(Ending::Closed)));
                    return None;
                }
                Ok(0) => {
                    self.stop(Some(Err(ConnError::Truncated)));
                    return None;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stop(Some(Err(e.into())));
                    return None;
                }
            }
        }
    }

    /// Waits until `cost` payload bytes fit in the budget; `false` when the connection ends.
    fn acquire(&self, cost: usize) -> bool {
        let cost = cost.min(IN_FLIGHT_BYTES);
        let mut free = lock(&self.budget);
        while *free < cost {
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            free = self
                .budget_freed
                .wait(free)
                .unwrap_or_else(|p| p.into_inner());
        }
        *free -= cost;
        true
    }

    /// Gives back a finished request's bytes, to the connection and to the server.
    fn release(&self, cost: usize) {
        self.server_budget.give(cost);
        self.release_own(cost);
    }

    fn release_own(&self, cost: usize) {
        let mut free = lock(&self.budget);
        *free += cost.min(IN_FLIGHT_BYTES);
        self.budget_freed.notify_one();
    }

    /// Answers one request; `Err` only when the socket cannot take the reply.
    fn answer(&self, req: Request, pipe: &mut Option<Pipe>) -> io::Result<()> {
        if matches!(req.command, Command::Read) {
            if let Some(p) = pipe.as_mut() {
                match self.splice_read(&req, p) {
                    Splice::Sent(r) => {
                        if r.is_ok() {
                            self.bytes.read(u64::from(req.len));
                        }
                        return r;
                    }
                    Splice::Skipped => {}
                    Splice::Retry => *pipe = Pipe::new().ok(),
                    Splice::Failed(e) => {
                        tracing::info!(
                            client = %self.peer,
                            export = %self.export,
                            "nbd: NBD_CMD_READ of {} bytes at {} (handle {:#x}) failed: {e}",
                            req.len,
                            req.offset,
                            req.handle
                        );
                        // The pipe may hold part of the reply: replace it.
                        *pipe = Pipe::new().ok();
                        return self.send(&dispatch::error_reply(req.handle, &e, self.encoder));
                    }
                }
            }
        }
        let (handle, what, offset, len) = (
            req.handle,
            dispatch::name(&req.command),
            req.offset,
            req.len,
        );
        let (read, written) = match &req.command {
            Command::Read => (u64::from(req.len), 0),
            Command::Write(data) => (0, data.len() as u64),
            _ => (0, 0),
        };
        let (reply, failed) = dispatch::execute(req, &self.backend, self.encoder);
        if failed.is_none() {
            self.bytes.read(read);
            self.bytes.written(written);
        }
        if let Some(e) = failed {
            tracing::info!(
                client = %self.peer,
                export = %self.export,
                "nbd: {what} of {len} bytes at {offset} (handle {handle:#x}) failed: {e}"
            );
        }
        self.send(&reply)
    }

    /// A READ answered from the page cache without a copy, when the range allows it.
    fn splice_read(&self, req: &Request, pipe: &mut Pipe) -> Splice {
        let (offset, len) = (req.offset, u64::from(req.len));
        if dispatch::check(req, self.backend.size(), self.backend.mode()).is_err()
            || !pipe.fits(&[Piece::Base { offset, len }])
        {
            return Splice::Skipped;
        }
        let (mut pieces, mut dirty) = (
            std::mem::take(&mut pipe.pieces),
            std::mem::take(&mut pipe.dirty),
        );
        pieces.clear();
        dirty.clear();
        let planned = self
            .backend
            .splice_plan(offset, len, &mut pieces, &mut dirty);
        let result = match planned {
            Ok(Some(_)) if !pipe.fits(&pieces) => Splice::Skipped,
            Ok(Some(file)) => {
                let mut header = BytesMut::with_capacity(self.encoder.data_header_len());
                self.encoder
                    .data_header(req.handle, offset, req.len, &mut header);
                match pipe.fill(&header, file, &pieces, &dirty) {
                    Ok(()) => {
                        let _out = lock(&self.output);
                        Splice::Sent(
                            pipe.drain_to(self.sock.as_raw_fd(), header.len() + req.len as usize),
                        )
                    }
                    // The pipe is full earlier than counted: copy this one instead.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Splice::Retry,
                    Err(e) => Splice::Failed(OpError::io("read", &e)),
                }
            }
            Ok(None) => Splice::Skipped,
            Err(e) => Splice::Failed(e),
        };
        // Keep the scratch space for the next read unless it grew large.
        if dirty.capacity() <= 1 << 20 {
            pipe.dirty = dirty;
        }
        pipe.pieces = pieces;
        result
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let _out = lock(&self.output);
        (&self.sock).write_all(bytes)
    }
}

enum Splice {
    /// The reply went out (or the socket failed while sending it).
    Sent(io::Result<()>),
    /// The request is answered the ordinary way.
    Skipped,
    /// As `Skipped`, but the pipe holds part of the reply and must be replaced first.
    Retry,
    /// Reading the file failed before anything was sent: answer with this error.
    Failed(OpError),
}

fn set_notsent_lowat(sock: &TcpStream, bytes: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int from a live local of that size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives into `buf`'s spare capacity; `Ok(0)` at the end of the stream.
fn recv_into(sock: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: the pointer and length describe `buf`'s spare capacity; recv writes at most that
    // many bytes into it and reads none.
    let n = unsafe { libc::recv(sock.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// A worker's pipe: reply header and file pages go in, then out to the socket in one splice.
struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    /// Pipe buffers (slots) available; each holds at most one page.
    slots: usize,
    page: usize,
    /// Scratch space for [`Backend::splice_plan`], kept between reads.
    pieces: Vec<Piece>,
    dirty: Vec<u8>,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for size in [PIPE_BYTES, 1 << 20] {
            // SAFETY: fcntl on a descriptor we own with an integer argument.
            if unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, size) } >= 0 {
                break;
            }
        }
        // SAFETY: as above.
        let bytes = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ) };
        // SAFETY: sysconf takes an integer.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if bytes <= 0 || page <= 0 {
            return Err(io::Error::last_os_error());
        }
        let page = page as usize;
        Ok(Pipe {
            rd,
            wr,
            slots: bytes as usize / page,
            page,
            pieces: Vec::new(),
            dirty: Vec::new(),
        })
    }

    /// Whether a reply header and `pieces` fit in the pipe's slots (counted high: a file run
    /// takes one slot per page it touches, bytes written take one per page and one more).
    fn fits(&self, pieces: &[Piece]) -> bool {
        let page = self.page as u64;
        let mut needed = 1u64;
        for p in pieces {
            needed += match *p {
                Piece::Base { offset, len } => (offset % page + len).div_ceil(page),
                Piece::Dirty { len } => len.div_ceil(page) + 1,
            };
        }
        needed <= self.slots as u64
    }

    /// Puts `header` and then the reply's data into the (empty) pipe: the `Base` pieces spliced
    /// from `file`, the `Dirty` ones written from `dirty`. On an error the pipe may hold part
    /// of it and must not be used again.
    fn fill(
        &mut self,
        header: &[u8],
        file: BorrowedFd<'_>,
        pieces: &[Piece],
        dirty: &[u8],
    ) -> io::Result<()> {
        self.write_all(header)?;
        let mut used = 0usize;
        for p in pieces {
            match *p {
                Piece::Base { offset, len } => self.splice_from(file, offset, len)?,
                Piece::Dirty { len } => {
                    let bytes = dirty.get(used..used + len as usize).ok_or_else(|| {
                        io::Error::other("overlay pieces longer than their bytes")
                    })?;
                    self.write_all(bytes)?;
                    used += len as usize;
                }
            }
        }
        Ok(())
    }

    /// Writes `bytes` into the pipe; `WouldBlock` when it is full.
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // SAFETY: write from a live slice into a descriptor we own.
            let n = unsafe { libc::write(self.wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            bytes = &bytes[n as usize..];
        }
        Ok(())
    }

    /// Splices `len` bytes of `file` at `offset` into the pipe.
    fn splice_from(&mut self, file: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        let mut at = offset as libc::loff_t;
        let end = offset + len;
        while (at as u64) < end {
            let want = (end - at as u64) as usize;
            // SAFETY: splice between a file we hold and our pipe; `at` is a valid offset
            // variable the kernel advances.
            let n = unsafe {
                libc::splice(
                    file.as_raw_fd(),
                    &mut at,
                    self.wr.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ends before {at}"),
                ));
            }
        }
        Ok(())
    }

    /// Moves the `len` bytes held in the pipe to the socket.
    fn drain_to(&mut self, sock: RawFd, len: usize) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            // SAFETY: splice from our pipe to a socket we hold; no offsets.
            let n = unsafe {
                libc::splice(
                    self.rd.as_raw_fd(),
                    std::ptr::null_mut(),
                    sock,
                    std::ptr::null_mut(),
                    left,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket took no bytes",
                ));
            }
            left -= n as usize;
        }
        Ok(())
    }
}
