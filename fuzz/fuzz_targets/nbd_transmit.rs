//! NBD: the transmission phase against real exports: requests decoded from a byte stream
//! (`RequestDecoder`), checked and executed on a connection's `Backend` (`dispatch::execute`),
//! and reads also planned as the zero-copy path plans them (`Backend::splice_plan`), as
//! `nbd::transmit`'s workers do, without the socket.
//!
//! Input: frames (see `common`), each a piece of the request stream. The first frame's tag picks
//! the export (`ro`, `cow`, `rw`: low 2 bits) and simple or structured replies (bit 2).
//!
//! Checked besides "no panic": a shadow copy of the export follows every successful WRITE,
//! WRITE_ZEROES and (where it zeroes) TRIM, and every READ — through `execute` and through the
//! splice plan — returns exactly the shadow's bytes. The `cow` overlay has small limits (16 KiB
//! in memory, 64 KiB in all), so spilling to its file and ENOSPC are reached.

#![no_main]

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netboot::nbd::dispatch::{check, execute};
use netboot::nbd::proto::MAX_PAYLOAD;
use netboot::nbd::{
    Backend, Command, Export, ExportMode, OverlayLimits, Piece, ReplyEncoder, RequestDecoder,
};
use tokio_util::codec::Decoder;

const SIZE: usize = 192 * 1024;

fn pattern() -> Vec<u8> {
    (0..SIZE).map(|i| (i * 7 % 251) as u8).collect()
}

struct Exports {
    ro: Export,
    cow: Export,
    rw: Export,
    rw_path: PathBuf,
    spill: PathBuf,
}

fn exports() -> &'static Exports {
    static E: OnceLock<Exports> = OnceLock::new();
    E.get_or_init(|| {
        let dir = common::scratch_dir("nbd");
        let base = dir.join("master.img");
        std::fs::write(&base, pattern()).unwrap();
        let rw_path = dir.join("job.img");
        std::fs::write(&rw_path, pattern()).unwrap();
        let spill = dir.join("spill");
        std::fs::create_dir_all(&spill).unwrap();
        Exports {
            ro: Export::open("master", &base, ExportMode::ReadOnly).unwrap(),
            cow: Export::open("cow", &base, ExportMode::CopyOnWrite).unwrap(),
            rw: Export::open("job", &rw_path, ExportMode::ReadWrite).unwrap(),
            rw_path,
            spill,
        }
    })
}

fn connect(tag: u8) -> (Backend, ExportMode) {
    let e = exports();
    let limits = OverlayLimits {
        memory: 16 * 1024,
        total: 64 * 1024,
        spill_dir: Some(e.spill.clone()),
    };
    match tag & 3 {
        0 => (e.ro.connect(&limits), ExportMode::ReadOnly),
        1 | 3 => (e.cow.connect(&limits), ExportMode::CopyOnWrite),
        _ => {
            // Every input starts from the same `rw` image.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&e.rw_path)
                .unwrap();
            f.write_all_at(&pattern(), 0).unwrap();
            (e.rw.connect(&limits), ExportMode::ReadWrite)
        }
    }
}

/// What a read of `shadow[range]` must give; `None` bytes are unknown (an advisory TRIM).
fn expect_eq(got: &[u8], shadow: &[Option<u8>], offset: usize, what: &str) {
    assert_eq!(got.len(), shadow.len(), "{what}: length");
    for (i, (g, s)) in got.iter().zip(shadow).enumerate() {
        if let Some(s) = s {
            assert_eq!(g, s, "{what}: byte {} differs", offset + i);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let frames = common::frames(data, 512);
    let Some(first) = frames.first() else { return };
    let (backend, mode) = connect(first.tag);
    let structured = first.tag & 4 != 0;
    let encoder = ReplyEncoder::new(structured);
    let mut shadow: Vec<Option<u8>> = pattern().into_iter().map(Some).collect();
    let mut decoder = RequestDecoder::new(MAX_PAYLOAD);
    let mut stream = BytesMut::new();
    let mut pieces = frames.iter().map(|f| f.bytes);
    let base = std::fs::File::open(exports().ro.path()).unwrap();
    let mut requests = 0;
    loop {
        let req = match decoder.decode(&mut stream) {
            Ok(Some(req)) => req,
            Ok(None) => match pieces.next() {
                Some(p) => {
                    stream.extend_from_slice(p);
                    continue;
                }
                None => return,
            },
            Err(_) => return,
        };
        requests += 1;
        if requests > 256 || matches!(req.command, Command::Disconnect) {
            return;
        }
        let checked = check(&req, SIZE as u64, mode);
        let (off, len) = (req.offset as usize, req.len as usize);
        // The zero-copy read path, as `transmit` plans it.
        if checked.is_ok() && matches!(req.command, Command::Read) {
            let (mut plan, mut dirty) = (Vec::new(), Vec::new());
            if let Some(_fd) = backend
                .splice_plan(req.offset, u64::from(req.len), &mut plan, &mut dirty)
                .unwrap()
            {
                let mut got = Vec::with_capacity(len);
                let mut dirty = &dirty[..];
                for p in plan {
                    match p {
                        Piece::Base { offset, len } => {
                            let mut b = vec![0u8; len as usize];
                            base.read_exact_at(&mut b, offset).unwrap();
                            got.extend_from_slice(&b);
                        }
                        Piece::Dirty { len } => {
                            got.extend_from_slice(&dirty[..len as usize]);
                            dirty = &dirty[len as usize..];
                        }
                    }
                }
                assert!(dirty.is_empty(), "{} dirty bytes unused", dirty.len());
                expect_eq(&got, &shadow[off..off + len], off, "splice plan");
            }
        }
        let command = req.command.clone();
        let (reply, err) = execute(req, &backend, encoder);
        if checked.is_err() {
            assert!(err.is_some(), "execute ran a request check refused");
            continue;
        }
        match command {
            Command::Read if err.is_none() => {
                let data = &reply[encoder.data_header_len()..];
                expect_eq(data, &shadow[off..off + len], off, "read");
            }
            Command::Write(payload) => {
                for (i, b) in payload.iter().enumerate() {
                    shadow[off + i] = if err.is_none() { Some(*b) } else { None };
                }
            }
            Command::WriteZeroes | Command::Trim => {
                // Zeroes, except where an `rw` TRIM is advisory or an operation failed midway.
                let zeroes = err.is_none()
                    && (mode == ExportMode::CopyOnWrite || matches!(command, Command::WriteZeroes));
                for s in &mut shadow[off..off + len] {
                    *s = if zeroes { Some(0) } else { None };
                }
            }
            _ => {}
        }
    }
});
