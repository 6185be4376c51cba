//! kill -9 during a TFTP transfer (issue 16, "Faults and limits"): a `labboot tftp` process is
//! killed while curl, throttled, is in the middle of a 32 MiB read; the server restarted on the
//! same root and port serves the same client a whole, byte-identical file, as a board's
//! bootloader retrying after a server restart would get it. Nothing the server wrote survives
//! it: the root holds the served file alone.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;
use labboot_tests::require;
use sha2::{Digest, Sha256};

/// A UDP port free on 127.0.0.1 right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn start(root: &Path, port: u16) -> ServerProcess {
    let mut cmd = Command::new(labboot_bin());
    cmd.args(["tftp", "--root"]).arg(root).args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--log",
        "info",
    ]);
    ServerProcess::start(
        "labboot tftp",
        cmd,
        r"tftp: listening on 127\.0\.0\.1:\d+",
        Duration::from_secs(60),
    )
    .expect("labboot tftp starts")
}

fn curl(port: u16, out: &Path) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--tftp-blksize", "1468", "-o"]).arg(out);
    cmd.arg(format!("tftp://127.0.0.1:{port}/big.bin"))
        .stdin(Stdio::null());
    cmd
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

#[test]
fn a_killed_server_serves_the_whole_file_again_after_a_restart() {
    if !require::tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("big.bin"), &data).unwrap();
    let port = free_udp_port();
    let mut server = start(&root, port);

    // A read in lockstep (512-byte blocks, one ACK each), the server killed after 200 blocks.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client
        .send_to(b"\0\x01big.bin\0octet\0", ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 600];
    let mut got = Vec::new();
    let mut tid = None;
    for block in 1..=200u16 {
        let (n, from) = client.recv_from(&mut buf).expect("DATA before the kill");
        assert_eq!(
            &buf[..4],
            &[0, 3, (block >> 8) as u8, block as u8],
            "DATA {block}"
        );
        got.extend_from_slice(&buf[4..n]);
        tid = Some(from);
        client
            .send_to(&[0, 4, (block >> 8) as u8, block as u8], from)
            .unwrap();
    }
    assert_eq!(got, data[..got.len()], "the first 200 blocks are right");
    server.kill();
    let killed = Instant::now();
    // The transfer is gone with the server: the next ACK gets nothing back.
    let mut more = 0;
    while client.recv_from(&mut buf).is_ok() {
        more += 1;
        assert!(more < 10, "DATA keeps coming from a killed server");
    }
    let _ = client.send_to(&[0, 4, 0, 200], tid.unwrap());
    assert!(
        client.recv_from(&mut buf).is_err(),
        "no answer after the kill"
    );
    eprintln!(
        "tftp kill -9: {} of {} bytes read at the kill",
        got.len(),
        data.len()
    );

    // Restarted on the same root and port: the same client gets the whole file.
    let server = start(&root, port);
    let whole = dir.path().join("whole.bin");
    let status = curl(port, &whole).status().unwrap();
    assert!(status.success(), "curl after the restart: {status}");
    let again = std::fs::read(&whole).unwrap();
    assert_eq!(again.len(), data.len());
    assert_eq!(
        sha256(&again),
        sha256(&data),
        "byte-identical after the restart"
    );
    eprintln!(
        "tftp kill -9: whole file served again {:?} after the kill",
        killed.elapsed()
    );
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["big.bin"], "the root holds the served file alone");
    let log = server.lines().join("\n");
    assert!(log.contains("path=big.bin"), "{log}");
}
