//! DHCP configuration in two steps: the serde struct [`DhcpConfig`] as written in YAML (the
//! `dhcp:` section of the appliance config) or assembled from `labboot dhcp` flags, then
//! [`DhcpSettings`], checked once with errors that name the field, so the server never meets an
//! address outside its subnet or a boot file that cannot fit the packet.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::binding::{Binding, StaticBindings};
use super::classify::{Arch, Identity, MacAddr};
use super::pool::Pool;

/// Default lease time in seconds (one hour).
pub const DEFAULT_LEASE_TIME: u32 = 3600;

/// The DHCP settings as written: YAML `dhcp:` section or command-line flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    /// The one interface the server binds to (SO_BINDTODEVICE) and answers on.
    pub interface: String,
    /// The server's address on that interface: option 54 and the default next-server.
    pub server_ip: Ipv4Addr,
    /// The dynamic pool, `START-END` (inclusive), inside the server's subnet.
    pub pool: String,
    /// Subnet mask (option 1); defaults to 255.255.255.0.
    #[serde(default)]
    pub netmask: Option<Ipv4Addr>,
    /// Router (option 3), if any.
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds (option 51); default 3600.
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    /// The append-only lease log; without it leases live in memory only.
    #[serde(default)]
    pub lease_file: Option<PathBuf>,
    /// Default boot file (option 67 and the header's `file`).
    #[serde(default)]
    pub boot_file: Option<String>,
    /// Boot file per architecture: keys `arm64`, `arm32`, `x86-bios`, `x64-efi`.
    #[serde(default)]
    pub arch_boot_files: BTreeMap<String, String>,
    /// The TFTP server (siaddr); defaults to `server_ip`.
    #[serde(default)]
    pub next_server: Option<Ipv4Addr>,
    /// Option 66 and the header's `sname`; defaults to the next-server address as text.
    #[serde(default)]
    pub tftp_server_name: Option<String>,
    /// Static bindings by MAC or by board identity.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
    /// Ping-check: before offering an address the client does not hold yet, send it an ICMP
    /// echo and wait this many milliseconds for an answer; 0 (the default) turns it off.
    #[serde(default)]
    pub ping_check_ms: u32,
}

/// The longest ping-check wait accepted, in milliseconds (clients retry a DISCOVER after ~4 s).
pub const MAX_PING_CHECK_MS: u32 = 2000;

fn default_lease_time() -> u32 {
    DEFAULT_LEASE_TIME
}

/// One static binding as written: exactly one of `mac` or `id`, and an address and/or boot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Match on this MAC (`aa:bb:cc:dd:ee:ff`).
    #[serde(default)]
    pub mac: Option<String>,
    /// Match on this identity: a board id (`labboot:<id>` in option 60) or `uuid:<uuid>`.
    #[serde(default)]
    pub id: Option<String>,
    /// The fixed address.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// A boot file for this client only.
    #[serde(default)]
    pub boot_file: Option<String>,
}

pub use crate::common::ConfigError;

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new("dhcp", field, message)
}

/// Checked DHCP settings; build with `DhcpSettings::try_from(config)`.
#[derive(Debug, Clone)]
pub struct DhcpSettings {
    interface: String,
    server_ip: Ipv4Addr,
    netmask: Ipv4Addr,
    pool: Pool,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    lease_time: u32,
    lease_file: Option<PathBuf>,
    boot_file: Option<String>,
    arch_boot_files: BTreeMap<Arch, String>,
    next_server: Ipv4Addr,
    tftp_server_name: String,
    bindings: StaticBindings,
    ping_check: Option<Duration>,
}

impl DhcpSettings {
    /// The interface to bind to.
    pub fn interface(&self) -> &str {
        &self.interface
    }
    /// The server's own address (option 54).
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_ip
    }
    /// The subnet mask (option 1).
    pub fn netmask(&self) -> Ipv4Addr {
        self.netmask
    }
    /// The dynamic pool.
    pub fn pool(&self) -> Pool {
        self.pool
    }
    /// The router (option 3).
    pub fn router(&self) -> Option<Ipv4Addr> {
        self.router
    }
    /// DNS servers (option 6).
    pub fn dns(&self) -> &[Ipv4Addr] {
        &self.dns
    }
    /// Lease time in seconds.
    pub fn lease_time(&self) -> u32 {
        self.lease_time
    }
    /// The lease log, if leases are persisted.
    pub fn lease_file(&self) -> Option<&std::path::Path> {
        self.lease_file.as_deref()
    }
    /// The default boot file.
    pub fn boot_file(&self) -> Option<&str> {
        self.boot_file.as_deref()
    }
    /// The boot file for an architecture, if one is configured.
    pub fn arch_boot_file(&self, arch: Arch) -> Option<&str> {
        self.arch_boot_files.get(&arch).map(String::as_str)
    }
    /// siaddr, the TFTP server.
    pub fn next_server(&self) -> Ipv4Addr {
        self.next_server
    }
    /// Option 66 / sname.
    pub fn tftp_server_name(&self) -> &str {
        &self.tftp_server_name
    }
    /// The static bindings from the configuration.
    pub fn bindings(&self) -> &StaticBindings {
        &self.bindings
    }
    /// How long to wait for an ICMP echo reply before offering a new address; `None`: no check.
    pub fn ping_check(&self) -> Option<Duration> {
        self.ping_check
    }
    /// Whether `ip` is inside the server's subnet.
    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        u32::from(ip) & mask == u32::from(self.server_ip) & mask
    }
    /// Whether `ip` may be given to a host: in the subnet, not its network or broadcast address,
    /// not the server itself.
    pub fn assignable(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        let host = u32::from(ip) & !mask;
        self.in_subnet(ip) && host != 0 && host != !mask && ip != self.server_ip
    }
}

fn check_boot_file(field: &str, file: &str) -> Result<(), ConfigError> {
    if file.is_empty() || file.len() > 127 || file.contains('\0') {
        return Err(err(
            field,
            format!(
                "`{file}` must be 1-127 bytes without NUL (it goes into the header's file field)"
            ),
        ));
    }
    Ok(())
}

impl TryFrom<DhcpConfig> for DhcpSettings {
    type Error = ConfigError;

    fn try_from(c: DhcpConfig) -> Result<Self, ConfigError> {
        if c.interface.is_empty() || c.interface.len() > 15 || c.interface.contains(['/', ' ']) {
            return Err(err(
                "interface",
                format!("`{}` is not an interface name", c.interface),
            ));
        }
        if c.server_ip.is_unspecified() || c.server_ip.is_broadcast() || c.server_ip.is_multicast()
        {
            return Err(err(
                "server_ip",
                format!("{} cannot be a server address", c.server_ip),
            ));
        }
        let netmask = c.netmask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
        let m = u32::from(netmask);
        if m.leading_ones() + m.trailing_zeros() != 32 || m.leading_ones() > 30 {
            return Err(err(
                "netmask",
                format!("{netmask} is not a usable contiguous netmask"),
            ));
        }
        let mut s = DhcpSettings {
            interface: c.interface,
            server_ip: c.server_ip,
            netmask,
            pool: Pool::new(c.server_ip, c.server_ip),
            router: c.router,
            dns: c.dns,
            lease_time: c.lease_time,
            lease_file: c.lease_file,
            boot_file: c.boot_file,
            arch_boot_files: BTreeMap::new(),
            next_server: c.next_server.unwrap_or(c.server_ip),
            tftp_server_name: String::new(),
            bindings: StaticBindings::default(),
            ping_check: None,
        };
        if c.ping_check_ms > MAX_PING_CHECK_MS {
            return Err(err(
                "ping_check_ms",
                format!(
                    "{} ms is too long (at most {MAX_PING_CHECK_MS}; 0 turns the check off)",
                    c.ping_check_ms
                ),
            ));
        }
        s.ping_check =
            (c.ping_check_ms > 0).then(|| Duration::from_millis(u64::from(c.ping_check_ms)));
        let pool: Pool = c.pool.parse().map_err(|e| err("pool", e))?;
        for ip in [pool.start(), pool.end()] {
            if !s.assignable(ip) {
                return Err(err(
                    "pool",
                    format!(
                        "{ip} is not a host address of the server's subnet {}/{}",
                        Ipv4Addr::from(u32::from(c.server_ip) & m),
                        m.leading_ones()
                    ),
                ));
            }
        }
        if pool.contains(c.server_ip) {
            return Err(err(
                "pool",
                format!(
                    "the pool {pool} contains the server's own address {}",
                    c.server_ip
                ),
            ));
        }
        s.pool = pool;
        if let Some(r) = c.router {
            if !s.in_subnet(r) {
                return Err(err("router", format!("{r} is outside the server's subnet")));
            }
        }
        if s.lease_time < 60 {
            return Err(err(
                "lease_time",
                format!("{} s is too short (at least 60)", s.lease_time),
            ));
        }
        if let Some(f) = &s.boot_file {
            check_boot_file("boot_file", f)?;
        }
        for (name, file) in c.arch_boot_files {
            let field = format!("arch_boot_files.{name}");
            let arch: Arch = name.parse().map_err(|e: String| err(&field, e))?;
            check_boot_file(&field, &file)?;
            s.arch_boot_files.insert(arch, file);
        }
        s.tftp_server_name = c
            .tftp_server_name
            .unwrap_or_else(|| s.next_server.to_string());
        if s.tftp_server_name.is_empty() || s.tftp_server_name.len() > 63 {
            return Err(err(
                "tftp_server_name",
                "must be 1-63 bytes (the header's sname)",
            ));
        }
        let mut ips = HashSet::new();
        for (i, b) in c.bindings.into_iter().enumerate() {
            let field = |f: &str| format!("bindings[{i}].{f}");
            if b.ip.is_none() && b.boot_file.is_none() {
                return Err(err(
                    field("ip"),
                    "a binding needs an ip, a boot_file or both",
                ));
            }
            if let Some(ip) = b.ip {
                if !s.assignable(ip) {
                    return Err(err(
                        field("ip"),
                        format!("{ip} is not a host address of the server's subnet"),
                    ));
                }
                if !ips.insert(ip) {
                    return Err(err(field("ip"), format!("{ip} is bound twice")));
                }
            }
            if let Some(f) = &b.boot_file {
                check_boot_file(&field("boot_file"), f)?;
            }
            let binding = Binding {
                ip: b.ip,
                boot_file: b.boot_file,
            };
            match (b.mac, b.id) {
                (Some(mac), None) => {
                    let mac: MacAddr = mac.parse().map_err(|e| err(field("mac"), e))?;
                    if s.bindings.insert_mac(mac, binding).is_some() {
                        return Err(err(field("mac"), format!("{mac} is bound twice")));
                    }
                }
                (None, Some(id)) => {
                    let id = Identity::parse(&id).map_err(|e| err(field("id"), e))?;
                    if s.bindings.insert_id(id.clone(), binding).is_some() {
                        return Err(err(field("id"), format!("{id} is bound twice")));
                    }
                }
                _ => return Err(err(field("mac"), "give exactly one of mac or id")),
            }
        }
        Ok(s)
    }
}

impl DhcpConfig {
    /// Reads the `dhcp:` section of a YAML document (other top-level sections are ignored).
    pub fn from_yaml_section(yaml: &str) -> Result<DhcpConfig, String> {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let section = doc
            .get("dhcp")
            .ok_or_else(|| "no `dhcp:` section".to_string())?;
        serde_yaml_ng::from_value(section.clone()).map_err(|e| format!("dhcp: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DhcpConfig {
        DhcpConfig {
            interface: "lab0".into(),
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            pool: "10.0.0.100-10.0.0.199".into(),
            netmask: None,
            router: None,
            dns: vec![],
            lease_time: DEFAULT_LEASE_TIME,
            lease_file: None,
            boot_file: None,
            arch_boot_files: BTreeMap::new(),
            next_server: None,
            tftp_server_name: None,
            bindings: vec![],
            ping_check_ms: 0,
        }
    }

    fn field_of(c: DhcpConfig) -> String {
        DhcpSettings::try_from(c).unwrap_err().field
    }

    #[test]
    fn defaults() {
        let s = DhcpSettings::try_from(base()).unwrap();
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.next_server(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(s.tftp_server_name(), "10.0.0.1");
        assert_eq!(s.pool().len(), 100);
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = base();
        c.pool = "10.0.0.9-10.0.0.1".into();
        assert_eq!(field_of(c), "pool");
        let mut c = base();
        c.pool = "10.0.1.5-10.0.1.9".into();
        let e = DhcpSettings::try_from(c).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("dhcp.pool: 10.0.1.5 is not a host address"),
            "{e}"
        );
        let mut c = base();
        c.pool = "10.0.0.1-10.0.0.9".into();
        assert_eq!(field_of(c), "pool");
        let mut c = base();
        c.netmask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert_eq!(field_of(c), "netmask");
        let mut c = base();
        c.router = Some(Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(field_of(c), "router");
        let mut c = base();
        c.arch_boot_files.insert("mips".into(), "x".into());
        assert_eq!(field_of(c), "arch_boot_files.mips");
        let mut c = base();
        c.boot_file = Some("x".repeat(128));
        assert_eq!(field_of(c), "boot_file");
        let mut c = base();
        c.bindings.push(BindingConfig {
            mac: Some("52:52:52:52:52:52".into()),
            id: None,
            ip: Some(Ipv4Addr::new(10, 0, 1, 5)),
            boot_file: None,
        });
        assert_eq!(field_of(c), "bindings[0].ip");
        let mut c = base();
        c.bindings.push(BindingConfig {
            mac: None,
            id: Some("bad id".into()),
            ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            boot_file: None,
        });
        assert_eq!(field_of(c), "bindings[0].id");
        let mut c = base();
        c.interface = "a-very-long-interface".into();
        assert_eq!(field_of(c), "interface");
    }

    #[test]
    fn yaml_section_and_unknown_keys() {
        let yaml = "
tftp: {root: /srv}
dhcp:
  interface: lab0
  server_ip: 10.0.0.1
  pool: 10.0.0.100-10.0.0.150
  router: 10.0.0.1
  dns: [10.0.0.1]
  boot_file: labboot/boot.scr
  arch_boot_files: {arm32: arm32.scr}
  bindings:
    - {mac: '52:52:52:52:52:52', ip: 10.0.0.7}
    - {id: board7, ip: 10.0.0.8, boot_file: b7.scr}
";
        let c = DhcpConfig::from_yaml_section(yaml).unwrap();
        let s = DhcpSettings::try_from(c).unwrap();
        assert_eq!(s.arch_boot_file(Arch::Arm32), Some("arm32.scr"));
        assert_eq!(s.bindings().len(), 2);
        let bad = "dhcp:\n  interface: lab0\n  server_ip: 10.0.0.1\n  pool: 10.0.0.2-10.0.0.3\n  colour: red\n";
        let e = DhcpConfig::from_yaml_section(bad).unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        assert!(DhcpConfig::from_yaml_section("tftp: {}").is_err());
    }
}
