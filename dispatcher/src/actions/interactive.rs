//! `lava-test-interactive`: script-style steps on the console — send a command, wait for a
//! prompt, a success or a failure pattern — each named step recorded pass or fail.

use std::time::{Duration, Instant};

use crate::console::matcher::Pattern;
use crate::error::{Error, ErrorKind, Result};
use crate::job::ActionBlock;
use crate::pipeline::Action;
use crate::run::Ctx;

use super::boot::session;
use super::wait_error;

/// Runs the interactive scripts of test block `test_block`.
pub fn run(ctx: &mut Ctx, a: &Action, test_block: usize, deadline: Instant) -> Result<()> {
    let Some(ActionBlock::Test(t)) = ctx.job.actions.get(test_block) else {
        return Err(Error::bug(format!(
            "actions[{test_block}] is not a test block"
        )));
    };
    let mut failed = Vec::new();
    for script in &t.interactive {
        let suite = script.name.clone();
        let prompts: Vec<Pattern> = script.prompts.iter().map(|p| Pattern::literal(p)).collect();
        for step in &script.script {
            if let Some(cmd) = &step.command {
                session(ctx, a)?.sendline(cmd, Duration::ZERO)?;
            }
            // Order: failures, then successes, then the prompts.
            let mut pats = Vec::new();
            for f in &step.failures {
                pats.push(
                    Pattern::regex(f)
                        .map_err(|e| Error::job(format!("{suite}: failures '{f}': {e}")))?,
                );
            }
            let nf = pats.len();
            for s in &step.successes {
                pats.push(
                    Pattern::regex(s)
                        .map_err(|e| Error::job(format!("{suite}: successes '{s}': {e}")))?,
                );
            }
            let ns = pats.len();
            pats.extend(prompts.iter().cloned());
            let what = step.command.clone().unwrap_or_else(|| "a prompt".into());
            let hit = session(ctx, a)?
                .wait(&pats, super::wait_until(a, deadline))
                .map_err(|e| {
                    wait_error(
                        ctx,
                        a,
                        ErrorKind::TestError,
                        &format!("the answer to '{what}'"),
                        e,
                    )
                })?;
            let passed = if hit.index < nf {
                false
            } else if hit.index < ns {
                // A success: the prompt still follows.
                if !prompts.is_empty() {
                    session(ctx, a)?
                        .wait(&prompts, super::wait_until(a, deadline))
                        .map_err(|e| wait_error(ctx, a, ErrorKind::TestError, "the prompt", e))?;
                }
                true
            } else {
                step.successes.is_empty()
            };
            if let Some(name) = &step.name {
                let res = if passed { "pass" } else { "fail" };
                ctx.results.record_case(&suite, None, name, res, None, None);
                if !passed {
                    failed.push(format!("{suite}.{name}"));
                }
            }
        }
    }
    if !failed.is_empty() {
        ctx.log()
            .warning(&format!("{}: failed steps: {}", a.name, failed.join(", ")));
    }
    Ok(())
}
