//! The data path of one read transfer: its own thread, a blocking socket, batched sends.
//!
//! Why not a tokio task: for the 64 MiB benchmark (blksize 1468, 45 715 blocks) the task cost
//! about 3 system calls per block at window 1 (`epoll_wait`, `recvfrom`, `sendto`, plus a
//! `futex` hand-off for each blocking-pool read) and one `sendto` per block at any window; the
//! per-block kernel work, not the protocol, was the server's time. Here the thread sleeps in
//! `recv` itself, so the kernel wakes it straight from the client's ACK (window 1: one
//! `recvfrom` and one send per block, nothing else); and a window leaves in as few trips down
//! the network stack as the kernel allows:
//!
//! * UDP GSO (`UDP_SEGMENT`, Linux 4.18): the window's packets are laid out back to back and one
//!   `sendmsg` hands up to 44 of them (at blksize 1468) to the kernel, which cuts them apart at
//!   the end of the stack — one route lookup and one pass through IP for the lot;
//! * else (GSO refused by the kernel or the device, e.g. a blksize above the MTU, or a device
//!   without checksum offload; then it stays off for the transfer) one `sendmmsg` per window
//!   whose iovecs point into the file chunk already in memory ([`BlockReader::run`]).
//!
//! Files are read 1 MiB per `pread`; nothing is allocated per block. The timeout is the socket's
//! `SO_RCVTIMEO`, set only when the wait changes (not per packet). The protocol decisions stay in
//! [`ReadTransfer`]; this file only moves bytes and keeps time.
//!
//! A thread per transfer is cheap next to a transfer (tens of microseconds to start; 256 KiB of
//! stack reserved, little of it touched), and the transfer cap bounds the number. Shutdown is
//! noticed within [`POLL`], the longest single wait.

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

/// Most DATA packets handed to one `sendmmsg`.
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

fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionRefused
}

/// Runs `machine` to its end on `sock` (connected to the client; made blocking here), sending
/// `oack` when it asks for the OACK and blocks from `reader`.
pub fn run(
    sock: UdpSocket,
    machine: &mut ReadTransfer,
    reader: &mut BlockReader,
    oack: &[u8],
    cancel: &CancellationToken,
) -> Ended {
    let mut ended = Ended {
        gone: false,
        read_error: None,
    };
    if let Err(e) = sock.set_nonblocking(false) {
        ended.read_error = Some(e);
        return ended;
    }
    let mut batch = Batch::new();
    let mut inbuf = vec![0u8; 2048];
    let mut timeout: Option<Duration> = None;
    let mut next = machine.start(Instant::now());
    loop {
        if let Some(t) = next.take() {
            let sent = match t {
                Transmit::OptionAck => send_one(&sock, oack),
                Transmit::Blocks { first, last } => batch.send(&sock, reader, first, last),
                Transmit::Error(e) => {
                    let _ = sock.send(&e.to_packet().to_bytes());
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
                    next = Some(machine.abort(err));
                    continue;
                }
            }
        }
        let Some(deadline) = machine.deadline() else {
            break;
        };
        if cancel.is_cancelled() {
            next = Some(machine.abort(TftpError::new(
                ErrorCode::NotDefined,
                "server shutting down",
            )));
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            next = machine.on_timeout(now);
            continue;
        }
        let wait = (deadline - now).min(POLL);
        // Re-arm SO_RCVTIMEO only when the wait shrinks noticeably or grows back; a new ACK
        // moves the deadline a full timeout ahead, so the usual wait stays at POLL.
        let rearm = match timeout {
            None => true,
            Some(cur) => wait + Duration::from_millis(1) < cur || wait > cur,
        };
        if rearm {
            // A zero timeout would mean "forever".
            let t = wait.max(Duration::from_micros(100));
            if sock.set_read_timeout(Some(t)).is_ok() {
                timeout = Some(t);
            }
        }
        match sock.recv(&mut inbuf) {
            Ok(n) => match Packet::parse(&inbuf[..n]) {
                Ok(p) => next = machine.on_packet(&p, Instant::now()),
                Err(e) => tracing::debug!("tftp: dropped malformed packet: {e}"),
            },
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
                ) => {}
            Err(e) => {
                tracing::debug!("tftp: receive failed: {e}");
                // Not a busy loop on a persistent error: the deadline still ends the transfer.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    ended
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

/// Reusable send state: the `sendmmsg` headers, and the buffer of a GSO send.
struct Batch {
    headers: Vec<[u8; 4]>,
    /// Whether UDP GSO is still worth trying on this socket (off after the first refusal).
    gso: bool,
    gso_buf: Vec<u8>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            headers: vec![[0; 4]; BATCH],
            gso: true,
            gso_buf: Vec::new(),
        }
    }

    /// Sends DATA `first..first + count` from `bytes` as UDP GSO sends: the packets are laid
    /// out back to back and the kernel cuts them at `blksize + 4`, so a window costs one trip
    /// down the stack instead of one per packet. Returns how many blocks went out; stops early
    /// (and turns GSO off) if the kernel or the device refuses it.
    fn send_gso(
        &mut self,
        sock: &UdpSocket,
        bytes: &[u8],
        bs: usize,
        first: u64,
        count: usize,
    ) -> Result<usize, SendError> {
        let seg = bs + 4;
        let per = (GSO_MAX_BYTES / seg).min(GSO_MAX_SEGMENTS);
        if per < 2 || count < 2 {
            return Ok(0);
        }
        let mut done = 0;
        while done < count {
            let n = (count - done).min(per);
            self.gso_buf.clear();
            for i in done..done + n {
                let start = (i * bs).min(bytes.len());
                let end = ((i + 1) * bs).min(bytes.len());
                self.gso_buf.extend_from_slice(&3u16.to_be_bytes());
                self.gso_buf
                    .extend_from_slice(&((first + i as u64) as u16).to_be_bytes());
                self.gso_buf.extend_from_slice(&bytes[start..end]);
            }
            match send_segmented(sock, &self.gso_buf, seg as u16) {
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
    /// per `sendmmsg`.
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
        let mut iovs: [libc::iovec; 2 * BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2 * BATCH];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty message.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let count = count.min(BATCH);
        for (i, h) in self.headers.iter_mut().enumerate().take(count) {
            h[..2].copy_from_slice(&3u16.to_be_bytes());
            h[2..].copy_from_slice(&((first + i as u64) as u16).to_be_bytes());
            let start = (i * bs).min(bytes.len());
            let end = ((i + 1) * bs).min(bytes.len());
            iovs[2 * i] = libc::iovec {
                iov_base: h.as_mut_ptr().cast(),
                iov_len: 4,
            };
            iovs[2 * i + 1] = libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: bytes[start..].as_ptr().cast_mut().cast(),
                iov_len: end - start,
            };
            msgs[i].msg_hdr.msg_iov = &mut iovs[2 * i];
            msgs[i].msg_hdr.msg_iovlen = 2;
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

/// One `sendmsg` of `buf` with a `UDP_SEGMENT` control message: the kernel sends it as
/// datagrams of `seg` bytes (the last one shorter).
fn send_segmented(sock: &UdpSocket, buf: &[u8], seg: u16) -> io::Result<()> {
    const SPACE: usize = 32; // >= CMSG_SPACE(sizeof(u16)) on every Linux ABI
    #[repr(C, align(8))]
    struct Control([u8; SPACE]);
    let mut control = Control([0; SPACE]);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_* only compute sizes and walk the buffer set up just above, which is large
    // and aligned enough for one cmsghdr carrying a u16; sendmsg only reads `buf`.
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
