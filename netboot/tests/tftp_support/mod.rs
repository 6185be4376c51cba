//! Shared helpers of the TFTP integration tests: an in-process server on 127.0.0.1:0, test files
//! with known sha256, a raw UDP client, and a check that a peer tool is installed.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use netboot::tftp::{Packet, Resolver, TftpConfig, TftpServer, TftpSettings};
use sha2::{Digest, Sha256};

/// A server running on its own runtime thread; dropping it shuts it down and waits.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Serves `root` with `tweak` applied to a default config.
    pub fn dir(root: &Path, tweak: impl FnOnce(&mut TftpConfig)) -> TestServer {
        let mut config = TftpConfig::new(root);
        tweak(&mut config);
        let settings = TftpSettings::try_from(config).expect("valid test config");
        let resolver = netboot::tftp::DirResolver::new(settings.root()).expect("root exists");
        TestServer::start(settings, resolver)
    }

    /// Runs `resolver` with `settings` (the listen address is ignored: 127.0.0.1:0).
    pub fn start(settings: TftpSettings, resolver: impl Resolver) -> TestServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = TftpServer::new(settings, resolver).expect("server");
                let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx.send(sock.local_addr().unwrap()).unwrap();
                server
                    .run(sock, async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("server run");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server did not start");
        TestServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Panics with a clear message if a peer tool is not installed (tests must not skip).
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{name}` on PATH (Debian packages tftp-hpa, atftp, curl); run scripts/setup.sh"
    );
}

/// Writes `size` deterministic pseudo-random bytes to `dir/name`; returns the sha256.
pub fn make_file(dir: &Path, name: &str, size: u64) -> [u8; 32] {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut hasher = Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    let mut left = size;
    let mut chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for b in chunk[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        f.write_all(&chunk[..n]).unwrap();
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    hasher.finalize().into()
}

/// sha256 of a file.
pub fn sha256_file(path: &Path) -> [u8; 32] {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).unwrap();
    hasher.finalize().into()
}

/// sha256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Runs a command; panics with its command line, status, stdout and stderr if it fails.
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A hand-driven TFTP client on a UDP socket.
pub struct RawClient {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    /// The transfer's address, learnt from the first reply.
    pub tid: Option<SocketAddr>,
}

/// An owned copy of a received packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Data(u16, Vec<u8>),
    Ack(u16),
    Oack(Vec<(String, String)>),
    Error(u16, String),
}

impl RawClient {
    pub fn new(server: SocketAddr) -> RawClient {
        RawClient::from(server, std::net::Ipv4Addr::LOCALHOST)
    }

    /// A client on `ip` (any of 127.0.0.0/8 on loopback), a new port.
    pub fn from(server: SocketAddr, ip: std::net::Ipv4Addr) -> RawClient {
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        RawClient {
            sock,
            server,
            tid: None,
        }
    }

    /// Downloads `name` at `blksize`, window 1, sending the RRQ again while nothing answers
    /// (a request can be lost in a storm); returns the sha256 of the bytes (not the bytes:
    /// tests that measure memory use it) and their number. Panics on an ERROR or a stall.
    pub fn download(&mut self, name: &str, blksize: u16) -> ([u8; 32], u64) {
        const WAIT: Duration = Duration::from_millis(300);
        let bs = blksize.to_string();
        let options = [("blksize", bs.as_str())];
        let mut tries = 0;
        loop {
            self.read_request(name, &options);
            match self.recv(WAIT) {
                Some((Got::Oack(_), _)) => break,
                Some((other, _)) => panic!("{name}: expected OACK, got {other:?}"),
                None if tries < 20 => tries += 1,
                None => panic!("{name}: no answer to 20 requests"),
            }
        }
        self.ack(0);
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut next: u16 = 1;
        let mut quiet = 0;
        loop {
            match self.recv(WAIT) {
                // A second transfer, from a request sent again while the first was on its way.
                Some((_, from)) if Some(from) != self.tid => {}
                Some((Got::Data(n, d), _)) if n == next => {
                    let last = d.len() < usize::from(blksize);
                    hasher.update(&d);
                    len += d.len() as u64;
                    self.ack(n);
                    if last {
                        return (hasher.finalize().into(), len);
                    }
                    next = next.wrapping_add(1);
                    quiet = 0;
                }
                // A duplicate of the previous block: our ACK was lost; the server resends.
                Some((Got::Data(..), _)) => {}
                Some((other, _)) => panic!("{name}: got {other:?} at block {next}"),
                None if quiet < 20 => {
                    quiet += 1;
                    self.ack(next.wrapping_sub(1));
                }
                None => panic!("{name}: the transfer stalled at block {next}"),
            }
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Sends an RRQ (octet) with options to the request port.
    pub fn read_request(&self, name: &str, options: &[(&str, &str)]) {
        let mut b = vec![0, 1];
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(b"octet\0");
        for (k, v) in options {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        self.sock.send_to(&b, self.server).unwrap();
    }

    /// Sends raw bytes to the request port.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
    }

    /// Sends a packet to the transfer's address.
    pub fn send(&self, p: &Packet<'_>) {
        let tid = self.tid.expect("no transfer yet");
        self.sock.send_to(&p.to_bytes(), tid).unwrap();
    }

    pub fn ack(&self, block: u16) {
        self.send(&Packet::Ack { block });
    }

    /// The next packet within `timeout`, remembering the transfer address.
    pub fn recv(&mut self, timeout: Duration) -> Option<(Got, SocketAddr)> {
        let mut buf = vec![0u8; 70000];
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let (n, from) = match self.sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(e) => panic!("recv: {e}"),
        };
        let got = match Packet::parse(&buf[..n]).expect("server sent a valid packet") {
            Packet::Data { block, data } => Got::Data(block, data.to_vec()),
            Packet::Ack { block } => Got::Ack(block),
            Packet::OptionAck { options } => Got::Oack(options),
            Packet::Error { code, message } => Got::Error(code.to_u16(), message),
            other => panic!("unexpected packet from server: {other:?}"),
        };
        if self.tid.is_none() && from != self.server {
            self.tid = Some(from);
        }
        Some((got, from))
    }

    /// Like [`Self::recv`] but panics when nothing comes.
    pub fn expect(&mut self, timeout: Duration, what: &str) -> Got {
        match self.recv(timeout) {
            Some((g, _)) => g,
            None => panic!("expected {what} within {timeout:?}, got nothing"),
        }
    }
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/name` as a path.
pub fn at(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// What /proc says about this process: resident memory (KiB), threads, open descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
}

impl ProcStat {
    pub fn now() -> ProcStat {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
        };
        ProcStat {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds: std::fs::read_dir("/proc/self/fd").unwrap().count() as u64,
        }
    }
}

/// Raises this process's open-file limit to its hard limit (a storm needs thousands of sockets).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}
