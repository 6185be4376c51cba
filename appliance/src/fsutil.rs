//! File helpers shared by the commands: atomic output files and size arguments.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// An output file written under a temporary name and renamed into place on [`commit`], so a
/// failed or interrupted command never leaves a half-written file behind.
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file next to `dest`, `len` bytes long (sparse).
    pub fn create(dest: &Path, len: u64) -> anyhow::Result<AtomicFile> {
        let name = dest
            .file_name()
            .with_context(|| format!("{} is not a file name", dest.display()))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.set_len(len)
            .with_context(|| format!("cannot size {} to {len} bytes", tmp.display()))?;
        Ok(AtomicFile {
            file,
            tmp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Syncs the file and renames it to its destination.
    pub fn commit(mut self) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.dest.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` to `dest` atomically.
pub fn write_atomically(dest: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut out = AtomicFile::create(dest, 0)?;
    out.file()
        .write_all(data)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    out.commit()
}

/// Parses `16M`, `512K`, `1G`, `1MiB` or a plain byte count (K/M/G/T are powers of 1024):
/// [`netboot::common::parse_size`], as an `anyhow` error.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    netboot::common::parse_size(text).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16M").unwrap(), 16 << 20);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("16X").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
