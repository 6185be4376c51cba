//! The socket loop: receive, decide ([`Engine`]), persist ([`LeaseStore`]), send.
//!
//! [`Server::run`] takes an already bound socket and a shutdown future, so tests can hand it any
//! socket and stop it when they like; [`bind_interface`] makes the production socket: port 67 on
//! 0.0.0.0 with `SO_BINDTODEVICE`, so the server hears and answers on one interface only, and
//! `SO_BROADCAST`, because clients without an address are answered at 255.255.255.255.
//!
//! Pipelined group commit: when the socket is readable the loop drains every packet already
//! queued (up to [`BATCH`]) and decides on all of them. OFFERs and NAKs go out at once. ACKs wait
//! with their lease records for the next append: one write and one `fdatasync` on tokio's
//! blocking pool for every ACK gathered meanwhile, while the loop goes on receiving and deciding.
//! When the append returns the ACKs are sent and the next group starts. An ACK therefore never
//! leaves before its lease is durable, one sync serves many ACKs under load, and a slow disk
//! never stops the server from reading its socket. If an append fails, the group's ACKs are
//! withheld (the clients retry; their records are written again with the next group) and the
//! error is logged.
//!
//! RELEASE and DECLINE records start an append of their own too, so they are durable promptly.
//!
//! Lease events ([`super::events`]): each record's [`LeaseEvent`] travels with it and is
//! published on the server's broadcast channel when the append that holds it returned (after
//! the group's ACKs are sent); events of a failed append wait for the next one, like their
//! records. Every [`EXPIRY_SWEEP`] the loop asks [`Engine::expired`] for leases that ran out
//! and publishes those too.
//!
//! A DISCOVER left unanswered because the pool is full is counted in
//! [`METRICS`]`.dhcp.pool_exhausted`; the engine logs it, throttled ([`super::engine`]).
//!
//! Ping-check (opt-in): when the engine answers a DISCOVER with
//! [`Outcome::probe`](super::engine::Outcome::probe), the loop
//! spawns the ICMP probe ([`Pinger::probe`]) as a task and goes on serving; other clients never
//! wait for it. When the probe ends, its result goes to [`Engine::probed`] and the same DISCOVER
//! is decided again, which yields the OFFER (or the next probe). Probes produce no lease record,
//! so the group commit above is untouched.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::SystemTime;

use dhcproto::v4::Message;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::config::DhcpSettings;
use super::engine::{unix_secs, Acked, Destination, Engine, Ignored};
use super::events::{self, LeaseEvent, EXPIRY_SWEEP};
use super::ping::Pinger;
use super::reply::encode_into;
use super::store::{LeaseRecord, LeaseStore};
use super::wire;
use crate::error::ServerError;
use crate::metrics::METRICS;

/// The DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// Most packets decided on between two lease-log syncs.
pub const BATCH: usize = 256;

/// Binds a UDP socket to `0.0.0.0:port` on `interface` only (SO_BINDTODEVICE), broadcast-capable.
///
/// Must be called inside a tokio runtime. Needs CAP_NET_RAW (for SO_BINDTODEVICE) and, for port
/// 67, CAP_NET_BIND_SERVICE. Fails with [`ServerError::Interface`] naming the step.
pub fn bind_interface(interface: &str, port: u16) -> Result<UdpSocket, ServerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = |what: &'static str, error: io::Error| ServerError::Interface {
        name: interface.to_string(),
        port: Some(port),
        what,
        error,
    };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| ctx("cannot create a UDP socket", e))?;
    sock.bind_device(Some(interface.as_bytes()))
        .map_err(|e| ctx("cannot bind to the interface", e))?;
    sock.set_reuse_address(true)
        .map_err(|e| ctx("cannot set SO_REUSEADDR", e))?;
    sock.set_broadcast(true)
        .map_err(|e| ctx("cannot set SO_BROADCAST", e))?;
    // The kernel's default receive buffer (~200 KiB, ~500 requests) is kept on purpose: a deeper
    // queue under overload only makes the server answer requests whose clients gave up already.
    sock.set_nonblocking(true)
        .map_err(|e| ctx("cannot make the socket non-blocking", e))?;
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    sock.bind(&addr.into())
        .map_err(|e| ctx("cannot bind the DHCP port", e))?;
    UdpSocket::from_std(sock.into()).map_err(|e| ctx("cannot register the socket with tokio", e))
}

/// A DHCP server: a bound socket, the decision engine and the optional lease log.
#[derive(Debug)]
pub struct Server {
    socket: UdpSocket,
    engine: Engine,
    store: Option<LeaseStore>,
    /// Whether ACKs must be durable first (a store was given); stays true if the store is lost.
    persistent: bool,
    client_port: u16,
    relay_port: u16,
    /// Set when the settings ask for a ping-check.
    pinger: Option<Arc<Pinger>>,
    /// Where lease events are published.
    events: broadcast::Sender<LeaseEvent>,
}

/// A finished probe: the address, whether it answered, and the request to decide again.
type Probed = (Ipv4Addr, bool, Message, SocketAddr);

struct Pending {
    message: Message,
    to: Destination,
    acked: Option<Acked>,
}

/// What waits for the next lease-log append: ACKs, their records, the events to publish once
/// the records are durable, and whether a record came since the last append began.
#[derive(Default)]
struct Group {
    acks: Vec<Pending>,
    records: Vec<LeaseRecord>,
    events: Vec<LeaseEvent>,
    fresh: bool,
}

/// A lease-log append running on the blocking pool, with the ACKs waiting for it.
type Commit = tokio::task::JoinHandle<(LeaseStore, Vec<LeaseRecord>, io::Result<()>)>;

impl Server {
    /// A server answering on `socket`; with a `store`, ACKed leases are logged there first.
    ///
    /// Restore the store's leases into `engine` ([`Engine::restore`]) before calling this.
    pub fn new(socket: UdpSocket, engine: Engine, store: Option<LeaseStore>) -> Server {
        let pinger = engine
            .settings()
            .ping_check()
            .map(|t| Arc::new(Pinger::new(engine.settings().interface(), t)));
        Server {
            pinger,
            socket,
            engine,
            persistent: store.is_some(),
            store,
            client_port: CLIENT_PORT,
            relay_port: SERVER_PORT,
            events: events::channel().0,
        }
    }

    /// Publishes lease events on `sender` instead of the server's own channel (e.g. one made
    /// with [`events::channel`] before the server, to subscribe to it at any time).
    pub fn with_lease_events(mut self, sender: broadcast::Sender<LeaseEvent>) -> Server {
        self.events = sender;
        self
    }

    /// A receiver of the lease events published from now on (see [`super::events`]).
    pub fn lease_events(&self) -> broadcast::Receiver<LeaseEvent> {
        self.events.subscribe()
    }

    /// Sends replies to other ports than 68 (clients) and 67 (relays): for tests on loopback.
    pub fn with_peer_ports(mut self, client_port: u16, relay_port: u16) -> Server {
        self.client_port = client_port;
        self.relay_port = relay_port;
        self
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` completes; returns the engine (with its leases) for inspection.
    ///
    /// Only errors of the socket itself end the loop early; bad packets are logged and dropped.
    /// At shutdown an append in flight is finished, its ACKs are sent and its events published.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<Engine, ServerError> {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 65536];
        let mut out = Vec::with_capacity(1024);
        // Replies that need no commit (OFFER, NAK, INFORM) go out with the batch that made them.
        let mut immediate: Vec<Pending> = Vec::with_capacity(BATCH);
        // ACKs of the next group, their records and events, waiting for the append in flight.
        let mut group = Group::default();
        // The append in flight, and the ACKs and events that wait for it.
        let mut inflight: Option<(Commit, Vec<Pending>, Vec<LeaseEvent>)> = None;
        // Ping-checks running; each DISCOVER waiting for one is decided again when it ends.
        let mut probes: JoinSet<Probed> = JoinSet::new();
        let mut sweep =
            tokio::time::interval_at(tokio::time::Instant::now() + EXPIRY_SWEEP, EXPIRY_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                joined = async { (&mut inflight.as_mut().expect("guarded").0).await },
                    if inflight.is_some() =>
                {
                    let (_, acks, events) = inflight.take().expect("guarded");
                    self.end_commit(joined, acks, events, &mut group, &mut out).await;
                }
                Some(done) = probes.join_next(), if !probes.is_empty() => {
                    match done {
                        Ok((ip, answered, msg, src)) => {
                            let now = SystemTime::now();
                            self.engine.probed(ip, answered, now);
                            self.decide(&msg, src, now, &mut immediate, &mut group, &mut probes);
                            let now_ready = std::mem::take(&mut immediate);
                            self.send_all(now_ready, &mut out).await;
                        }
                        // Only a panic gets here; the engine re-checks the address after the
                        // offer hold time.
                        Err(e) => tracing::error!("dhcp: a ping-check task failed: {e}"),
                    }
                }
                _ = sweep.tick() => {
                    let expired = self.engine.expired(SystemTime::now());
                    for e in &expired {
                        tracing::debug!("dhcp: lease of {} to {} expired", e.ip, e.mac);
                    }
                    self.publish(expired);
                }
                ready = self.socket.readable() => {
                    ready.map_err(ServerError::io("dhcp: the socket failed"))?;
                    let now = SystemTime::now();
                    for _ in 0..BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, src)) => self.on_packet(
                                &buf[..n], src, now, &mut immediate, &mut group, &mut probes,
                            ),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::warn!("dhcp: receive failed: {e}");
                                break;
                            }
                        }
                    }
                    let now_ready = std::mem::take(&mut immediate);
                    self.send_all(now_ready, &mut out).await;
                }
            }
            if inflight.is_none() && group.fresh {
                group.fresh = false;
                if !self.persistent {
                    group.records.clear();
                    let acks = std::mem::take(&mut group.acks);
                    self.send_all(acks, &mut out).await;
                    self.publish(std::mem::take(&mut group.events));
                } else if let Some(commit) = self.start_commit(&mut group.records) {
                    let acks = std::mem::take(&mut group.acks);
                    inflight = Some((commit, acks, std::mem::take(&mut group.events)));
                } else {
                    // The lease writer died: an ACK that cannot be made durable is not sent.
                    group = Group::default();
                }
            }
            METRICS.dhcp.leases.set(self.engine.leases().len() as i64);
        }
        if let Some((commit, acks, events)) = inflight.take() {
            self.end_commit(commit.await, acks, events, &mut group, &mut out)
                .await;
        }
        Ok(self.engine)
    }

    /// After an append: sends its ACKs and publishes its events if the records are durable,
    /// else keeps the events (their records go again with the next group).
    async fn end_commit(
        &mut self,
        joined: Result<(LeaseStore, Vec<LeaseRecord>, io::Result<()>), tokio::task::JoinError>,
        acks: Vec<Pending>,
        mut events: Vec<LeaseEvent>,
        group: &mut Group,
        out: &mut Vec<u8>,
    ) {
        if self.finish_commit(joined, &mut group.records) {
            self.send_all(acks, out).await;
            self.publish(events);
        } else {
            events.append(&mut group.events);
            group.events = events;
        }
    }

    /// Sends lease events to the subscribers, if any.
    fn publish(&self, events: Vec<LeaseEvent>) {
        for e in events {
            // An error only means nobody listens now.
            let _ = self.events.send(e);
        }
    }

    async fn send_all(&self, replies: Vec<Pending>, out: &mut Vec<u8>) {
        for p in replies {
            if let Err(e) = encode_into(&p.message, out) {
                tracing::warn!("dhcp: cannot encode a reply: {e}");
                continue;
            }
            let to = match p.to {
                Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, self.client_port),
                Destination::Unicast(ip) => SocketAddrV4::new(ip, self.client_port),
                Destination::Relay(ip) => SocketAddrV4::new(ip, self.relay_port),
            };
            if let Err(e) = self.socket.send_to(out, to).await {
                tracing::warn!("dhcp: cannot send to {to}: {e}");
                continue;
            }
            METRICS.dhcp.sent(p.message.opts().msg_type());
            if let Some(a) = p.acked {
                let id = a
                    .identity
                    .map_or_else(|| "-".to_string(), |i| i.to_string());
                tracing::info!("dhcp: ACK {} to {} id={id}", a.ip, a.mac);
            }
        }
    }

    fn on_packet(
        &mut self,
        bytes: &[u8],
        src: SocketAddr,
        now: SystemTime,
        immediate: &mut Vec<Pending>,
        group: &mut Group,
        probes: &mut JoinSet<Probed>,
    ) {
        let msg = match wire::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(
                    "dhcp: dropped a malformed packet from {src} ({} bytes): {e}",
                    bytes.len()
                );
                return;
            }
        };
        self.decide(&msg, src, now, immediate, group, probes);
    }

    /// Hands one decoded request to the engine and files what comes out: a reply to send now, an
    /// ACK (or a RELEASE, DECLINE) waiting for its lease record, or a probe to start.
    fn decide(
        &mut self,
        msg: &Message,
        src: SocketAddr,
        now: SystemTime,
        immediate: &mut Vec<Pending>,
        group: &mut Group,
        probes: &mut JoinSet<Probed>,
    ) {
        match self.engine.handle(msg, now) {
            Ok(outcome) => {
                if let Some(ip) = outcome.probe {
                    self.start_probe(ip, msg.clone(), src, probes);
                }
                let needs_commit = outcome.commit.is_some();
                if let Some(r) = outcome.commit {
                    group.records.push(r);
                    group.events.extend(outcome.event);
                    group.fresh = true;
                }
                if let Some((message, to)) = outcome.reply {
                    let p = Pending {
                        message,
                        to,
                        acked: outcome.acked,
                    };
                    if needs_commit {
                        group.acks.push(p);
                    } else {
                        immediate.push(p);
                    }
                }
            }
            Err(why) => {
                if why == Ignored::PoolExhausted {
                    // The engine logs these itself, throttled.
                    METRICS.dhcp.pool_exhausted.inc();
                }
                tracing::debug!("dhcp: no reply to {src} xid {:#010x}: {why}", msg.xid())
            }
        }
    }

    /// Pings `ip` in a task; its result comes back through `probes`.
    fn start_probe(
        &self,
        ip: Ipv4Addr,
        msg: Message,
        src: SocketAddr,
        probes: &mut JoinSet<Probed>,
    ) {
        let Some(pinger) = self.pinger.clone() else {
            // The engine asks for probes only when the settings turn them on, and `new` made
            // the pinger from the same settings; decide again as if nobody answered.
            probes.spawn(async move { (ip, false, msg, src) });
            return;
        };
        tracing::debug!(
            "dhcp: ping-check of {ip} for xid {:#010x} ({} ms)",
            msg.xid(),
            pinger.timeout().as_millis()
        );
        probes.spawn(async move {
            let answered = match pinger.probe(ip).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("dhcp: ping-check of {ip} failed: {e}; offering it unchecked");
                    false
                }
            };
            (ip, answered, msg, src)
        });
    }

    /// Starts appending `records` (with one `fdatasync`) on the blocking pool.
    fn start_commit(&mut self, records: &mut Vec<LeaseRecord>) -> Option<Commit> {
        let mut store = self.store.take()?;
        let batch = std::mem::take(records);
        Some(tokio::task::spawn_blocking(move || {
            let result = store.append(&batch);
            (store, batch, result)
        }))
    }

    /// Takes the store back from a finished append; `true` if the records are durable.
    fn finish_commit(
        &mut self,
        joined: Result<(LeaseStore, Vec<LeaseRecord>, io::Result<()>), tokio::task::JoinError>,
        records: &mut Vec<LeaseRecord>,
    ) -> bool {
        match joined {
            Ok((store, batch, result)) => {
                let path = store.path().display().to_string();
                self.store = Some(store);
                match result {
                    Ok(()) => true,
                    Err(e) => {
                        // Keep the records: they go again with the next group.
                        let mut batch = batch;
                        batch.append(records);
                        *records = batch;
                        tracing::error!(
                            "dhcp: cannot persist leases to {path}: {e}; ACKs withheld"
                        );
                        false
                    }
                }
            }
            Err(e) => {
                tracing::error!("dhcp: the lease writer failed: {e}; leases are no longer persisted, no more ACKs");
                false
            }
        }
    }
}

/// Opens the lease log of `settings` (if any) and restores its leases into a fresh engine.
pub fn engine_with_store(
    settings: DhcpSettings,
    now: SystemTime,
) -> Result<(Engine, Option<LeaseStore>), ServerError> {
    let store = match settings.lease_file() {
        Some(path) => Some(LeaseStore::open(path, unix_secs(now))?),
        None => None,
    };
    let mut engine = Engine::new(settings);
    Ok(match store {
        Some((store, leases)) => {
            let n = leases.len();
            engine.restore(leases);
            tracing::info!(
                "dhcp: {} leases restored from {}",
                n,
                store.path().display()
            );
            (engine, Some(store))
        }
        None => (engine, None),
    })
}

/// Runs the whole server from checked settings: lease log, socket on the interface, loop.
///
/// Logs `dhcp: listening on IF (SERVER_IP)` once the socket is bound. Lease events go nowhere;
/// [`serve_with_events`] publishes them.
pub async fn serve(
    settings: DhcpSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_with_events(settings, shutdown, events::channel().0).await
}

/// [`serve`], publishing [`LeaseEvent`]s on `events` (made with [`events::channel`]; subscribe
/// to it before or while the server runs).
pub async fn serve_with_events(
    settings: DhcpSettings,
    shutdown: impl Future<Output = ()>,
    events: broadcast::Sender<LeaseEvent>,
) -> Result<(), ServerError> {
    let interface = settings.interface().to_string();
    let server_ip = settings.server_ip();
    let settings_ping_check = settings.ping_check();
    let (engine, store) = engine_with_store(settings, SystemTime::now())?;
    let socket = bind_interface(&interface, SERVER_PORT)?;
    if let Some(timeout) = settings_ping_check {
        Pinger::new(&interface, timeout).check()?;
        tracing::info!(
            "dhcp: ping-check on: new addresses are pinged for {} ms before they are offered",
            timeout.as_millis()
        );
    }
    tracing::info!("dhcp: listening on {interface} ({server_ip})");
    Server::new(socket, engine, store)
        .with_lease_events(events)
        .run(shutdown)
        .await?;
    Ok(())
}
