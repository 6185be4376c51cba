//! The SQLite [`Store`]: one file (WAL, `synchronous=FULL`, foreign keys on), one connection
//! behind a mutex, every change in one (immediate) transaction committed before returning.
//!
//! The schema lives in `migrations.rs`; [`SqliteStore::open`] brings an older database
//! up to date and refuses a newer one.

use std::fmt::Display;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Type, ValueRef};
use rusqlite::{
    params, Connection, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior,
};

use super::migrations::MIGRATIONS;
use super::names::SqlName;
use super::{
    lost_message, now_ms, ApplianceSeen, Board, BoardEvent, BoardState, Health, Job, JobFilter,
    JobHealth, JobId, JobState, LostJob, Millis, NewJob, Powered, Reservation, Result, Store,
    StoreError, Work, WorkId, WorkKind,
};

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Room for every statement this file prepares.
const STATEMENT_CACHE: usize = 64;

/// A job listing's size when the filter names none.
const DEFAULT_LIMIT: usize = 100;

const BOARD_COLUMNS: &str = "id, device_type, state, health, approved, from_config, \
     token_sha256, mac, address, cloned, current_job, last_checkin, master_boot, info, appliance";

/// A board's row with its power and reservation, for [`board_row`] (add `WHERE`/`ORDER BY`).
const BOARD_SELECT: &str = "SELECT b.id, b.device_type, b.state, b.health, b.approved, \
     b.from_config, b.token_sha256, b.mac, b.address, b.cloned, b.current_job, b.last_checkin, \
     b.master_boot, b.info, b.powered, b.powered_at, r.reserved_by, r.note, r.since, r.until, \
     r.boot, b.appliance FROM boards b LEFT JOIN reservations r ON r.board = b.id";

const JOB_COLUMNS: &str = "id, name, device_type, priority, state, health, board, submitted, \
     started, ended, error_type, error, yaml, appliance";

const WORK_COLUMNS: &str =
    "id, board, job, kind, command, url, path, created, taken, done, exit, stdout, stderr";

/// The [`Store`] on an SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// Why a call failed, before it is given its context.
enum Fail {
    /// SQLite's error.
    Sql(rusqlite::Error),
    /// The call was refused (the state did not allow it).
    Refused(String),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl Fail {
    fn context(self, what: &str) -> StoreError {
        match self {
            Fail::Sql(e) => StoreError(format!("{what}: {e}")),
            Fail::Refused(message) => StoreError(format!("{what}: {message}")),
        }
    }
}

type FailResult<T> = std::result::Result<T, Fail>;

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let fail = |what: &str, e: &dyn Display| {
            StoreError(format!("open {}: {what}: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(&format!("create directory {}", dir.display()), &e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| fail("open", &e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail("set busy_timeout", &e))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(|e| fail("set journal_mode=WAL", &e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail("set synchronous=FULL", &e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| fail("set foreign_keys=ON", &e))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn, path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    /// The connection. A panic while it was held cannot have left a transaction open (dropping
    /// one rolls it back), so a poisoned lock is still usable.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` outside a transaction (a single read); errors name `what`.
    fn read<T>(&self, what: &str, f: impl FnOnce(&Connection) -> FailResult<T>) -> Result<T> {
        f(&self.conn()).map_err(|e| e.context(what))
    }

    /// Runs `f` in one immediate transaction, committed if `f` succeeds and rolled back
    /// otherwise; errors name `what`.
    fn write<T>(&self, what: &str, f: impl FnOnce(&Transaction<'_>) -> FailResult<T>) -> Result<T> {
        let mut conn = self.conn();
        let run = || -> FailResult<T> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|e| e.context(what))
    }
}

/// Applies the migrations `conn` lacks, each in its own transaction (re-reading the version
/// inside it, so two processes opening the same file at once do not both apply one).
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let known = MIGRATIONS.len();
    loop {
        let what = |step: &str| format!("open {}: {step}", path.display());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError(format!("{}: {e}", what("begin migration"))))?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| StoreError(format!("{}: {e}", what("read schema version"))))?;
        let version = match usize::try_from(version) {
            Ok(v) if v <= known => v,
            _ => {
                return Err(StoreError(format!(
                    "{}: the database has schema version {version}, but this labboot knows \
                     schema versions up to {known} (was it written by a newer labboot?)",
                    path.display()
                )))
            }
        };
        if version == known {
            return Ok(());
        }
        let next = version + 1;
        let step = what(&format!("migrate to schema version {next}"));
        tx.execute_batch(MIGRATIONS[version])
            .and_then(|()| tx.pragma_update(None, "user_version", next as i64))
            .and_then(|()| tx.commit())
            .map_err(|e| StoreError(format!("{step}: {e}")))?;
    }
}

/// Maps an enum to and from its lowercase name ([`SqlName`]) in a TEXT column.
macro_rules! text_enum {
    ($($type:ident),+ $(,)?) => {$(
        impl ToSql for $type {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.sql_name()))
            }
        }

        impl FromSql for $type {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                $type::parse_sql_name(value.as_str()?)
                    .map_err(|message| FromSqlError::Other(message.into()))
            }
        }
    )+};
}

text_enum!(BoardState, Health, Powered, JobState, JobHealth);

/// A conversion failure of column `index`.
fn bad_column(index: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, message.into())
}

/// A board from a row of [`BOARD_SELECT`].
fn board_row(row: &Row<'_>) -> rusqlite::Result<Board> {
    let info: String = row.get(13)?;
    let info = serde_json::from_str(&info)
        .map_err(|e| bad_column(13, format!("info is not JSON: {e}")))?;
    let reservation = match row.get::<_, Option<String>>(16)? {
        None => None,
        Some(by) => {
            let boot = match row.get::<_, Option<String>>(20)? {
                None => None,
                Some(text) => Some(
                    serde_json::from_str(&text)
                        .map_err(|e| bad_column(20, format!("boot is not JSON: {e}")))?,
                ),
            };
            Some(Reservation {
                by,
                note: row.get(17)?,
                since: row.get(18)?,
                until: row.get(19)?,
                boot,
            })
        }
    };
    Ok(Board {
        id: row.get(0)?,
        device_type: row.get(1)?,
        state: row.get(2)?,
        health: row.get(3)?,
        approved: row.get(4)?,
        from_config: row.get(5)?,
        token_sha256: row.get(6)?,
        mac: row.get(7)?,
        address: row.get(8)?,
        cloned: row.get(9)?,
        current_job: row.get(10)?,
        last_checkin: row.get(11)?,
        master_boot: row.get(12)?,
        info,
        powered: row.get(14)?,
        powered_at: row.get(15)?,
        reservation,
        appliance: row.get(21)?,
    })
}

/// A job from a row of [`JOB_COLUMNS`].
fn job_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: row.get(0)?,
        name: row.get(1)?,
        device_type: row.get(2)?,
        priority: row.get(3)?,
        state: row.get(4)?,
        health: row.get(5)?,
        board: row.get(6)?,
        submitted: row.get(7)?,
        started: row.get(8)?,
        ended: row.get(9)?,
        error_type: row.get(10)?,
        error: row.get(11)?,
        yaml: row.get(12)?,
        appliance: row.get(13)?,
    })
}

/// A work item from a row of [`WORK_COLUMNS`].
fn work_row(row: &Row<'_>) -> rusqlite::Result<Work> {
    let kind: String = row.get(3)?;
    let text = |index: usize, name: &str| -> rusqlite::Result<String> {
        row.get::<_, Option<String>>(index)?
            .ok_or_else(|| bad_column(index, format!("{kind} work without {name}")))
    };
    let kind = match kind.as_str() {
        "run" => WorkKind::Run {
            command: text(4, "command")?,
        },
        "fetch" => WorkKind::Fetch {
            url: text(5, "url")?,
            path: text(6, "path")?,
        },
        "reboot" => WorkKind::Reboot,
        other => return Err(bad_column(3, format!("'{other}' is not a work kind"))),
    };
    Ok(Work {
        id: row.get(0)?,
        board: row.get(1)?,
        job: row.get(2)?,
        kind,
        created: row.get(7)?,
        taken: row.get(8)?,
        done: row.get(9)?,
        exit: row.get(10)?,
        stdout: row.get(11)?,
        stderr: row.get(12)?,
    })
}

/// A count or limit as SQLite's integer (saturating).
fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn get_job(conn: &Connection, id: JobId) -> rusqlite::Result<Option<Job>> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_row)
        .optional()
}

fn get_board(conn: &Connection, id: &str) -> rusqlite::Result<Option<Board>> {
    conn.prepare_cached(&format!("{BOARD_SELECT} WHERE b.id = ?1"))?
        .query_row([id], board_row)
        .optional()
}

fn get_work(conn: &Connection, id: WorkId) -> rusqlite::Result<Option<Work>> {
    conn.prepare_cached(&format!("SELECT {WORK_COLUMNS} FROM work WHERE id = ?1"))?
        .query_row([id], work_row)
        .optional()
}

/// Finishes job `id` (ended now) with `health` and the error, and frees its board if the
/// board's current job is this one.
fn finish(
    tx: &Transaction<'_>,
    id: JobId,
    board: Option<&str>,
    health: JobHealth,
    error: Option<(&str, &str)>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE jobs SET state = 'finished', health = ?2, ended = ?3, error_type = ?4, \
         error = ?5 WHERE id = ?1",
    )?
    .execute(params![
        id,
        health,
        now_ms(),
        error.map(|e| e.0),
        error.map(|e| e.1)
    ])?;
    if let Some(board) = board {
        tx.prepare_cached(
            "UPDATE boards SET state = 'idle', current_job = NULL \
             WHERE id = ?1 AND current_job = ?2",
        )?
        .execute(params![board, id])?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn board(&self, id: &str) -> Result<Option<Board>> {
        self.read(&format!("read board '{id}'"), |conn| {
            Ok(get_board(conn, id)?)
        })
    }

    fn boards(&self) -> Result<Vec<Board>> {
        self.read("list boards", |conn| {
            let mut stmt = conn.prepare_cached(&format!("{BOARD_SELECT} ORDER BY b.id"))?;
            let boards = stmt
                .query_map([], board_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(boards)
        })
    }

    fn board_counts(&self) -> Result<Vec<(BoardState, Health, i64)>> {
        self.read("count boards", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, health, COUNT(*) FROM boards GROUP BY state, health",
            )?;
            let counts = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(counts)
        })
    }

    fn put_board(&self, board: &Board) -> Result<()> {
        self.write(&format!("store board '{}'", board.id), |tx| {
            let info = serde_json::to_string(&board.info)
                .map_err(|e| Fail::Refused(format!("info is not JSON: {e}")))?;
            tx.prepare_cached(&format!(
                "INSERT INTO boards ({BOARD_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                 ON CONFLICT (id) DO UPDATE SET device_type = excluded.device_type, \
                 state = excluded.state, health = excluded.health, approved = excluded.approved, \
                 from_config = excluded.from_config, token_sha256 = excluded.token_sha256, \
                 mac = excluded.mac, address = excluded.address, cloned = excluded.cloned, \
                 current_job = excluded.current_job, last_checkin = excluded.last_checkin, \
                 master_boot = excluded.master_boot, info = excluded.info, \
                 appliance = excluded.appliance"
            ))?
            .execute(params![
                board.id,
                board.device_type,
                board.state,
                board.health,
                board.approved,
                board.from_config,
                board.token_sha256,
                board.mac,
                board.address,
                board.cloned,
                board.current_job,
                board.last_checkin,
                board.master_boot,
                info,
                board.appliance,
            ])?;
            Ok(())
        })
    }

    fn add_event(&self, board: &str, kind: &str, message: &str) -> Result<()> {
        self.write(&format!("add {kind} event of board '{board}'"), |tx| {
            tx.prepare_cached(
                "INSERT INTO board_events (board, time, kind, message) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![board, now_ms(), kind, message])?;
            Ok(())
        })
    }

    fn events(&self, board: &str, limit: usize) -> Result<Vec<BoardEvent>> {
        self.read(&format!("read events of board '{board}'"), |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT time, kind, message FROM board_events WHERE board = ?1 \
                 ORDER BY time DESC, id DESC LIMIT ?2",
            )?;
            let events = stmt
                .query_map(params![board, sql_count(limit)], |row| {
                    Ok(BoardEvent {
                        time: row.get(0)?,
                        kind: row.get(1)?,
                        message: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(events)
        })
    }

    fn insert_job(&self, job: &NewJob) -> Result<JobId> {
        self.write(&format!("insert job '{}'", job.name), |tx| {
            if !(0..=100).contains(&job.priority) {
                return Err(Fail::Refused(format!(
                    "priority {} is not within 0-100",
                    job.priority
                )));
            }
            let id = tx
                .prepare_cached(
                    "INSERT INTO jobs (name, device_type, priority, state, health, submitted, yaml) \
                     VALUES (?1, ?2, ?3, 'queued', 'unknown', ?4, ?5)",
                )?
                .insert(params![
                    job.name,
                    job.device_type,
                    job.priority,
                    now_ms(),
                    job.yaml
                ])?;
            Ok(id)
        })
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.read(&format!("read job {id}"), |conn| Ok(get_job(conn, id)?))
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.read("list jobs", |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs \
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR health = ?2) \
                 AND (?3 IS NULL OR board = ?3) AND (?4 IS NULL OR device_type = ?4) \
                 ORDER BY id DESC LIMIT ?5"
            ))?;
            let jobs = stmt
                .query_map(
                    params![
                        filter.state,
                        filter.health,
                        filter.board,
                        filter.device_type,
                        sql_count(filter.limit.unwrap_or(DEFAULT_LIMIT)),
                    ],
                    job_row,
                )?
                .collect::<rusqlite::Result<_>>()?;
            Ok(jobs)
        })
    }

    fn job_counts(&self) -> Result<Vec<(JobState, JobHealth, i64)>> {
        self.read("count jobs", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT state, health, COUNT(*) FROM jobs GROUP BY state, health",
            )?;
            let counts = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(counts)
        })
    }

    fn queued_jobs(&self) -> Result<Vec<Job>> {
        self.read("list queued jobs", |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'queued' \
                 ORDER BY priority DESC, id ASC"
            ))?;
            let jobs = stmt
                .query_map([], job_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(jobs)
        })
    }

    fn start_job(&self, id: JobId, board: &str) -> Result<()> {
        self.write(&format!("start job {id} on board '{board}'"), |tx| {
            let job = get_job(tx, id)?.ok_or_else(|| Fail::Refused(format!("no job {id}")))?;
            let b = get_board(tx, board)?
                .ok_or_else(|| Fail::Refused(format!("no board '{board}'")))?;
            if let Some(why) = super::start_refusal(&job, &b) {
                return Err(Fail::Refused(why));
            }
            tx.prepare_cached(
                "UPDATE jobs SET state = 'running', board = ?2, started = ?3, appliance = ?4 \
                 WHERE id = ?1",
            )?
            .execute(params![id, board, now_ms(), b.appliance])?;
            tx.prepare_cached("UPDATE boards SET state = 'job', current_job = ?2 WHERE id = ?1")?
                .execute(params![board, id])?;
            Ok(())
        })
    }

    fn cancel_job(&self, id: JobId) -> Result<Option<Job>> {
        self.write(&format!("cancel job {id}"), |tx| {
            let Some(job) = get_job(tx, id)? else {
                return Ok(None);
            };
            match job.state {
                JobState::Queued => finish(
                    tx,
                    id,
                    job.board.as_deref(),
                    JobHealth::Canceled,
                    Some(("Canceled", "canceled before it started")),
                )?,
                JobState::Running => {
                    tx.prepare_cached("UPDATE jobs SET state = 'canceling' WHERE id = ?1")?
                        .execute([id])?;
                }
                JobState::Canceling | JobState::Finished => return Ok(Some(job)),
            }
            Ok(get_job(tx, id)?)
        })
    }

    fn finish_job(&self, id: JobId, health: JobHealth, error: Option<(&str, &str)>) -> Result<()> {
        self.write(&format!("finish job {id}"), |tx| {
            let job = get_job(tx, id)?.ok_or_else(|| Fail::Refused(format!("no job {id}")))?;
            if job.state == JobState::Finished {
                return Err(Fail::Refused(format!("job {id} is already finished")));
            }
            finish(tx, id, job.board.as_deref(), health, error)?;
            Ok(())
        })
    }

    fn recover_interrupted(
        &self,
        appliance: &str,
        message: &str,
    ) -> Result<Vec<(JobId, Option<String>)>> {
        self.write(
            &format!("recover interrupted jobs of appliance '{appliance}'"),
            |tx| {
                let interrupted: Vec<(JobId, Option<String>)> = tx
                    .prepare_cached(
                        "SELECT id, board FROM jobs WHERE state IN ('running', 'canceling') \
                         AND (appliance = ?1 OR appliance IS NULL) ORDER BY id",
                    )?
                    .query_map([appliance], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (id, board) in &interrupted {
                    finish(
                        tx,
                        *id,
                        board.as_deref(),
                        JobHealth::Incomplete,
                        Some(("InfrastructureError", message)),
                    )?;
                }
                Ok(interrupted)
            },
        )
    }

    fn running_for(&self, appliance: &str) -> Result<Vec<Job>> {
        self.read(
            &format!("list running jobs of appliance '{appliance}'"),
            |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE appliance = ?1 \
                     AND state IN ('running', 'canceling') ORDER BY id"
                ))?;
                let jobs = stmt
                    .query_map([appliance], job_row)?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(jobs)
            },
        )
    }

    fn append_log(&self, job: JobId, lines: &[String]) -> Result<i64> {
        self.write(&format!("append log of job {job}"), |tx| {
            let last: i64 = tx
                .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job = ?1")?
                .query_row([job], |row| row.get(0))?;
            let mut insert =
                tx.prepare_cached("INSERT INTO job_logs (job, seq, line) VALUES (?1, ?2, ?3)")?;
            for (seq, line) in (last + 1..).zip(lines) {
                insert.execute(params![job, seq, line])?;
            }
            Ok(last + 1)
        })
    }

    fn log_lines(&self, job: JobId, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.read(&format!("read log of job {job}"), |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, line FROM job_logs WHERE job = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let lines = stmt
                .query_map(params![job, after, sql_count(limit)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(lines)
        })
    }

    fn put_results(&self, job: JobId, yaml: &str) -> Result<()> {
        self.write(&format!("store results of job {job}"), |tx| {
            tx.prepare_cached(
                "INSERT INTO job_results (job, yaml) VALUES (?1, ?2) \
                 ON CONFLICT (job) DO UPDATE SET yaml = excluded.yaml",
            )?
            .execute(params![job, yaml])?;
            Ok(())
        })
    }

    fn results(&self, job: JobId) -> Result<Option<String>> {
        self.read(&format!("read results of job {job}"), |conn| {
            Ok(conn
                .prepare_cached("SELECT yaml FROM job_results WHERE job = ?1")?
                .query_row([job], |row| row.get(0))
                .optional()?)
        })
    }

    fn add_work(&self, board: &str, job: Option<JobId>, kind: &WorkKind) -> Result<WorkId> {
        self.write(&format!("add work for board '{board}'"), |tx| {
            let (name, command, url, path) = match kind {
                WorkKind::Run { command } => ("run", Some(command), None, None),
                WorkKind::Fetch { url, path } => ("fetch", None, Some(url), Some(path)),
                WorkKind::Reboot => ("reboot", None, None, None),
            };
            let id = tx
                .prepare_cached(
                    "INSERT INTO work (board, job, kind, command, url, path, created) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .insert(params![board, job, name, command, url, path, now_ms()])?;
            Ok(id)
        })
    }

    fn take_work(&self, board: &str) -> Result<Option<Work>> {
        self.write(&format!("take work of board '{board}'"), |tx| {
            let work = tx
                .prepare_cached(&format!(
                    "SELECT {WORK_COLUMNS} FROM work \
                     WHERE board = ?1 AND taken IS NULL AND done IS NULL ORDER BY id LIMIT 1"
                ))?
                .query_row([board], work_row)
                .optional()?;
            let Some(mut work) = work else {
                return Ok(None);
            };
            let now = now_ms();
            tx.prepare_cached("UPDATE work SET taken = ?2 WHERE id = ?1")?
                .execute(params![work.id, now])?;
            work.taken = Some(now);
            Ok(Some(work))
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
        self.write(&format!("finish work {id} of board '{board}'"), |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE work SET done = ?3, exit = ?4, stdout = ?5, stderr = ?6 \
                     WHERE id = ?1 AND board = ?2",
                )?
                .execute(params![id, board, now_ms(), exit, stdout, stderr])?;
            Ok(changed > 0)
        })
    }

    fn work(&self, id: WorkId) -> Result<Option<Work>> {
        self.read(&format!("read work {id}"), |conn| Ok(get_work(conn, id)?))
    }

    fn drop_pending_work(&self, board: &str) -> Result<usize> {
        self.write(&format!("drop pending work of board '{board}'"), |tx| {
            Ok(tx
                .prepare_cached("DELETE FROM work WHERE board = ?1 AND done IS NULL")?
                .execute([board])?)
        })
    }

    fn set_powered(&self, board: &str, powered: Powered) -> Result<()> {
        self.write(&format!("record power of board '{board}'"), |tx| {
            let changed = tx
                .prepare_cached("UPDATE boards SET powered = ?2, powered_at = ?3 WHERE id = ?1")?
                .execute(params![board, powered, now_ms()])?;
            if changed == 0 {
                return Err(Fail::Refused(format!("no board '{board}'")));
            }
            Ok(())
        })
    }

    fn mark_off_if_unused(&self, board: &str) -> Result<bool> {
        self.write(&format!("record board '{board}' powered off"), |tx| {
            let Some(b) = get_board(tx, board)? else {
                return Ok(false);
            };
            let queued: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' \
                     AND device_type = ?1)",
                )?
                .query_row([&b.device_type], |r| r.get(0))?;
            if b.state != BoardState::Idle || b.reservation.is_some() || queued {
                return Ok(false);
            }
            tx.prepare_cached("UPDATE boards SET powered = 'off', powered_at = ?2 WHERE id = ?1")?
                .execute(params![board, now_ms()])?;
            Ok(true)
        })
    }

    fn reserve(&self, board: &str, r: &Reservation) -> Result<bool> {
        self.write(&format!("reserve board '{board}'"), |tx| {
            let Some(b) = get_board(tx, board)? else {
                return Ok(false);
            };
            if b.state != BoardState::Idle || b.reservation.is_some() {
                return Ok(false);
            }
            let boot = boot_text(r.boot.as_ref())?;
            tx.prepare_cached(
                "INSERT INTO reservations (board, reserved_by, note, since, until, boot) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![board, r.by, r.note, r.since, r.until, boot])?;
            Ok(true)
        })
    }

    fn set_reservation_boot(&self, board: &str, boot: Option<&serde_json::Value>) -> Result<bool> {
        self.write(&format!("record the boot of board '{board}'"), |tx| {
            let boot = boot_text(boot)?;
            let changed = tx
                .prepare_cached("UPDATE reservations SET boot = ?2 WHERE board = ?1")?
                .execute(params![board, boot])?;
            Ok(changed > 0)
        })
    }

    fn end_reservation(&self, board: &str) -> Result<Option<Reservation>> {
        self.write(&format!("end the reservation of board '{board}'"), |tx| {
            let Some(b) = get_board(tx, board)? else {
                return Ok(None);
            };
            tx.prepare_cached("DELETE FROM reservations WHERE board = ?1")?
                .execute([board])?;
            Ok(b.reservation)
        })
    }

    fn heartbeat(&self, name: &str, url: &str, starting: bool) -> Result<()> {
        self.write(&format!("record a heartbeat of appliance '{name}'"), |tx| {
            tx.prepare_cached(
                "INSERT INTO appliances (name, url, seen, started) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, seen = excluded.seen, \
                 started = CASE WHEN ?4 THEN excluded.started ELSE appliances.started END",
            )?
            .execute(params![name, url, now_ms(), starting])?;
            Ok(())
        })
    }

    fn appliances(&self) -> Result<Vec<ApplianceSeen>> {
        self.read("list appliances", |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, url, seen, started FROM appliances ORDER BY name")?;
            let seen = stmt
                .query_map([], |row| {
                    Ok(ApplianceSeen {
                        name: row.get(0)?,
                        url: row.get(1)?,
                        seen: row.get(2)?,
                        started: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(seen)
        })
    }

    /// The transaction is immediate: it holds the database's write lock from its first read,
    /// so stores racing on the same file run it one after the other.
    fn recover_lost(&self, me: &str, lease_ms: Millis) -> Result<Vec<LostJob>> {
        self.write("recover the jobs of lost appliances", |tx| {
            let cutoff = now_ms().saturating_sub(lease_ms);
            let lost: Vec<String> = tx
                .prepare_cached(
                    "SELECT name FROM appliances WHERE name <> ?1 AND seen < ?2 ORDER BY name",
                )?
                .query_map(params![me, cutoff], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut finished = Vec::new();
            for name in lost {
                let jobs: Vec<(JobId, Option<String>)> = tx
                    .prepare_cached(
                        "SELECT id, board FROM jobs WHERE appliance = ?1 \
                         AND state IN ('running', 'canceling') ORDER BY id",
                    )?
                    .query_map([&name], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let message = lost_message(&name);
                for (job, board) in jobs {
                    finish(
                        tx,
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
                tx.prepare_cached(LOST_BOARDS)?.execute([&name])?;
            }
            Ok(finished)
        })
    }
}

/// Marks the boards appliance `?1` serves offline and idle (unless in maintenance), with no
/// current job; boards already so are not written again.
const LOST_BOARDS: &str = "UPDATE boards SET health = 'offline', \
     state = CASE WHEN state = 'maintenance' THEN 'maintenance' ELSE 'idle' END, \
     current_job = NULL \
     WHERE appliance = ?1 AND (health <> 'offline' OR state = 'job' OR current_job IS NOT NULL)";

/// A boot request as stored (JSON text).
fn boot_text(boot: Option<&serde_json::Value>) -> FailResult<Option<String>> {
    boot.map(serde_json::to_string)
        .transpose()
        .map_err(|e| Fail::Refused(format!("boot is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    //! SQLite's own tests; what every backend must do is in `store/conformance.rs`.

    use super::*;

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn open_creates_directory_and_sets_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/nested/labboot.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.is_file());
        let conn = store.conn();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labboot.db");
        let newer = MIGRATIONS.len() as i64 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .expect("a newer database opens");
        let message = err.to_string();
        assert!(message.starts_with("database: "), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("schema version {newer}")),
            "{message}"
        );
        assert!(
            message.contains(&format!("up to {}", MIGRATIONS.len())),
            "{message}"
        );
        assert_eq!(user_version(&path), newer, "the database was left alone");
    }

    /// A database of schema version 2 with a job running: after the upgrade the job and its
    /// board belong to no appliance, and any appliance's restart recovers the job.
    #[test]
    fn upgrade_leaves_old_jobs_to_any_appliance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labboot.db");
        {
            let conn = Connection::open(&path).unwrap();
            for migration in &MIGRATIONS[..2] {
                conn.execute_batch(migration).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO boards (id, device_type, state, health, approved, from_config)
                     VALUES ('b1', 'rpi4', 'idle', 'online', 1, 1);
                 INSERT INTO jobs (name, device_type, priority, state, health, board, submitted,
                                   started, yaml)
                     VALUES ('old', 'rpi4', 50, 'running', 'unknown', 'b1', 1, 2, 'x');
                 UPDATE boards SET state = 'job', current_job = 1 WHERE id = 'b1';",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
        assert_eq!(store.board("b1").unwrap().unwrap().appliance, None);
        let job = store.job(1).unwrap().unwrap();
        assert_eq!((job.state, job.appliance), (JobState::Running, None));
        assert!(store.running_for("east").unwrap().is_empty());
        assert!(store.appliances().unwrap().is_empty());
        assert_eq!(
            store
                .recover_interrupted("east", "appliance restarted")
                .unwrap(),
            vec![(1, Some("b1".to_string()))]
        );
    }

    #[test]
    fn open_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "not a directory").unwrap();
        let path = blocker.join("labboot.db");
        let message = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(
            message.starts_with(&format!("database: open {}: ", path.display())),
            "{message}"
        );
    }

    #[test]
    fn store_open_url() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::open("sqlite:db/labboot.db", dir.path()).unwrap();
        let job = NewJob {
            name: "x".to_string(),
            device_type: "rpi4".to_string(),
            priority: 0,
            yaml: "job_name: x\n".to_string(),
        };
        store.insert_job(&job).unwrap();
        assert!(dir.path().join("db/labboot.db").is_file());
        // postgres:// URLs are the PostgreSQL store's (tested with it); others are refused,
        // shown without a password.
        let message = super::super::open("mysql://u:secret@x/db", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "database: 'mysql://u:***@x/db' is not a supported URL (sqlite:PATH, postgres://…)"
        );
    }

    #[test]
    fn enum_names_roundtrip() {
        let conn = Connection::open_in_memory().unwrap();
        let back =
            |v: &dyn ToSql| -> String { conn.query_row("SELECT ?1", [v], |r| r.get(0)).unwrap() };
        assert_eq!(back(&JobState::Canceling), "canceling");
        assert_eq!(back(&JobHealth::Incomplete), "incomplete");
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Canceling,
            JobState::Finished,
        ] {
            let got: JobState = conn.query_row("SELECT ?1", [state], |r| r.get(0)).unwrap();
            assert_eq!(got, state);
        }
        for health in [
            JobHealth::Unknown,
            JobHealth::Complete,
            JobHealth::Incomplete,
            JobHealth::Canceled,
        ] {
            let got: JobHealth = conn.query_row("SELECT ?1", [health], |r| r.get(0)).unwrap();
            assert_eq!(got, health);
        }
        let bad = conn.query_row("SELECT 'sideways'", [], |r| r.get::<_, BoardState>(0));
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("'sideways' is not a BoardState"));
    }
}
