//! `storm-boards`: a lab's Monday morning — N boards power on at once (`bench/storm/run.sh`).
//!
//! Usage: `storm-boards --server IP --boards N --kernel NAME --initrd NAME --nbd-export NAME
//! --nbd-bytes BYTES --interface IF [--window W] [--blksize B] [--kernel-bytes B]
//! [--initrd-bytes B] [--prefix BITS]`
//!
//! Runs in the client network namespace. Every board is a thread; all are released together by a
//! barrier and do what a netbooting board does, with the same protocols and the same sizes:
//!
//! 1. DHCP DISCOVER → OFFER → REQUEST → ACK from its own MAC (`02:00:00:00:HH:LL`), broadcast
//!    flag set, over one shared socket bound to `0.0.0.0:68` on IF (a receiver thread hands the
//!    replies to the boards by xid); each message is retransmitted after 1 s, up to 8 times.
//! 2. The leased address is added to IF (`ip addr add ADDR/BITS dev IF`).
//! 3. TFTP from that address: the kernel, then the initrd, with blksize, windowsize W and tsize
//!    (RFC 2348/7440/2349). Without windowsize in the OACK the window is 1 (RFC 7440). Only
//!    in-order blocks are kept; the last block of a window (or, on a gap, the last in-order
//!    block) is ACKed; 1 s timeout, 5 retries without progress. The byte counts are checked.
//! 4. NBD from that address (TCP, bound before connect) to port 10809: fixed newstyle handshake,
//!    NBD_OPT_GO for the export, NBD-BYTES read from offset 0 in 1 MiB NBD_CMD_READs with up to
//!    4 in flight (simple replies, error must be 0), then NBD_CMD_DISC. Done = "master readable".
//!
//! Printed: boards ok/failed (with the first failure reasons), p50/p99/max of the time to DHCP
//! ACK, to TFTP done and to "master readable" (from the common start), and the aggregate rate
//! (all TFTP + NBD bytes / wall time); last a `SUMMARY key=value …` line for the script. The
//! addresses added are removed at the end. Exit status 1 only on harness errors (bad arguments,
//! the DHCP socket), not on board failures.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// DHCP: wait for an answer this long before retransmitting.
const DHCP_TIMEOUT: Duration = Duration::from_secs(1);
/// DHCP: retransmissions of DISCOVER and of REQUEST.
const DHCP_RETRIES: u32 = 8;
/// TFTP: timeout before the last ACK (or the RRQ) is sent again.
const TFTP_TIMEOUT: Duration = Duration::from_secs(1);
/// TFTP: retransmissions without progress before the transfer is abandoned.
const TFTP_RETRIES: u32 = 5;
/// NBD: the port of the servers.
const NBD_PORT: u16 = 10809;
/// NBD: one read request.
const NBD_CHUNK: u64 = 1 << 20;
/// NBD: read requests in flight per board.
const NBD_IN_FLIGHT: usize = 4;
/// NBD: a read of the socket that takes longer than this fails the board.
const NBD_TIMEOUT: Duration = Duration::from_secs(60);
/// Failure reasons printed.
const KEEP_FAILURES: usize = 5;
/// Stack of a board's thread (buffers are on the heap).
const STACK: usize = 256 << 10;

/// The command line.
struct Args {
    server: Ipv4Addr,
    boards: usize,
    kernel: String,
    kernel_bytes: Option<u64>,
    initrd: String,
    initrd_bytes: Option<u64>,
    nbd_export: String,
    nbd_bytes: u64,
    window: u16,
    blksize: u16,
    interface: String,
    prefix: u8,
}

/// The usage line.
fn usage() -> String {
    "usage: storm-boards --server IP --boards N --kernel NAME --initrd NAME --nbd-export NAME \
     --nbd-bytes BYTES --interface IF [--window W] [--blksize B] [--kernel-bytes B] \
     [--initrd-bytes B] [--prefix BITS]"
        .to_string()
}

/// Parses the command line.
fn parse_args() -> Result<Args, String> {
    let mut kv: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            return Err(usage());
        }
        let Some(name) = k.strip_prefix("--") else {
            return Err(format!("unexpected argument {k}\n{}", usage()));
        };
        let v = it
            .next()
            .ok_or_else(|| format!("{k} needs a value\n{}", usage()))?;
        kv.insert(name.to_string(), v);
    }
    let need = |k: &str| {
        kv.get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required\n{}", usage()))
    };
    /// Parses one value or says which flag is wrong.
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("--{k}: bad value {v}"))
    }
    let opt_num =
        |k: &str| -> Result<Option<u64>, String> { kv.get(k).map(|v| num(k, v)).transpose() };
    let args = Args {
        server: num("server", &need("server")?)?,
        boards: num("boards", &need("boards")?)?,
        kernel: need("kernel")?,
        kernel_bytes: opt_num("kernel-bytes")?,
        initrd: need("initrd")?,
        initrd_bytes: opt_num("initrd-bytes")?,
        nbd_export: need("nbd-export")?,
        nbd_bytes: num("nbd-bytes", &need("nbd-bytes")?)?,
        window: num("window", kv.get("window").map_or("16", String::as_str))?,
        blksize: num("blksize", kv.get("blksize").map_or("1468", String::as_str))?,
        interface: need("interface")?,
        prefix: num("prefix", kv.get("prefix").map_or("16", String::as_str))?,
    };
    if args.boards == 0 || args.boards > 0xfffe {
        return Err("--boards: 1 to 65534".into());
    }
    if args.window == 0 || args.blksize < 8 {
        return Err("--window must be >= 1 and --blksize >= 8".into());
    }
    Ok(args)
}

// --- DHCP ------------------------------------------------------------------------------------

/// What a board needs from a DHCP reply.
#[derive(Clone, Copy, Debug)]
struct DhcpReply {
    msg_type: u8,
    yiaddr: Ipv4Addr,
    server_id: Option<Ipv4Addr>,
}

/// Replies by xid, shared by the boards and the receiver thread.
type Waiters = Arc<Mutex<HashMap<u32, mpsc::Sender<DhcpReply>>>>;

/// A BOOTREQUEST of `msg_type` (1 DISCOVER, 3 REQUEST); `select` = (requested IP, server id).
fn dhcp_packet(
    xid: u32,
    mac: [u8; 6],
    msg_type: u8,
    select: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&0x8000u16.to_be_bytes()); // broadcast flag
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, msg_type]);
    p.extend_from_slice(&[61, 7, 1]);
    p.extend_from_slice(&mac);
    if let Some((ip, server)) = select {
        p.extend_from_slice(&[50, 4]);
        p.extend_from_slice(&ip.octets());
        p.extend_from_slice(&[54, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.extend_from_slice(&[55, 4, 1, 3, 66, 67]);
    p.push(255);
    p.resize(p.len().max(300), 0);
    p
}

/// Parses a BOOTREPLY: (xid, reply), or None if it is not one.
fn parse_dhcp(b: &[u8]) -> Option<(u32, DhcpReply)> {
    if b.len() < 240 || b[0] != 2 || b[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let xid = u32::from_be_bytes(b[4..8].try_into().ok()?);
    let yiaddr = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    let (mut msg_type, mut server_id) = (0, None);
    let mut i = 240;
    while i < b.len() {
        match b[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = *b.get(i + 1)? as usize;
                let data = b.get(i + 2..i + 2 + len)?;
                match (code, len) {
                    (53, 1) => msg_type = data[0],
                    (54, 4) => server_id = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
                    _ => {}
                }
                i += 2 + len;
            }
        }
    }
    Some((
        xid,
        DhcpReply {
            msg_type,
            yiaddr,
            server_id,
        },
    ))
}

/// Binds the shared DHCP client socket: 0.0.0.0:68, SO_BROADCAST, SO_BINDTODEVICE to `interface`.
fn dhcp_socket(interface: &str) -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind("0.0.0.0:68").map_err(|e| format!("bind 0.0.0.0:68: {e}"))?;
    sock.set_broadcast(true)
        .map_err(|e| format!("SO_BROADCAST: {e}"))?;
    socket2::SockRef::from(&sock)
        .bind_device(Some(interface.as_bytes()))
        .map_err(|e| format!("SO_BINDTODEVICE {interface}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

/// The receiver thread: hands every BOOTREPLY to the board waiting for its xid, until `stop`.
fn dhcp_receiver(sock: UdpSocket, waiters: Waiters, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some((xid, reply)) = parse_dhcp(&buf[..n]) {
            if let Some(tx) = waiters.lock().unwrap().get(&xid) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Sends `pkt` (again every second, up to DHCP_RETRIES times) until a reply of type `want`.
fn dhcp_exchange(
    sock: &UdpSocket,
    pkt: &[u8],
    rx: &mpsc::Receiver<DhcpReply>,
    want: u8,
) -> Result<DhcpReply, String> {
    let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    for _ in 0..=DHCP_RETRIES {
        sock.send_to(pkt, dst).map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + DHCP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) if r.msg_type == want => return Ok(r),
                Ok(r) if r.msg_type == 6 => return Err("DHCPNAK".into()),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Err("receiver gone".into()),
            }
        }
    }
    let what = if want == 2 { "OFFER" } else { "ACK" };
    Err(format!("no {what} after {} sends", DHCP_RETRIES + 1))
}

/// One board's DORA: the leased address.
fn dhcp_lease(
    sock: &UdpSocket,
    waiters: &Waiters,
    xid: u32,
    mac: [u8; 6],
    server: Ipv4Addr,
) -> Result<Ipv4Addr, String> {
    let (tx, rx) = mpsc::channel();
    waiters.lock().unwrap().insert(xid, tx);
    let result = (|| {
        let offer = dhcp_exchange(sock, &dhcp_packet(xid, mac, 1, None), &rx, 2)?;
        let sid = offer.server_id.unwrap_or(server);
        let ack = dhcp_exchange(
            sock,
            &dhcp_packet(xid, mac, 3, Some((offer.yiaddr, sid))),
            &rx,
            5,
        )?;
        if ack.yiaddr.is_unspecified() {
            return Err("ACK without an address".to_string());
        }
        Ok(ack.yiaddr)
    })();
    waiters.lock().unwrap().remove(&xid);
    result
}

/// Adds `ip/prefix` to `interface`; true if it was added (false: it was there already).
fn add_address(ip: Ipv4Addr, prefix: u8, interface: &str) -> Result<bool, String> {
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{ip}/{prefix}"), "dev", interface])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("File exists") {
        Ok(false)
    } else {
        Err(format!("ip addr add {ip}/{prefix}: {}", err.trim()))
    }
}

// --- TFTP ------------------------------------------------------------------------------------

/// Is this I/O error a socket timeout?
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A TFTP ACK of `block`.
fn tftp_ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// Downloads `name` from `server`:69 through a socket bound to `local`: (bytes, window granted).
fn tftp_get(
    local: Ipv4Addr,
    server: Ipv4Addr,
    name: &str,
    blksize: u16,
    window: u16,
) -> Result<(u64, u16), String> {
    let sock = UdpSocket::bind((local, 0)).map_err(|e| format!("bind {local}: {e}"))?;
    sock.set_read_timeout(Some(TFTP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut rrq = vec![0u8, 1];
    for s in [
        name,
        "octet",
        "blksize",
        &blksize.to_string(),
        "windowsize",
        &window.to_string(),
        "tsize",
        "0",
    ] {
        rrq.extend_from_slice(s.as_bytes());
        rrq.push(0);
    }
    let to69 = SocketAddr::V4(SocketAddrV4::new(server, 69));
    sock.send_to(&rrq, to69)
        .map_err(|e| format!("send RRQ: {e}"))?;
    let (mut blk, mut win) = (512u64, 1u64);
    let mut tsize: Option<u64> = None;
    let mut peer: Option<SocketAddr> = None;
    let (mut received, mut bytes, mut last_acked) = (0u64, 0u64, 0u64);
    let (mut gap_acked, mut oack_seen, mut retries) = (false, false, 0u32);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if is_timeout(&e) => {
                retries += 1;
                if retries > TFTP_RETRIES {
                    return Err(format!("timeout at block {received} ({bytes} bytes)"));
                }
                match peer {
                    None => sock.send_to(&rrq, to69),
                    Some(p) => sock.send_to(&tftp_ack(received as u16), p),
                }
                .map_err(|e| format!("send: {e}"))?;
                last_acked = received;
                gap_acked = false;
                continue;
            }
            Err(e) => return Err(format!("recv: {e}")),
        };
        if from.ip() != server || n < 4 {
            continue;
        }
        match peer {
            None => peer = Some(from),
            Some(p) if p != from => continue,
            Some(_) => {}
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        match op {
            6 if received == 0 => {
                if !oack_seen {
                    oack_seen = true;
                    win = 1;
                    let mut parts = buf[2..n].split(|&c| c == 0);
                    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                        let k = String::from_utf8_lossy(k).to_ascii_lowercase();
                        let v: Option<u64> =
                            std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
                        match (k.as_str(), v) {
                            ("blksize", Some(v)) => blk = v,
                            ("windowsize", Some(v)) => win = v.max(1),
                            ("tsize", Some(v)) => tsize = Some(v),
                            _ => {}
                        }
                    }
                }
                sock.send_to(&tftp_ack(0), from)
                    .map_err(|e| format!("send: {e}"))?;
                retries = 0;
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                let len = (n - 4) as u64;
                if block == (received + 1) as u16 {
                    received += 1;
                    bytes += len;
                    retries = 0;
                    gap_acked = false;
                    let last = len < blk;
                    if last || received - last_acked >= win {
                        sock.send_to(&tftp_ack(block), from)
                            .map_err(|e| format!("send: {e}"))?;
                        last_acked = received;
                    }
                    if last {
                        if let Some(t) = tsize.filter(|&t| t != bytes) {
                            return Err(format!("got {bytes} bytes, tsize said {t}"));
                        }
                        return Ok((bytes, win as u16));
                    }
                } else if !gap_acked {
                    sock.send_to(&tftp_ack(received as u16), from)
                        .map_err(|e| format!("send: {e}"))?;
                    last_acked = received;
                    gap_acked = true;
                }
            }
            5 => {
                let code = u16::from_be_bytes([buf[2], buf[3]]);
                let msg = String::from_utf8_lossy(&buf[4..n]);
                return Err(format!("TFTP error {code}: {}", msg.trim_end_matches('\0')));
            }
            _ => {}
        }
    }
}

// --- NBD -------------------------------------------------------------------------------------

/// NBD: the option haggling magic.
const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// NBD: the option reply magic.
const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// NBD: the request magic.
const REQUEST_MAGIC: u32 = 0x2560_9513;
/// NBD: the simple reply magic.
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// A TCP connection to `to` from `local` (bound before connect, any port).
fn tcp_connect_from(local: Ipv4Addr, to: SocketAddrV4) -> Result<TcpStream, String> {
    use socket2::{Domain, Socket, Type};
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(&SocketAddrV4::new(local, 0).into())
        .map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(&to.into())
        .map_err(|e| format!("connect {to}: {e}"))?;
    Ok(socket.into())
}

/// Reads a big-endian u16/u32/u64 at `at` of `b`.
fn be(b: &[u8], at: usize, width: usize) -> u64 {
    b[at..at + width]
        .iter()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// An NBD request of `kind` (0 read, 2 disconnect).
fn nbd_request(kind: u16, handle: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut r = [0u8; 28];
    r[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    r[6..8].copy_from_slice(&kind.to_be_bytes());
    r[8..16].copy_from_slice(&handle.to_be_bytes());
    r[16..24].copy_from_slice(&offset.to_be_bytes());
    r[24..28].copy_from_slice(&len.to_be_bytes());
    r
}

/// Handshake (fixed newstyle, NBD_OPT_GO for `export`), then reads `total` bytes from offset 0.
fn nbd_read(local: Ipv4Addr, server: Ipv4Addr, export: &str, total: u64) -> Result<u64, String> {
    let io = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
    let mut s = tcp_connect_from(local, SocketAddrV4::new(server, NBD_PORT))?;
    s.set_nodelay(true).map_err(io("nodelay"))?;
    s.set_read_timeout(Some(NBD_TIMEOUT))
        .map_err(io("timeout"))?;
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).map_err(io("greeting"))?;
    if &hello[0..8] != b"NBDMAGIC" || be(&hello, 8, 8) != IHAVEOPT {
        return Err("not a newstyle NBD server".into());
    }
    let flags = be(&hello, 16, 2) as u32;
    if flags & 1 == 0 {
        return Err("server without fixed newstyle".into());
    }
    let no_zeroes = flags & 2;
    let mut opt = Vec::with_capacity(32 + export.len());
    opt.extend_from_slice(&(1 | no_zeroes).to_be_bytes());
    opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
    opt.extend_from_slice(&7u32.to_be_bytes()); // NBD_OPT_GO
    opt.extend_from_slice(&(4 + export.len() as u32 + 2).to_be_bytes());
    opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
    opt.extend_from_slice(export.as_bytes());
    opt.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&opt).map_err(io("NBD_OPT_GO"))?;
    let mut size = None;
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).map_err(io("option reply"))?;
        if be(&h, 0, 8) != OPT_REPLY_MAGIC {
            return Err("bad option reply magic".into());
        }
        let kind = be(&h, 12, 4) as u32;
        let mut data = vec![0u8; be(&h, 16, 4) as usize];
        s.read_exact(&mut data).map_err(io("option reply data"))?;
        if kind & 0x8000_0000 != 0 {
            return Err(format!(
                "NBD_OPT_GO refused ({kind:#x}): {}",
                String::from_utf8_lossy(&data)
            ));
        }
        if kind == 3 && data.len() >= 12 && be(&data, 0, 2) == 0 {
            size = Some(be(&data, 2, 8)); // NBD_INFO_EXPORT
        }
        if kind == 1 {
            break; // NBD_REP_ACK: transmission phase
        }
    }
    let size = size.ok_or("no NBD_INFO_EXPORT")?;
    if size < total {
        return Err(format!("export has {size} bytes, {total} wanted"));
    }
    let mut buf = vec![0u8; NBD_CHUNK as usize];
    let mut pending: HashMap<u64, usize> = HashMap::new();
    let (mut next, mut done) = (0u64, 0u64);
    /// Sends the read at `*next` (handle = offset) and advances it.
    fn send_next(
        s: &mut TcpStream,
        pending: &mut HashMap<u64, usize>,
        next: &mut u64,
        total: u64,
    ) -> Result<(), String> {
        let len = NBD_CHUNK.min(total - *next);
        s.write_all(&nbd_request(0, *next, *next, len as u32))
            .map_err(|e| format!("NBD_CMD_READ: {e}"))?;
        pending.insert(*next, len as usize);
        *next += len;
        Ok(())
    }
    while next < total && pending.len() < NBD_IN_FLIGHT {
        send_next(&mut s, &mut pending, &mut next, total)?;
    }
    while !pending.is_empty() {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).map_err(io("reply"))?;
        if be(&h, 0, 4) as u32 != SIMPLE_REPLY_MAGIC {
            return Err(format!("bad reply magic {:#x}", be(&h, 0, 4)));
        }
        let (error, handle) = (be(&h, 4, 4), be(&h, 8, 8));
        if error != 0 {
            return Err(format!("read at {handle} failed: error {error}"));
        }
        let len = pending
            .remove(&handle)
            .ok_or_else(|| format!("reply to unknown handle {handle}"))?;
        s.read_exact(&mut buf[..len]).map_err(io("read data"))?;
        done += len as u64;
        if next < total {
            send_next(&mut s, &mut pending, &mut next, total)?;
        }
    }
    let _ = s.write_all(&nbd_request(2, 0, 0, 0));
    Ok(done)
}

// --- boards ----------------------------------------------------------------------------------

/// What one board did.
#[derive(Default)]
struct Board {
    ack: Option<Instant>,
    tftp: Option<Instant>,
    master: Option<Instant>,
    bytes: u64,
    window: Option<u16>,
    added: Option<Ipv4Addr>,
    failure: Option<(&'static str, String)>,
}

/// Everything the boards share.
struct Shared {
    args: Args,
    dhcp: UdpSocket,
    waiters: Waiters,
    barrier: Barrier,
}

/// Board `i` (from 0) powers on: DHCP, address, TFTP kernel + initrd, NBD.
fn run_board(sh: &Shared, i: usize) -> Board {
    let a = &sh.args;
    let n = (i + 1) as u16;
    let mac = [0x02, 0, 0, 0, (n >> 8) as u8, n as u8];
    let xid = (std::process::id() << 16) ^ (u32::from(n) * 0x9E37) ^ 0x5707_0000;
    let mut b = Board::default();
    sh.barrier.wait();
    let ip = match dhcp_lease(&sh.dhcp, &sh.waiters, xid, mac, a.server) {
        Ok(ip) => ip,
        Err(e) => {
            b.failure = Some(("dhcp", e));
            return b;
        }
    };
    b.ack = Some(Instant::now());
    match add_address(ip, a.prefix, &a.interface) {
        Ok(true) => b.added = Some(ip),
        Ok(false) => {}
        Err(e) => {
            b.failure = Some(("address", e));
            return b;
        }
    }
    for (step, name, want) in [
        ("tftp kernel", &a.kernel, a.kernel_bytes),
        ("tftp initrd", &a.initrd, a.initrd_bytes),
    ] {
        match tftp_get(ip, a.server, name, a.blksize, a.window) {
            Ok((got, _)) if want.is_some_and(|w| w != got) => {
                b.failure = Some((step, format!("{got} bytes, expected {}", want.unwrap_or(0))));
                return b;
            }
            Ok((got, win)) => {
                b.bytes += got;
                b.window = Some(b.window.map_or(win, |w| w.min(win)));
            }
            Err(e) => {
                b.failure = Some((step, format!("{ip}: {e}")));
                return b;
            }
        }
    }
    b.tftp = Some(Instant::now());
    match nbd_read(ip, a.server, &a.nbd_export, a.nbd_bytes) {
        Ok(got) => {
            b.bytes += got;
            b.master = Some(Instant::now());
        }
        Err(e) => b.failure = Some(("nbd", format!("{ip}: {e}"))),
    }
    b
}

/// Nearest-rank percentile `p` (0–100) of sorted seconds.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorted seconds from `start` to each board's `pick` instant.
fn times(boards: &[Board], start: Instant, pick: impl Fn(&Board) -> Option<Instant>) -> Vec<f64> {
    let mut v: Vec<f64> = boards
        .iter()
        .filter_map(&pick)
        .map(|t| (t - start).as_secs_f64())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Runs the storm and prints the figures.
fn run() -> Result<(), String> {
    let args = parse_args()?;
    let sock = dhcp_socket(&args.interface)?;
    let waiters: Waiters = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (sock, waiters, stop) = (
            sock.try_clone().map_err(|e| e.to_string())?,
            waiters.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || dhcp_receiver(sock, waiters, stop))
    };
    let n = args.boards;
    let sh = Arc::new(Shared {
        args,
        dhcp: sock,
        waiters,
        barrier: Barrier::new(n + 1),
    });
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let sh = sh.clone();
        let h = std::thread::Builder::new()
            .name(format!("board-{i}"))
            .stack_size(STACK)
            .spawn(move || run_board(&sh, i))
            .map_err(|e| format!("spawn board {i}: {e}"))?;
        handles.push(h);
    }
    let start = Instant::now();
    sh.barrier.wait();
    let boards: Vec<Board> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| Board {
                failure: Some(("panic", "the board's thread panicked".into())),
                ..Board::default()
            })
        })
        .collect();
    let wall = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    for ip in boards.iter().filter_map(|b| b.added) {
        let _ = Command::new("ip")
            .args([
                "addr",
                "del",
                &format!("{ip}/{}", sh.args.prefix),
                "dev",
                &sh.args.interface,
            ])
            .output();
    }

    let failed: Vec<(usize, &(&str, String))> = boards
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.failure.as_ref().map(|f| (i, f)))
        .collect();
    let ok = boards.iter().filter(|b| b.master.is_some()).count();
    println!("storm: {n} boards, {ok} ok, {} failed", failed.len());
    let mut by_step: HashMap<&str, usize> = HashMap::new();
    for (_, (step, _)) in &failed {
        *by_step.entry(step).or_default() += 1;
    }
    if !by_step.is_empty() {
        let mut steps: Vec<_> = by_step.into_iter().collect();
        steps.sort();
        let steps: Vec<String> = steps.iter().map(|(s, c)| format!("{s}: {c}")).collect();
        println!("  failures by step: {}", steps.join(", "));
    }
    for (i, (step, why)) in failed.iter().take(KEEP_FAILURES) {
        println!("  board {} failed at {step}: {why}", i + 1);
    }
    let mut windows: Vec<u16> = boards.iter().filter_map(|b| b.window).collect();
    windows.sort_unstable();
    windows.dedup();
    println!(
        "  TFTP window granted: {windows:?} (asked {})",
        sh.args.window
    );
    for (label, pick) in [
        (
            "DHCP ACK",
            (|b: &Board| b.ack) as fn(&Board) -> Option<Instant>,
        ),
        ("TFTP done", |b: &Board| b.tftp),
        ("master readable", |b: &Board| b.master),
    ] {
        let t = times(&boards, start, pick);
        println!(
            "  {label:<16} n={:<4} p50 {:8.3} s  p99 {:8.3} s  max {:8.3} s",
            t.len(),
            pct(&t, 50.0),
            pct(&t, 99.0),
            pct(&t, 100.0)
        );
    }
    let bytes: u64 = boards.iter().map(|b| b.bytes).sum();
    let bps = bytes as f64 / wall;
    println!(
        "  {bytes} bytes (TFTP + NBD) in {wall:.3} s: {:.1} MiB/s aggregate",
        bps / 1048576.0
    );
    let t = times(&boards, start, |b| b.master);
    println!(
        "SUMMARY boards={n} ok={ok} failed={} p50={:.3} p99={:.3} max={:.3} bytes={bytes} wall={wall:.3} bps={bps:.0}",
        failed.len(),
        pct(&t, 50.0),
        pct(&t, 99.0),
        pct(&t, 100.0)
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storm-boards: {e}");
            ExitCode::FAILURE
        }
    }
}
