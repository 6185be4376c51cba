//! `bootloader-overlay`: the job's values substituted into the device's U-Boot commands, as
//! LAVA substitutes them, then — for the network-driven boot — set as the board's boot script.

use uboot_scripts::placeholders::Substitutions;

use crate::device::BootStyle;
use crate::error::{Error, Result};
use crate::job::{ActionBlock, Boot, BootCommands};
use crate::pipeline::Action;
use crate::run::Ctx;

use super::deploy::tftp_name;
use super::prepare::bootcommand;

/// The boot block `a` belongs to.
pub fn boot_block<'a>(ctx: &Ctx<'a>, a: &Action) -> Result<&'a Boot> {
    match a.block.and_then(|i| ctx.job.actions.get(i)) {
        Some(ActionBlock::Boot(b)) => Ok(b),
        _ => Err(Error::bug(format!("{} is not inside a boot block", a.name))),
    }
}

/// The boot command, from the kernel conversion or the deploy's kernel type.
fn boot_cmd(ctx: &Ctx) -> Option<String> {
    ctx.st.bootcommand.clone().or_else(|| {
        ctx.job.actions.iter().find_map(|b| match b {
            ActionBlock::Deploy(d) => d
                .kernel
                .as_ref()
                .and_then(|k| bootcommand(k.kernel_type))
                .map(str::to_string),
            _ => None,
        })
    })
}

/// The placeholder values for this job, as LAVA computes them.
pub fn substitutions(ctx: &Ctx) -> Result<Substitutions> {
    let mut s = Substitutions::new();
    let ip = ctx.env.services.server_ip().to_string();
    s.set("{SERVER_IP}", ip.clone());
    s.set("{LAVA_DISPATCHER_IP}", ip.clone());
    s.set("{LAVA_JOB_ID}", ctx.env.job_id.clone());
    let ramdisk = tftp_name(ctx, "ramdisk").or_else(|| tftp_name(ctx, "initrd"));
    for (key, value) in [
        ("{KERNEL}", tftp_name(ctx, "kernel")),
        ("{DTB}", tftp_name(ctx, "dtb")),
        ("{RAMDISK}", ramdisk.clone()),
        ("{INITRD}", ramdisk.clone()),
        ("{TEE}", None),
    ] {
        match value {
            Some(v) => s.set(key, v),
            None => s.set_empty(key),
        };
    }
    if let Some(cmd) = boot_cmd(ctx) {
        let addrs = ctx.device.load_addresses.get(&cmd).ok_or_else(|| {
            Error::config(format!(
                "{}: the device's parameters have no '{cmd}' load addresses",
                ctx.device.file
            ))
        })?;
        let has_initrd = ctx.st.files.contains_key("initrd");
        let header = ctx.device.add_header.as_deref();
        let mut ramdisk_addr = addrs.ramdisk.clone();
        if ramdisk.is_none() || !(matches!(header, Some("u-boot") | Some("raw")) || has_initrd) {
            ramdisk_addr = "-".to_string();
        }
        let bootx = if ramdisk_addr != "-" && (has_initrd || header == Some("raw")) {
            format!(
                "{cmd} {} {ramdisk_addr}:${{initrd_size}} {}",
                addrs.kernel, addrs.dtb
            )
        } else {
            format!("{cmd} {} {ramdisk_addr} {}", addrs.kernel, addrs.dtb)
        };
        s.set("{BOOTX}", bootx);
        s.set("{KERNEL_ADDR}", addrs.kernel.clone());
        s.set("{DTB_ADDR}", addrs.dtb.clone());
        s.set("{RAMDISK_ADDR}", ramdisk_addr);
    }
    if let Some(path) = &ctx.st.nfs_path {
        s.set("{NFSROOTFS}", path.clone());
        s.set("{NFS_SERVER_IP}", ip.clone());
    }
    if let Some(nbd) = &ctx.st.nbd {
        s.set("{NBDSERVERIP}", nbd.host.to_string());
        s.set("{NBDSERVERPORT}", nbd.port.to_string());
        s.set("{NBDEXPORT}", nbd.name.clone());
    }
    Ok(s)
}

/// The command list the boot block names (a device stanza or an inline list).
pub fn command_list(ctx: &Ctx, boot: &Boot) -> Result<Vec<String>> {
    match &boot.commands {
        Some(BootCommands::Inline(list)) => Ok(list.clone()),
        Some(BootCommands::Named(name)) => ctx
            .device
            .uboot
            .as_ref()
            .and_then(|u| u.stanzas.get(name))
            .cloned()
            .ok_or_else(|| {
                Error::job(format!(
                    "{}:{}: boot.commands: the device has no '{name}' stanza",
                    ctx.job.file, boot.common.line
                ))
            }),
        None => Err(Error::job(format!(
            "{}:{}: boot.commands: a u-boot boot needs commands",
            ctx.job.file, boot.common.line
        ))),
    }
}

/// `bootloader-overlay`.
pub fn bootloader_overlay(ctx: &mut Ctx, a: &Action) -> Result<()> {
    let boot = boot_block(ctx, a)?;
    let list = command_list(ctx, boot)?;
    let subs = substitutions(ctx)?;
    let commands = subs.apply(&list);
    for c in &commands {
        if c.contains("{BOOTX}") {
            return Err(Error::job(format!(
                "{}:{}: the boot commands use {{BOOTX}} but the deploy's kernel has no type",
                ctx.job.file, boot.common.line
            )));
        }
    }
    ctx.log()
        .info(&format!("{}: {} U-Boot commands", a.name, commands.len()));
    for c in &commands {
        ctx.log().debug(&format!("  {c}"));
    }
    if ctx.env.boot_style == BootStyle::Network {
        let board = ctx.device.labboot.board_id.as_deref().ok_or_else(|| {
            Error::config(format!(
                "{}: the network-driven boot needs labboot.board_id",
                ctx.device.file
            ))
        })?;
        let script = network_script(&ctx.env.job_id, &commands);
        ctx.env.services.set_boot_script(board, Some(&script))?;
        ctx.st.boot_script_set = true;
        ctx.log().info(&format!(
            "{}: labboot/{board}/boot.scr now boots job {}",
            a.name, ctx.env.job_id
        ));
    }
    ctx.st.commands = commands;
    Ok(())
}

/// The boot script text for the network-driven boot: the same commands U-Boot would have been
/// typed, each checked, so a failure says which command failed and stops there.
pub fn network_script(job_id: &str, commands: &[String]) -> String {
    let mut s = format!("# labboot job {job_id}: network-driven boot\n");
    for c in commands {
        s.push_str(c);
        s.push('\n');
    }
    s.push_str("echo labboot: the boot command returned\n");
    s
}
