//! Where served files come from: the [`Resolver`] trait and two implementations.
//!
//! The server knows nothing of boards or jobs; it asks a resolver for the content of a confined
//! [`RequestPath`] on behalf of a client address. [`DirResolver`] serves a directory tree;
//! [`VirtualResolver`] answers some names from closures (e.g. `labboot/<board_id>/boot.scr`
//! rendered from the board's state at request time) and passes the rest to a fallback.
//!
//! The trait is synchronous: opening a file is blocking I/O anyway, and the server calls
//! resolvers on tokio's blocking pool, so many opens run in parallel and a slow one never holds
//! up another transfer (async-tftp serialises them behind a mutex).

use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::content::Content;
use super::error::TftpError;
use super::path::RequestPath;

/// Finds the content of a requested file.
pub trait Resolver: Send + Sync + 'static {
    /// Opens `path` for `client`. Called on a blocking thread; may block.
    fn open(&self, client: SocketAddr, path: &RequestPath) -> Result<Content, TftpError>;
}

impl<R: Resolver + ?Sized> Resolver for Arc<R> {
    fn open(&self, client: SocketAddr, path: &RequestPath) -> Result<Content, TftpError> {
        (**self).open(client, path)
    }
}

/// Serves regular files under one directory; nothing outside it, even through symlinks.
#[derive(Debug, Clone)]
pub struct DirResolver {
    root: PathBuf,
}

impl DirResolver {
    /// Serves the tree under `root`, which must exist (it is canonicalised now).
    pub fn new(root: impl AsRef<Path>) -> io::Result<DirResolver> {
        let root = root.as_ref();
        let canonical = root
            .canonicalize()
            .map_err(|e| io::Error::new(e.kind(), format!("tftp root {}: {e}", root.display())))?;
        if !canonical.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tftp root {} is not a directory", root.display()),
            ));
        }
        Ok(DirResolver { root: canonical })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Resolver for DirResolver {
    fn open(&self, client: SocketAddr, path: &RequestPath) -> Result<Content, TftpError> {
        let file = open_confined(&self.root, path, client)?;
        Content::from_file(file).map_err(|_| {
            TftpError::access_violation(format!("{}: not a regular file", path.shown()))
        })
    }
}

/// Opens `root/path` read-only and checks that the file actually opened lies under `root`.
///
/// The check is made on the open descriptor (`/proc/self/fd`), so a symlink swapped in between a
/// check and the open cannot redirect the read. `O_NONBLOCK` keeps a FIFO from hanging the open.
pub(crate) fn open_confined(
    root: &Path,
    path: &RequestPath,
    client: SocketAddr,
) -> Result<File, TftpError> {
    let full = root.join(path.to_relative_path());
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&full)
        .map_err(|e| TftpError::from_io(path.as_str(), &e))?;
    let real = real_path(&file, &full).map_err(|e| TftpError::from_io(path.as_str(), &e))?;
    if !real.starts_with(root) {
        tracing::warn!(
            %client,
            path = %path.shown(),
            target = %real.display(),
            "tftp: refused a path that leaves the root through a symlink"
        );
        return Err(TftpError::access_violation(format!(
            "{}: leaves the served directory",
            path.shown()
        )));
    }
    Ok(file)
}

/// Where an open file really is.
fn real_path(file: &File, opened_as: &Path) -> io::Result<PathBuf> {
    match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(p) => Ok(p),
        // Without /proc, fall back to resolving the name (racy, but still confining).
        Err(_) => opened_as.canonicalize(),
    }
}

/// A generator: `Some(result)` if it owns the name, `None` to let the next one try.
type Generator =
    dyn Fn(SocketAddr, &RequestPath) -> Option<Result<Content, TftpError>> + Send + Sync;

/// Serves some names from memory or closures, everything else from a fallback resolver.
///
/// ```
/// use netboot::tftp::{Content, DirResolver, VirtualResolver};
/// # let dir = tempfile::tempdir().unwrap();
/// let resolver = VirtualResolver::new()
///     .with_file("hello.txt", b"hi\n".to_vec())
///     .with_generator(|client, path| {
///         let parts: Vec<&str> = path.components().collect();
///         match parts.as_slice() {
///             ["labboot", board, "boot.scr"] => {
///                 Some(Ok(Content::from_bytes(format!("echo {board} from {client}\n").into_bytes())))
///             }
///             _ => None,
///         }
///     })
///     .with_fallback(DirResolver::new(dir.path()).unwrap());
/// # let _ = resolver;
/// ```
#[derive(Default)]
pub struct VirtualResolver {
    generators: Vec<Box<Generator>>,
    fallback: Option<Arc<dyn Resolver>>,
}

impl VirtualResolver {
    /// A resolver with no names and no fallback (every request is "file not found").
    pub fn new() -> VirtualResolver {
        VirtualResolver::default()
    }

    /// Serves `bytes` for the name `path` (after the same normalisation requests get).
    ///
    /// # Panics
    /// If `path` is not a valid request path (a programming error, not client input).
    pub fn with_file(self, path: &str, bytes: impl Into<Arc<[u8]>>) -> VirtualResolver {
        let name = RequestPath::parse(path)
            .unwrap_or_else(|e| panic!("virtual file name {path:?} is invalid: {e}"));
        let bytes: Arc<[u8]> = bytes.into();
        self.with_generator(move |_, p| {
            (*p == name).then(|| Ok(Content::from_bytes(Arc::clone(&bytes))))
        })
    }

    /// Adds a generator, tried after the ones added before it.
    pub fn with_generator<F>(mut self, f: F) -> VirtualResolver
    where
        F: Fn(SocketAddr, &RequestPath) -> Option<Result<Content, TftpError>>
            + Send
            + Sync
            + 'static,
    {
        self.generators.push(Box::new(f));
        self
    }

    /// Sends names no generator owns to `fallback`.
    pub fn with_fallback(mut self, fallback: impl Resolver) -> VirtualResolver {
        self.fallback = Some(Arc::new(fallback));
        self
    }
}

impl std::fmt::Debug for VirtualResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualResolver")
            .field("generators", &self.generators.len())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl Resolver for VirtualResolver {
    fn open(&self, client: SocketAddr, path: &RequestPath) -> Result<Content, TftpError> {
        for g in &self.generators {
            if let Some(result) = g(client, path) {
                return result;
            }
        }
        match &self.fallback {
            Some(f) => f.open(client, path),
            None => Err(TftpError::not_found(format!(
                "{}: file not found",
                path.shown()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::ErrorCode;

    fn client() -> SocketAddr {
        "127.0.0.1:1000".parse().unwrap()
    }

    fn p(s: &str) -> RequestPath {
        RequestPath::parse(s).unwrap()
    }

    #[test]
    fn dir_resolver_serves_files_and_refuses_escaping_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(root.path().join("sub/a.bin"), b"abc").unwrap();
        std::os::unix::fs::symlink("sub/a.bin", root.path().join("inside-link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("out-link"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out-dir")).unwrap();
        let r = DirResolver::new(root.path()).unwrap();

        let c = r.open(client(), &p("sub/a.bin")).unwrap();
        assert_eq!(c.read_all().unwrap(), b"abc");
        let c = r.open(client(), &p("inside-link")).unwrap();
        assert_eq!(c.read_all().unwrap(), b"abc");

        for bad in ["out-link", "out-dir/secret"] {
            let e = r.open(client(), &p(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::AccessViolation, "{bad}: {e}");
        }
        let e = r.open(client(), &p("missing")).unwrap_err();
        assert_eq!(e.code, ErrorCode::FileNotFound);
        let e = r.open(client(), &p("sub")).unwrap_err();
        assert_eq!(e.code, ErrorCode::AccessViolation);
    }

    #[test]
    fn dir_resolver_needs_an_existing_root() {
        let err = DirResolver::new("/nonexistent/labboot-root").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/labboot-root"),
            "{err}"
        );
    }

    #[test]
    fn virtual_resolver_generates_per_client_and_falls_back() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("kernel"), b"K").unwrap();
        let r = VirtualResolver::new()
            .with_file("/fixed.txt", b"fixed".to_vec())
            .with_generator(|client, path| {
                let parts: Vec<&str> = path.components().collect();
                match parts.as_slice() {
                    ["labboot", board, "boot.scr"] => Some(Ok(Content::from_bytes(
                        format!("{board}@{}", client.port()).into_bytes(),
                    ))),
                    _ => None,
                }
            })
            .with_fallback(DirResolver::new(root.path()).unwrap());
        let get = |c: SocketAddr, s: &str| r.open(c, &p(s)).map(|c| c.read_all().unwrap());
        assert_eq!(get(client(), "fixed.txt").unwrap(), b"fixed");
        assert_eq!(get(client(), "labboot/b7/boot.scr").unwrap(), b"b7@1000");
        let other: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        assert_eq!(get(other, "labboot/b7/boot.scr").unwrap(), b"b7@2000");
        assert_eq!(get(client(), "kernel").unwrap(), b"K");
        assert_eq!(
            get(client(), "nope").unwrap_err().code,
            ErrorCode::FileNotFound
        );
        assert_eq!(
            VirtualResolver::new()
                .open(client(), &p("x"))
                .unwrap_err()
                .code,
            ErrorCode::FileNotFound
        );
    }
}
