//! NFSv3 + MOUNT v3 over TCP, serving directories, with a small portmap responder.
//!
//! * [`NfsServer`] binds, runs until a shutdown future completes, and hands out its
//!   [`ExportTable`] (a cheap handle, like NBD's; [`NfsServer::with_table`] takes one made
//!   beforehand), through which exports are added and removed while it runs.
//! * Removing an export closes every TCP connection on which a call resolved into it (a MOUNT
//!   that found it, or an NFS call whose file handle named it); [`conns`] has the exact rule.
//! * [`NfsConfig`] / [`NfsSettings`] are the `nfs:` YAML section and its checked form.
//! * Connections that never call cannot lock clients out: at `max_connections` a new connection
//!   replaces the one idle the longest, and one without a call for `idle_timeout_secs` is
//!   closed ([`server`] has the rules).
//!
//! **Why not nfsserve or nfs3_server.** The design card named nfsserve 0.11; its maintained fork
//! nfs3_server 0.11.1 fixes two of its gaps (the handle generation can be fixed, so handles can
//! survive a restart; READDIR honours the cookie) and adds COMMIT. Both still lack what a root
//! filesystem needs: MKNOD (device nodes, FIFOs) and LINK (hard links) are not implemented
//! (`PROC_UNAVAIL`), the filesystem trait never sees the client's address (so exports cannot be
//! limited to a board), one listener serves exactly one export (no table changed at run time),
//! and their XDR decoders allocate whatever length a call announces before reading it. Patching
//! around all of that would leave little of either crate in use, so labboot carries its own
//! protocol layer, written for this purpose: [`xdr`] (bounded decoding), [`rpc`] (record marking,
//! call headers), [`proto`] (the procedures), on the filesystem layer [`fs`] (confinement,
//! stable handles, credentials) that either crate would have needed anyway.
//!
//! What it leaves out: NFSv2 and v4, UDP for NFS itself (portmap answers on UDP and TCP), NLM
//! locking (clients mount with `nolock`, as an NFS root does), and RPCSEC_GSS.

pub mod attrcache;
pub mod config;
pub mod conns;
pub mod exports;
pub mod fs;
pub mod proto;
pub mod rpc;
pub mod server;
pub mod status;
pub mod xdr;

pub use config::{Access, ExportConfig, NfsConfig, NfsSettings};
pub use conns::Connection;
pub use exports::{ExportError, ExportTable};
pub use server::NfsServer;
