//! Lease events: who holds which address, told to whoever listens, once it is durable.
//!
//! The appliance needs to know which board got which address (a board is known by the
//! `labboot:<board_id>` identity it sends in option 60, or option 97), but the server must
//! know nothing of boards. So the engine describes each lease change as a [`LeaseEvent`] (in
//! [`Outcome::event`](super::Outcome::event) and [`Engine::expired`](super::Engine::expired)),
//! and the socket loop publishes it on a `tokio::sync::broadcast` channel:
//!
//! * [`LeaseEventKind::Acked`], [`Released`](LeaseEventKind::Released) and
//!   [`Declined`](LeaseEventKind::Declined) are published only after the lease log holding
//!   their record was `fdatasync`ed (an ACK's event right after the ACK is sent); without a
//!   lease log, at once;
//! * [`Expired`](LeaseEventKind::Expired) comes from a sweep every [`EXPIRY_SWEEP`], for a bound
//!   lease whose end passed while it was still in the table (one a new client took over first
//!   is not reported).
//!
//! Events are state updates, not a log: renewals repeat `Acked`, and an ACK whose append failed
//! is published again when the client's retry is durable. A slow subscriber misses the oldest
//! events ([`broadcast::error::RecvError::Lagged`]) rather than slowing the server down; its
//! buffer holds [`EVENT_CAPACITY`] events. Publishing with no subscriber costs nothing.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::sync::broadcast;

use super::classify::{ClientKey, Identity, MacAddr};

/// Events a subscriber may fall behind by before it misses the oldest.
pub const EVENT_CAPACITY: usize = 1024;

/// How often the server looks for leases that expired.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(5);

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseEventKind {
    /// ACKed (a new lease, a renewal or a reboot), for `lease_time` seconds.
    Acked,
    /// The client gave the address back (DHCPRELEASE).
    Released,
    /// The client found the address in use by someone else (DHCPDECLINE); it rests for one
    /// lease time.
    Declined,
    /// The lease ran out without a renewal.
    Expired,
}

/// One lease change, as the server publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseEvent {
    /// What happened.
    pub kind: LeaseEventKind,
    /// The identity the lease is keyed by (`labboot:<board_id>` or option 97), if any.
    pub identity: Option<Identity>,
    /// The client's MAC.
    pub mac: MacAddr,
    /// The address.
    pub ip: Ipv4Addr,
    /// Seconds granted ([`Acked`](LeaseEventKind::Acked)); 0 for the other kinds.
    pub lease_time: u32,
    /// When the lease ends (Acked) or ended (the others), Unix seconds.
    pub expires: u64,
}

impl LeaseEvent {
    /// An event of `kind` for the lease of `key` on `ip`.
    pub(super) fn new(
        kind: LeaseEventKind,
        key: &ClientKey,
        mac: MacAddr,
        ip: Ipv4Addr,
        lease_time: u32,
        expires: u64,
    ) -> LeaseEvent {
        let identity = match key {
            ClientKey::Id(id) => Some(id.clone()),
            ClientKey::Mac(_) => None,
        };
        LeaseEvent {
            kind,
            identity,
            mac,
            ip,
            lease_time,
            expires,
        }
    }

    /// The board id, when the client presented `labboot:<board_id>` (option 60).
    pub fn board_id(&self) -> Option<&str> {
        match &self.identity {
            Some(Identity::Board(id)) => Some(id),
            _ => None,
        }
    }

    /// What the lease is keyed by: the identity, else the MAC.
    pub fn key(&self) -> ClientKey {
        match &self.identity {
            Some(id) => ClientKey::Id(id.clone()),
            None => ClientKey::Mac(self.mac),
        }
    }
}

/// A channel for lease events with room for [`EVENT_CAPACITY`]; hand the sender to
/// [`Server::with_lease_events`](super::Server::with_lease_events) or
/// [`serve_with_events`](super::serve_with_events), and `subscribe` to it as often as needed.
pub fn channel() -> (
    broadcast::Sender<LeaseEvent>,
    broadcast::Receiver<LeaseEvent>,
) {
    broadcast::channel(EVENT_CAPACITY)
}
