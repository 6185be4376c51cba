//! The job queue: per device type, LAVA's priorities (high to low), first come first served
//! inside a priority, one job per board. Woken when a job is queued or ends and when a board
//! comes back; also looks every 5 s. Reserved boards and boards that are off get no job; with
//! `power_saving:`, boards that are off are powered on for jobs no board took.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{power_saving, runner, App};
use crate::store::{Board, BoardState, Health, Job, Powered};

/// Whether `b` may take a job of `device_type`.
pub fn eligible(b: &Board, device_type: &str) -> bool {
    b.approved
        && b.state == BoardState::Idle
        && b.health == Health::Online
        && b.cloned.is_none()
        && b.reservation.is_none()
        && b.power_now() != Powered::Off
        && b.device_type == device_type
}

/// Pairs queued jobs (in run order) with free boards.
pub fn assign(queued: &[Job], boards: &[Board]) -> Vec<(usize, String)> {
    assign_where(queued, boards, |_, _| true)
}

/// [`assign`], with `fits` saying whether a board can run a job at all (a job that deploys
/// and boots needs a board with a device file; one that only tests in the master does not).
pub fn assign_where(
    queued: &[Job],
    boards: &[Board],
    fits: impl Fn(&Job, &Board) -> bool,
) -> Vec<(usize, String)> {
    let mut taken = HashSet::new();
    let mut out = Vec::new();
    for (i, j) in queued.iter().enumerate() {
        if let Some(b) = boards
            .iter()
            .find(|b| !taken.contains(&b.id) && eligible(b, &j.device_type) && fits(j, b))
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
    // Only the boards this appliance serves: in a lab of several, each claims jobs for its own.
    let boards: Vec<Board> = match app.store.boards() {
        Ok(b) => b.into_iter().filter(|b| app.registry.serves(b)).collect(),
        Err(e) => {
            tracing::error!("scheduler: {e}");
            return;
        }
    };
    let agent_only: std::collections::HashMap<i64, bool> = queued
        .iter()
        .map(|j| {
            let only = dispatcher::job::parse_job("job.yaml", &j.yaml)
                .map(|p| super::agent_jobs::is_agent_job(&p))
                .unwrap_or(false);
            (j.id, only)
        })
        .collect();
    let pairs = assign_where(&queued, &boards, |j, b| {
        agent_only.get(&j.id).copied().unwrap_or(false) || app.registry.configured(&b.id).is_some()
    });
    let waiting: Vec<&Job> = queued
        .iter()
        .enumerate()
        .filter(|(i, _)| !pairs.iter().any(|(k, _)| k == i))
        .map(|(_, j)| j)
        .collect();
    for (i, board) in pairs {
        let job = &queued[i];
        if let Err(e) = app.store.start_job(job.id, &board) {
            // Another appliance of the lab got there first: nothing to see.
            if e.to_string().contains("being claimed by another") {
                tracing::debug!(job = job.id, board, "scheduler: {e}");
            } else {
                tracing::warn!(job = job.id, board, "scheduler: {e}");
            }
            continue;
        }
        tracing::info!(job = job.id, board, "job starts");
        let _ = app
            .store
            .add_event(&board, "job", &format!("job {} starts", job.id));
        runner::start(Arc::clone(app), job.clone(), board);
    }
    if !waiting.is_empty() {
        power_saving::wake_for(app, &waiting, &boards);
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
            appliance: None,
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

    #[test]
    fn reserved_and_powered_off_boards_get_nothing() {
        let mut reserved = board("a", "x");
        reserved.reservation = Some(crate::store::Reservation {
            by: "http.tokens[0]".into(),
            note: "debugging".into(),
            since: 0,
            until: i64::MAX,
            boot: None,
        });
        let mut off = board("b", "x");
        off.powered = Powered::Off;
        off.powered_at = Some(10);
        off.last_checkin = Some(5);
        assert!(assign(&[job(1, "x")], &[reserved, off.clone()]).is_empty());
        // Checked in after it was switched off: it is on again.
        off.last_checkin = Some(11);
        assert_eq!(assign(&[job(1, "x")], &[off]), vec![(0, "b".into())]);
    }
}
