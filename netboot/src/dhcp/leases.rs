//! The in-memory lease table: who holds which address until when.
//!
//! Leases are keyed by [`ClientKey`] (identity when present, else MAC) and indexed by address
//! and by MAC, the latter only to notice two identities behind one MAC. Times are Unix seconds
//! passed in by the caller; nothing here reads a clock or touches a file ([`super::store`] does
//! the persistence).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use super::classify::{ClientKey, MacAddr};
use super::pool::{FreeSet, Pool};

/// Whether an address was only offered (held briefly, in memory) or acknowledged (persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// OFFERed and held until the client's REQUEST or the hold time runs out.
    Offered,
    /// ACKed.
    Bound,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Identity or MAC.
    pub key: ClientKey,
    /// The MAC the client last used.
    pub mac: MacAddr,
    /// The address.
    pub ip: Ipv4Addr,
    /// Unix seconds when it expires.
    pub expires: u64,
    /// Offered or bound.
    pub state: LeaseState,
}

impl Lease {
    /// Whether it has expired at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires <= now
    }
}

/// All leases, indexed by key, address and MAC, plus the pool's free addresses.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    by_key: HashMap<ClientKey, Lease>,
    by_ip: HashMap<Ipv4Addr, ClientKey>,
    by_mac: HashMap<MacAddr, BTreeSet<ClientKey>>,
    free: FreeSet,
    declined: HashMap<Ipv4Addr, u64>,
}

impl LeaseTable {
    /// An empty table over `pool`.
    pub fn new(pool: Pool) -> LeaseTable {
        LeaseTable {
            by_key: HashMap::new(),
            by_ip: HashMap::new(),
            by_mac: HashMap::new(),
            free: FreeSet::new(pool),
            declined: HashMap::new(),
        }
    }

    /// The lease of `key`.
    pub fn get(&self, key: &ClientKey) -> Option<&Lease> {
        self.by_key.get(key)
    }

    /// The lease holding `ip`.
    pub fn holder(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip).and_then(|k| self.by_key.get(k))
    }

    /// Leases of other keys that share `mac`.
    pub fn others_with_mac<'a>(
        &'a self,
        mac: MacAddr,
        key: &'a ClientKey,
    ) -> impl Iterator<Item = &'a Lease> + 'a {
        self.by_mac
            .get(&mac)
            .into_iter()
            .flatten()
            .filter(move |k| *k != key)
            .filter_map(|k| self.by_key.get(k))
    }

    /// Whether `ip` is a free pool address.
    pub fn is_free(&self, ip: Ipv4Addr) -> bool {
        self.free.is_free(ip)
    }

    /// Inserts or replaces `key`'s lease; returns a lease of another key it evicted from the
    /// same address.
    pub fn insert(&mut self, lease: Lease) -> Option<Lease> {
        let evicted = match self.by_ip.get(&lease.ip) {
            Some(k) if *k != lease.key => {
                let k = k.clone();
                self.remove(&k)
            }
            _ => None,
        };
        if let Some(old) = self.by_key.get(&lease.key) {
            if old.ip != lease.ip {
                let old = self.remove(&lease.key.clone());
                debug_assert!(old.is_some());
            }
        }
        self.free.take(lease.ip);
        self.declined.remove(&lease.ip);
        self.by_ip.insert(lease.ip, lease.key.clone());
        if let Some(old) = self.by_key.get(&lease.key) {
            if old.mac != lease.mac {
                self.unindex_mac(old.mac, &lease.key);
            }
        }
        self.by_mac
            .entry(lease.mac)
            .or_default()
            .insert(lease.key.clone());
        self.by_key.insert(lease.key.clone(), lease);
        evicted
    }

    /// Removes `key`'s lease and frees its address.
    pub fn remove(&mut self, key: &ClientKey) -> Option<Lease> {
        let lease = self.by_key.remove(key)?;
        self.by_ip.remove(&lease.ip);
        self.unindex_mac(lease.mac, key);
        self.free.put(lease.ip);
        Some(lease)
    }

    fn unindex_mac(&mut self, mac: MacAddr, key: &ClientKey) {
        if let Some(keys) = self.by_mac.get_mut(&mac) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_mac.remove(&mac);
            }
        }
    }

    /// Takes `ip` out of use until `until` (a client DECLINEd it: someone else uses it).
    pub fn decline(&mut self, ip: Ipv4Addr, until: u64) {
        if let Some(k) = self.by_ip.get(&ip).cloned() {
            self.remove(&k);
        }
        if self.free.take(ip) {
            self.declined.insert(ip, until);
        }
    }

    /// A free pool address for which `usable` holds: the lowest never-used or released one, else
    /// the address of the lease that expired longest ago (which is removed), else a declined
    /// address whose quarantine ended.
    pub fn allocate(&mut self, now: u64, usable: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        if let Some(ip) = self.free.take_first(&usable) {
            return Some(ip);
        }
        let pool = self.free.pool();
        let oldest = self
            .by_key
            .values()
            .filter(|l| l.expired(now) && pool.contains(l.ip) && usable(l.ip))
            .min_by_key(|l| l.expires)
            .map(|l| l.key.clone());
        if let Some(key) = oldest {
            let lease = self.remove(&key)?;
            self.free.take(lease.ip);
            return Some(lease.ip);
        }
        let ended: Vec<Ipv4Addr> = self
            .declined
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ended {
            self.declined.remove(&ip);
            self.free.put(ip);
        }
        self.free.take_first(usable)
    }

    /// All leases in the table.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_key.values()
    }

    /// Number of leases (offered and bound).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Number of free pool addresses.
    pub fn free_len(&self) -> usize {
        self.free.len()
    }

    /// Number of declined addresses held out of use (their rest may have ended; they return to
    /// the free set when an allocation finds nothing else).
    pub fn resting_len(&self) -> usize {
        self.declined.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(n: u8, ip: u8, expires: u64) -> Lease {
        Lease {
            key: ClientKey::Mac(MacAddr([2, 0, 0, 0, 0, n])),
            mac: MacAddr([2, 0, 0, 0, 0, n]),
            ip: Ipv4Addr::new(10, 0, 0, ip),
            expires,
            state: LeaseState::Bound,
        }
    }

    fn table() -> LeaseTable {
        LeaseTable::new("10.0.0.10-10.0.0.12".parse().unwrap())
    }

    #[test]
    fn insert_moves_and_evicts() {
        let mut t = table();
        assert_eq!(t.insert(lease(1, 10, 100)), None);
        assert!(!t.is_free(Ipv4Addr::new(10, 0, 0, 10)));
        // Same key, new address: the old one is freed.
        t.insert(lease(1, 11, 100));
        assert!(t.is_free(Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(t.len(), 1);
        // Another key takes 11: the first is evicted.
        let evicted = t.insert(lease(2, 11, 100)).unwrap();
        assert_eq!(evicted.key, lease(1, 11, 100).key);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.holder(Ipv4Addr::new(10, 0, 0, 11)).unwrap().key,
            lease(2, 0, 0).key
        );
    }

    #[test]
    fn allocate_reclaims_the_oldest_expired() {
        let mut t = table();
        t.insert(lease(1, 10, 50));
        t.insert(lease(2, 11, 40));
        t.insert(lease(3, 12, 500));
        assert_eq!(t.allocate(45, |_| true), Some(Ipv4Addr::new(10, 0, 0, 11)));
        assert!(t.get(&lease(2, 0, 0).key).is_none());
        assert_eq!(
            t.allocate(45, |_| true),
            None,
            "lease 1 has not expired at 45"
        );
        assert_eq!(t.allocate(60, |_| true), Some(Ipv4Addr::new(10, 0, 0, 10)));
    }

    #[test]
    fn declined_addresses_rest() {
        let mut t = table();
        t.decline(Ipv4Addr::new(10, 0, 0, 10), 100);
        assert_eq!(t.allocate(0, |_| true), Some(Ipv4Addr::new(10, 0, 0, 11)));
        assert_eq!(t.allocate(0, |_| true), Some(Ipv4Addr::new(10, 0, 0, 12)));
        assert_eq!(t.allocate(99, |_| true), None);
        assert_eq!(t.allocate(100, |_| true), Some(Ipv4Addr::new(10, 0, 0, 10)));
    }

    #[test]
    fn mac_index_finds_other_identities() {
        let mut t = table();
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let a = ClientKey::Id(super::super::classify::Identity::Board("a".into()));
        let b = ClientKey::Id(super::super::classify::Identity::Board("b".into()));
        for (key, ip) in [(&a, 10), (&b, 11)] {
            t.insert(Lease {
                key: key.clone(),
                mac,
                ip: Ipv4Addr::new(10, 0, 0, ip),
                expires: 100,
                state: LeaseState::Bound,
            });
        }
        let others: Vec<_> = t.others_with_mac(mac, &a).map(|l| l.key.clone()).collect();
        assert_eq!(others, vec![b.clone()]);
        t.remove(&b);
        assert_eq!(t.others_with_mac(mac, &a).count(), 0);
    }
}
