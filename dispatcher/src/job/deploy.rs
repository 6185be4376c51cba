//! `- deploy:` blocks: LAVA's `deploy.tftp`, `deploy.nfs`, `deploy.nbd` and `deploy.downloads`
//! schemas. Other LAVA targets (`fastboot`, `tmpfs`, `usb`, …) get a clear "not supported by
//! labboot"; anything else is an unknown target.

use super::artifact::artifact;
use super::common::{block_common, with_common, with_common_unsupported};
use super::model::{Artifact, Deploy, DeployTo};
use super::schema::{At, Check, Unsupported};

/// Deploy targets LAVA knows (module names with `-` for `_`) that labboot does not do.
const LAVA_TARGETS: &[&str] = &[
    "avh",
    "docker",
    "download",
    "fastboot",
    "flasher",
    "fvp",
    "iso-installer",
    "mps",
    "musca",
    "overlay",
    "qdl",
    "recovery",
    "sata",
    "sd",
    "ssh",
    "tmpfs",
    "u-boot-ums",
    "usb",
    "usbg-ms",
    "uuu",
    "vemsd",
];

/// The targets labboot deploys to.
const TARGETS: &str = "tftp, nfs, nbd, downloads";

/// Keys of every deploy block (LAVA's `deploy.schema()`).
const DEPLOY_KEYS: &[&str] = &["to", "os", "authorize", "overlay_backend"];

/// Artefact options by artefact (tftp).
const KERNEL_EXTRA: &[&str] = &["type"];
const RAMDISK_EXTRA: &[&str] = &["install_modules", "install_overlay", "header"];
const NFSROOTFS_EXTRA: &[&str] = &["install_modules", "install_overlay", "prefix"];

/// Reads the deploy block at `at` (a mapping) whose `- deploy:` line is `line`.
pub fn deploy(at: &At<'_>, line: usize) -> Check<Deploy> {
    let to_at = at.req("to")?;
    let to = target(&to_at)?;
    let (allowed, unsupported) = keys_for(to);
    at.keys(
        &with_common(&allowed),
        &with_common_unsupported(&unsupported),
    )?;
    let mut deploy = Deploy {
        common: block_common(at, line)?,
        to,
        os: None,
        kernel: None,
        dtb: None,
        ramdisk: None,
        initrd: None,
        modules: None,
        nfsrootfs: None,
        nbdroot: None,
        other: Vec::new(),
    };
    if let Some(os) = at.opt("os") {
        deploy.os = Some(os.str()?.to_string());
    }
    if let Some(a) = at.opt("authorize") {
        a.one_of(&["ssh"])?;
    }
    if let Some(b) = at.opt("overlay_backend") {
        b.one_of(&["auto", "e2fsprogs", "guestfs"])?;
    }
    match to {
        DeployTo::Tftp => tftp(at, &mut deploy)?,
        DeployTo::Nfs => nfs(at, &mut deploy)?,
        DeployTo::Nbd => nbd(at, &mut deploy)?,
        DeployTo::Downloads => downloads(at, &mut deploy)?,
    }
    Ok(deploy)
}

/// `to:`
fn target(at: &At<'_>) -> Check<DeployTo> {
    let to = at.str()?;
    Ok(match to {
        "tftp" => DeployTo::Tftp,
        "nfs" => DeployTo::Nfs,
        "nbd" => DeployTo::Nbd,
        "downloads" => DeployTo::Downloads,
        _ if LAVA_TARGETS.contains(&to.replace('_', "-").as_str()) => {
            return Err(at.fail(format!(
                "deploy to '{to}' is not supported by labboot ({TARGETS})"
            )))
        }
        _ => {
            return Err(at.fail(format!(
                "unknown deploy target '{to}' (labboot deploys to {TARGETS})"
            )))
        }
    })
}

/// The keys a target allows, and those labboot refuses.
fn keys_for(to: DeployTo) -> (Vec<&'static str>, Vec<Unsupported<'static>>) {
    let mut allowed = DEPLOY_KEYS.to_vec();
    let unsupported: Vec<Unsupported<'static>> = match to {
        DeployTo::Tftp => {
            allowed.extend([
                "kernel",
                "dtb",
                "modules",
                "preseed",
                "ramdisk",
                "nfsrootfs",
                "tee",
            ]);
            vec![
                ("dtbo", "device tree overlays are not applied"),
                ("persistent_nfs", "labboot serves the NFS root it deploys"),
                ("extra_files", "no {EXTRA_FILES_DIR} for extra files"),
            ]
        }
        DeployTo::Nfs => {
            allowed.extend(["nfsrootfs", "modules"]);
            vec![("images", "give the root file system as nfsrootfs")]
        }
        DeployTo::Nbd => {
            allowed.extend(["kernel", "nbdroot", "initrd", "dtb"]);
            Vec::new()
        }
        DeployTo::Downloads => {
            allowed.extend(["images", "uniquify"]);
            vec![("postprocess", "no docker post-processing of downloads")]
        }
    };
    (allowed, unsupported)
}

/// Reads artefact `key` if present.
fn opt_artifact(at: &At<'_>, key: &str, extra: &[&str]) -> Check<Option<Artifact>> {
    at.opt(key).map(|a| artifact(&a, key, extra)).transpose()
}

/// `to: tftp`
fn tftp(at: &At<'_>, d: &mut Deploy) -> Check<()> {
    d.kernel = opt_artifact(at, "kernel", KERNEL_EXTRA)?;
    d.dtb = opt_artifact(at, "dtb", &[])?;
    d.ramdisk = opt_artifact(at, "ramdisk", RAMDISK_EXTRA)?;
    d.modules = opt_artifact(at, "modules", &[])?;
    d.nfsrootfs = opt_artifact(at, "nfsrootfs", NFSROOTFS_EXTRA)?;
    for key in ["tee", "preseed"] {
        if let Some(a) = opt_artifact(at, key, &[])? {
            d.other.push(a);
        }
    }
    d.other.sort_by_key(|a| a.line);
    Ok(())
}

/// `to: nfs`
fn nfs(at: &At<'_>, d: &mut Deploy) -> Check<()> {
    d.nfsrootfs = opt_artifact(at, "nfsrootfs", &[])?;
    d.modules = opt_artifact(at, "modules", &[])?;
    Ok(())
}

/// `to: nbd`: kernel, initrd and nbdroot are required.
fn nbd(at: &At<'_>, d: &mut Deploy) -> Check<()> {
    d.kernel = Some(artifact(&at.req("kernel")?, "kernel", KERNEL_EXTRA)?);
    d.initrd = Some(artifact(&at.req("initrd")?, "initrd", &[])?);
    d.nbdroot = Some(artifact(&at.req("nbdroot")?, "nbdroot", &[])?);
    d.dtb = opt_artifact(at, "dtb", &[])?;
    Ok(())
}

/// `to: downloads`: `images` names any number of files.
fn downloads(at: &At<'_>, d: &mut Deploy) -> Check<()> {
    if let Some(u) = at.opt("uniquify") {
        u.bool()?;
    }
    let images = at.req("images")?;
    let entries = images.map()?;
    if entries.is_empty() {
        return Err(images.fail("'images' is empty"));
    }
    for (name, image) in entries {
        d.other.push(artifact(&image, &name, &[])?);
    }
    Ok(())
}
