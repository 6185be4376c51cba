//! NBD configuration in two steps: [`NbdConfig`] is the `nbd:` section of labboot's YAML (or
//! what CLI flags fill in); [`NbdSettings`] is the checked form the server runs with.
//!
//! Every error names its field, e.g. `nbd.exports[1].mode unknown export mode "rx" …`. Export
//! files are not opened here: the server opens them ([`super::NbdServer::new`]), so a missing
//! file is reported with its path by that step.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::export::{ClientNet, ExportMode};
use super::overlay::{OverlayLimits, BLOCK, ENTRY_COST};

/// The smallest `max_bytes_in_flight` accepted.
pub const MIN_BYTES_IN_FLIGHT: u64 = 1 << 20;

/// The `nbd:` section of the configuration, as written by people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NbdConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Exports served from the start (more can be added at run time).
    #[serde(default)]
    pub exports: Vec<ExportConfig>,
    /// Connections served at once; further ones are closed right after accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections from one client address that may be in the handshake (connected, no export
    /// selected yet) at once; further ones from that address are closed right after accept, so
    /// a client that never finishes handshakes cannot hold every connection slot.
    #[serde(default = "default_max_handshakes_per_client")]
    pub max_handshakes_per_client: usize,
    /// Payload bytes (read replies being built or sent, writes being applied) all connections
    /// together may hold; a request over it waits, and its connection reads no more meanwhile.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: u64,
    /// Seconds a reply may wait for a client that reads nothing; then the connection is closed
    /// and the bytes it held go back to the others.
    #[serde(default = "default_send_timeout_secs")]
    pub send_timeout_secs: u64,
    /// Bytes of one `cow` connection's overlay kept in memory before spilling to a temp file.
    #[serde(default = "default_cow_memory_bytes")]
    pub cow_memory_bytes: u64,
    /// Bytes one `cow` connection may write in all (memory + temp file); beyond: ENOSPC.
    #[serde(default = "default_cow_limit_bytes")]
    pub cow_limit_bytes: u64,
    /// Directory of the overlays' temp files [default: the system's temporary directory].
    #[serde(default)]
    pub cow_spill_dir: Option<PathBuf>,
}

/// One export in the `nbd.exports` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Name clients ask for.
    pub name: String,
    /// File (or block device) served.
    pub path: PathBuf,
    /// `ro`, `cow` or `rw`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Client addresses or CIDR ranges allowed (empty: every client).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Text shown by `nbdinfo --list`.
    #[serde(default)]
    pub description: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 10809))
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_handshakes_per_client() -> usize {
    16
}
fn default_max_bytes_in_flight() -> u64 {
    256 << 20
}
fn default_send_timeout_secs() -> u64 {
    30
}
fn default_cow_memory_bytes() -> u64 {
    64 << 20
}
fn default_cow_limit_bytes() -> u64 {
    4 << 30
}
fn default_mode() -> String {
    "ro".into()
}

impl Default for NbdConfig {
    fn default() -> Self {
        NbdConfig {
            listen: default_listen(),
            exports: Vec::new(),
            max_connections: default_max_connections(),
            max_handshakes_per_client: default_max_handshakes_per_client(),
            max_bytes_in_flight: default_max_bytes_in_flight(),
            send_timeout_secs: default_send_timeout_secs(),
            cow_memory_bytes: default_cow_memory_bytes(),
            cow_limit_bytes: default_cow_limit_bytes(),
            cow_spill_dir: None,
        }
    }
}

impl ExportConfig {
    /// An export of `path` under `name` in `mode`, open to every client.
    pub fn new(name: &str, path: impl Into<PathBuf>, mode: ExportMode) -> ExportConfig {
        ExportConfig {
            name: name.to_owned(),
            path: path.into(),
            mode: mode.as_str().to_owned(),
            allow: Vec::new(),
            description: String::new(),
        }
    }
}

pub use crate::common::ConfigError;

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::new("nbd", field, problem)
}

/// A checked export: name, file, mode, allowed clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    /// Name clients ask for.
    pub name: String,
    /// File served.
    pub path: PathBuf,
    /// How writes are treated.
    pub mode: ExportMode,
    /// Clients allowed (empty: all).
    pub allow: Vec<ClientNet>,
    /// Text shown by `nbdinfo --list`.
    pub description: String,
}

/// Checked NBD settings; build them with `NbdSettings::try_from(config)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdSettings {
    listen: SocketAddr,
    exports: Vec<ExportSpec>,
    max_connections: usize,
    max_handshakes_per_client: usize,
    max_bytes_in_flight: usize,
    send_timeout: Duration,
    overlay: OverlayLimits,
}

impl TryFrom<NbdConfig> for NbdSettings {
    type Error = ConfigError;

    fn try_from(c: NbdConfig) -> Result<Self, ConfigError> {
        if c.max_connections == 0 {
            return Err(bad("max_connections", "must be at least 1, got 0"));
        }
        if c.max_handshakes_per_client == 0 {
            return Err(bad(
                "max_handshakes_per_client",
                "must be at least 1, got 0",
            ));
        }
        if c.max_bytes_in_flight < MIN_BYTES_IN_FLIGHT {
            return Err(bad(
                "max_bytes_in_flight",
                format!(
                    "must be at least {MIN_BYTES_IN_FLIGHT} (1 MiB), got {}",
                    c.max_bytes_in_flight
                ),
            ));
        }
        if c.send_timeout_secs == 0 || c.send_timeout_secs > 86_400 {
            return Err(bad(
                "send_timeout_secs",
                format!("must be 1 to 86400, got {}", c.send_timeout_secs),
            ));
        }
        let min = BLOCK + ENTRY_COST;
        if c.cow_limit_bytes < min {
            return Err(bad(
                "cow_limit_bytes",
                format!(
                    "must be at least {min} (one block), got {}",
                    c.cow_limit_bytes
                ),
            ));
        }
        if c.cow_memory_bytes > c.cow_limit_bytes {
            return Err(bad(
                "cow_memory_bytes",
                format!(
                    "must be at most cow_limit_bytes ({}), got {}",
                    c.cow_limit_bytes, c.cow_memory_bytes
                ),
            ));
        }
        if let Some(dir) = &c.cow_spill_dir {
            if !dir.is_dir() {
                return Err(bad(
                    "cow_spill_dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        let mut names = HashSet::new();
        let mut exports = Vec::with_capacity(c.exports.len());
        for (i, e) in c.exports.into_iter().enumerate() {
            let field = |f: &str| format!("exports[{i}].{f}");
            if e.name.len() > 4096 {
                return Err(bad(field("name"), "must be at most 4096 bytes"));
            }
            if !names.insert(e.name.clone()) {
                return Err(bad(field("name"), format!("{:?} is used twice", e.name)));
            }
            if e.path.as_os_str().is_empty() {
                return Err(bad(field("path"), "must not be empty"));
            }
            let mode = e.mode.parse().map_err(|m: String| bad(field("mode"), m))?;
            let allow = e
                .allow
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    a.parse()
                        .map_err(|m: String| bad(field(&format!("allow[{j}]")), m))
                })
                .collect::<Result<Vec<ClientNet>, _>>()?;
            exports.push(ExportSpec {
                name: e.name,
                path: e.path,
                mode,
                allow,
                description: e.description,
            });
        }
        Ok(NbdSettings {
            listen: c.listen,
            exports,
            max_connections: c.max_connections,
            max_handshakes_per_client: c.max_handshakes_per_client,
            max_bytes_in_flight: usize::try_from(c.max_bytes_in_flight).unwrap_or(usize::MAX),
            send_timeout: Duration::from_secs(c.send_timeout_secs),
            overlay: OverlayLimits {
                memory: c.cow_memory_bytes,
                total: c.cow_limit_bytes,
                spill_dir: c.cow_spill_dir,
            },
        })
    }
}

impl NbdSettings {
    /// Address and port to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// Exports served from the start.
    pub fn exports(&self) -> &[ExportSpec] {
        &self.exports
    }
    /// Connections served at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// Connections from one client address in the handshake at once.
    pub fn max_handshakes_per_client(&self) -> usize {
        self.max_handshakes_per_client
    }
    /// How long a reply may wait for a client that reads nothing.
    pub fn send_timeout(&self) -> Duration {
        self.send_timeout
    }
    /// Payload bytes all connections together may hold.
    pub fn max_bytes_in_flight(&self) -> usize {
        self.max_bytes_in_flight
    }
    /// Limits of each `cow` connection's overlay.
    pub fn overlay(&self) -> &OverlayLimits {
        &self.overlay
    }
    /// Directory of the overlays' temp files, if set.
    pub fn spill_dir(&self) -> Option<&Path> {
        self.overlay.spill_dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_section_with_defaults() {
        let yaml = "listen: 127.0.0.1:10809\nexports:\n  - name: master\n    path: /srv/m.img\n  - name: job7\n    path: /srv/j.img\n    mode: rw\n    allow: [10.0.0.0/8, 127.0.0.1]\ncow_memory_bytes: 1048576\n";
        let c: NbdConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let s = NbdSettings::try_from(c).unwrap();
        assert_eq!(s.listen(), "127.0.0.1:10809".parse().unwrap());
        assert_eq!(s.exports()[0].mode, ExportMode::ReadOnly);
        assert_eq!(s.exports()[1].mode, ExportMode::ReadWrite);
        assert_eq!(s.exports()[1].allow.len(), 2);
        assert_eq!(s.overlay().memory, 1 << 20);
        assert_eq!(s.overlay().total, 4 << 30);
        assert_eq!(s.max_connections(), 1024);
        assert_eq!(s.max_handshakes_per_client(), 16);
        let c: NbdConfig = serde_yaml_ng::from_str("max_handshakes_per_client: 2\n").unwrap();
        assert_eq!(
            NbdSettings::try_from(c)
                .unwrap()
                .max_handshakes_per_client(),
            2
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err =
            serde_yaml_ng::from_str::<NbdConfig>("listen: 127.0.0.1:1\nport: 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
        let err = serde_yaml_ng::from_str::<NbdConfig>(
            "exports:\n  - name: a\n    path: /x\n    readonly: true\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `readonly`"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let export = |mode: &str, allow: &[&str]| ExportConfig {
            mode: mode.into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..ExportConfig::new("a", "/x", ExportMode::ReadOnly)
        };
        let cases: Vec<(NbdConfig, &str)> = vec![
            (
                NbdConfig {
                    max_connections: 0,
                    ..NbdConfig::default()
                },
                "nbd.max_connections: must be at least 1, got 0",
            ),
            (
                NbdConfig {
                    max_handshakes_per_client: 0,
                    ..NbdConfig::default()
                },
                "nbd.max_handshakes_per_client: must be at least 1, got 0",
            ),
            (
                NbdConfig {
                    cow_limit_bytes: 10,
                    ..NbdConfig::default()
                },
                "nbd.cow_limit_bytes: must be at least 4160 (one block), got 10",
            ),
            (
                NbdConfig {
                    cow_memory_bytes: 5 << 30,
                    ..NbdConfig::default()
                },
                "nbd.cow_memory_bytes: must be at most cow_limit_bytes (4294967296), got 5368709120",
            ),
            (
                NbdConfig {
                    exports: vec![export("ro", &[]), export("ro", &[])],
                    ..NbdConfig::default()
                },
                "nbd.exports[1].name: \"a\" is used twice",
            ),
            (
                NbdConfig {
                    exports: vec![export("rx", &[])],
                    ..NbdConfig::default()
                },
                "nbd.exports[0].mode: unknown export mode \"rx\" (ro, cow or rw)",
            ),
            (
                NbdConfig {
                    exports: vec![export("ro", &["10.0.0.0/8", "10.0.0.0/40"])],
                    ..NbdConfig::default()
                },
                "nbd.exports[0].allow[1]: \"10.0.0.0/40\": prefix must be 0–32",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(NbdSettings::try_from(c).unwrap_err().to_string(), want);
        }
    }
}
