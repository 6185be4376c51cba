//! The export table: which directories are served, changed while the server runs.
//!
//! The dispatcher adds a per-job export before a job boots and removes it afterwards; calls in
//! flight keep their `Arc<Export>`, and every later call with one of its handles gets
//! `NFS3ERR_STALE`. Lookups are by name (MOUNT) and by id (every NFS call), under a read lock that
//! is held only for the map lookup.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, RwLock};

use super::config::{ExportConfig, ExportSpec};
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

/// The exports served, shared between the server and whoever manages them.
#[derive(Debug, Default)]
pub struct ExportTable {
    by_id: RwLock<HashMap<u64, Arc<Export>>>,
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
            let other = other.spec().name().to_string();
            return Err(if other == name {
                ExportError::Exists(name)
            } else {
                ExportError::IdClash(name, other)
            });
        }
        map.insert(export.id(), Arc::clone(&export));
        tracing::info!(
            "nfs: exporting {name} = {} ({:?})",
            export.spec().dir().display(),
            export.spec().access()
        );
        Ok(export)
    }

    /// Removes the export called `name`; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        let removed = self
            .by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&export_id(name))
            .is_some();
        if removed {
            tracing::info!("nfs: no longer exporting {name}");
        }
        removed
    }

    /// The export with this id.
    pub fn get(&self, id: u64) -> Option<Arc<Export>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// The export whose name is `path` or a prefix of it (by whole components), with the rest.
    pub fn find_by_path<'p>(&self, path: &'p str) -> Option<(Arc<Export>, &'p str)> {
        let map = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter_map(|e| {
                let rest = path.strip_prefix(e.spec().name())?;
                (rest.is_empty() || rest.starts_with('/')).then(|| (Arc::clone(e), rest))
            })
            .max_by_key(|(e, _)| e.spec().name().len())
    }

    /// Names of all exports, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.spec().name().to_string())
            .collect();
        v.sort();
        v
    }

    /// All exports (for the MOUNT EXPORT listing).
    pub fn all(&self) -> Vec<Arc<Export>> {
        let mut v: Vec<Arc<Export>> = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.spec().name().cmp(b.spec().name()));
        v
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
}
