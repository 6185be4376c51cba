//! The network-boot servers of labboot.
//!
//! * [`dhcp`] hands out leases and boot options, and tells boards apart by identity rather than MAC;
//!   it publishes every durable lease change as a [`dhcp::LeaseEvent`].
//! * [`tftp`] serves boot files, including per-board *virtual* files rendered at request time.
//! * [`nbd`] and [`nfs`] serve root filesystems from export tables changed at run time.
//!
//! [`metrics`] counts what they do, process-wide, for an exporter; [`throttle`] keeps the log
//! lines about what a hostile client can repeat at will (refusals, stray packets) to one a
//! minute.
//!
//! The servers know nothing of jobs: callers hand them content through small traits and tables,
//! and learn what happened through events. Starting or running a server fails with a
//! [`ServerError`].

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod common;
pub mod dhcp;
pub mod error;
pub mod metrics;
pub mod nbd;
pub mod nfs;
pub mod tftp;
pub mod throttle;

#[cfg(test)]
mod testlog;

pub use error::ServerError;
