//! Stalled transfers cost little (issue 16, "Faults and limits"): requests that are never
//! acknowledged hold no thread and a few KiB each, one address cannot take every slot, and once
//! their retransmission budget ends them, memory, threads and descriptors are back where they
//! were. Measured from /proc of this process, which runs the server.
//!
//! The tests of this file run one at a time (they measure the whole process).

mod tftp_support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tftp_support::{make_file, raise_fd_limit, tempdir, Got, ProcStat, RawClient, TestServer};

const MIB: u64 = 1024 * 1024;

/// One test at a time: each measures the whole process.
static SERIAL: Mutex<()> = Mutex::new(());

/// Threads running a read's data path right now (named by the server).
fn sender_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "tftp-read")
        .count()
}

/// Samples /proc every few milliseconds and keeps the highest figures.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(ProcStat, usize)>>,
}

impl PeakSampler {
    fn start() -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = ProcStat::now();
            let mut senders = 0;
            while !flag.load(Ordering::Relaxed) {
                let s = ProcStat::now();
                peak.rss_kib = peak.rss_kib.max(s.rss_kib);
                peak.threads = peak.threads.max(s.threads);
                peak.fds = peak.fds.max(s.fds);
                senders = senders.max(sender_threads());
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak, senders)
        });
        PeakSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// The peak figures, and the most data-path threads seen at once.
    fn finish(mut self) -> (ProcStat, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Waits until `ok(now)` holds (or `limit` passed); returns the last figures.
fn settle(limit: Duration, ok: impl Fn(&ProcStat) -> bool) -> ProcStat {
    let start = Instant::now();
    loop {
        let s = ProcStat::now();
        if ok(&s) || start.elapsed() > limit {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An RRQ for `name` in octet mode with `options`.
fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\0octet\0");
    for (k, v) in options {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b
}

/// Every packet waiting on `s`, parsed into (opcode, error message if any).
fn drain(s: &UdpSocket) -> Vec<(u16, String)> {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while let Ok(n) = s.recv(&mut buf) {
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        let msg = if op == 5 && n > 5 {
            String::from_utf8_lossy(&buf[4..n - 1]).into_owned()
        } else {
            String::new()
        };
        got.push((op, msg));
    }
    got
}

#[test]
fn a_storm_of_unacknowledged_requests_spares_other_addresses_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    assert!(raise_fd_limit() >= 4096, "this test needs 4096 open files");
    let root = tempdir();
    let sha = make_file(root.path(), "f4m", 4 * MIB);
    // The retransmission budget of a stalled transfer: 100 + 200 + 200 ms, then it is ended.
    let server = TestServer::dir(root.path(), |c| {
        c.max_transfers = 512;
        c.timeout_ms = 100;
        c.max_timeout_ms = 200;
        c.retries = 2;
    });
    let per_client = 32;
    // 2,000 clients on 127.0.0.1, each its own port; open before the baseline, kept open so
    // that no ICMP "port unreachable" ends a transfer early: only the budget does.
    let storm: Vec<UdpSocket> = (0..2000)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let real_ip = Ipv4Addr::new(127, 0, 0, 2);
    // Warm up (runtime threads, the resolver's blocking pool), then the baseline.
    assert_eq!(
        RawClient::from(server.addr, real_ip).download("f4m", 1468),
        (sha, 4 * MIB)
    );
    std::thread::sleep(Duration::from_millis(300));
    let base = ProcStat::now();
    let sampler = PeakSampler::start();

    // The storm: 2,000 RRQs over about a second, never acknowledged.
    let request = rrq("f4m", &[]);
    let addr = server.addr;
    let storm = std::thread::spawn(move || {
        for (i, s) in storm.iter().enumerate() {
            s.send_to(&request, addr).unwrap();
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        storm
    });
    // Meanwhile a client on another address fetches the file, again and again.
    let mut fetched = 0;
    let started = Instant::now();
    while !storm.is_finished() || fetched == 0 {
        let got = RawClient::from(server.addr, real_ip).download("f4m", 1468);
        assert_eq!(got, (sha, 4 * MIB), "download {fetched} during the storm");
        fetched += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the storm never ended"
        );
    }
    let storm = storm.join().unwrap();

    // The storm's address got 32 transfers at a time and the reason for every refusal; nobody
    // was told the server was busy.
    let replies: Vec<Vec<(u16, String)>> = storm.iter().map(drain).collect();
    let served = replies
        .iter()
        .filter(|r| r.iter().any(|p| p.0 == 3))
        .count();
    let refused: Vec<&String> = replies
        .iter()
        .flat_map(|r| r.iter().filter(|p| p.0 == 5).map(|p| &p.1))
        .filter(|m| m.starts_with("too many"))
        .collect();
    assert!(
        served >= per_client && !refused.is_empty(),
        "{served} storm requests served, {} refused",
        refused.len()
    );
    assert!(
        refused
            .iter()
            .all(|m| *m
                == &format!("too many transfers from this address: {per_client} in progress")),
        "{:?}",
        refused.first()
    );
    assert!(
        !replies.iter().flatten().any(|p| p.1.contains("busy")),
        "the per-address cap kept the total cap out of reach"
    );

    // After the budget: threads, descriptors and memory back to the baseline (tokio's idle
    // blocking threads linger for 10 s).
    let after = settle(Duration::from_secs(30), |s| {
        s.threads <= base.threads + 1 && s.fds <= base.fds && sender_threads() == 0
    });
    let (peak, senders) = sampler.finish();
    eprintln!(
        "storm: {fetched} downloads from {real_ip} during it; {served} of 2000 requests served; \
         baseline {base:?}; peak {peak:?} ({senders} data-path threads at once); after {after:?}"
    );
    assert_eq!(sender_threads(), 0, "data-path threads left");
    assert!(
        after.threads <= base.threads + 1,
        "threads: {base:?} → {after:?}"
    );
    assert!(after.fds <= base.fds, "descriptors: {base:?} → {after:?}");
    assert!(
        after.rss_kib <= base.rss_kib + 8 * 1024,
        "memory: {base:?} → {after:?}"
    );
    drop(storm);
}

#[test]
fn five_hundred_and_twelve_stalled_transfers_hold_at_most_64_mb_and_no_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    assert!(raise_fd_limit() >= 4096, "this test needs 4096 open files");
    let root = tempdir();
    let sha = make_file(root.path(), "f4m", 4 * MIB);
    // Stalled transfers live 5 s and are then ended without a retransmission: no thread can
    // be running one while they are measured.
    let server = TestServer::dir(root.path(), |c| {
        c.max_transfers = 512;
        c.timeout_ms = 5000;
        c.retries = 0;
    });
    // 16 addresses × 32 transfers (the per-address cap). Half ask plainly (blksize 512,
    // window 1: DATA 1 goes out), half ask for blksize 1468 and window 64 and acknowledge the
    // OACK (a whole 94 KB window goes out), then none answers again.
    let clients: Vec<(UdpSocket, bool)> = (0..512)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, 1, 1 + (i / 32) as u8);
            (UdpSocket::bind((ip, 0)).unwrap(), i % 2 == 1)
        })
        .collect();
    assert_eq!(
        RawClient::from(server.addr, Ipv4Addr::new(127, 0, 0, 2)).download("f4m", 1468),
        (sha, 4 * MIB)
    );
    std::thread::sleep(Duration::from_millis(300));
    let base = ProcStat::now();
    let sampler = PeakSampler::start();
    let plain = rrq("f4m", &[]);
    let windowed = rrq("f4m", &[("blksize", "1468"), ("windowsize", "64")]);
    let mut buf = [0u8; 2048];
    let first_started = Instant::now();
    for batch in clients.chunks(32) {
        for (s, win) in batch {
            s.send_to(if *win { &windowed } else { &plain }, server.addr)
                .unwrap();
        }
        for (s, win) in batch {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (n, from): (usize, SocketAddr) = s.recv_from(&mut buf).expect("no reply");
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            if *win {
                assert_eq!(op, 6, "OACK expected: {:?}", &buf[..n]);
                s.send_to(&[0, 4, 0, 0], from).unwrap();
                s.recv(&mut buf).expect("no DATA after ACK 0");
            }
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), 3, "DATA 1 expected");
        }
    }
    // Every slot is taken: one more request from a new address is told so.
    let mut extra = RawClient::from(server.addr, Ipv4Addr::new(127, 0, 2, 1));
    extra.read_request("f4m", &[]);
    match extra.expect(Duration::from_secs(2), "busy ERROR") {
        Got::Error(0, m) => assert!(m.contains("server busy: 512 transfers"), "{m}"),
        other => panic!("the 513th transfer got {other:?}"),
    }
    drop(extra);
    // The transfers wait parked: no thread each.
    std::thread::sleep(Duration::from_millis(300));
    let parked_threads = sender_threads();
    let during = ProcStat::now();
    assert!(
        first_started.elapsed() < Duration::from_millis(4500),
        "too slow to measure before the first transfers end"
    );
    let (peak, senders) = sampler.finish();
    let grown = peak.rss_kib.saturating_sub(base.rss_kib);
    eprintln!(
        "512 stalled: baseline {base:?}; peak {peak:?} (+{} KiB, {} KiB per transfer; {senders} \
         data-path threads at once); 300 ms after the last: {during:?}, {parked_threads} \
         data-path threads",
        grown,
        grown / 512
    );
    assert!(grown <= 64 * 1024, "512 stalled transfers took {grown} KiB");
    assert_eq!(parked_threads, 0, "stalled transfers hold threads");
    // Their budget ends them all (5 s); nothing is left.
    let after = settle(Duration::from_secs(30), |s| {
        s.fds <= base.fds && sender_threads() == 0
    });
    assert!(after.fds <= base.fds, "descriptors: {base:?} → {after:?}");
    drop(clients);
}
