//! A client address or network (`10.0.0.7`, `10.0.0.0/24`, `fd00::/8`) that NBD exports
//! (`allow:`) and NFS exports (`clients:`) are limited to.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range allowed to use an export: one address or a CIDR prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNet {
    addr: IpAddr,
    prefix: u8,
}

impl ClientNet {
    /// Whether `ip` lies in this range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for ClientNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or ADDR/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix must be 0–{max}"))?,
        };
        Ok(ClientNet { addr, prefix })
    }
}

impl fmt::Display for ClientNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_prefixes() {
        let net: ClientNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        // IPv4-mapped IPv6 (a dual-stack socket's view) counts as IPv4.
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: ClientNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: ClientNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: ClientNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(net.to_string(), "10.1.0.0/16");
        assert_eq!(
            "10.0.0.0/33".parse::<ClientNet>().unwrap_err(),
            "\"10.0.0.0/33\": prefix must be 0–32"
        );
        assert_eq!(
            "host".parse::<ClientNet>().unwrap_err(),
            "\"host\" is not an address or ADDR/PREFIX"
        );
    }
}
