//! TFTP packet codec: bytes to [`Packet`] and back, nothing else.
//!
//! Parsing never panics and never trusts a length: every failure is a [`PacketError`] that names
//! the packet and field that was wrong, so the socket loop can log one useful line and drop the
//! datagram (or answer ERROR 4). Option *values* stay strings here; what they mean is decided by
//! [`super::options`].

use std::fmt;

/// Opcodes of RFC 1350 and RFC 2347.
const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Error codes of RFC 1350 (0–7) and RFC 2347 (8), as carried by ERROR packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTransferId,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: the transfer should be terminated during option negotiation (RFC 2347).
    OptionRefused,
    /// Any other value a peer sent.
    Other(u16),
}

impl ErrorCode {
    /// The code as it goes on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a value read from the wire.
    pub fn from_u16(n: u16) -> Self {
        match n {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            n => ErrorCode::Other(n),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_u16())
    }
}

/// Transfer mode of a request (RFC 1350; "mail" is obsolete and refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// Text with CR LF line ends and CR NUL for a bare CR.
    Netascii,
}

/// A read or write request: file name, mode and the RFC 2347 options in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The file name exactly as sent (not yet confined; see [`super::path`]).
    pub filename: String,
    /// Transfer mode.
    pub mode: Mode,
    /// Options as (name, value) pairs; names keep the client's case.
    pub options: Vec<(String, String)>,
}

/// One TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ: the client wants to read a file.
    Read(Request),
    /// WRQ: the client wants to write a file.
    Write(Request),
    /// DATA: one block (block numbers wrap from 65535 to 0).
    Data {
        /// Block number on the wire.
        block: u16,
        /// Payload, at most the negotiated block size.
        data: &'a [u8],
    },
    /// ACK of a block (0 acknowledges an OACK or a WRQ).
    Ack {
        /// Block number on the wire.
        block: u16,
    },
    /// ERROR: ends the transfer.
    Error {
        /// Error code.
        code: ErrorCode,
        /// Human-readable message.
        message: String,
    },
    /// OACK: the options the server accepted (RFC 2347).
    OptionAck {
        /// Accepted options as (name, value) pairs.
        options: Vec<(String, String)>,
    },
}

/// Why a datagram is not a valid TFTP packet; names the packet and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer than two bytes: no opcode.
    #[error("packet of {len} bytes is too short for an opcode")]
    NoOpcode {
        /// Datagram length.
        len: usize,
    },
    /// Opcode outside 1–6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A fixed-size field is cut short.
    #[error("{packet}: {field} is truncated")]
    Truncated {
        /// Packet kind, e.g. "ACK".
        packet: &'static str,
        /// Field name, e.g. "block".
        field: &'static str,
    },
    /// A string field has no terminating NUL byte.
    #[error("{packet}: {field} is not NUL-terminated")]
    Unterminated {
        /// Packet kind.
        packet: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A string field is not UTF-8.
    #[error("{packet}: {field} is not valid UTF-8")]
    NotUtf8 {
        /// Packet kind.
        packet: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A string field that must not be empty is.
    #[error("{packet}: {field} is empty")]
    Empty {
        /// Packet kind.
        packet: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// The mode is not octet or netascii.
    #[error("{packet}: mode {:?} is not supported (use octet or netascii)", super::error::shown(.mode))]
    UnsupportedMode {
        /// Packet kind.
        packet: &'static str,
        /// The mode sent.
        mode: String,
    },
    /// An option name without a value.
    #[error("{packet}: option {:?} has no value", super::error::shown(.name))]
    OptionWithoutValue {
        /// Packet kind.
        packet: &'static str,
        /// The option name.
        name: String,
    },
    /// Bytes after the last field of a fixed-size packet.
    #[error("{packet}: {extra} unexpected trailing bytes")]
    Trailing {
        /// Packet kind.
        packet: &'static str,
        /// How many bytes followed.
        extra: usize,
    },
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        if buf.len() < 2 {
            return Err(PacketError::NoOpcode { len: buf.len() });
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        match op {
            OP_RRQ => parse_request("RRQ", body).map(Packet::Read),
            OP_WRQ => parse_request("WRQ", body).map(Packet::Write),
            OP_DATA => {
                let block = read_u16("DATA", "block", body)?;
                Ok(Packet::Data {
                    block,
                    data: &body[2..],
                })
            }
            OP_ACK => {
                let block = read_u16("ACK", "block", body)?;
                if body.len() > 2 {
                    return Err(PacketError::Trailing {
                        packet: "ACK",
                        extra: body.len() - 2,
                    });
                }
                Ok(Packet::Ack { block })
            }
            OP_ERROR => {
                let code = ErrorCode::from_u16(read_u16("ERROR", "code", body)?);
                // Some clients omit the final NUL of the message; accept that.
                let rest = &body[2..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                let message = String::from_utf8_lossy(&rest[..end]).into_owned();
                Ok(Packet::Error { code, message })
            }
            OP_OACK => {
                let mut fields = Fields::new("OACK", body);
                let options = parse_options(&mut fields)?;
                Ok(Packet::OptionAck { options })
            }
            other => Err(PacketError::UnknownOpcode(other)),
        }
    }

    /// Appends the wire form of this packet to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Read(r) | Packet::Write(r) => {
                let op = if matches!(self, Packet::Read(_)) {
                    OP_RRQ
                } else {
                    OP_WRQ
                };
                out.extend_from_slice(&op.to_be_bytes());
                put_str(out, &r.filename);
                put_str(
                    out,
                    match r.mode {
                        Mode::Octet => "octet",
                        Mode::Netascii => "netascii",
                    },
                );
                for (k, v) in &r.options {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
            Packet::Data { block, data } => {
                encode_data_header(out, *block);
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&OP_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&OP_ERROR.to_be_bytes());
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                // A NUL inside the message would end it early on the wire; drop such bytes.
                out.extend(message.bytes().filter(|&b| b != 0));
                out.push(0);
            }
            Packet::OptionAck { options } => {
                out.extend_from_slice(&OP_OACK.to_be_bytes());
                for (k, v) in options {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
        }
    }

    /// The wire form of this packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Writes the 4-byte header of a DATA packet, so the payload can be read straight after it.
pub fn encode_data_header(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Length of the DATA header in bytes.
pub const DATA_HEADER_LEN: usize = 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

fn read_u16(packet: &'static str, field: &'static str, body: &[u8]) -> Result<u16, PacketError> {
    match body {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(PacketError::Truncated { packet, field }),
    }
}

/// Cursor over NUL-terminated strings.
struct Fields<'a> {
    packet: &'static str,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(packet: &'static str, rest: &'a [u8]) -> Self {
        Fields { packet, rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn next_str(&mut self, field: &'static str) -> Result<&'a str, PacketError> {
        let packet = self.packet;
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PacketError::Unterminated { packet, field })?;
        let s = std::str::from_utf8(&self.rest[..end])
            .map_err(|_| PacketError::NotUtf8 { packet, field })?;
        self.rest = &self.rest[end + 1..];
        Ok(s)
    }
}

fn parse_request(packet: &'static str, body: &[u8]) -> Result<Request, PacketError> {
    let mut fields = Fields::new(packet, body);
    let filename = fields.next_str("filename")?;
    if filename.is_empty() {
        return Err(PacketError::Empty {
            packet,
            field: "filename",
        });
    }
    let mode_str = fields.next_str("mode")?;
    let mode = if mode_str.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode_str.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(PacketError::UnsupportedMode {
            packet,
            mode: mode_str.to_string(),
        });
    };
    let options = parse_options(&mut fields)?;
    Ok(Request {
        filename: filename.to_string(),
        mode,
        options,
    })
}

fn parse_options(fields: &mut Fields<'_>) -> Result<Vec<(String, String)>, PacketError> {
    let mut options = Vec::new();
    while !fields.is_empty() {
        let name = fields.next_str("option name")?;
        if fields.is_empty() {
            return Err(PacketError::OptionWithoutValue {
                packet: fields.packet,
                name: name.to_string(),
            });
        }
        let value = fields.next_str("option value")?;
        options.push((name.to_string(), value.to_string()));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: Packet<'_>) {
        let bytes = p.to_bytes();
        let back = Packet::parse(&bytes).expect("parse what we encoded");
        assert_eq!(back, p);
        assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn every_packet_kind_round_trips() {
        roundtrip(Packet::Read(Request {
            filename: "labboot/b1/boot.scr".into(),
            mode: Mode::Octet,
            options: vec![
                ("blksize".into(), "1468".into()),
                ("tsize".into(), "0".into()),
            ],
        }));
        roundtrip(Packet::Write(Request {
            filename: "up.bin".into(),
            mode: Mode::Netascii,
            options: vec![],
        }));
        roundtrip(Packet::Data {
            block: 65535,
            data: b"hello",
        });
        roundtrip(Packet::Data {
            block: 0,
            data: b"",
        });
        roundtrip(Packet::Ack { block: 7 });
        roundtrip(Packet::Error {
            code: ErrorCode::AccessViolation,
            message: "no".into(),
        });
        roundtrip(Packet::OptionAck {
            options: vec![("windowsize".into(), "16".into())],
        });
    }

    #[test]
    fn decodes_a_captured_rrq() {
        // What curl sends for `curl tftp://host/f --tftp-blksize 1024`.
        let bytes = b"\x00\x01f\x00octet\x00tsize\x000\x00blksize\x001024\x00timeout\x006\x00";
        let p = Packet::parse(bytes).unwrap();
        let Packet::Read(r) = p else {
            panic!("not a read request: {p:?}")
        };
        assert_eq!(r.filename, "f");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.options.len(), 3);
        assert_eq!(r.options[1], ("blksize".to_string(), "1024".to_string()));
    }

    #[test]
    fn mode_is_case_insensitive() {
        let p = Packet::parse(b"\x00\x01f\x00OcTeT\x00").unwrap();
        assert!(matches!(
            p,
            Packet::Read(Request {
                mode: Mode::Octet,
                ..
            })
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "packet of 0 bytes is too short for an opcode"),
            (b"\x00", "packet of 1 bytes is too short for an opcode"),
            (b"\x00\x09", "unknown opcode 9"),
            (b"\x00\x01file", "RRQ: filename is not NUL-terminated"),
            (b"\x00\x01\x00octet\x00", "RRQ: filename is empty"),
            (b"\x00\x01f\x00octet", "RRQ: mode is not NUL-terminated"),
            (
                b"\x00\x02f\x00mail\x00",
                "WRQ: mode \"mail\" is not supported (use octet or netascii)",
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00",
                "RRQ: option \"blksize\" has no value",
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00512",
                "RRQ: option value is not NUL-terminated",
            ),
            (
                b"\x00\x01\xff\x00octet\x00",
                "RRQ: filename is not valid UTF-8",
            ),
            (b"\x00\x03\x00", "DATA: block is truncated"),
            (b"\x00\x04\x00", "ACK: block is truncated"),
            (b"\x00\x04\x00\x01\x00", "ACK: 1 unexpected trailing bytes"),
            (b"\x00\x05", "ERROR: code is truncated"),
        ];
        for (bytes, want) in cases {
            let err = Packet::parse(bytes).expect_err("must not parse");
            assert_eq!(err.to_string(), *want, "for {bytes:?}");
        }
    }

    #[test]
    fn error_message_without_nul_is_accepted() {
        let p = Packet::parse(b"\x00\x05\x00\x08tsize probe").unwrap();
        assert_eq!(
            p,
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "tsize probe".into()
            }
        );
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of valid packets, plus a deterministic spray of byte strings.
        let mut samples: Vec<Vec<u8>> = Vec::new();
        let seed = b"\x00\x01a/b\x00octet\x00blksize\x001468\x00windowsize\x0016\x00".to_vec();
        for i in 0..=seed.len() {
            samples.push(seed[..i].to_vec());
        }
        let mut x: u32 = 0x1234_5678;
        for len in 0..64 {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push(if x & 3 == 0 { 0 } else { (x >> 8) as u8 % 8 });
            }
            samples.push(v);
        }
        for s in &samples {
            if let Ok(p) = Packet::parse(s) {
                let again = p.to_bytes();
                assert!(Packet::parse(&again).is_ok(), "re-encoded {s:?} must parse");
            }
        }
    }

    #[test]
    fn error_code_values_round_trip() {
        for n in 0..20u16 {
            assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
    }
}
