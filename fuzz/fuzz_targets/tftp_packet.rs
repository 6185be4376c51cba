//! TFTP: datagrams through the packet parser, a request through path confinement and option
//! negotiation, then the read (RRQ) or write (WRQ) state machine fed the later datagrams, as
//! `tftp::server` and `tftp::sender` drive them (blocks are read from an in-memory content).
//!
//! Input: frames (see `common`). The first frame is the request; its tag picks the server's
//! limits (low 4 bits) and the size of the file served (top 4 bits × 4099 bytes). Each later
//! frame is, by its tag's low 2 bits, a datagram from the client (0, 1), a timeout (2) or a
//! local abort (3); its top 6 bits are tenths of a second passing first.
//!
//! Checked besides "no panic": every parsed packet re-encodes to bytes that parse to the same
//! packet; every ERROR the server would send fits in 512 bytes and parses back; negotiated values
//! stay within the limits; a confined path has no `..`, no empty and no absolute component; block
//! runs the machine asks for exist in the content.

#![no_main]

mod common;

use std::path::Component;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use netboot::tftp::content::BlockReader;
use netboot::tftp::options::{negotiate, Direction, Limits, MAX_BLKSIZE, MIN_BLKSIZE};
use netboot::tftp::packet::Mode;
use netboot::tftp::receive::{Reply, WriteTransfer};
use netboot::tftp::transfer::{ReadTransfer, Timing, Transmit};
use netboot::tftp::{Content, Packet, RequestPath, TftpError};

fn roundtrip(p: &Packet<'_>) {
    let bytes = p.to_bytes();
    let back = Packet::parse(&bytes).expect("an encoded packet parses");
    assert_eq!(&back, p, "re-encoding changed the packet");
}

/// What the server sends for `e`: at most 512 bytes, and it parses back as an ERROR.
fn error_sent(e: &TftpError) {
    let bytes = e.to_packet().to_bytes();
    assert!(bytes.len() <= 512, "ERROR packet of {} bytes", bytes.len());
    assert!(matches!(Packet::parse(&bytes), Ok(Packet::Error { .. })));
}

fn timing() -> Timing {
    Timing {
        timeout: Duration::from_secs(1),
        max_timeout: Duration::from_secs(8),
        retries: 5,
        dup_ack_guard: Duration::from_millis(20),
    }
}

fuzz_target!(|data: &[u8]| {
    let frames = common::frames(data, 256);
    for f in &frames {
        match Packet::parse(f.bytes) {
            Ok(p) => roundtrip(&p),
            Err(e) => error_sent(&TftpError::illegal_operation(e.to_string())),
        }
    }
    let Some((first, rest)) = frames.split_first() else {
        return;
    };
    let (request, write) = match Packet::parse(first.bytes) {
        Ok(Packet::Read(r)) => (r, false),
        Ok(Packet::Write(r)) => (r, true),
        _ => return,
    };
    match RequestPath::parse(&request.filename) {
        Ok(path) => {
            assert!(!path.as_str().is_empty());
            for c in path.to_relative_path().components() {
                assert!(matches!(c, Component::Normal(_)), "{path:?} has {c:?}");
            }
            assert!(path
                .components()
                .all(|c| !c.is_empty() && c != "." && c != ".."));
            error_sent(&TftpError::not_found(format!(
                "{}: file not found",
                path.shown()
            )));
        }
        Err(e) => error_sent(&e),
    }
    let limits = Limits {
        max_blksize: [512, 1468, 8192, MAX_BLKSIZE][usize::from(first.tag & 3)],
        max_window: [1, 4, 16, 64][usize::from((first.tag >> 2) & 3)],
    };
    let size = u64::from(first.tag >> 4) * 4099;
    let dir = if write {
        Direction::Write
    } else {
        Direction::Read { size }
    };
    let neg = negotiate(&request.options, limits, dir);
    assert!(
        neg.blksize == 512
            || (MIN_BLKSIZE..=limits.max_blksize.max(MIN_BLKSIZE)).contains(&neg.blksize)
    );
    assert!(neg.window >= 1 && neg.window <= limits.max_window.max(1));
    let oack = Packet::OptionAck {
        options: neg.reply.clone(),
    };
    roundtrip(&oack);

    let mut now = Instant::now();
    if write {
        let mut machine = WriteTransfer::new(
            neg.blksize,
            neg.window,
            1 << 20,
            !neg.reply.is_empty(),
            timing(),
            now,
        );
        let mut received = 0u64;
        let _ = machine.start(now);
        for f in rest {
            now += Duration::from_millis(100 * u64::from(f.tag >> 2));
            let reply = match f.tag & 3 {
                0 | 1 => {
                    let Ok(p) = Packet::parse(f.bytes) else {
                        continue;
                    };
                    let receipt = machine.on_packet(&p, now);
                    if receipt.deliver {
                        let Packet::Data { data, .. } = p else {
                            panic!("delivered a packet that is not DATA");
                        };
                        assert!(data.len() <= usize::from(neg.blksize));
                        received += data.len() as u64;
                    }
                    receipt.reply
                }
                2 => machine.on_timeout(now),
                _ => Some(machine.abort(TftpError::new(
                    netboot::tftp::packet::ErrorCode::NotDefined,
                    "shutting down",
                ))),
            };
            if let Some(Reply::Error(e)) = reply {
                error_sent(&e);
            }
            assert_eq!(machine.bytes(), received);
            assert!(received <= 1 << 20, "wrote past the upload limit");
        }
    } else {
        let mut content = Content::from_bytes(vec![0x5a_u8; size as usize]);
        if request.mode == Mode::Netascii {
            content = content.to_netascii().expect("in-memory content converts");
        }
        let size = content.len();
        let mut machine = ReadTransfer::new(
            size,
            neg.blksize,
            neg.window,
            !neg.reply.is_empty(),
            timing(),
            now,
        );
        let mut reader = BlockReader::new(content, neg.blksize);
        let mut sent = machine.start(now);
        let mut events = rest.iter();
        loop {
            match &sent {
                Some(Transmit::Blocks { first, last }) => {
                    assert!(
                        first <= last && *last <= machine.last_block(),
                        "{first}..={last}"
                    );
                    let mut n = *first;
                    while n <= *last {
                        let (bytes, count) = reader.run(n, *last).expect("blocks exist");
                        assert!(count >= 1 && bytes.len() as u64 <= count * u64::from(neg.blksize));
                        n += count;
                    }
                }
                Some(Transmit::Error(e)) => error_sent(e),
                _ => {}
            }
            let Some(f) = events.next() else { break };
            now += Duration::from_millis(100 * u64::from(f.tag >> 2));
            sent = match f.tag & 3 {
                0 | 1 => match Packet::parse(f.bytes) {
                    Ok(p) => machine.on_packet(&p, now),
                    Err(_) => None,
                },
                2 => machine.on_timeout(now),
                _ => Some(machine.abort(TftpError::new(
                    netboot::tftp::packet::ErrorCode::NotDefined,
                    "shutting down",
                ))),
            };
        }
    }
});
