//! Protocol behaviour over real UDP, driven packet by packet from the test: client ERROR, duplicate
//! and partial ACKs, the transfer cap, stalled clients, confinement, virtual files, uploads,
//! malformed packets, packets from foreign ports, over-long names and shutdown.

mod tftp_support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netboot::tftp::{
    Content, DirResolver, ErrorCode, Packet, TftpConfig, TftpSettings, VirtualResolver,
};
use tftp_support::{
    make_file, require_tool, run_ok, sha256_file, tempdir, Got, RawClient, TestServer,
};

const SHORT: Duration = Duration::from_millis(300);

fn blocks(n: u64) -> u64 {
    n * 512
}

#[test]
fn client_error_ends_the_transfer_at_once_and_frees_the_slot() {
    let root = tempdir();
    make_file(root.path(), "f", blocks(10));
    // One slot, and retransmissions every 300 ms if the transfer were still alive.
    let server = TestServer::dir(root.path(), |c| {
        c.max_transfers = 1;
        c.timeout_ms = 300;
        c.retries = 5;
    });
    let mut probe = RawClient::new(server.addr);
    probe.read_request("f", &[("tsize", "0")]);
    assert_eq!(
        probe.expect(SHORT, "OACK"),
        Got::Oack(vec![("tsize".into(), "5120".into())])
    );
    // A tsize probe: the client only wanted the size.
    probe.send(&Packet::Error {
        code: ErrorCode::OptionRefused,
        message: "just the size".into(),
    });
    // The slot is free at once: a second client is served, not told the server is busy.
    let mut next = RawClient::new(server.addr);
    let start = Instant::now();
    loop {
        next.read_request("f", &[]);
        match next.expect(SHORT, "DATA 1 or busy") {
            Got::Data(1, d) => {
                assert_eq!(d.len(), 512);
                break;
            }
            Got::Error(0, m) if m.contains("busy") && start.elapsed() < SHORT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!(
                "second client got {other:?} {:?} after the ERROR",
                start.elapsed()
            ),
        }
    }
    // And the probed transfer never retransmits its OACK (it would after 300 ms).
    assert_eq!(probe.recv(Duration::from_millis(1000)), None);
}

#[test]
fn duplicate_ack_resends_at_once() {
    let root = tempdir();
    make_file(root.path(), "f", blocks(5));
    // A 5 s retransmission timeout: anything that arrives sooner was a reaction to our ACK.
    let server = TestServer::dir(root.path(), |c| c.timeout_ms = 5000);
    let mut c = RawClient::new(server.addr);
    c.read_request("f", &[]);
    let Got::Data(1, d1) = c.expect(SHORT, "DATA 1") else {
        panic!("no DATA 1")
    };
    c.ack(1);
    let Got::Data(2, d2) = c.expect(SHORT, "DATA 2") else {
        panic!("no DATA 2")
    };
    assert_ne!(d1, d2);
    // We "lost" DATA 2 and our timer fired: ACK 1 again.
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    c.ack(1);
    assert_eq!(c.expect(SHORT, "DATA 2 again"), Got::Data(2, d2));
    assert!(sent.elapsed() < Duration::from_secs(1));
    c.ack(2);
    assert!(matches!(c.expect(SHORT, "DATA 3"), Got::Data(3, _)));
}

#[test]
fn ack_inside_the_window_resends_from_there_at_once() {
    let root = tempdir();
    make_file(root.path(), "f", blocks(20));
    let server = TestServer::dir(root.path(), |c| c.timeout_ms = 5000);
    let mut c = RawClient::new(server.addr);
    c.read_request("f", &[("windowsize", "4"), ("blksize", "512")]);
    assert!(matches!(c.expect(SHORT, "OACK"), Got::Oack(_)));
    c.ack(0);
    let mut got = Vec::new();
    for _ in 0..4 {
        let Got::Data(n, d) = c.expect(SHORT, "window 1..4") else {
            panic!("expected DATA")
        };
        got.push((n, d));
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // Block 3 "went missing": acknowledge 2; the server goes back to 3 immediately.
    c.ack(2);
    let again: Vec<u16> = (0..4)
        .map(|_| match c.expect(SHORT, "window 3..6") {
            Got::Data(n, _) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(again, [3, 4, 5, 6]);
}

#[test]
fn transfer_cap_answers_busy_and_a_stalled_client_frees_its_slot() {
    let root = tempdir();
    make_file(root.path(), "f", blocks(3));
    let server = TestServer::dir(root.path(), |c| {
        c.max_transfers = 2;
        c.timeout_ms = 100;
        c.max_timeout_ms = 400;
        c.retries = 2;
    });
    // Two clients ask and then never answer.
    let mut stalled: Vec<RawClient> = (0..2).map(|_| RawClient::new(server.addr)).collect();
    for s in &mut stalled {
        s.read_request("f", &[]);
        assert!(matches!(s.expect(SHORT, "DATA 1"), Got::Data(1, _)));
    }
    let mut third = RawClient::new(server.addr);
    third.read_request("f", &[]);
    match third.expect(SHORT, "busy ERROR") {
        Got::Error(0, m) => assert!(m.contains("server busy: 2 transfers"), "{m}"),
        other => panic!("third client got {other:?}"),
    }
    // A stalled client sees DATA 1 twice more (100 ms, then 200 ms later), then an ERROR.
    let s = &mut stalled[0];
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while let Some((g, _)) = s.recv(Duration::from_secs(2)) {
        seen.push((g, t0.elapsed()));
        if matches!(seen.last(), Some((Got::Error(..), _))) {
            break;
        }
    }
    let kinds: Vec<&Got> = seen.iter().map(|s| &s.0).collect();
    assert!(
        matches!(
            kinds[..],
            [Got::Data(1, _), Got::Data(1, _), Got::Error(0, _)]
        ),
        "{kinds:?}"
    );
    assert!(
        seen[1].1 - seen[0].1 >= Duration::from_millis(150),
        "backoff doubles: {seen:?}"
    );
    // Both slots are free now.
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..2 {
        let mut c = RawClient::new(server.addr);
        c.read_request("f", &[]);
        assert!(matches!(c.expect(SHORT, "DATA 1"), Got::Data(1, _)));
        c.send(&Packet::Error {
            code: ErrorCode::NotDefined,
            message: "done".into(),
        });
    }
}

#[test]
fn per_client_cap_refuses_with_the_reason_and_other_addresses_are_served() {
    let root = tempdir();
    let uploads = tempdir();
    let sha = make_file(root.path(), "f", 300_000);
    let server = TestServer::dir(root.path(), |c| {
        c.max_transfers = 16;
        c.max_transfers_per_client = 4;
        c.timeout_ms = 5000;
        c.upload_root = Some(uploads.path().to_path_buf());
    });
    // Four transfers from 127.0.0.1 that never answer.
    let mut stalled: Vec<RawClient> = (0..4).map(|_| RawClient::new(server.addr)).collect();
    for s in &mut stalled {
        s.read_request("f", &[]);
        assert!(matches!(s.expect(SHORT, "DATA 1"), Got::Data(1, _)));
    }
    // The fifth from that address is told why.
    let mut fifth = RawClient::new(server.addr);
    fifth.read_request("f", &[]);
    assert_eq!(
        fifth.expect(SHORT, "ERROR"),
        Got::Error(
            0,
            "too many transfers from this address: 4 in progress".into()
        )
    );
    // Writes count too.
    fifth.send_raw(b"\0\x02up\0octet\0");
    let refused = fifth.expect(SHORT, "ERROR");
    assert!(
        matches!(&refused, Got::Error(0, m) if m.starts_with("too many")),
        "{refused:?}"
    );
    // Another address gets the whole file meanwhile.
    let got =
        RawClient::from(server.addr, std::net::Ipv4Addr::new(127, 0, 0, 2)).download("f", 512);
    assert_eq!(got, (sha, 300_000));
    // One stalled client gives up: its address has a slot again.
    stalled[0].send(&Packet::Error {
        code: ErrorCode::NotDefined,
        message: "bye".into(),
    });
    let start = Instant::now();
    loop {
        let mut c = RawClient::new(server.addr);
        c.read_request("f", &[]);
        match c.expect(SHORT, "DATA 1 or ERROR") {
            Got::Data(1, _) => break,
            Got::Error(0, m) if m.starts_with("too many") && start.elapsed() < SHORT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => panic!("after a slot was freed: {other:?}"),
        }
    }
}

#[test]
fn escapes_are_access_violations_and_absolute_means_root_relative() {
    let base = tempdir();
    let root = base.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/motd"), b"inside\n").unwrap();
    std::fs::write(base.path().join("secret"), b"outside\n").unwrap();
    std::os::unix::fs::symlink(base.path().join("secret"), root.join("out")).unwrap();
    std::os::unix::fs::symlink(base.path(), root.join("outdir")).unwrap();
    let server = TestServer::dir(&root, |_| {});
    let secret_abs = base.path().join("secret").display().to_string();
    let cases: &[(&str, u16)] = &[
        ("../secret", 2),
        ("etc/../../secret", 2),
        ("//etc/motd", 2),
        ("..\\secret", 2),
        ("etc\\motd", 2),
        ("out", 2),
        ("outdir/secret", 2),
        ("/etc/passwd", 1), // root-relative: root/etc/passwd does not exist
        (&secret_abs, 1),   // likewise: no leak of the real absolute path
        ("etc", 2),         // a directory is not a file
    ];
    for (name, code) in cases {
        let mut c = RawClient::new(server.addr);
        c.read_request(name, &[]);
        match c.expect(SHORT, "ERROR") {
            Got::Error(got, msg) => assert_eq!(got, *code, "{name:?}: {msg}"),
            other => panic!("{name:?} got {other:?}"),
        }
    }
    // The leading slash is dropped, as with tftpd-hpa -s.
    let mut c = RawClient::new(server.addr);
    c.read_request("/etc/motd", &[]);
    assert_eq!(c.expect(SHORT, "DATA"), Got::Data(1, b"inside\n".to_vec()));
}

#[test]
fn virtual_files_are_rendered_per_client() {
    let root = tempdir();
    std::fs::write(root.path().join("kernel"), b"KERNEL").unwrap();
    let settings = TftpSettings::try_from(TftpConfig::new(root.path())).unwrap();
    let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&renders);
    let resolver = VirtualResolver::new()
        .with_generator(move |client: SocketAddr, path| {
            let parts: Vec<&str> = path.components().collect();
            match parts.as_slice() {
                ["labboot", board, "boot.scr"] => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Some(Ok(Content::from_bytes(
                        format!("echo board {board} client {client}\n").into_bytes(),
                    )))
                }
                _ => None,
            }
        })
        .with_fallback(DirResolver::new(root.path()).unwrap());
    let server = TestServer::start(settings, resolver);

    for board in ["b1", "b2"] {
        let mut c = RawClient::new(server.addr);
        c.read_request(&format!("labboot/{board}/boot.scr"), &[]);
        let want = format!("echo board {board} client {}\n", c.local_addr());
        assert_eq!(c.expect(SHORT, "DATA"), Got::Data(1, want.into_bytes()));
        c.ack(1);
    }
    // A real client, and the fallback to the directory.
    require_tool("curl");
    let port = server.port();
    let out = run_ok(Command::new("curl").args([
        "-s",
        &format!("tftp://127.0.0.1:{port}/labboot/b9/boot.scr"),
    ]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("echo board b9 client 127.0.0.1:"),
        "{text}"
    );
    let out = run_ok(Command::new("curl").args(["-s", &format!("tftp://127.0.0.1:{port}/kernel")]));
    assert_eq!(out.stdout, b"KERNEL");
    assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn writes_are_refused_unless_an_upload_root_is_set() {
    let root = tempdir();
    let server = TestServer::dir(root.path(), |_| {});
    let c = RawClient::new(server.addr);
    c.send_raw(b"\x00\x02up.bin\x00octet\x00");
    let mut c = c;
    match c.expect(SHORT, "ERROR") {
        Got::Error(2, m) => assert!(m.contains("writes are disabled"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn uploads_land_in_the_upload_root_only() {
    require_tool("tftp");
    require_tool("curl");
    let root = tempdir();
    let uploads = tempdir();
    let src = tempdir();
    let sha = make_file(src.path(), "fw.bin", 300_000);
    let server = TestServer::dir(root.path(), |c| c.upload_root = Some(uploads.path().into()));
    let port = server.port().to_string();
    // tftp-hpa put (lock-step, 512) and curl -T with a larger block size.
    run_ok(
        Command::new("tftp")
            .args(["-m", "binary", "127.0.0.1", &port, "-c", "put"])
            .arg(src.path().join("fw.bin"))
            .arg("a.bin"),
    );
    run_ok(
        Command::new("curl")
            .args(["-s", "--tftp-blksize", "1468", "-T"])
            .arg(src.path().join("fw.bin"))
            .arg(format!("tftp://127.0.0.1:{port}/b.bin")),
    );
    assert_eq!(sha256_file(&uploads.path().join("a.bin")), sha);
    assert_eq!(sha256_file(&uploads.path().join("b.bin")), sha);
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "nothing in the read root"
    );
    // No overwrite, no escape.
    for (name, code) in [("a.bin", 6u16), ("../x.bin", 2)] {
        let mut c = RawClient::new(server.addr);
        c.send_raw(format!("\x00\x02{name}\x00octet\x00").as_bytes());
        match c.expect(SHORT, "ERROR") {
            Got::Error(got, m) => assert_eq!(got, code, "{name}: {m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    // Exactly the two uploads, no temporary leftovers.
    let mut names: Vec<String> = std::fs::read_dir(uploads.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.bin", "b.bin"]);
}

#[test]
fn malformed_packets_never_stop_the_server() {
    let root = tempdir();
    std::fs::write(root.path().join("f"), b"ok").unwrap();
    let server = TestServer::dir(root.path(), |_| {});
    let mut c = RawClient::new(server.addr);
    // Garbage, truncated packets and stray ACK/DATA on the request port are dropped silently.
    for junk in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff",
        b"\x00\x04\x00\x01",
        b"\x00\x03\x00\x01data",
    ] {
        c.send_raw(junk);
    }
    assert_eq!(c.recv(Duration::from_millis(200)), None);
    // A malformed request gets ERROR 4 naming the field.
    c.send_raw(b"\x00\x01f\x00octet\x00blksize\x00");
    assert_eq!(
        c.expect(SHORT, "ERROR 4"),
        Got::Error(4, "RRQ: option \"blksize\" has no value".into())
    );
    c.send_raw(b"\x00\x01f\x00mail\x00");
    assert!(matches!(c.expect(SHORT, "ERROR 4"), Got::Error(4, m) if m.contains("mail")));
    // Garbage on a transfer socket is ignored too, and the transfer completes.
    let mut c = RawClient::new(server.addr);
    c.read_request("f", &[]);
    assert_eq!(c.expect(SHORT, "DATA"), Got::Data(1, b"ok".to_vec()));
    c.send(&Packet::Ack { block: 1 });
    let mut t = RawClient::new(server.addr);
    t.read_request("f", &[("blksize", "8")]);
    assert!(matches!(t.expect(SHORT, "OACK"), Got::Oack(_)));
    t.sock.send_to(b"\x00", t.tid.unwrap()).unwrap();
    t.sock.send_to(b"\x00\x09zz", t.tid.unwrap()).unwrap();
    t.ack(0);
    assert_eq!(t.expect(SHORT, "DATA"), Got::Data(1, b"ok".to_vec()));
}

#[test]
fn shutdown_tells_transfers_in_progress() {
    let root = tempdir();
    make_file(root.path(), "f", blocks(4));
    let server = TestServer::dir(root.path(), |c| c.timeout_ms = 5000);
    let mut c = RawClient::new(server.addr);
    c.read_request("f", &[]);
    assert!(matches!(c.expect(SHORT, "DATA 1"), Got::Data(1, _)));
    let t0 = Instant::now();
    drop(server);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "shutdown waited {:?}",
        t0.elapsed()
    );
    match c.expect(SHORT, "ERROR") {
        Got::Error(0, m) => assert!(m.contains("shutting down"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn netascii_reads_translate_line_ends() {
    let root = tempdir();
    std::fs::write(root.path().join("t.txt"), b"a\nb\n").unwrap();
    let server = TestServer::dir(root.path(), |_| {});
    let mut c = RawClient::new(server.addr);
    c.send_raw(b"\x00\x01t.txt\x00netascii\x00");
    assert_eq!(
        c.expect(SHORT, "DATA"),
        Got::Data(1, b"a\r\nb\r\n".to_vec())
    );
}

/// A socket on another port of 127.0.0.1 than the client's: a foreign transfer ID.
fn intruder() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(SHORT)).unwrap();
    s
}

/// The next datagram on `s` and where it came from, or `None` after its read timeout.
fn datagram(s: &std::net::UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70000];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn a_foreign_port_gets_error_5_and_the_read_goes_on() {
    let root = tempdir();
    let sha = make_file(root.path(), "f", blocks(3) + 100);
    let server = TestServer::dir(root.path(), |c| c.timeout_ms = 5000);
    let mut c = RawClient::new(server.addr);
    c.read_request("f", &[]);
    let mut got = Vec::new();
    let Got::Data(1, d) = c.expect(SHORT, "DATA 1") else {
        panic!("no DATA 1")
    };
    got.extend(d);
    let tid = c.tid.unwrap();
    let other = intruder();
    for block in 1..=4u16 {
        // An ACK of the block from a foreign port: ERROR 5 from the transfer's port to that
        // port, and nothing to the client.
        other
            .send_to(&Packet::Ack { block }.to_bytes(), tid)
            .unwrap();
        let (bytes, from) = datagram(&other).expect("an ERROR 5 for the foreign port");
        assert_eq!(from, tid, "answered from the transfer's port");
        assert_eq!(
            Packet::parse(&bytes).unwrap(),
            Packet::Error {
                code: ErrorCode::UnknownTransferId,
                message: "unknown transfer ID".into()
            }
        );
        // An ERROR from a foreign port is not answered.
        other
            .send_to(
                &Packet::Error {
                    code: ErrorCode::NotDefined,
                    message: "stop".into(),
                }
                .to_bytes(),
                tid,
            )
            .unwrap();
        assert_eq!(datagram(&other), None);
        // The client is told nothing, and its own ACK moves the transfer on.
        c.ack(block);
        if block < 4 {
            match c.expect(SHORT, "the next DATA") {
                Got::Data(n, d) if n == block + 1 => got.extend(d),
                other => panic!("after ACK {block}: {other:?}"),
            }
        }
    }
    assert_eq!(tftp_support::sha256(&got), sha);
    assert_eq!(c.recv(Duration::from_millis(200)), None, "the read is over");
}

#[test]
fn a_foreign_port_gets_error_5_and_the_write_goes_on() {
    let root = tempdir();
    let uploads = tempdir();
    let server = TestServer::dir(root.path(), |c| {
        c.upload_root = Some(uploads.path().into());
        c.timeout_ms = 5000;
    });
    let mut c = RawClient::new(server.addr);
    c.send_raw(b"\x00\x02up.bin\x00octet\x00");
    assert_eq!(c.expect(SHORT, "ACK 0"), Got::Ack(0));
    let other = intruder();
    other
        .send_to(
            &Packet::Data {
                block: 1,
                data: b"evil",
            }
            .to_bytes(),
            c.tid.unwrap(),
        )
        .unwrap();
    let (bytes, from) = datagram(&other).expect("an ERROR 5 for the foreign port");
    assert_eq!(from, c.tid.unwrap());
    assert!(matches!(
        Packet::parse(&bytes).unwrap(),
        Packet::Error {
            code: ErrorCode::UnknownTransferId,
            ..
        }
    ));
    c.send(&Packet::Data {
        block: 1,
        data: b"good",
    });
    assert_eq!(c.expect(SHORT, "ACK 1"), Got::Ack(1));
    assert_eq!(
        std::fs::read(uploads.path().join("up.bin")).unwrap(),
        b"good"
    );
}

#[test]
fn over_long_names_are_cut_in_error_packets() {
    let root = tempdir();
    let server = TestServer::dir(root.path(), |_| {});
    let cut = format!("{}…", "n".repeat(64));
    // A missing file (ERROR 1), a name the file system refuses (ERROR 0, ENAMETOOLONG), and one
    // that fills a 64 KiB request.
    for (len, code, tail) in [
        (200, 1, ": file not found"),
        (2000, 0, ": File name too long (os error 36)"),
        (65000, 0, ": File name too long (os error 36)"),
    ] {
        let name = "n".repeat(len);
        let mut c = RawClient::new(server.addr);
        c.read_request(&name, &[]);
        match c.expect(SHORT, "ERROR") {
            Got::Error(got, m) => {
                assert_eq!((got, m.as_str()), (code, format!("{cut}{tail}").as_str()));
                // Opcode, code, message, NUL.
                assert!(m.len() <= 512 - 5, "{} bytes", m.len());
            }
            other => panic!("{len}: {other:?}"),
        }
    }
    // A long name in a deep path that the kernel walks: still cut.
    let deep = "d/".repeat(3000) + "f";
    let mut c = RawClient::new(server.addr);
    c.read_request(&deep, &[]);
    match c.expect(SHORT, "ERROR") {
        Got::Error(_, m) => {
            assert!(m.starts_with(&format!("{}…: ", &deep[..64])), "{m}");
            assert!(m.len() < 200, "{} bytes", m.len());
        }
        other => panic!("{other:?}"),
    }
    // An over-long mode is cut in its ERROR 4 too, and the packet stays within 512 bytes.
    let mut c = RawClient::new(server.addr);
    let mut request = b"\x00\x01f\x00".to_vec();
    request.extend("m".repeat(3000).as_bytes());
    request.push(0);
    c.send_raw(&request);
    match c.expect(SHORT, "ERROR 4") {
        Got::Error(4, m) => {
            assert_eq!(
                m,
                format!(
                    "RRQ: mode \"{}…\" is not supported (use octet or netascii)",
                    "m".repeat(64)
                )
            );
        }
        other => panic!("{other:?}"),
    }
}
