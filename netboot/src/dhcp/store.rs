//! Crash-safe lease persistence: an append-only log, fsynced before any ACK leaves, compacted
//! with write-and-rename when the server starts.
//!
//! Why a log and not rewriting a snapshot per ACK: a snapshot rewrite (write temp, fsync,
//! rename, fsync directory) costs O(leases) bytes and two syncs for every ACK, while an appended
//! line costs ~80 bytes and one `fdatasync`. The server also batches: it appends the records of
//! every packet it read in one go with one `write` and one `fdatasync` ("group commit"), and only
//! then sends those ACKs, so a lease that a client has seen ACKed is on disk even if the process is
//! killed with SIGKILL right after. A torn last line (killed mid-write) belongs to an ACK that was
//! never sent, and loading skips it with a warning.
//!
//! Why compaction is write-and-rename: at start the log is replayed, expired leases are dropped,
//! and the survivors are written to `PATH.tmp`, fsynced and renamed over `PATH` (then the
//! directory is fsynced), so a crash during compaction leaves either the old log or the new one,
//! never a half-written file.
//!
//! Format, one record per line (keys never contain whitespace, see [`ClientKey`]):
//! ```text
//! # labboot dhcp lease log v1
//! bind 10.0.0.5 board:board7 52:54:00:12:34:56 1767225600
//! free 10.0.0.5 board:board7
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::classify::{ClientKey, MacAddr};
use crate::error::ServerError;

const HEADER: &str = "# labboot dhcp lease log v1\n";

/// A lease as stored: who, which address, until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLease {
    /// Identity or MAC.
    pub key: ClientKey,
    /// The client's MAC.
    pub mac: MacAddr,
    /// The address.
    pub ip: Ipv4Addr,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRecord {
    /// A lease was ACKed (or renewed).
    Bind(StoredLease),
    /// A lease was released or declined.
    Free {
        /// Whose.
        key: ClientKey,
        /// Which address.
        ip: Ipv4Addr,
    },
}

impl LeaseRecord {
    fn write_line(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match self {
            LeaseRecord::Bind(l) => {
                writeln!(out, "bind {} {} {} {}", l.ip, l.key, l.mac, l.expires)
            }
            LeaseRecord::Free { key, ip } => writeln!(out, "free {ip} {key}"),
        };
    }

    fn parse(line: &str) -> Result<LeaseRecord, String> {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let ip = |s: &str| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("`{s}` is not an address"))
        };
        match f.as_slice() {
            ["bind", a, key, mac, exp] => Ok(LeaseRecord::Bind(StoredLease {
                ip: ip(a)?,
                key: key.parse()?,
                mac: mac.parse()?,
                expires: exp
                    .parse()
                    .map_err(|_| format!("`{exp}` is not a Unix time"))?,
            })),
            ["free", a, key] => Ok(LeaseRecord::Free {
                ip: ip(a)?,
                key: key.parse()?,
            }),
            _ => Err("not a `bind` or `free` record".to_string()),
        }
    }
}

/// Replays the log at `path` into the current leases, expired ones included (empty if absent).
///
/// Malformed lines are skipped with a warning naming `path:line`.
pub fn load(path: &Path) -> io::Result<Vec<StoredLease>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut by_key: HashMap<ClientKey, StoredLease> = HashMap::new();
    let mut by_ip: HashMap<Ipv4Addr, ClientKey> = HashMap::new();
    let complete = match text.iter().rposition(|b| *b == b'\n') {
        Some(end) => &text[..=end],
        None => &text[..0],
    };
    if complete.len() < text.len() {
        tracing::warn!(
            "dhcp: {}: ignoring a torn last line (its ACK was never sent)",
            path.display()
        );
    }
    for (n, line) in complete.split(|b| *b == b'\n').enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            tracing::warn!("dhcp: {}:{}: not UTF-8, skipped", path.display(), n + 1);
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match LeaseRecord::parse(line) {
            Ok(LeaseRecord::Bind(l)) => {
                if let Some(old) = by_key.remove(&l.key) {
                    by_ip.remove(&old.ip);
                }
                if let Some(other) = by_ip.insert(l.ip, l.key.clone()) {
                    by_key.remove(&other);
                }
                by_key.insert(l.key.clone(), l);
            }
            Ok(LeaseRecord::Free { key, ip }) => {
                if by_key.get(&key).is_some_and(|l| l.ip == ip) {
                    by_key.remove(&key);
                    by_ip.remove(&ip);
                }
            }
            Err(e) => tracing::warn!("dhcp: {}:{}: {e}, skipped", path.display(), n + 1),
        }
    }
    let mut leases: Vec<StoredLease> = by_key.into_values().collect();
    leases.sort_by_key(|l| l.ip);
    Ok(leases)
}

/// The open lease log.
#[derive(Debug)]
pub struct LeaseStore {
    path: PathBuf,
    file: File,
    buf: String,
}

impl LeaseStore {
    /// Loads the log, drops leases expired at `now` (Unix seconds), rewrites it compacted and
    /// opens it for appending. Returns the store and the live leases.
    pub fn open(path: &Path, now: u64) -> Result<(LeaseStore, Vec<StoredLease>), ServerError> {
        let with_path = |error: io::Error, what: &'static str| ServerError::LeaseLog {
            path: path.to_path_buf(),
            what,
            error,
        };
        let leases: Vec<StoredLease> = load(path)
            .map_err(|e| with_path(e, "cannot read lease file"))?
            .into_iter()
            .filter(|l| l.expires > now)
            .collect();
        let mut text = String::from(HEADER);
        for l in &leases {
            LeaseRecord::Bind(l.clone()).write_line(&mut text);
        }
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()
        })()
        .map_err(|e| with_path(e, "cannot write lease file"))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| with_path(e, "cannot open lease file"))?;
        Ok((
            LeaseStore {
                path: path.to_path_buf(),
                file,
                buf: String::new(),
            },
            leases,
        ))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` with one write and makes them durable (`fdatasync`) before returning.
    pub fn append(&mut self, records: &[LeaseRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for r in records {
            r.write_line(&mut self.buf);
        }
        self.file.write_all(self.buf.as_bytes())?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::classify::Identity;

    fn bind(n: u8, expires: u64) -> StoredLease {
        StoredLease {
            key: ClientKey::Id(Identity::Board(format!("b{n}"))),
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            ip: Ipv4Addr::new(10, 0, 0, n),
            expires,
        }
    }

    #[test]
    fn append_reopen_compact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let (mut store, leases) = LeaseStore::open(&path, 0).unwrap();
        assert!(leases.is_empty());
        store
            .append(&[
                LeaseRecord::Bind(bind(1, 1000)),
                LeaseRecord::Bind(bind(2, 1000)),
                LeaseRecord::Bind(bind(3, 10)),
                LeaseRecord::Free {
                    key: bind(2, 0).key,
                    ip: bind(2, 0).ip,
                },
            ])
            .unwrap();
        // A renewal to a later expiry.
        store.append(&[LeaseRecord::Bind(bind(1, 2000))]).unwrap();
        drop(store);
        assert_eq!(load(&path).unwrap(), vec![bind(1, 2000), bind(3, 10)]);
        let (_store, leases) = LeaseStore::open(&path, 500).unwrap();
        assert_eq!(leases, vec![bind(1, 2000)]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            2,
            "compacted: header + one lease\n{text}"
        );
        assert!(!dir.path().join("leases.tmp").exists());
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let good = "bind 10.0.0.1 board:b1 02:00:00:00:00:01 1000\n";
        let text = format!(
            "{HEADER}{good}bind 10.0.0.2 nonsense\n\u{1}\nfree 10.0.0.9 mac:zz\nbind 10.0.0.3 board:b3 02:00:00:00:00:01 10"
        );
        std::fs::write(&path, text).unwrap();
        assert_eq!(load(&path).unwrap(), vec![bind(1, 1000)]);
    }

    #[test]
    fn a_bind_takes_the_address_from_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let (mut store, _) = LeaseStore::open(&path, 0).unwrap();
        let mut other = bind(1, 1000);
        other.key = ClientKey::Mac(MacAddr([2, 0, 0, 0, 0, 9]));
        store
            .append(&[
                LeaseRecord::Bind(bind(1, 1000)),
                LeaseRecord::Bind(other.clone()),
            ])
            .unwrap();
        assert_eq!(load(&path).unwrap(), vec![other]);
    }
}
