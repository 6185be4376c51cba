//! A test block on the board: the runner's work item, its output followed through the
//! dispatcher's tracker into the results and the log.

use super::*;

/// Runs test block `index` and records its actions' results.
pub(super) fn run_block(
    s: &mut Session,
    plan: &Plan,
    results: &mut Results,
    info: &OverlayInfo,
    index: usize,
    common: &BlockCommon,
    job_deadline: Instant,
) -> dispatcher::Result<()> {
    let log = plan.log;
    let level = (index + 1).to_string();
    let child_level = format!("{level}.1");
    let (parent_t, child_t) = block_timeouts(plan.job, plan.device, common);
    if common.failure_retry.unwrap_or(1) > 1 {
        log.warning(&format!(
            "actions[{index}]: failure_retry is not applied to a job run through the agent: the block runs once"
        ));
    }
    let start = Instant::now();
    if start >= job_deadline {
        return Err(Error::job(format!(
            "the job timed out after {} (before test block actions[{index}])",
            hms(plan.job.timeouts.job)
        )));
    }
    let parent_deadline = job_deadline.min(after(start, parent_t));
    let deadline = parent_deadline.min(after(start, child_t));
    log.info(&format!(
        "start: {level} lava-test-retry (timeout {})",
        hms(parent_deadline.saturating_duration_since(start))
    ));
    log.debug(&format!(
        "start: {child_level} lava-test-shell (timeout {})",
        hms(deadline.saturating_duration_since(start))
    ));
    let r = run_tests(s, plan, results, info, index, child_t, start, deadline);
    let took = start.elapsed();
    log.debug(&format!(
        "end: {child_level} lava-test-shell (duration {})",
        hms(took)
    ));
    results.record_action(
        &child_level,
        "lava-test-shell",
        r.as_ref().err(),
        took,
        None,
    );
    log.info(&format!(
        "end: {level} lava-test-retry (duration {})",
        hms(took)
    ));
    results.record_action(&level, "lava-test-retry", r.as_ref().err(), took, None);
    r
}

/// The `lava-test-shell` of test block `index`: the runner on the board, its output tracked.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_tests(
    s: &mut Session,
    plan: &Plan,
    results: &mut Results,
    info: &OverlayInfo,
    index: usize,
    timeout: Duration,
    start: Instant,
    deadline: Instant,
) -> dispatcher::Result<()> {
    let log = plan.log;
    let secs = ceil_secs(deadline.saturating_duration_since(start)).max(1);
    // KILL: a shell defers a trapped TERM until its foreground child (run.sh) ends, so TERM
    // would not stop a hung test; the definition then counts as unfinished.
    let command = format!("timeout -s KILL {secs} {} 2>&1", info.runner_command(index));
    log.info(&format!("lava-test-shell: started '{command}'"));
    let work = s.step(
        &format!("test block actions[{index}]"),
        WorkKind::Run { command },
        after(deadline, REPORT_GRACE),
    )?;
    let stdout = work.stdout.as_deref().unwrap_or_default();
    let mut tracker = info.tracker(index);
    let followed = follow_output(stdout, &mut tracker, results, log);
    if let Some(err) = work.stderr.as_deref().filter(|e| !e.is_empty()) {
        // With 2>&1 only the agent's own shell writes here (e.g. a missing `timeout`).
        for line in String::from_utf8_lossy(err).lines() {
            log.target(line.trim_end_matches('\r'));
        }
    }
    if stdout.len() >= AGENT_OUTPUT_CAP {
        log.warning(&format!(
            "lava-test-shell: the runner wrote {} bytes or more: the agent reports only the first {}, results after them are lost",
            AGENT_OUTPUT_CAP, AGENT_OUTPUT_CAP
        ));
    }
    if !followed.finished {
        for t in tracker.finish() {
            let _ = handle(results, log, t);
        }
    }
    let ran_ms = match (work.taken, work.done) {
        (Some(t), Some(d)) => d.saturating_sub(t),
        _ => 0,
    };
    let exit = work.exit.unwrap_or(-1);
    let timed_out = exit != 0
        && (exit == 124 || ran_ms.saturating_add(1000) >= (secs as i64).saturating_mul(1000));
    if let Some(msg) = followed.raised {
        return Err(Error::test(format!(
            "lava-test-shell: the test raised: {msg}"
        )));
    }
    if timed_out {
        return Err(Error::test(format!(
            "lava-test-shell timed out waiting for the test runner's signals (action timeout {}; the board stopped the runner after {secs} s)",
            hms(timeout)
        )));
    }
    if !followed.finished {
        let last = String::from_utf8_lossy(stdout)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        let message = format!(
            "lava-test-shell: the test runner ended (exit {}) without <LAVA_TEST_RUNNER EXIT>{last}",
            exit_text(work.exit)
        );
        // 126/127: the shell could not start the runner (the overlay is not where it should be).
        return Err(if exit == 126 || exit == 127 {
            Error::infra(format!("board {}: {message}", s.link.board()))
        } else {
            Error::test(message)
        });
    }
    log.info(&format!(
        "lava-test-shell: the test runner exited ({} lines of output, exit {})",
        followed.lines,
        exit_text(work.exit)
    ));
    Ok(())
}

/// What the runner's output said.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Followed {
    /// `<LAVA_TEST_RUNNER EXIT>` arrived.
    pub(super) finished: bool,
    /// A `lava-test-raise` stopped the tracking, with its message.
    pub(super) raised: Option<String>,
    /// Lines of output.
    pub(super) lines: usize,
}

/// Logs the runner's output as `target` lines and feeds it to `tracker` as the test shell
/// feeds console lines, recording results, until the runner's end or a raise.
pub(super) fn follow_output(
    output: &[u8],
    tracker: &mut RunTracker,
    results: &mut Results,
    log: &LogWriter,
) -> Followed {
    let mut f = Followed::default();
    let body = output.strip_suffix(b"\n").unwrap_or(output);
    if output.is_empty() {
        return f;
    }
    for raw in body.split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches('\r');
        f.lines += 1;
        log.target(line);
        if f.finished || f.raised.is_some() {
            continue;
        }
        for t in tracker.feed_line(line) {
            match handle(results, log, t) {
                Control::Go => {}
                Control::Finished => {
                    f.finished = true;
                    break;
                }
                Control::Raised(msg) => {
                    f.raised = Some(msg);
                    break;
                }
            }
        }
    }
    f
}

/// What to do after a tracked item.
pub(super) enum Control {
    Go,
    Finished,
    Raised(String),
}

/// Applies one tracked item as `actions::test_shell` does.
pub(super) fn handle(results: &mut Results, log: &LogWriter, t: Tracked) -> Control {
    const NAME: &str = "lava-test-shell";
    match t {
        Tracked::RunStarted { suite, .. } => log.info(&format!("{NAME}: {suite} started")),
        Tracked::RunEnded {
            suite, completed, ..
        } => {
            if completed {
                log.info(&format!("{NAME}: {suite} ended"));
            } else {
                log.warning(&format!("{NAME}: {suite} ended without its ENDRUN"));
            }
        }
        Tracked::Case { suite, case } => results.record(&suite, case),
        Tracked::Raise(msg) => return Control::Raised(msg),
        Tracked::InstallFailed => {
            log.warning(&format!("{NAME}: a definition's install steps failed"))
        }
        Tracked::Note(n) => log.warning(&format!("{NAME}: {n}")),
        Tracked::Signal(_) => {}
        Tracked::Finished => {
            log.info(&format!("{NAME}: the test runner exited"));
            return Control::Finished;
        }
    }
    Control::Go
}

/// An exit code for a message.
pub(super) fn exit_text(exit: Option<i32>) -> String {
    exit.map_or_else(|| "unknown".to_string(), |e| e.to_string())
}

/// A command's output for a message: one line, at most 500 characters.
pub(super) fn output_text(out: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(out.unwrap_or_default());
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}
