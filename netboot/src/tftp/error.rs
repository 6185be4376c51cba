//! The error a request fails with, as the client will see it in an ERROR packet.
//!
//! Resolvers and path confinement return [`TftpError`] rather than `io::Error` so that the code the
//! client receives (1 not found, 2 access violation, …) is decided where the reason is known, not
//! guessed later from an errno.
//!
//! A client chooses the file name, and a request may be up to 64 KiB: names are never echoed
//! whole. Messages show at most [`NAME_SHOWN_CHARS`] characters of a name ([`shown`]), and
//! [`TftpError::to_packet`] cuts any message so that the ERROR packet stays within the 512
//! bytes of RFC 1350.

use std::borrow::Cow;
use std::io;

use super::packet::{ErrorCode, Packet};

/// Characters of a client-chosen name shown in messages and logs; longer names are cut, with "…".
pub const NAME_SHOWN_CHARS: usize = 64;

/// Bytes of an ERROR packet's message: 512 bytes less the opcode, the code and the final NUL.
pub const MAX_MESSAGE_BYTES: usize = 512 - 5;

/// `name` as messages and logs show it: whole up to [`NAME_SHOWN_CHARS`] characters, else its
/// first [`NAME_SHOWN_CHARS`] characters and "…".
pub fn shown(name: &str) -> Cow<'_, str> {
    match name.char_indices().nth(NAME_SHOWN_CHARS) {
        None => Cow::Borrowed(name),
        Some((cut, _)) => Cow::Owned(format!("{}…", &name[..cut])),
    }
}

/// `message` cut on a character boundary to at most `max` bytes, "…" included when cut.
fn cut_bytes(message: &str, max: usize) -> Cow<'_, str> {
    if message.len() <= max {
        return Cow::Borrowed(message);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &message[..end]))
}

/// A failed request: the TFTP error code and the message sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tftp error {code}: {message}")]
pub struct TftpError {
    /// Code sent in the ERROR packet.
    pub code: ErrorCode,
    /// Message sent in the ERROR packet.
    pub message: String,
}

impl TftpError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TftpError {
            code,
            message: message.into(),
        }
    }

    /// Code 1: the file does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FileNotFound, message)
    }

    /// Code 2: the request is not allowed (traversal, symlink escape, writes disabled…).
    pub fn access_violation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AccessViolation, message)
    }

    /// Code 4: the request makes no sense.
    pub fn illegal_operation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::IllegalOperation, message)
    }

    /// Maps an I/O error on `what` (a name, cut as [`shown`] does) to the code a client
    /// understands.
    pub fn from_io(what: &str, err: &io::Error) -> Self {
        let what = shown(what);
        match err.kind() {
            io::ErrorKind::NotFound => Self::not_found(format!("{what}: file not found")),
            io::ErrorKind::PermissionDenied => {
                Self::access_violation(format!("{what}: permission denied"))
            }
            io::ErrorKind::AlreadyExists => Self::new(
                ErrorCode::FileExists,
                format!("{what}: file already exists"),
            ),
            io::ErrorKind::StorageFull => {
                Self::new(ErrorCode::DiskFull, format!("{what}: disk full"))
            }
            _ => Self::new(ErrorCode::NotDefined, format!("{what}: {err}")),
        }
    }

    /// The ERROR packet for this error, its message cut to [`MAX_MESSAGE_BYTES`] so that the
    /// packet is at most 512 bytes.
    pub fn to_packet(&self) -> Packet<'static> {
        Packet::Error {
            code: self.code,
            message: cut_bytes(&self.message, MAX_MESSAGE_BYTES).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_tftp_codes() {
        let nf = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(TftpError::from_io("a", &nf).code, ErrorCode::FileNotFound);
        let pd = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            TftpError::from_io("a", &pd).code,
            ErrorCode::AccessViolation
        );
        let other = io::Error::other("boom");
        let e = TftpError::from_io("a", &other);
        assert_eq!(e.code, ErrorCode::NotDefined);
        assert_eq!(e.message, "a: boom");
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(shown("short.bin"), "short.bin");
        let exact = "é".repeat(NAME_SHOWN_CHARS);
        assert_eq!(shown(&exact), exact);
        let long = format!("{exact}x");
        assert_eq!(shown(&long), format!("{exact}…"));
        let e = TftpError::from_io(&"a".repeat(5000), &io::Error::other("boom"));
        assert_eq!(
            e.message,
            format!("{}…: boom", "a".repeat(NAME_SHOWN_CHARS))
        );
    }

    #[test]
    fn error_packets_stay_within_512_bytes() {
        for message in ["x".repeat(507), "x".repeat(508), "€".repeat(1000)] {
            let bytes = TftpError::not_found(message.clone()).to_packet().to_bytes();
            assert!(bytes.len() <= 512, "{} bytes", bytes.len());
            let Ok(Packet::Error { message: sent, .. }) = Packet::parse(&bytes) else {
                panic!("not an ERROR packet");
            };
            if message.len() <= MAX_MESSAGE_BYTES {
                assert_eq!(sent, message);
            } else {
                assert!(sent.ends_with('…') && message.starts_with(sent.trim_end_matches('…')));
            }
        }
    }
}
