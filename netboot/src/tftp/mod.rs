//! TFTP server: RFC 1350 with options (RFC 2347/2348/2349) and windows (RFC 7440), serving files
//! from a directory or *virtual* files rendered per request (`labboot/<board_id>/boot.scr`).
//!
//! # Why our own server on tokio
//!
//! async-tftp 0.4.2 was the first pick, but it runs on smol (a second runtime next to the
//! appliance's tokio), serialises handler opens behind a mutex (one slow render would stall every
//! board), ignores a client's ERROR packet (its issue #18: 100 retries × 3 s after a `tsize` probe)
//! and waits out a full timeout on a duplicate ACK. Closing those gaps means replacing its transfer
//! loop, which is most of it; the protocol is small enough to own, and owning it gives windows,
//! a testable state machine and a transfer cap.
//!
//! # Map
//!
//! * [`packet`]: bytes ⇄ [`Packet`], parse errors naming the field;
//! * [`options`]: negotiation of blksize, tsize, timeout, windowsize;
//! * [`transfer`]: the sending state machine of a read (no I/O, no clock: callers pass `now`);
//! * [`receive`]: the receiving state machine of a write;
//! * [`path`]: confinement of requested names; [`resolver`]: the [`Resolver`] trait,
//!   [`DirResolver`] and [`VirtualResolver`]; [`content`]: [`Content`] with a known size;
//! * [`upload`]: the separate upload directory; [`config`]: [`TftpConfig`] → [`TftpSettings`];
//! * [`server`]: the socket loop, [`TftpServer`], the caps (in total and per client address);
//!   [`sender`]: the data path of a read, on a thread of its own while the client answers, with
//!   UDP GSO or `sendmmsg`.
//!
//! Not supported: multicast TFTP (RFC 2090), netascii uploads, and replies from the address a
//! request was sent to on a multi-homed host bound to `0.0.0.0` (bind to one address instead).
//!
//! # Example
//!
//! ```no_run
//! use netboot::tftp::{Content, DirResolver, TftpConfig, TftpServer, TftpSettings, VirtualResolver};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = TftpConfig::new("/srv/tftp");
//! config.listen = "127.0.0.1:6969".parse()?;
//! let settings = TftpSettings::try_from(config)?;
//! let resolver = VirtualResolver::new()
//!     .with_generator(|client, path| {
//!         let parts: Vec<&str> = path.components().collect();
//!         match parts.as_slice() {
//!             ["labboot", board, "boot.scr"] => Some(Ok(Content::from_bytes(
//!                 format!("echo board {board} at {client}\n").into_bytes(),
//!             ))),
//!             _ => None,
//!         }
//!     })
//!     .with_fallback(DirResolver::new(settings.root())?);
//! let server = TftpServer::new(settings, resolver)?;
//! let socket = server.bind().await?;
//! server.run(socket, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod content;
pub mod error;
pub mod options;
pub mod packet;
pub mod path;
pub mod receive;
pub mod resolver;
pub mod sender;
pub mod server;
pub mod transfer;
pub mod upload;

pub use config::{ConfigError, TftpConfig, TftpSettings};
pub use content::Content;
pub use error::TftpError;
pub use packet::{ErrorCode, Packet};
pub use path::RequestPath;
pub use resolver::{DirResolver, Resolver, VirtualResolver};
pub use server::TftpServer;
pub use upload::UploadDir;
