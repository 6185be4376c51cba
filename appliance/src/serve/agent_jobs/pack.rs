//! The overlay packed as the tarball the agent fetches (modes kept, owner root).

use super::*;

/// Packs the overlay directory `root` (its `lava-<job>` tree) into the gzipped tarball `out`:
/// entries relative to `root` (so `tar -C /` puts them at `/lava-<job>`), modes kept, owned by
/// root, symlinks as symlinks. Written through a temporary file; the tarball's size.
pub(super) fn pack_overlay(root: &Path, out: &Path) -> dispatcher::Result<u64> {
    let part = out.with_extension("gz.part");
    let err =
        |e: std::io::Error| Error::infra(format!("pack the overlay into {}: {e}", out.display()));
    let written = (|| -> std::io::Result<()> {
        let file = File::create(&part)?;
        let gz =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        add_tree(&mut tar, root, Path::new(""))?;
        let gz = tar.into_inner()?;
        let mut w = gz.finish()?;
        w.flush()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(err(e));
    }
    std::fs::rename(&part, out).map_err(err)?;
    std::fs::metadata(out).map(|m| m.len()).map_err(err)
}

/// Appends the entries under `root/rel`, sorted by name, depth first.
pub(super) fn add_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(rel);
    let mut entries = std::fs::read_dir(&dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        h.set_mode(meta.permissions().mode() & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        if ft.is_dir() {
            h.set_size(0);
            tar.append_data(&mut h, &name, std::io::empty())?;
            add_tree(tar, root, &name)?;
        } else if ft.is_symlink() {
            h.set_size(0);
            let target = std::fs::read_link(&path)?;
            tar.append_link(&mut h, &name, &target)?;
        } else if ft.is_file() {
            h.set_size(meta.len());
            tar.append_data(&mut h, &name, File::open(&path)?)?;
        } else {
            tracing::warn!(
                "overlay: {} is not a file, directory or symlink: left out",
                path.display()
            );
        }
    }
    Ok(())
}
