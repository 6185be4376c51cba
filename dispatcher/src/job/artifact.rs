//! One downloadable file of a deploy block (LAVA's `url()` schema): URL, checksums,
//! compression and the per-file options (`type`, `header`, `install_overlay`, …).

use super::model::{Artifact, Compression, KernelType};
use super::schema::{At, Check, Unsupported};

/// The keys of every artefact.
const URL_KEYS: &[&str] = &["url", "compression", "md5sum", "sha256sum", "use_cache"];

/// Artefact keys LAVA accepts that labboot refuses.
const URL_UNSUPPORTED: &[Unsupported<'static>] = &[
    ("headers", "downloads send no extra HTTP headers"),
    ("sha512sum", "use sha256sum or md5sum"),
    ("archive", "artefacts are not packed into archives"),
    ("format", "image overlays are not supported"),
    ("overlays", "image overlays are not supported"),
    ("partition", "image overlays are not supported"),
    ("sparse", "image overlays are not supported"),
    ("overlay_backend", "image overlays are not supported"),
];

/// URL schemes a download may use (besides a plain local path).
const SCHEMES: &[&str] = &["http", "https", "file"];

/// Reads the artefact `key` at `at`; `extra` are the further keys LAVA allows for it
/// (`type`, `header`, `install_modules`, `install_overlay`, `prefix`).
pub fn artifact(at: &At<'_>, key: &str, extra: &[&str]) -> Check<Artifact> {
    let mut allowed = URL_KEYS.to_vec();
    allowed.extend_from_slice(extra);
    at.keys(&allowed, URL_UNSUPPORTED)?;
    let mut art = Artifact {
        key: key.to_string(),
        line: at.line,
        ..Artifact::default()
    };
    art.url = url(&at.req("url")?)?;
    if let Some(c) = at.opt("compression") {
        art.compression = compression(&c)?;
    }
    if let Some(sum) = at.opt("md5sum") {
        art.md5 = Some(checksum(&sum, 32, "an MD5 sum")?);
    }
    if let Some(sum) = at.opt("sha256sum") {
        art.sha256 = Some(checksum(&sum, 64, "a SHA-256 sum")?);
    }
    if let Some(c) = at.opt("use_cache") {
        c.bool()?;
    }
    if let Some(t) = at.opt("type") {
        art.kernel_type = Some(match t.one_of(&["zimage", "image", "uimage"])? {
            "zimage" => KernelType::Zimage,
            "image" => KernelType::Image,
            _ => KernelType::Uimage,
        });
    }
    if let Some(h) = at.opt("header") {
        h.one_of(&["u-boot"])?;
        art.uboot_header = true;
    }
    if let Some(b) = at.opt("install_overlay") {
        art.install_overlay = Some(b.bool()?);
    }
    if let Some(b) = at.opt("install_modules") {
        art.install_modules = Some(b.bool()?);
    }
    if let Some(p) = at.opt("prefix") {
        art.prefix = Some(p.str()?.to_string());
    }
    Ok(art)
}

/// `url`: http(s)://, file:// or a local path.
fn url(at: &At<'_>) -> Check<String> {
    let url = at.nonempty_str()?;
    if let Some((scheme, _)) = url.split_once("://") {
        if !SCHEMES.contains(&scheme) {
            return Err(at.fail(format!(
                "URL scheme '{scheme}' is not supported by labboot (http, https, file or a local path)"
            )));
        }
    }
    Ok(url.to_string())
}

/// `compression`: LAVA's list less `zip`; `null` means none.
fn compression(at: &At<'_>) -> Check<Option<Compression>> {
    if at.node.is_null() {
        return Ok(None);
    }
    if at.node.as_str() == Some("zip") {
        return Err(at.fail("compression 'zip' is not supported by labboot (gz, xz, zstd, bz2)"));
    }
    Ok(Some(match at.one_of(&["gz", "xz", "zstd", "bz2"])? {
        "gz" => Compression::Gz,
        "xz" => Compression::Xz,
        "zstd" => Compression::Zstd,
        _ => Compression::Bz2,
    }))
}

/// A hex checksum of `len` digits, lower-cased.
fn checksum(at: &At<'_>, len: usize, what: &str) -> Check<String> {
    let sum = at.node.as_str().unwrap_or_default();
    if sum.len() != len || !sum.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(at.fail(format!("must be {what}: {len} hexadecimal digits")));
    }
    Ok(sum.to_ascii_lowercase())
}
