//! [`ServerError`]: why a server could not start or stopped, as a value callers can match on.
//!
//! The servers used to return `io::Error`s whose only structure was a formatted message; the
//! appliance that runs them all needs to tell a port in use from a missing interface without
//! parsing text. Each variant keeps the words of the message it replaces, so `labboot: …` lines
//! (and the tests that read them) are unchanged.
//!
//! The underlying `io::Error` is part of the message and is *not* returned by
//! [`std::error::Error::source`]: error-chain printers (anyhow's `{:#}`, as `labboot` uses)
//! would otherwise print it twice. Reach it with [`ServerError::io_error`] or [`ServerError::kind`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a server could not start, or why its socket loop ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listening socket could not be bound (`server` is `nfs`, `portmap`, `nbd` or `tftp`).
    #[error("cannot bind {server} socket {addr}: {error}")]
    Bind {
        /// Which server's socket.
        server: &'static str,
        /// The address it was to listen on.
        addr: SocketAddr,
        /// Why the kernel refused.
        error: io::Error,
    },
    /// A socket tied to one network interface could not be set up (DHCP, ping-check).
    #[error("{what} (interface {name}{}): {error}", port_suffix(.port))]
    Interface {
        /// The interface.
        name: String,
        /// The port, for a UDP socket.
        port: Option<u16>,
        /// The step that failed, e.g. `cannot bind to the interface`.
        what: &'static str,
        /// Why.
        error: io::Error,
    },
    /// The DHCP lease log could not be read, compacted or opened.
    #[error("{what} {}: {error}", .path.display())]
    LeaseLog {
        /// The log's path.
        path: PathBuf,
        /// The step that failed, e.g. `cannot read lease file`.
        what: &'static str,
        /// Why.
        error: io::Error,
    },
    /// A configured export could not be opened.
    #[error("export {name:?}: {error}")]
    Export {
        /// Which server (`nbd`).
        server: &'static str,
        /// The export's name.
        name: String,
        /// Why (the message names the file).
        error: io::Error,
    },
    /// The configuration cannot be served as it is (the message says why).
    #[error("{0}")]
    Config(String),
    /// Any other I/O failure of a running server.
    #[error("{what}: {error}")]
    Io {
        /// What failed, e.g. `dhcp: the socket failed`.
        what: &'static str,
        /// Why.
        error: io::Error,
    },
}

fn port_suffix(port: &Option<u16>) -> String {
    port.map(|p| format!(", port {p}")).unwrap_or_default()
}

impl ServerError {
    /// The `io::Error` behind this error, if any (not [`Config`](ServerError::Config)).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            ServerError::Bind { error, .. }
            | ServerError::Interface { error, .. }
            | ServerError::LeaseLog { error, .. }
            | ServerError::Export { error, .. }
            | ServerError::Io { error, .. } => Some(error),
            ServerError::Config(_) => None,
        }
    }

    /// The kind of the underlying `io::Error` (`InvalidInput` for a configuration error), e.g.
    /// to tell `AddrInUse` from `PermissionDenied`.
    pub fn kind(&self) -> io::ErrorKind {
        self.io_error()
            .map_or(io::ErrorKind::InvalidInput, io::Error::kind)
    }

    /// A `map_err` adapter for a failed bind of `server`'s socket to `addr`
    /// ([`ServerError::Bind`]).
    pub fn bind(server: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> ServerError {
        move |error| ServerError::Bind {
            server,
            addr,
            error,
        }
    }

    /// A `map_err` adapter wrapping an `io::Error` as [`ServerError::Io`] with `what`.
    pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> ServerError {
        move |error| ServerError::Io { what, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> io::Error {
        io::Error::from(io::ErrorKind::AddrInUse)
    }

    #[test]
    fn messages_are_the_old_one_liners() {
        let e = ServerError::Bind {
            server: "nfs",
            addr: "127.0.0.1:2049".parse().unwrap(),
            error: refused(),
        };
        assert_eq!(
            e.to_string(),
            format!("cannot bind nfs socket 127.0.0.1:2049: {}", refused())
        );
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let e = ServerError::Interface {
            name: "lab0".into(),
            port: Some(67),
            what: "cannot bind to the interface",
            error: refused(),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "cannot bind to the interface (interface lab0, port 67): {}",
                refused()
            )
        );
        let e = ServerError::Interface {
            name: "lab0".into(),
            port: None,
            what: "ping-check: cannot open a raw ICMP socket",
            error: refused(),
        };
        assert!(e
            .to_string()
            .starts_with("ping-check: cannot open a raw ICMP socket (interface lab0): "));
        let e = ServerError::LeaseLog {
            path: "/var/lib/leases".into(),
            what: "cannot read lease file",
            error: refused(),
        };
        assert!(e
            .to_string()
            .starts_with("cannot read lease file /var/lib/leases: "));
        let e = ServerError::Export {
            server: "nbd",
            name: "m".into(),
            error: io::Error::new(io::ErrorKind::NotFound, "/x.img: gone"),
        };
        assert_eq!(e.to_string(), "export \"m\": /x.img: gone");
        assert_eq!(
            ServerError::Config("bad".into()).kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_cause_is_printed_once_in_a_chain() {
        let e = ServerError::io("dhcp: the socket failed")(refused());
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(e.io_error().unwrap().kind(), io::ErrorKind::AddrInUse);
    }
}
