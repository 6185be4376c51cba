//! After U-Boot: the kernel starts, the system comes up, a login if the job asks for one, and
//! the shell prompt the test shell needs.

use std::time::{Duration, Instant};

use crate::console::matcher::Pattern;
use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Action;
use crate::run::milestone::Milestone;
use crate::run::session::Hit;
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

/// Waits for the first of `wanted` while watching for a kernel failure (a TestError: the
/// software under test failed); a timeout is a JobError, as LAVA's login actions raise.
fn expect_system(
    ctx: &mut Ctx,
    a: &Action,
    wanted: &[Pattern],
    deadline: Instant,
    what: &str,
) -> Result<Hit> {
    let mut pats = wanted.to_vec();
    pats.extend(failures());
    let r = session(ctx, a)?.wait(&pats, super::wait_until(a, deadline));
    let hit = r.map_err(|e| wait_error(ctx, a, ErrorKind::JobError, what, e))?;
    if hit.index >= wanted.len() {
        return Err(Error::test(format!(
            "{}: the kernel failed while waiting for {what}: '{}'",
            a.name, hit.text
        )));
    }
    Ok(hit)
}

/// `auto-login-action`: wait for the kernel's start message (if it has not passed already).
pub fn auto_login(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let msg = ctx.device.constants.kernel_start_message.clone();
    if msg.is_empty() || session(ctx, a)?.milestone >= Milestone::LinuxVersion {
        return Ok(());
    }
    let start = Pattern::regex(&msg).map_err(|e| {
        Error::config(format!(
            "{}: constants.kernel-start-message '{msg}': {e}",
            ctx.device.file
        ))
    })?;
    let what = format!("the kernel's start message '{msg}'");
    expect_system(ctx, a, &[start], deadline, &what)?;
    session(ctx, a)?.reach(Milestone::LinuxVersion);
    Ok(())
}

/// `login-action`: the login prompt and credentials when `auto_login` is given, then one of the
/// job's `prompts`, then the login commands.
pub fn login(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let boot = boot_block(ctx, a)?;
    let prompts: Vec<Pattern> = boot.prompts.iter().map(|p| Pattern::literal(p)).collect();
    if let Some(al) = &boot.auto_login {
        let what = format!("the login prompt '{}'", al.login_prompt);
        expect_system(
            ctx,
            a,
            &[Pattern::literal(&al.login_prompt)],
            deadline,
            &what,
        )?;
        let s = session(ctx, a)?;
        s.reach(Milestone::LoginPrompt);
        s.sendline(&al.username, Duration::ZERO)?;
        if let (Some(pp), Some(pw)) = (&al.password_prompt, &al.password) {
            let what = format!("the password prompt '{pp}'");
            expect_system(ctx, a, &[Pattern::literal(pp)], deadline, &what)?;
            session(ctx, a)?.sendline(pw, Duration::ZERO)?;
        }
    }
    expect_system(
        ctx,
        a,
        &prompts,
        deadline,
        "the shell prompt (the job's prompts)",
    )?;
    session(ctx, a)?.reach(Milestone::ShellPrompt);
    for c in boot.auto_login.iter().flat_map(|al| &al.login_commands) {
        session(ctx, a)?.sendline(c, Duration::ZERO)?;
        expect_system(
            ctx,
            a,
            &prompts,
            deadline,
            &format!("the prompt after '{c}'"),
        )?;
    }
    Ok(())
}

/// `expect-shell-connection`: a fresh prompt in answer to a newline.
pub fn expect_shell(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    let boot = boot_block(ctx, a)?;
    let prompts: Vec<Pattern> = boot.prompts.iter().map(|p| Pattern::literal(p)).collect();
    session(ctx, a)?.sendline("", Duration::ZERO)?;
    expect_system(
        ctx,
        a,
        &prompts,
        deadline,
        "the shell prompt after a newline",
    )?;
    Ok(())
}
