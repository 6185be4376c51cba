//! Jobs whose only actions are tests in the master image run through the board's agent: no
//! power, no reboot. The job's test definitions become an overlay the agent fetches, the
//! agent runs LAVA's test runner from it, and its output is parsed for LAVA's signals.
//!
//! The steps, each one work item of the agent (see `API.md`, "Agent"):
//! 1. the definitions are resolved and the overlay written as the dispatcher does for a
//!    normal job (`<dir>/overlay/lava-<job>`), then packed into `<dir>/agent/overlay.tar.gz`;
//! 2. the agent fetches it from `/api/v1/agent/files/<job>/overlay.tar.gz` and unpacks it into
//!    `/`;
//! 3. each test block runs `lava-test-runner` under busybox `timeout` (the block's time, so a
//!    runaway test cannot hold the agent forever); its output (stderr merged) goes through the
//!    dispatcher's tracker into the results, and into the log as `target` lines;
//! 4. `/lava-<job>` and the tarball are removed from the board, whatever happened.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher::device::Device;
use dispatcher::error::{Error, ErrorKind};
use dispatcher::job::{ActionBlock, BlockCommon, Job};
use dispatcher::logs::LogWriter;
use dispatcher::overlay::OverlayInfo;
use dispatcher::results::Results;
use dispatcher::run::hms;
use dispatcher::testdef::{ResolvedDefinition, RunTracker, Tracked};

use super::runner::Ending;
use super::App;
use crate::store::{JobHealth, JobId, Work, WorkId, WorkKind};

/// LAVA's default action timeout (the dispatcher's `pipeline::timeouts::DEFAULT`).
const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the appliance waits for a runner's report after the board-side `timeout` expired
/// (the agent uploads up to 2 MiB of output and may check in first).
const REPORT_GRACE: Duration = Duration::from_secs(60);
/// How long the final clean-up on the board may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a wait looks at the store when no report wakes it.
const POLL_SLICE: Duration = Duration::from_millis(200);
/// The agent reports at most this much of a command's stdout (see `labboot-agent.sh`).
const AGENT_OUTPUT_CAP: usize = 1 << 20;
/// The name of the overlay tarball in `<dir>/agent`.
const OVERLAY_TARBALL: &str = "overlay.tar.gz";
/// The OS the overlay is written for: the dispatcher's when no deploy names one.
const OVERLAY_OS: &str = "oe";

/// Whether every action of `job` is a test (nothing deployed or booted).
pub fn is_agent_job(job: &Job) -> bool {
    !job.actions.is_empty()
        && job
            .actions
            .iter()
            .all(|a| matches!(a, ActionBlock::Test(_)))
}

/// Runs `job` through `board`'s agent.
pub fn run(
    app: &Arc<App>,
    id: JobId,
    job: &Job,
    board: &str,
    cancel: &Arc<AtomicBool>,
    dir: &Path,
    log: &LogWriter,
) -> Ending {
    // The device, when the config has one for the board, only adds its action timeouts.
    let device = match app.registry.device(board, &job.context) {
        Ok(d) => Some(d),
        Err(e) => {
            log.debug(&format!(
                "board {board}: no device ({}): the job's own timeouts apply",
                e.message
            ));
            None
        }
    };
    let link = AppLink::new(app, board, id);
    let files = format!(
        "http://{}/api/v1/agent/files/{id}",
        SocketAddr::new(app.server_ip, app.http_addr.port())
    );
    let plan = Plan {
        job_id: id,
        job,
        device: device.as_ref(),
        dir,
        files_url: files,
        log,
        cancel,
    };
    execute(&link, &plan)
}

/// The board's agent as a job sees it: a trait, so the tests can stand in for a board.
trait AgentLink {
    /// The board's id.
    fn board(&self) -> &str;
    /// Queues `kind` for the agent (and wakes its poll).
    fn queue(&self, kind: &WorkKind) -> Result<WorkId, String>;
    /// The work item as the store has it now.
    fn work(&self, id: WorkId) -> Result<Option<Work>, String>;
    /// Waits up to `slice`, or less if the agent reports something.
    fn wait(&self, slice: Duration);
    /// Drops the board's work not yet reported (abandoned steps must never run later).
    fn drop_pending(&self);
}

/// [`AgentLink`] through the appliance's store and registry.
struct AppLink<'a> {
    app: &'a App,
    board: &'a str,
    job: JobId,
    /// Runs `Registry::wait_report` on this (plain) thread; None: sleep instead.
    rt: Option<tokio::runtime::Runtime>,
}

impl<'a> AppLink<'a> {
    fn new(app: &'a App, board: &'a str, job: JobId) -> AppLink<'a> {
        // block_on must not run inside a runtime: the job thread never is, but check.
        let rt = if tokio::runtime::Handle::try_current().is_err() {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .ok()
        } else {
            None
        };
        AppLink {
            app,
            board,
            job,
            rt,
        }
    }
}

impl AgentLink for AppLink<'_> {
    fn board(&self) -> &str {
        self.board
    }

    fn queue(&self, kind: &WorkKind) -> Result<WorkId, String> {
        let id = self
            .app
            .store
            .add_work(self.board, Some(self.job), kind)
            .map_err(|e| e.to_string())?;
        self.app.registry.work_queued(self.board);
        Ok(id)
    }

    fn work(&self, id: WorkId) -> Result<Option<Work>, String> {
        self.app.store.work(id).map_err(|e| e.to_string())
    }

    fn wait(&self, slice: Duration) {
        match &self.rt {
            Some(rt) => rt.block_on(self.app.registry.wait_report(self.board, slice)),
            None => std::thread::sleep(slice),
        }
    }

    fn drop_pending(&self) {
        if let Err(e) = self.app.store.drop_pending_work(self.board) {
            tracing::warn!(
                board = self.board,
                "cannot drop the board's pending work: {e}"
            );
        }
    }
}

/// What [`execute`] needs besides the agent.
struct Plan<'a> {
    job_id: JobId,
    job: &'a Job,
    device: Option<&'a Device>,
    /// The job's output directory.
    dir: &'a Path,
    /// `http://ADDRESS:PORT/api/v1/agent/files/<job>`.
    files_url: String,
    log: &'a LogWriter,
    cancel: &'a AtomicBool,
}

/// Runs the job's steps on the board, cleans up, and records the job's outcome.
fn execute(link: &dyn AgentLink, plan: &Plan) -> Ending {
    let started = Instant::now();
    let log = plan.log;
    let mut results = Results::new();
    results.set_job_id(&plan.job_id.to_string());
    results.attach_log(log.clone());
    let mut session = Session {
        link,
        cancel: plan.cancel,
        log,
        abandoned: false,
    };
    let error = steps(&mut session, plan, &mut results, started).err();
    if let Some(e) = &error {
        log.error(&format!("{}: {}", e.kind, e.message));
    }
    session.cleanup(plan.job_id);
    results.record_job(error.as_ref(), started.elapsed());
    let yaml = match results.to_yaml() {
        Ok(y) => Some(y),
        Err(e) => {
            log.error(&format!("results.yaml: {}", e.message));
            None
        }
    };
    if yaml.is_some() {
        if let Err(e) = results.write(&plan.dir.join("results.yaml")) {
            log.warning(&e.message);
        }
    }
    let (health, error) = match error {
        None => (JobHealth::Complete, None),
        Some(e) => (
            if e.kind == ErrorKind::Canceled {
                JobHealth::Canceled
            } else {
                JobHealth::Incomplete
            },
            Some((e.kind.as_str().to_string(), e.message)),
        ),
    };
    Ending {
        health,
        error,
        results: yaml,
    }
}

/// `start + d`, without overflowing on absurd timeouts.
fn after(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d)
        .or_else(|| start.checked_add(Duration::from_secs(10 * 365 * 86400)))
        .unwrap_or(start)
}

/// Whole seconds of `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Everything before the clean-up: the overlay, its transfer, each test block.
fn steps(
    s: &mut Session,
    plan: &Plan,
    results: &mut Results,
    started: Instant,
) -> dispatcher::Result<()> {
    let job = plan.job;
    let job_deadline = after(started, job.timeouts.job);
    for (i, block) in job.actions.iter().enumerate() {
        if let ActionBlock::Test(t) = block {
            if !t.interactive.is_empty() {
                return Err(Error::job(format!(
                    "actions[{i}] (job line {}): interactive tests need the board's console: a job run through the agent can only run test definitions",
                    t.common.line
                )));
            }
        }
    }
    let defs = resolve_definitions(job, plan.dir, plan.log, plan.cancel)?;
    let root = plan.dir.join("overlay");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::infra(format!("create {}: {e}", root.display())))?;
    let info =
        dispatcher::overlay::write_overlay(&root, &plan.job_id.to_string(), &defs, OVERLAY_OS)?;
    drop(defs);
    plan.log.info(&format!(
        "overlay written to {} ({} test definitions)",
        root.display(),
        info.suites.len()
    ));
    let agent_dir = plan.dir.join("agent");
    std::fs::create_dir_all(&agent_dir)
        .map_err(|e| Error::infra(format!("create {}: {e}", agent_dir.display())))?;
    let tarball = agent_dir.join(OVERLAY_TARBALL);
    let size = pack_overlay(&root, &tarball)?;
    plan.log.info(&format!(
        "overlay packed as {} ({size} bytes)",
        tarball.display()
    ));

    let board = s.link.board().to_string();
    let on_board = board_tarball(plan.job_id);
    let url = format!("{}/{OVERLAY_TARBALL}", plan.files_url);
    let fetched = s.step(
        "fetching the overlay",
        WorkKind::Fetch {
            url: url.clone(),
            path: on_board.clone(),
        },
        job_deadline,
    )?;
    if fetched.exit != Some(0) {
        return Err(Error::infra(format!(
            "fetching the overlay: board {board}'s agent could not fetch {url} (exit {}): {}",
            exit_text(fetched.exit),
            output_text(fetched.stderr.as_deref())
        )));
    }
    plan.log.info(&format!(
        "board {board} fetched the overlay to {on_board} ({} bytes)",
        output_text(fetched.stdout.as_deref())
    ));
    let unpacked = s.step(
        "unpacking the overlay",
        WorkKind::Run {
            command: format!("tar -C / -xzf {on_board}"),
        },
        job_deadline,
    )?;
    if unpacked.exit != Some(0) {
        let mut why = output_text(unpacked.stderr.as_deref());
        if why.is_empty() {
            why = output_text(unpacked.stdout.as_deref());
        }
        return Err(Error::infra(format!(
            "unpacking the overlay: 'tar -C / -xzf {on_board}' failed on board {board} (exit {}): {why}",
            exit_text(unpacked.exit)
        )));
    }
    plan.log.info(&format!(
        "board {board}: overlay unpacked into {}",
        info.board_dir
    ));

    for (i, block) in job.actions.iter().enumerate() {
        let ActionBlock::Test(t) = block else {
            continue;
        };
        if info.tests_of_block(i).is_empty() {
            continue;
        }
        run_block(s, plan, results, &info, i, &t.common, job_deadline)?;
    }
    Ok(())
}

/// Resolves every definition of the job as the dispatcher's `*-repo-action`s do.
fn resolve_definitions(
    job: &Job,
    dir: &Path,
    log: &LogWriter,
    cancel: &AtomicBool,
) -> dispatcher::Result<Vec<ResolvedDefinition>> {
    let fetch_dir = dir.join("downloads").join("testdefs");
    let mut out = Vec::new();
    // The suite index counts every definition of the job, in order (`<index>_<name>`).
    let mut global = 0;
    for (block, a) in job.actions.iter().enumerate() {
        let ActionBlock::Test(t) = a else { continue };
        for (index, def) in t.definitions.iter().enumerate() {
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::canceled("the job was canceled"));
            }
            let fetch = |url: &str| -> dispatcher::Result<Vec<u8>> {
                let art = dispatcher::job::Artifact {
                    key: format!("definition {}", def.name),
                    url: url.to_string(),
                    ..Default::default()
                };
                let got = dispatcher::artifacts::fetch(&art, &fetch_dir, &mut |_| {})?;
                std::fs::read(&got.path)
                    .map_err(|e| Error::infra(format!("read {}: {e}", got.path.display())))
            };
            let mut resolved = dispatcher::testdef::resolve(def, global, &fetch)?;
            resolved.block = block;
            log.info(&format!(
                "test definition {index} '{}' of actions[{block}] loaded ({})",
                def.name,
                resolved.describe_source()
            ));
            out.push(resolved);
            global += 1;
        }
    }
    Ok(out)
}

/// Where the agent puts the overlay tarball.
fn board_tarball(job: JobId) -> String {
    format!("/tmp/lava-overlay-{job}.tar.gz")
}

/// The timeout of action `name` of a test block: `dispatcher::pipeline`'s precedence (the
/// job's `action`, the device's, the block's `timeout`, a retrying parent's share, the job's
/// `actions.<name>`, the block's `timeouts.<name>`), where the device may be unknown.
fn action_timeout(
    job: &Job,
    device: Option<&Device>,
    block: &BlockCommon,
    parent: Option<(Duration, u32)>,
    name: &str,
) -> Duration {
    let mut t = job.timeouts.action.unwrap_or(DEFAULT_ACTION_TIMEOUT);
    if let Some(d) = device.and_then(|d| d.action_timeouts.get(name)) {
        t = *d;
    }
    if let Some(d) = block.timeout {
        t = d;
    }
    if let Some((pt, retries)) = parent {
        if retries > 1 {
            t = Duration::from_secs(pt.as_secs() / u64::from(retries));
        }
    }
    if let Some(d) = job.timeouts.actions.get(name) {
        t = *d;
    }
    if let Some(d) = block.timeouts.get(name) {
        t = *d;
    }
    t
}

/// A test block's (`lava-test-retry`, `lava-test-shell`) timeouts, as the pipeline gives them.
fn block_timeouts(job: &Job, device: Option<&Device>, block: &BlockCommon) -> (Duration, Duration) {
    let retries = block.failure_retry.unwrap_or(1).max(1);
    let parent = action_timeout(job, device, block, None, "lava-test-retry");
    let child = action_timeout(
        job,
        device,
        block,
        Some((parent, retries)),
        "lava-test-shell",
    );
    (parent, child)
}

/// Runs test block `index` and records its actions' results.
fn run_block(
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
fn run_tests(
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
struct Followed {
    /// `<LAVA_TEST_RUNNER EXIT>` arrived.
    finished: bool,
    /// A `lava-test-raise` stopped the tracking, with its message.
    raised: Option<String>,
    /// Lines of output.
    lines: usize,
}

/// Logs the runner's output as `target` lines and feeds it to `tracker` as the test shell
/// feeds console lines, recording results, until the runner's end or a raise.
fn follow_output(
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
enum Control {
    Go,
    Finished,
    Raised(String),
}

/// Applies one tracked item as `actions::test_shell` does.
fn handle(results: &mut Results, log: &LogWriter, t: Tracked) -> Control {
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
fn exit_text(exit: Option<i32>) -> String {
    exit.map_or_else(|| "unknown".to_string(), |e| e.to_string())
}

/// A command's output for a message: one line, at most 500 characters.
fn output_text(out: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(out.unwrap_or_default());
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

/// The job's exchanges with the agent.
struct Session<'a> {
    link: &'a dyn AgentLink,
    cancel: &'a AtomicBool,
    log: &'a LogWriter,
    /// A step was given up before its report: its work must not run later.
    abandoned: bool,
}

impl Session<'_> {
    /// Queues `kind` and waits for its report until `deadline` or the job's cancel.
    fn step(&mut self, what: &str, kind: WorkKind, deadline: Instant) -> dispatcher::Result<Work> {
        self.wait_for(what, kind, deadline, true)
    }

    fn wait_for(
        &mut self,
        what: &str,
        kind: WorkKind,
        deadline: Instant,
        cancelable: bool,
    ) -> dispatcher::Result<Work> {
        let board = self.link.board().to_string();
        if cancelable && self.cancel.load(Ordering::SeqCst) {
            return Err(Error::canceled(format!(
                "the job was canceled before {what}"
            )));
        }
        let queued = Instant::now();
        let id = self.link.queue(&kind).map_err(|e| {
            Error::infra(format!("{what}: cannot queue work for board {board}: {e}"))
        })?;
        self.log.debug(&format!(
            "{what}: work {id} queued for board {board}'s agent"
        ));
        loop {
            match self.link.work(id) {
                Ok(Some(w)) if w.done.is_some() => return Ok(w),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Error::infra(format!(
                        "{what}: work {id} of board {board} was dropped before its report (did the board restart?)"
                    )))
                }
                Err(e) => {
                    self.abandoned = true;
                    return Err(Error::infra(format!("{what}: work {id}: {e}")));
                }
            }
            if cancelable && self.cancel.load(Ordering::SeqCst) {
                self.abandoned = true;
                return Err(Error::canceled(format!(
                    "the job was canceled while board {board}'s agent ran {what} (work {id})"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                self.abandoned = true;
                let taken = match self.link.work(id) {
                    Ok(Some(w)) if w.taken.is_some() => "it took the work and is still running it",
                    _ => "it never took the work",
                };
                return Err(Error::infra(format!(
                    "{what}: board {board}'s agent did not report work {id} within {} s ({taken})",
                    ceil_secs(deadline.saturating_duration_since(queued))
                )));
            }
            self.link
                .wait(POLL_SLICE.min(deadline.saturating_duration_since(now)));
        }
    }

    /// Removes the overlay and the tarball from the board (best effort, short deadline).
    fn cleanup(&mut self, job: JobId) {
        if self.abandoned {
            // Steps given up on must not run when the agent comes back.
            self.link.drop_pending();
        }
        let command = format!("rm -rf /lava-{job} {}", board_tarball(job));
        let deadline = after(Instant::now(), CLEANUP_TIMEOUT);
        match self.wait_for(
            "cleaning up",
            WorkKind::Run {
                command: command.clone(),
            },
            deadline,
            false,
        ) {
            Ok(w) if w.exit == Some(0) => self
                .log
                .info(&format!("board {}: '{command}' done", self.link.board())),
            Ok(w) => self.log.warning(&format!(
                "board {}: '{command}' failed (exit {}): {}",
                self.link.board(),
                exit_text(w.exit),
                output_text(w.stderr.as_deref())
            )),
            Err(e) => self.log.warning(&format!("{} (left queued)", e.message)),
        }
    }
}

/// Packs the overlay directory `root` (its `lava-<job>` tree) into the gzipped tarball `out`:
/// entries relative to `root` (so `tar -C /` puts them at `/lava-<job>`), modes kept, owned by
/// root, symlinks as symlinks. Written through a temporary file; the tarball's size.
fn pack_overlay(root: &Path, out: &Path) -> dispatcher::Result<u64> {
    let part = out.with_extension("gz.part");
    let err =
        |e: std::io::Error| Error::infra(format!("pack the overlay into {}: {e}", out.display()));
    let written = (|| -> std::io::Result<()> {
        let file = File::create(&part)?;
        let gz =
            flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        add_tree(&mut tar, root, Path::new(""))?;
        let gz = tar.into_inner()?;
        let mut w = gz.finish()?;
        w.flush()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(err(e));
    }
    std::fs::rename(&part, out).map_err(err)?;
    std::fs::metadata(out).map(|m| m.len()).map_err(err)
}

/// Appends the entries under `root/rel`, sorted by name, depth first.
fn add_tree<W: Write>(tar: &mut tar::Builder<W>, root: &Path, rel: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(rel);
    let mut entries = std::fs::read_dir(&dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        h.set_mode(meta.permissions().mode() & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        if ft.is_dir() {
            h.set_size(0);
            tar.append_data(&mut h, &name, std::io::empty())?;
            add_tree(tar, root, &name)?;
        } else if ft.is_symlink() {
            h.set_size(0);
            let target = std::fs::read_link(&path)?;
            tar.append_link(&mut h, &name, &target)?;
        } else if ft.is_file() {
            h.set_size(meta.len());
            tar.append_data(&mut h, &name, File::open(&path)?)?;
        } else {
            tracing::warn!(
                "overlay: {} is not a file, directory or symlink: left out",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use dispatcher::results::TestResult;

    /// One entry of a packed tarball.
    struct Packed {
        path: String,
        kind: tar::EntryType,
        mode: u32,
        owner: (u64, u64, String),
        link: Option<String>,
        data: Vec<u8>,
    }

    /// Every entry of a gzipped tarball, in order.
    fn entries(tarball: &Path) -> Vec<Packed> {
        let gz = flate2::read::GzDecoder::new(File::open(tarball).unwrap());
        let mut ar = tar::Archive::new(gz);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push(Packed {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                owner: (
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.username().unwrap().unwrap_or_default().to_string(),
                ),
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                data,
            });
        }
        out
    }

    fn set_mode(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn packs_the_tree_with_modes_owned_by_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("overlay");
        let top = root.join("lava-7");
        std::fs::create_dir_all(top.join("bin")).unwrap();
        std::fs::create_dir_all(top.join("tests/0_smoke")).unwrap();
        std::fs::write(top.join("bin/lava-test-runner"), "#!/bin/sh\necho hi\n").unwrap();
        set_mode(&top.join("bin/lava-test-runner"), 0o755);
        std::fs::write(top.join("environment"), "LAVA_OS=oe\n").unwrap();
        set_mode(&top.join("environment"), 0o644);
        std::fs::write(top.join("tests/0_smoke/secret"), "x").unwrap();
        set_mode(&top.join("tests/0_smoke/secret"), 0o600);
        set_mode(&top.join("tests"), 0o750);
        std::os::unix::fs::symlink("../bin/lava-test-runner", top.join("tests/runner")).unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir_all(top.join(&long)).unwrap();
        std::fs::write(top.join(&long).join("f"), "long").unwrap();

        let out = tmp.path().join("agent/overlay.tar.gz");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let size = pack_overlay(&root, &out).unwrap();
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        assert!(!out.with_extension("gz.part").exists());

        let got = entries(&out);
        let names: Vec<&str> = got.iter().map(|e| e.path.as_str()).collect();
        let long_dir = format!("lava-7/{long}");
        let long_file = format!("lava-7/{long}/f");
        assert_eq!(
            names,
            [
                "lava-7",
                "lava-7/bin",
                "lava-7/bin/lava-test-runner",
                long_dir.as_str(),
                long_file.as_str(),
                "lava-7/environment",
                "lava-7/tests",
                "lava-7/tests/0_smoke",
                "lava-7/tests/0_smoke/secret",
                "lava-7/tests/runner",
            ]
        );
        let by: HashMap<&str, &Packed> = got.iter().map(|e| (e.path.as_str(), e)).collect();
        for e in &got {
            assert_eq!(e.owner, (0, 0, "root".to_string()), "{}", e.path);
        }
        let runner = by["lava-7/bin/lava-test-runner"];
        assert_eq!((runner.kind, runner.mode), (tar::EntryType::Regular, 0o755));
        assert_eq!(runner.data, b"#!/bin/sh\necho hi\n");
        assert_eq!(by["lava-7/environment"].mode, 0o644);
        assert_eq!(by["lava-7/tests/0_smoke/secret"].mode, 0o600);
        assert_eq!(
            (by["lava-7/tests"].kind, by["lava-7/tests"].mode),
            (tar::EntryType::Directory, 0o750)
        );
        let link = by["lava-7/tests/runner"];
        assert_eq!(link.kind, tar::EntryType::Symlink);
        assert_eq!(link.link.as_deref(), Some("../bin/lava-test-runner"));
        assert_eq!(by[long_file.as_str()].data, b"long");

        // The master image unpacks it with busybox tar: check that it can, when the host has it.
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        if let Some(busybox) = busybox {
            let into = tmp.path().join("board");
            std::fs::create_dir_all(&into).unwrap();
            let status = std::process::Command::new(busybox)
                .args(["tar", "-C"])
                .arg(&into)
                .arg("-xzf")
                .arg(&out)
                .status()
                .unwrap();
            assert!(status.success());
            let mode = |p: &str| {
                std::fs::symlink_metadata(into.join(p))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777
            };
            assert_eq!(mode("lava-7/bin/lava-test-runner"), 0o755);
            assert_eq!(mode("lava-7/tests/0_smoke/secret"), 0o600);
            assert_eq!(std::fs::read(into.join(&long_file)).unwrap(), b"long");
            assert_eq!(
                std::fs::read_link(into.join("lava-7/tests/runner")).unwrap(),
                Path::new("../bin/lava-test-runner")
            );
        }
    }

    #[test]
    fn packing_a_missing_overlay_is_an_infrastructure_error() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("overlay.tar.gz");
        let e = pack_overlay(&tmp.path().join("nothing"), &out).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InfrastructureError);
        assert!(!out.exists() && !out.with_extension("gz.part").exists());
    }

    const DEFINITION: &str = "metadata: {format: Lava-Test Test Definition 1.0, name: smoke, description: agent test}\n\
        run:\n  steps:\n  - lava-test-case uname --shell uname -s\n  - lava-test-case speed --result pass --measurement 12.5 --units MB/s\n  - lava-test-case broken --result fail\n";

    /// A test-only job: two blocks, the second with its own timeout.
    fn agent_job() -> Job {
        let def = |name: &str| {
            format!(
                "    - from: inline\n      name: {name}\n      path: inline/{name}.yaml\n      repository:\n{}",
                DEFINITION
                    .lines()
                    .map(|l| format!("        {l}\n"))
                    .collect::<String>()
            )
        };
        let yaml = format!(
            "device_type: qemu\njob_name: agent\ntimeouts:\n  job:\n    minutes: 10\n  action:\n    minutes: 2\nactions:\n\
             - test:\n    definitions:\n{}{}\
             - test:\n    timeout:\n      minutes: 3\n    failure_retry: 3\n    definitions:\n{}",
            def("smoke"),
            def("second"),
            def("third")
        );
        let job =
            dispatcher::job::parse_job("job.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert!(is_agent_job(&job));
        job
    }

    /// A runner's output as the agent reports it for a job's block 0: a passing, measured
    /// and failing case, a test set, a pattern-free line, a signal a kernel message cut in
    /// two, a definition whose run.sh failed (no ENDRUN), then the runner's exit.
    const CAPTURED: &str = "\
+ cd /lava-7/tests/0_smoke
<LAVA_SIGNAL_STARTRUN 0_smoke 7_0>
<LAVA_SIGNAL_STARTTC uname>
Linux
<LAVA_SIGNAL_ENDTC uname>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=uname RESULT=pass>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pa[   12.345678] random: crng init done\r
ss MEASUREMENT=12.5 UNITS=MB/s>
<LAVA_SIGNAL_TESTSET START net>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=ping RESULT=FAIL>
<LAVA_SIGNAL_TESTSET STOP>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=broken RESULT=fail>
<LAVA_SIGNAL_ENDRUN 0_smoke 7_0>
<LAVA_SIGNAL_STARTRUN 1_second 7_1>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=before RESULT=pass>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bad RESULT=maybe>
<LAVA_TEST_RUNNER EXIT>
after the runner
";

    fn info_for(job: &Job, dir: &Path) -> OverlayInfo {
        let defs =
            resolve_definitions(job, dir, &LogWriter::discard(), &AtomicBool::new(false)).unwrap();
        dispatcher::overlay::write_overlay(&dir.join("overlay"), "7", &defs, OVERLAY_OS).unwrap()
    }

    /// A recorded case: name, result, measurement, units, test set.
    type Case = (
        String,
        TestResult,
        Option<f64>,
        Option<String>,
        Option<String>,
    );

    fn cases(results: &Results, suite: &str) -> Vec<Case> {
        results
            .suite(suite)
            .map(|e| {
                (
                    e.case.name.clone(),
                    e.case.result,
                    e.case.measurement,
                    e.case.units.clone(),
                    e.case.set.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn captured_runner_output_becomes_results() {
        let tmp = tempfile::tempdir().unwrap();
        let job = agent_job();
        let info = info_for(&job, tmp.path());
        assert_eq!(info.board_dir, "/lava-7");
        assert_eq!(info.blocks(), [0, 1]);
        assert_eq!(
            info.runner_command(0),
            "/lava-7/bin/lava-test-runner /lava-7/tests 0"
        );
        let logfile = tmp.path().join("logs.yaml");
        let log = LogWriter::create(&logfile, None).unwrap();
        let mut results = Results::new();
        results.set_job_id("7");
        results.attach_log(log.clone());
        let mut tracker = info.tracker(0);
        let f = follow_output(CAPTURED.as_bytes(), &mut tracker, &mut results, &log);
        assert_eq!(
            f,
            Followed {
                finished: true,
                raised: None,
                lines: CAPTURED.lines().count()
            }
        );
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            cases(&results, "0_smoke"),
            [
                ("uname".into(), TestResult::Pass, None, None, None),
                (
                    "speed".into(),
                    TestResult::Pass,
                    Some(12.5),
                    s("MB/s"),
                    None
                ),
                ("ping".into(), TestResult::Fail, None, None, s("net")),
                ("broken".into(), TestResult::Fail, None, None, None),
            ]
        );
        assert_eq!(
            cases(&results, "1_second"),
            [("before".into(), TestResult::Pass, None, None, None)]
        );
        // The lava suite: a completed definition passes, one without ENDRUN fails.
        let lava: Vec<_> = results
            .suite("lava")
            .map(|e| {
                (
                    e.case.name.clone(),
                    e.case.result,
                    e.case.metadata.get("uuid").cloned(),
                )
            })
            .collect();
        assert_eq!(
            lava,
            [
                ("0_smoke".into(), TestResult::Pass, Some("7_0".into())),
                ("1_second".into(), TestResult::Fail, Some("7_1".into())),
            ]
        );
        drop(log);
        let text = std::fs::read_to_string(&logfile).unwrap();
        // Every output line is a target line (the lines after the exit too), in order.
        assert!(
            text.contains("\"lvl\": \"target\", \"msg\": \"+ cd /lava-7/tests/0_smoke\""),
            "{text}"
        );
        assert!(
            text.contains("\"lvl\": \"target\", \"msg\": \"after the runner\""),
            "{text}"
        );
        assert!(text.contains("unknown result 'maybe'"), "{text}");
        assert!(text.contains("1_second ended without its ENDRUN"), "{text}");
        assert!(text.contains("\"lvl\": \"results\""), "{text}");
    }

    #[test]
    fn a_raise_stops_the_tracking() {
        let out = "<LAVA_SIGNAL_STARTRUN 0_smoke 7_0>\n\
                   <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>\n\
                   <LAVA_SIGNAL_TESTRAISE disk full>\n\
                   <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=b RESULT=pass>\n\
                   <LAVA_TEST_RUNNER EXIT>\n";
        let tmp = tempfile::tempdir().unwrap();
        let info = info_for(&agent_job(), tmp.path());
        let mut results = Results::new();
        let mut tracker = info.tracker(0);
        let f = follow_output(
            out.as_bytes(),
            &mut tracker,
            &mut results,
            &LogWriter::discard(),
        );
        assert_eq!(f.raised.as_deref(), Some("disk full"));
        assert!(!f.finished);
        assert_eq!(f.lines, 5);
        assert_eq!(cases(&results, "0_smoke").len(), 1);
        // Empty or unterminated output is no trouble.
        let f = follow_output(
            b"",
            &mut info.tracker(0),
            &mut results,
            &LogWriter::discard(),
        );
        assert_eq!(f, Followed::default());
        let f = follow_output(
            b"\xff\xfe\n<LAVA_TEST_RUNNER EXIT>",
            &mut info.tracker(0),
            &mut results,
            &LogWriter::discard(),
        );
        assert!(f.finished);
    }

    #[test]
    fn block_timeouts_follow_the_pipeline_precedence() {
        let job = agent_job();
        let common = |i: usize| job.actions[i].common().clone();
        // The job's action timeout; the second block's own, shared by its three tries.
        assert_eq!(
            block_timeouts(&job, None, &common(0)),
            (Duration::from_secs(120), Duration::from_secs(120))
        );
        assert_eq!(
            block_timeouts(&job, None, &common(1)),
            (Duration::from_secs(180), Duration::from_secs(60))
        );
        let mut j = job.clone();
        j.timeouts
            .actions
            .insert("lava-test-shell".into(), Duration::from_secs(7));
        assert_eq!(
            block_timeouts(&j, None, &common(0)).1,
            Duration::from_secs(7)
        );
        j.timeouts.action = None;
        j.timeouts.actions.clear();
        assert_eq!(
            block_timeouts(&j, None, &common(0)),
            (DEFAULT_ACTION_TIMEOUT, DEFAULT_ACTION_TIMEOUT)
        );
    }

    /// An agent on the host: fetches copy the job's published file, runs go to `sh -c` with
    /// `/lava-…` and `/tmp/lava-overlay-…` moved under a temporary root (the overlay's scripts
    /// find their files relative to themselves, as on the board).
    struct HostAgent {
        root: PathBuf,
        published: PathBuf,
        work: Mutex<Vec<Work>>,
        /// Commands containing this never report.
        hang: Option<&'static str>,
        /// Fetches fail with this stderr.
        fetch_fails: Option<&'static str>,
        dropped: AtomicBool,
    }

    impl HostAgent {
        fn new(root: &Path, published: &Path) -> HostAgent {
            HostAgent {
                root: root.to_path_buf(),
                published: published.to_path_buf(),
                work: Mutex::new(Vec::new()),
                hang: None,
                fetch_fails: None,
                dropped: AtomicBool::new(false),
            }
        }

        fn commands(&self) -> Vec<String> {
            self.work
                .lock()
                .unwrap()
                .iter()
                .map(|w| match &w.kind {
                    WorkKind::Run { command } => format!("run {command}"),
                    WorkKind::Fetch { url, path } => format!("fetch {url} {path}"),
                    WorkKind::Reboot => "reboot".into(),
                })
                .collect()
        }

        fn host(&self, command: &str) -> String {
            let r = self.root.display().to_string();
            let cmd = command
                .replace("-C / ", &format!("-C {r}/ "))
                .replace(" /lava-", &format!(" {r}/lava-"))
                .replace(" /tmp/lava-overlay", &format!(" {r}/tmp/lava-overlay"));
            // Never touch the host's own files.
            for word in cmd.split_whitespace().filter(|w| w.starts_with('/')) {
                assert!(word.starts_with(&r), "'{word}' is outside {r}: {cmd}");
            }
            cmd
        }

        /// `sh -c`: busybox's, with busybox's tar, timeout and rm first in PATH as in the
        /// master image, when the host has busybox; else the host's.
        fn shell(&self) -> std::process::Command {
            let busybox = ["/usr/bin/busybox", "/bin/busybox"]
                .into_iter()
                .find(|p| Path::new(p).is_file());
            let Some(busybox) = busybox else {
                let mut c = std::process::Command::new("sh");
                c.arg("-c");
                return c;
            };
            let bin = self.root.join("busybox-bin");
            for applet in ["tar", "timeout", "rm"] {
                if !bin.join(applet).exists() {
                    std::fs::create_dir_all(&bin).unwrap();
                    std::os::unix::fs::symlink(busybox, bin.join(applet)).unwrap();
                }
            }
            let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
            let mut c = std::process::Command::new(busybox);
            c.args(["sh", "-c"])
                .env("PATH", format!("{}:{path}", bin.display()));
            c
        }

        fn perform(&self, kind: &WorkKind) -> Option<(i32, Vec<u8>, Vec<u8>)> {
            match kind {
                WorkKind::Fetch { url, path } => {
                    if let Some(err) = self.fetch_fails {
                        return Some((1, Vec::new(), err.as_bytes().to_vec()));
                    }
                    let name = url.rsplit('/').next().unwrap();
                    let dest = self.root.join(path.trim_start_matches('/'));
                    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                    let n = std::fs::copy(self.published.join(name), dest).unwrap();
                    Some((0, n.to_string().into_bytes(), Vec::new()))
                }
                WorkKind::Run { command } => {
                    if self.hang.is_some_and(|h| command.contains(h)) {
                        return None;
                    }
                    // Output into files, as the agent does (orphans cannot hold a pipe).
                    let (out, err) = (self.root.join("out"), self.root.join("err"));
                    let status = self
                        .shell()
                        .arg(self.host(command))
                        .current_dir(&self.root)
                        .stdin(std::process::Stdio::null())
                        .stdout(File::create(&out).unwrap())
                        .stderr(File::create(&err).unwrap())
                        .status()
                        .unwrap();
                    Some((
                        status.code().unwrap_or(-1),
                        std::fs::read(out).unwrap(),
                        std::fs::read(err).unwrap(),
                    ))
                }
                WorkKind::Reboot => Some((0, Vec::new(), Vec::new())),
            }
        }
    }

    impl AgentLink for HostAgent {
        fn board(&self) -> &str {
            "qemu-01"
        }

        fn queue(&self, kind: &WorkKind) -> Result<WorkId, String> {
            let mut work = self.work.lock().unwrap();
            let id = work.len() as WorkId + 1;
            let started = crate::store::now_ms();
            let done = self.perform(kind);
            work.push(Work {
                id,
                board: "qemu-01".into(),
                job: Some(7),
                kind: kind.clone(),
                created: started,
                taken: Some(started),
                done: done.as_ref().map(|_| crate::store::now_ms()),
                exit: done.as_ref().map(|d| d.0),
                stdout: done.as_ref().map(|d| d.1.clone()),
                stderr: done.map(|d| d.2),
            });
            Ok(id)
        }

        fn work(&self, id: WorkId) -> Result<Option<Work>, String> {
            Ok(self
                .work
                .lock()
                .unwrap()
                .iter()
                .find(|w| w.id == id)
                .cloned())
        }

        fn wait(&self, slice: Duration) {
            std::thread::sleep(slice)
        }

        fn drop_pending(&self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn plan<'a>(
        job: &'a Job,
        dir: &'a Path,
        log: &'a LogWriter,
        cancel: &'a AtomicBool,
    ) -> Plan<'a> {
        Plan {
            job_id: 7,
            job,
            device: None,
            dir,
            files_url: "http://192.0.2.1:8080/api/v1/agent/files/7".into(),
            log,
            cancel,
        }
    }

    fn host_job(steps: &str) -> Job {
        let yaml = format!(
            "device_type: qemu\njob_name: agent\ntimeouts:\n  job:\n    minutes: 10\n  action:\n    minutes: 2\nactions:\n\
             - test:\n    definitions:\n    - from: inline\n      name: smoke\n      path: inline/smoke.yaml\n      repository:\n        metadata: {{format: Lava-Test Test Definition 1.0, name: smoke}}\n        run:\n          steps:\n{steps}"
        );
        dispatcher::job::parse_job("job.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    #[test]
    fn a_job_runs_through_a_host_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, board) = (tmp.path().join("job"), tmp.path().join("board"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&board).unwrap();
        let job = host_job(
            "          - lava-test-case hello --shell echo hello\n          - lava-test-case size --result pass --measurement 3 --units files\n          - lava-test-case nope --shell false\n",
        );
        let agent = HostAgent::new(&board, &dir.join("agent"));
        let log = LogWriter::create(&dir.join("logs.yaml"), None).unwrap();
        let cancel = AtomicBool::new(false);
        let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
        drop(log);
        let logtext = std::fs::read_to_string(dir.join("logs.yaml")).unwrap();
        assert_eq!(ending.error, None, "{logtext}");
        assert_eq!(ending.health, JobHealth::Complete);
        let cmds = agent.commands();
        assert_eq!(
            cmds,
            [
                "fetch http://192.0.2.1:8080/api/v1/agent/files/7/overlay.tar.gz /tmp/lava-overlay-7.tar.gz",
                "run tar -C / -xzf /tmp/lava-overlay-7.tar.gz",
                "run timeout -s KILL 120 /lava-7/bin/lava-test-runner /lava-7/tests 0 2>&1",
                "run rm -rf /lava-7 /tmp/lava-overlay-7.tar.gz",
            ]
        );
        assert!(!agent.dropped.load(Ordering::SeqCst));
        // Cleaned up on the board.
        assert!(!board.join("lava-7").exists());
        assert!(!board.join("tmp/lava-overlay-7.tar.gz").exists());
        let yaml = ending.results.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("results.yaml")).unwrap(),
            yaml
        );
        let list: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&yaml).unwrap();
        let get = |suite: &str, name: &str| {
            list.iter()
                .find(|c| c["suite"] == suite && c["name"] == name)
                .unwrap_or_else(|| panic!("no {suite}/{name} in\n{yaml}"))
                .clone()
        };
        assert_eq!(get("0_smoke", "hello")["result"], "pass");
        assert_eq!(get("0_smoke", "nope")["result"], "fail");
        assert_eq!(get("0_smoke", "size")["unit"], "files");
        assert_eq!(get("lava", "0_smoke")["result"], "pass");
        assert_eq!(get("lava", "lava-test-shell")["level"], "1.1");
        assert_eq!(get("lava", "lava-test-retry")["result"], "pass");
        assert_eq!(get("lava", "job")["result"], "pass");
        assert!(
            logtext.contains("\"lvl\": \"target\", \"msg\": \"<LAVA_TEST_RUNNER EXIT>\""),
            "{logtext}"
        );
    }

    #[test]
    fn a_failing_fetch_is_an_infrastructure_error_with_the_agents_stderr() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job");
        std::fs::create_dir_all(&dir).unwrap();
        let job = host_job("          - lava-test-case a --result pass\n");
        let mut agent = HostAgent::new(tmp.path(), &dir.join("agent"));
        agent.fetch_fails = Some("fetch http://192.0.2.1:8080/x: HTTP 404: no job 7");
        let log = LogWriter::discard();
        let cancel = AtomicBool::new(false);
        let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
        assert_eq!(ending.health, JobHealth::Incomplete);
        let (kind, msg) = ending.error.unwrap();
        assert_eq!(kind, "InfrastructureError");
        assert!(
            msg.contains("HTTP 404: no job 7") && msg.contains("qemu-01"),
            "{msg}"
        );
        let yaml = ending.results.unwrap();
        assert!(yaml.contains("error_type: InfrastructureError"), "{yaml}");
        // Still cleaned up.
        assert_eq!(
            agent.commands().last().unwrap(),
            "run rm -rf /lava-7 /tmp/lava-overlay-7.tar.gz"
        );
    }

    #[test]
    fn a_step_without_report_times_out_and_a_cancel_stops_the_wait() {
        let tmp = tempfile::tempdir().unwrap();
        let mut agent = HostAgent::new(tmp.path(), tmp.path());
        agent.hang = Some("sleep");
        let log = LogWriter::discard();
        let cancel = AtomicBool::new(false);
        let mut s = Session {
            link: &agent,
            cancel: &cancel,
            log: &log,
            abandoned: false,
        };
        let kind = WorkKind::Run {
            command: "sleep 100".into(),
        };
        let e = s
            .step(
                "test block actions[0]",
                kind.clone(),
                after(Instant::now(), Duration::from_millis(300)),
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InfrastructureError);
        assert!(
            e.message
                .contains("board qemu-01's agent did not report work 1 within 1 s"),
            "{}",
            e.message
        );
        assert!(s.abandoned);
        cancel.store(true, Ordering::SeqCst);
        let e = s
            .step("x", kind, after(Instant::now(), Duration::from_secs(60)))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Canceled);
        s.cleanup(7);
        assert!(agent.dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_canceled_job_ends_canceled_with_results() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job");
        std::fs::create_dir_all(&dir).unwrap();
        let job = host_job("          - lava-test-case a --result pass\n");
        let agent = HostAgent::new(tmp.path(), &dir.join("agent"));
        let log = LogWriter::discard();
        let cancel = AtomicBool::new(true);
        let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
        assert_eq!(ending.health, JobHealth::Canceled);
        assert_eq!(ending.error.unwrap().0, "Canceled");
        assert!(ending.results.unwrap().contains("name: job"));
    }

    #[test]
    fn a_runaway_test_is_stopped_on_the_board_at_the_blocks_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, board) = (tmp.path().join("job"), tmp.path().join("board"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&board).unwrap();
        let mut job = host_job(
            "          - lava-test-case first --result pass\n          - sleep 3\n          - lava-test-case never --result pass\n",
        );
        if let ActionBlock::Test(t) = &mut job.actions[0] {
            t.common.timeout = Some(Duration::from_secs(1));
        }
        let agent = HostAgent::new(&board, &dir.join("agent"));
        let log = LogWriter::discard();
        let cancel = AtomicBool::new(false);
        let started = Instant::now();
        let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(ending.health, JobHealth::Incomplete);
        let (kind, msg) = ending.error.unwrap();
        assert_eq!(kind, "TestError");
        assert!(
            msg.contains("timed out") && msg.contains("after 1 s"),
            "{msg}"
        );
        assert!(agent.commands()[2].contains("timeout -s KILL 1 "));
        let yaml = ending.results.unwrap();
        let list: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&yaml).unwrap();
        let result = |suite: &str, name: &str| {
            list.iter()
                .find(|c| c["suite"] == suite && c["name"] == name)
                .map(|c| c["result"].as_str().unwrap_or("").to_string())
        };
        assert_eq!(result("0_smoke", "first").as_deref(), Some("pass"));
        assert_eq!(result("0_smoke", "never"), None);
        // The definition did not finish: LAVA's failed run.
        assert_eq!(result("lava", "0_smoke").as_deref(), Some("fail"));
        assert_eq!(result("lava", "job").as_deref(), Some("fail"));
    }

    #[test]
    fn output_text_is_one_bounded_line() {
        assert_eq!(output_text(Some(b"a\n b\tc\n")), "a b c");
        assert_eq!(output_text(None), "");
        let long = "é".repeat(600);
        assert_eq!(output_text(Some(long.as_bytes())).chars().count(), 501);
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
