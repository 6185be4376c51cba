//! The TFTP bad-input matrix (issue 16): one row per hostile or malformed input — names that
//! climb out (`../`, `..\`, `//`, `%2e%2e`, NUL, control bytes, over-long names), option values
//! out of range (blksize 0/7/65465/70000, windowsize 0/65536), duplicate and unterminated options,
//! truncated and unknown packets, and an ACK from a foreign port — each with the exact answer
//! RFC 1350/2347/2348/7440 and the server's documented rules call for (the ERROR code and a piece
//! of its message, the OACK and the size of DATA 1, or silence). After every row a fresh client
//! downloads a file whole, proving the server still serves.

mod tftp_support;

use std::time::Duration;

use netboot::tftp::{ErrorCode, Packet};
use tftp_support::{make_file, tempdir, Got, RawClient, TestServer};

const SHORT: Duration = Duration::from_millis(500);
/// How long "no answer" is waited for.
const QUIET: Duration = Duration::from_millis(250);

/// What a row expects back on the sending socket.
#[derive(Debug)]
enum Expect {
    /// An ERROR from the request port with this code, its message containing the text.
    Error(u16, &'static str),
    /// Nothing at all.
    Silence,
    /// The read goes ahead: this OACK (none: plain RFC 1350), then DATA 1 of this many bytes.
    Read(Option<Vec<(&'static str, &'static str)>>, usize),
    /// A read whose transfer port gets an ACK from another port: that port alone gets ERROR 5,
    /// and the read goes on.
    ForeignAck,
}

struct Row {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

/// An RRQ with raw name and mode bytes and options; each field NUL-terminated.
fn rrq(name: &[u8], mode: &[u8], opts: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(name);
    b.push(0);
    b.extend_from_slice(mode);
    b.push(0);
    for (k, v) in opts {
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b
}

/// An octet RRQ of `f` (200,000 bytes) with options.
fn read_f(opts: &[(&str, &str)]) -> Vec<u8> {
    rrq(b"f", b"octet", opts)
}

/// The matrix: one row per line.
#[rustfmt::skip]
fn rows(outside: &str) -> Vec<Row> {
    use Expect::*;
    let row = |name, bytes, expect| Row { name, bytes, expect };
    let oack = |k: &'static str, v: &'static str| Some(vec![(k, v)]);
    let wrq = { let mut b = rrq(b"up.bin", b"octet", &[]); b[1] = 2; b };
    vec![
        // Names (relative to the served directory; see netboot::tftp::path).
        row("../ climbs out", rrq(b"../secret", b"octet", &[]), Error(2, "file name contains a \"..\" component")),
        row("../ deeper down", rrq(b"sub/../../secret", b"octet", &[]), Error(2, "\"..\" component")),
        row("..\\ climbs out", rrq(b"..\\secret", b"octet", &[]), Error(2, "file name contains a backslash")),
        row("// is absolute", rrq(b"//etc/passwd", b"octet", &[]), Error(2, "absolute paths are not served")),
        row("/ABS of a real file outside is root-relative", rrq(outside.as_bytes(), b"octet", &[]), Error(1, ": file not found")),
        row("%2e%2e is a name, not decoded", rrq(b"%2e%2e/secret", b"octet", &[]), Error(1, "%2e%2e/secret: file not found")),
        row("%2e%2e%2f is a name, not decoded", rrq(b"%2e%2e%2fsecret", b"octet", &[]), Error(1, "%2e%2e%2fsecret: file not found")),
        // A NUL ends the name on the wire: what follows is read as the mode.
        row("NUL inside the name", rrq(b"f\0../secret", b"octet", &[]), Error(4, "RRQ: mode \"../secret\" is not supported (use octet or netascii)")),
        row("empty name", rrq(b"", b"octet", &[]), Error(4, "RRQ: filename is empty")),
        row("control character in the name", rrq(b"f\n", b"octet", &[]), Error(2, "file name contains a control character")),
        row("name not UTF-8", rrq(b"\xff\xfe", b"octet", &[]), Error(4, "RRQ: filename is not valid UTF-8")),
        row("directory", rrq(b"sub", b"octet", &[]), Error(2, "sub: not a regular file")),
        row("symlink out of the root", rrq(b"out", b"octet", &[]), Error(2, "out: leaves the served directory")),
        row("name of 200 bytes", rrq(&[b'n'; 200], b"octet", &[]), Error(1, "…: file not found")),
        row("name of 2,000 bytes", rrq(&[b'n'; 2000], b"octet", &[]), Error(0, "…: File name too long (os error 36)")),
        row("name of 65,000 bytes", rrq(&[b'n'; 65000], b"octet", &[]), Error(0, "…: File name too long (os error 36)")),
        // blksize (RFC 2348: 8..=65464). Below 8 the option is left out of the OACK (RFC 2347 lets
        // a server ignore an option): no OACK, 512-byte blocks. Above the server's limit (65464
        // here) the OACK names the limit (RFC 2348: the server may answer a smaller value).
        row("blksize 0", read_f(&[("blksize", "0")]), Read(None, 512)),
        row("blksize 7", read_f(&[("blksize", "7")]), Read(None, 512)),
        row("blksize 8", read_f(&[("blksize", "8")]), Read(oack("blksize", "8"), 8)),
        row("blksize 65464", read_f(&[("blksize", "65464")]), Read(oack("blksize", "65464"), 65464)),
        row("blksize 65465", read_f(&[("blksize", "65465")]), Read(oack("blksize", "65464"), 65464)),
        row("blksize 70000", read_f(&[("blksize", "70000")]), Read(oack("blksize", "65464"), 65464)),
        row("blksize not a number", read_f(&[("blksize", "lots")]), Read(None, 512)),
        // windowsize (RFC 7440: 1..=65535); the server's max_window is 64.
        row("windowsize 0", read_f(&[("windowsize", "0")]), Read(None, 512)),
        row("windowsize 65536", read_f(&[("windowsize", "65536")]), Read(None, 512)),
        row("windowsize 65535", read_f(&[("windowsize", "65535")]), Read(oack("windowsize", "64"), 512)),
        // Duplicates: the first one counts, the others are ignored; unknown options are ignored.
        row("duplicate blksize", read_f(&[("blksize", "1024"), ("blksize", "2048")]), Read(oack("blksize", "1024"), 1024)),
        row("duplicate blksize, other case", read_f(&[("blksize", "1024"), ("BLKSIZE", "2048")]), Read(oack("blksize", "1024"), 1024)),
        row("unknown option", read_f(&[("multicast", "1")]), Read(None, 512)),
        // Cut-short requests: ERROR 4 (illegal TFTP operation) naming the field.
        row("opcode only", b"\x00\x01".to_vec(), Error(4, "RRQ: filename is not NUL-terminated")),
        row("unterminated name", b"\x00\x01f".to_vec(), Error(4, "RRQ: filename is not NUL-terminated")),
        row("unterminated mode", b"\x00\x01f\x00octet".to_vec(), Error(4, "RRQ: mode is not NUL-terminated")),
        row("option without a value", b"\x00\x01f\x00octet\x00blksize\x00".to_vec(), Error(4, "RRQ: option \"blksize\" has no value")),
        row("unterminated option name", b"\x00\x01f\x00octet\x00blksize".to_vec(), Error(4, "RRQ: option name is not NUL-terminated")),
        row("unterminated option value", b"\x00\x01f\x00octet\x00blksize\x001024".to_vec(), Error(4, "RRQ: option value is not NUL-terminated")),
        row("mode mail", rrq(b"f", b"mail", &[]), Error(4, "RRQ: mode \"mail\" is not supported")),
        row("WRQ while writes are disabled", wrq, Error(2, "writes are disabled on this server")),
        // Not requests: dropped without an answer (answering strays could start a ping-pong
        // with another host, and answering garbage would reflect traffic).
        row("empty datagram", Vec::new(), Silence),
        row("1-byte packet", vec![0], Silence),
        row("unknown opcode 7", b"\x00\x07f\x00octet\x00".to_vec(), Silence),
        row("unknown opcode 0xffff", b"\xff\xff\xff".to_vec(), Silence),
        row("ACK on the request port", b"\x00\x04\x00\x01".to_vec(), Silence),
        row("DATA on the request port", b"\x00\x03\x00\x01data".to_vec(), Silence),
        row("ERROR on the request port", b"\x00\x05\x00\x00bye\x00".to_vec(), Silence),
        row("OACK on the request port", b"\x00\x06blksize\x00512\x00".to_vec(), Silence),
        // RFC 1350 §4: a packet from a foreign TID gets ERROR 5 there; the transfer goes on.
        row("ACK from a foreign port (TID)", read_f(&[]), ForeignAck),
    ]
}

/// Sends the row's bytes and checks the answer.
fn run_row(server: &TestServer, row: &Row, f: &[u8]) {
    let name = row.name;
    let mut c = RawClient::new(server.addr);
    c.send_raw(&row.bytes);
    match &row.expect {
        Expect::Error(code, text) => match c.recv(SHORT) {
            // From the request port, or from the transfer port when the file fails to open.
            Some((Got::Error(got, message), _)) => {
                assert_eq!(got, *code, "{name}: ERROR code ({message})");
                assert!(
                    message.contains(text),
                    "{name}: message {message:?} lacks {text:?}"
                );
                assert!(
                    message.len() <= 507,
                    "{name}: ERROR of {} bytes",
                    message.len()
                );
            }
            other => panic!("{name}: expected ERROR {code}, got {other:?}"),
        },
        Expect::Silence => {
            let got = c.recv(QUIET);
            assert_eq!(got, None, "{name}: expected no answer");
        }
        Expect::Read(oack, len) => {
            if let Some(want) = oack {
                let want: Vec<(String, String)> = want
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(c.recv(SHORT).map(|g| g.0), Some(Got::Oack(want)), "{name}");
                c.ack(0);
            }
            match c.recv(SHORT) {
                Some((Got::Data(1, d), _)) => {
                    assert_eq!(d.len(), *len, "{name}: DATA 1 size");
                    assert_eq!(d[..], f[..*len], "{name}: DATA 1 bytes");
                }
                other => panic!("{name}: expected DATA 1, got {other:?}"),
            }
            // Done: end the transfer politely so its slot is free again.
            c.send(&Packet::Error {
                code: ErrorCode::NotDefined,
                message: "enough".into(),
            });
        }
        Expect::ForeignAck => {
            let Some((Got::Data(1, d1), _)) = c.recv(SHORT) else {
                panic!("{name}: no DATA 1");
            };
            assert_eq!(d1[..], f[..512]);
            let tid = c.tid.expect("transfer port");
            let intruder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            intruder.set_read_timeout(Some(SHORT)).unwrap();
            intruder
                .send_to(&Packet::Ack { block: 1 }.to_bytes(), tid)
                .unwrap();
            let mut buf = [0u8; 600];
            let (n, from) = intruder
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{name}: no ERROR 5 for the intruder: {e}"));
            assert_eq!(from, tid, "{name}: ERROR 5 comes from the transfer port");
            assert_eq!(
                Packet::parse(&buf[..n]).unwrap(),
                Packet::Error {
                    code: ErrorCode::UnknownTransferId,
                    message: "unknown transfer ID".into()
                },
                "{name}"
            );
            // The client was told nothing, and its own ACK moves the read on.
            assert_eq!(c.recv(QUIET), None, "{name}: the client saw the intrusion");
            c.ack(1);
            match c.recv(SHORT) {
                Some((Got::Data(2, d2), _)) => assert_eq!(d2[..], f[512..1024], "{name}"),
                other => panic!("{name}: after the client's ACK 1: {other:?}"),
            }
            c.send(&Packet::Error {
                code: ErrorCode::NotDefined,
                message: "enough".into(),
            });
        }
    }
}

#[test]
fn every_bad_input_gets_its_answer_and_the_server_keeps_serving() {
    let base = tempdir();
    let root = base.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(base.path().join("secret"), b"outside\n").unwrap();
    std::os::unix::fs::symlink(base.path().join("secret"), root.join("out")).unwrap();
    make_file(&root, "f", 200_000);
    let f = std::fs::read(root.join("f")).unwrap();
    let ok_sha = make_file(&root, "ok.bin", 100_000);
    let server = TestServer::dir(&root, |_| {});
    let outside = base.path().join("secret").display().to_string();

    let rows = rows(&outside);
    assert!(rows.len() >= 40, "{} rows", rows.len());
    for row in &rows {
        run_row(&server, row, &f);
        // The server still serves: a whole download by a new client.
        let got = RawClient::new(server.addr).download("ok.bin", 1468);
        assert_eq!(got, (ok_sha, 100_000), "after row {:?}", row.name);
    }
}
