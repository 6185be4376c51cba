//! Where write requests land: one upload directory, separate from the served root.
//!
//! An upload is written to a hidden temporary file next to its destination and only appears under
//! its name once the last block arrived ([`Upload::commit`] hard-links it, which also refuses to
//! replace an existing file). An abandoned transfer leaves nothing behind: dropping an [`Upload`]
//! removes the temporary file. Names go through the same [`RequestPath`] confinement as reads;
//! the parent directory must already exist and must resolve inside the upload root.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::TftpError;
use super::path::RequestPath;

/// The directory write requests are stored in.
#[derive(Debug, Clone)]
pub struct UploadDir {
    root: PathBuf,
}

impl UploadDir {
    /// Accepts uploads under `root`, which must exist (it is canonicalised now).
    pub fn new(root: impl AsRef<Path>) -> io::Result<UploadDir> {
        let root = root.as_ref();
        let canonical = root.canonicalize().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("tftp upload root {}: {e}", root.display()),
            )
        })?;
        if !canonical.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tftp upload root {} is not a directory", root.display()),
            ));
        }
        Ok(UploadDir { root: canonical })
    }

    /// The canonical upload directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts an upload of `path` from `client` (blocking).
    pub fn create(&self, client: SocketAddr, path: &RequestPath) -> Result<Upload, TftpError> {
        let rel = path.to_relative_path();
        let dest = self.root.join(&rel);
        let parent = dest.parent().unwrap_or(&self.root);
        let real_parent = parent
            .canonicalize()
            .map_err(|e| TftpError::from_io(path.as_str(), &e))?;
        if !real_parent.starts_with(&self.root) {
            tracing::warn!(%client, path = %path.shown(), "tftp: refused an upload that leaves the upload root");
            return Err(TftpError::access_violation(format!(
                "{}: leaves the upload directory",
                path.shown()
            )));
        }
        let name = dest.file_name().ok_or_else(|| {
            TftpError::access_violation(format!("{}: no file name", path.shown()))
        })?;
        let dest = real_parent.join(name);
        if dest.symlink_metadata().is_ok() {
            return Err(TftpError::from_io(
                path.as_str(),
                &io::Error::from(io::ErrorKind::AlreadyExists),
            ));
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = real_parent.join(format!(
            ".{}.part-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| TftpError::from_io(path.as_str(), &e))?;
        Ok(Upload {
            file: Some(file),
            tmp,
            dest,
            committed: false,
        })
    }
}

/// An upload in progress: a temporary file that becomes the destination on commit.
#[derive(Debug)]
pub struct Upload {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Upload {
    /// Appends bytes (blocking).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::other("upload already committed")),
        }
    }

    /// Flushes to disk and gives the file its name; fails if that name appeared meanwhile.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already committed"))?;
        file.sync_all()?;
        drop(file);
        std::fs::hard_link(&self.tmp, &self.dest)?;
        self.committed = true;
        let _ = std::fs::remove_file(&self.tmp);
        Ok(self.dest.clone())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::ErrorCode;

    fn client() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn upload_appears_only_on_commit_and_never_clobbers() {
        let d = tempfile::tempdir().unwrap();
        let up = UploadDir::new(d.path()).unwrap();
        let p = RequestPath::parse("log.txt").unwrap();
        let mut u = up.create(client(), &p).unwrap();
        u.write(b"hello").unwrap();
        assert!(!d.path().join("log.txt").exists());
        let dest = u.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        let e = up.create(client(), &p).unwrap_err();
        assert_eq!(e.code, ErrorCode::FileExists);
    }

    #[test]
    fn dropped_upload_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let up = UploadDir::new(d.path()).unwrap();
        let mut u = up
            .create(client(), &RequestPath::parse("x").unwrap())
            .unwrap();
        u.write(b"partial").unwrap();
        drop(u);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn uploads_cannot_leave_through_symlinked_dirs() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("out")).unwrap();
        let up = UploadDir::new(d.path()).unwrap();
        let e = up
            .create(client(), &RequestPath::parse("out/evil").unwrap())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AccessViolation);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let e = up
            .create(client(), &RequestPath::parse("missing-dir/f").unwrap())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFound);
    }
}
