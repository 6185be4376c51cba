//! The PostgreSQL [`Store`]: one database shared by several appliances.
//!
//! Calls run on the store's own connection threads (`worker.rs`), so they may be made from any
//! thread, a tokio worker included. Every change runs in one transaction (READ COMMITTED)
//! committed before the call returns. Calls that check a state before changing it lock the rows
//! they check (`SELECT … FOR NO KEY UPDATE`, the lock an `UPDATE` takes, which does not block
//! inserts that only reference the row) and read them again once the lock is had, so the check
//! holds until the commit even when other appliances race for the same job or board: one
//! `start_job` of a job succeeds, a board gets one job at a time, work is handed out once.
//! Locks are always taken in one order, appliance (`recover_lost`), then job, then board, so
//! racing calls cannot deadlock each other.
//!
//! The schema lives in `migrations.rs`; [`PostgresStore::connect`] brings an older database up to
//! date and refuses a newer one. PostgreSQL TEXT cannot hold a NUL character: a string with one
//! is refused with an error (SQLite would keep it).

mod error;
pub(crate) mod migrations;
mod rows;
mod url;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use ::postgres::Config;

use super::names::SqlName;
use super::{
    lost_message, now_ms, ApplianceSeen, Board, BoardEvent, BoardState, Health, Job, JobFilter,
    JobHealth, JobId, JobState, LostJob, Millis, NewJob, Powered, Reservation, Result, Store,
    StoreError, Work, WorkId, WorkKind,
};
use error::Fail;
use rows::{
    all, board_row, claim_lock_board, claim_lock_job, get, get_board, get_enum, get_job, get_work,
    job_row, lock_board, lock_job, work_row, BOARD_COLUMNS, BOARD_SELECT, JOB_COLUMNS,
    WORK_COLUMNS,
};
pub use url::{is_postgres_url, redact};
use worker::{Pool, Session, Sql, Target};

/// How many connections (and threads) a store opens at most by default.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// How long a connection attempt may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may be silent before TCP keepalives probe it, so a dead server or
/// network is noticed within minutes, not hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// A job listing's size when the filter names none.
const DEFAULT_LIMIT: usize = 100;

/// "Now" in [`Millis`] on the database server's clock (the statement's start, so one value
/// throughout a statement): heartbeats and leases use it, so appliances on hosts whose clocks
/// disagree agree on who is lost.
const DB_NOW_MS: &str = "floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint";

/// The [`Store`] on a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for errors.
    shown: Arc<str>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://…` or `postgresql://…`) with
    /// [`DEFAULT_CONNECTIONS`] connections and migrates it.
    pub fn connect(url: &str) -> Result<PostgresStore> {
        PostgresStore::connect_with(url, DEFAULT_CONNECTIONS)
    }

    /// Connects with at most `connections` connections (at least one) and migrates the
    /// database. Errors name the URL without its password, and what failed.
    pub fn connect_with(url: &str, connections: usize) -> Result<PostgresStore> {
        let shown: Arc<str> = Arc::from(redact(url));
        if !is_postgres_url(url) {
            return Err(StoreError(format!(
                "open {shown}: not a postgres:// or postgresql:// URL"
            )));
        }
        let mut config: Config = url.parse().map_err(|e: ::postgres::Error| {
            StoreError(format!("open {shown}: {}", error::error_text(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(KEEPALIVE_IDLE);
        if config.get_application_name().is_none() {
            config.application_name("labboot");
        }
        let pool = Pool::start(Arc::new(Target { config }), connections)
            .map_err(|e| StoreError(format!("open {shown}: {e}")))?;
        let migrate_shown = Arc::clone(&shown);
        pool.run(move |session| Ok(migrations::migrate(session, &migrate_shown)))
            .map_err(|fail| fail.context(&format!("open {shown}"), &shown))??;
        Ok(PostgresStore { pool, shown })
    }

    /// Runs `f` on a connection thread outside a transaction; errors name `what`.
    fn read<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnMut(&mut Sql<'_>) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        self.call(what, move |session| session.read(f))
    }

    /// Runs `f` on a connection thread in one transaction, committed if `f` succeeds and rolled
    /// back otherwise; errors name `what`.
    fn write<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnMut(&mut Sql<'_>) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        self.call(what, move |session| session.write(f))
    }

    /// Runs `task` on a connection thread; errors name `what`.
    fn call<T: Send + 'static>(
        &self,
        what: String,
        task: impl FnOnce(&mut Session) -> std::result::Result<T, Fail> + Send + 'static,
    ) -> Result<T> {
        self.pool
            .run(task)
            .map_err(|fail| fail.context(&what, &self.shown))
    }
}

/// A count or limit as PostgreSQL's BIGINT (saturating).
fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Finishes job `id` (ended now) with `health` and the error, and frees its board if the
/// board's current job is this one. The job's row must be locked.
fn finish(
    sql: &mut Sql<'_>,
    id: JobId,
    board: Option<&str>,
    health: JobHealth,
    error: Option<(&str, &str)>,
) -> std::result::Result<(), Fail> {
    sql.execute(
        "UPDATE jobs SET state = 'finished', health = $2, ended = $3, error_type = $4, \
         error = $5 WHERE id = $1",
        &[
            &id,
            &health.sql_name(),
            &now_ms(),
            &error.map(|e| e.0),
            &error.map(|e| e.1),
        ],
    )?;
    if let Some(board) = board {
        sql.execute(
            "UPDATE boards SET state = 'idle', current_job = NULL \
             WHERE id = $1 AND current_job = $2",
            &[&board, &id],
        )?;
    }
    Ok(())
}

/// An enum's name as a parameter (or NULL).
fn name_of<T: SqlName>(value: Option<T>) -> Option<&'static str> {
    value.map(|v| v.sql_name())
}

impl Store for PostgresStore {
    fn board(&self, id: &str) -> Result<Option<Board>> {
        let id = id.to_string();
        self.read(format!("read board '{id}'"), move |sql| get_board(sql, &id))
    }

    fn boards(&self) -> Result<Vec<Board>> {
        self.read("list boards".into(), |sql| {
            all(
                &sql.query(&format!("{BOARD_SELECT} ORDER BY b.id"), &[])?,
                board_row,
            )
        })
    }

    fn board_counts(&self) -> Result<Vec<(BoardState, Health, i64)>> {
        self.read("count boards".into(), |sql| {
            let rows = sql.query(
                "SELECT state, health, COUNT(*) FROM boards GROUP BY state, health",
                &[],
            )?;
            all(&rows, |r| {
                Ok((get_enum(r, 0)?, get_enum(r, 1)?, get(r, 2)?))
            })
        })
    }

    fn put_board(&self, board: &Board) -> Result<()> {
        let board = board.clone();
        self.write(format!("store board '{}'", board.id), move |sql| {
            sql.execute(
                &format!(
                    "INSERT INTO boards ({BOARD_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                     $15) \
                     ON CONFLICT (id) DO UPDATE SET device_type = excluded.device_type, \
                     state = excluded.state, health = excluded.health, \
                     approved = excluded.approved, from_config = excluded.from_config, \
                     token_sha256 = excluded.token_sha256, mac = excluded.mac, \
                     address = excluded.address, cloned = excluded.cloned, \
                     current_job = excluded.current_job, last_checkin = excluded.last_checkin, \
                     master_boot = excluded.master_boot, info = excluded.info, \
                     appliance = excluded.appliance"
                ),
                &[
                    &board.id,
                    &board.device_type,
                    &board.state.sql_name(),
                    &board.health.sql_name(),
                    &board.approved,
                    &board.from_config,
                    &board.token_sha256,
                    &board.mac,
                    &board.address,
                    &board.cloned,
                    &board.current_job,
                    &board.last_checkin,
                    &board.master_boot,
                    &board.info,
                    &board.appliance,
                ],
            )?;
            Ok(())
        })
    }

    fn add_event(&self, board: &str, kind: &str, message: &str) -> Result<()> {
        let (board, kind, message) = (board.to_string(), kind.to_string(), message.to_string());
        self.write(format!("add {kind} event of board '{board}'"), move |sql| {
            sql.execute(
                "INSERT INTO board_events (board, time, kind, message) \
                     VALUES ($1, $2, $3, $4)",
                &[&board, &now_ms(), &kind, &message],
            )?;
            Ok(())
        })
    }

    fn events(&self, board: &str, limit: usize) -> Result<Vec<BoardEvent>> {
        let board = board.to_string();
        self.read(format!("read events of board '{board}'"), move |sql| {
            let rows = sql.query(
                "SELECT time, kind, message FROM board_events WHERE board = $1 \
                 ORDER BY time DESC, id DESC LIMIT $2",
                &[&board, &sql_count(limit)],
            )?;
            all(&rows, |row| {
                Ok(BoardEvent {
                    time: get(row, 0)?,
                    kind: get(row, 1)?,
                    message: get(row, 2)?,
                })
            })
        })
    }

    fn insert_job(&self, job: &NewJob) -> Result<JobId> {
        let job = job.clone();
        self.write(format!("insert job '{}'", job.name), move |sql| {
            if !(0..=100).contains(&job.priority) {
                return Err(Fail::Refused(format!(
                    "priority {} is not within 0-100",
                    job.priority
                )));
            }
            let row = sql.query_one(
                "INSERT INTO jobs (name, device_type, priority, state, health, submitted, yaml) \
                 VALUES ($1, $2, $3, 'queued', 'unknown', $4, $5) RETURNING id",
                &[
                    &job.name,
                    &job.device_type,
                    &job.priority,
                    &now_ms(),
                    &job.yaml,
                ],
            )?;
            get(&row, 0)
        })
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.read(format!("read job {id}"), move |sql| get_job(sql, id))
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let filter = filter.clone();
        self.read("list jobs".into(), move |sql| {
            let rows = sql.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs \
                     WHERE ($1::text IS NULL OR state = $1) \
                     AND ($2::text IS NULL OR health = $2) \
                     AND ($3::text IS NULL OR board = $3) \
                     AND ($4::text IS NULL OR device_type = $4) \
                     ORDER BY id DESC LIMIT $5"
                ),
                &[
                    &name_of(filter.state),
                    &name_of(filter.health),
                    &filter.board,
                    &filter.device_type,
                    &sql_count(filter.limit.unwrap_or(DEFAULT_LIMIT)),
                ],
            )?;
            all(&rows, job_row)
        })
    }

    fn job_counts(&self) -> Result<Vec<(JobState, JobHealth, i64)>> {
        self.read("count jobs".into(), |sql| {
            let rows = sql.query(
                "SELECT state, health, COUNT(*) FROM jobs GROUP BY state, health",
                &[],
            )?;
            all(&rows, |r| {
                Ok((get_enum(r, 0)?, get_enum(r, 1)?, get(r, 2)?))
            })
        })
    }

    fn queued_jobs(&self) -> Result<Vec<Job>> {
        self.read("list queued jobs".into(), |sql| {
            let rows = sql.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' \
                     ORDER BY priority DESC, id ASC"
                ),
                &[],
            )?;
            all(&rows, job_row)
        })
    }

    fn start_job(&self, id: JobId, board: &str) -> Result<()> {
        let board = board.to_string();
        self.write(format!("start job {id} on board '{board}'"), move |sql| {
            // NOWAIT: when several appliances race for the queue's head, the losers move on
            // at once instead of queueing behind the winner's commit.
            let job =
                claim_lock_job(sql, id)?.ok_or_else(|| Fail::Refused(format!("no job {id}")))?;
            if let Some(why) = crate::store::job_refusal(&job) {
                return Err(Fail::Refused(why));
            }
            let b = claim_lock_board(sql, &board)?
                .ok_or_else(|| Fail::Refused(format!("no board '{board}'")))?;
            if let Some(why) = crate::store::board_refusal(&b) {
                return Err(Fail::Refused(why));
            }
            sql.execute(
                "UPDATE jobs SET state = 'running', board = $2, started = $3, appliance = $4 \
                 WHERE id = $1",
                &[&id, &board, &now_ms(), &b.appliance],
            )?;
            sql.execute(
                "UPDATE boards SET state = 'job', current_job = $2 WHERE id = $1",
                &[&board, &id],
            )?;
            Ok(())
        })
    }

    fn cancel_job(&self, id: JobId) -> Result<Option<Job>> {
        self.write(format!("cancel job {id}"), move |sql| {
            let Some(job) = lock_job(sql, id)? else {
                return Ok(None);
            };
            match job.state {
                JobState::Queued => finish(
                    sql,
                    id,
                    job.board.as_deref(),
                    JobHealth::Canceled,
                    Some(("Canceled", "canceled before it started")),
                )?,
                JobState::Running => {
                    sql.execute("UPDATE jobs SET state = 'canceling' WHERE id = $1", &[&id])?;
                }
                JobState::Canceling | JobState::Finished => return Ok(Some(job)),
            }
            get_job(sql, id)
        })
    }

    fn finish_job(&self, id: JobId, health: JobHealth, error: Option<(&str, &str)>) -> Result<()> {
        let error = error.map(|(kind, message)| (kind.to_string(), message.to_string()));
        self.write(format!("finish job {id}"), move |sql| {
            let job = lock_job(sql, id)?.ok_or_else(|| Fail::Refused(format!("no job {id}")))?;
            if job.state == JobState::Finished {
                return Err(Fail::Refused(format!("job {id} is already finished")));
            }
            let error = error.as_ref().map(|(k, m)| (k.as_str(), m.as_str()));
            finish(sql, id, job.board.as_deref(), health, error)
        })
    }

    fn recover_interrupted(
        &self,
        appliance: &str,
        message: &str,
    ) -> Result<Vec<(JobId, Option<String>)>> {
        let (appliance, message) = (appliance.to_string(), message.to_string());
        let what = format!("recover interrupted jobs of appliance '{appliance}'");
        self.write(what, move |sql| {
            let rows = sql.query(
                "SELECT id, board FROM jobs WHERE state IN ('running', 'canceling') \
                 AND (appliance = $1 OR appliance IS NULL) ORDER BY id FOR NO KEY UPDATE",
                &[&appliance],
            )?;
            let interrupted: Vec<(JobId, Option<String>)> =
                all(&rows, |row| Ok((get(row, 0)?, get(row, 1)?)))?;
            for (id, board) in &interrupted {
                finish(
                    sql,
                    *id,
                    board.as_deref(),
                    JobHealth::Incomplete,
                    Some(("InfrastructureError", message.as_str())),
                )?;
            }
            Ok(interrupted)
        })
    }

    fn running_for(&self, appliance: &str) -> Result<Vec<Job>> {
        let appliance = appliance.to_string();
        let what = format!("list running jobs of appliance '{appliance}'");
        self.read(what, move |sql| {
            let rows = sql.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE appliance = $1 \
                     AND state IN ('running', 'canceling') ORDER BY id"
                ),
                &[&appliance],
            )?;
            all(&rows, job_row)
        })
    }

    fn append_log(&self, job: JobId, lines: &[String]) -> Result<i64> {
        let lines = lines.to_vec();
        self.write(format!("append log of job {job}"), move |sql| {
            // Appends to one job's log take turns (the job's row lock), so their numbers follow
            // each other; an unknown job locks nothing and its insert fails on the reference.
            sql.query_opt(
                "SELECT 1 FROM jobs WHERE id = $1 FOR NO KEY UPDATE",
                &[&job],
            )?;
            let row = sql.query_one(
                "SELECT COALESCE(MAX(seq), 0)::bigint FROM job_logs WHERE job = $1",
                &[&job],
            )?;
            let first = get::<i64>(&row, 0)? + 1;
            if !lines.is_empty() {
                sql.execute(
                    "INSERT INTO job_logs (job, seq, line) \
                     SELECT $1, $2 + n - 1, line FROM unnest($3::text[]) \
                     WITH ORDINALITY AS l (line, n)",
                    &[&job, &first, &lines],
                )?;
            }
            Ok(first)
        })
    }

    fn log_lines(&self, job: JobId, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.read(format!("read log of job {job}"), move |sql| {
            let rows = sql.query(
                "SELECT seq, line FROM job_logs WHERE job = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&job, &after, &sql_count(limit)],
            )?;
            all(&rows, |row| Ok((get(row, 0)?, get(row, 1)?)))
        })
    }

    fn put_results(&self, job: JobId, yaml: &str) -> Result<()> {
        let yaml = yaml.to_string();
        self.write(format!("store results of job {job}"), move |sql| {
            sql.execute(
                "INSERT INTO job_results (job, yaml) VALUES ($1, $2) \
                 ON CONFLICT (job) DO UPDATE SET yaml = excluded.yaml",
                &[&job, &yaml],
            )?;
            Ok(())
        })
    }

    fn results(&self, job: JobId) -> Result<Option<String>> {
        self.read(format!("read results of job {job}"), move |sql| {
            sql.query_opt("SELECT yaml FROM job_results WHERE job = $1", &[&job])?
                .map(|row| get(&row, 0))
                .transpose()
        })
    }

    fn add_work(&self, board: &str, job: Option<JobId>, kind: &WorkKind) -> Result<WorkId> {
        let board = board.to_string();
        let kind = kind.clone();
        self.write(format!("add work for board '{board}'"), move |sql| {
            let (name, command, url, path) = match &kind {
                WorkKind::Run { command } => ("run", Some(command), None, None),
                WorkKind::Fetch { url, path } => ("fetch", None, Some(url), Some(path)),
                WorkKind::Reboot => ("reboot", None, None, None),
            };
            let row = sql.query_one(
                "INSERT INTO work (board, job, kind, command, url, path, created) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&board, &job, &name, &command, &url, &path, &now_ms()],
            )?;
            get(&row, 0)
        })
    }

    fn take_work(&self, board: &str) -> Result<Option<Work>> {
        let board = board.to_string();
        self.write(format!("take work of board '{board}'"), move |sql| {
            // The oldest untaken item not being taken by another call right now: each item is
            // handed out once, and racing calls get different items.
            sql.query_opt(
                &format!(
                    "UPDATE work SET taken = $2 WHERE id = (SELECT id FROM work \
                     WHERE board = $1 AND taken IS NULL AND done IS NULL \
                     ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING {WORK_COLUMNS}"
                ),
                &[&board, &now_ms()],
            )?
            .as_ref()
            .map(work_row)
            .transpose()
        })
    }

    fn finish_work(
        &self,
        board: &str,
        id: WorkId,
        exit: i32,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<bool> {
        let board = board.to_string();
        let (stdout, stderr) = (stdout.to_vec(), stderr.to_vec());
        self.write(format!("finish work {id} of board '{board}'"), move |sql| {
            let changed = sql.execute(
                "UPDATE work SET done = $3, exit = $4, stdout = $5, stderr = $6 \
                 WHERE id = $1 AND board = $2",
                &[&id, &board, &now_ms(), &exit, &stdout, &stderr],
            )?;
            Ok(changed > 0)
        })
    }

    fn work(&self, id: WorkId) -> Result<Option<Work>> {
        self.read(format!("read work {id}"), move |sql| get_work(sql, id))
    }

    fn drop_pending_work(&self, board: &str) -> Result<usize> {
        let board = board.to_string();
        self.write(
            format!("drop pending work of board '{board}'"),
            move |sql| {
                let dropped = sql.execute(
                    "DELETE FROM work WHERE board = $1 AND done IS NULL",
                    &[&board],
                )?;
                Ok(usize::try_from(dropped).unwrap_or(usize::MAX))
            },
        )
    }

    fn set_powered(&self, board: &str, powered: Powered) -> Result<()> {
        let board = board.to_string();
        self.write(format!("record power of board '{board}'"), move |sql| {
            let changed = sql.execute(
                "UPDATE boards SET powered = $2, powered_at = $3 WHERE id = $1",
                &[&board, &powered.sql_name(), &now_ms()],
            )?;
            if changed == 0 {
                return Err(Fail::Refused(format!("no board '{board}'")));
            }
            Ok(())
        })
    }

    /// The board's row is locked, so no `start_job` or `reserve` runs meanwhile. A job queued
    /// by another appliance while this runs may go unseen (READ COMMITTED); the scheduler wakes
    /// a board that is off for a waiting job, as for one queued just after.
    fn mark_off_if_unused(&self, board: &str) -> Result<bool> {
        let board = board.to_string();
        self.write(format!("record board '{board}' powered off"), move |sql| {
            let Some(b) = lock_board(sql, &board)? else {
                return Ok(false);
            };
            let row = sql.query_one(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' \
                 AND device_type = $1)",
                &[&b.device_type],
            )?;
            let queued: bool = get(&row, 0)?;
            if b.state != BoardState::Idle || b.reservation.is_some() || queued {
                return Ok(false);
            }
            sql.execute(
                "UPDATE boards SET powered = 'off', powered_at = $2 WHERE id = $1",
                &[&board, &now_ms()],
            )?;
            Ok(true)
        })
    }

    fn reserve(&self, board: &str, r: &Reservation) -> Result<bool> {
        let board = board.to_string();
        let r = r.clone();
        self.write(format!("reserve board '{board}'"), move |sql| {
            let Some(b) = lock_board(sql, &board)? else {
                return Ok(false);
            };
            if b.state != BoardState::Idle || b.reservation.is_some() {
                return Ok(false);
            }
            sql.execute(
                "INSERT INTO reservations (board, reserved_by, note, since, until, boot) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&board, &r.by, &r.note, &r.since, &r.until, &r.boot],
            )?;
            Ok(true)
        })
    }

    fn set_reservation_boot(&self, board: &str, boot: Option<&serde_json::Value>) -> Result<bool> {
        let board = board.to_string();
        let boot = boot.cloned();
        self.write(format!("record the boot of board '{board}'"), move |sql| {
            let changed = sql.execute(
                "UPDATE reservations SET boot = $2 WHERE board = $1",
                &[&board, &boot],
            )?;
            Ok(changed > 0)
        })
    }

    fn end_reservation(&self, board: &str) -> Result<Option<Reservation>> {
        let board = board.to_string();
        self.write(
            format!("end the reservation of board '{board}'"),
            move |sql| {
                sql.query_opt(
                    "DELETE FROM reservations WHERE board = $1 \
                 RETURNING reserved_by, note, since, until, boot",
                    &[&board],
                )?
                .map(|row| {
                    Ok(Reservation {
                        by: get(&row, 0)?,
                        note: get(&row, 1)?,
                        since: get(&row, 2)?,
                        until: get(&row, 3)?,
                        boot: get(&row, 4)?,
                    })
                })
                .transpose()
            },
        )
    }

    fn heartbeat(&self, name: &str, url: &str, starting: bool) -> Result<()> {
        let (name, url) = (name.to_string(), url.to_string());
        self.write(
            format!("record a heartbeat of appliance '{name}'"),
            move |sql| {
                sql.execute(
                    &format!(
                        "INSERT INTO appliances (name, url, seen, started) \
                         VALUES ($1, $2, {DB_NOW_MS}, {DB_NOW_MS}) \
                         ON CONFLICT (name) DO UPDATE SET url = excluded.url, \
                         seen = excluded.seen, started = CASE WHEN $3 THEN excluded.started \
                         ELSE appliances.started END"
                    ),
                    &[&name, &url, &starting],
                )?;
                Ok(())
            },
        )
    }

    fn appliances(&self) -> Result<Vec<ApplianceSeen>> {
        self.read("list appliances".into(), |sql| {
            let rows = sql.query(
                "SELECT name, url, seen, started FROM appliances ORDER BY name",
                &[],
            )?;
            all(&rows, |row| {
                Ok(ApplianceSeen {
                    name: get(row, 0)?,
                    url: get(row, 1)?,
                    seen: get(row, 2)?,
                    started: get(row, 3)?,
                })
            })
        })
    }

    /// The lost appliances' rows are locked first (so a heartbeat that comes meanwhile waits,
    /// and one committed while this waited for the lock takes the appliance off the list),
    /// then their running jobs, in id order, read again once locked: a job another store
    /// finished meanwhile is skipped, so racing calls finish each job once.
    fn recover_lost(&self, me: &str, lease_ms: Millis) -> Result<Vec<LostJob>> {
        let me = me.to_string();
        self.write("recover the jobs of lost appliances".into(), move |sql| {
            let rows = sql.query(
                &format!(
                    "SELECT name FROM appliances WHERE name <> $1 AND seen < {DB_NOW_MS} - $2 \
                     ORDER BY name FOR UPDATE"
                ),
                &[&me, &lease_ms],
            )?;
            let lost: Vec<String> = all(&rows, |row| get(row, 0))?;
            let mut finished = Vec::new();
            for name in lost {
                let rows = sql.query(
                    "SELECT id, board FROM jobs WHERE appliance = $1 \
                     AND state IN ('running', 'canceling') ORDER BY id FOR NO KEY UPDATE",
                    &[&name],
                )?;
                let jobs: Vec<(JobId, Option<String>)> =
                    all(&rows, |row| Ok((get(row, 0)?, get(row, 1)?)))?;
                let message = lost_message(&name);
                for (job, board) in jobs {
                    finish(
                        sql,
                        job,
                        board.as_deref(),
                        JobHealth::Incomplete,
                        Some(("InfrastructureError", &message)),
                    )?;
                    finished.push(LostJob {
                        job,
                        board,
                        appliance: name.clone(),
                    });
                }
                sql.execute(
                    "UPDATE boards SET health = 'offline', \
                     state = CASE WHEN state = 'maintenance' THEN 'maintenance' ELSE 'idle' END, \
                     current_job = NULL WHERE appliance = $1 \
                     AND (health <> 'offline' OR state = 'job' OR current_job IS NOT NULL)",
                    &[&name],
                )?;
            }
            Ok(finished)
        })
    }
}
