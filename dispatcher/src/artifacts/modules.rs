//! Installing the job's `modules` tarball (usually `lib/modules/<version>/...`, as
//! `make modules_install INSTALL_MOD_PATH=...` lays it out) into the NFS root and the ramdisk.
//!
//! LAVA untars the modules into the unpacked NFS root and into the unpacked ramdisk (when
//! `install_modules` is not false). For an NFS root labboot does the same with
//! [`install_modules`]; a ramdisk is never unpacked here, so the modules go to a temporary
//! directory ([`unpack_modules`]) that [`super::ramdisk::rebuild_ramdisk`] then appends.
//! Either way a merged-/usr root's `lib -> usr/lib` symlink is kept and followed, so the
//! modules land in `usr/lib/modules`.

use std::path::Path;

use tempfile::TempDir;

use crate::artifacts::rootfs::unpack_tar;
use crate::error::{Error, Result};
use crate::job::model::Compression;

/// Unpacks the modules tarball `archive` into the root tree `dest_root`, keeping owners,
/// modes and links as [`super::rootfs::unpack_rootfs`] does.
pub fn install_modules(
    archive: &Path,
    compression: Option<Compression>,
    dest_root: &Path,
) -> Result<()> {
    let what = format!("modules archive {}", archive.display());
    unpack_tar(archive, compression, None, dest_root, &what)
}

/// Unpacks the modules tarball into a new temporary directory under `work_dir`, for
/// [`super::ramdisk::RamdiskSpec::add`]; the directory is removed when the result is dropped.
pub fn unpack_modules(
    archive: &Path,
    compression: Option<Compression>,
    work_dir: &Path,
) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("modules-")
        .tempdir_in(work_dir)
        .map_err(|e| {
            Error::infra(format!(
                "creating a directory in {} for the modules: {e}",
                work_dir.display()
            ))
        })?;
    install_modules(archive, compression, dir.path())?;
    Ok(dir)
}
