//! `lava-test-shell`: start the board-side runner for one test block and follow its output on
//! the console — signals, each definition's parse pattern — recording every case, until the
//! runner says it has exited.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::pipeline::Action;
use crate::run::milestone::Milestone;
use crate::run::Ctx;
use crate::testdef::Tracked;

use super::boot::session;
use super::wait_error;

/// Runs the tests of test block `test_block`.
pub fn run(ctx: &mut Ctx, a: &Action, test_block: usize, deadline: Instant) -> Result<()> {
    let Some((_, info)) = ctx.st.overlay.clone() else {
        return Err(Error::job(format!(
            "{}: no overlay was deployed: a test needs a deploy with a ramdisk, nfsrootfs or nbd initrd before it",
            a.name
        )));
    };
    if info.tests_of_block(test_block).is_empty() {
        return Err(Error::bug(format!(
            "{}: no tests for actions[{test_block}] in the overlay",
            a.name
        )));
    }
    let command = info.runner_command(test_block);
    let mut tracker = info.tracker(test_block);
    {
        let s = session(ctx, a)?;
        s.collect_lines(true);
        s.sendline(&command, Duration::ZERO)?;
    }
    ctx.log().info(&format!("{}: started '{command}'", a.name));
    let result = follow(ctx, a, &mut tracker, deadline);
    if result.is_err() {
        for t in tracker.finish() {
            let _ = handle(ctx, a, t);
        }
    }
    if let Some(s) = ctx.st.session.as_mut() {
        s.collect_lines(false);
    }
    result
}

fn follow(
    ctx: &mut Ctx,
    a: &Action,
    tracker: &mut crate::testdef::RunTracker,
    deadline: Instant,
) -> Result<()> {
    loop {
        let line = session(ctx, a)?.next_line(deadline).map_err(|e| {
            wait_error(ctx, a, ErrorKind::TestError, "the test runner's signals", e)
        })?;
        for t in tracker.feed_line(&line) {
            if handle(ctx, a, t)? {
                return Ok(());
            }
        }
    }
}

/// Applies one tracked item; true when the runner has exited.
fn handle(ctx: &mut Ctx, a: &Action, t: Tracked) -> Result<bool> {
    match t {
        Tracked::RunStarted { suite, .. } => {
            if let Some(s) = ctx.st.session.as_mut() {
                s.reach(Milestone::TestRunnerStarted);
            }
            ctx.log().info(&format!("{}: {suite} started", a.name));
        }
        Tracked::RunEnded {
            suite, completed, ..
        } => {
            if completed {
                ctx.log().info(&format!("{}: {suite} ended", a.name));
            } else {
                ctx.log()
                    .warning(&format!("{}: {suite} ended without its ENDRUN", a.name));
            }
        }
        Tracked::Case { suite, case } => ctx.results.record(&suite, case),
        Tracked::Raise(msg) => {
            return Err(Error::test(format!("{}: the test raised: {msg}", a.name)));
        }
        Tracked::InstallFailed => ctx
            .log()
            .warning(&format!("{}: a definition's install steps failed", a.name)),
        Tracked::Note(n) => ctx.log().warning(&format!("{}: {n}", a.name)),
        Tracked::Signal(_) => {}
        Tracked::Finished => {
            ctx.log()
                .info(&format!("{}: the test runner exited", a.name));
            return Ok(true);
        }
    }
    Ok(false)
}
