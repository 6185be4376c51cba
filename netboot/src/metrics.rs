//! Process-wide counters of the servers, for an exporter such as `labboot serve`'s `/metrics`.
//!
//! One [`static@METRICS`] per process: the servers bump its counters where they already log or
//! account the event (an OFFER or ACK sent, a transfer ended, a connection accepted or closed,
//! a READ or WRITE answered), with relaxed atomics, and never read them. Several servers of one
//! kind in one process (tests) add into the same counters. Counters only grow; gauges go up
//! and down.
//!
//! Bytes per export are kept in a small map per protocol. Job exports (`job-<id>`) come and
//! go, so the map holds at most [`MAX_EXPORTS`] names: past that, the names used least recently
//! and held by no open connection are dropped (their series end; a scraper's `rate` copes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use dhcproto::v4::MessageType;

/// Export names kept per protocol before idle ones are dropped.
pub const MAX_EXPORTS: usize = 256;

/// The servers' counters of this process.
pub static METRICS: Metrics = Metrics::new();

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Every server's counters.
#[derive(Debug)]
pub struct Metrics {
    /// DHCP.
    pub dhcp: DhcpMetrics,
    /// TFTP.
    pub tftp: TftpMetrics,
    /// NBD.
    pub nbd: ConnMetrics,
    /// NFS (and MOUNT, on the same connections).
    pub nfs: ConnMetrics,
}

impl Metrics {
    /// Everything at zero.
    pub const fn new() -> Metrics {
        Metrics {
            dhcp: DhcpMetrics {
                offers: Counter::new(),
                acks: Counter::new(),
                naks: Counter::new(),
                pool_exhausted: Counter::new(),
                leases: Gauge::new(),
            },
            tftp: TftpMetrics {
                transfers_ok: Counter::new(),
                transfers_failed: Counter::new(),
                refused: Counter::new(),
                sent_bytes: Counter::new(),
                received_bytes: Counter::new(),
                retransmitted_blocks: Counter::new(),
            },
            nbd: ConnMetrics::new(),
            nfs: ConnMetrics::new(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// DHCP replies sent, DISCOVERs refused and leases held.
#[derive(Debug)]
pub struct DhcpMetrics {
    /// DHCPOFFERs sent.
    pub offers: Counter,
    /// DHCPACKs sent (leases granted or renewed, and INFORM answers).
    pub acks: Counter,
    /// DHCPNAKs sent.
    pub naks: Counter,
    /// DISCOVERs left unanswered because no pool address was free, expired or done resting.
    pub pool_exhausted: Counter,
    /// Leases in the server's table (offered or bound), after the last packet or sweep.
    pub leases: Gauge,
}

impl DhcpMetrics {
    /// Counts a reply of type `kind` that left the socket.
    pub fn sent(&self, kind: Option<MessageType>) {
        match kind {
            Some(MessageType::Offer) => self.offers.inc(),
            Some(MessageType::Ack) => self.acks.inc(),
            Some(MessageType::Nak) => self.naks.inc(),
            _ => {}
        }
    }
}

/// TFTP transfers.
#[derive(Debug)]
pub struct TftpMetrics {
    /// Transfers (reads and writes) that completed.
    pub transfers_ok: Counter,
    /// Transfers that started and did not complete (timeout, client error or gone, abort).
    pub transfers_failed: Counter,
    /// Requests refused with an ERROR before any data moved (bad name, not found, busy…).
    pub refused: Counter,
    /// File bytes of completed reads.
    pub sent_bytes: Counter,
    /// File bytes of completed writes.
    pub received_bytes: Counter,
    /// DATA blocks sent more than once.
    pub retransmitted_blocks: Counter,
}

impl TftpMetrics {
    /// Counts a read transfer that ended: complete (`ok`, `bytes` sent) or not.
    pub fn read_ended(&self, ok: bool, bytes: u64, retransmitted: u64) {
        if ok {
            self.transfers_ok.inc();
            self.sent_bytes.add(bytes);
        } else {
            self.transfers_failed.inc();
        }
        self.retransmitted_blocks.add(retransmitted);
    }

    /// Counts a write transfer that ended: committed (`ok`, `bytes` kept) or not.
    pub fn write_ended(&self, ok: bool, bytes: u64) {
        if ok {
            self.transfers_ok.inc();
            self.received_bytes.add(bytes);
        } else {
            self.transfers_failed.inc();
        }
    }
}

/// Payload bytes of one export.
#[derive(Debug, Default)]
pub struct ExportBytes {
    read: Counter,
    written: Counter,
}

impl ExportBytes {
    /// Counts `n` bytes read by a client.
    pub fn read(&self, n: u64) {
        self.read.add(n);
    }

    /// Counts `n` bytes written by a client.
    pub fn written(&self, n: u64) {
        self.written.add(n);
    }
}

/// One export's counters at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSnapshot {
    /// The export's name.
    pub name: String,
    /// Bytes read by clients.
    pub read: u64,
    /// Bytes written by clients.
    pub written: u64,
}

#[derive(Debug)]
struct ExportMap {
    entries: BTreeMap<String, (Arc<ExportBytes>, u64)>,
    clock: u64,
}

/// Connections of a TCP server and bytes per export.
#[derive(Debug)]
pub struct ConnMetrics {
    /// Connections accepted.
    pub accepted: Counter,
    /// Connections open now.
    pub open: Gauge,
    exports: Mutex<ExportMap>,
}

impl ConnMetrics {
    /// Everything at zero.
    pub const fn new() -> ConnMetrics {
        ConnMetrics {
            accepted: Counter::new(),
            open: Gauge::new(),
            exports: Mutex::new(ExportMap {
                entries: BTreeMap::new(),
                clock: 0,
            }),
        }
    }

    /// Counts an accepted connection, open until the guard is dropped.
    pub fn connection(&self) -> OpenConnection<'_> {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self)
    }

    fn map(&self) -> MutexGuard<'_, ExportMap> {
        self.exports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The byte counters of export `name` (kept while a clone is held; hold one per connection).
    pub fn export(&self, name: &str) -> Arc<ExportBytes> {
        let mut map = self.map();
        map.clock += 1;
        let now = map.clock;
        if let Some((bytes, used)) = map.entries.get_mut(name) {
            *used = now;
            return Arc::clone(bytes);
        }
        if map.entries.len() >= MAX_EXPORTS {
            evict(&mut map.entries);
        }
        let bytes = Arc::new(ExportBytes::default());
        map.entries
            .insert(name.to_string(), (Arc::clone(&bytes), now));
        bytes
    }

    /// Counts `n` bytes read from export `name`.
    pub fn read(&self, name: &str, n: u64) {
        self.export(name).read(n);
    }

    /// Counts `n` bytes written to export `name`.
    pub fn written(&self, name: &str, n: u64) {
        self.export(name).written(n);
    }

    /// Every export's counters, by name.
    pub fn exports(&self) -> Vec<ExportSnapshot> {
        self.map()
            .entries
            .iter()
            .map(|(name, (b, _))| ExportSnapshot {
                name: name.clone(),
                read: b.read.get(),
                written: b.written.get(),
            })
            .collect()
    }
}

impl Default for ConnMetrics {
    fn default() -> ConnMetrics {
        ConnMetrics::new()
    }
}

/// Drops the least recently used names no connection holds, down to three quarters of
/// [`MAX_EXPORTS`] (so eviction runs once per many new names).
fn evict(entries: &mut BTreeMap<String, (Arc<ExportBytes>, u64)>) {
    let mut idle: Vec<(u64, String)> = entries
        .iter()
        .filter(|(_, (b, _))| Arc::strong_count(b) == 1)
        .map(|(name, (_, used))| (*used, name.clone()))
        .collect();
    idle.sort_unstable();
    let excess = entries.len().saturating_sub(MAX_EXPORTS * 3 / 4);
    for (_, name) in idle.into_iter().take(excess) {
        entries.remove(&name);
    }
}

/// An open connection: counted out of [`ConnMetrics::open`] when dropped.
#[derive(Debug)]
pub struct OpenConnection<'a>(&'a ConnMetrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_in_and_out() {
        let m = ConnMetrics::new();
        let a = m.connection();
        let b = m.connection();
        assert_eq!((m.accepted.get(), m.open.get()), (2, 2));
        drop(a);
        drop(b);
        assert_eq!((m.accepted.get(), m.open.get()), (2, 0));
    }

    #[test]
    fn bytes_per_export() {
        let m = ConnMetrics::new();
        let held = m.export("master");
        held.read(10);
        m.read("master", 5);
        m.written("job-1", 7);
        assert_eq!(
            m.exports(),
            vec![
                ExportSnapshot {
                    name: "job-1".into(),
                    read: 0,
                    written: 7
                },
                ExportSnapshot {
                    name: "master".into(),
                    read: 15,
                    written: 0
                },
            ]
        );
    }

    #[test]
    fn idle_exports_are_dropped_oldest_first_held_ones_kept() {
        let m = ConnMetrics::new();
        let held = m.export("held");
        for i in 0..MAX_EXPORTS * 2 {
            m.read(&format!("job-{i}"), 1);
        }
        let names: Vec<String> = m.exports().into_iter().map(|e| e.name).collect();
        assert!(names.len() <= MAX_EXPORTS, "{}", names.len());
        assert!(names.contains(&"held".to_string()));
        let last = format!("job-{}", MAX_EXPORTS * 2 - 1);
        assert!(names.contains(&last));
        assert!(!names.contains(&"job-0".to_string()));
        held.read(1);
    }

    #[test]
    fn dhcp_and_tftp() {
        let m = Metrics::new();
        m.dhcp.sent(Some(MessageType::Offer));
        m.dhcp.sent(Some(MessageType::Ack));
        m.dhcp.sent(Some(MessageType::Ack));
        m.dhcp.sent(None);
        assert_eq!((m.dhcp.offers.get(), m.dhcp.acks.get()), (1, 2));
        m.tftp.read_ended(true, 100, 3);
        m.tftp.read_ended(false, 0, 1);
        m.tftp.write_ended(true, 5);
        assert_eq!(m.tftp.transfers_ok.get(), 2);
        assert_eq!(m.tftp.transfers_failed.get(), 1);
        assert_eq!(m.tftp.sent_bytes.get(), 100);
        assert_eq!(m.tftp.received_bytes.get(), 5);
        assert_eq!(m.tftp.retransmitted_blocks.get(), 4);
    }
}
