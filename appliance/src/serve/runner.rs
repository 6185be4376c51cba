//! Runs one job on one board: the board leaves the master, the dispatcher runs with the
//! appliance's servers behind its `LabServices` seam (or, for a job that only tests in the
//! master image, the agent runs it), logs stream into the store, results are stored, and the
//! board boots the master again whatever the outcome.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dispatcher::logs::LogWriter;
use dispatcher::run::{self, RunEnv};

use super::logs::SharedSink;
use super::power::PowerAction;
use super::{agent_jobs, power_saving, App};
use crate::store::{Job, JobHealth, JobId, Powered};

/// How a job ended, for the store.
pub struct Ending {
    /// Complete, incomplete or canceled.
    pub health: JobHealth,
    /// The error class and message.
    pub error: Option<(String, String)>,
    /// `results.yaml`, if any.
    pub results: Option<String>,
}

impl Ending {
    fn failed(kind: &str, message: impl Into<String>) -> Ending {
        Ending {
            health: JobHealth::Incomplete,
            error: Some((kind.to_string(), message.into())),
            results: None,
        }
    }
}

/// The job's output directory.
pub fn job_dir(app: &App, id: JobId) -> PathBuf {
    app.jobs_dir.join(id.to_string())
}

/// Starts `job` (already marked running on `board` in the store) on a thread of its own.
pub fn start(app: Arc<App>, job: Job, board: String) {
    let cancel = Arc::new(AtomicBool::new(false));
    if let Ok(mut r) = app.running.lock() {
        r.insert(job.id, Arc::clone(&cancel));
    }
    let a = Arc::clone(&app);
    let id = job.id;
    let spawned = std::thread::Builder::new()
        .name(format!("job-{id}"))
        .spawn(move || {
            let ending = run_job(&a, &job, &board, &cancel);
            finish(&a, &job, &board, ending);
        });
    if let Err(e) = spawned {
        tracing::error!(job = id, "cannot start the job's thread: {e}");
        if let Ok(mut r) = app.running.lock() {
            r.remove(&id);
        }
        let _ = app.store.finish_job(
            id,
            JobHealth::Incomplete,
            Some((
                "InfrastructureError",
                &format!("cannot start the job's thread: {e}"),
            )),
        );
    }
}

fn run_job(app: &Arc<App>, job: &Job, board: &str, cancel: &Arc<AtomicBool>) -> Ending {
    let dir = job_dir(app, job.id);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Ending::failed(
            "InfrastructureError",
            format!("cannot create {}: {e}", dir.display()),
        );
    }
    let file = dir.join("job.yaml");
    if let Err(e) = crate::fsutil::write_atomically(&file, job.yaml.as_bytes()) {
        return Ending::failed("InfrastructureError", format!("{e:#}"));
    }
    let sink = SharedSink::new(Arc::clone(app), job.id);
    let log = match LogWriter::create(&dir.join("logs.yaml"), None) {
        Ok(l) => l.with_records(Box::new(sink.clone())),
        Err(e) => return Ending::failed("InfrastructureError", e.message),
    };
    let ending = dispatch(app, job, board, cancel, &dir, &log);
    match &ending.error {
        None => log.info(&format!("job {} complete", job.id)),
        Some((k, m)) => log.info(&format!(
            "job {} {}: {k}: {m}",
            job.id,
            match ending.health {
                JobHealth::Canceled => "canceled",
                _ => "incomplete",
            }
        )),
    }
    drop(log);
    sink.finish();
    ending
}

fn dispatch(
    app: &Arc<App>,
    job: &Job,
    board: &str,
    cancel: &Arc<AtomicBool>,
    dir: &std::path::Path,
    log: &LogWriter,
) -> Ending {
    let parsed = match dispatcher::job::parse_job("job.yaml", &job.yaml) {
        Ok(j) => j,
        Err(e) => return Ending::failed(e.kind.as_str(), e.message),
    };
    log.info(&format!(
        "labboot job {} '{}' on board {board} ({})",
        job.id, parsed.name, parsed.device_type
    ));
    if agent_jobs::is_agent_job(&parsed) {
        log.info("only tests in the master image: run through the board's agent, no reboot");
        return agent_jobs::run(app, job.id, &parsed, board, cancel, dir, log);
    }
    let dev = match app.registry.device(board, &parsed.context) {
        Ok(d) => d,
        Err(e) => return Ending::failed(e.kind.as_str(), e.message),
    };
    let pipeline = match dispatcher::pipeline::build(&parsed, &dev) {
        Ok(p) => p,
        Err(e) => return Ending::failed(e.kind.as_str(), e.message),
    };
    let style = match dispatcher::device::boot_style(&dev, &parsed.context) {
        Ok(s) => s,
        Err(e) => return Ending::failed(e.kind.as_str(), e.message),
    };
    // The tree the runner walks, as `description.yaml` beside the logs (as LAVA leaves it).
    match serde_yaml_ng::to_string(&dispatcher::pipeline::describe(&pipeline)) {
        Ok(text) => {
            if let Err(e) =
                crate::fsutil::write_atomically(&dir.join("description.yaml"), text.as_bytes())
            {
                log.warning(&format!("description.yaml: {e:#}"));
            }
        }
        Err(e) => log.warning(&format!("description.yaml: {e}")),
    }
    // The board leaves the master image.
    log.info(&format!("board {board} leaves the master image: power off"));
    // Under the board's power lock (power saving and people switch it too); from now on the
    // dispatcher switches it, so the recorded power is unknown until the job ends.
    let off = power_saving::with_board(board, || {
        let r = app.registry.power(board, PowerAction::Off);
        let _ = app.store.set_powered(board, Powered::Unknown);
        r
    });
    if let Err(e) = off {
        log.warning(&format!("power off before the job: {e:#}"));
    }
    let _ = app.store.drop_pending_work(board);
    let env = RunEnv {
        job_id: job.id.to_string(),
        output_dir: dir.to_path_buf(),
        services: app.services.clone(),
        cancel: Arc::clone(cancel),
        log: log.clone(),
        progress_bar: false,
        boot_style: style,
    };
    // The board's console, kept by the appliance, is lent to the job: its write side is the
    // job's until the run ends (people can still read it).
    let console = app.consoles.attach_job(&env.job_id, board);
    if let Some(who) = console.as_ref().and_then(|c| c.took_over()) {
        log.warning(&format!("console: the write side was taken from {who}"));
    }
    let outcome = run::run(&parsed, &dev, &pipeline, &env);
    drop(console);
    drop(env);
    let results = outcome.results.to_yaml().ok();
    if let Some(r) = &results {
        let _ = crate::fsutil::write_atomically(&dir.join("results.yaml"), r.as_bytes());
    }
    let (health, error) = match &outcome.error {
        None => (JobHealth::Complete, None),
        Some(e) if e.kind == dispatcher::error::ErrorKind::Canceled => (
            JobHealth::Canceled,
            Some((e.kind.as_str().to_string(), e.message.clone())),
        ),
        Some(e) => (
            JobHealth::Incomplete,
            Some((e.kind.as_str().to_string(), e.message.clone())),
        ),
    };
    Ending {
        health,
        error,
        results,
    }
}

fn finish(app: &Arc<App>, job: &Job, board: &str, ending: Ending) {
    if let Some(r) = &ending.results {
        if let Err(e) = app.store.put_results(job.id, r) {
            tracing::error!(job = job.id, board, "results: {e}");
        }
    }
    let err = ending.error.as_ref().map(|(k, m)| (k.as_str(), m.as_str()));
    if let Err(e) = app.store.finish_job(job.id, ending.health, err) {
        tracing::error!(job = job.id, board, "cannot record the job's end: {e}");
    }
    super::metrics::job_finished(app.store(), job.id);
    match &ending.error {
        None => tracing::info!(job = job.id, board, "job complete"),
        Some((k, m)) => tracing::warn!(job = job.id, board, "job ended: {k}: {m}"),
    }
    let _ = app.store.add_event(
        board,
        "job",
        &format!("job {} ended: {:?}", job.id, ending.health).to_lowercase(),
    );
    // Back to the master image, whatever the outcome (an agent job never left it).
    if !ending_kept_master(app, job) && !app.stopping.load(Ordering::SeqCst) {
        let cycled = power_saving::with_board(board, || {
            power_saving::switch(app, board, PowerAction::Cycle)
        });
        if let Err(e) = cycled {
            tracing::warn!(job = job.id, board, "back to the master: {e:#}");
        }
    }
    if let Ok(mut r) = app.running.lock() {
        r.remove(&job.id);
    }
    let _ = app.log_events.send(job.id);
    app.wake.notify_one();
}

fn ending_kept_master(_app: &App, job: &Job) -> bool {
    dispatcher::job::parse_job("job.yaml", &job.yaml)
        .map(|j| agent_jobs::is_agent_job(&j))
        .unwrap_or(false)
}

/// At start: jobs that were running when the appliance stopped are incomplete; their boards
/// are powered off and booted into the master again.
pub async fn recover(app: &Arc<App>) -> anyhow::Result<()> {
    let a = Arc::clone(app);
    let interrupted = tokio::task::spawn_blocking(move || {
        a.store
            .recover_interrupted(&a.name, "appliance restarted")
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await??;
    for (job, board) in interrupted {
        tracing::warn!(job, board = board.as_deref().unwrap_or("-"), "job was running when the appliance stopped: incomplete (InfrastructureError: appliance restarted)");
        let _ = app.store.append_log(
            job,
            &[super::logs::error_line(
                "InfrastructureError: appliance restarted",
            )],
        );
        if let Some(b) = board {
            let _ = app.store.add_event(
                &b,
                "job",
                &format!("job {job} incomplete: appliance restarted"),
            );
            // No job for it until it has booted the master and checked in again.
            app.registry.mark_rebooted(&b, true);
            let a = Arc::clone(app);
            tokio::task::spawn_blocking(move || {
                if a.registry.configured(&b).is_some() {
                    power_saving::with_board(&b, || {
                        for action in [PowerAction::Off, PowerAction::On] {
                            if let Err(e) = power_saving::switch(&a, &b, action) {
                                tracing::warn!(board = %b, "after restart: {e:#}");
                            }
                        }
                    });
                }
            });
        }
    }
    Ok(())
}

/// Sets every running job's cancel flag (SIGTERM).
pub fn cancel_all(app: &App) {
    if let Ok(r) = app.running.lock() {
        for (id, flag) in r.iter() {
            tracing::info!(job = id, "canceling: the appliance stops");
            flag.store(true, Ordering::SeqCst);
        }
    }
}

/// Waits (up to 2 minutes) for running jobs to finalize.
pub async fn wait_all(app: &App) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while app.running.lock().map(|r| !r.is_empty()).unwrap_or(false) {
        if tokio::time::Instant::now() > deadline {
            tracing::warn!("jobs still finalizing after 2 minutes; stopping anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
