//! The dynamic address range and which of its addresses are free.
//!
//! Free addresses sit in an ordered set so that allocation is O(log n) even when thousands of
//! clients arrive at once (perfdhcp), and the lowest free address goes first, which keeps
//! assignments predictable for people reading logs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The largest pool accepted (a /16).
pub const MAX_POOL: u32 = 65536;

/// An inclusive address range `start-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    start: Ipv4Addr,
    end: Ipv4Addr,
}

impl Pool {
    /// A range from `start` to `end` inclusive (caller guarantees `start <= end`).
    pub fn new(start: Ipv4Addr, end: Ipv4Addr) -> Pool {
        Pool { start, end }
    }
    /// First address.
    pub fn start(&self) -> Ipv4Addr {
        self.start
    }
    /// Last address.
    pub fn end(&self) -> Ipv4Addr {
        self.end
    }
    /// Number of addresses.
    pub fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }
    /// Never true: a pool holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&ip)
    }
    /// All addresses in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.start)..=u32::from(self.end)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for Pool {
    type Err = String;

    /// Parses `START-END`.
    fn from_str(s: &str) -> Result<Pool, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("`{s}` is not START-END"))?;
        let start: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
        let end: Ipv4Addr = b
            .trim()
            .parse()
            .map_err(|_| format!("`{b}` is not an IPv4 address"))?;
        if start > end {
            return Err(format!("start {start} is after end {end}"));
        }
        let pool = Pool { start, end };
        if pool.len() > MAX_POOL {
            return Err(format!(
                "{} addresses is more than the {MAX_POOL} supported",
                pool.len()
            ));
        }
        Ok(pool)
    }
}

/// The free addresses of a pool.
#[derive(Debug, Clone)]
pub struct FreeSet {
    pool: Pool,
    free: BTreeSet<Ipv4Addr>,
}

impl FreeSet {
    /// Every address of `pool` free.
    pub fn new(pool: Pool) -> FreeSet {
        FreeSet {
            pool,
            free: pool.iter().collect(),
        }
    }
    /// The pool.
    pub fn pool(&self) -> Pool {
        self.pool
    }
    /// Marks `ip` used; `false` if it was not free.
    pub fn take(&mut self, ip: Ipv4Addr) -> bool {
        self.free.remove(&ip)
    }
    /// Returns `ip` to the pool if it belongs to it.
    pub fn put(&mut self, ip: Ipv4Addr) {
        if self.pool.contains(ip) {
            self.free.insert(ip);
        }
    }
    /// Whether `ip` is free.
    pub fn is_free(&self, ip: Ipv4Addr) -> bool {
        self.free.contains(&ip)
    }
    /// Takes the lowest free address for which `usable` holds.
    pub fn take_first(&mut self, usable: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let ip = self.free.iter().copied().find(|ip| usable(*ip))?;
        self.free.remove(&ip);
        Some(ip)
    }
    /// Number of free addresses.
    pub fn len(&self) -> usize {
        self.free.len()
    }
    /// Whether none is free.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let p: Pool = "10.0.0.10-10.0.0.12".parse().unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.to_string(), "10.0.0.10-10.0.0.12");
        assert!("10.0.0.10".parse::<Pool>().is_err());
        assert!("10.0.0.10-10.0.0.9".parse::<Pool>().is_err());
        assert!("10.0.0.0-10.2.0.0".parse::<Pool>().is_err());
        assert!("10.0.0.x-10.0.0.9".parse::<Pool>().is_err());
    }

    #[test]
    fn free_set() {
        let mut f = FreeSet::new("10.0.0.10-10.0.0.12".parse().unwrap());
        let skip = Ipv4Addr::new(10, 0, 0, 10);
        assert_eq!(
            f.take_first(|ip| ip != skip),
            Some(Ipv4Addr::new(10, 0, 0, 11))
        );
        assert!(f.take(skip));
        assert!(!f.take(skip));
        assert_eq!(f.take_first(|_| true), Some(Ipv4Addr::new(10, 0, 0, 12)));
        assert_eq!(f.take_first(|_| true), None);
        f.put(Ipv4Addr::new(10, 0, 0, 99));
        assert!(f.is_empty());
        f.put(skip);
        assert!(f.is_free(skip));
    }
}
