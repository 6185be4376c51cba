//! Exports and their backends: `ro` (the file read-only), `cow` (the file read-only plus a
//! per-connection [`Overlay`]) and `rw` (the file itself, FLUSH/FUA reaching the disk).
//!
//! An [`Export`] is the shared, named thing in the table; a [`Backend`] is one connection's view
//! of it ([`Export::connect`]): for `cow` it owns the connection's overlay, so dropping the
//! connection drops its writes. Backend calls block (pread/pwrite/fdatasync) and are made on
//! the connection's worker threads. Reads are spliced from the file into the socket where the
//! pages can be sent as they are ([`Backend::splice_plan`]), otherwise they go straight into
//! the reply buffer ([`Backend::read_append`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

pub use crate::common::ClientNet;

use super::handshake::ExportInfo;
use super::overlay::{Overlay, OverlayError, OverlayLimits, Piece};
use super::proto::{errno, *};

/// How an export treats writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportMode {
    /// Read-only: writes get EPERM.
    ReadOnly,
    /// Copy-on-write: writes go to a per-connection overlay, dropped on disconnect.
    CopyOnWrite,
    /// Read-write: writes reach the file.
    ReadWrite,
}

impl ExportMode {
    /// The spelling used on the command line and in YAML: `ro`, `cow` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportMode::ReadOnly => "ro",
            ExportMode::CopyOnWrite => "cow",
            ExportMode::ReadWrite => "rw",
        }
    }
}

impl fmt::Display for ExportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ro" => Ok(ExportMode::ReadOnly),
            "cow" => Ok(ExportMode::CopyOnWrite),
            "rw" => Ok(ExportMode::ReadWrite),
            other => Err(format!("unknown export mode {other:?} (ro, cow or rw)")),
        }
    }
}

/// A named file served over NBD.
#[derive(Debug)]
pub struct Export {
    name: String,
    path: PathBuf,
    mode: ExportMode,
    file: Arc<File>,
    size: u64,
    allow: Vec<ClientNet>,
    description: String,
}

impl Export {
    /// Opens `path` (read-only unless `mode` is `rw`) and takes its size now.
    pub fn open(name: &str, path: &Path, mode: ExportMode) -> io::Result<Export> {
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if name.len() > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "export names are at most 4096 bytes",
            ));
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(mode == ExportMode::ReadWrite)
            .open(path)
            .map_err(ctx)?;
        let meta = file.metadata().map_err(ctx)?;
        if meta.is_dir() {
            return Err(ctx(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        // Block devices report a zero length in their metadata; their end is their size.
        let size = file.seek(SeekFrom::End(0)).map_err(ctx)?;
        Ok(Export {
            name: name.to_owned(),
            path: path.to_owned(),
            mode,
            file: Arc::new(file),
            size,
            allow: Vec::new(),
            description: String::new(),
        })
    }

    /// Restricts the export to clients in `nets` (empty: every client).
    pub fn with_allowed_clients(mut self, nets: Vec<ClientNet>) -> Export {
        self.allow = nets;
        self
    }

    /// Sets the description shown by `nbdinfo --list`.
    pub fn with_description(mut self, text: impl Into<String>) -> Export {
        self.description = text.into();
        self
    }

    /// The export's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file served.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// How writes are treated.
    pub fn mode(&self) -> ExportMode {
        self.mode
    }
    /// Size in bytes, taken when the export was opened.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Clients allowed (empty: all).
    pub fn allowed_clients(&self) -> &[ClientNet] {
        &self.allow
    }

    /// Whether a client at `ip` may see and use this export.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip))
    }

    /// Transmission flags advertised for this export.
    pub fn flags(&self) -> u16 {
        let base = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_CACHE;
        match self.mode {
            ExportMode::ReadOnly => base | TF_READ_ONLY | TF_CAN_MULTI_CONN,
            // Every connection has its own overlay: connections do not see each other's writes.
            ExportMode::CopyOnWrite => base | TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES,
            // One file, and FLUSH is fdatasync of that file: a flush covers every connection.
            ExportMode::ReadWrite => {
                base | TF_SEND_FUA | TF_SEND_TRIM | TF_SEND_WRITE_ZEROES | TF_CAN_MULTI_CONN
            }
        }
    }

    /// What the handshake tells clients.
    pub fn info(&self) -> ExportInfo {
        ExportInfo {
            size: self.size,
            flags: self.flags(),
            description: self.description.clone(),
        }
    }

    /// One connection's view; a `cow` view gets a fresh overlay bounded by `limits`.
    pub fn connect(&self, limits: &OverlayLimits) -> Backend {
        Backend {
            file: Arc::clone(&self.file),
            size: self.size,
            mode: self.mode,
            overlay: (self.mode == ExportMode::CopyOnWrite)
                .then(|| Mutex::new(Overlay::new(limits.clone()))),
        }
    }
}

/// A failed operation, as the client sees it: an NBD error number and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (errno {errno})")]
pub struct OpError {
    /// Error number sent to the client (`proto::errno`).
    pub errno: u32,
    /// What went wrong.
    pub message: String,
}

impl OpError {
    /// An error with this number and message.
    pub fn new(errno: u32, message: impl Into<String>) -> OpError {
        OpError {
            errno,
            message: message.into(),
        }
    }

    pub(super) fn io(what: &str, e: &io::Error) -> OpError {
        let n = match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => errno::ENOSPC,
            Some(libc::ENOMEM) => errno::ENOMEM,
            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS) => errno::EPERM,
            _ => errno::EIO,
        };
        OpError::new(n, format!("{what}: {e}"))
    }
}

impl From<OverlayError> for OpError {
    fn from(e: OverlayError) -> OpError {
        match e {
            OverlayError::Full(full) => OpError::new(errno::ENOSPC, full.to_string()),
            OverlayError::Io(e) => OpError::io("overlay", &e),
        }
    }
}

/// One connection's view of an export; its methods block.
#[derive(Debug)]
pub struct Backend {
    file: Arc<File>,
    size: u64,
    mode: ExportMode,
    overlay: Option<Mutex<Overlay>>,
}

impl Backend {
    /// Export size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How writes are treated.
    pub fn mode(&self) -> ExportMode {
        self.mode
    }

    /// Appends `len` bytes read at `offset` to `buf`, reading the file straight into `buf`'s
    /// spare capacity. The range must lie inside the export (the dispatcher checks it).
    pub fn read_append(&self, offset: u64, len: usize, buf: &mut BytesMut) -> Result<(), OpError> {
        let start = buf.len();
        buf.reserve(len);
        let spare = &mut buf.spare_capacity_mut()[..len];
        let mut done = 0usize;
        while done < len {
            // SAFETY: the pointer and length describe the writable spare capacity of `buf`
            // (`spare[done..]`); pread writes at most that many bytes and reads none.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare[done..].as_mut_ptr().cast(),
                    len - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(OpError::io("read", &e));
            }
            if n == 0 {
                return Err(OpError::new(
                    errno::EIO,
                    format!("read: file ends before {}", offset + done as u64),
                ));
            }
            done += n as usize;
        }
        // SAFETY: pread initialised all `len` bytes after `start` (the loop only exits when
        // `done == len`), and `reserve` made room for them.
        unsafe { buf.set_len(start + len) };
        if let Some(overlay) = &self.overlay {
            let overlay = lock(overlay);
            overlay
                .patch(offset, &mut buf[start..])
                .map_err(|e| OpError::io("overlay", &e))?;
        }
        Ok(())
    }

    /// Plans a read of `len` bytes at `offset` whose reply refers to page-cache pages instead of
    /// a copy: the file, and in `pieces` the runs to take from it, with the runs a `cow`
    /// overlay replaces copied to `dirty`. `None` for `rw` exports: their pages can change under
    /// a reply still queued in the socket, so their reads are copied out with
    /// [`Self::read_append`]. The range must lie inside the export.
    pub fn splice_plan(
        &self,
        offset: u64,
        len: u64,
        pieces: &mut Vec<Piece>,
        dirty: &mut Vec<u8>,
    ) -> Result<Option<BorrowedFd<'_>>, OpError> {
        match (self.mode, &self.overlay) {
            (ExportMode::ReadOnly, _) => pieces.push(Piece::Base { offset, len }),
            (ExportMode::CopyOnWrite, Some(overlay)) => lock(overlay)
                .pieces(offset, len, pieces, dirty)
                .map_err(|e| OpError::io("overlay", &e))?,
            _ => return Ok(None),
        }
        Ok(Some(self.file.as_fd()))
    }

    /// Writes `data` at `offset`; `fua` makes it durable before returning.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), OpError> {
        match self.mode {
            ExportMode::ReadOnly => Err(read_only()),
            ExportMode::CopyOnWrite => {
                let base = |at: u64, block: &mut [u8]| self.read_base(at, block);
                lock(self.overlay()?).write(offset, data, &base)?;
                Ok(())
            }
            ExportMode::ReadWrite => {
                self.file
                    .write_all_at(data, offset)
                    .map_err(|e| OpError::io("write", &e))?;
                if fua {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Makes completed writes durable (fdatasync for `rw`; nothing to do otherwise).
    pub fn flush(&self) -> Result<(), OpError> {
        if self.mode == ExportMode::ReadWrite {
            self.file
                .sync_data()
                .map_err(|e| OpError::io("fdatasync", &e))?;
        }
        Ok(())
    }

    /// Discards a range: a hole in `rw` files (best effort), zeroes in a `cow` overlay.
    pub fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), OpError> {
        match self.mode {
            ExportMode::ReadOnly => Err(read_only()),
            ExportMode::CopyOnWrite => self.zero_overlay(offset, len),
            ExportMode::ReadWrite => {
                // TRIM is advisory: a file system without hole punching just keeps the bytes.
                let _ = self.fallocate(
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    len,
                );
                if fua {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Zeroes a range; without `no_hole` an `rw` file may get a hole instead of written zeroes.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), OpError> {
        match self.mode {
            ExportMode::ReadOnly => Err(read_only()),
            ExportMode::CopyOnWrite => self.zero_overlay(offset, len),
            ExportMode::ReadWrite => {
                let punched = !no_hole
                    && self
                        .fallocate(
                            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                            offset,
                            len,
                        )
                        .is_ok();
                if !punched
                    && self
                        .fallocate(libc::FALLOC_FL_ZERO_RANGE, offset, len)
                        .is_err()
                {
                    let zeroes = vec![0u8; len.min(1 << 20) as usize];
                    let mut at = offset;
                    while at < offset + len {
                        let n = (offset + len - at).min(zeroes.len() as u64) as usize;
                        self.file
                            .write_all_at(&zeroes[..n], at)
                            .map_err(|e| OpError::io("write zeroes", &e))?;
                        at += n as u64;
                    }
                }
                if fua {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Asks the kernel to read a range into the page cache.
    pub fn cache(&self, offset: u64, len: u64) -> Result<(), OpError> {
        // SAFETY: posix_fadvise only takes a descriptor we own and two integers.
        let rc = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        if rc != 0 {
            return Err(OpError::io("fadvise", &io::Error::from_raw_os_error(rc)));
        }
        Ok(())
    }

    /// Bytes the `cow` overlay holds in memory and in its spill file.
    pub fn overlay_usage(&self) -> Option<(u64, u64)> {
        self.overlay.as_ref().map(|o| lock(o).usage())
    }

    fn overlay(&self) -> Result<&Mutex<Overlay>, OpError> {
        self.overlay
            .as_ref()
            .ok_or_else(|| OpError::new(errno::EIO, "copy-on-write export without overlay"))
    }

    fn zero_overlay(&self, offset: u64, len: u64) -> Result<(), OpError> {
        let base = |at: u64, block: &mut [u8]| self.read_base(at, block);
        lock(self.overlay()?).zero(offset, len, &base)?;
        Ok(())
    }

    /// Reads a base block for the overlay; bytes past the end of the export read as zeroes.
    fn read_base(&self, offset: u64, block: &mut [u8]) -> io::Result<()> {
        let avail = self.size.saturating_sub(offset).min(block.len() as u64) as usize;
        self.file.read_exact_at(&mut block[..avail], offset)?;
        block[avail..].fill(0);
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate only takes a descriptor we own and integers.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn read_only() -> OpError {
    OpError::new(errno::EPERM, "export is read-only")
}

/// Locks an overlay; a panic while holding the lock cannot leave it half-updated in a way that
/// matters more than the connection it belongs to, so poisoning is ignored.
fn lock(m: &Mutex<Overlay>) -> std::sync::MutexGuard<'_, Overlay> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> OverlayLimits {
        OverlayLimits {
            memory: 1 << 20,
            total: 2 << 20,
            spill_dir: None,
        }
    }

    fn image(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &data).unwrap();
        (f, data)
    }

    #[test]
    fn modes_parse_and_flags_follow_them() {
        assert_eq!("cow".parse::<ExportMode>(), Ok(ExportMode::CopyOnWrite));
        assert!("rx"
            .parse::<ExportMode>()
            .unwrap_err()
            .contains("ro, cow or rw"));
        let (f, _) = image(10_000);
        let ro = Export::open("m", f.path(), ExportMode::ReadOnly).unwrap();
        assert_eq!(ro.size(), 10_000);
        assert_eq!(ro.flags(), 0x0001 | 0x0002 | 0x0004 | 0x0100 | 0x0400);
        let cow = Export::open("m", f.path(), ExportMode::CopyOnWrite).unwrap();
        assert_eq!(cow.flags() & TF_CAN_MULTI_CONN, 0);
        assert_eq!(cow.flags() & TF_READ_ONLY, 0);
        let rw = Export::open("m", f.path(), ExportMode::ReadWrite).unwrap();
        assert_ne!(rw.flags() & TF_CAN_MULTI_CONN, 0);
    }

    #[test]
    fn ro_refuses_writes_and_cow_keeps_them_per_connection() {
        let (f, data) = image(3 * 4096 + 17);
        let ro = Export::open("m", f.path(), ExportMode::ReadOnly)
            .unwrap()
            .connect(&limits());
        assert_eq!(ro.write(0, b"x", false).unwrap_err().errno, errno::EPERM);
        assert_eq!(ro.trim(0, 1, false).unwrap_err().errno, errno::EPERM);

        let export = Export::open("m", f.path(), ExportMode::CopyOnWrite).unwrap();
        let a = export.connect(&limits());
        a.write(4090, b"hello world", false).unwrap();
        a.write_zeroes(3 * 4096, 17, false, false).unwrap();
        let mut buf = BytesMut::from(&b"hdr"[..]);
        a.read_append(4088, 16, &mut buf).unwrap();
        assert_eq!(&buf[..3], b"hdr");
        assert_eq!(&buf[3..5], &data[4088..4090]);
        assert_eq!(&buf[5..16], b"hello world");
        assert_eq!(&buf[16..], &data[4101..4104]);
        let mut tail = BytesMut::new();
        a.read_append(3 * 4096, 17, &mut tail).unwrap();
        assert_eq!(&tail[..], &[0; 17]);
        // Another connection and the file itself are untouched.
        let b = export.connect(&limits());
        let mut other = BytesMut::new();
        b.read_append(0, data.len(), &mut other).unwrap();
        assert_eq!(&other[..], &data[..]);
        assert_eq!(std::fs::read(f.path()).unwrap(), data);
    }

    #[test]
    fn rw_writes_reach_the_file() {
        let (f, mut data) = image(64 * 1024);
        let rw = Export::open("m", f.path(), ExportMode::ReadWrite)
            .unwrap()
            .connect(&limits());
        rw.write(100, b"persist", true).unwrap();
        rw.write_zeroes(8192, 8192, true, false).unwrap();
        rw.trim(32768, 4096, false).unwrap();
        rw.flush().unwrap();
        rw.cache(0, 4096).unwrap();
        data[100..107].copy_from_slice(b"persist");
        data[8192..16384].fill(0);
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(on_disk[..32768], data[..32768]);
        assert_eq!(
            on_disk[32768..36864],
            [0; 4096],
            "trimmed range reads as zeroes"
        );
    }
}
