//! The DHCP decisions: request in, reply + lease record out, with no socket, file or clock.
//!
//! [`Engine::handle`] takes a decoded message and `now`, updates the lease table and returns an
//! [`Outcome`]: the reply with where it must go, and the record that must be durable before the
//! reply is sent. The socket loop ([`super::server`]) does the I/O, which keeps every rule here
//! testable with plain values and a made-up clock.
//!
//! Ping-check (opt-in, [`DhcpSettings::ping_check`]): a board in U-Boot must bind in well under
//! 100 ms, so by default an address is offered at once and a host squatting on it is caught by
//! DECLINE. With the check on, a DISCOVER that would be offered an address the client does not
//! hold yet gets no reply but an [`Outcome::probe`]: the address is reserved for the client (an
//! OFFERed lease nobody else can take), and the server pings it. The server reports back with
//! [`Engine::probed`] — an answer quarantines the address like a DECLINE — and hands the same
//! DISCOVER to [`Engine::handle`] again, which then offers the checked address, or probes the
//! next one. The engine never waits: the socket loop runs probes as tasks and keeps serving.
//!
//! Pool exhaustion: before a DISCOVER is refused, the lease table takes back the address of the
//! lease that expired longest ago (an unrequested OFFER after [`OFFER_HOLD_SECS`], a bound lease
//! after its lease time) and declined addresses whose rest ended ([`LeaseTable::allocate`]);
//! a DECLINEd address still resting is not given out. A refusal is one
//! [`Ignored::PoolExhausted`] for the server to count, and a warning naming the pool, at most
//! one per [`LOG_INTERVAL`] of the request clock, with the number of DISCOVERs refused since the
//! previous one.
//!
//! Lease events ([`super::events`]): an ACK, RELEASE or DECLINE comes with the
//! [`LeaseEvent`] the server publishes once `commit` is durable ([`Outcome::event`]);
//! [`Engine::expired`] finds the bound leases whose end passed since it last looked.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{Message, MessageType};

use super::binding::{Binding, BindingTable};
use super::classify::{classify, ClassifyError, ClientInfo, ClientKey, Identity, MacAddr};
use super::config::DhcpSettings;
use super::events::{LeaseEvent, LeaseEventKind};
use super::leases::{Lease, LeaseState, LeaseTable};
use super::reply::{self, Grant};
use super::store::{LeaseRecord, StoredLease};
use crate::throttle::{LogThrottle, LOG_INTERVAL};

/// How long an OFFERed address stays reserved for the client's REQUEST, in seconds.
pub const OFFER_HOLD_SECS: u64 = 60;

/// Where a reply must be sent (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255, client port: the client has no address yet (or a NAK).
    Broadcast,
    /// The client's address (ciaddr), client port: renewals and INFORM.
    Unicast(Ipv4Addr),
    /// The relay agent (giaddr), server port.
    Relay(Ipv4Addr),
}

/// A lease that was acknowledged, for the info log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The address.
    pub ip: Ipv4Addr,
    /// The client's MAC.
    pub mac: MacAddr,
    /// Its identity, if any.
    pub identity: Option<Identity>,
}

/// What to do after one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The reply and where it goes, if any.
    pub reply: Option<(Message, Destination)>,
    /// A record that must be durable before `reply` is sent.
    pub commit: Option<LeaseRecord>,
    /// Set when `reply` is an ACK of a lease.
    pub acked: Option<Acked>,
    /// Ping-check this address (reserved for the client meanwhile), report the result with
    /// [`Engine::probed`], then hand the same request to [`Engine::handle`] again. Comes with
    /// no reply.
    pub probe: Option<Ipv4Addr>,
    /// The lease change to publish once `commit` is durable (ACK, RELEASE, DECLINE).
    pub event: Option<LeaseEvent>,
}

impl Outcome {
    fn silent(commit: Option<LeaseRecord>, event: LeaseEvent) -> Outcome {
        Outcome {
            reply: None,
            commit,
            acked: None,
            probe: None,
            event: Some(event),
        }
    }
}

/// Why a request got no reply and changed nothing (logged at debug level by the server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// Not a usable client request.
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    /// Relayed from a subnet this server does not serve.
    #[error("relayed from {0}, outside our subnet")]
    OtherSubnet(Ipv4Addr),
    /// The REQUEST selected another server.
    #[error("the client selected server {0}")]
    OtherServer(Ipv4Addr),
    /// No address left in the pool.
    #[error("pool exhausted")]
    PoolExhausted,
    /// A REQUEST for an address we know nothing about (RFC 2131: stay silent).
    #[error("no record of this client for {0}")]
    Unknown(Ipv4Addr),
    /// A REQUEST that names no address at all.
    #[error("REQUEST without requested address or ciaddr")]
    NoAddress,
    /// RELEASE/DECLINE of something the client does not hold.
    #[error("{0:?} for an address the client does not hold")]
    NotHeld(MessageType),
    /// A message type a server does not act on.
    #[error("message type {0:?} is not for a server")]
    Unhandled(MessageType),
    /// A retransmitted DISCOVER while the address chosen for the client is being ping-checked.
    #[error("ping-check of {0} in progress")]
    Probing(Ipv4Addr),
}

/// Unix seconds of `now` (0 before 1970).
pub fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The DHCP state machine: settings, bindings and the lease table.
pub struct Engine {
    settings: DhcpSettings,
    bindings: Arc<dyn BindingTable>,
    leases: LeaseTable,
    /// Addresses being ping-checked: for which client, since when (Unix seconds).
    probing: HashMap<Ipv4Addr, (ClientKey, u64)>,
    /// Up to when (Unix seconds) expired leases were reported by [`Engine::expired`].
    swept_to: Option<u64>,
    /// Warnings about DISCOVERs refused for want of an address.
    exhausted: LogThrottle,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .field("leases", &self.leases.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine using the configuration's static bindings.
    pub fn new(settings: DhcpSettings) -> Engine {
        let bindings = Arc::new(settings.bindings().clone());
        Engine::with_bindings(settings, bindings)
    }

    /// An engine asking `bindings` (e.g. the dispatcher's board registry) instead of the
    /// configuration's static bindings.
    pub fn with_bindings(settings: DhcpSettings, bindings: Arc<dyn BindingTable>) -> Engine {
        let leases = LeaseTable::new(settings.pool());
        Engine {
            settings,
            bindings,
            leases,
            probing: HashMap::new(),
            swept_to: None,
            exhausted: LogThrottle::new(LOG_INTERVAL),
        }
    }

    /// Puts leases loaded from the lease log back (the same client gets the same address).
    pub fn restore(&mut self, stored: impl IntoIterator<Item = StoredLease>) {
        for l in stored {
            if !self.settings.assignable(l.ip) {
                tracing::warn!(
                    "dhcp: stored lease {} for {} is outside the subnet now, dropped",
                    l.ip,
                    l.key
                );
                continue;
            }
            self.leases.insert(Lease {
                key: l.key,
                mac: l.mac,
                ip: l.ip,
                expires: l.expires,
                state: LeaseState::Bound,
            });
        }
    }

    /// The settings.
    pub fn settings(&self) -> &DhcpSettings {
        &self.settings
    }

    /// The lease table.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Addresses whose ping-check result has not been reported yet.
    pub fn probing(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.probing.keys().copied()
    }

    /// Takes the result of the ping-check an [`Outcome::probe`] asked for: `answered` means a
    /// host replied, so the address is in use; it is quarantined for one lease time (like a
    /// DECLINE) and a warning names it. Returns whether it was quarantined. Hand the request
    /// that asked for the probe to [`Engine::handle`] next.
    pub fn probed(&mut self, ip: Ipv4Addr, answered: bool, now: SystemTime) -> bool {
        let Some((key, _)) = self.probing.remove(&ip) else {
            return false;
        };
        if !answered {
            return false;
        }
        // Only the reservation made for the probe is taken back; a lease bound meanwhile (an
        // INIT-REBOOT REQUEST of the same client) stays.
        if let Some(l) = self.leases.holder(ip) {
            if l.key != key || l.state != LeaseState::Offered {
                tracing::warn!(
                    "dhcp: ping-check: {ip} answered an ICMP echo, but it is bound to {} now; kept",
                    l.key
                );
                return false;
            }
        }
        let rest = u64::from(self.settings.lease_time());
        tracing::warn!(
            "dhcp: ping-check: {ip} answered an ICMP echo: in use by a host without a lease; \
             quarantined for {rest} s, offering {key} another address"
        );
        self.leases.decline(ip, unix_secs(now) + rest);
        true
    }

    /// The bound leases whose end passed since the last call (on the first call: all that
    /// ended by `now`), as [`LeaseEventKind::Expired`] events, oldest first. Nothing changes
    /// in the table: an expired lease stays until its address is needed.
    pub fn expired(&mut self, now: SystemTime) -> Vec<LeaseEvent> {
        let now = unix_secs(now);
        let since = self.swept_to.replace(now);
        if since.is_some_and(|s| s >= now) {
            return Vec::new();
        }
        let mut events: Vec<LeaseEvent> = self
            .leases
            .iter()
            .filter(|l| {
                l.state == LeaseState::Bound
                    && l.expires <= now
                    && since.is_none_or(|s| l.expires > s)
            })
            .map(|l| LeaseEvent::new(LeaseEventKind::Expired, &l.key, l.mac, l.ip, 0, l.expires))
            .collect();
        events.sort_by_key(|e| (e.expires, e.ip));
        events
    }

    /// Decides on one request received at `now`.
    pub fn handle(&mut self, msg: &Message, now: SystemTime) -> Result<Outcome, Ignored> {
        let info = classify(msg)?;
        let giaddr = msg.giaddr();
        if !giaddr.is_unspecified() && !self.settings.in_subnet(giaddr) {
            return Err(Ignored::OtherSubnet(giaddr));
        }
        let now = unix_secs(now);
        match info.msg_type {
            MessageType::Discover => self.discover(msg, &info, now),
            MessageType::Request => self.request(msg, &info, now),
            MessageType::Release => self.release(msg, &info, now),
            MessageType::Decline => self.decline(&info, now),
            MessageType::Inform => Ok(self.inform(msg, &info)),
            other => Err(Ignored::Unhandled(other)),
        }
    }

    fn binding(&self, info: &ClientInfo) -> Binding {
        self.bindings
            .lookup(info.mac, info.identity.as_ref())
            .unwrap_or_default()
    }

    fn boot_file<'a>(&'a self, info: &ClientInfo, binding: &'a Binding) -> Option<&'a str> {
        binding
            .boot_file
            .as_deref()
            .or_else(|| info.arch.and_then(|a| self.settings.arch_boot_file(a)))
            .or(self.settings.boot_file())
    }

    /// Warns when this MAC already holds a live lease under another key (a cloned MAC), or when
    /// this identity's lease was taken from another MAC (a cloned identity).
    fn warn_conflicts(&self, info: &ClientInfo, key: &ClientKey, now: u64) {
        for other in self.leases.others_with_mac(info.mac, key) {
            if !other.expired(now) {
                tracing::warn!(
                    "dhcp: conflict: MAC {} is used by {} and by {} ({}); leases kept apart by identity",
                    info.mac,
                    key,
                    other.key,
                    other.ip
                );
            }
        }
        if let Some(own) = self.leases.get(key) {
            if info.identity.is_some() && own.mac != info.mac && !own.expired(now) {
                tracing::warn!(
                    "dhcp: conflict: identity {} moved from MAC {} to MAC {} (a cloned identity file?)",
                    key,
                    own.mac,
                    info.mac
                );
            }
        }
    }

    /// Whether `ip` may be given to `key` without taking it from a live lease of someone else.
    fn available_for(&self, ip: Ipv4Addr, key: &ClientKey, binding: &Binding, now: u64) -> bool {
        if binding.ip == Some(ip) {
            return true;
        }
        if !self.settings.pool().contains(ip) || self.bindings.is_reserved(ip) {
            return false;
        }
        match self.leases.holder(ip) {
            None => self.leases.is_free(ip),
            Some(l) => l.key == *key || l.expired(now),
        }
    }

    fn choose_address(
        &mut self,
        info: &ClientInfo,
        key: &ClientKey,
        binding: &Binding,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = binding.ip {
            return Some(ip);
        }
        if let Some(l) = self.leases.get(key) {
            if self.available_for(l.ip, key, binding, now) {
                return Some(l.ip);
            }
        }
        if let Some(r) = info.requested_ip {
            if self.available_for(r, key, binding, now) && self.leases.holder(r).is_none() {
                return Some(r);
            }
        }
        let bindings = Arc::clone(&self.bindings);
        self.leases.allocate(now, |ip| !bindings.is_reserved(ip))
    }

    fn destination(msg: &Message, nak: bool) -> Destination {
        if !msg.giaddr().is_unspecified() {
            Destination::Relay(msg.giaddr())
        } else if nak || msg.ciaddr().is_unspecified() {
            Destination::Broadcast
        } else {
            Destination::Unicast(msg.ciaddr())
        }
    }

    fn discover(&mut self, msg: &Message, info: &ClientInfo, now: u64) -> Result<Outcome, Ignored> {
        let key = info.key();
        let binding = self.binding(info);
        self.warn_conflicts(info, &key, now);
        let Some(ip) = self.choose_address(info, &key, &binding, now) else {
            self.warn_exhausted(info, now);
            return Err(Ignored::PoolExhausted);
        };
        let probe = self.needs_probe(ip, &key, &binding, now)?;
        let keep_bound = self
            .leases
            .get(&key)
            .filter(|l| l.ip == ip && l.state == LeaseState::Bound && !l.expired(now))
            .cloned();
        let lease = match keep_bound {
            Some(mut l) => {
                l.mac = info.mac;
                l
            }
            None => Lease {
                key: key.clone(),
                mac: info.mac,
                ip,
                expires: now + OFFER_HOLD_SECS,
                state: LeaseState::Offered,
            },
        };
        if let Some(evicted) = self.leases.insert(lease) {
            tracing::warn!(
                "dhcp: {} is bound to {}, taking it from {}",
                ip,
                key,
                evicted.key
            );
        }
        if probe {
            self.probing.insert(ip, (key, now));
            return Ok(Outcome {
                reply: None,
                commit: None,
                acked: None,
                probe: Some(ip),
                event: None,
            });
        }
        let grant = Grant {
            ip,
            lease_time: Some(self.settings.lease_time()),
            boot_file: self.boot_file(info, &binding),
        };
        let offer = reply::grant(msg, MessageType::Offer, grant, &self.settings);
        Ok(Outcome {
            reply: Some((offer, Self::destination(msg, false))),
            commit: None,
            acked: None,
            probe: None,
            event: None,
        })
    }

    /// Logs a refused DISCOVER, throttled: the pool, what holds its addresses, and how many
    /// DISCOVERs were refused since the last warning.
    fn warn_exhausted(&mut self, info: &ClientInfo, now: u64) {
        let Some(refused) = self.exhausted.hit(Duration::from_secs(now)) else {
            return;
        };
        let pool = self.settings.pool();
        let (mut bound, mut offered) = (0, 0);
        for l in self.leases.iter().filter(|l| pool.contains(l.ip)) {
            match l.state {
                LeaseState::Bound => bound += 1,
                LeaseState::Offered => offered += 1,
            }
        }
        let resting = self.leases.resting_len();
        tracing::warn!(
            "dhcp: pool {pool} is exhausted ({} addresses: {bound} leased, {offered} offered, \
             {resting} declined and resting); DISCOVERs refused since the last warning: {refused}, \
             the latest from {} id={}",
            pool.len(),
            info.mac,
            info.id_for_log()
        );
    }

    /// Whether `ip` must be ping-checked before it is offered to `key`: the check is on, the
    /// address is not the client's fixed one, and the client does not hold it (a bound lease, or
    /// an offer that passed its check and is still reserved). A probe already running for it
    /// means the DISCOVER is a retransmission: no reply until the result is in.
    fn needs_probe(
        &mut self,
        ip: Ipv4Addr,
        key: &ClientKey,
        binding: &Binding,
        now: u64,
    ) -> Result<bool, Ignored> {
        if let Some((_, since)) = self.probing.get(&ip) {
            if now < since + OFFER_HOLD_SECS {
                return Err(Ignored::Probing(ip));
            }
            // A result that never came (the server lost the task): check afresh.
            self.probing.remove(&ip);
        }
        if self.settings.ping_check().is_none() || binding.ip == Some(ip) {
            return Ok(false);
        }
        let held = self
            .leases
            .get(key)
            .is_some_and(|l| l.ip == ip && (l.state == LeaseState::Bound || !l.expired(now)));
        Ok(!held)
    }

    fn nak(&self, msg: &Message, why: &str) -> Outcome {
        tracing::debug!("dhcp: NAK to {:?}: {why}", msg.chaddr());
        Outcome {
            reply: Some((
                reply::nak(msg, why, &self.settings),
                Self::destination(msg, true),
            )),
            commit: None,
            acked: None,
            probe: None,
            event: None,
        }
    }

    fn request(&mut self, msg: &Message, info: &ClientInfo, now: u64) -> Result<Outcome, Ignored> {
        let key = info.key();
        let binding = self.binding(info);
        if let Some(sid) = info.server_id {
            if sid != self.settings.server_ip() {
                // SELECTING another server's offer: release ours at once.
                if self
                    .leases
                    .get(&key)
                    .is_some_and(|l| l.state == LeaseState::Offered)
                {
                    self.leases.remove(&key);
                }
                return Err(Ignored::OtherServer(sid));
            }
        }
        let ciaddr = msg.ciaddr();
        let wanted = match (info.requested_ip, ciaddr.is_unspecified()) {
            (Some(r), _) => r,
            (None, false) => ciaddr,
            (None, true) => return Err(Ignored::NoAddress),
        };
        if !self.settings.in_subnet(wanted) {
            return Ok(self.nak(msg, "address not on this network"));
        }
        if binding.ip.is_some_and(|b| b != wanted) {
            return Ok(self.nak(msg, "this client has a fixed address"));
        }
        let own = self.leases.get(&key).map(|l| l.ip);
        let selecting = info.server_id.is_some();
        match own {
            Some(ip) if ip == wanted => {}
            Some(_) => return Ok(self.nak(msg, "not the address leased to this client")),
            None => {
                if !self.available_for(wanted, &key, &binding, now) {
                    if selecting || self.leases.holder(wanted).is_some() {
                        return Ok(self.nak(msg, "address not available"));
                    }
                    return Err(Ignored::Unknown(wanted));
                }
                self.warn_conflicts(info, &key, now);
            }
        }
        let lease = Lease {
            key: key.clone(),
            mac: info.mac,
            ip: wanted,
            expires: now + u64::from(self.settings.lease_time()),
            state: LeaseState::Bound,
        };
        if let Some(evicted) = self.leases.insert(lease) {
            tracing::warn!(
                "dhcp: {} is bound to {}, taking it from {}",
                wanted,
                key,
                evicted.key
            );
        }
        let grant = Grant {
            ip: wanted,
            lease_time: Some(self.settings.lease_time()),
            boot_file: self.boot_file(info, &binding),
        };
        let ack = reply::grant(msg, MessageType::Ack, grant, &self.settings);
        let lease_time = self.settings.lease_time();
        let expires = now + u64::from(lease_time);
        let event = LeaseEvent::new(
            LeaseEventKind::Acked,
            &key,
            info.mac,
            wanted,
            lease_time,
            expires,
        );
        Ok(Outcome {
            reply: Some((ack, Self::destination(msg, false))),
            commit: Some(LeaseRecord::Bind(StoredLease {
                key,
                mac: info.mac,
                ip: wanted,
                expires,
            })),
            acked: Some(Acked {
                ip: wanted,
                mac: info.mac,
                identity: info.identity.clone(),
            }),
            probe: None,
            event: Some(event),
        })
    }

    /// Whether `key` holds a lease on `ip`.
    fn holds(&self, key: &ClientKey, ip: Ipv4Addr) -> bool {
        matches!(self.leases.get(key), Some(l) if l.ip == ip)
    }

    fn release(&mut self, msg: &Message, info: &ClientInfo, now: u64) -> Result<Outcome, Ignored> {
        let key = info.key();
        let ip = msg.ciaddr();
        if info
            .server_id
            .is_some_and(|s| s != self.settings.server_ip())
            || !self.holds(&key, ip)
        {
            return Err(Ignored::NotHeld(MessageType::Release));
        }
        self.leases.remove(&key);
        tracing::info!(
            "dhcp: RELEASE {ip} by {} id={}",
            info.mac,
            info.id_for_log()
        );
        let event = LeaseEvent::new(LeaseEventKind::Released, &key, info.mac, ip, 0, now);
        Ok(Outcome::silent(Some(LeaseRecord::Free { key, ip }), event))
    }

    fn decline(&mut self, info: &ClientInfo, now: u64) -> Result<Outcome, Ignored> {
        let key = info.key();
        let Some(ip) = info.requested_ip else {
            return Err(Ignored::NotHeld(MessageType::Decline));
        };
        if !self.holds(&key, ip) {
            return Err(Ignored::NotHeld(MessageType::Decline));
        }
        tracing::warn!(
            "dhcp: DECLINE {ip} by {} id={}: the address is in use by someone else; resting it",
            info.mac,
            info.id_for_log()
        );
        self.leases
            .decline(ip, now + u64::from(self.settings.lease_time()));
        let event = LeaseEvent::new(LeaseEventKind::Declined, &key, info.mac, ip, 0, now);
        Ok(Outcome::silent(Some(LeaseRecord::Free { key, ip }), event))
    }

    fn inform(&self, msg: &Message, info: &ClientInfo) -> Outcome {
        let binding = self.binding(info);
        let grant = Grant {
            ip: Ipv4Addr::UNSPECIFIED,
            lease_time: None,
            boot_file: self.boot_file(info, &binding),
        };
        let ack = reply::grant(msg, MessageType::Ack, grant, &self.settings);
        Outcome {
            reply: Some((ack, Self::destination(msg, false))),
            commit: None,
            acked: None,
            probe: None,
            event: None,
        }
    }
}
