//! Boot through U-Boot: the console, the interrupt and the commands — typed (LAVA's serial
//! boot) or, network-driven, already in the board's boot script so the console is only read.

use std::time::{Duration, Instant};

use regex::Regex;

use crate::console::connection::Connection;
use crate::console::matcher::Pattern;
use crate::device::BootStyle;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Action;
use crate::run::milestone::Milestone;
use crate::run::session::{Hit, Markers, Session};
use crate::run::Ctx;

use super::wait_error;

/// `connect-device`: the console, opened once (a retry reopens it).
pub fn connect(ctx: &mut Ctx) -> Result<()> {
    if ctx.st.session.is_some() {
        return Ok(());
    }
    // The lab's own console when it keeps the board's line open, else the connection command.
    let conn = match ctx.env.services.console(&ctx.env.job_id) {
        Some(port) => Connection::from_port(port?),
        None => {
            let cmd = ctx.device.connection_command.as_deref().ok_or_else(|| {
                Error::config(format!(
                    "{}: no connection command (commands.connect) for the console",
                    ctx.device.file
                ))
            })?;
            Connection::open(cmd)?
        }
    };
    let c = &ctx.device.constants;
    let kernel_start = if c.kernel_start_message.is_empty() {
        None
    } else {
        Some(Regex::new(&c.kernel_start_message).map_err(|e| {
            Error::config(format!(
                "{}: constants.kernel-start-message: {e}",
                ctx.device.file
            ))
        })?)
    };
    let markers = Markers {
        final_message: c.final_message.clone(),
        kernel_start,
        interrupt_prompt: interrupt_prompt(ctx),
    };
    ctx.log()
        .info(&format!("connect-device: console '{}'", conn.command()));
    ctx.st.session = Some(Session::new(
        conn,
        ctx.log().clone(),
        ctx.env.cancel.clone(),
        markers,
    ));
    Ok(())
}

/// The open console, or an error naming the action that needs it.
pub fn session<'a>(ctx: &'a mut Ctx, a: &Action) -> Result<&'a mut Session> {
    ctx.st
        .session
        .as_mut()
        .ok_or_else(|| Error::bug(format!("{} ran without a console", a.name)))
}

fn interrupt_prompt(ctx: &Ctx) -> String {
    ctx.device
        .uboot
        .as_ref()
        .and_then(|u| u.interrupt_prompt.clone())
        .unwrap_or_else(|| ctx.device.constants.interrupt_prompt.clone())
}

fn bootloader_prompt(ctx: &Ctx) -> String {
    ctx.device
        .uboot
        .as_ref()
        .map(|u| u.bootloader_prompt.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "=>".to_string())
}

/// U-Boot's error messages (regular expressions) from the device's constants.
pub fn error_patterns(ctx: &Ctx) -> Result<Vec<Pattern>> {
    ctx.device
        .constants
        .error_messages
        .iter()
        .map(|m| {
            Pattern::regex(m).map_err(|e| {
                Error::config(format!(
                    "{}: constants.u-boot.error-messages '{m}': {e}",
                    ctx.device.file
                ))
            })
        })
        .collect()
}

/// `bootloader-interrupt`: stop autoboot and wait for U-Boot's prompt (serial boot only).
pub fn interrupt(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    if ctx.env.boot_style == BootStyle::Network {
        ctx.log().info(&format!(
            "{}: network-driven boot: U-Boot runs the board's boot script, not interrupted",
            a.name
        ));
        return Ok(());
    }
    let needs = ctx
        .device
        .uboot
        .as_ref()
        .map(|u| u.needs_interrupt)
        .unwrap_or(true);
    let prompt = interrupt_prompt(ctx);
    let bl_prompt = bootloader_prompt(ctx);
    let ch = ctx
        .device
        .uboot
        .as_ref()
        .and_then(|u| u.interrupt_char.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| ctx.device.constants.interrupt_character.clone());
    let ctrl = ctx.device.constants.interrupt_ctrl_list.clone();
    let newline = ctx.device.constants.interrupt_newline;
    let conn_deadline = deadline.min(Instant::now() + a.connection_timeout.max(a.timeout));
    let s = session(ctx, a)?;
    if needs {
        s.wait(&[Pattern::literal(&prompt)], conn_deadline)
            .map_err(|e| {
                wait_error(
                    ctx,
                    a,
                    ErrorKind::InfrastructureError,
                    &format!("'{prompt}'"),
                    e,
                )
            })?;
        let s = session(ctx, a)?;
        if ctrl.is_empty() {
            let text = if newline {
                format!("{ch}\n")
            } else {
                ch.clone()
            };
            s.send(&text, Duration::ZERO)?;
        } else {
            for c in &ctrl {
                let code = c
                    .bytes()
                    .next()
                    .map(|b| (b & 0x1f) as char)
                    .unwrap_or('\u{3}');
                s.send(&code.to_string(), Duration::ZERO)?;
            }
        }
    }
    let s = session(ctx, a)?;
    s.wait(
        &[Pattern::literal(&bl_prompt)],
        super::wait_until(a, deadline),
    )
    .map_err(|e| {
        wait_error(
            ctx,
            a,
            ErrorKind::InfrastructureError,
            &format!("the U-Boot prompt '{bl_prompt}'"),
            e,
        )
    })?;
    let s = session(ctx, a)?;
    s.reach(Milestone::Interrupted);
    // The interrupt's newline gives a second prompt: take it now, not as the answer to the
    // first command.
    s.settle(Duration::from_millis(300), deadline)
        .map_err(|e| {
            wait_error(
                ctx,
                a,
                ErrorKind::InfrastructureError,
                "U-Boot to go quiet",
                e,
            )
        })?;
    Ok(())
}

/// The echo marker that reports a typed command's exit code.
const RC_MARKER: &str = "LABBOOT_RC";

/// Waits for the first of `wanted`, watching U-Boot's error messages as LAVA does: one of them
/// first is an InfrastructureError naming it. Returns the match of `wanted`.
fn expect_uboot(
    ctx: &mut Ctx,
    a: &Action,
    wanted: Pattern,
    errors: &[Pattern],
    deadline: Instant,
    what: &str,
) -> Result<Hit> {
    let mut pats = vec![wanted];
    pats.extend(errors.iter().cloned());
    let r = session(ctx, a)?.wait(&pats, super::wait_until(a, deadline));
    let hit = r.map_err(|e| wait_error(ctx, a, ErrorKind::InfrastructureError, what, e))?;
    if hit.index > 0 {
        return Err(Error::infra(format!(
            "{}: matched a bootloader error message while waiting for {what}: '{}'",
            a.name, hit.text
        )));
    }
    Ok(hit)
}

/// `bootloader-commands`: type each command and wait for its echo and the prompt (serial), or
/// watch the board run its boot script (network-driven); either way until "Starting kernel",
/// failing on U-Boot's error messages.
pub fn bootloader_commands(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let errors = error_patterns(ctx)?;
    let final_msg = match ctx.device.constants.final_message.as_str() {
        "" => "Starting kernel".to_string(),
        m => m.to_string(),
    };
    if ctx.env.boot_style == BootStyle::Network {
        session(ctx, a)?.reach(Milestone::CommandsSent);
        let what = format!("'{final_msg}' (the board runs its boot script)");
        expect_uboot(
            ctx,
            a,
            Pattern::literal(&final_msg),
            &errors,
            deadline,
            &what,
        )?;
        return Ok(());
    }
    let prompt = bootloader_prompt(ctx);
    let delay = ctx.device.boot_character_delay;
    let check = ctx.device.labboot.check_exit_codes;
    let rc =
        Pattern::regex(&format!("{RC_MARKER}=([0-9]+)")).map_err(|e| Error::bug(e.to_string()))?;
    let commands = ctx.st.commands.clone();
    for (i, cmd) in commands.iter().enumerate() {
        session(ctx, a)?.sendline(cmd, delay)?;
        // U-Boot echoes what it reads: the prompt that answers a command comes after its echo.
        let echo = format!("U-Boot to echo '{cmd}'");
        expect_uboot(
            ctx,
            a,
            Pattern::literal(cmd.trim_end()),
            &errors,
            deadline,
            &echo,
        )?;
        if i + 1 == commands.len() {
            session(ctx, a)?.reach(Milestone::CommandsSent);
            let what = format!("'{final_msg}' after '{cmd}'");
            expect_uboot(
                ctx,
                a,
                Pattern::literal(&final_msg),
                &errors,
                deadline,
                &what,
            )?;
            break;
        }
        let what = format!("the U-Boot prompt after '{cmd}'");
        expect_uboot(ctx, a, Pattern::literal(&prompt), &errors, deadline, &what)?;
        if check {
            session(ctx, a)?.sendline(&format!("echo {RC_MARKER}=$?"), delay)?;
            let what = format!("the exit code of '{cmd}'");
            let hit = expect_uboot(ctx, a, rc.clone(), &errors, deadline, &what)?;
            let code = hit.text.rsplit('=').next().unwrap_or("").trim().to_string();
            if code != "0" {
                return Err(Error::infra(format!(
                    "{}: U-Boot command '{cmd}' failed with exit code {code}",
                    a.name
                )));
            }
            let what = "the U-Boot prompt after the exit code";
            expect_uboot(ctx, a, Pattern::literal(&prompt), &errors, deadline, what)?;
        }
    }
    Ok(())
}
