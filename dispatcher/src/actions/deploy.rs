//! Deploy: the job's directories, downloads (checked while they stream, before the board is
//! touched) and the NBD export.

use std::path::{Path, PathBuf};

use crate::artifacts;
use crate::error::{Error, Result};
use crate::job::{ActionBlock, Artifact, Deploy};
use crate::pipeline::Action;
use crate::run::Ctx;
use crate::services::NbdMode;

/// The deploy block `a` belongs to.
pub fn block<'a>(ctx: &Ctx<'a>, a: &Action) -> Result<&'a Deploy> {
    match a.block.and_then(|i| ctx.job.actions.get(i)) {
        Some(ActionBlock::Deploy(d)) => Ok(d),
        _ => Err(Error::bug(format!(
            "{} is not inside a deploy block",
            a.name
        ))),
    }
}

/// The artefact `key` of the deploy block of `a`.
pub fn artifact<'a>(ctx: &Ctx<'a>, a: &Action, key: &str) -> Result<&'a Artifact> {
    let d = block(ctx, a)?;
    d.artifacts()
        .into_iter()
        .find(|art| art.key == key)
        .ok_or_else(|| {
            Error::bug(format!(
                "{}: no artefact '{key}' in the deploy block",
                a.name
            ))
        })
}

/// `tftp-deploy` & co: the job's TFTP directory, published.
pub fn start(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let dir = ctx.st.tftp_dir.clone();
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::infra(format!("{}: create {}: {e}", a.name, dir.display())))?;
    std::fs::create_dir_all(downloads_dir(ctx))
        .map_err(|e| Error::infra(format!("{}: create the downloads directory: {e}", a.name)))?;
    if ctx.st.tftp_prefix.is_none() {
        let prefix = ctx.env.services.publish_tftp(&ctx.env.job_id, &dir)?;
        ctx.log().info(&format!(
            "{}: the job's files are served on TFTP under {prefix}/",
            a.name
        ));
        ctx.st.tftp_prefix = Some(prefix);
    }
    Ok(())
}

/// Where downloads are kept (they stay in the output directory after the job).
pub fn downloads_dir(ctx: &Ctx) -> PathBuf {
    ctx.env.output_dir.join("downloads")
}

/// The path of a local, uncompressed artefact (`file://` URL or plain path), if it is one.
fn is_local_plain(art: &Artifact) -> Option<PathBuf> {
    if art.compression.is_some() {
        return None;
    }
    match art.url.strip_prefix("file://") {
        Some(path) => Some(PathBuf::from(path)),
        None if art.url.starts_with('/') => Some(PathBuf::from(&art.url)),
        None => None,
    }
}

/// `http-download` / `file-download`.
pub fn download(ctx: &mut Ctx, a: &Action, key: &str, deadline: std::time::Instant) -> Result<()> {
    let art = artifact(ctx, a, key)?.clone();
    if key == "nbdroot" && art.sha256.is_none() && art.md5.is_none() {
        if let Some(path) = is_local_plain(&art) {
            // A shared image on this host: exported copy-on-write, never copied or changed.
            if !path.is_file() {
                return Err(Error::job(format!("{key}: {} does not exist", art.url)));
            }
            ctx.log().info(&format!(
                "{key}: {} is a local image: exported copy-on-write, not copied",
                path.display()
            ));
            ctx.st.files.insert(key.to_string(), path);
            return Ok(());
        }
    }
    let dest = downloads_dir(ctx);
    let log = ctx.log().clone();
    let bar = ctx.env.progress_bar;
    let mut throttle = artifacts::progress::LogThrottle::new();
    let options = artifacts::FetchOptions {
        deadline: Some(deadline),
        cancel: Some(ctx.env.cancel.clone()),
        ..artifacts::FetchOptions::default()
    };
    ctx.log().info(&format!("{key}: downloading {}", art.url));
    let fetched = artifacts::fetch_with(&art, &dest, &options, &mut |p| {
        if bar {
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{key}: {p}   ");
            let _ = err.flush();
        } else if let Some(line) = throttle.due(&p) {
            log.debug(&format!("{key}: {line}"));
        }
    });
    if bar {
        eprintln!();
    }
    let fetched = fetched?;
    ctx.log().info(&format!(
        "{key}: {} ({} bytes, sha256 {})",
        fetched.path.display(),
        fetched.size,
        fetched.sha256
    ));
    // What the board fetches over TFTP: a link to the download (replaced, not written
    // through, when the ramdisk or kernel is rebuilt).
    if matches!(key, "kernel" | "dtb" | "ramdisk" | "initrd") {
        let name = link_into(&fetched.path, &ctx.st.tftp_dir, key)?;
        ctx.st.tftp_names.insert(key.to_string(), name);
    }
    ctx.st.files.insert(key.to_string(), fetched.path);
    Ok(())
}

fn link_into(file: &Path, dir: &Path, key: &str) -> Result<String> {
    let name = file
        .file_name()
        .ok_or_else(|| Error::bug(format!("{key}: download without a file name")))?;
    let target = dir.join(name);
    let _ = std::fs::remove_file(&target);
    std::fs::hard_link(file, &target)
        .or_else(|_| std::fs::copy(file, &target).map(|_| ()))
        .map_err(|e| {
            Error::infra(format!(
                "{key}: put {} in the TFTP directory: {e}",
                file.display()
            ))
        })?;
    Ok(name.to_string_lossy().into_owned())
}

/// The name the board fetches `key` under (`<prefix>/<file>`), if it was deployed.
pub fn tftp_name(ctx: &Ctx, key: &str) -> Option<String> {
    let name = ctx.st.tftp_names.get(key)?;
    Some(match &ctx.st.tftp_prefix {
        Some(p) => format!("{p}/{name}"),
        None => name.clone(),
    })
}

/// `xnbd-server-deploy`: the nbdroot exported for the job.
pub fn nbd_export(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let Some(path) = ctx.st.files.get("nbdroot").cloned() else {
        return Err(Error::job(format!("{}: the deploy has no nbdroot", a.name)));
    };
    let downloaded = path.starts_with(downloads_dir(ctx));
    let mode = if downloaded {
        NbdMode::ReadWrite
    } else {
        NbdMode::CopyOnWrite
    };
    let target = ctx
        .env
        .services
        .add_nbd_export(&ctx.env.job_id, &path, mode)?;
    ctx.log().info(&format!(
        "{}: {} exported as '{}' on {}:{} ({})",
        a.name,
        path.display(),
        target.name,
        target.host,
        target.port,
        if downloaded {
            "read-write, the job's own copy"
        } else {
            "copy-on-write"
        }
    ));
    ctx.st.nbd = Some(target);
    Ok(())
}
