//! Transmission-phase framing: requests in (a tokio-util [`Decoder`]), replies out (an
//! [`Encoder`]), simple or structured depending on what the handshake negotiated.
//!
//! A READ reply's data is not passed through the encoder: [`ReplyEncoder::data_header`] writes
//! the header into a buffer that already has room for the data, and the export preads straight
//! into the rest of it, so file bytes are copied once (page cache → reply buffer).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::proto::*;

/// One transmission request, with its payload when it is a WRITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's cookie, echoed in the reply.
    pub handle: u64,
    /// Command flags (`CMD_FLAG_*`).
    pub flags: u16,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// What to do.
    pub command: Command,
}

/// The command of a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// NBD_CMD_READ.
    Read,
    /// NBD_CMD_WRITE with its payload.
    Write(Bytes),
    /// NBD_CMD_DISC.
    Disconnect,
    /// NBD_CMD_FLUSH.
    Flush,
    /// NBD_CMD_TRIM.
    Trim,
    /// NBD_CMD_CACHE.
    Cache,
    /// NBD_CMD_WRITE_ZEROES.
    WriteZeroes,
    /// Any other command type; answered with an error.
    Unknown(u16),
}

/// A request stream that cannot be followed any more; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A request did not start with the request magic (the stream is out of step).
    #[error("bad request magic {0:#010x}")]
    Magic(u32),
    /// A WRITE announced more payload than accepted; skipping it is not worth the bytes.
    #[error("write of {len} bytes (handle {handle:#x}) is above the {max}-byte limit")]
    PayloadTooLarge {
        /// The request's cookie.
        handle: u64,
        /// Announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
}

/// Decodes transmission requests; WRITE payloads above `max_payload` are refused.
#[derive(Debug, Clone, Copy)]
pub struct RequestDecoder {
    max_payload: u32,
}

impl RequestDecoder {
    /// A decoder accepting WRITE payloads up to `max_payload` bytes.
    pub fn new(max_payload: u32) -> RequestDecoder {
        RequestDecoder { max_payload }
    }
}

impl Default for RequestDecoder {
    fn default() -> Self {
        RequestDecoder::new(MAX_PAYLOAD)
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, CodecError> {
        if src.len() < REQUEST_LEN {
            src.reserve(REQUEST_LEN - src.len());
            return Ok(None);
        }
        let mut h = &src[..REQUEST_LEN];
        let magic = h.get_u32();
        let flags = h.get_u16();
        let kind = h.get_u16();
        let handle = h.get_u64();
        let offset = h.get_u64();
        let len = h.get_u32();
        if magic != REQUEST_MAGIC {
            return Err(CodecError::Magic(magic));
        }
        let command = match kind {
            CMD_READ => Command::Read,
            CMD_WRITE => {
                if len > self.max_payload {
                    return Err(CodecError::PayloadTooLarge {
                        handle,
                        len,
                        max: self.max_payload,
                    });
                }
                let total = REQUEST_LEN + len as usize;
                if src.len() < total {
                    src.reserve(total - src.len());
                    return Ok(None);
                }
                src.advance(REQUEST_LEN);
                Command::Write(src.split_to(len as usize).freeze())
            }
            CMD_DISC => Command::Disconnect,
            CMD_FLUSH => Command::Flush,
            CMD_TRIM => Command::Trim,
            CMD_CACHE => Command::Cache,
            CMD_WRITE_ZEROES => Command::WriteZeroes,
            other => Command::Unknown(other),
        };
        if kind != CMD_WRITE {
            src.advance(REQUEST_LEN);
        }
        Ok(Some(Request {
            handle,
            flags,
            offset,
            len,
            command,
        }))
    }
}

/// The reply to a request that carries no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Success.
    Done {
        /// The request's cookie.
        handle: u64,
    },
    /// Failure with an NBD error number (`proto::errno`) and a message for structured clients.
    Error {
        /// The request's cookie.
        handle: u64,
        /// Error number.
        errno: u32,
        /// Human-readable cause (sent only with structured replies).
        message: String,
    },
}

/// Encodes replies, simple or structured.
#[derive(Debug, Clone, Copy)]
pub struct ReplyEncoder {
    structured: bool,
}

impl ReplyEncoder {
    /// An encoder for a connection that did (`true`) or did not negotiate structured replies.
    pub fn new(structured: bool) -> ReplyEncoder {
        ReplyEncoder { structured }
    }

    /// Length of the header [`Self::data_header`] writes before READ data.
    pub fn data_header_len(&self) -> usize {
        if self.structured {
            STRUCTURED_HEADER_LEN + 8
        } else {
            SIMPLE_REPLY_LEN
        }
    }

    /// Writes the header of a successful READ of `len` bytes at `offset`; the data must follow.
    pub fn data_header(&self, handle: u64, offset: u64, len: u32, dst: &mut BytesMut) {
        if self.structured {
            dst.put_u32(STRUCTURED_REPLY_MAGIC);
            dst.put_u16(REPLY_FLAG_DONE);
            dst.put_u16(REPLY_TYPE_OFFSET_DATA);
            dst.put_u64(handle);
            dst.put_u32(len + 8);
            dst.put_u64(offset);
        } else {
            simple(dst, 0, handle);
        }
    }
}

fn simple(dst: &mut BytesMut, errno: u32, handle: u64) {
    dst.put_u32(SIMPLE_REPLY_MAGIC);
    dst.put_u32(errno);
    dst.put_u64(handle);
}

impl Encoder<Reply> for ReplyEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        match (reply, self.structured) {
            (Reply::Done { handle }, false) => simple(dst, 0, handle),
            (Reply::Error { handle, errno, .. }, false) => simple(dst, errno, handle),
            (Reply::Done { handle }, true) => {
                dst.put_u32(STRUCTURED_REPLY_MAGIC);
                dst.put_u16(REPLY_FLAG_DONE);
                dst.put_u16(REPLY_TYPE_NONE);
                dst.put_u64(handle);
                dst.put_u32(0);
            }
            (
                Reply::Error {
                    handle,
                    errno,
                    message,
                },
                true,
            ) => {
                let msg = &message.as_bytes()[..message.len().min(4096)];
                dst.put_u32(STRUCTURED_REPLY_MAGIC);
                dst.put_u16(REPLY_FLAG_DONE);
                dst.put_u16(REPLY_TYPE_ERROR);
                dst.put_u64(handle);
                dst.put_u32(6 + msg.len() as u32);
                dst.put_u32(errno);
                dst.put_u16(msg.len() as u16);
                dst.put_slice(msg);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: u16, flags: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn decodes_requests_byte_by_byte() {
        let mut wire = request(CMD_WRITE, CMD_FLAG_FUA, 7, 4096, 3);
        wire.extend_from_slice(b"abc");
        wire.extend(request(CMD_READ, 0, 8, 0, 512));
        wire.extend(request(99, 0, 9, 0, 0));
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(r) = dec.decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].command, Command::Write(Bytes::from_static(b"abc")));
        assert_eq!((got[0].handle, got[0].flags, got[0].offset), (7, 1, 4096));
        assert_eq!(got[1].command, Command::Read);
        assert_eq!(got[2].command, Command::Unknown(99));
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_magic_and_oversized_writes_are_errors() {
        let mut dec = RequestDecoder::new(1024);
        let mut buf = BytesMut::from(&[0u8; 28][..]);
        assert!(matches!(dec.decode(&mut buf), Err(CodecError::Magic(0))));
        let mut buf = BytesMut::from(&request(CMD_WRITE, 0, 1, 0, 1025)[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(CodecError::PayloadTooLarge { len: 1025, .. })
        ));
        // A large READ is not refused by the decoder: it has no payload to skip.
        let mut buf = BytesMut::from(&request(CMD_READ, 0, 1, 0, u32::MAX)[..]);
        assert_eq!(dec.decode(&mut buf).unwrap().unwrap().len, u32::MAX);
    }

    #[test]
    fn encodes_simple_and_structured_replies() {
        let mut out = BytesMut::new();
        let mut simple = ReplyEncoder::new(false);
        simple.encode(Reply::Done { handle: 5 }, &mut out).unwrap();
        simple
            .encode(
                Reply::Error {
                    handle: 6,
                    errno: 1,
                    message: "read-only".into(),
                },
                &mut out,
            )
            .unwrap();
        assert_eq!(&out[..16], b"\x67\x44\x66\x98\0\0\0\0\0\0\0\0\0\0\0\x05");
        assert_eq!(&out[16..24], b"\x67\x44\x66\x98\0\0\0\x01");

        let mut out = BytesMut::new();
        let mut st = ReplyEncoder::new(true);
        st.encode(
            Reply::Error {
                handle: 6,
                errno: 28,
                message: "full".into(),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 20 + 6 + 4);
        assert_eq!(&out[4..8], &[0, 1, 0x80, 1]);
        assert_eq!(&out[20..26], &[0, 0, 0, 28, 0, 4]);
        let mut out = BytesMut::new();
        st.data_header(9, 4096, 512, &mut out);
        assert_eq!(out.len(), st.data_header_len());
        assert_eq!(&out[16..20], &520u32.to_be_bytes());
    }

    #[test]
    fn random_bytes_decode_or_fail_without_panic() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as u32
        };
        let mut dec = RequestDecoder::new(4096);
        let (mut decoded, mut refused) = (0, 0);
        for _ in 0..5000 {
            let mut wire = request(
                (next() % 9) as u16,
                next() as u16,
                1,
                next().into(),
                next() % 5000,
            );
            wire.truncate((next() % 40) as usize);
            wire.extend((0..next() % 64).map(|_| next() as u8));
            let mut buf = BytesMut::from(&wire[..]);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(r)) => {
                        decoded += 1;
                        if let Command::Write(data) = &r.command {
                            assert_eq!(data.len(), r.len as usize);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
        }
        assert!(
            decoded > 0 && refused > 0,
            "{decoded} decoded, {refused} refused"
        );
    }
}
