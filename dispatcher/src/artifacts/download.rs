//! Fetching one artefact of a deploy block into a directory, as LAVA's download action does.
//!
//! Sources: `http://` and `https://` URLs (ureq with rustls), `file://` URLs and plain local
//! paths. The bytes stream to a hidden temporary file next to the final one while their
//! SHA-256 and MD5 are computed; only a complete download whose checksums match the job's is
//! renamed into place, so a half-written or wrong file is never seen under the final name.
//!
//! Decompression follows LAVA, which decompresses every artefact on download except the
//! ramdisk (kept compressed, since it is rebuilt and compressed again later). labboot also
//! keeps `nfsrootfs` and `modules` compressed: they are only ever unpacked, and
//! [`super::rootfs`] decompresses while unpacking, which saves writing a multi-gigabyte
//! tarball twice. Decompression runs after the checksum check, from the temporary file into
//! the final one, which loses the compression suffix (`zImage.gz` → `zImage`).
//!
//! Errors follow LAVA's classes: an artefact that does not exist, an HTTP 4xx, a bad checksum
//! or corrupt compressed data is the job's fault (JobError); a host that cannot be reached, a
//! timeout, a 5xx or a short transfer is the lab's (InfrastructureError). Every message names
//! the artefact's key and its URL.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::artifacts::checksum::{self, Hashes};
use crate::artifacts::decompress;
use crate::artifacts::progress::Progress;
use crate::error::{Error, Result};
use crate::job::model::{Artifact, Compression};

/// Bytes read per chunk (and per progress report).
const CHUNK: usize = 64 * 1024;

/// Limits of a download.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Longest wait to resolve the host and connect (LAVA: 60 s).
    pub connect_timeout: Duration,
    /// Longest wait for any single read, headers or body (LAVA: 60 s).
    pub read_timeout: Duration,
    /// When the whole download must be over (the action's deadline), if any.
    pub deadline: Option<Instant>,
    /// Set to stop the download (SIGINT, SIGTERM): it ends with a Canceled error.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            deadline: None,
            cancel: None,
        }
    }
}

/// A fetched artefact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The final file (decompressed, if [`Fetched::decompressed`] says so).
    pub path: PathBuf,
    /// Bytes fetched (as sent, compressed when the artefact is).
    pub size: u64,
    /// SHA-256 of the bytes fetched, lower-case hex.
    pub sha256: String,
    /// MD5 of the bytes fetched, lower-case hex.
    pub md5: String,
    /// The compression that was removed, if the file was decompressed.
    pub decompressed: Option<Compression>,
}

/// Whether [`fetch`] decompresses this artefact: it has a `compression` and is not a
/// `ramdisk` (LAVA keeps those compressed), `nfsrootfs` or `modules` (unpacked later, with
/// decompression on the fly).
pub fn decompressed_on_fetch(artifact: &Artifact) -> bool {
    artifact.compression.is_some()
        && !matches!(artifact.key.as_str(), "ramdisk" | "nfsrootfs" | "modules")
}

/// Fetches `artifact` into `dest_dir` with the default limits; see [`fetch_with`].
pub fn fetch(
    artifact: &Artifact,
    dest_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Fetched> {
    fetch_with(artifact, dest_dir, &FetchOptions::default(), progress)
}

/// Fetches `artifact` into `dest_dir/<file name of its URL>` (minus the compression suffix
/// when it is decompressed), checking its checksums, reporting progress after each chunk.
pub fn fetch_with(
    artifact: &Artifact,
    dest_dir: &Path,
    options: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Fetched> {
    let key = artifact.key.as_str();
    let url = artifact.url.as_str();
    let source = Source::parse(key, url)?;
    let name = file_name(key, url)?;
    let decompress = if decompressed_on_fetch(artifact) {
        artifact.compression
    } else {
        None
    };
    let final_name = match decompress {
        Some(c) => decompressed_name(&name, c),
        None => name.clone(),
    };
    std::fs::create_dir_all(dest_dir)
        .map_err(|e| Error::infra(format!("{key}: creating {}: {e}", dest_dir.display())))?;
    let final_path = dest_dir.join(&final_name);
    if final_path.is_dir() {
        return Err(Error::job(format!(
            "{key}: {} is a directory, not a file",
            final_path.display()
        )));
    }
    let part = |what: &str| {
        tempfile::Builder::new()
            .prefix(&format!(".{what}."))
            .suffix(".part")
            .tempfile_in(dest_dir)
            .map_err(|e| {
                Error::infra(format!(
                    "{key}: creating a file in {}: {e}",
                    dest_dir.display()
                ))
            })
    };
    let mut tmp = part(&name)?;

    check_limits(key, url, options)?;
    let (mut body, total) = source.open(key, url, options)?;
    let mut hashes = Hashes::new();
    let mut done = 0u64;
    let mut buf = vec![0u8; CHUNK];
    progress(Progress { done, total });
    loop {
        check_limits(key, url, options)?;
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(source.read_error(key, url, done, e)),
        };
        hashes.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::infra(format!("{key}: writing {}: {e}", tmp.path().display())))?;
        done += n as u64;
        progress(Progress { done, total });
    }
    drop(body);
    if let Some(total) = total {
        if total != done {
            return Err(Error::infra(format!(
                "{key}: {url} ended after {done} of {total} bytes"
            )));
        }
    }
    let digests = hashes.finish();
    checksum::verify_all(
        key,
        url,
        &digests,
        artifact.sha256.as_deref(),
        artifact.md5.as_deref(),
    )?;

    let mut fin = match decompress {
        None => tmp,
        Some(c) => {
            let mut out = part(&final_name)?;
            let tmp_path = tmp.path().to_path_buf();
            let file = tmp.as_file_mut();
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::infra(format!("{key}: {}: {e}", tmp_path.display())))?;
            let mut reader = decompress::reader(BufReader::with_capacity(1 << 20, &*file), Some(c));
            let mut writer = io::BufWriter::with_capacity(1 << 20, out.as_file_mut());
            decompress::copy(&mut reader, &mut WriteSide(&mut writer)).map_err(|e| {
                if e.get_ref().is_some_and(|i| i.is::<WriteFailed>()) {
                    Error::infra(format!("{key}: writing the decompressed {url}: {e}"))
                } else if e.raw_os_error().is_some() {
                    Error::infra(format!("{key}: reading {}: {e}", tmp_path.display()))
                } else {
                    Error::job(format!(
                        "{key}: {url} is not valid {} data: {e}",
                        c.as_str()
                    ))
                }
            })?;
            writer
                .flush()
                .map_err(|e| Error::infra(format!("{key}: writing the decompressed {url}: {e}")))?;
            drop(writer);
            out
        }
    };
    fin.as_file_mut()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::infra(format!("{key}: {}: {e}", fin.path().display())))?;
    fin.persist(&final_path).map_err(|e| {
        Error::infra(format!(
            "{key}: renaming to {}: {}",
            final_path.display(),
            e.error
        ))
    })?;
    tracing::debug!(
        "{key}: {url} saved as {} ({done} bytes)",
        final_path.display()
    );
    Ok(Fetched {
        path: final_path,
        size: done,
        sha256: digests.sha256,
        md5: digests.md5,
        decompressed: decompress,
    })
}

/// The name a download is saved under: the last segment of the URL's path (query and
/// fragment ignored), or of the local path.
pub fn file_name(key: &str, url: &str) -> Result<String> {
    let path = match url.split_once("://") {
        Some((_, rest)) => {
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            match rest.find('/') {
                Some(i) => &rest[i..],
                None => "",
            }
        }
        None => url,
    };
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::job(format!(
            "{key}: {url} names no file (a directory cannot be downloaded)"
        )));
    }
    Ok(name.to_string())
}

/// `name` without the suffix of `compression` (`.tgz`-style suffixes become `.tar`); left as
/// it is when it has none.
pub fn decompressed_name(name: &str, compression: Compression) -> String {
    if let Some((stem, ext)) = name.rsplit_once('.') {
        if !stem.is_empty() {
            let ext = ext.to_ascii_lowercase();
            if let Some(s) = decompress::suffixes(compression)
                .iter()
                .find(|s| **s == ext)
            {
                return if matches!(*s, "tgz" | "txz" | "tzst" | "tbz2") {
                    format!("{stem}.tar")
                } else {
                    stem.to_string()
                };
            }
        }
    }
    name.to_string()
}

/// Stops a download at its deadline or when canceled.
fn check_limits(key: &str, url: &str, options: &FetchOptions) -> Result<()> {
    if let Some(cancel) = &options.cancel {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::canceled(format!(
                "{key}: download of {url} canceled"
            )));
        }
    }
    if let Some(deadline) = options.deadline {
        if Instant::now() >= deadline {
            return Err(Error::infra(format!(
                "{key}: download of {url} did not finish in time"
            )));
        }
    }
    Ok(())
}

/// Where an artefact comes from.
enum Source {
    /// An http:// or https:// URL.
    Http,
    /// A local file (from a file:// URL or a plain path).
    Local(PathBuf),
}

impl Source {
    fn parse(key: &str, url: &str) -> Result<Source> {
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err(Error::job(format!("{key}: the url is empty")));
            }
            return Ok(Source::Local(PathBuf::from(url)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Ok(Source::Http),
            "file" => {
                let (host, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                if !(host.is_empty() || host == "localhost") {
                    return Err(Error::job(format!(
                        "{key}: {url}: a file:// URL must name a local file (no host)"
                    )));
                }
                let path = path.split(['?', '#']).next().unwrap_or("");
                Ok(Source::Local(percent_decode(path)))
            }
            other => Err(Error::job(format!(
                "{key}: {url}: unsupported URL scheme {other:?} (http, https, file or a path)"
            ))),
        }
    }

    /// Opens the source: the body and its size if known.
    fn open(
        &self,
        key: &str,
        url: &str,
        options: &FetchOptions,
    ) -> Result<(Box<dyn Read>, Option<u64>)> {
        match self {
            Source::Local(path) => {
                let file = File::open(path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => {
                        Error::job(format!("{key}: {} does not exist", path.display()))
                    }
                    io::ErrorKind::PermissionDenied => {
                        Error::job(format!("{key}: {} is not readable: {e}", path.display()))
                    }
                    _ => Error::infra(format!("{key}: opening {}: {e}", path.display())),
                })?;
                let meta = file
                    .metadata()
                    .map_err(|e| Error::infra(format!("{key}: {}: {e}", path.display())))?;
                if meta.is_dir() {
                    return Err(Error::job(format!(
                        "{key}: {} is a directory, not a file",
                        path.display()
                    )));
                }
                let size = meta.is_file().then_some(meta.len());
                Ok((Box::new(file), size))
            }
            Source::Http => http_get(key, url, options),
        }
    }

    /// The error for a failed read after `done` bytes.
    fn read_error(&self, key: &str, url: &str, done: u64, e: io::Error) -> Error {
        match self {
            Source::Local(path) => Error::infra(format!(
                "{key}: reading {} after {done} bytes: {e}",
                path.display()
            )),
            Source::Http => Error::infra(format!(
                "{key}: download of {url} failed after {done} bytes: {e}"
            )),
        }
    }
}

/// GETs `url`, following redirects; any status but 200 is an error naming it.
fn http_get(key: &str, url: &str, options: &FetchOptions) -> Result<(Box<dyn Read>, Option<u64>)> {
    let global = options
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()));
    let config = ureq::Agent::config_builder()
        .timeout_resolve(Some(options.connect_timeout))
        .timeout_connect(Some(options.connect_timeout))
        .timeout_per_read(Some(options.read_timeout))
        .timeout_global(global)
        .http_status_as_error(false)
        .user_agent(concat!("labboot-dispatcher/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent: ureq::Agent = config.into();
    let response = agent
        .get(url)
        .call()
        .map_err(|e| request_error(key, url, e))?;
    let status = response.status();
    if status != ureq::http::StatusCode::OK {
        let text = format!(
            "{key}: {url} returned {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let text = text.trim_end().to_string();
        return Err(if status.is_client_error() {
            Error::job(text)
        } else {
            Error::infra(text)
        });
    }
    let total = response.body().content_length();
    let reader = response.into_body().into_reader();
    Ok((Box::new(reader), total))
}

/// Classifies a failed request: a malformed URL is the job's; anything else (resolution,
/// connection, TLS, timeouts, redirects) the lab's.
fn request_error(key: &str, url: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::BadUri(detail) => Error::job(format!("{key}: bad URL {url}: {detail}")),
        ureq::Error::HostNotFound => {
            Error::infra(format!("{key}: cannot resolve the host of {url}"))
        }
        ureq::Error::Timeout(t) => Error::infra(format!("{key}: {url}: timed out ({t})")),
        ureq::Error::ConnectionFailed => {
            Error::infra(format!("{key}: cannot connect to the host of {url}"))
        }
        other => Error::infra(format!("{key}: {url}: {other}")),
    }
}

/// `%XX` escapes of a file:// path decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hexval(bytes[i + 1]), hexval(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Marks write errors while decompressing, to tell them from corrupt input.
#[derive(Debug)]
struct WriteFailed(io::Error);

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for WriteFailed {}

struct WriteSide<'a>(&'a mut dyn Write);

impl Write for WriteSide<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|e| io::Error::new(e.kind(), WriteFailed(e)))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0
            .flush()
            .map_err(|e| io::Error::new(e.kind(), WriteFailed(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        assert_eq!(file_name("k", "http://h/a/zImage").unwrap(), "zImage");
        assert_eq!(
            file_name("k", "https://h:8080/a/b.gz?x=1#f").unwrap(),
            "b.gz"
        );
        assert_eq!(file_name("k", "file:///srv/x.dtb").unwrap(), "x.dtb");
        assert_eq!(file_name("k", "/srv/images/Image").unwrap(), "Image");
        assert_eq!(file_name("k", "Image").unwrap(), "Image");
        for bad in ["http://h/dir/", "http://h", "file:///", "/srv/.."] {
            let e = file_name("kernel", bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::JobError, "{bad}");
            assert!(e.message.starts_with("kernel: "));
        }
    }

    #[test]
    fn decompressed_names() {
        assert_eq!(decompressed_name("zImage.gz", Compression::Gz), "zImage");
        assert_eq!(decompressed_name("Image", Compression::Gz), "Image");
        assert_eq!(decompressed_name("Image.img", Compression::Xz), "Image.img");
        assert_eq!(decompressed_name("root.tgz", Compression::Gz), "root.tar");
        assert_eq!(
            decompressed_name("root.tar.zst", Compression::Zstd),
            "root.tar"
        );
        assert_eq!(
            decompressed_name("root.tar.ZST", Compression::Zstd),
            "root.tar"
        );
        assert_eq!(decompressed_name(".xz", Compression::Xz), ".xz");
        assert_eq!(decompressed_name("a.bz2", Compression::Bz2), "a");
    }

    #[test]
    fn sources() {
        assert!(
            matches!(Source::parse("k", "/a/b"), Ok(Source::Local(p)) if p == Path::new("/a/b"))
        );
        assert!(
            matches!(Source::parse("k", "file:///a/b%20c"), Ok(Source::Local(p)) if p == Path::new("/a/b c"))
        );
        assert!(
            matches!(Source::parse("k", "file://localhost/a"), Ok(Source::Local(p)) if p == Path::new("/a"))
        );
        assert!(matches!(
            Source::parse("k", "HTTPS://h/a"),
            Ok(Source::Http)
        ));
        assert_eq!(
            Source::parse("k", "file://other/a").err().unwrap().kind,
            crate::ErrorKind::JobError
        );
        assert!(Source::parse("k", "scp://h/a")
            .err()
            .unwrap()
            .message
            .contains("unsupported"));
        assert!(Source::parse("k", "").is_err());
    }

    #[test]
    fn which_keys_are_decompressed() {
        let a = |key: &str, c| Artifact {
            key: key.into(),
            compression: c,
            ..Artifact::default()
        };
        assert!(decompressed_on_fetch(&a("kernel", Some(Compression::Gz))));
        assert!(decompressed_on_fetch(&a("dtb", Some(Compression::Xz))));
        assert!(decompressed_on_fetch(&a(
            "nbdroot",
            Some(Compression::Zstd)
        )));
        assert!(!decompressed_on_fetch(&a("kernel", None)));
        for key in ["ramdisk", "nfsrootfs", "modules"] {
            assert!(
                !decompressed_on_fetch(&a(key, Some(Compression::Gz))),
                "{key}"
            );
        }
    }
}
