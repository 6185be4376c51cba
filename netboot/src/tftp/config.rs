//! TFTP configuration in two steps: [`TftpConfig`] is what YAML (the `tftp:` section of labboot's
//! config) or CLI flags fill in; [`TftpSettings`] is the checked form the server runs with.
//!
//! Checking happens once, in `TryFrom`, and every error names the offending field, so a typo in a
//! config file is reported as `tftp.max_blksize must be …` rather than surfacing as odd behaviour.
//!
//! ```yaml
//! tftp:
//!   root: /var/lib/labboot/tftp
//!   listen: 0.0.0.0:69
//!   max_transfers: 512            # in progress at once; more get "server busy: 512 transfers in progress"
//!   max_transfers_per_client: 32  # from one address; more get "too many transfers from this address: 32 in progress"
//!   timeout_ms: 1000              # retransmission timeout, doubling up to max_timeout_ms,
//!   max_timeout_ms: 8000          # `retries` times without progress: a client that never
//!   retries: 5                    # answers is dropped after 1+2+4+8+8+8 = 31 s
//! ```
//!
//! Both caps answer with an ERROR packet (code 0) that gives the reason and log a warning at
//! most once a minute ([`crate::throttle`]) with the number refused since the last one. A
//! transfer whose client stopped answering costs about 12 KiB and no thread while it waits out
//! its retransmission budget, so the caps bound descriptors (three per transfer) more than
//! memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::options::{Limits, MAX_BLKSIZE, MIN_BLKSIZE};
use super::transfer::Timing;

/// The largest `max_window` accepted: ACKs are matched by their low 16 bits, and a window of at
/// most half the sequence space keeps a stale ACK from being mistaken for a fresh one.
pub const MAX_WINDOW: u16 = 32768;

/// Duplicate ACKs sooner than this after a send are taken as echoes, not losses.
const DUP_ACK_GUARD: Duration = Duration::from_millis(20);

/// The `tftp:` section of the configuration, as written by people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpConfig {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory served to read requests.
    pub root: PathBuf,
    /// Largest block size granted (8–65464).
    #[serde(default = "default_max_blksize")]
    pub max_blksize: u16,
    /// Largest window (RFC 7440) granted (1–32768).
    #[serde(default = "default_max_window")]
    pub max_window: u16,
    /// Transfers in progress at once; further requests get an ERROR ("server busy").
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
    /// Transfers in progress at once from one client address (reads and writes); further
    /// requests from that address get an ERROR ("too many transfers from this address"), so one
    /// client cannot take every slot of `max_transfers`. A board fetches its files one after the
    /// other; the default leaves room for a few clients behind one NAT address.
    #[serde(default = "default_max_transfers_per_client")]
    pub max_transfers_per_client: usize,
    /// First retransmission timeout in milliseconds (a client's `timeout` option overrides it).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Ceiling of the doubling retransmission timeout in milliseconds.
    #[serde(default = "default_max_timeout_ms")]
    pub max_timeout_ms: u64,
    /// Retransmissions without progress before a transfer is abandoned.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Directory for write requests; writes are refused when absent.
    #[serde(default)]
    pub upload_root: Option<PathBuf>,
    /// Largest accepted upload in bytes.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 69))
}
fn default_max_blksize() -> u16 {
    MAX_BLKSIZE
}
fn default_max_window() -> u16 {
    64
}
fn default_max_transfers() -> usize {
    512
}
fn default_max_transfers_per_client() -> usize {
    32
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_max_timeout_ms() -> u64 {
    8000
}
fn default_retries() -> u32 {
    5
}
fn default_max_upload_bytes() -> u64 {
    1 << 30
}

impl TftpConfig {
    /// A configuration serving `root` with every other field at its default.
    pub fn new(root: impl Into<PathBuf>) -> TftpConfig {
        TftpConfig {
            listen: default_listen(),
            root: root.into(),
            max_blksize: default_max_blksize(),
            max_window: default_max_window(),
            max_transfers: default_max_transfers(),
            max_transfers_per_client: default_max_transfers_per_client(),
            timeout_ms: default_timeout_ms(),
            max_timeout_ms: default_max_timeout_ms(),
            retries: default_retries(),
            upload_root: None,
            max_upload_bytes: default_max_upload_bytes(),
        }
    }
}

pub use crate::common::ConfigError;

fn bad(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new("tftp", field, problem)
}

/// Checked TFTP settings; build them with `TftpSettings::try_from(config)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpSettings {
    listen: SocketAddr,
    root: PathBuf,
    limits: Limits,
    max_transfers: usize,
    max_transfers_per_client: usize,
    timing: Timing,
    upload_root: Option<PathBuf>,
    max_upload_bytes: u64,
}

impl TryFrom<TftpConfig> for TftpSettings {
    type Error = ConfigError;

    fn try_from(c: TftpConfig) -> Result<Self, ConfigError> {
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&c.max_blksize) {
            return Err(bad(
                "max_blksize",
                format!(
                    "must be between {MIN_BLKSIZE} and {MAX_BLKSIZE}, got {}",
                    c.max_blksize
                ),
            ));
        }
        if !(1..=MAX_WINDOW).contains(&c.max_window) {
            return Err(bad(
                "max_window",
                format!("must be between 1 and {MAX_WINDOW}, got {}", c.max_window),
            ));
        }
        if c.max_transfers == 0 {
            return Err(bad("max_transfers", "must be at least 1, got 0"));
        }
        if c.max_transfers_per_client == 0 {
            return Err(bad("max_transfers_per_client", "must be at least 1, got 0"));
        }
        if !(1..=255_000).contains(&c.timeout_ms) {
            return Err(bad(
                "timeout_ms",
                format!("must be between 1 and 255000, got {}", c.timeout_ms),
            ));
        }
        if c.max_timeout_ms < c.timeout_ms {
            return Err(bad(
                "max_timeout_ms",
                format!(
                    "must be at least timeout_ms ({}), got {}",
                    c.timeout_ms, c.max_timeout_ms
                ),
            ));
        }
        let root = check_dir("root", &c.root)?;
        let upload_root = match &c.upload_root {
            Some(u) => {
                let u = check_dir("upload_root", u)?;
                if u == root || u.starts_with(&root) || root.starts_with(&u) {
                    return Err(bad(
                        "upload_root",
                        format!(
                            "{} must be separate from root {} (neither inside the other)",
                            u.display(),
                            root.display()
                        ),
                    ));
                }
                Some(u)
            }
            None => None,
        };
        Ok(TftpSettings {
            listen: c.listen,
            root,
            limits: Limits {
                max_blksize: c.max_blksize,
                max_window: c.max_window,
            },
            max_transfers: c.max_transfers,
            max_transfers_per_client: c.max_transfers_per_client,
            timing: Timing {
                timeout: Duration::from_millis(c.timeout_ms),
                max_timeout: Duration::from_millis(c.max_timeout_ms),
                retries: c.retries,
                dup_ack_guard: DUP_ACK_GUARD,
            },
            upload_root,
            max_upload_bytes: c.max_upload_bytes,
        })
    }
}

fn check_dir(field: &'static str, dir: &Path) -> Result<PathBuf, ConfigError> {
    let canonical = dir
        .canonicalize()
        .map_err(|e| bad(field, format!("{}: {e}", dir.display())))?;
    if !canonical.is_dir() {
        return Err(bad(field, format!("{} is not a directory", dir.display())));
    }
    Ok(canonical)
}

impl TftpSettings {
    /// Address and port to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// Canonical directory served to read requests.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Negotiation limits (block size, window).
    pub fn limits(&self) -> Limits {
        self.limits
    }
    /// Transfers in progress at once.
    pub fn max_transfers(&self) -> usize {
        self.max_transfers
    }
    /// Transfers in progress at once from one client address.
    pub fn max_transfers_per_client(&self) -> usize {
        self.max_transfers_per_client
    }
    /// Retransmission timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }
    /// Canonical upload directory, when writes are enabled.
    pub fn upload_root(&self) -> Option<&Path> {
        self.upload_root.as_deref()
    }
    /// Largest accepted upload in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_section_with_defaults() {
        let d = tempfile::tempdir().unwrap();
        let yaml = format!(
            "listen: 127.0.0.1:6969\nroot: {}\nmax_window: 16\n",
            d.path().display()
        );
        let c: TftpConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(c.max_blksize, 65464);
        assert_eq!((c.max_transfers, c.max_transfers_per_client), (512, 32));
        let s = TftpSettings::try_from(c).unwrap();
        assert_eq!(s.listen(), "127.0.0.1:6969".parse().unwrap());
        assert_eq!(s.limits().max_window, 16);
        assert_eq!(s.timing().timeout, Duration::from_secs(1));
        assert_eq!(s.upload_root(), None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml_ng::from_str::<TftpConfig>("root: /tmp\nblksize: 512\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `blksize`"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let d = tempfile::tempdir().unwrap();
        let base = TftpConfig::new(d.path());
        let cases: Vec<(TftpConfig, &str)> = vec![
            (
                TftpConfig {
                    max_blksize: 7,
                    ..base.clone()
                },
                "tftp.max_blksize: must be between 8 and 65464, got 7",
            ),
            (
                TftpConfig {
                    max_window: 0,
                    ..base.clone()
                },
                "tftp.max_window: must be between 1 and 32768, got 0",
            ),
            (
                TftpConfig {
                    max_transfers: 0,
                    ..base.clone()
                },
                "tftp.max_transfers: must be at least 1, got 0",
            ),
            (
                TftpConfig {
                    max_transfers_per_client: 0,
                    ..base.clone()
                },
                "tftp.max_transfers_per_client: must be at least 1, got 0",
            ),
            (
                TftpConfig {
                    timeout_ms: 0,
                    ..base.clone()
                },
                "tftp.timeout_ms: must be between 1 and 255000, got 0",
            ),
            (
                TftpConfig {
                    max_timeout_ms: 10,
                    ..base.clone()
                },
                "tftp.max_timeout_ms: must be at least timeout_ms (1000), got 10",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(TftpSettings::try_from(c).unwrap_err().to_string(), want);
        }
        let e = TftpSettings::try_from(TftpConfig::new("/nonexistent/x")).unwrap_err();
        assert_eq!(e.field, "root");
        assert!(
            e.to_string().starts_with("tftp.root: /nonexistent/x: "),
            "{e}"
        );
        let e = TftpSettings::try_from(TftpConfig {
            upload_root: Some(d.path().to_path_buf()),
            ..base
        })
        .unwrap_err();
        assert_eq!(e.field, "upload_root");
    }
}
