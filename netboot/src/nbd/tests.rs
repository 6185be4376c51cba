//! In-process tests of the whole server over loopback with a raw-byte client: run-time removal
//! of exports, malformed and out-of-range requests, pipelining, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::proto::*;
use super::*;

/// Byte `i` of every test image.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn image(len: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(f.path(), data).unwrap();
    f
}

struct Running {
    addr: SocketAddr,
    table: ExportTable,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), crate::ServerError>>,
    budget: Arc<crate::nbd::budget::SharedBudget>,
}

async fn start(exports: Vec<Export>, cow_limit: u64) -> Running {
    let config = NbdConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cow_memory_bytes: cow_limit / 2,
        cow_limit_bytes: cow_limit,
        ..NbdConfig::default()
    };
    start_with(exports, config).await
}

async fn start_with(exports: Vec<Export>, config: NbdConfig) -> Running {
    let server = NbdServer::new(NbdSettings::try_from(config).unwrap()).unwrap();
    let table = server.table();
    let budget = server.budget();
    for e in exports {
        table.add(e).unwrap();
    }
    let listener = server.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.run(listener, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        table,
        stop: Some(tx),
        task,
        budget,
    }
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

struct Client {
    s: TcpStream,
    structured: bool,
}

/// Option replies up to and including the final ACK or error: (type, data).
async fn option_replies(s: &mut TcpStream) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h[..8], &REPLY_MAGIC.to_be_bytes());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0; len as usize];
        s.read_exact(&mut data).await.unwrap();
        out.push((kind, data));
        if kind != REP_INFO && kind != REP_SERVER {
            return out;
        }
    }
}

fn option(code: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

impl Client {
    /// Greets, optionally negotiates structured replies, and sends GO for `name`.
    async fn go(addr: SocketAddr, name: &str, structured: bool) -> Result<Client, u32> {
        Client::go_on(TcpStream::connect(addr).await.unwrap(), name, structured).await
    }

    /// [`Client::go`] on a connected socket.
    async fn go_on(mut s: TcpStream, name: &str, structured: bool) -> Result<Client, u32> {
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        s.write_all(&3u32.to_be_bytes()).await.unwrap();
        if structured {
            s.write_all(&option(OPT_STRUCTURED_REPLY, &[]))
                .await
                .unwrap();
            assert_eq!(option_replies(&mut s).await[0].0, REP_ACK);
        }
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&[0, 0]);
        s.write_all(&option(OPT_GO, &data)).await.unwrap();
        let replies = option_replies(&mut s).await;
        match replies.last().unwrap().0 {
            REP_ACK => Ok(Client { s, structured }),
            err => Err(err),
        }
    }

    async fn send(
        &mut self,
        kind: u16,
        flags: u16,
        handle: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) {
        let mut v = Vec::with_capacity(28 + data.len());
        v.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(data);
        self.s.write_all(&v).await.unwrap();
    }

    /// One reply: (handle, errno, data). Simple replies to reads carry `read_len` bytes.
    async fn reply(&mut self, read_len: usize) -> (u64, u32, Vec<u8>) {
        if !self.structured {
            let mut h = [0u8; 16];
            self.s.read_exact(&mut h).await.unwrap();
            assert_eq!(&h[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
            let errno = u32::from_be_bytes(h[4..8].try_into().unwrap());
            let handle = u64::from_be_bytes(h[8..16].try_into().unwrap());
            let mut data = vec![0; if errno == 0 { read_len } else { 0 }];
            self.s.read_exact(&mut data).await.unwrap();
            return (handle, errno, data);
        }
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).await.unwrap();
        assert_eq!(&h[..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let flags = u16::from_be_bytes(h[4..6].try_into().unwrap());
        assert_eq!(flags, REPLY_FLAG_DONE);
        let kind = u16::from_be_bytes(h[6..8].try_into().unwrap());
        let handle = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut payload = vec![0; len as usize];
        self.s.read_exact(&mut payload).await.unwrap();
        match kind {
            REPLY_TYPE_NONE => (handle, 0, Vec::new()),
            REPLY_TYPE_OFFSET_DATA => (handle, 0, payload[8..].to_vec()),
            REPLY_TYPE_ERROR => (
                handle,
                u32::from_be_bytes(payload[..4].try_into().unwrap()),
                Vec::new(),
            ),
            other => panic!("unexpected chunk type {other}"),
        }
    }

    /// Whether the server closed the connection (EOF or reset) within a few seconds.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

fn expected(offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len).map(pattern).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_export_closes_its_connections_only() {
    let a = image(1 << 20);
    let b = image(1 << 20);
    let server = start(
        vec![
            Export::open("a", a.path(), ExportMode::ReadOnly).unwrap(),
            Export::open("b", b.path(), ExportMode::CopyOnWrite).unwrap(),
        ],
        1 << 20,
    )
    .await;
    let mut on_a = Vec::new();
    for _ in 0..3 {
        on_a.push(Client::go(server.addr, "a", true).await.unwrap());
    }
    let mut on_b = Client::go(server.addr, "b", false).await.unwrap();
    for c in &mut on_a {
        c.send(CMD_READ, 0, 1, 4096, 100, &[]).await;
        assert_eq!(c.reply(100).await, (1, 0, expected(4096, 100)));
    }
    assert_eq!(server.table.connections("a"), Some(3));

    assert!(server.table.remove("a").is_some());
    for c in &mut on_a {
        assert!(
            c.closed().await,
            "connection to the removed export stays open"
        );
    }
    // A new client no longer finds it; the other export still works.
    assert_eq!(
        Client::go(server.addr, "a", true).await.err(),
        Some(REP_ERR_UNKNOWN)
    );
    on_b.send(CMD_READ, 0, 9, 0, 16, &[]).await;
    assert_eq!(on_b.reply(16).await, (9, 0, expected(0, 16)));
    // Added back at run time, it is served again.
    server
        .table
        .add(Export::open("a", a.path(), ExportMode::ReadOnly).unwrap())
        .unwrap();
    let mut again = Client::go(server.addr, "a", false).await.unwrap();
    again.send(CMD_READ, 0, 2, 100, 10, &[]).await;
    assert_eq!(again.reply(10).await, (2, 0, expected(100, 10)));
    server.stop().await;
    assert!(again.closed().await, "shutdown closes connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_replies_and_bad_frames_a_disconnect() {
    let f = image(100_000);
    let server = start(
        vec![
            Export::open("ro", f.path(), ExportMode::ReadOnly).unwrap(),
            Export::open("cow", f.path(), ExportMode::CopyOnWrite).unwrap(),
        ],
        64 * 1024,
    )
    .await;
    for structured in [false, true] {
        let mut c = Client::go(server.addr, "ro", structured).await.unwrap();
        c.send(CMD_READ, 0, 1, 99_990, 11, &[]).await;
        assert_eq!(c.reply(11).await.1, errno::EINVAL, "read past the end");
        c.send(CMD_READ, 0, 2, u64::MAX - 5, 10, &[]).await;
        assert_eq!(c.reply(10).await.1, errno::EINVAL, "offset overflow");
        c.send(CMD_READ, 0, 3, 0, MAX_PAYLOAD + 1, &[]).await;
        assert_eq!(c.reply(0).await.1, errno::EINVAL, "read above 32 MiB");
        c.send(CMD_WRITE, 0, 4, 0, 3, b"abc").await;
        assert_eq!(c.reply(0).await.1, errno::EPERM, "write to ro");
        c.send(CMD_WRITE_ZEROES, 0, 5, 0, 3, &[]).await;
        assert_eq!(c.reply(0).await.1, errno::EPERM, "zeroes to ro");
        c.send(77, 0, 6, 0, 0, &[]).await;
        assert_eq!(c.reply(0).await.1, errno::EINVAL, "unknown command");
        c.send(CMD_READ, 0, 7, 99_990, 10, &[]).await;
        assert_eq!(c.reply(10).await, (7, 0, expected(99_990, 10)));
        // A frame with a bad magic: the stream is out of step, so the server hangs up.
        c.s.write_all(&[0xde; 28]).await.unwrap();
        assert!(c.closed().await);
    }
    // A write announcing more than 32 MiB is not read: disconnect.
    let mut c = Client::go(server.addr, "cow", true).await.unwrap();
    c.send(CMD_WRITE, 0, 1, 0, MAX_PAYLOAD + 1, &[]).await;
    assert!(c.closed().await);
    // The overlay limit gives ENOSPC and leaves the connection usable.
    let mut c = Client::go(server.addr, "cow", true).await.unwrap();
    c.send(CMD_WRITE, 0, 1, 0, 40_000, &[1; 40_000]).await;
    assert_eq!(c.reply(0).await.1, 0);
    c.send(CMD_WRITE, 0, 2, 50_000, 40_000, &[2; 40_000]).await;
    assert_eq!(c.reply(0).await.1, errno::ENOSPC);
    c.send(CMD_READ, 0, 3, 39_998, 4, &[]).await;
    let mut want = vec![1, 1];
    want.extend(expected(40_000, 2));
    assert_eq!(c.reply(4).await, (3, 0, want));
    // A client that hangs up mid-handshake or sends garbage options is just logged.
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let mut g = [0u8; 18];
    raw.read_exact(&mut g).await.unwrap();
    raw.write_all(&[0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9])
        .await
        .unwrap();
    raw.write_all(&[0; 8]).await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(raw.read(&mut b).await.unwrap(), 0);
    // And the server still serves.
    let mut c = Client::go(server.addr, "ro", false).await.unwrap();
    c.send(CMD_READ, 0, 1, 0, 8, &[]).await;
    assert_eq!(c.reply(8).await, (1, 0, expected(0, 8)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_all_complete_and_disc_waits_for_them() {
    let f = image(4 << 20);
    let server = start(
        vec![Export::open("cow", f.path(), ExportMode::CopyOnWrite).unwrap()],
        8 << 20,
    )
    .await;
    let mut c = Client::go(server.addr, "cow", true).await.unwrap();
    // 64 reads of 64 KiB sent back to back, then a write and a disconnect.
    for i in 0..64u64 {
        c.send(CMD_READ, 0, 1000 + i, i * 65536, 65536, &[]).await;
    }
    c.send(CMD_WRITE, CMD_FLAG_FUA, 5, 10, 4, b"data").await;
    c.send(CMD_FLUSH, 0, 6, 0, 0, &[]).await;
    c.send(CMD_DISC, 0, 7, 0, 0, &[]).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..66 {
        let (handle, errno, data) = c.reply(0).await;
        assert_eq!(errno, 0, "handle {handle}");
        if handle >= 1000 {
            assert_eq!(data, expected((handle - 1000) * 65536, 65536));
        }
        assert!(seen.insert(handle));
    }
    assert!(c.closed().await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_of_exactly_32_mib_are_served() {
    let len = MAX_PAYLOAD as u64 + 4096;
    let f = image(len);
    let server = start(
        vec![Export::open("rw", f.path(), ExportMode::ReadWrite).unwrap()],
        1 << 20,
    )
    .await;
    let mut c = Client::go(server.addr, "rw", true).await.unwrap();
    c.send(CMD_READ, 0, 1, 4096, MAX_PAYLOAD, &[]).await;
    let (handle, errno, data) = c.reply(0).await;
    assert_eq!((handle, errno), (1, 0));
    assert!(
        data == expected(4096, MAX_PAYLOAD as u64),
        "32 MiB read differs"
    );
    let payload: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 253) as u8).collect();
    c.send(CMD_WRITE, CMD_FLAG_FUA, 2, 0, MAX_PAYLOAD, &payload)
        .await;
    assert_eq!(c.reply(0).await, (2, 0, Vec::new()));
    c.send(CMD_DISC, 0, 3, 0, 0, &[]).await;
    assert!(c.closed().await);
    let on_disk = std::fs::read(f.path()).unwrap();
    assert!(on_disk[..MAX_PAYLOAD as usize] == payload[..]);
    assert!(on_disk[MAX_PAYLOAD as usize..] == expected(MAX_PAYLOAD as u64, 4096)[..]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_and_copied_reads_carry_the_same_bytes() {
    // Reads of `ro` and `cow` are spliced from the page cache (a `cow` range with a dirty block
    // gets the block's bytes written between the spliced runs); a read larger than the pipe is
    // copied. All must agree with the file and the write.
    let len = (10 << 20) + 123;
    let f = image(len);
    let server = start(
        vec![
            Export::open("ro", f.path(), ExportMode::ReadOnly).unwrap(),
            Export::open("cow", f.path(), ExportMode::CopyOnWrite).unwrap(),
        ],
        8 << 20,
    )
    .await;
    let cases: [(u64, u32); 7] = [
        (0, 4096),
        (1, 4095),
        (4093, 70_000),
        (8000, 4096),
        (len - 777, 777),
        (12_345, 9 << 20),
        (len - 1, 1),
    ];
    for structured in [false, true] {
        for name in ["ro", "cow"] {
            let mut c = Client::go(server.addr, name, structured).await.unwrap();
            if name == "cow" {
                c.send(CMD_WRITE, 0, 1, 8197, 3, b"abc").await;
                assert_eq!(c.reply(0).await, (1, 0, Vec::new()));
            }
            for (i, &(offset, n)) in cases.iter().enumerate() {
                let handle = 10 + i as u64;
                c.send(CMD_READ, 0, handle, offset, n, &[]).await;
                let (h, errno, data) = c.reply(n as usize).await;
                let mut want = expected(offset, u64::from(n));
                if name == "cow" {
                    for (k, b) in (8197u64..).zip(b"abc") {
                        if (offset..offset + u64::from(n)).contains(&k) {
                            want[(k - offset) as usize] = *b;
                        }
                    }
                }
                assert_eq!((h, errno), (handle, 0), "{name} read at {offset}");
                assert!(
                    data == want,
                    "{name} (structured {structured}): {n} bytes at {offset} differ"
                );
            }
            c.send(CMD_DISC, 0, 99, 0, 0, &[]).await;
            assert!(c.closed().await);
        }
    }
    server.stop().await;
}

/// A connection to `addr` from `ip` (127.0.0.x are distinct client addresses on Linux loopback).
async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    s.connect(addr).await.unwrap()
}

/// What a client sees first: the greeting, or the server closing the connection.
async fn first_bytes(s: &mut TcpStream) -> Option<[u8; 18]> {
    let mut greeting = [0u8; 18];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut greeting))
        .await
        .expect("the greeting or a close within 5 s");
    read.ok().map(|_| greeting)
}

#[tokio::test]
async fn idle_handshakes_of_one_address_cannot_take_every_slot() {
    let log = crate::testlog::Captured::start();
    let f = image(4096);
    let config = NbdConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: 12,
        max_handshakes_per_client: 4,
        ..NbdConfig::default()
    };
    let server = start_with(
        vec![Export::open("ro", f.path(), ExportMode::ReadOnly).unwrap()],
        config,
    )
    .await;
    // 127.0.0.1 opens 20 connections and never negotiates: 4 get the greeting, the other 16
    // are closed at once (without the cap, the first 12 would hold every slot).
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect_from("127.0.0.1", server.addr).await);
    }
    let mut greeted = 0;
    for s in &mut idle {
        if let Some(g) = first_bytes(s).await {
            assert_eq!(&g[..16], b"NBDMAGICIHAVEOPT");
            greeted += 1;
        }
    }
    assert_eq!(greeted, 4);
    // While those wait, 127.0.0.2 negotiates 6 connections (more than its handshake cap: a
    // connection in transmission no longer counts) and reads through each.
    let mut boards = Vec::new();
    for _ in 0..6 {
        let s = connect_from("127.0.0.2", server.addr).await;
        boards.push(
            Client::go_on(s, "ro", true)
                .await
                .expect("a real handshake"),
        );
    }
    for (i, c) in boards.iter_mut().enumerate() {
        c.send(CMD_READ, 0, i as u64, 100, 8, &[]).await;
        assert_eq!(c.reply(8).await, (i as u64, 0, expected(100, 8)));
    }
    // The refusals were logged once (throttled), naming the address and the cap.
    let refusals: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains("in the handshake already"))
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert!(
        refusals[0].starts_with("WARN")
            && refusals[0].contains("4 connections from 127.0.0.1 are in the handshake already"),
        "{}",
        refusals[0]
    );
    // An idle connection that leaves frees its address's slot.
    drop(idle);
    let mut again = connect_from("127.0.0.1", server.addr).await;
    let mut greeted = first_bytes(&mut again).await;
    for _ in 0..50 {
        if greeted.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        again = connect_from("127.0.0.1", server.addr).await;
        greeted = first_bytes(&mut again).await;
    }
    assert!(
        greeted.is_some(),
        "127.0.0.1 is served again once its idle connections left"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_flight_are_capped_across_connections() {
    let f = image(16 << 20);
    let config = NbdConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_bytes_in_flight: 1 << 20,
        ..NbdConfig::default()
    };
    let server = start_with(
        vec![Export::open("ro", f.path(), ExportMode::ReadOnly).unwrap()],
        config,
    )
    .await;
    // Four clients, each 16 reads of 512 KiB sent back to back before reading a reply: 32 MiB
    // asked for at once, through a 1 MiB budget.
    const READ: u32 = 512 << 10;
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let addr = server.addr;
        clients.push(tokio::spawn(async move {
            let mut client = Client::go(addr, "ro", false).await.unwrap();
            for i in 0..16u64 {
                let offset = (c * 16 + i) * u64::from(READ) % (16 << 20);
                client.send(CMD_READ, 0, offset, offset, READ, &[]).await;
            }
            for _ in 0..16 {
                let (offset, errno, data) = client.reply(READ as usize).await;
                assert_eq!(errno, 0);
                assert!(
                    data == expected(offset, u64::from(READ)),
                    "bytes at {offset}"
                );
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let budget = Arc::clone(&server.budget);
    eprintln!(
        "bytes in flight: peak {} of {}, {} waits",
        budget.peak(),
        budget.total(),
        budget.waits()
    );
    assert!(budget.peak() <= 1 << 20, "peak {}", budget.peak());
    assert!(budget.waits() > 0, "64 reads of 512 KiB never waited");
    assert_eq!(budget.in_use(), 0, "every request gave its bytes back");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_reply_cannot_hold_the_shared_budget() {
    let f = image(64 << 20);
    let config = NbdConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_bytes_in_flight: 16 << 20,
        send_timeout_secs: 1,
        ..NbdConfig::default()
    };
    let server = start_with(
        vec![Export::open("ro", f.path(), ExportMode::ReadOnly).unwrap()],
        config,
    )
    .await;
    // Eight reads of 8 MiB, pipelined, never read: their replies fill the socket and the
    // requests hold the whole 16 MiB budget.
    let mut stalled = Client::go(server.addr, "ro", false).await.unwrap();
    for i in 0..8u64 {
        stalled.send(CMD_READ, 0, i, i << 23, 8 << 20, &[]).await;
    }
    let budget = Arc::clone(&server.budget);
    let held = Instant::now();
    while budget.in_use() < 16 << 20 && held.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        budget.in_use(),
        16 << 20,
        "the stalled client holds the budget"
    );
    // Another board is served once the send timeout has closed the stalled connection.
    let asked = Instant::now();
    let mut board = Client::go(server.addr, "ro", false).await.unwrap();
    board.send(CMD_READ, 0, 1, 0, 65536, &[]).await;
    let (handle, errno, data) = tokio::time::timeout(Duration::from_secs(15), board.reply(65536))
        .await
        .expect("the other board is answered");
    assert_eq!((handle, errno), (1, 0));
    assert!(data == expected(0, 65536));
    let waited = asked.elapsed();
    eprintln!("a board waited {waited:?} behind a client that reads nothing (send timeout 1 s)");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // The stalled connection was closed.
    let mut sink = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection is closed");
    server.stop().await;
}
