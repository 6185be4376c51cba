//! NBD: the fixed-newstyle option haggling (`nbd::Handshake`), then, once an export is selected,
//! the transmission request stream through the codec and `dispatch::check`, as
//! `nbd::server` runs a connection (bytes arrive in whatever pieces the socket gives).
//!
//! Input: frames (see `common`), each a piece of the client's byte stream. Checked besides "no
//! panic": every server reply in the option phase is well framed (magic, option, type, length
//! matching its data), and the handshake never selects an export the catalog does not have.

#![no_main]

mod common;

use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use netboot::nbd::dispatch::check;
use netboot::nbd::handshake::{Catalog, ExportInfo, Handshake, Progress};
use netboot::nbd::proto::*;
use netboot::nbd::{ExportMode, RequestDecoder};
use tokio_util::codec::Decoder;

struct Lab;

const EXPORTS: [(&str, u64, ExportMode); 3] = [
    ("master", 1 << 30, ExportMode::ReadOnly),
    ("job-42", 4 << 20, ExportMode::ReadWrite),
    ("cow", 64 << 20, ExportMode::CopyOnWrite),
];

impl Catalog for Lab {
    fn names(&self) -> Vec<String> {
        EXPORTS.iter().map(|e| e.0.to_string()).collect()
    }
    fn info(&self, name: &str) -> Option<ExportInfo> {
        let e = EXPORTS.iter().find(|e| e.0 == name)?;
        let mut flags = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA;
        if e.2 == ExportMode::ReadOnly {
            flags |= TF_READ_ONLY;
        }
        Some(ExportInfo {
            size: e.1,
            flags,
            description: format!("{} export", e.0),
        })
    }
}

/// Walks the option replies in `out`: each is magic, option, type, length, data. Only
/// NBD_OPT_EXPORT_NAME's reply (size, flags and maybe 124 zeroes) has no magic; it ends the phase.
fn replies_framed(mut out: &[u8]) {
    while out.len() >= 20 && u64::from_be_bytes(out[..8].try_into().unwrap()) == REPLY_MAGIC {
        let len = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
        assert!(
            out.len() >= 20 + len,
            "reply announces {len} bytes, {} follow",
            out.len() - 20
        );
        out = &out[20 + len..];
    }
    assert!(
        out.is_empty() || out.len() == 10 || out.len() == 134,
        "{} stray bytes after the replies",
        out.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut hs = Handshake::new();
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    let mut selected = None;
    let mut frames = common::frames(data, 512).into_iter();
    'handshake: for f in frames.by_ref() {
        input.extend_from_slice(f.bytes);
        loop {
            out.clear();
            let step = hs.step(&mut input, &Lab, &mut out);
            replies_framed(&out);
            match step {
                Ok(Progress::NeedMore) => break,
                Ok(Progress::Continue) => {}
                Ok(Progress::Abort) | Err(_) => return,
                Ok(Progress::Selected(s)) => {
                    assert!(Lab.info(&s.name).is_some(), "selected unknown {:?}", s.name);
                    selected = Some(s);
                    break 'handshake;
                }
            }
        }
    }
    let Some(s) = selected else { return };
    assert!(
        hs.step(&mut input, &Lab, &mut out).is_err(),
        "a finished handshake goes on"
    );
    let (_, size, mode) = *EXPORTS.iter().find(|e| e.0 == s.name).unwrap();
    let mut decoder = RequestDecoder::default();
    let mut stream = input;
    let mut pieces = frames.map(|f| f.bytes);
    loop {
        match decoder.decode(&mut stream) {
            Ok(Some(req)) => {
                let _ = check(&req, size, mode);
                if matches!(req.command, netboot::nbd::Command::Disconnect) {
                    return;
                }
            }
            Ok(None) => match pieces.next() {
                Some(p) => stream.extend_from_slice(p),
                None => return,
            },
            Err(_) => return,
        }
        // Bound the work per input: a stream of empty requests is long.
        if stream.remaining() > 1 << 20 {
            return;
        }
    }
});
