//! The export table: named exports that can be added and removed while the server runs.
//!
//! [`ExportTable`] is a cheap handle (clone it): the server holds one, the dispatcher another,
//! and both see the same exports. Removing an export cancels a token that every connection using
//! it watches, so those connections close at once (in-flight requests are abandoned); new
//! handshakes no longer see it. The lock is a std `RwLock` held only to look up or swap an
//! entry, never across I/O or an `.await`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use super::export::Export;
use super::handshake::{Catalog, ExportInfo};

/// Named exports shared between the server and whoever changes them at run time.
#[derive(Debug, Clone, Default)]
pub struct ExportTable {
    entries: Arc<RwLock<BTreeMap<String, Arc<Entry>>>>,
}

#[derive(Debug)]
struct Entry {
    export: Arc<Export>,
    removed: CancellationToken,
    connections: AtomicUsize,
}

/// An export name already present in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("export {0:?} already exists")]
pub struct AlreadyExists(pub String);

impl ExportTable {
    /// An empty table.
    pub fn new() -> ExportTable {
        ExportTable::default()
    }

    /// Adds an export under its name; fails if the name is taken.
    pub fn add(&self, export: Export) -> Result<(), AlreadyExists> {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(export.name()) {
            return Err(AlreadyExists(export.name().to_owned()));
        }
        let name = export.name().to_owned();
        tracing::info!(
            "nbd: export {name:?} added ({}, {}, {} bytes)",
            export.path().display(),
            export.mode(),
            export.size()
        );
        entries.insert(
            name,
            Arc::new(Entry {
                export: Arc::new(export),
                removed: CancellationToken::new(),
                connections: AtomicUsize::new(0),
            }),
        );
        Ok(())
    }

    /// Removes an export and closes every connection using it; returns it if it existed.
    pub fn remove(&self, name: &str) -> Option<Arc<Export>> {
        let entry = self
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)?;
        let open = entry.connections.load(Ordering::SeqCst);
        tracing::info!("nbd: export {name:?} removed, closing its {open} connections");
        entry.removed.cancel();
        Some(Arc::clone(&entry.export))
    }

    /// The export called `name`, if present.
    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        self.entry(name).map(|e| Arc::clone(&e.export))
    }

    /// Names of all exports, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Connections currently in transmission on the export `name`.
    pub fn connections(&self, name: &str) -> Option<usize> {
        self.entry(name)
            .map(|e| e.connections.load(Ordering::SeqCst))
    }

    /// The table as a client at `ip` sees it during the handshake.
    pub fn catalog(&self, ip: IpAddr) -> ClientView<'_> {
        ClientView { table: self, ip }
    }

    /// Attaches a connection from `ip` to `name`: the export, a token cancelled when it is
    /// removed, and a guard that counts the connection until dropped.
    pub fn attach(&self, name: &str, ip: IpAddr) -> Option<Attachment> {
        let entry = self.entry(name).filter(|e| e.export.allows(ip))?;
        entry.connections.fetch_add(1, Ordering::SeqCst);
        Some(Attachment { entry })
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's hold on an export; dropping it uncounts the connection.
#[derive(Debug)]
pub struct Attachment {
    entry: Arc<Entry>,
}

impl Attachment {
    /// The export.
    pub fn export(&self) -> &Arc<Export> {
        &self.entry.export
    }
    /// Cancelled when the export is removed from the table.
    pub fn removed(&self) -> &CancellationToken {
        &self.entry.removed
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.entry.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The exports one client may see: those whose allow list admits its address.
#[derive(Debug)]
pub struct ClientView<'a> {
    table: &'a ExportTable,
    ip: IpAddr,
}

impl Catalog for ClientView<'_> {
    fn names(&self) -> Vec<String> {
        self.table
            .read()
            .iter()
            .filter(|(_, e)| e.export.allows(self.ip))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn info(&self, name: &str) -> Option<ExportInfo> {
        self.table
            .entry(name)
            .filter(|e| e.export.allows(self.ip))
            .map(|e| e.export.info())
    }
}

#[cfg(test)]
mod tests {
    use super::super::export::ExportMode;
    use super::*;

    #[test]
    fn add_remove_attach_and_restrict() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), [1u8; 512]).unwrap();
        let table = ExportTable::new();
        table
            .add(Export::open("a", f.path(), ExportMode::ReadOnly).unwrap())
            .unwrap();
        let restricted = Export::open("b", f.path(), ExportMode::CopyOnWrite)
            .unwrap()
            .with_allowed_clients(vec!["10.0.0.0/8".parse().unwrap()]);
        table.add(restricted).unwrap();
        assert_eq!(
            table.add(Export::open("a", f.path(), ExportMode::ReadOnly).unwrap()),
            Err(AlreadyExists("a".into()))
        );
        let local = table.catalog("127.0.0.1".parse().unwrap());
        assert_eq!(local.names(), vec!["a".to_string()]);
        assert!(local.info("b").is_none());
        let lab = table.catalog("10.9.8.7".parse().unwrap());
        assert_eq!(lab.names(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(lab.info("b").unwrap().size, 512);

        assert!(table.attach("b", "127.0.0.1".parse().unwrap()).is_none());
        let att = table.attach("a", "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(table.connections("a"), Some(1));
        assert!(!att.removed().is_cancelled());
        assert!(table.remove("a").is_some());
        assert!(att.removed().is_cancelled());
        assert!(table.remove("a").is_none());
        assert_eq!(table.names(), vec!["b".to_string()]);
        drop(att);
    }
}
