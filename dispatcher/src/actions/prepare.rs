//! Prepare: test definitions and the overlay, the nfsrootfs export, modules, the kernel's
//! uImage header and the repacked ramdisk.

use std::path::PathBuf;

use crate::artifacts;
use crate::error::{Error, Result};
use crate::job::{ActionBlock, Compression};
use crate::overlay;
use crate::pipeline::Action;
use crate::run::Ctx;
use crate::testdef;

use super::deploy::{artifact, block, downloads_dir};

/// `*-repo-action`: fetch and parse one test definition.
pub fn resolve_definition(ctx: &mut Ctx, test_block: usize, index: usize) -> Result<()> {
    let Some(ActionBlock::Test(t)) = ctx.job.actions.get(test_block) else {
        return Err(Error::bug(format!(
            "actions[{test_block}] is not a test block"
        )));
    };
    let def = t
        .definitions
        .get(index)
        .ok_or_else(|| Error::bug(format!("no definition {index} in actions[{test_block}]")))?;
    let fetch_dir = downloads_dir(ctx).join("testdefs");
    let fetch = |url: &str| -> Result<Vec<u8>> {
        let art = crate::job::Artifact {
            key: format!("definition {}", def.name),
            url: url.to_string(),
            ..Default::default()
        };
        let got = artifacts::fetch(&art, &fetch_dir, &mut |_| {})?;
        std::fs::read(&got.path)
            .map_err(|e| Error::infra(format!("read {}: {e}", got.path.display())))
    };
    // The suite index counts every definition of the job, in order (`<index>_<name>`).
    let global = ctx.job.actions[..test_block]
        .iter()
        .map(|b| match b {
            ActionBlock::Test(t) => t.definitions.len(),
            _ => 0,
        })
        .sum::<usize>()
        + index;
    let mut resolved = testdef::resolve(def, global, &fetch)?;
    resolved.block = test_block;
    ctx.log().info(&format!(
        "test definition {index} '{}' loaded ({})",
        def.name,
        resolved.describe_source()
    ));
    ctx.st.definitions.insert((test_block, index), resolved);
    Ok(())
}

/// `compress-overlay`: the overlay directory, written once for every test of the job.
pub fn write_overlay(ctx: &mut Ctx) -> Result<()> {
    if ctx.st.overlay.is_some() {
        return Ok(());
    }
    let root = ctx.env.output_dir.join("overlay");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::infra(format!("create {}: {e}", root.display())))?;
    let defs: Vec<_> = ctx.st.definitions.values().cloned().collect();
    let os = ctx
        .job
        .actions
        .iter()
        .find_map(|b| match b {
            ActionBlock::Deploy(d) => d.os.clone(),
            _ => None,
        })
        .unwrap_or_else(|| "oe".to_string());
    let info = overlay::write_overlay(&root, &ctx.env.job_id, &defs, &os)?;
    ctx.log().info(&format!(
        "overlay written to {} ({} test definitions)",
        root.display(),
        defs.len()
    ));
    ctx.st.overlay = Some((root, info));
    Ok(())
}

fn nfs_dir(ctx: &Ctx) -> PathBuf {
    ctx.env.output_dir.join("nfsrootfs")
}

/// `extract-nfsrootfs`: the nfsrootfs unpacked and exported over NFS for the job.
pub fn extract_nfsrootfs(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let Some(archive) = ctx.st.files.get("nfsrootfs").cloned() else {
        ctx.log()
            .debug(&format!("{}: no nfsrootfs in this deploy", a.name));
        return Ok(());
    };
    let art = artifact(ctx, a, "nfsrootfs")?;
    let dir = nfs_dir(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::infra(format!("create {}: {e}", dir.display())))?;
    artifacts::rootfs::unpack_rootfs(&archive, art.compression, art.prefix.as_deref(), &dir)?;
    let path = ctx.env.services.add_nfs_export(&ctx.env.job_id, &dir)?;
    ctx.log().info(&format!(
        "{}: {} unpacked into {}, exported as {path}",
        a.name,
        archive.display(),
        dir.display()
    ));
    ctx.st.nfs_dir = Some(dir);
    ctx.st.nfs_path = Some(path);
    Ok(())
}

/// `extract-modules`: the modules unpacked into the nfsrootfs (a ramdisk gets them when it is
/// repacked).
pub fn extract_modules(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let (Some(archive), Some(dir)) = (ctx.st.files.get("modules").cloned(), ctx.st.nfs_dir.clone())
    else {
        return Ok(());
    };
    let art = artifact(ctx, a, "modules")?;
    artifacts::modules::install_modules(&archive, art.compression, &dir)?;
    ctx.log().info(&format!(
        "{}: modules installed into {}",
        a.name,
        dir.display()
    ));
    Ok(())
}

/// `apply-overlay-tftp`: the overlay copied into the nfsrootfs.
pub fn apply_overlay(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let (Some((root, _)), Some(dir)) = (ctx.st.overlay.clone(), ctx.st.nfs_dir.clone()) else {
        return Ok(());
    };
    let art = artifact(ctx, a, "nfsrootfs").ok();
    if art.and_then(|a| a.install_overlay) == Some(false) {
        ctx.log().info(&format!(
            "{}: install_overlay is false: nfsrootfs left as it is",
            a.name
        ));
        return Ok(());
    }
    artifacts::rootfs::copy_tree(&root, &dir)?;
    ctx.log().info(&format!(
        "{}: overlay copied into {}",
        a.name,
        dir.display()
    ));
    Ok(())
}

/// The U-Boot boot command for the deploy's kernel type.
pub fn bootcommand(kernel_type: Option<crate::job::KernelType>) -> Option<&'static str> {
    use crate::job::KernelType;
    kernel_type.map(|t| match t {
        KernelType::Zimage => "bootz",
        KernelType::Image => "booti",
        KernelType::Uimage => "bootm",
    })
}

/// `uboot-prepare-kernel`: the boot command for the kernel type; a `uimage` kernel without a
/// uImage header gets one.
pub fn prepare_kernel(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let d = block(ctx, a)?;
    let Some(kernel) = &d.kernel else {
        return Ok(());
    };
    let cmd = bootcommand(kernel.kernel_type).unwrap_or("bootz");
    ctx.st.bootcommand = Some(cmd.to_string());
    if cmd != "bootm" {
        return Ok(());
    }
    let Some(path) = ctx.st.files.get("kernel").cloned() else {
        return Ok(());
    };
    let data =
        std::fs::read(&path).map_err(|e| Error::infra(format!("read {}: {e}", path.display())))?;
    if uboot_scripts::image::Header::parse(&data).is_some() {
        ctx.log().debug(&format!(
            "{}: the kernel already has a uImage header",
            a.name
        ));
        return Ok(());
    }
    let addrs = ctx
        .device
        .load_addresses
        .get("bootm")
        .or_else(|| ctx.device.load_addresses.get("uimage"))
        .ok_or_else(|| {
            Error::config(format!(
                "{}: no bootm load addresses in the device's parameters",
                ctx.device.file
            ))
        })?;
    let load = parse_addr(&addrs.kernel).ok_or_else(|| {
        Error::config(format!(
            "{}: parameters.bootm.kernel '{}' is not an address",
            ctx.device.file, addrs.kernel
        ))
    })?;
    let arch = ctx.device.mkimage_arch.as_deref().unwrap_or("arm");
    let wrapped = artifacts::uimage::wrap(
        &data,
        artifacts::uimage::ImageKind::Kernel,
        arch,
        load,
        load,
        "LAVA kernel",
    )?;
    let name = "uImage".to_string();
    let out = ctx.st.tftp_dir.join(&name);
    std::fs::write(&out, wrapped)
        .map_err(|e| Error::infra(format!("write {}: {e}", out.display())))?;
    ctx.st.tftp_names.insert("kernel".into(), name);
    ctx.log().info(&format!(
        "{}: kernel wrapped in a uImage header (load 0x{load:08x})",
        a.name
    ));
    Ok(())
}

fn parse_addr(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `compress-ramdisk`: the ramdisk (or `to: nbd`'s initrd) repacked with the overlay and the
/// modules, in its own compression and, when asked, with a new uImage header.
pub fn compress_ramdisk(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let key = if ctx.st.files.contains_key("ramdisk") {
        "ramdisk"
    } else if ctx.st.files.contains_key("initrd") {
        "initrd"
    } else {
        return Ok(());
    };
    let art = artifact(ctx, a, key)?.clone();
    let input = ctx.st.files[key].clone();
    let mut add = Vec::new();
    if art.install_overlay != Some(false) && ctx.st.nfs_dir.is_none() {
        if let Some((root, _)) = &ctx.st.overlay {
            add.push(root.clone());
        }
    }
    let mut modules_tmp = None;
    if art.install_modules != Some(false) && ctx.st.nfs_dir.is_none() {
        if let Some(m) = ctx.st.files.get("modules").cloned() {
            let comp = artifact(ctx, a, "modules")?.compression;
            let tmp = artifacts::unpack_modules(&m, comp, &ctx.env.output_dir)?;
            add.push(tmp.path().to_path_buf());
            modules_tmp = Some(tmp);
        }
    }
    if add.is_empty() {
        ctx.log()
            .debug(&format!("{}: nothing to add to the {key}", a.name));
        return Ok(());
    }
    let compression: Option<Compression> = art.compression;
    let name = format!(
        "{}.labboot",
        input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| key.to_string())
    );
    let out = ctx.st.tftp_dir.join(&name);
    let add_header = (ctx.device.add_header.as_deref() == Some("u-boot")).then(|| {
        ctx.device
            .mkimage_arch
            .clone()
            .unwrap_or_else(|| "arm".into())
    });
    let spec = artifacts::RamdiskSpec {
        strip_uboot_header: art.uboot_header,
        add_uboot_header: add_header,
        compression,
        add,
    };
    artifacts::ramdisk::rebuild_ramdisk(&input, &spec, &out)?;
    drop(modules_tmp);
    ctx.st.tftp_names.insert(key.to_string(), name.clone());
    ctx.log().info(&format!(
        "{}: {key} repacked with the overlay{} as {name}",
        a.name,
        if spec.add.len() > 1 {
            " and modules"
        } else {
            ""
        }
    ));
    Ok(())
}
