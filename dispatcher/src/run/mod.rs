//! Runs a built pipeline: actions strictly in order, each under its own deadline (never later
//! than its parent's), retried as its `max_retries` allows, with `finalize` run whatever
//! happened before it.
//!
//! Cancellation (SIGINT/SIGTERM) is a flag every wait polls: the running action stops with
//! `Canceled`, results so far are kept, and finalize still powers the board off and releases
//! the job's exports.

pub mod milestone;
pub mod session;
pub mod state;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::actions;
use crate::device::{BootStyle, Device};
use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::logs::LogWriter;
use crate::pipeline::{Action, Pipeline};
use crate::results::Results;
use crate::services::LabServices;
use state::State;

/// What a run needs from its caller.
pub struct RunEnv {
    /// The job's id (names its exports and the overlay directory on the board).
    pub job_id: String,
    /// Where downloads, the overlay and the outputs go.
    pub output_dir: PathBuf,
    /// The lab's servers.
    pub services: Arc<dyn LabServices>,
    /// Set by SIGINT/SIGTERM.
    pub cancel: Arc<AtomicBool>,
    /// The job log.
    pub log: LogWriter,
    /// Whether downloads draw a progress bar (a terminal) or log progress lines.
    pub progress_bar: bool,
    /// How the board is booted.
    pub boot_style: BootStyle,
}

/// How a job ended.
pub struct Outcome {
    /// Every action passed.
    pub complete: bool,
    /// The error that ended the job, if any.
    pub error: Option<Error>,
    /// Results recorded.
    pub results: Results,
    /// Wall time of the run.
    pub duration: Duration,
}

/// Everything an action can reach while it runs.
pub struct Ctx<'a> {
    /// The job.
    pub job: &'a Job,
    /// The device.
    pub device: &'a Device,
    /// The caller's environment.
    pub env: &'a RunEnv,
    /// The state handed between actions.
    pub st: State,
    /// Results recorded so far.
    pub results: Results,
    /// Set while finalize runs: waits no longer stop for the cancel flag.
    pub finalizing: bool,
}

impl Ctx<'_> {
    /// The job log.
    pub fn log(&self) -> &LogWriter {
        &self.env.log
    }

    /// Fails with `Canceled` once the job was canceled (never during finalize).
    pub fn check_cancel(&self) -> Result<()> {
        if !self.finalizing && self.env.cancel.load(Ordering::SeqCst) {
            return Err(Error::canceled("the job was canceled (SIGINT/SIGTERM)"));
        }
        Ok(())
    }
}

/// Runs `pipeline`.
pub fn run(job: &Job, device: &Device, pipeline: &Pipeline, env: &RunEnv) -> Outcome {
    let started = Instant::now();
    let mut ctx = Ctx {
        job,
        device,
        env,
        st: State {
            tftp_dir: env.output_dir.join("tftp"),
            ..State::default()
        },
        results: Results::new(),
        finalizing: false,
    };
    ctx.results.set_job_id(&env.job_id);
    ctx.results.attach_log(env.log.clone());
    let job_deadline = started + pipeline.job_timeout;
    let (finalize, main) = match pipeline.actions.split_last() {
        Some((f, m)) if f.name == "finalize" => (Some(f), m),
        _ => (None, &pipeline.actions[..]),
    };
    let mut error = None;
    for action in main {
        if let Err(e) = run_action(&mut ctx, action, job_deadline, job_deadline) {
            error = Some(e);
            break;
        }
    }
    if let Some(e) = &error {
        env.log.error(&format!("{}: {}", e.kind, e.message));
    }
    // Finalize always runs, with its own time, even after a timeout or a cancel.
    ctx.finalizing = true;
    if let Some(f) = finalize {
        let deadline = Instant::now() + f.timeout;
        if let Err(e) = run_action(&mut ctx, f, deadline, deadline) {
            env.log
                .error(&format!("finalize: {}: {}", e.kind, e.message));
            if error.is_none() {
                error = Some(e);
            }
        }
    }
    actions::release(&mut ctx);
    let duration = started.elapsed();
    ctx.results.record_job(error.as_ref(), duration);
    Outcome {
        complete: error.is_none(),
        error,
        results: ctx.results,
        duration,
    }
}

fn run_action(
    ctx: &mut Ctx,
    a: &Action,
    parent_deadline: Instant,
    job_deadline: Instant,
) -> Result<()> {
    let mut attempt = 1;
    loop {
        ctx.check_cancel()?;
        let start = Instant::now();
        let deadline = parent_deadline.min(start + a.timeout);
        let line = format!(
            "start: {} {} (timeout {})",
            a.level,
            a.name,
            hms(deadline.saturating_duration_since(start))
        );
        if a.level.contains('.') {
            ctx.log().debug(&line);
        } else {
            ctx.log().info(&line);
        }
        let r = run_once(ctx, a, deadline, job_deadline);
        let took = start.elapsed();
        let end = format!("end: {} {} (duration {})", a.level, a.name, hms(took));
        if a.level.contains('.') {
            ctx.log().debug(&end);
        } else {
            ctx.log().info(&end);
        }
        ctx.results
            .record_action(&a.level, a.name, r.as_ref().err(), took, None);
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.kind == ErrorKind::Canceled => return Err(e),
            Err(e) if attempt < a.max_retries && Instant::now() < parent_deadline => {
                ctx.log().warning(&format!(
                    "{} failed (attempt {attempt} of {}): {}: {}; cleaning up and retrying",
                    a.name, a.max_retries, e.kind, e.message
                ));
                actions::cleanup_for_retry(ctx, a);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the step of `a`; a panic in it is labboot's defect (LAVABug), not the end of the
/// process: the job still reaches finalize.
fn execute_guarded(ctx: &mut Ctx, a: &Action, deadline: Instant) -> Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        actions::execute(ctx, a, deadline)
    })) {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Error::bug(format!(
                "{} {} panicked: {what}",
                a.level, a.name
            )))
        }
    }
}

fn run_once(ctx: &mut Ctx, a: &Action, deadline: Instant, job_deadline: Instant) -> Result<()> {
    let r = execute_guarded(ctx, a, deadline).and_then(|()| {
        for child in &a.children {
            run_action(ctx, child, deadline, job_deadline)?;
        }
        Ok(())
    });
    match r {
        Err(e)
            if !ctx.finalizing
                && Instant::now() >= job_deadline
                && e.kind != ErrorKind::Canceled =>
        {
            Err(Error::job(format!(
                "the job timed out after {} (in {} {}): {}",
                hms(ctx.job.timeouts.job),
                a.level,
                a.name,
                e.message
            )))
        }
        other => other,
    }
}

/// `HH:MM:SS` from an hour on, `MM:SS` below, as LAVA prints durations in its logs.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}
