//! After U-Boot: the kernel starts, the system comes up, a login if the job asks for one, and
//! the shell prompt the test shell needs.

use std::time::{Duration, Instant};

use crate::console::matcher::Pattern;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Action;
use crate::run::milestone::Milestone;
use crate::run::Ctx;

use super::boot::session;
use super::commands::boot_block;
use super::wait_error;

/// Kernel messages that end a boot at once (the software under test failed).
const KERNEL_FAILURES: [&str; 3] = [
    "Kernel panic - not syncing",
    "---\\[ end Kernel panic",
    "Unable to handle kernel NULL pointer dereference",
];

fn failures() -> Vec<Pattern> {
    KERNEL_FAILURES
        .iter()
        .filter_map(|p| Pattern::regex(p).ok())
        .collect()
}

/// `auto-login-action`: wait for the kernel's start message (if it has not passed already).
pub fn auto_login(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let msg = ctx.device.constants.kernel_start_message.clone();
    if msg.is_empty() {
        return Ok(());
    }
    let s = session(ctx, a)?;
    if s.milestone >= Milestone::LinuxVersion {
        return Ok(());
    }
    let mut pats = vec![Pattern::regex(&msg)
        .map_err(|e| Error::config(format!("constants.kernel-start-message '{msg}': {e}")))?];
    pats.extend(failures());
    let hit = s.wait(&pats, super::wait_until(a, deadline)).map_err(|e| {
        wait_error(
            ctx,
            a,
            ErrorKind::JobError,
            &format!("the kernel's start message '{msg}'"),
            e,
        )
    })?;
    if hit.index > 0 {
        return Err(Error::test(format!(
            "{}: the kernel failed: '{}'",
            a.name, hit.text
        )));
    }
    let s = session(ctx, a)?;
    s.reach(Milestone::LinuxVersion);
    Ok(())
}

/// `login-action`: the login prompt and credentials when `auto_login` is given, then one of the
/// job's `prompts`.
pub fn login(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let boot = boot_block(ctx, a)?;
    let prompts: Vec<Pattern> = boot.prompts.iter().map(|p| Pattern::literal(p)).collect();
    let auto = boot.auto_login.clone();
    let mut with_fail = prompts.clone();
    let nprompts = with_fail.len();
    with_fail.extend(failures());
    if let Some(al) = auto {
        let s = session(ctx, a)?;
        let mut pats = vec![Pattern::literal(&al.login_prompt)];
        pats.extend(failures());
        let hit = s.wait(&pats, super::wait_until(a, deadline)).map_err(|e| {
            wait_error(
                ctx,
                a,
                ErrorKind::JobError,
                &format!("the login prompt '{}'", al.login_prompt),
                e,
            )
        })?;
        if hit.index > 0 {
            return Err(Error::test(format!(
                "{}: the kernel failed: '{}'",
                a.name, hit.text
            )));
        }
        let s = session(ctx, a)?;
        s.reach(Milestone::LoginPrompt);
        s.sendline(&al.username, Duration::ZERO)?;
        if let (Some(pp), Some(pw)) = (&al.password_prompt, &al.password) {
            s.wait(&[Pattern::literal(pp)], super::wait_until(a, deadline))
                .map_err(|e| {
                    wait_error(
                        ctx,
                        a,
                        ErrorKind::JobError,
                        &format!("the password prompt '{pp}'"),
                        e,
                    )
                })?;
            let s = session(ctx, a)?;
            s.sendline(pw, Duration::ZERO)?;
        }
    }
    let s = session(ctx, a)?;
    let hit = s
        .wait(&with_fail, super::wait_until(a, deadline))
        .map_err(|e| {
            wait_error(
                ctx,
                a,
                ErrorKind::JobError,
                "the shell prompt (the job's prompts)",
                e,
            )
        })?;
    if hit.index >= nprompts {
        return Err(Error::test(format!(
            "{}: the kernel failed: '{}'",
            a.name, hit.text
        )));
    }
    let s = session(ctx, a)?;
    s.reach(Milestone::ShellPrompt);
    if let Some(al) = &boot.auto_login {
        for c in &al.login_commands {
            let s = session(ctx, a)?;
            s.sendline(c, Duration::ZERO)?;
            s.wait(&prompts, super::wait_until(a, deadline))
                .map_err(|e| {
                    wait_error(
                        ctx,
                        a,
                        ErrorKind::JobError,
                        &format!("the prompt after '{c}'"),
                        e,
                    )
                })?;
        }
    }
    Ok(())
}

/// `expect-shell-connection`: a fresh prompt in answer to a newline.
pub fn expect_shell(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let boot = boot_block(ctx, a)?;
    let prompts: Vec<Pattern> = boot.prompts.iter().map(|p| Pattern::literal(p)).collect();
    let until = deadline.min(Instant::now() + a.connection_timeout);
    let s = session(ctx, a)?;
    s.sendline("", Duration::ZERO)?;
    s.wait(&prompts, until).map_err(|e| {
        wait_error(
            ctx,
            a,
            ErrorKind::JobError,
            "the shell prompt after a newline",
            e,
        )
    })?;
    Ok(())
}
