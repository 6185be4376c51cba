//! `manifest.json`: what went in and what came out, with sha256, so two builds can be compared
//! and an image traced back to its packages.
//!
//! It holds no host path and no time other than the epoch, so it is itself reproducible.

use std::path::Path;

use serde::Serialize;

use crate::apt::file_sha256;
use crate::error::{Error, Result};

/// The recipe that was built.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecipeRef {
    /// File name (without directory).
    pub name: String,
    /// sha256 of its bytes.
    pub sha256: String,
}

/// One input package.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Input {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture (`all` for arch-independent packages).
    pub arch: String,
    /// What it went into: `rootfs`, `initrd`, `kernel`, `loader` (the disk's boot loader) or
    /// `local` (one of the recipe's own `.deb` files, unpacked into the rootfs).
    pub role: String,
    /// sha256 of the `.deb`.
    pub sha256: String,
    /// Size of the `.deb`.
    pub size: u64,
}

/// One recipe file read from disk (`files[].source`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceFile {
    /// Path in the image.
    pub path: String,
    /// `source` as written in the recipe.
    pub source: String,
    /// sha256 of its content.
    pub sha256: String,
}

/// The recipe's `base`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BaseRef {
    /// `base` as written in the recipe.
    pub path: String,
    /// `directory`, `tar`, `tar.gz`, `tar.xz` or `tar.zst`.
    pub kind: String,
    /// sha256 of a tarball (a directory has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Entries it gave.
    pub entries: usize,
}

/// One output file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutputRef {
    /// File name in the output directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256.
    pub sha256: String,
}

/// The whole manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Manifest {
    /// The recipe.
    pub recipe: RecipeRef,
    /// Target architecture.
    pub arch: String,
    /// Debian suite named by the recipe.
    pub suite: String,
    /// Timestamp of every file.
    pub epoch: u32,
    /// The base tarball or directory, if the recipe has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// Kernel version of the modules, if a kernel was used.
    pub kernel_version: Option<String>,
    /// Input packages: rootfs, initrd, kernel and loader by name, then local in the recipe's order.
    pub inputs: Vec<Input>,
    /// Recipe files read from disk.
    pub files: Vec<SourceFile>,
    /// Outputs, sorted by name.
    pub outputs: Vec<OutputRef>,
}

impl Manifest {
    /// Records output `name` in `dir` with its size and sha256.
    pub fn add_output(&mut self, dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(name);
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        self.outputs.push(OutputRef {
            name: name.to_string(),
            size,
            sha256: file_sha256(&path)?,
        });
        self.outputs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_hashed_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), b"abc").unwrap();
        std::fs::write(dir.path().join("a"), b"").unwrap();
        let mut m = Manifest {
            recipe: RecipeRef {
                name: "r.yaml".into(),
                sha256: "00".into(),
            },
            arch: "arm64".into(),
            suite: "bookworm".into(),
            epoch: 1,
            base: None,
            kernel_version: None,
            inputs: vec![],
            files: vec![],
            outputs: vec![],
        };
        m.add_output(dir.path(), "b").unwrap();
        m.add_output(dir.path(), "a").unwrap();
        assert_eq!(m.outputs[0].name, "a");
        assert_eq!(
            m.outputs[1].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let json = m.to_json();
        assert!(json.contains("\"size\": 3"), "{json}");
        assert!(!json.contains(&dir.path().display().to_string()));
    }
}
