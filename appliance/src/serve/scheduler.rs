//! The job queue: per device type, LAVA's priorities (high to low), first come first served
//! inside a priority, one job per board. Woken when a job is queued or ends and when a board
//! comes back; also looks every 5 s.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{runner, App};
use crate::store::{Board, BoardState, Health, Job};

/// Whether `b` may take a job of `device_type`.
pub fn eligible(b: &Board, device_type: &str) -> bool {
    b.approved
        && b.state == BoardState::Idle
        && b.health == Health::Online
        && b.cloned.is_none()
        && b.device_type == device_type
}

/// Pairs queued jobs (in run order) with free boards.
pub fn assign(queued: &[Job], boards: &[Board]) -> Vec<(usize, String)> {
    let mut taken = HashSet::new();
    let mut out = Vec::new();
    for (i, j) in queued.iter().enumerate() {
        if let Some(b) = boards
            .iter()
            .find(|b| !taken.contains(&b.id) && eligible(b, &j.device_type))
        {
            taken.insert(b.id.clone());
            out.push((i, b.id.clone()));
        }
    }
    out
}

/// The scheduler loop.
pub async fn run(app: Arc<App>, cancel: CancellationToken) {
    loop {
        let a = Arc::clone(&app);
        let _ = tokio::task::spawn_blocking(move || schedule_once(&a)).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = app.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

fn schedule_once(app: &Arc<App>) {
    if app.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    // Boards are read only when something waits for one (check-ins wake the scheduler).
    let queued = match app.store.queued_jobs() {
        Ok(q) if q.is_empty() => return,
        Ok(q) => q,
        Err(e) => {
            tracing::error!("scheduler: {e}");
            return;
        }
    };
    let boards = match app.store.boards() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("scheduler: {e}");
            return;
        }
    };
    for (i, board) in assign(&queued, &boards) {
        let job = &queued[i];
        if let Err(e) = app.store.start_job(job.id, &board) {
            tracing::warn!(job = job.id, board, "scheduler: {e}");
            continue;
        }
        tracing::info!(job = job.id, board, "job starts");
        let _ = app
            .store
            .add_event(&board, "job", &format!("job {} starts", job.id));
        runner::start(Arc::clone(app), job.clone(), board);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobHealth, JobState};

    fn board(id: &str, t: &str) -> Board {
        let mut b = Board::new(id, t);
        b.approved = true;
        b.health = Health::Online;
        b
    }

    fn job(id: i64, t: &str) -> Job {
        Job {
            id,
            name: format!("j{id}"),
            device_type: t.into(),
            priority: 50,
            state: JobState::Queued,
            health: JobHealth::Unknown,
            board: None,
            submitted: 0,
            started: None,
            ended: None,
            error_type: None,
            error: None,
            yaml: String::new(),
        }
    }

    #[test]
    fn one_job_per_board_and_types_match() {
        let boards = vec![board("a", "x"), board("b", "y")];
        let jobs = vec![job(1, "x"), job(2, "x"), job(3, "y"), job(4, "z")];
        assert_eq!(
            assign(&jobs, &boards),
            vec![(0, "a".into()), (2, "b".into())]
        );
    }

    #[test]
    fn offline_cloned_pending_and_busy_boards_get_nothing() {
        let mut off = board("a", "x");
        off.health = Health::Offline;
        let mut cloned = board("b", "x");
        cloned.cloned = Some("02:00:00:00:00:01".into());
        let mut pending = board("c", "x");
        pending.approved = false;
        let mut busy = board("d", "x");
        busy.state = BoardState::Job;
        let mut maint = board("e", "x");
        maint.state = BoardState::Maintenance;
        let boards = vec![off, cloned, pending, busy, maint];
        assert!(assign(&[job(1, "x")], &boards).is_empty());
    }
}
