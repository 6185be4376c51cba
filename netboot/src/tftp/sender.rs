//! The data path of one read transfer: a thread while the client answers, a blocking socket,
//! batched sends.
//!
//! Why not a tokio task: for the 64 MiB benchmark (blksize 1468, 45 715 blocks) the task cost
//! about 3 system calls per block at window 1 (`epoll_wait`, `recvfrom`, `sendto`, plus a
//! `futex` hand-off for each blocking-pool read) and one `sendto` per block at any window; the
//! per-block kernel work, not the protocol, was the server's time. Here the thread sleeps in
//! `recv` itself, so the kernel wakes it straight from the client's ACK (window 1: one
//! `recvfrom` and one send per block, and a `pread` per run of blocks); and a window leaves in
//! as few trips down the network stack as the kernel allows:
//!
//! * UDP GSO (`UDP_SEGMENT`, Linux 4.18): one `sendmsg` hands up to 44 packets (at blksize 1468)
//!   to the kernel as one iovec list — each packet's 4-byte header, then its payload in the
//!   read-ahead buffer, no copy — and the kernel cuts them apart at the end of the stack: one
//!   route lookup and one pass through IP for the lot;
//! * else (GSO refused by the kernel or the device, e.g. a blksize above the MTU, or a device
//!   without checksum offload; then it stays off for the transfer) one `sendmmsg` per run of
//!   blocks whose iovecs point into the read-ahead buffer ([`BlockReader::run`]).
//!
//! **A thread only while the client answers.** The thread waits for the client at most
//! [`PARK_AFTER`] ([`PARK_FIRST_AFTER`] before its first answer); a client that has not answered
//! by then (it stalled, went away without an ICMP, or lost a packet and waits for its own timer)
//! gets its transfer *parked*: [`ReadPath::run`] returns [`Step::Parked`], the thread ends, the
//! read-ahead buffer is released, and the transfer's tokio task waits for the socket to become
//! readable, the retransmission deadline or shutdown, then starts a new thread to go on (which
//! reads what is waiting in the socket before it handles a deadline that passed meanwhile). A
//! storm of requests that are never acknowledged therefore holds a thread for about
//! [`PARK_FIRST_AFTER`] per (re)transmission, and a parked transfer holds about 12 KiB (its
//! task, its state, three descriptors) until its retransmission budget ends it. A client on a
//! LAN answers within a millisecond, so a transfer that makes progress never parks.
//!
//! Nothing is allocated per block. The timeout is the socket's `SO_RCVTIMEO`, set only when the
//! wait changes (not per packet). The protocol decisions stay in [`ReadTransfer`]; this file only
//! moves bytes and keeps time. Starting a thread costs tens of microseconds (256 KiB of stack
//! reserved, little of it touched), and the transfer cap bounds the number. Shutdown is noticed
//! within [`POLL`], the longest single wait, or at once by a parked transfer.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::content::BlockReader;
use super::error::TftpError;
use super::packet::{ErrorCode, Packet};
use super::transfer::{ReadTransfer, Transmit};

/// The longest single wait in `recv`: how soon a transfer notices shutdown.
pub const POLL: Duration = Duration::from_millis(100);

/// How long the thread waits for the client before parking the transfer (see the module doc).
pub const PARK_AFTER: Duration = Duration::from_millis(20);

/// [`PARK_AFTER`] for a client that has not answered once yet (a request that may never be
/// acknowledged): long enough for a LAN client's first ACK, short enough that a storm of such
/// requests holds few threads at any moment.
pub const PARK_FIRST_AFTER: Duration = Duration::from_millis(2);

/// A deadline closer than this is waited for on the thread rather than parked for.
const PARK_MARGIN: Duration = Duration::from_millis(2);

/// Most DATA packets handed to one `sendmmsg` or one GSO `sendmsg`.
const BATCH: usize = 64;

/// How a read's data path ended (the outcome itself is in the [`ReadTransfer`]).
#[derive(Debug)]
pub struct Ended {
    /// The client went away (ICMP port unreachable): nothing more could be sent.
    pub gone: bool,
    /// An I/O error that ended the transfer (reading the content, or making the socket
    /// blocking), for the log.
    pub read_error: Option<io::Error>,
}

/// What one run of the data path on a thread came to.
#[derive(Debug)]
pub enum Step {
    /// The transfer is over.
    Ended(Ended),
    /// The client has been quiet for [`PARK_AFTER`]: wait for the socket, the deadline or
    /// shutdown off the thread, then [`ReadPath::run`] again.
    Parked,
}

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// Everything the data path of one read carries from one thread to the next: the socket
/// (connected to the client), the state machine, the reader and the send state.
#[derive(Debug)]
pub struct ReadPath {
    /// The transfer's socket, connected to the client; blocking while on a thread.
    pub sock: UdpSocket,
    /// The protocol state.
    pub machine: ReadTransfer,
    /// Where the blocks come from.
    pub reader: BlockReader,
    oack: Vec<u8>,
    batch: Batch,
    /// What to send first when the path runs again.
    next: Option<Transmit>,
    started: bool,
    /// Whether the client has sent anything yet.
    answered: bool,
    /// The socket's current `SO_RCVTIMEO`.
    timeout: Option<Duration>,
}

impl ReadPath {
    /// The data path of `machine` on `sock`, sending `oack` when the machine asks for the OACK
    /// and blocks from `reader`.
    pub fn new(
        sock: UdpSocket,
        machine: ReadTransfer,
        reader: BlockReader,
        oack: Vec<u8>,
    ) -> ReadPath {
        ReadPath {
            sock,
            machine,
            reader,
            oack,
            batch: Batch::new(),
            next: None,
            started: false,
            answered: false,
            timeout: None,
        }
    }

    /// Runs the transfer on the calling thread (blocking) until it ends, or until the client
    /// has been quiet for [`PARK_AFTER`] (then the read-ahead buffer is released and
    /// [`Step::Parked`] returned; call again when the socket is readable, the
    /// [`ReadTransfer::deadline`] has passed or `cancel` fired).
    pub fn run(&mut self, cancel: &CancellationToken) -> Step {
        let mut ended = Ended {
            gone: false,
            read_error: None,
        };
        if let Err(e) = self.sock.set_nonblocking(false) {
            ended.read_error = Some(e);
            return Step::Ended(ended);
        }
        let mut inbuf = [0u8; 2048];
        if !self.started {
            self.started = true;
            self.next = self.machine.start(Instant::now());
        }
        // The client's last sign of life on this thread (or the thread's start).
        let mut heard = Instant::now();
        loop {
            if let Some(t) = self.next.take() {
                let sent = match t {
                    Transmit::OptionAck => send_one(&self.sock, &self.oack),
                    Transmit::Blocks { first, last } => {
                        self.batch.send(&self.sock, &mut self.reader, first, last)
                    }
                    Transmit::Error(e) => {
                        let _ = self.sock.send(&e.to_packet().to_bytes());
                        Ok(())
                    }
                };
                match sent {
                    Ok(()) => {}
                    Err(SendError::Gone) => {
                        ended.gone = true;
                        break;
                    }
                    Err(SendError::Read(e)) => {
                        let err = TftpError::new(ErrorCode::NotDefined, format!("read error: {e}"));
                        ended.read_error = Some(e);
                        self.next = Some(self.machine.abort(err));
                        continue;
                    }
                }
            }
            let Some(deadline) = self.machine.deadline() else {
                break;
            };
            if cancel.is_cancelled() {
                self.next = Some(self.machine.abort(TftpError::new(
                    ErrorCode::NotDefined,
                    "server shutting down",
                )));
                continue;
            }
            let now = Instant::now();
            let due = now >= deadline;
            let received = if due {
                // A packet may be waiting (the thread was parked, or ran late): it goes first,
                // or a late thread would retransmit what the client already acknowledged
                // (atftp aborts on an OACK it has answered).
                recv_now(&self.sock, &mut inbuf)
            } else {
                let park_after = if self.answered {
                    PARK_AFTER
                } else {
                    PARK_FIRST_AFTER
                };
                let quiet = now.saturating_duration_since(heard);
                if quiet >= park_after && deadline - now > PARK_MARGIN {
                    self.reader.release();
                    return Step::Parked;
                }
                // Not `park_after - quiet`: the wait stays the same from one packet to the next,
                // so SO_RCVTIMEO is not set again per packet; a client quiet for one whole wait
                // is parked at the next turn (after `park_after` to twice that).
                let wait = (deadline - now).min(POLL).min(park_after);
                // Re-arm SO_RCVTIMEO only when the wait shrinks noticeably or grows back; a new
                // ACK moves the deadline a full timeout ahead, so the usual wait stays put.
                let rearm = match self.timeout {
                    None => true,
                    Some(cur) => wait + Duration::from_millis(1) < cur || wait > cur,
                };
                if rearm {
                    // A zero timeout would mean "forever".
                    let t = wait.max(Duration::from_micros(100));
                    if self.sock.set_read_timeout(Some(t)).is_ok() {
                        self.timeout = Some(t);
                    }
                }
                self.sock.recv(&mut inbuf)
            };
            match received {
                Ok(n) => {
                    heard = Instant::now();
                    self.answered = true;
                    match Packet::parse(&inbuf[..n]) {
                        Ok(p) => self.next = self.machine.on_packet(&p, heard),
                        Err(e) => tracing::debug!("tftp: dropped malformed packet: {e}"),
                    }
                }
                Err(e) if is_gone(&e) => {
                    ended.gone = true;
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if due {
                        self.next = self.machine.on_timeout(now);
                    }
                }
                Err(e) => {
                    tracing::debug!("tftp: receive failed: {e}");
                    if due {
                        self.next = self.machine.on_timeout(now);
                    } else {
                        // Not a busy loop on a persistent error: the deadline still ends the
                        // transfer.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        self.reader.release();
        Step::Ended(ended)
    }
}

/// One datagram from `sock` if one is waiting, without blocking (`WouldBlock` if none).
fn recv_now(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call, and `sock` is an
    // open socket.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

enum SendError {
    Gone,
    Read(io::Error),
}

fn send_one(sock: &UdpSocket, bytes: &[u8]) -> Result<(), SendError> {
    match sock.send(bytes) {
        Err(e) if is_gone(&e) => Err(SendError::Gone),
        // A full buffer or similar: the retransmission timer covers the loss.
        _ => Ok(()),
    }
}

/// `SOL_UDP` / `UDP_SEGMENT` of linux/udp.h (UDP GSO, Linux 4.18).
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send (one IPv4 datagram's worth).
const GSO_MAX_BYTES: usize = 65507;

/// Reusable send state: the DATA headers the iovecs point to.
#[derive(Debug)]
struct Batch {
    headers: [[u8; 4]; BATCH],
    /// Whether UDP GSO is still worth trying on this socket (off after the first refusal).
    gso: bool,
}

/// The iovecs of `count` DATA packets from `first` on: header `i`, then block `i`'s payload in
/// `bytes` (cut at `bs` or at the end), pointing into `headers` and `bytes`, not copied.
fn data_iovecs(
    headers: &mut [[u8; 4]; BATCH],
    iovs: &mut [libc::iovec; 2 * BATCH],
    bytes: &[u8],
    bs: usize,
    first: u64,
    count: usize,
) {
    for (i, h) in headers.iter_mut().enumerate().take(count.min(BATCH)) {
        h[..2].copy_from_slice(&3u16.to_be_bytes());
        h[2..].copy_from_slice(&((first + i as u64) as u16).to_be_bytes());
        let start = (i * bs).min(bytes.len());
        let end = ((i + 1) * bs).min(bytes.len());
        iovs[2 * i] = libc::iovec {
            iov_base: h.as_mut_ptr().cast(),
            iov_len: 4,
        };
        iovs[2 * i + 1] = libc::iovec {
            // The kernel only reads through this pointer.
            iov_base: bytes[start..].as_ptr().cast_mut().cast(),
            iov_len: end - start,
        };
    }
}

const NO_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

impl Batch {
    fn new() -> Batch {
        Batch {
            headers: [[0; 4]; BATCH],
            gso: true,
        }
    }

    /// Sends DATA `first..first + count` from `bytes` as UDP GSO sends: each packet's header
    /// and payload are iovecs of one `sendmsg`, and the kernel cuts the whole at `blksize + 4`,
    /// so a run of blocks costs one trip down the stack instead of one per packet, and no copy.
    /// Returns how many blocks went out; stops early (and turns GSO off) if the kernel or the
    /// device refuses it.
    fn send_gso(
        &mut self,
        sock: &UdpSocket,
        bytes: &[u8],
        bs: usize,
        first: u64,
        count: usize,
    ) -> Result<usize, SendError> {
        let seg = bs + 4;
        let per = (GSO_MAX_BYTES / seg).min(GSO_MAX_SEGMENTS).min(BATCH);
        if per < 2 || count < 2 {
            return Ok(0);
        }
        let mut iovs = [NO_IOVEC; 2 * BATCH];
        let mut done = 0;
        while done < count {
            let n = (count - done).min(per);
            let from = (done * bs).min(bytes.len());
            data_iovecs(
                &mut self.headers,
                &mut iovs,
                &bytes[from..],
                bs,
                first + done as u64,
                n,
            );
            match send_segmented(sock, &iovs[..2 * n], seg as u16) {
                Ok(()) => done += n,
                Err(e) if is_gone(&e) => return Err(SendError::Gone),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP | libc::EMSGSIZE)
                    ) =>
                {
                    tracing::debug!("tftp: UDP GSO refused ({e}); sending packet by packet");
                    self.gso = false;
                    return Ok(done);
                }
                Err(e) => {
                    // A full buffer or similar: like a loss on the wire (see `send`).
                    tracing::debug!("tftp: send of block {} failed: {e}", first + done as u64);
                    return Ok(count);
                }
            }
        }
        Ok(done)
    }

    /// Sends DATA `first..=last`: by UDP GSO while the kernel takes it, else [`BATCH`] packets
    /// per `sendmmsg`; one run of blocks in the read-ahead buffer at a time.
    fn send(
        &mut self,
        sock: &UdpSocket,
        reader: &mut BlockReader,
        first: u64,
        last: u64,
    ) -> Result<(), SendError> {
        let bs = reader.blksize();
        let mut n = first;
        while n <= last {
            let upto = last.min(n + BATCH as u64 - 1);
            let (bytes, count) = reader.run(n, upto).map_err(SendError::Read)?;
            let count = count as usize;
            let sent = if self.gso {
                self.send_gso(sock, bytes, bs, n, count)?
            } else {
                0
            };
            if sent < count {
                let rest = &bytes[(sent * bs).min(bytes.len())..];
                self.send_mmsg(sock, rest, bs, n + sent as u64, count - sent)?;
            }
            n += count as u64;
        }
        Ok(())
    }

    /// Sends DATA `first..first + count` from `bytes` with `sendmmsg`: one system call, one
    /// header and one payload iovec (pointing into `bytes`, not copied) per packet.
    fn send_mmsg(
        &mut self,
        sock: &UdpSocket,
        bytes: &[u8],
        bs: usize,
        first: u64,
        count: usize,
    ) -> Result<(), SendError> {
        let mut iovs = [NO_IOVEC; 2 * BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty message.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let count = count.min(BATCH);
        data_iovecs(&mut self.headers, &mut iovs, bytes, bs, first, count);
        for (i, m) in msgs.iter_mut().enumerate().take(count) {
            m.msg_hdr.msg_iov = &mut iovs[2 * i];
            m.msg_hdr.msg_iovlen = 2;
        }
        let mut done = 0usize;
        while done < count {
            // SAFETY: `msgs[done..count]` point into `iovs`, `self.headers` and `bytes`, all
            // alive and unmoved for this call; the socket is connected, so no names.
            let rc = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (count - done) as libc::c_uint,
                    0,
                )
            };
            if rc >= 0 {
                done += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if is_gone(&e) {
                return Err(SendError::Gone);
            }
            // A full buffer or similar: the rest of the window is lost like on the wire, and
            // the client's ACK or our timer brings it back.
            tracing::debug!("tftp: send of block {} failed: {e}", first + done as u64);
            break;
        }
        Ok(())
    }
}

/// One `sendmsg` of the bytes `iovs` point to, with a `UDP_SEGMENT` control message: the kernel
/// sends them, concatenated, as datagrams of `seg` bytes (the last one shorter).
fn send_segmented(sock: &UdpSocket, iovs: &[libc::iovec], seg: u16) -> io::Result<()> {
    const SPACE: usize = 32; // >= CMSG_SPACE(sizeof(u16)) on every Linux ABI
    #[repr(C, align(8))]
    struct Control([u8; SPACE]);
    let mut control = Control([0; SPACE]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovs.as_ptr().cast_mut();
    msg.msg_iovlen = iovs.len() as _;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_* only compute sizes and walk the buffer set up just above, which is large
    // and aligned enough for one cmsghdr carrying a u16; sendmsg only reads the iovecs and the
    // bytes they point to, which the caller keeps alive for the call.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= SPACE);
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), seg);
        loop {
            if libc::sendmsg(sock.as_raw_fd(), &msg, 0) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::content::Content;
    use crate::tftp::transfer::{Outcome, Timing};

    const TIMING: Timing = Timing {
        timeout: Duration::from_secs(2),
        max_timeout: Duration::from_secs(2),
        retries: 1,
        dup_ack_guard: Duration::from_millis(20),
    };

    /// A transfer socket connected to a client socket on loopback.
    fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.connect(client.local_addr().unwrap()).unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    fn path(sock: UdpSocket, size: usize) -> ReadPath {
        let content = Content::from_bytes(vec![5u8; size]);
        let machine = ReadTransfer::new(size as u64, 512, 1, false, TIMING, Instant::now());
        ReadPath::new(sock, machine, BlockReader::new(content, 512), Vec::new())
    }

    #[test]
    fn a_quiet_client_parks_the_transfer_and_its_ack_resumes_it() {
        let (sock, client) = pair();
        let mut path = path(sock, 3000);
        let cancel = CancellationToken::new();
        let t0 = Instant::now();
        assert!(matches!(path.run(&cancel), Step::Parked));
        assert!(t0.elapsed() < Duration::from_millis(500), "parked late");
        assert_eq!(path.reader.buffered(), 0, "the read ahead is released");
        assert!(path.machine.deadline().is_some());
        let mut buf = [0u8; 600];
        assert_eq!(client.recv(&mut buf).unwrap(), 516, "DATA 1");
        // The client answers every block from now on: the transfer runs to its end.
        let acker = std::thread::spawn(move || {
            let mut block = 1u16;
            loop {
                client
                    .send(&[0, 4, (block >> 8) as u8, block as u8])
                    .unwrap();
                let n = client.recv(&mut buf).unwrap();
                block = u16::from_be_bytes([buf[2], buf[3]]);
                if n < 516 {
                    client
                        .send(&[0, 4, (block >> 8) as u8, block as u8])
                        .unwrap();
                    return block;
                }
            }
        });
        loop {
            // Parked again only if the acker thread was slower than PARK_AFTER (a loaded host).
            if let Step::Ended(e) = path.run(&cancel) {
                assert!(!e.gone && e.read_error.is_none(), "{e:?}");
                break;
            }
        }
        assert_eq!(acker.join().unwrap(), 6, "3000 bytes are blocks 1..=6");
        assert_eq!(path.machine.outcome(), Some(&Outcome::Complete));
    }

    #[test]
    fn a_parked_transfer_ends_on_shutdown_with_an_error() {
        let (sock, client) = pair();
        let mut path = path(sock, 100);
        let cancel = CancellationToken::new();
        assert!(matches!(path.run(&cancel), Step::Parked));
        cancel.cancel();
        assert!(matches!(path.run(&cancel), Step::Ended(_)));
        assert!(matches!(path.machine.outcome(), Some(Outcome::Aborted(_))));
        let mut buf = [0u8; 600];
        assert_eq!(client.recv(&mut buf).unwrap(), 104, "DATA 1");
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 5], "ERROR: {:?}", &buf[..n]);
    }
}
