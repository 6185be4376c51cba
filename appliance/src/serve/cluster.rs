//! Several appliances, one database (`database: postgresql://…`; harmless with SQLite).
//!
//! Every second this appliance looks at the shared state: it records its heartbeat (every
//! `lease_seconds / 3`), ends the running jobs of appliances whose heartbeat is older than
//! `lease_seconds` (`InfrastructureError: appliance NAME lost`; their boards show offline until
//! their appliance serves them again), and passes on cancels made through another instance's
//! API to its own running jobs (the database is the only channel between instances).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::App;
use crate::store::{JobState, Millis};

/// How often the shared state is looked at.
const TICK: Duration = Duration::from_secs(1);

/// The background task.
pub async fn run(app: Arc<App>, cancel: CancellationToken) {
    let beat_every = Duration::from_millis(app.config.lease_seconds * 1000 / 3);
    let mut last_beat: Option<Instant> = None;
    loop {
        let beat = last_beat.is_none_or(|t| t.elapsed() >= beat_every);
        let starting = last_beat.is_none();
        let a = Arc::clone(&app);
        let _ = tokio::task::spawn_blocking(move || tick(&a, beat, starting)).await;
        if beat {
            last_beat = Some(Instant::now());
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

fn tick(app: &App, beat: bool, starting: bool) {
    if beat {
        let url = format!("http://{}", app.http_addr);
        if let Err(e) = app.store.heartbeat(&app.name, &url, starting) {
            tracing::warn!(appliance = %app.name, "heartbeat: {e}");
        }
        let lease = (app.config.lease_seconds * 1000) as Millis;
        match app.store.recover_lost(&app.name, lease) {
            Ok(lost) => {
                for l in lost {
                    let msg = format!("appliance {} lost", l.appliance);
                    tracing::warn!(
                        job = l.job,
                        board = l.board.as_deref().unwrap_or("-"),
                        "job incomplete: InfrastructureError: {msg} (no heartbeat for {} s)",
                        app.config.lease_seconds
                    );
                    let _ = app.store.append_log(
                        l.job,
                        &[super::logs::error_line(&format!(
                            "InfrastructureError: {msg}"
                        ))],
                    );
                    if let Some(b) = &l.board {
                        let _ = app.store.add_event(
                            b,
                            "job",
                            &format!("job {} incomplete: {msg}", l.job),
                        );
                    }
                    let _ = app.log_events.send(l.job);
                }
            }
            Err(e) => tracing::warn!(appliance = %app.name, "lost appliances: {e}"),
        }
    }
    follow_cancels(app);
}

/// Sets the cancel flag of this appliance's running jobs that were canceled (or ended) in the
/// database by someone else.
fn follow_cancels(app: &App) {
    let local: Vec<(i64, Arc<std::sync::atomic::AtomicBool>)> = match app.running.lock() {
        Ok(r) => r.iter().map(|(id, f)| (*id, Arc::clone(f))).collect(),
        Err(_) => return,
    };
    if local.is_empty() {
        return;
    }
    let listed = match app.store.running_for(&app.name) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("cancels: {e}");
            return;
        }
    };
    for (id, flag) in local {
        if flag.load(Ordering::SeqCst) {
            continue;
        }
        let why = match listed.iter().find(|j| j.id == id) {
            Some(j) if j.state == JobState::Canceling => "canceled through the database",
            Some(_) => continue,
            // Not running here any more in the database: another appliance ended it (this
            // one was taken for lost), or it is not started yet.
            None => match app.store.job(id) {
                Ok(Some(j)) if j.state == JobState::Finished => {
                    "ended in the database by another appliance"
                }
                _ => continue,
            },
        };
        tracing::warn!(job = id, "job {why}: canceling it here");
        flag.store(true, Ordering::SeqCst);
    }
}
