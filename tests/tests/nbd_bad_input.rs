//! The NBD bad-input matrix (issue 16) against a `labboot nbd` process, spoken raw over TCP:
//! one row per hostile or malformed client — an oldstyle client, unknown client flags, a bad
//! option magic, an option length of 0xFFFFFFFF, GO/INFO/EXPORT_NAME for a missing export,
//! malformed and unknown options, READs past the end and of 64 MiB and 4 GiB, writes to `ro`,
//! a bad request magic, an over-long WRITE, a client that leaves in the middle of a WRITE's
//! payload on `cow`, a `cow` writer over its limit, and 1,000 connections opened and dropped —
//! each with the answer the NBD protocol (doc/proto.md of the NBD project) asks for: the option
//! reply error and its message, the closed connection, or the NBD error number of the reply,
//! and for the storm the server's descriptors and threads (from /proc/PID) back to their
//! baseline. After every row a new connection selects `ro` with NBD_OPT_GO and reads bytes that
//! match the image, and after a refused option or command the same connection goes on working.

mod nbd_common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nbd_common::{pattern_image, sha256, Nbd};
use netboot::nbd::proto::*;

const IMAGE: u64 = 4 << 20;

/// A raw NBD client connection.
struct Conn {
    s: TcpStream,
}

/// One option reply: option, reply type, data.
type OptReply = (u32, u32, Vec<u8>);

impl Conn {
    /// Connects and reads the greeting; returns the connection and the 18 greeting bytes.
    fn open(port: u16) -> (Conn, [u8; 18]) {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Conn { s };
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).expect("greeting");
        (c, g)
    }

    /// Connects and sends the client flags (fixed newstyle, no zeroes).
    fn newstyle(port: u16) -> Conn {
        let (mut c, _) = Conn::open(port);
        c.send(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes());
        c
    }

    /// Writes bytes; the server may already have closed (the caller checks what comes back).
    fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    fn option(&mut self, opt: u32, data: &[u8]) {
        self.send(&option(opt, data));
    }

    /// The next option reply, `None` if the server closed the connection.
    fn opt_reply(&mut self) -> Option<OptReply> {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).ok()?;
        assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), REPLY_MAGIC);
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
        let mut data = vec![0u8; len];
        self.s.read_exact(&mut data).ok()?;
        Some((opt, kind, data))
    }

    /// NBD_OPT_GO for `name`: Ok(size) after NBD_REP_ACK, or the error reply.
    fn go(&mut self, name: &str) -> Result<u64, OptReply> {
        self.option(OPT_GO, &info_request(name));
        let mut size = None;
        loop {
            let r = self.opt_reply().expect("the server closed during GO");
            match r.1 {
                REP_INFO if r.2[..2] == INFO_EXPORT.to_be_bytes() => {
                    size = Some(u64::from_be_bytes(r.2[2..10].try_into().unwrap()))
                }
                REP_INFO => {}
                REP_ACK => return Ok(size.expect("NBD_INFO_EXPORT before the ACK")),
                _ => return Err(r),
            }
        }
    }

    /// Sends a transmission request (and its payload).
    fn request(
        &mut self,
        flags: u16,
        cmd: u16,
        handle: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let mut b = Vec::with_capacity(REQUEST_LEN + payload.len());
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&cmd.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(payload);
        self.send(&b);
    }

    /// The next simple reply: (error, handle), `None` if the server closed the connection.
    fn reply(&mut self) -> Option<(u32, u64)> {
        let mut h = [0u8; SIMPLE_REPLY_LEN];
        self.s.read_exact(&mut h).ok()?;
        assert_eq!(
            u32::from_be_bytes(h[..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        Some((
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        ))
    }

    /// READ of `len` bytes at `offset` that must succeed; the data.
    fn read_ok(&mut self, offset: u64, len: u32) -> Vec<u8> {
        self.request(0, CMD_READ, 0xfeed, offset, len, &[]);
        assert_eq!(self.reply(), Some((0, 0xfeed)), "READ {len} at {offset}");
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data).unwrap();
        data
    }

    /// Whether the server has closed the connection (read gives EOF or a reset; nothing else
    /// may arrive first).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// NBD_OPT_INFO/GO data for `name`, no info requests.
fn info_request(name: &str) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    v
}

/// What a row does.
enum Act {
    /// Connects, reads the greeting and hangs up, as an oldstyle client finding no oldstyle
    /// greeting does.
    Oldstyle,
    /// After the greeting: these client flags, then these bytes.
    Handshake(u32, Vec<u8>),
    /// GO on this export, then these bytes (requests).
    Transmit(&'static str, Vec<u8>),
    /// GO on `cow`, a WRITE header of 1 MiB, 100 KiB of its payload, and a close.
    LeaveMidWrite,
    /// GO on `cow` and 256 KiB WRITEs until one fails.
    FillCow,
    /// 1,000 connections opened and dropped, some after GO.
    Storm,
}

/// What a row expects.
#[derive(Debug)]
enum Expect {
    /// The greeting is fixed newstyle (oldstyle is not served), and the hang-up costs nothing.
    Newstyle,
    /// An option error reply of this type whose message contains the text; then the same
    /// connection selects `ro` and reads.
    OptError(u32, &'static str),
    /// The server closes the connection without a reply.
    Closed,
    /// A reply with this NBD error number; then the same connection reads.
    Errno(u32),
    /// The server logs the cut request and the base image is unchanged.
    CutShort,
    /// The server's descriptors and threads come back to their baseline.
    NoLeak,
}

struct Row {
    name: &'static str,
    act: Act,
    expect: Expect,
}

/// Request bytes.
fn req(flags: u16, cmd: u16, offset: u64, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&cmd.to_be_bytes());
    b.extend_from_slice(&7u64.to_be_bytes());
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Act::*;
    use Expect::*;
    use netboot::nbd::proto::errno::*;
    let row = |name, act, expect| Row { name, act, expect };
    let fixed = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;
    let mut huge_opt = IHAVEOPT.to_be_bytes().to_vec();
    huge_opt.extend_from_slice(&OPT_GO.to_be_bytes());
    huge_opt.extend_from_slice(&u32::MAX.to_be_bytes());
    huge_opt.extend_from_slice(b"some of it");
    let mut bad_magic = option(OPT_LIST, &[]);
    bad_magic[0] ^= 0xff;
    let mut bad_req = req(0, CMD_READ, 0, 512, &[]);
    bad_req[0] ^= 0xff;
    let mut name_past_end = 100u32.to_be_bytes().to_vec();
    name_past_end.extend_from_slice(b"ro\0\0");
    let end = IMAGE;
    vec![
        // Handshake (doc/proto.md, "Newstyle negotiation").
        row("oldstyle client", Oldstyle, Newstyle),
        row("unknown client flag 0x80", Handshake(0x80, option(OPT_LIST, &[])), Closed),
        row("bad option magic", Handshake(fixed, bad_magic), Closed),
        row("option length 0xFFFFFFFF", Handshake(fixed, huge_opt), Closed),
        row("GO for a missing export", Handshake(fixed, option(OPT_GO, &info_request("nope"))), OptError(REP_ERR_UNKNOWN, "no export named \"nope\"")),
        row("INFO for a missing export", Handshake(fixed, option(OPT_INFO, &info_request("nope"))), OptError(REP_ERR_UNKNOWN, "no export named \"nope\"")),
        row("GO whose name runs past the data", Handshake(fixed, option(OPT_GO, &name_past_end)), OptError(REP_ERR_INVALID, "malformed info request")),
        row("GO with no data", Handshake(fixed, option(OPT_GO, &[])), OptError(REP_ERR_INVALID, "malformed info request")),
        row("LIST with data", Handshake(fixed, option(OPT_LIST, b"x")), OptError(REP_ERR_INVALID, "NBD_OPT_LIST takes no data")),
        row("STRUCTURED_REPLY with data", Handshake(fixed, option(OPT_STRUCTURED_REPLY, b"x")), OptError(REP_ERR_INVALID, "takes no data")),
        row("unknown option 42", Handshake(fixed, option(42, b"whatever")), OptError(REP_ERR_UNSUP, "option 42 is not supported")),
        row("STARTTLS (not offered)", Handshake(fixed, option(5, &[])), OptError(REP_ERR_UNSUP, "option 5 is not supported")),
        // The protocol gives NBD_OPT_EXPORT_NAME no error reply: the server MUST close.
        row("EXPORT_NAME for a missing export", Handshake(fixed, option(OPT_EXPORT_NAME, b"nope")), Closed),
        row("hang-up in the middle of an option", Handshake(fixed, option(OPT_GO, &info_request("ro"))[..20].to_vec()), Closed),
        // Transmission (doc/proto.md, "Request types" and "Error values").
        row("READ past the end", Transmit("ro", req(0, CMD_READ, end - 100, 4096, &[])), Errno(EINVAL)),
        row("READ starting at the end", Transmit("ro", req(0, CMD_READ, end, 1, &[])), Errno(EINVAL)),
        row("READ whose end overflows 64 bits", Transmit("ro", req(0, CMD_READ, u64::MAX - 10, 4096, &[])), Errno(EINVAL)),
        row("READ of 64 MiB (above the 32 MiB block size maximum)", Transmit("ro", req(0, CMD_READ, 0, 64 << 20, &[])), Errno(EINVAL)),
        row("READ of 4 GiB - 1", Transmit("ro", req(0, CMD_READ, 0, u32::MAX, &[])), Errno(EINVAL)),
        row("READ with the NO_HOLE flag", Transmit("ro", req(CMD_FLAG_NO_HOLE, CMD_READ, 0, 512, &[])), Errno(EINVAL)),
        row("WRITE to ro", Transmit("ro", req(0, CMD_WRITE, 0, 512, &[0x55; 512])), Errno(EPERM)),
        row("WRITE_ZEROES to ro", Transmit("ro", req(0, CMD_WRITE_ZEROES, 0, 4096, &[])), Errno(EPERM)),
        row("TRIM on ro", Transmit("ro", req(0, CMD_TRIM, 0, 4096, &[])), Errno(EPERM)),
        row("WRITE past the end of cow", Transmit("cow", req(0, CMD_WRITE, end - 10, 20, &[1; 20])), Errno(ENOSPC)),
        row("unknown command 99", Transmit("ro", req(0, 99, 0, 512, &[])), Errno(EINVAL)),
        row("bad request magic", Transmit("ro", bad_req), Closed),
        row("WRITE announcing 33 MiB (above the maximum payload)", Transmit("cow", req(0, CMD_WRITE, 0, 33 << 20, &[0; 4096])), Closed),
        row("hang-up in the middle of a request header", Transmit("ro", req(0, CMD_READ, 0, 512, &[])[..10].to_vec()), Closed),
        row("hang-up in the middle of a WRITE payload on cow", LeaveMidWrite, CutShort),
        row("cow writer over its limit", FillCow, Errno(ENOSPC)),
        row("1,000 connections opened and dropped", Storm, NoLeak),
    ]
}

/// Descriptors and threads of process `pid`, from /proc.
fn usage(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: in /proc/PID/status");
    (fds, threads)
}

/// The pid of this process's child whose command line contains `marker`.
fn child_pid(marker: &str) -> u32 {
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let parent = status.lines().find_map(|l| l.strip_prefix("PPid:"));
        if parent.map(str::trim) != Some(me.as_str()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            return pid;
        }
    }
    panic!("no child process with {marker:?} in its command line");
}

/// Still serving: a new connection selects `ro` and reads what the image holds.
fn still_serves(port: u16, image: &[u8], after: &str) {
    let mut c = Conn::newstyle(port);
    assert_eq!(c.go("ro"), Ok(IMAGE), "after {after}: GO ro");
    let off = 1_234_567;
    assert_eq!(
        c.read_ok(off, 4096),
        image[off as usize..off as usize + 4096],
        "after {after}"
    );
    c.request(0, CMD_DISC, 0, 0, 0, &[]);
}

fn run_row(nbd: &mut Nbd, pid: u32, img: &Path, image: &[u8], row: &Row) {
    let name = row.name;
    let port = nbd.port;
    match (&row.act, &row.expect) {
        (Act::Oldstyle, Expect::Newstyle) => {
            let (c, g) = Conn::open(port);
            // Oldstyle would send 0x00420281861253 after NBDMAGIC; this server never does.
            assert_eq!(&g[..8], b"NBDMAGIC", "{name}");
            assert_eq!(&g[8..16], b"IHAVEOPT", "{name}: newstyle only");
            assert_eq!(&g[16..], &[0, 3], "{name}: FIXED_NEWSTYLE | NO_ZEROES");
            drop(c);
        }
        (Act::Handshake(flags, bytes), expect) => {
            let (mut c, _) = Conn::open(port);
            c.send(&flags.to_be_bytes());
            c.send(bytes);
            match expect {
                Expect::Closed => {
                    if matches!(bytes.len(), 1..=31) {
                        // A hang-up: close our side; the server must let the connection go.
                        c.s.shutdown(Shutdown::Write).unwrap();
                    }
                    assert!(c.closed(), "{name}: expected the connection closed");
                }
                Expect::OptError(kind, text) => {
                    let (_, got, data) = c.opt_reply().unwrap_or_else(|| panic!("{name}: closed"));
                    let msg = String::from_utf8_lossy(&data);
                    assert_eq!(got, *kind, "{name}: option reply type ({msg})");
                    assert!(msg.contains(text), "{name}: message {msg:?} lacks {text:?}");
                    // The haggling goes on: the same connection selects an export and reads.
                    assert_eq!(c.go("ro"), Ok(IMAGE), "{name}: GO after the error");
                    assert_eq!(c.read_ok(0, 512), image[..512], "{name}");
                }
                other => panic!("{name}: {other:?} does not apply to a handshake row"),
            }
        }
        (Act::Transmit(export, bytes), expect) => {
            let mut c = Conn::newstyle(port);
            assert_eq!(c.go(export), Ok(IMAGE), "{name}: GO {export}");
            c.send(bytes);
            match expect {
                Expect::Errno(errno) => {
                    assert_eq!(
                        c.reply(),
                        Some((*errno, 7)),
                        "{name}: reply (error, handle)"
                    );
                    // The connection is still in step: a READ on it is answered correctly.
                    assert_eq!(c.read_ok(4096, 4096), image[4096..8192], "{name}");
                }
                Expect::Closed => {
                    if bytes.len() < REQUEST_LEN {
                        c.s.shutdown(Shutdown::Write).unwrap();
                    }
                    assert!(c.closed(), "{name}: expected the connection closed");
                }
                other => panic!("{name}: {other:?} does not apply to a transmission row"),
            }
        }
        (Act::LeaveMidWrite, Expect::CutShort) => {
            const CUT: &str =
                "nbd: closing connection: connection closed in the middle of a request";
            let cut = |nbd: &Nbd| {
                nbd.process
                    .lines()
                    .iter()
                    .filter(|l| l.contains(CUT))
                    .count()
            };
            let seen = cut(nbd);
            let before = sha256(img);
            let mut c = Conn::newstyle(port);
            assert_eq!(c.go("cow"), Ok(IMAGE), "{name}");
            let mut b = req(0, CMD_WRITE, 0, 1 << 20, &[]);
            b.extend_from_slice(&vec![0xee; 100 << 10]);
            c.send(&b);
            drop(c);
            // The server says why the connection ended (and nothing worse).
            let deadline = Instant::now() + Duration::from_secs(10);
            while cut(nbd) == seen {
                assert!(Instant::now() < deadline, "{name}: no {CUT:?} in the log");
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(sha256(img), before, "{name}: the base image changed");
            // A new cow connection sees the base, not the cut write.
            let mut c = Conn::newstyle(port);
            assert_eq!(c.go("cow"), Ok(IMAGE), "{name}");
            assert_eq!(c.read_ok(0, 4096), image[..4096], "{name}");
        }
        (Act::FillCow, Expect::Errno(errno)) => {
            // --cow-memory 1M --cow-limit 2M: the 9th 256 KiB write cannot fit.
            let mut c = Conn::newstyle(port);
            assert_eq!(c.go("cow"), Ok(IMAGE), "{name}");
            let chunk = vec![0x5a; 256 << 10];
            let mut written = 0u64;
            let err = loop {
                c.request(0, CMD_WRITE, 9, written, chunk.len() as u32, &chunk);
                match c.reply() {
                    Some((0, 9)) => written += chunk.len() as u64,
                    Some((e, 9)) => break e,
                    other => panic!("{name}: {other:?}"),
                }
                assert!(written < IMAGE, "{name}: 4 MiB fit in a 2 MiB overlay");
            };
            assert_eq!(err, *errno, "{name}");
            assert!(
                (1 << 20..=2 << 20).contains(&written),
                "{name}: {written} bytes fit"
            );
            // What fit reads back, and the connection still works.
            assert_eq!(c.read_ok(0, 4096), vec![0x5a; 4096], "{name}");
            assert_eq!(
                c.read_ok(written, 4096),
                image[written as usize..written as usize + 4096],
                "{name}"
            );
        }
        (Act::Storm, Expect::NoLeak) => {
            let base = usage(pid);
            for round in 0..10 {
                let mut open = Vec::new();
                for i in 0..100 {
                    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    if i % 10 == 0 {
                        // Every tenth goes as far as transmission, then vanishes.
                        // (It may have been refused at accept: at most 16 handshakes from
                        // one address at once.)
                        let mut c = Conn { s };
                        c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut g = [0u8; 18];
                        if c.s.read_exact(&mut g).is_ok() {
                            c.send(&3u32.to_be_bytes());
                            c.option(OPT_GO, &info_request("ro"));
                            while let Some((_, kind, _)) = c.opt_reply() {
                                if kind != REP_INFO {
                                    break;
                                }
                            }
                        }
                        open.push(c.s);
                    } else {
                        open.push(s);
                    }
                }
                assert!(open.len() >= 90, "round {round}: {} connects", open.len());
                drop(open);
            }
            // Back to the baseline: every descriptor closed, every connection thread gone.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let now = usage(pid);
                if now.0 <= base.0 && now.1 <= base.1 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: (fds, threads) {now:?}, baseline {base:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        (_, other) => panic!("{name}: {other:?} does not go with this action"),
    }
}

#[test]
fn every_bad_client_gets_its_answer_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let img = pattern_image(dir.path(), "bad-input.img", IMAGE);
    let image = std::fs::read(&img).unwrap();
    let mut nbd = Nbd::start(
        &[
            format!("ro={}", img.display()),
            format!("cow={}:cow", img.display()),
        ],
        &["--cow-memory", "1M", "--cow-limit", "2M"],
    );
    let pid = child_pid(&img.display().to_string());
    // Warm up, so that the baseline of the storm row includes the runtime's threads.
    still_serves(nbd.port, &image, "start");
    let rows = rows();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    for row in &rows {
        run_row(&mut nbd, pid, &img, &image, row);
        still_serves(nbd.port, &image, row.name);
    }
    let lines = nbd.process.lines();
    assert!(
        !lines.iter().any(|l| l.contains("panicked")),
        "{}",
        lines.join("\n")
    );
}
