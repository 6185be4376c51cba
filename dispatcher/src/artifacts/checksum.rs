//! The checksums a job can give (`sha256sum`, `md5sum`), computed while an artefact streams.
//!
//! Both are always computed over the bytes as fetched (compressed, when the artefact is), as
//! LAVA does, so the results can record them and a mismatch is found without reading the
//! file again.

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// SHA-256 and MD5 of a stream, updated chunk by chunk.
#[derive(Clone, Default)]
pub struct Hashes {
    sha256: Sha256,
    md5: Md5,
}

/// The lower-case hex digests of a finished stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256.
    pub sha256: String,
    /// MD5.
    pub md5: String,
}

impl Hashes {
    /// Hashes of nothing yet.
    pub fn new() -> Hashes {
        Hashes::default()
    }

    /// Adds a chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha256.update(chunk);
        self.md5.update(chunk);
    }

    /// The digests.
    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex(&self.sha256.finalize()),
            md5: hex(&self.md5.finalize()),
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one digest against what the job says (`None`: nothing to check). A mismatch is a
/// JobError naming the key, the algorithm and the URL: `kernel: sha256 of URL is X, the job
/// says Y`.
pub fn verify(
    key: &str,
    url: &str,
    algorithm: &str,
    actual: &str,
    expected: Option<&str>,
) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let expected = expected.trim().to_ascii_lowercase();
    if actual.eq_ignore_ascii_case(&expected) {
        return Ok(());
    }
    Err(Error::job(format!(
        "{key}: {algorithm} of {url} is {actual}, the job says {expected}"
    )))
}

/// Checks both digests against the job's `sha256sum` and `md5sum`.
pub fn verify_all(
    key: &str,
    url: &str,
    d: &Digests,
    sha256: Option<&str>,
    md5: Option<&str>,
) -> Result<()> {
    verify(key, url, "sha256", &d.sha256, sha256)?;
    verify(key, url, "md5", &d.md5, md5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let mut h = Hashes::new();
        h.update(b"ab");
        h.update(b"c");
        let d = h.finish();
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn verify_compares_lower_case() {
        let d = Hashes::new().finish();
        assert!(verify_all("k", "u", &d, Some(&d.sha256.to_uppercase()), None).is_ok());
        let e = verify_all("kernel", "http://x/k", &d, None, Some("00")).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::JobError);
        assert_eq!(
            e.message,
            format!("kernel: md5 of http://x/k is {}, the job says 00", d.md5)
        );
    }
}
