//! 2,000 idle connections against `labboot nfs` at its default cap (1,024 connections; issue
//! 16's bad-input matrix): connections that never send an RPC do not lock clients out. At the
//! cap each new connection closes the one idle the longest, silent ones first, as the Linux
//! server does; a board mounted before the flood and a new client after it are both served
//! within seconds; the refusals are logged once a minute with a count, not once each; the
//! server's threads come back down once the flood is closed.

mod nfs_common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use nfs_common::{export_arg, start, Client, NFS};

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn two_thousand_idle_connections_do_not_lock_clients_out() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), b"served").unwrap();
    let server = start(0, &["--export".into(), export_arg("exp", d.path(), "ro")]);
    let pid = server.process.id();
    let before = threads(pid);

    // A board, mounted and active before the flood.
    let mut board = Client::connect(server.port, 0, 0);
    let root = board.mount("/exp").unwrap();
    assert_eq!(board.call_raw(NFS, 3, 0, &[]).0, 0);

    let began = Instant::now();
    let mut flood = Vec::with_capacity(2000);
    for _ in 0..2000 {
        flood.push(TcpStream::connect(("127.0.0.1", server.port)).expect("connect"));
    }
    let opened = began.elapsed();

    // A new client while the flood is open: connected and answered within seconds.
    let asked = Instant::now();
    let mut client = Client::connect(server.port, 1000, 1000);
    let attr = client
        .getattr(&root)
        .expect("a new client is served during the flood");
    let answered = asked.elapsed();
    assert_eq!(attr.kind, 2, "the export's root is a directory");
    assert!(
        answered < Duration::from_secs(10),
        "answered after {answered:?}"
    );
    // The board's connection had calls: it was not the one closed for the newcomers.
    assert_eq!(
        board.call_raw(NFS, 3, 0, &[]).0,
        0,
        "the board is still served"
    );
    let during = threads(pid);

    // Refusals are told once a minute with a count, not once per connection.
    let lines = server.process.lines();
    let evictions = lines
        .iter()
        .filter(|l| l.contains("max_connections"))
        .count();
    assert!(
        (1..=3).contains(&evictions),
        "{evictions} lines about the cap:\n{}",
        lines.join("\n")
    );

    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = threads(pid);
    while after > before + 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = threads(pid);
    }
    eprintln!(
        "nfs idle flood: 2,000 connections opened in {opened:?}; a new client answered in \
         {answered:?}; server threads {before} before, {during} during, {after} after"
    );
    assert!(during <= 1024 + before + 64, "{during} threads at the cap");
    assert!(
        after <= before + 8,
        "threads back down: {after} (before: {before})"
    );
}
