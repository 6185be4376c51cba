//! What each action of the tree does when it runs ([`execute`]), grouped by phase: deploy
//! ([`deploy`], [`prepare`]), boot ([`commands`], [`boot`], [`login`], [`power`]) and test
//! ([`test_shell`], [`interactive`]).

pub mod boot;
pub mod commands;
pub mod deploy;
pub mod interactive;
pub mod login;
pub mod power;
pub mod prepare;
pub mod test_shell;

use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::{Action, Step};
use crate::run::session::WaitError;
use crate::run::Ctx;

/// Runs the step of `a` (its children are run by the runner afterwards).
pub fn execute(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    ctx.check_cancel()?;
    match &a.step {
        Step::Nothing(why) => {
            ctx.log().debug(&format!("{}: {why}", a.name));
            Ok(())
        }
        Step::Deploy => deploy::start(ctx, a),
        Step::Download { key } => deploy::download(ctx, a, key, deadline),
        Step::Repo {
            test_block,
            definition,
        } => prepare::resolve_definition(ctx, *test_block, *definition),
        Step::WriteOverlay => prepare::write_overlay(ctx),
        Step::ExtractNfsRootfs => prepare::extract_nfsrootfs(ctx, a),
        Step::ExtractModules => prepare::extract_modules(ctx, a),
        Step::ApplyOverlay => prepare::apply_overlay(ctx, a),
        Step::PrepareKernel => prepare::prepare_kernel(ctx, a),
        Step::CompressRamdisk => prepare::compress_ramdisk(ctx, a),
        Step::NbdExport => deploy::nbd_export(ctx, a),
        Step::BootloaderOverlay => commands::bootloader_overlay(ctx, a),
        Step::Connect => boot::connect(ctx),
        Step::HardReset => power::hard_reset(ctx),
        Step::SoftReboot => power::soft_reboot(ctx, a, deadline),
        Step::Interrupt => boot::interrupt(ctx, a, deadline),
        Step::BootloaderCommands => boot::bootloader_commands(ctx, a, deadline),
        Step::AutoLogin => login::auto_login(ctx, a, deadline),
        Step::Login => login::login(ctx, a, deadline),
        Step::ExpectShell => login::expect_shell(ctx, a, deadline),
        Step::TestShell { test_block } => test_shell::run(ctx, a, *test_block, deadline),
        Step::Interactive { test_block } => interactive::run(ctx, a, *test_block, deadline),
        Step::PowerOff => power::power_off(ctx),
    }
}

/// Before an action runs again after a failure: the console is closed and reopened by the
/// retried actions, and the board starts over.
pub fn cleanup_for_retry(ctx: &mut Ctx, a: &Action) {
    if let Some(s) = ctx.st.session.as_mut() {
        s.drain(std::time::Duration::from_millis(200));
        s.close();
    }
    ctx.st.session = None;
    ctx.log()
        .debug(&format!("{}: console closed before the retry", a.name));
}

/// After finalize: the console closed, the board's network boot script cleared, the job's
/// files and exports released.
pub fn release(ctx: &mut Ctx) {
    if let Some(s) = ctx.st.session.as_mut() {
        s.drain(std::time::Duration::from_millis(200));
        s.close();
    }
    ctx.st.session = None;
    if ctx.st.boot_script_set {
        if let Some(board) = ctx.device.labboot.board_id.as_deref() {
            if let Err(e) = ctx.env.services.set_boot_script(board, None) {
                ctx.log()
                    .error(&format!("clearing the boot script of {board}: {e}"));
            }
        }
        ctx.st.boot_script_set = false;
    }
    if let Err(e) = ctx.env.services.release(&ctx.env.job_id) {
        ctx.log()
            .error(&format!("releasing the job's exports: {e}"));
    } else {
        ctx.log()
            .info("finalize: the job's TFTP files and exports were removed");
    }
}

/// When one console wait ends: the action's deadline, or sooner its connection timeout (LAVA's
/// limit on each wait for a prompt or message).
pub fn wait_until(a: &Action, deadline: Instant) -> Instant {
    deadline.min(Instant::now() + a.connection_timeout)
}

/// The error for a console wait that did not match, of class `kind` for a timeout, naming the
/// action, what it waited for and the last milestone reached.
pub fn wait_error(ctx: &Ctx, a: &Action, kind: ErrorKind, what: &str, e: WaitError) -> Error {
    let milestone = ctx
        .st
        .session
        .as_ref()
        .map(|s| s.milestone.as_str())
        .unwrap_or("none");
    match e {
        WaitError::Canceled => Error::canceled(format!(
            "{} canceled while waiting for {what} (last milestone: {milestone})",
            a.name
        )),
        WaitError::Closed => Error::infra(format!(
            "{}: the console connection closed while waiting for {what} (last milestone: {milestone})",
            a.name
        )),
        WaitError::Timeout => Error::new(
            kind,
            format!(
                "{} timed out waiting for {what} (action timeout {}, connection timeout {}; last milestone: {milestone})",
                a.name,
                crate::run::hms(a.timeout),
                crate::run::hms(a.connection_timeout)
            ),
        ),
    }
}
