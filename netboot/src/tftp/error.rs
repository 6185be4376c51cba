//! The error a request fails with, as the client will see it in an ERROR packet.
//!
//! Resolvers and path confinement return [`TftpError`] rather than `io::Error` so that the code the
//! client receives (1 not found, 2 access violation, …) is decided where the reason is known, not
//! guessed later from an errno.

use std::io;

use super::packet::{ErrorCode, Packet};

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

    /// Maps an I/O error on `what` to the code a client understands.
    pub fn from_io(what: &str, err: &io::Error) -> Self {
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

    /// The ERROR packet for this error.
    pub fn to_packet(&self) -> Packet<'static> {
        Packet::Error {
            code: self.code,
            message: self.message.clone(),
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
}
