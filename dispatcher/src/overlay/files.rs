//! Writing the overlay's files with exact modes, and copying a checkout into it.
//!
//! Modes are set explicitly (not left to the umask): the overlay is packed into a ramdisk or
//! copied into a root filesystem as it is, and the board must be able to run its scripts.
//! A copied checkout keeps its files' modes and its symlinks as symlinks (never followed: a
//! repository's link must not pull a file of the dispatcher host into the overlay).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::infra(format!("overlay: {what} {}: {e}", path.display()))
}

/// Creates `dir` (and its parents) with mode 0755.
pub fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(|e| io_err("chmod", dir, e))
}

/// Writes `path` with `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    fs::write(path, contents).map_err(|e| io_err("write", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("chmod", path, e))
}

/// Copies the tree `src` into the existing directory `dst`: files with their mode bits,
/// directories, symlinks as symlinks; other kinds (sockets, devices) are left out.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).map_err(|e| io_err("read", src, e))? {
        let entry = entry.map_err(|e| io_err("read", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(|e| io_err("stat", &from, e))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io_err("read link", &from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| io_err("link", &to, e))?;
        } else if kind.is_dir() {
            fs::create_dir_all(&to).map_err(|e| io_err("create", &to, e))?;
            copy_tree(&from, &to)?;
            let mode = meta.permissions().mode() & 0o7777 | 0o700;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err("chmod", &to, e))?;
        } else if kind.is_file() {
            fs::copy(&from, &to).map_err(|e| io_err("copy", &from, e))?;
            let mode = meta.permissions().mode() & 0o7777;
            fs::set_permissions(&to, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err("chmod", &to, e))?;
        }
    }
    Ok(())
}
