//! The dispatcher's one seam to labboot's servers.
//!
//! The dispatcher knows nothing of sockets and the servers know nothing of jobs: a job asks
//! through this trait for what it needs — its files on TFTP, an NFS or NBD export, the board's
//! network boot script — and gives it all back at the end. `labboot dispatch` implements it
//! with servers it starts in-process for one job; `labboot serve` with its long-running ones,
//! and it also lends the job the board's console, which it keeps open all the time.

use std::net::IpAddr;
use std::path::Path;

use crate::error::Result;

pub use crate::console::connection::{Chunk, ConsolePort};

/// How an NBD export treats writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdMode {
    /// Writes go to the image (a per-job copy).
    ReadWrite,
    /// Writes go to a per-connection overlay; the image is never changed.
    CopyOnWrite,
}

/// Where a board reaches an NBD export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdTarget {
    /// The server's address as boards see it.
    pub host: IpAddr,
    /// The server's TCP port.
    pub port: u16,
    /// The export name.
    pub name: String,
}

/// What a job needs from the lab's servers.
pub trait LabServices: Send + Sync {
    /// The address boards reach the servers at (`{SERVER_IP}`).
    fn server_ip(&self) -> IpAddr;
    /// Serves every file under `dir` on TFTP; returns the TFTP path prefix they appear under
    /// (a file `dir/zImage` is fetched as `<prefix>/zImage`).
    fn publish_tftp(&self, job_id: &str, dir: &Path) -> Result<String>;
    /// Exports `dir` read-write over NFS for this job; returns the export path (`{NFSROOTFS}`).
    fn add_nfs_export(&self, job_id: &str, dir: &Path) -> Result<String>;
    /// Exports `image` over NBD for this job.
    fn add_nbd_export(&self, job_id: &str, image: &Path, mode: NbdMode) -> Result<NbdTarget>;
    /// Sets (Some) or clears (None) the U-Boot script text board `board_id` fetches as
    /// `labboot/<board_id>/boot.scr` at its next power-on.
    fn set_boot_script(&self, board_id: &str, script: Option<&str>) -> Result<()>;
    /// Removes everything published for the job (TFTP files, exports); closes its connections.
    fn release(&self, job_id: &str) -> Result<()>;
    /// The console of the board job `job_id` runs on, when the lab keeps it open itself
    /// (`labboot serve`); `None` (the default) makes the job run the device's
    /// `connection_command` as before. Called again after a console is closed for a retry.
    fn console(&self, job_id: &str) -> Option<Result<Box<dyn ConsolePort>>> {
        let _ = job_id;
        None
    }
}
