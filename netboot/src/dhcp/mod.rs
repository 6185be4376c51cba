//! The DHCP server of labboot: leases, static bindings by MAC or board identity, and the boot
//! options U-Boot needs, on dhcproto and tokio.
//!
//! Boards are told apart by identity, not MAC: the bootstrap script sets U-Boot's `bootp_vci`
//! to `labboot:<board_id>` (option 60), and `pxeuuid` adds option 97. A lease is keyed by that
//! identity when present, else by MAC, so two boards with a cloned MAC get two leases, and the
//! clash is logged as a warning.
//!
//! Layers, each in its own file:
//! * [`classify`]: who is asking (MAC, [`Identity`], [`Arch`]) from what clients really send;
//! * [`config`]: [`DhcpConfig`] (serde) checked into [`DhcpSettings`];
//! * [`binding`]: the [`BindingTable`] trait the dispatcher implements, and [`StaticBindings`];
//! * [`pool`] and [`leases`]: free addresses and the in-memory lease table;
//! * [`store`]: the crash-safe lease log (append + fsync, compacted by write-and-rename);
//! * [`wire`]: datagram framing checks before dhcproto parses;
//! * [`reply`]: OFFER/ACK/NAK building; [`engine`]: the decisions, with no I/O and no clock;
//! * [`events`]: [`LeaseEvent`]s (ACK, RELEASE, DECLINE, expiry) published once durable, so the
//!   appliance learns which board holds which address without the server knowing boards;
//! * [`server`]: the socket loop, bound to one interface;
//! * [`ping`]: ICMP echo probes for the opt-in ping-check.
//!
//! Ping-check is off by default: a board waiting in U-Boot must bind in well under 100 ms, and
//! addresses in use are caught by DECLINE instead, which rests the address for one lease time.
//! With `ping_check_ms` set, a new address is pinged before it is offered, and one that answers
//! is quarantined the same way (see [`engine`] for how the check stays out of the engine's way).
//!
//! What is deliberately left out: no relay-agent option 82 echo, no failover, one subnet.
//!
//! # Example: run the server in-process on an interface until Ctrl-C
//! ```no_run
//! use netboot::dhcp::{serve, DhcpConfig, DhcpSettings};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let yaml = "dhcp:\n  interface: lab0\n  server_ip: 10.0.0.1\n  pool: 10.0.0.100-10.0.0.199\n";
//! let settings = DhcpSettings::try_from(DhcpConfig::from_yaml_section(yaml)?)?;
//! serve(settings, async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
//! With a live binding table instead of the configured one, compose the pieces:
//! [`LeaseStore::open`] → [`Engine::with_bindings`] + [`Engine::restore`] → [`bind_interface`]
//! → [`Server::new`] → [`Server::run`].
//!
//! # Example: watch leases as they are ACKed
//! ```no_run
//! use netboot::dhcp::{events, serve_with_events, DhcpSettings, LeaseEventKind};
//! # async fn demo(settings: DhcpSettings) -> Result<(), Box<dyn std::error::Error>> {
//! let (sender, mut leases) = events::channel();
//! tokio::spawn(async move {
//!     while let Ok(lease) = leases.recv().await {
//!         if lease.kind == LeaseEventKind::Acked {
//!             println!("{:?} has {} for {} s", lease.board_id(), lease.ip, lease.lease_time);
//!         }
//!     }
//! });
//! serve_with_events(settings, async { tokio::signal::ctrl_c().await.ok(); }, sender).await?;
//! # Ok(()) }
//! ```

pub mod binding;
pub mod classify;
pub mod config;
pub mod engine;
pub mod events;
pub mod leases;
pub mod ping;
pub mod pool;
pub mod reply;
pub mod server;
pub mod store;
pub mod wire;

#[cfg(test)]
mod bad_input_tests;
#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod event_tests;
#[cfg(test)]
mod fuzz_tests;

pub use binding::{Binding, BindingTable, StaticBindings};
pub use classify::{Arch, ClientKey, Identity, MacAddr};
pub use config::{BindingConfig, ConfigError, DhcpConfig, DhcpSettings};
pub use engine::{Destination, Engine, Ignored, Outcome};
pub use events::{LeaseEvent, LeaseEventKind};
pub use leases::{Lease, LeaseState, LeaseTable};
pub use ping::Pinger;
pub use pool::Pool;
pub use server::{bind_interface, engine_with_store, serve, serve_with_events, Server};
pub use store::{load as load_leases, LeaseRecord, LeaseStore, StoredLease};
