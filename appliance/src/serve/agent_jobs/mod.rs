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

mod output;
mod pack;
mod session;
#[cfg(test)]
mod tests;
mod timeouts;

use output::*;
use pack::*;
use session::*;
use timeouts::*;

use super::runner::Ending;
use super::App;
use crate::store::{JobHealth, JobId, Work, WorkId, WorkKind};

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
