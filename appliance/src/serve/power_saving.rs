//! Boards' power as the appliance switches it: one lock per board so that switches never
//! interleave (power saving, the scheduler's wake-up, reservations, the API), the recorded
//! `powered` state, and the background task that ends reservations whose time is up and,
//! with `power_saving:`, powers off boards that have been idle for `idle_off_after` seconds.
//!
//! A board is switched off only if, in one store transaction, it is still idle, unreserved and
//! nothing of its device type is queued; the store then refuses it to the scheduler until it
//! is on again. When queued jobs find no eligible board, [`wake_for`] (called by the
//! scheduler) powers on boards that are off: they boot the master, check in, and get the job.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::power::PowerAction;
use super::{reservations, App};
use crate::store::{now_ms, Board, BoardState, Health, Job, Millis, Powered};

/// How often the background task looks at the boards.
const TICK: Duration = Duration::from_secs(2);

fn locks() -> &'static Mutex<HashMap<String, Arc<Mutex<()>>>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    LOCKS.get_or_init(Default::default)
}

/// Runs `f` (blocking) holding board `board`'s power lock.
pub fn with_board<T>(board: &str, f: impl FnOnce() -> T) -> T {
    let lock = {
        let mut map = locks().lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(board.to_string()).or_default())
    };
    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

/// Switches the board's power (blocking; call it holding the board's lock) and records it:
/// on, off, or unknown when the switch failed.
pub fn switch(app: &App, board: &str, action: PowerAction) -> anyhow::Result<()> {
    let r = app.registry.power(board, action);
    let powered = match (&r, action) {
        (Err(_), _) => Powered::Unknown,
        (Ok(()), PowerAction::Off) => Powered::Off,
        (Ok(()), _) => Powered::On,
    };
    if let Err(e) = app.store.set_powered(board, powered) {
        tracing::warn!(board, "power: {e}");
    }
    r
}

/// Whether power saving may switch `b` off now: idle, unreserved, online and on, with
/// nothing queued for its device type (`queued_types`).
pub fn sleepable(b: &Board, queued_types: &HashSet<&str>) -> bool {
    b.state == BoardState::Idle
        && b.reservation.is_none()
        && b.health == Health::Online
        && b.power_now() != Powered::Off
        && !queued_types.contains(b.device_type.as_str())
}

/// The background task: publishes reserved boards' boots again, then every few seconds ends
/// reservations whose time is up and switches idle boards off.
pub async fn run(app: Arc<App>, cancel: CancellationToken) {
    let a = Arc::clone(&app);
    let _ = tokio::task::spawn_blocking(move || reservations::restore(&a)).await;
    let mut idle_since: HashMap<String, Millis> = HashMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if app.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let a = Arc::clone(&app);
        match tokio::task::spawn_blocking(move || {
            tick(&a, &mut idle_since);
            idle_since
        })
        .await
        {
            Ok(m) => idle_since = m,
            Err(e) => {
                tracing::error!("power saving: {e}");
                idle_since = HashMap::new();
            }
        }
    }
}

fn tick(app: &App, idle_since: &mut HashMap<String, Millis>) {
    let boards = match app.store.boards() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("power saving: {e}");
            return;
        }
    };
    let boards: Vec<Board> = boards
        .into_iter()
        .filter(|b| app.registry.serves(b))
        .collect();
    let now = now_ms();
    for b in &boards {
        if b.reservation.as_ref().is_some_and(|r| r.until <= now) {
            if let Err(e) = reservations::release(app, &b.id, "its time is up") {
                tracing::warn!(board = %b.id, "reservation: {}", e.message);
            }
        }
    }
    let Some(ps) = &app.config.power_saving else {
        return;
    };
    let queued = match app.store.queued_jobs() {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!("power saving: {e}");
            return;
        }
    };
    let types: HashSet<&str> = queued.iter().map(|j| j.device_type.as_str()).collect();
    let after = ps.idle_off_after.saturating_mul(1000) as Millis;
    let mut still = HashMap::new();
    for b in &boards {
        if !sleepable(b, &types) || app.registry.configured(&b.id).is_none() {
            continue;
        }
        let since = idle_since.get(&b.id).copied().unwrap_or(now);
        if now - since >= after {
            power_off_idle(app, &b.id, ps.idle_off_after);
        } else {
            still.insert(b.id.clone(), since);
        }
    }
    *idle_since = still;
}

fn power_off_idle(app: &App, id: &str, seconds: u64) {
    with_board(id, || {
        match app.store.mark_off_if_unused(id) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(board = id, "power saving: {e}");
                return;
            }
        }
        let msg = format!("power saving: off (idle for {seconds} s, nothing queued)");
        tracing::info!(board = id, "{msg}");
        let _ = app.store.add_event(id, "power", &msg);
        if let Err(e) = switch(app, id, PowerAction::Off) {
            tracing::warn!(board = id, "power saving: {e:#}");
        }
    });
}

/// With `power_saving:`, powers on boards that are off for the `waiting` jobs no board took:
/// per device type, one board per job, less the boards already booting for them.
pub fn wake_for(app: &App, waiting: &[&Job], boards: &[Board]) {
    if app.config.power_saving.is_none() {
        return;
    }
    let mut need: HashMap<&str, usize> = HashMap::new();
    for j in waiting {
        *need.entry(j.device_type.as_str()).or_default() += 1;
    }
    for (device_type, jobs) in need {
        for id in to_wake(boards, device_type, jobs) {
            if app.registry.configured(&id).is_some() {
                wake(app, &id, device_type);
            }
        }
    }
}

/// The boards of `device_type` to power on for `jobs` waiting jobs.
pub fn to_wake(boards: &[Board], device_type: &str, jobs: usize) -> Vec<String> {
    let usable = |b: &&Board| {
        b.approved
            && b.state == BoardState::Idle
            && b.reservation.is_none()
            && b.cloned.is_none()
            && b.device_type == device_type
    };
    let booting = boards
        .iter()
        .filter(usable)
        .filter(|b| b.health == Health::Unknown && b.power_now() == Powered::On)
        .count();
    boards
        .iter()
        .filter(usable)
        .filter(|b| b.power_now() == Powered::Off)
        .take(jobs.saturating_sub(booting))
        .map(|b| b.id.clone())
        .collect()
}

fn wake(app: &App, id: &str, device_type: &str) {
    with_board(id, || {
        // Looked at again under the lock: another wake-up or a reservation may have come first.
        let Ok(Some(b)) = app.store.board(id) else {
            return;
        };
        if b.power_now() != Powered::Off || b.state != BoardState::Idle || b.reservation.is_some() {
            return;
        }
        let msg = format!("power saving: on (a {device_type} job waits)");
        tracing::info!(board = id, "{msg}");
        let _ = app.store.add_event(id, "power", &msg);
        if let Err(e) = switch(app, id, PowerAction::On) {
            tracing::warn!(board = id, "power saving: {e:#}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Reservation;

    fn board(id: &str, health: Health, powered: Powered) -> Board {
        let mut b = Board::new(id, "x");
        b.approved = true;
        b.health = health;
        b.powered = powered;
        b.powered_at = Some(1_000);
        b
    }

    #[test]
    fn only_idle_online_unreserved_boards_without_queued_work_sleep() {
        let none = HashSet::new();
        assert!(sleepable(&board("a", Health::Online, Powered::On), &none));
        assert!(sleepable(
            &board("a", Health::Online, Powered::Unknown),
            &none
        ));
        assert!(!sleepable(&board("a", Health::Unknown, Powered::On), &none));
        let queued: HashSet<&str> = ["x"].into();
        assert!(!sleepable(
            &board("a", Health::Online, Powered::On),
            &queued
        ));
        let mut busy = board("a", Health::Online, Powered::On);
        busy.state = BoardState::Job;
        assert!(!sleepable(&busy, &none));
        let mut held = board("a", Health::Online, Powered::On);
        held.reservation = Some(Reservation {
            by: "http.tokens[0]".into(),
            note: String::new(),
            since: 0,
            until: 1,
            boot: None,
        });
        assert!(!sleepable(&held, &none));
    }

    #[test]
    fn one_board_woken_per_waiting_job_less_those_booting() {
        let off = |id: &str| board(id, Health::Unknown, Powered::Off);
        let boards = vec![off("a"), off("b"), off("c")];
        assert_eq!(to_wake(&boards, "x", 2), vec!["a", "b"]);
        assert!(to_wake(&boards, "y", 2).is_empty());
        let mut booting = boards.clone();
        booting[0].powered = Powered::On;
        assert_eq!(to_wake(&booting, "x", 2), vec!["b"]);
        assert!(to_wake(&booting, "x", 1).is_empty());
        // Off, then checked in since: it is on, not woken again.
        let mut back = off("d");
        back.last_checkin = Some(2_000);
        back.health = Health::Online;
        assert!(to_wake(&[back], "x", 1).is_empty());
        let mut maint = off("e");
        maint.state = BoardState::Maintenance;
        assert!(to_wake(&[maint], "x", 1).is_empty());
    }
}
