//! Power: the device's commands, run on the dispatcher host (`sh -c`), as LAVA runs them.

use std::process::Command;
use std::time::Instant;

use crate::console::matcher::Pattern;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Action;
use crate::run::Ctx;

use super::boot::session;
use super::commands::boot_block;
use super::wait_error;

fn run_command(ctx: &Ctx, what: &str, cmd: &str) -> Result<()> {
    ctx.log().info(&format!("{what}: {cmd}"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map_err(|e| Error::infra(format!("{what}: cannot run '{cmd}': {e}")))?;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        ctx.log().debug(&format!("{what}: {line}"));
    }
    if !out.status.success() {
        return Err(Error::infra(format!(
            "{what}: '{cmd}' failed ({})",
            out.status
        )));
    }
    Ok(())
}

/// `pdu-reboot`: the hard reset command (for a USB power switch, a command that writes one
/// ASCII digit to its tty).
pub fn hard_reset(ctx: &mut Ctx) -> Result<()> {
    let cmd = ctx.device.hard_reset_command.clone().ok_or_else(|| {
        Error::infra("hard reset required but the device has no hard_reset command")
    })?;
    if let Some(s) = ctx.st.session.as_mut() {
        s.power_cycled();
    }
    run_command(ctx, "pdu-reboot", &cmd)
}

/// `send-reboot-commands`: reboot from the running system and wait for its shutdown message.
pub fn soft_reboot(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let boot = boot_block(ctx, a)?;
    let commands: Vec<String> = match &boot.soft_reboot {
        Some(serde_yaml_ng::Value::String(s)) => vec![s.clone()],
        Some(serde_yaml_ng::Value::Sequence(l)) => l
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec!["reboot -n".to_string(), "reboot -nf".to_string()],
    };
    let msg = boot
        .parameters
        .get("shutdown-message")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| ctx.device.constants.shutdown_message.clone());
    let s = session(ctx, a)?;
    s.power_cycled();
    for c in &commands {
        s.sendline(c, std::time::Duration::ZERO)?;
    }
    let s = session(ctx, a)?;
    s.wait(&[Pattern::literal(&msg)], super::wait_until(a, deadline))
        .map_err(|e| {
            wait_error(
                ctx,
                a,
                ErrorKind::JobError,
                &format!("the shutdown message '{msg}' (soft reboot failed)"),
                e,
            )
        })?;
    Ok(())
}

/// `power-off`: the power off command, if the device has one.
pub fn power_off(ctx: &mut Ctx) -> Result<()> {
    match ctx.device.power_off_command.clone() {
        Some(cmd) => run_command(ctx, "power-off", &cmd),
        None => {
            ctx.log()
                .info("power-off: the device has no power off command");
            Ok(())
        }
    }
}
