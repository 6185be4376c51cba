//! What the actions of one job hand to each other while it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::session::Session;
use crate::overlay::OverlayInfo;
use crate::services::NbdTarget;
use crate::testdef::ResolvedDefinition;

/// The job's working state.
#[derive(Default)]
pub struct State {
    /// Downloaded (and checked) files by artefact key.
    pub files: BTreeMap<String, PathBuf>,
    /// The directory published on TFTP (`<output>/tftp`).
    pub tftp_dir: PathBuf,
    /// The file name in the TFTP directory of each artefact the board fetches (`kernel`,
    /// `ramdisk`, `dtb`, `initrd`): the download, or its rebuilt version.
    pub tftp_names: BTreeMap<String, String>,
    /// The TFTP path prefix the board fetches the job's files under.
    pub tftp_prefix: Option<String>,
    /// The unpacked nfsrootfs.
    pub nfs_dir: Option<PathBuf>,
    /// The NFS export path of the nfsrootfs (`{NFSROOTFS}`).
    pub nfs_path: Option<String>,
    /// The job's NBD export.
    pub nbd: Option<NbdTarget>,
    /// The U-Boot boot command for the kernel (`bootz`, `booti`, `bootm`).
    pub bootcommand: Option<String>,
    /// Test definitions resolved so far, by (test block, definition index).
    pub definitions: BTreeMap<(usize, usize), ResolvedDefinition>,
    /// The written overlay (root directory and what the runner needs).
    pub overlay: Option<(PathBuf, OverlayInfo)>,
    /// The substituted bootloader commands.
    pub commands: Vec<String>,
    /// The open console.
    pub session: Option<Session>,
    /// Whether the board's network boot script was set (and must be cleared).
    pub boot_script_set: bool,
}
