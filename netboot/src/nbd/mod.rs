//! NBD server: fixed newstyle handshake, structured replies, concurrent out-of-order requests,
//! and three kinds of export: `ro` (one read-only master shared by every board), `cow` (the
//! master plus a private copy-on-write overlay per connection, dropped on disconnect) and `rw`
//! (a per-job image).
//!
//! # Why our own server
//!
//! No Rust NBD server crate fits: the mature one is GPL and handles one request at a time per
//! connection. The protocol (the NBD project's `doc/proto.md`) is small; owning it gives
//! per-connection copy-on-write, an export table the dispatcher changes at run time, and the
//! same shape as [`crate::tftp`]: a pure handshake state machine and codecs, a socket loop apart.
//!
//! # Map
//!
//! * [`proto`]: the protocol's numbers;
//! * [`handshake`]: option haggling as a state machine over bytes ([`Handshake`]), asking a
//!   [`Catalog`] about exports;
//! * [`codec`]: requests in ([`RequestDecoder`]) and replies out ([`ReplyEncoder`]), simple or
//!   structured;
//! * [`dispatch`]: checks one request (range, flags, mode) and runs it on a [`Backend`];
//! * [`export`]: [`Export`] (named file + [`ExportMode`] + allowed [`ClientNet`]s) and
//!   [`Backend`] (one connection's view; reads pread straight into the reply buffer);
//! * [`overlay`]: a `cow` connection's [`Overlay`] (sparse, memory then an unlinked temp file,
//!   ENOSPC at its limit);
//! * [`table`]: the run-time [`ExportTable`]; removing an export closes its connections;
//! * [`config`]: [`NbdConfig`] (the `nbd:` YAML section) → [`NbdSettings`];
//! * [`server`]: [`NbdServer`], the accept loop (connection cap, and a cap per client address
//!   on connections still in the handshake) and per-connection handshake tasks;
//! * `transmit`: the transmission phase on each connection's worker threads (zero-copy reads).
//!
//! Deliberately left out: oldstyle negotiation, TLS (the lab network is trusted and closed),
//! NBD_OPT_LIST/SET_META_CONTEXT and NBD_CMD_BLOCK_STATUS (clients then treat every block as
//! data), extended headers (64-bit lengths), NBD_CMD_RESIZE, NBD_CMD_FLAG_DF/FAST_ZERO, and
//! persistence of `cow` overlays. Exports hidden from a client by its address look to it as if
//! they did not exist (LIST omits them, INFO/GO answer ERR_UNKNOWN).
//!
//! # Example
//!
//! ```no_run
//! use netboot::nbd::{Export, ExportMode, NbdConfig, NbdServer, NbdSettings};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NbdConfig { listen: "127.0.0.1:10809".parse()?, ..NbdConfig::default() };
//! let server = NbdServer::new(NbdSettings::try_from(config)?)?;
//! let table = server.table();
//! table.add(Export::open("master", "/srv/master.img".as_ref(), ExportMode::CopyOnWrite)?)?;
//! let listener = server.bind().await?;
//! let running = tokio::spawn(server.run(listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! }));
//! // Later, from the dispatcher: a per-job export, then its removal (its clients are cut off).
//! table.add(Export::open("job-42", "/srv/jobs/42.img".as_ref(), ExportMode::ReadWrite)?)?;
//! table.remove("job-42");
//! running.await??;
//! # Ok(()) }
//! ```

pub mod budget;
pub mod codec;
pub mod config;
pub mod dispatch;
pub mod export;
pub mod handshake;
pub mod overlay;
pub mod proto;
pub mod server;
pub mod table;
mod transmit;

#[cfg(test)]
mod tests;

pub use codec::{Command, Reply, ReplyEncoder, Request, RequestDecoder};
pub use config::{ConfigError, ExportConfig, ExportSpec, NbdConfig, NbdSettings};
pub use export::{Backend, ClientNet, Export, ExportMode, OpError};
pub use handshake::{Catalog, ExportInfo, Handshake};
pub use overlay::{Overlay, OverlayLimits, Piece};
pub use server::NbdServer;
pub use table::{AlreadyExists, ExportTable};
