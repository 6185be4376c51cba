//! The export table: which directories are served, changed while the server runs.
//!
//! [`ExportTable`] is a cheap handle (clone it), like NBD's: the server holds one, the
//! dispatcher another, and both see the same exports; a table can be made before the server
//! ([`super::NfsServer::with_table`]). The dispatcher adds a per-job export before a job boots and
//! removes it afterwards. Removing an export closes every connection that used it (the exact
//! rule is in [`super::conns`]); calls in flight keep their `Arc<Export>`, and every later call
//! with one of its handles gets `NFS3ERR_STALE`. Lookups are by name (MOUNT) and by id (every
//! NFS call), under a read lock that is held only for the map lookup.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, RwLock};

use super::config::{ExportConfig, ExportSpec};
use super::conns::{Connection, Users};
use super::fs::{export_id, Export};

/// Why an export could not be added.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The configuration was rejected (the message names the field).
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// An export of that name exists already.
    #[error("export {0} exists already")]
    Exists(String),
    /// Two names hash to the same id (vanishingly rare; rename one).
    #[error("export {0} has the same id as export {1}")]
    IdClash(String, String),
    /// The directory could not be opened.
    #[error("cannot open export directory {0}: {1}")]
    Open(String, io::Error),
}

/// The exports served, shared between the server and whoever manages them (clone to share).
#[derive(Debug, Clone, Default)]
pub struct ExportTable {
    by_id: Arc<RwLock<HashMap<u64, Entry>>>,
}

/// An export and the connections using it.
#[derive(Debug)]
struct Entry {
    export: Arc<Export>,
    users: Arc<Users>,
}

impl ExportTable {
    /// An empty table.
    pub fn new() -> ExportTable {
        ExportTable::default()
    }

    /// Checks and adds an export; its clients may mount it at once.
    pub fn add(&self, config: &ExportConfig) -> Result<Arc<Export>, ExportError> {
        let spec = ExportSpec::check(config, "export")?;
        self.add_checked(spec)
    }

    /// Adds an export that was checked already (e.g. from [`super::NfsSettings`]).
    pub fn add_checked(&self, spec: ExportSpec) -> Result<Arc<Export>, ExportError> {
        let name = spec.name().to_string();
        let dir = spec.dir().display().to_string();
        let export = Arc::new(Export::open(spec).map_err(|e| ExportError::Open(dir, e))?);
        let mut map = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = map.get(&export.id()) {
            let other = other.export.spec().name().to_string();
            return Err(if other == name {
                ExportError::Exists(name)
            } else {
                ExportError::IdClash(name, other)
            });
        }
        map.insert(
            export.id(),
            Entry {
                export: Arc::clone(&export),
                users: Arc::default(),
            },
        );
        let spec = export.spec();
        tracing::info!(
            "nfs: exporting {name} = {} ({:?}{}{})",
            spec.dir().display(),
            spec.access(),
            if spec.root_squash() {
                ", root squashed"
            } else {
                ""
            },
            if spec.allows_everyone() {
                ", every network"
            } else {
                ""
            },
        );
        Ok(export)
    }

    /// Removes the export called `name` and closes every connection that used it; returns
    /// whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self
            .by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&export_id(name));
        match removed {
            Some(entry) => {
                let closed = entry.users.close_all();
                tracing::info!("nfs: no longer exporting {name}, closing its {closed} connections");
                true
            }
            None => false,
        }
    }

    /// The export with this id.
    pub fn get(&self, id: u64) -> Option<Arc<Export>> {
        self.read().get(&id).map(|e| Arc::clone(&e.export))
    }

    /// Records that `conn` uses `export` (so removing the export closes it); `false` if the
    /// export is no longer in the table.
    pub fn attach(&self, export: &Arc<Export>, conn: &Connection) -> bool {
        if conn.uses(export) {
            return true;
        }
        let users = match self.read().get(&export.id()) {
            Some(e) if Arc::ptr_eq(&e.export, export) => Arc::clone(&e.users),
            _ => return false,
        };
        users.register(export, conn)
    }

    /// Connections using the export called `name` (see [`ExportTable::attach`]).
    pub fn connections(&self, name: &str) -> Option<usize> {
        self.read().get(&export_id(name)).map(|e| e.users.count())
    }

    /// The export whose name is `path` or a prefix of it (by whole components), with the rest.
    pub fn find_by_path<'p>(&self, path: &'p str) -> Option<(Arc<Export>, &'p str)> {
        self.read()
            .values()
            .filter_map(|e| {
                let rest = path.strip_prefix(e.export.spec().name())?;
                (rest.is_empty() || rest.starts_with('/')).then(|| (Arc::clone(&e.export), rest))
            })
            .max_by_key(|(e, _)| e.spec().name().len())
    }

    /// Names of all exports, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .read()
            .values()
            .map(|e| e.export.spec().name().to_string())
            .collect();
        v.sort();
        v
    }

    /// All exports (for the MOUNT EXPORT listing).
    pub fn all(&self) -> Vec<Arc<Export>> {
        let mut v: Vec<Arc<Export>> = self
            .read()
            .values()
            .map(|e| Arc::clone(&e.export))
            .collect();
        v.sort_by(|a, b| a.spec().name().cmp(b.spec().name()));
        v
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Entry>> {
        self.by_id.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_find_remove() {
        let d = tempfile::tempdir().unwrap();
        let t = ExportTable::new();
        let spec =
            |s: &str| ExportConfig::parse_spec(&format!("{s}={}", d.path().display())).unwrap();
        let a = t.add(&spec("/jobs")).unwrap();
        t.add(&spec("/jobs/42")).unwrap();
        assert!(matches!(t.add(&spec("/jobs")), Err(ExportError::Exists(_))));
        let (e, rest) = t.find_by_path("/jobs/42/usr").unwrap();
        assert_eq!((e.spec().name(), rest), ("/jobs/42", "/usr"));
        let (e, rest) = t.find_by_path("/jobs/420").unwrap();
        assert_eq!((e.spec().name(), rest), ("/jobs", "/420"));
        assert!(t.find_by_path("/job").is_none());
        assert!(t.get(a.id()).is_some());
        assert!(t.remove("/jobs"));
        assert!(!t.remove("/jobs"));
        assert!(t.get(a.id()).is_none());
        assert_eq!(t.names(), vec!["/jobs/42".to_string()]);
    }

    #[test]
    fn removing_an_export_closes_the_connections_that_used_it() {
        let d = tempfile::tempdir().unwrap();
        let t = ExportTable::new();
        let handle = t.clone();
        let spec =
            |s: &str| ExportConfig::parse_spec(&format!("{s}={}", d.path().display())).unwrap();
        let a = t.add(&spec("/a")).unwrap();
        let b = t.add(&spec("/b")).unwrap();
        let peer = "127.0.0.1:700".parse().unwrap();
        let (on_a, on_b, idle) = (
            Connection::new(peer),
            Connection::new(peer),
            Connection::new(peer),
        );
        assert!(t.attach(&a, &on_a));
        assert!(t.attach(&a, &on_a), "attaching twice is a no-op");
        assert!(t.attach(&b, &on_b));
        assert_eq!(t.connections("/a"), Some(1));

        // The clone is the same table.
        assert!(handle.remove("/a"));
        assert!(on_a.closed().is_cancelled());
        assert!(!on_b.closed().is_cancelled() && !idle.closed().is_cancelled());
        assert!(!t.attach(&a, &idle), "a removed export takes no new users");
        assert!(!idle.closed().is_cancelled());

        // A connection that ends forgets its registrations.
        drop(on_b);
        assert_eq!(t.connections("/b"), Some(0));
        // The same name added again is a new export: old handles' users are not carried over.
        let a2 = t.add(&spec("/a")).unwrap();
        assert!(!t.attach(&a, &idle));
        assert!(t.attach(&a2, &idle));
    }
}
