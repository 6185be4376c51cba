//! The fixed newstyle handshake as a state machine over bytes: no socket, no clock.
//!
//! The caller sends [`greeting`], then feeds whatever it reads into [`Handshake::step`] and writes
//! out whatever the machine put in `out`, until the step returns [`Progress::Selected`] (go on to
//! transmission), [`Progress::Abort`] (close politely) or an error (close, and log it). Exports
//! are looked up through a [`Catalog`], so the machine never sees the export table, files or the
//! client's address: the caller hands it a view already restricted to that client.

use bytes::{Buf, BufMut, BytesMut};

use super::proto::*;

/// Longest option payload read; a longer one ends the connection (names are at most 4096 bytes).
pub const MAX_OPTION_LEN: u32 = 64 * 1024;

/// What the handshake needs to know about one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`TF_*`).
    pub flags: u16,
    /// Free text shown by `nbdinfo --list`.
    pub description: String,
}

/// The exports a client may see, as the handshake asks for them.
pub trait Catalog {
    /// Names of the exports this client may use, in listing order.
    fn names(&self) -> Vec<String>;
    /// The export called `name`, if this client may use it.
    fn info(&self, name: &str) -> Option<ExportInfo>;
}

/// The 18 bytes the server sends first: NBDMAGIC, IHAVEOPT and its handshake flags.
pub fn greeting() -> [u8; 18] {
    let mut g = [0u8; 18];
    g[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    g[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    g[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    g
}

/// The outcome of one [`Handshake::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The input holds no complete message; read more.
    NeedMore,
    /// One message was handled (its replies are in `out`); call `step` again.
    Continue,
    /// The client sent NBD_OPT_ABORT (acknowledged in `out`); close the connection.
    Abort,
    /// The client selected an export; the connection now enters transmission.
    Selected(Selected),
}

/// The export chosen at the end of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// Export name, as the client asked for it.
    pub name: String,
    /// Whether structured replies were negotiated.
    pub structured: bool,
}

/// A handshake that cannot go on; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The client flags carry bits this server does not know.
    #[error("unknown client flags {0:#x}")]
    ClientFlags(u32),
    /// An option did not start with IHAVEOPT.
    #[error("bad option magic {0:#018x}")]
    OptionMagic(u64),
    /// An option's payload is longer than [`MAX_OPTION_LEN`].
    #[error("option {option} has {len} bytes of data (at most {MAX_OPTION_LEN})")]
    OptionTooLong {
        /// Option number.
        option: u32,
        /// Announced length.
        len: u32,
    },
    /// NBD_OPT_EXPORT_NAME named an export that does not exist (the protocol has no reply).
    #[error("unknown export {0:?} requested with NBD_OPT_EXPORT_NAME")]
    UnknownExport(String),
    /// A message arrived after the handshake ended.
    #[error("handshake already finished")]
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ClientFlags,
    Options,
    Finished,
}

/// The server side of one connection's handshake.
#[derive(Debug)]
pub struct Handshake {
    state: State,
    no_zeroes: bool,
    structured: bool,
}

impl Default for Handshake {
    fn default() -> Self {
        Self::new()
    }
}

impl Handshake {
    /// A handshake waiting for the client flags (send [`greeting`] first).
    pub fn new() -> Handshake {
        Handshake {
            state: State::ClientFlags,
            no_zeroes: false,
            structured: false,
        }
    }

    /// Consumes at most one message from `input`, appending replies to `out`.
    pub fn step(
        &mut self,
        input: &mut BytesMut,
        catalog: &dyn Catalog,
        out: &mut BytesMut,
    ) -> Result<Progress, HandshakeError> {
        match self.state {
            State::Finished => Err(HandshakeError::Finished),
            State::ClientFlags => {
                if input.len() < 4 {
                    return Ok(Progress::NeedMore);
                }
                let flags = input.get_u32();
                if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                    self.state = State::Finished;
                    return Err(HandshakeError::ClientFlags(flags));
                }
                self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                self.state = State::Options;
                Ok(Progress::Continue)
            }
            State::Options => {
                if input.len() < 16 {
                    return Ok(Progress::NeedMore);
                }
                let magic = u64::from_be_bytes(input[..8].try_into().expect("8 bytes"));
                let option = u32::from_be_bytes(input[8..12].try_into().expect("4 bytes"));
                let len = u32::from_be_bytes(input[12..16].try_into().expect("4 bytes"));
                if magic != IHAVEOPT {
                    self.state = State::Finished;
                    return Err(HandshakeError::OptionMagic(magic));
                }
                if len > MAX_OPTION_LEN {
                    self.state = State::Finished;
                    return Err(HandshakeError::OptionTooLong { option, len });
                }
                if input.len() < 16 + len as usize {
                    input.reserve(16 + len as usize - input.len());
                    return Ok(Progress::NeedMore);
                }
                input.advance(16);
                let data = input.split_to(len as usize);
                self.option(option, &data, catalog, out)
            }
        }
    }

    fn option(
        &mut self,
        option: u32,
        data: &[u8],
        catalog: &dyn Catalog,
        out: &mut BytesMut,
    ) -> Result<Progress, HandshakeError> {
        match option {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(data).into_owned();
                self.state = State::Finished;
                let Some(info) = catalog.info(&name) else {
                    return Err(HandshakeError::UnknownExport(name));
                };
                out.put_u64(info.size);
                out.put_u16(info.flags);
                if !self.no_zeroes {
                    out.put_bytes(0, 124);
                }
                Ok(self.selected(name))
            }
            OPT_ABORT => {
                reply(out, option, REP_ACK, &[]);
                self.state = State::Finished;
                Ok(Progress::Abort)
            }
            OPT_LIST => {
                if !data.is_empty() {
                    error(out, option, REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
                    return Ok(Progress::Continue);
                }
                for name in catalog.names() {
                    let mut item = Vec::with_capacity(4 + name.len());
                    item.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    item.extend_from_slice(name.as_bytes());
                    if let Some(info) = catalog.info(&name) {
                        item.extend_from_slice(info.description.as_bytes());
                    }
                    reply(out, option, REP_SERVER, &item);
                }
                reply(out, option, REP_ACK, &[]);
                Ok(Progress::Continue)
            }
            OPT_INFO | OPT_GO => {
                let Some((name, requests)) = parse_info_request(data) else {
                    error(out, option, REP_ERR_INVALID, "malformed info request");
                    return Ok(Progress::Continue);
                };
                let Some(info) = catalog.info(&name) else {
                    error(
                        out,
                        option,
                        REP_ERR_UNKNOWN,
                        &format!("no export named {name:?}"),
                    );
                    return Ok(Progress::Continue);
                };
                let mut export = Vec::with_capacity(12);
                export.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                export.extend_from_slice(&info.size.to_be_bytes());
                export.extend_from_slice(&info.flags.to_be_bytes());
                reply(out, option, REP_INFO, &export);
                // Block sizes are sent whether asked for or not: the payload cap binds anyway.
                let mut sizes = Vec::with_capacity(14);
                sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                sizes.extend_from_slice(&1u32.to_be_bytes());
                sizes.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                sizes.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
                reply(out, option, REP_INFO, &sizes);
                for kind in requests {
                    let text = match kind {
                        INFO_NAME => &name,
                        INFO_DESCRIPTION if !info.description.is_empty() => &info.description,
                        _ => continue,
                    };
                    let mut item = Vec::with_capacity(2 + text.len());
                    item.extend_from_slice(&kind.to_be_bytes());
                    item.extend_from_slice(text.as_bytes());
                    reply(out, option, REP_INFO, &item);
                }
                reply(out, option, REP_ACK, &[]);
                if option == OPT_GO {
                    self.state = State::Finished;
                    return Ok(self.selected(name));
                }
                Ok(Progress::Continue)
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error(
                        out,
                        option,
                        REP_ERR_INVALID,
                        "NBD_OPT_STRUCTURED_REPLY takes no data",
                    );
                    return Ok(Progress::Continue);
                }
                self.structured = true;
                reply(out, option, REP_ACK, &[]);
                Ok(Progress::Continue)
            }
            _ => {
                error(
                    out,
                    option,
                    REP_ERR_UNSUP,
                    &format!("option {option} is not supported"),
                );
                Ok(Progress::Continue)
            }
        }
    }

    fn selected(&self, name: String) -> Progress {
        Progress::Selected(Selected {
            name,
            structured: self.structured,
        })
    }
}

/// Parses the data of NBD_OPT_INFO / NBD_OPT_GO: name, then the requested info types.
fn parse_info_request(mut data: &[u8]) -> Option<(String, Vec<u16>)> {
    if data.len() < 4 {
        return None;
    }
    let name_len = data.get_u32() as usize;
    if data.len() < name_len.checked_add(2)? {
        return None;
    }
    let name = std::str::from_utf8(&data[..name_len]).ok()?.to_owned();
    data.advance(name_len);
    let count = data.get_u16() as usize;
    if data.len() != count * 2 {
        return None;
    }
    let requests = (0..count).map(|_| data.get_u16()).collect();
    Some((name, requests))
}

fn reply(out: &mut BytesMut, option: u32, kind: u32, data: &[u8]) {
    out.put_u64(REPLY_MAGIC);
    out.put_u32(option);
    out.put_u32(kind);
    out.put_u32(data.len() as u32);
    out.put_slice(data);
}

fn error(out: &mut BytesMut, option: u32, kind: u32, message: &str) {
    reply(out, option, kind, message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl Catalog for One {
        fn names(&self) -> Vec<String> {
            vec!["master".into()]
        }
        fn info(&self, name: &str) -> Option<ExportInfo> {
            (name == "master").then(|| ExportInfo {
                size: 1 << 20,
                flags: TF_HAS_FLAGS | TF_READ_ONLY,
                description: String::new(),
            })
        }
    }

    fn option(code: u32, data: &[u8]) -> Vec<u8> {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }

    /// Runs every complete message in `bytes`; returns the last progress and all replies.
    fn drive(hs: &mut Handshake, bytes: &[u8]) -> (Result<Progress, HandshakeError>, Vec<u8>) {
        let mut input = BytesMut::from(bytes);
        let mut out = BytesMut::new();
        loop {
            match hs.step(&mut input, &One, &mut out) {
                Ok(Progress::Continue) => continue,
                other => return (other, out.to_vec()),
            }
        }
    }

    /// Splits option replies into (option, type, data).
    fn replies(mut out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while !out.is_empty() {
            assert_eq!(out.get_u64(), REPLY_MAGIC);
            let opt = out.get_u32();
            let kind = out.get_u32();
            let len = out.get_u32() as usize;
            v.push((opt, kind, out[..len].to_vec()));
            out.advance(len);
        }
        v
    }

    #[test]
    fn greeting_is_newstyle_with_no_zeroes() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3]);
    }

    #[test]
    fn go_with_structured_replies() {
        let mut hs = Handshake::new();
        let mut bytes = 1u32.to_be_bytes().to_vec();
        bytes.extend(option(OPT_STRUCTURED_REPLY, &[]));
        bytes.extend(option(OPT_GO, &info_data("master", &[INFO_NAME])));
        let (progress, out) = drive(&mut hs, &bytes);
        assert_eq!(
            progress,
            Ok(Progress::Selected(Selected {
                name: "master".into(),
                structured: true
            }))
        );
        let r = replies(&out);
        assert_eq!(r[0], (OPT_STRUCTURED_REPLY, REP_ACK, vec![]));
        let mut export = vec![0, 0];
        export.extend_from_slice(&(1u64 << 20).to_be_bytes());
        export.extend_from_slice(&[0, 3]);
        assert_eq!(r[1], (OPT_GO, REP_INFO, export));
        assert_eq!(&r[2].2[..2], &[0, 3], "block size info");
        assert_eq!(
            u32::from_be_bytes(r[2].2[10..14].try_into().unwrap()),
            32 << 20
        );
        assert_eq!(r[3], (OPT_GO, REP_INFO, b"\0\x01master".to_vec()));
        assert_eq!(r[4], (OPT_GO, REP_ACK, vec![]));
        assert_eq!(
            hs.step(&mut BytesMut::new(), &One, &mut BytesMut::new()),
            Err(HandshakeError::Finished)
        );
    }

    #[test]
    fn list_info_unknown_and_unsupported_options() {
        let mut hs = Handshake::new();
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend(option(OPT_LIST, &[]));
        bytes.extend(option(OPT_INFO, &info_data("nope", &[])));
        bytes.extend(option(OPT_INFO, b"\0\0\0\x09short"));
        bytes.extend(option(42, b"whatever"));
        bytes.extend(option(OPT_ABORT, &[]));
        let (progress, out) = drive(&mut hs, &bytes);
        assert_eq!(progress, Ok(Progress::Abort));
        let kinds: Vec<(u32, u32)> = replies(&out).iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(
            kinds,
            vec![
                (OPT_LIST, REP_SERVER),
                (OPT_LIST, REP_ACK),
                (OPT_INFO, REP_ERR_UNKNOWN),
                (OPT_INFO, REP_ERR_INVALID),
                (42, REP_ERR_UNSUP),
                (OPT_ABORT, REP_ACK),
            ]
        );
        assert_eq!(replies(&out)[0].2, b"\0\0\0\x06master".to_vec());
    }

    #[test]
    fn export_name_sends_size_flags_and_zeroes() {
        let mut hs = Handshake::new();
        let mut bytes = 1u32.to_be_bytes().to_vec();
        bytes.extend(option(OPT_EXPORT_NAME, b"master"));
        let (progress, out) = drive(&mut hs, &bytes);
        assert!(matches!(progress, Ok(Progress::Selected(_))));
        assert_eq!(out.len(), 8 + 2 + 124);
        let mut hs = Handshake::new();
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend(option(OPT_EXPORT_NAME, b"other"));
        let (progress, out) = drive(&mut hs, &bytes);
        assert_eq!(progress, Err(HandshakeError::UnknownExport("other".into())));
        assert!(out.is_empty());
    }

    #[test]
    fn partial_input_needs_more_and_bad_frames_are_errors() {
        let mut hs = Handshake::new();
        let mut bytes = 1u32.to_be_bytes().to_vec();
        bytes.extend(option(OPT_LIST, &[]));
        // Every prefix either asks for more or makes progress; nothing panics.
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        for b in &bytes {
            input.put_u8(*b);
            while hs.step(&mut input, &One, &mut out).unwrap() == Progress::Continue {}
        }
        assert_eq!(replies(&out).len(), 2);

        let (p, _) = drive(&mut Handshake::new(), &0x80u32.to_be_bytes());
        assert_eq!(p, Err(HandshakeError::ClientFlags(0x80)));
        let mut bad = 1u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&[0xff; 16]);
        let (p, _) = drive(&mut Handshake::new(), &bad);
        assert!(matches!(p, Err(HandshakeError::OptionMagic(_))));
        let mut long = 1u32.to_be_bytes().to_vec();
        long.extend_from_slice(&IHAVEOPT.to_be_bytes());
        long.extend_from_slice(&OPT_GO.to_be_bytes());
        long.extend_from_slice(&u32::MAX.to_be_bytes());
        let (p, _) = drive(&mut Handshake::new(), &long);
        assert!(matches!(p, Err(HandshakeError::OptionTooLong { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small LCG: deterministic, no dependency.
        let mut seed = 0x01ab_b007_u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as u32
        };
        let (mut needed_more, mut finished, mut refused) = (0, 0, 0);
        for round in 0..5000 {
            let mut hs = Handshake::new();
            let mut bytes = if round % 2 == 0 {
                3u32.to_be_bytes().to_vec()
            } else {
                Vec::new()
            };
            // Half the inputs start like real options, so the option parsers get exercised.
            if round % 4 == 0 {
                let code = next() % 12;
                let data: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
                bytes.extend(option(code, &data));
            }
            bytes.extend((0..next() % 64).map(|_| next() as u8));
            let (result, out) = drive(&mut hs, &bytes);
            // Whatever came in, what goes out is a sequence of well-formed option replies.
            let answered = replies(&out);
            match result {
                Ok(Progress::NeedMore) => needed_more += 1,
                Ok(_) => finished += 1,
                Err(_) => {
                    refused += 1;
                    assert!(answered.iter().all(|r| r.1 != REP_ACK || r.0 != OPT_GO));
                }
            }
        }
        assert!(
            needed_more > 0 && finished > 0 && refused > 0,
            "{needed_more}/{finished}/{refused}"
        );
    }
}
