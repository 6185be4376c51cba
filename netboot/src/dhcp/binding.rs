//! Static bindings: what a known client gets, looked up by identity first, then by MAC.
//!
//! The server asks a [`BindingTable`] on every DISCOVER/REQUEST instead of copying bindings at
//! start, so the dispatcher can hand it a live table (a board registry) whose answers change
//! while the server runs. [`StaticBindings`] is the table built from the configuration.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use super::classify::{Identity, MacAddr};

/// What a bound client gets: a fixed address and/or its own boot file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    /// The fixed address; `None` means "from the pool".
    pub ip: Option<Ipv4Addr>,
    /// A boot file for this client, overriding the per-architecture and default ones.
    pub boot_file: Option<String>,
}

/// The lookup the server makes for every request; implement it to serve bindings from elsewhere.
pub trait BindingTable: Send + Sync {
    /// The binding for a client: by `identity` when it presented one, else by `mac`.
    ///
    /// An identity binding wins over a MAC binding, so boards with a cloned MAC stay apart.
    fn lookup(&self, mac: MacAddr, identity: Option<&Identity>) -> Option<Binding>;

    /// Whether `ip` is someone's fixed address, so the pool must not hand it out.
    fn is_reserved(&self, ip: Ipv4Addr) -> bool;
}

/// Bindings by MAC and by identity, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct StaticBindings {
    by_mac: HashMap<MacAddr, Binding>,
    by_id: HashMap<Identity, Binding>,
    reserved: HashSet<Ipv4Addr>,
}

impl StaticBindings {
    /// Adds a binding by MAC; returns the one it replaced.
    pub fn insert_mac(&mut self, mac: MacAddr, binding: Binding) -> Option<Binding> {
        if let Some(ip) = binding.ip {
            self.reserved.insert(ip);
        }
        self.by_mac.insert(mac, binding)
    }

    /// Adds a binding by identity; returns the one it replaced.
    pub fn insert_id(&mut self, id: Identity, binding: Binding) -> Option<Binding> {
        if let Some(ip) = binding.ip {
            self.reserved.insert(ip);
        }
        self.by_id.insert(id, binding)
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_mac.len() + self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BindingTable for StaticBindings {
    fn lookup(&self, mac: MacAddr, identity: Option<&Identity>) -> Option<Binding> {
        match identity {
            Some(id) => self.by_id.get(id).or_else(|| self.by_mac.get(&mac)),
            None => self.by_mac.get(&mac),
        }
        .cloned()
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.reserved.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_wins_over_mac() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut t = StaticBindings::default();
        let by_mac = Binding {
            ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            boot_file: None,
        };
        let by_id = Binding {
            ip: Some(Ipv4Addr::new(10, 0, 0, 6)),
            boot_file: Some("b7".into()),
        };
        t.insert_mac(mac, by_mac.clone());
        t.insert_id(Identity::Board("b7".into()), by_id.clone());
        assert_eq!(t.lookup(mac, None), Some(by_mac.clone()));
        assert_eq!(
            t.lookup(mac, Some(&Identity::Board("b7".into()))),
            Some(by_id)
        );
        assert_eq!(
            t.lookup(mac, Some(&Identity::Board("b8".into()))),
            Some(by_mac)
        );
        assert!(t.is_reserved(Ipv4Addr::new(10, 0, 0, 6)));
        assert!(!t.is_reserved(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(t.len(), 2);
    }
}
