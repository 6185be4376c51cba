//! The SQLite [`Store`]: one file (WAL, `synchronous=FULL`, foreign keys on), one connection
//! behind a mutex, every change in one (immediate) transaction committed before returning.
//!
//! The schema lives in [`super::migrations`]; [`SqliteStore::open`] brings an older database
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
use super::{
    now_ms, Board, BoardEvent, BoardState, Health, Job, JobFilter, JobHealth, JobId, JobState,
    NewJob, Powered, Reservation, Result, Store, StoreError, Work, WorkId, WorkKind,
};

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Room for every statement this file prepares.
const STATEMENT_CACHE: usize = 64;

/// A job listing's size when the filter names none.
const DEFAULT_LIMIT: usize = 100;

const BOARD_COLUMNS: &str = "id, device_type, state, health, approved, from_config, \
     token_sha256, mac, address, cloned, current_job, last_checkin, master_boot, info";

/// A board's row with its power and reservation, for [`board_row`] (add `WHERE`/`ORDER BY`).
const BOARD_SELECT: &str = "SELECT b.id, b.device_type, b.state, b.health, b.approved, \
     b.from_config, b.token_sha256, b.mac, b.address, b.cloned, b.current_job, b.last_checkin, \
     b.master_boot, b.info, b.powered, b.powered_at, r.reserved_by, r.note, r.since, r.until, \
     r.boot FROM boards b LEFT JOIN reservations r ON r.board = b.id";

const JOB_COLUMNS: &str = "id, name, device_type, priority, state, health, board, submitted, \
     started, ended, error_type, error, yaml";

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

/// The lowercase name an enum is stored as.
trait SqlName {
    fn sql_name(&self) -> &'static str;
}

/// Maps an enum to and from its lowercase name in a TEXT column.
macro_rules! text_enum {
    ($type:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl SqlName for $type {
            fn sql_name(&self) -> &'static str {
                match self {
                    $($type::$variant => $name,)+
                }
            }
        }

        impl ToSql for $type {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.sql_name()))
            }
        }

        impl FromSql for $type {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                match value.as_str()? {
                    $($name => Ok($type::$variant),)+
                    other => Err(FromSqlError::Other(
                        format!("'{other}' is not a {}", stringify!($type)).into(),
                    )),
                }
            }
        }
    };
}

text_enum!(BoardState { Idle => "idle", Job => "job", Maintenance => "maintenance" });
text_enum!(Health {
    Unknown => "unknown",
    Online => "online",
    Offline => "offline",
    Pending => "pending",
    Cloned => "cloned",
});
text_enum!(Powered { On => "on", Off => "off", Unknown => "unknown" });
text_enum!(JobState {
    Queued => "queued",
    Running => "running",
    Canceling => "canceling",
    Finished => "finished",
});
text_enum!(JobHealth {
    Unknown => "unknown",
    Complete => "complete",
    Incomplete => "incomplete",
    Canceled => "canceled",
});

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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                 ON CONFLICT (id) DO UPDATE SET device_type = excluded.device_type, \
                 state = excluded.state, health = excluded.health, approved = excluded.approved, \
                 from_config = excluded.from_config, token_sha256 = excluded.token_sha256, \
                 mac = excluded.mac, address = excluded.address, cloned = excluded.cloned, \
                 current_job = excluded.current_job, last_checkin = excluded.last_checkin, \
                 master_boot = excluded.master_boot, info = excluded.info"
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
            if job.state != JobState::Queued {
                return Err(Fail::Refused(format!(
                    "job {id} is {}, not queued",
                    job.state.sql_name()
                )));
            }
            let b = get_board(tx, board)?
                .ok_or_else(|| Fail::Refused(format!("no board '{board}'")))?;
            if b.state != BoardState::Idle {
                return Err(Fail::Refused(format!(
                    "board '{board}' is {}, not idle",
                    b.state.sql_name()
                )));
            }
            if b.reservation.is_some() {
                return Err(Fail::Refused(format!("board '{board}' is reserved")));
            }
            if b.power_now() == Powered::Off {
                return Err(Fail::Refused(format!("board '{board}' is powered off")));
            }
            tx.prepare_cached(
                "UPDATE jobs SET state = 'running', board = ?2, started = ?3 WHERE id = ?1",
            )?
            .execute(params![id, board, now_ms()])?;
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

    fn recover_interrupted(&self, message: &str) -> Result<Vec<(JobId, Option<String>)>> {
        self.write("recover interrupted jobs", |tx| {
            let interrupted: Vec<(JobId, Option<String>)> = tx
                .prepare_cached(
                    "SELECT id, board FROM jobs WHERE state IN ('running', 'canceling') \
                     ORDER BY id",
                )?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
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
        })
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
}

/// A boot request as stored (JSON text).
fn boot_text(boot: Option<&serde_json::Value>) -> FailResult<Option<String>> {
    boot.map(serde_json::to_string)
        .transpose()
        .map_err(|e| Fail::Refused(format!("boot is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("labboot.db")).unwrap();
        (dir, store)
    }

    fn new_job(name: &str, priority: i64) -> NewJob {
        NewJob {
            name: name.to_string(),
            device_type: "rpi4".to_string(),
            priority,
            yaml: format!("job_name: {name}\n"),
        }
    }

    fn put_idle(store: &SqliteStore, id: &str) {
        store.put_board(&Board::new(id, "rpi4")).unwrap();
    }

    fn ids(jobs: &[Job]) -> Vec<JobId> {
        jobs.iter().map(|j| j.id).collect()
    }

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
    fn reopen_is_idempotent_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labboot.db");
        let id = {
            let store = SqliteStore::open(&path).unwrap();
            put_idle(&store, "b1");
            store.add_event("b1", "checkin", "hello").unwrap();
            let id = store.insert_job(&new_job("one", 50)).unwrap();
            store.append_log(id, &["- a".to_string()]).unwrap();
            store.put_results(id, "r: 1\n").unwrap();
            id
        };
        assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
        for _ in 0..2 {
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(user_version(&path), MIGRATIONS.len() as i64);
            assert_eq!(store.board("b1").unwrap(), Some(Board::new("b1", "rpi4")));
            assert_eq!(store.events("b1", 10).unwrap()[0].message, "hello");
            let job = store.job(id).unwrap().unwrap();
            assert_eq!(job.name, "one");
            assert_eq!(job.yaml, "job_name: one\n");
            assert_eq!(
                store.log_lines(id, 0, 10).unwrap(),
                vec![(1, "- a".to_string())]
            );
            assert_eq!(store.results(id).unwrap().as_deref(), Some("r: 1\n"));
        }
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
        store.insert_job(&new_job("x", 0)).unwrap();
        assert!(dir.path().join("db/labboot.db").is_file());
        let message = super::super::open("postgres://x", dir.path())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "database: 'postgres://x' is not a supported URL (sqlite:PATH)"
        );
    }

    #[test]
    fn insert_and_read_job() {
        let (_dir, store) = temp_store();
        let before = now_ms();
        let id = store.insert_job(&new_job("smoke", 42)).unwrap();
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(job.id, id);
        assert_eq!(job.name, "smoke");
        assert_eq!(job.device_type, "rpi4");
        assert_eq!(job.priority, 42);
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.health, JobHealth::Unknown);
        assert_eq!(job.board, None);
        assert!(job.submitted >= before && job.submitted <= now_ms());
        assert_eq!((job.started, job.ended), (None, None));
        assert_eq!((job.error_type, job.error), (None, None));
        assert_eq!(job.yaml, "job_name: smoke\n");
        assert_eq!(store.job(id + 1).unwrap(), None);
        let message = store
            .insert_job(&new_job("bad", 101))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "database: insert job 'bad': priority 101 is not within 0-100"
        );
    }

    #[test]
    fn queued_jobs_by_priority_then_fifo() {
        let (_dir, store) = temp_store();
        let a = store.insert_job(&new_job("a", 50)).unwrap();
        let b = store.insert_job(&new_job("b", 100)).unwrap();
        let c = store.insert_job(&new_job("c", 50)).unwrap();
        let d = store.insert_job(&new_job("d", 0)).unwrap();
        let e = store.insert_job(&new_job("e", 100)).unwrap();
        assert_eq!(ids(&store.queued_jobs().unwrap()), vec![b, e, a, c, d]);
        put_idle(&store, "b1");
        store.start_job(e, "b1").unwrap();
        assert_eq!(ids(&store.queued_jobs().unwrap()), vec![b, a, c, d]);
    }

    #[test]
    fn counts_by_state_and_health() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        put_idle(&store, "b2");
        let a = store.insert_job(&new_job("a", 50)).unwrap();
        store.insert_job(&new_job("b", 50)).unwrap();
        store.start_job(a, "b1").unwrap();
        let mut jobs = store.job_counts().unwrap();
        jobs.sort_by_key(|(s, _, _)| s.sql_name());
        assert_eq!(
            jobs,
            vec![
                (JobState::Queued, JobHealth::Unknown, 1),
                (JobState::Running, JobHealth::Unknown, 1)
            ]
        );
        let mut boards = store.board_counts().unwrap();
        boards.sort_by_key(|(s, _, _)| s.sql_name());
        assert_eq!(
            boards,
            vec![
                (BoardState::Idle, Health::Unknown, 1),
                (BoardState::Job, Health::Unknown, 1)
            ]
        );
    }

    #[test]
    fn jobs_newest_first_with_filters_and_limit() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        let mut all = Vec::new();
        for i in 0..105 {
            all.push(store.insert_job(&new_job(&format!("j{i}"), 50)).unwrap());
        }
        let other = store
            .insert_job(&NewJob {
                device_type: "bbb".to_string(),
                ..new_job("other", 0)
            })
            .unwrap();
        store.start_job(all[3], "b1").unwrap();
        store.finish_job(all[3], JobHealth::Complete, None).unwrap();

        let listed = store.jobs(&JobFilter::default()).unwrap();
        assert_eq!(listed.len(), 100);
        assert_eq!(listed[0].id, other);
        assert_eq!(listed[1].id, all[104]);
        assert!(listed.windows(2).all(|w| w[0].id > w[1].id));

        let limited = JobFilter {
            limit: Some(3),
            ..JobFilter::default()
        };
        assert_eq!(
            ids(&store.jobs(&limited).unwrap()),
            vec![other, all[104], all[103]]
        );

        let by_type = JobFilter {
            device_type: Some("bbb".to_string()),
            ..JobFilter::default()
        };
        assert_eq!(ids(&store.jobs(&by_type).unwrap()), vec![other]);

        let finished = JobFilter {
            state: Some(JobState::Finished),
            health: Some(JobHealth::Complete),
            board: Some("b1".to_string()),
            ..JobFilter::default()
        };
        assert_eq!(ids(&store.jobs(&finished).unwrap()), vec![all[3]]);

        let wrong_health = JobFilter {
            health: Some(JobHealth::Incomplete),
            ..JobFilter::default()
        };
        assert!(store.jobs(&wrong_health).unwrap().is_empty());
    }

    #[test]
    fn start_job_success() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        let id = store.insert_job(&new_job("a", 50)).unwrap();
        let before = now_ms();
        store.start_job(id, "b1").unwrap();
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.board.as_deref(), Some("b1"));
        assert!(job.started.unwrap() >= before);
        let board = store.board("b1").unwrap().unwrap();
        assert_eq!(board.state, BoardState::Job);
        assert_eq!(board.current_job, Some(id));
    }

    #[test]
    fn start_job_refusals_change_nothing() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        put_idle(&store, "b2");
        store
            .put_board(&Board {
                state: BoardState::Maintenance,
                ..Board::new("m1", "rpi4")
            })
            .unwrap();
        let running = store.insert_job(&new_job("running", 50)).unwrap();
        store.start_job(running, "b1").unwrap();
        let queued = store.insert_job(&new_job("queued", 50)).unwrap();

        let err = |id: JobId, board: &str| store.start_job(id, board).unwrap_err().to_string();
        assert_eq!(
            err(999, "b2"),
            "database: start job 999 on board 'b2': no job 999"
        );
        assert_eq!(
            err(queued, "nope"),
            format!("database: start job {queued} on board 'nope': no board 'nope'")
        );
        assert_eq!(
            err(running, "b2"),
            format!(
                "database: start job {running} on board 'b2': job {running} is running, not queued"
            )
        );
        assert_eq!(
            err(queued, "b1"),
            format!("database: start job {queued} on board 'b1': board 'b1' is job, not idle")
        );
        assert_eq!(
            err(queued, "m1"),
            format!(
                "database: start job {queued} on board 'm1': board 'm1' is maintenance, not idle"
            )
        );

        let q = store.job(queued).unwrap().unwrap();
        assert_eq!(
            (q.state, q.board, q.started),
            (JobState::Queued, None, None)
        );
        let r = store.job(running).unwrap().unwrap();
        assert_eq!(
            (r.state, r.board.as_deref()),
            (JobState::Running, Some("b1"))
        );
        assert_eq!(
            store.board("b1").unwrap().unwrap().current_job,
            Some(running)
        );
        assert_eq!(
            store.board("b2").unwrap().unwrap(),
            Board::new("b2", "rpi4")
        );
        let m = store.board("m1").unwrap().unwrap();
        assert_eq!((m.state, m.current_job), (BoardState::Maintenance, None));
    }

    #[test]
    fn finish_job_returns_board_to_idle() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        let id = store.insert_job(&new_job("a", 50)).unwrap();
        store.start_job(id, "b1").unwrap();
        let before = now_ms();
        store
            .finish_job(id, JobHealth::Incomplete, Some(("JobError", "boot failed")))
            .unwrap();
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(job.state, JobState::Finished);
        assert_eq!(job.health, JobHealth::Incomplete);
        assert_eq!(job.error_type.as_deref(), Some("JobError"));
        assert_eq!(job.error.as_deref(), Some("boot failed"));
        assert!(job.ended.unwrap() >= before);
        assert_eq!(job.board.as_deref(), Some("b1"));
        let board = store.board("b1").unwrap().unwrap();
        assert_eq!((board.state, board.current_job), (BoardState::Idle, None));

        // The board is free for the next job.
        let next = store.insert_job(&new_job("b", 50)).unwrap();
        store.start_job(next, "b1").unwrap();

        // Finishing twice, or an unknown job, is refused.
        assert_eq!(
            store
                .finish_job(id, JobHealth::Complete, None)
                .unwrap_err()
                .to_string(),
            format!("database: finish job {id}: job {id} is already finished")
        );
        assert_eq!(
            store.job(id).unwrap().unwrap().health,
            JobHealth::Incomplete
        );
        assert!(store.finish_job(999, JobHealth::Complete, None).is_err());
    }

    #[test]
    fn finish_job_leaves_a_board_owned_by_another_job() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        let first = store.insert_job(&new_job("a", 50)).unwrap();
        let second = store.insert_job(&new_job("b", 50)).unwrap();
        store.start_job(first, "b1").unwrap();
        // Someone hands the board to another job behind the store's back.
        let mut board = store.board("b1").unwrap().unwrap();
        board.current_job = Some(second);
        store.put_board(&board).unwrap();
        store.finish_job(first, JobHealth::Complete, None).unwrap();
        let board = store.board("b1").unwrap().unwrap();
        assert_eq!(
            (board.state, board.current_job),
            (BoardState::Job, Some(second))
        );
        let job = store.job(first).unwrap().unwrap();
        assert_eq!(
            (job.state, job.health),
            (JobState::Finished, JobHealth::Complete)
        );
        assert_eq!((job.error_type, job.error), (None, None));
    }

    #[test]
    fn cancel_semantics() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        assert_eq!(store.cancel_job(999).unwrap(), None);

        let queued = store.insert_job(&new_job("q", 50)).unwrap();
        let job = store.cancel_job(queued).unwrap().unwrap();
        assert_eq!(job.state, JobState::Finished);
        assert_eq!(job.health, JobHealth::Canceled);
        assert_eq!(job.error_type.as_deref(), Some("Canceled"));
        assert_eq!(job.error.as_deref(), Some("canceled before it started"));
        assert!(job.ended.is_some());
        assert_eq!(job.started, None);
        assert_eq!(store.job(queued).unwrap().unwrap(), job);
        assert!(store.queued_jobs().unwrap().is_empty());

        // Finished: unchanged.
        assert_eq!(store.cancel_job(queued).unwrap().unwrap(), job);

        let running = store.insert_job(&new_job("r", 50)).unwrap();
        store.start_job(running, "b1").unwrap();
        let job = store.cancel_job(running).unwrap().unwrap();
        assert_eq!(job.state, JobState::Canceling);
        assert_eq!(job.health, JobHealth::Unknown);
        assert_eq!(job.ended, None);
        assert_eq!(
            store.board("b1").unwrap().unwrap().current_job,
            Some(running)
        );

        // Canceling: unchanged.
        assert_eq!(store.cancel_job(running).unwrap().unwrap(), job);

        // Finalize ends it and frees the board.
        store
            .finish_job(running, JobHealth::Canceled, None)
            .unwrap();
        let job = store.job(running).unwrap().unwrap();
        assert_eq!(
            (job.state, job.health),
            (JobState::Finished, JobHealth::Canceled)
        );
        let board = store.board("b1").unwrap().unwrap();
        assert_eq!((board.state, board.current_job), (BoardState::Idle, None));
        assert_eq!(store.cancel_job(running).unwrap().unwrap(), job);
    }

    #[test]
    fn recover_interrupted_jobs() {
        let (_dir, store) = temp_store();
        for b in ["b1", "b2", "b3"] {
            put_idle(&store, b);
        }
        let running = store.insert_job(&new_job("r", 50)).unwrap();
        let canceling = store.insert_job(&new_job("c", 50)).unwrap();
        let done = store.insert_job(&new_job("d", 50)).unwrap();
        let queued = store.insert_job(&new_job("q", 50)).unwrap();
        store.start_job(running, "b1").unwrap();
        store.start_job(canceling, "b2").unwrap();
        store.cancel_job(canceling).unwrap();
        store.start_job(done, "b3").unwrap();
        store.finish_job(done, JobHealth::Complete, None).unwrap();
        let done_before = store.job(done).unwrap().unwrap();

        let recovered = store
            .recover_interrupted("the appliance restarted")
            .unwrap();
        assert_eq!(
            recovered,
            vec![
                (running, Some("b1".to_string())),
                (canceling, Some("b2".to_string()))
            ]
        );
        for id in [running, canceling] {
            let job = store.job(id).unwrap().unwrap();
            assert_eq!(job.state, JobState::Finished);
            assert_eq!(job.health, JobHealth::Incomplete);
            assert_eq!(job.error_type.as_deref(), Some("InfrastructureError"));
            assert_eq!(job.error.as_deref(), Some("the appliance restarted"));
            assert!(job.ended.is_some());
        }
        for b in ["b1", "b2", "b3"] {
            let board = store.board(b).unwrap().unwrap();
            assert_eq!(
                (board.state, board.current_job),
                (BoardState::Idle, None),
                "{b}"
            );
        }
        assert_eq!(store.job(done).unwrap().unwrap(), done_before);
        assert_eq!(store.job(queued).unwrap().unwrap().state, JobState::Queued);
        assert!(store.recover_interrupted("again").unwrap().is_empty());
    }

    #[test]
    fn log_numbering_and_paging() {
        let (_dir, store) = temp_store();
        let a = store.insert_job(&new_job("a", 50)).unwrap();
        let b = store.insert_job(&new_job("b", 50)).unwrap();
        let lines = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        assert_eq!(store.append_log(a, &lines(&["l1", "l2", "l3"])).unwrap(), 1);
        assert_eq!(store.append_log(b, &lines(&["other"])).unwrap(), 1);
        assert_eq!(store.append_log(a, &lines(&["l4", "l5"])).unwrap(), 4);
        assert_eq!(store.append_log(a, &[]).unwrap(), 6);

        let all = store.log_lines(a, 0, 100).unwrap();
        assert_eq!(
            all,
            (1..=5).map(|i| (i, format!("l{i}"))).collect::<Vec<_>>()
        );
        assert_eq!(
            store.log_lines(a, 2, 2).unwrap(),
            vec![(3, "l3".to_string()), (4, "l4".to_string())]
        );
        assert_eq!(
            store.log_lines(a, 4, 10).unwrap(),
            vec![(5, "l5".to_string())]
        );
        assert!(store.log_lines(a, 5, 10).unwrap().is_empty());
        assert!(store.log_lines(a, 0, 0).unwrap().is_empty());
        assert_eq!(
            store.log_lines(b, 0, 10).unwrap(),
            vec![(1, "other".to_string())]
        );
        assert!(store.log_lines(999, 0, 10).unwrap().is_empty());

        // A log for an unknown job is refused, and nothing of a failed append is kept.
        let message = store
            .append_log(999, &lines(&["x"]))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("database: append log of job 999: "),
            "{message}"
        );
        assert!(message.contains("FOREIGN KEY"), "{message}");
        assert!(store.log_lines(999, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn results_put_and_replace() {
        let (_dir, store) = temp_store();
        let id = store.insert_job(&new_job("a", 50)).unwrap();
        assert_eq!(store.results(id).unwrap(), None);
        store.put_results(id, "- result: pass\n").unwrap();
        assert_eq!(
            store.results(id).unwrap().as_deref(),
            Some("- result: pass\n")
        );
        store.put_results(id, "- result: fail\n").unwrap();
        assert_eq!(
            store.results(id).unwrap().as_deref(),
            Some("- result: fail\n")
        );
    }

    #[test]
    fn work_take_finish_drop() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        put_idle(&store, "b2");
        let job = store.insert_job(&new_job("a", 50)).unwrap();
        let run = WorkKind::Run {
            command: "uname -a".to_string(),
        };
        let fetch = WorkKind::Fetch {
            url: "http://10.0.0.1/x".to_string(),
            path: "/tmp/x".to_string(),
        };
        let before = now_ms();
        let w1 = store.add_work("b1", Some(job), &run).unwrap();
        let w2 = store.add_work("b1", None, &fetch).unwrap();
        let w3 = store.add_work("b1", None, &WorkKind::Reboot).unwrap();
        let other = store.add_work("b2", None, &WorkKind::Reboot).unwrap();

        let first = store.take_work("b1").unwrap().unwrap();
        assert_eq!(first.id, w1);
        assert_eq!(first.board, "b1");
        assert_eq!(first.job, Some(job));
        assert_eq!(first.kind, run);
        assert!(first.created >= before);
        assert!(first.taken.is_some());
        assert_eq!((first.done, first.exit, &first.stdout), (None, None, &None));
        assert_eq!(store.work(w1).unwrap().unwrap(), first);

        let second = store.take_work("b1").unwrap().unwrap();
        assert_eq!((second.id, &second.kind, second.job), (w2, &fetch, None));

        // Another board's report of this work is not recorded.
        assert!(!store.finish_work("b2", w1, 0, b"x", b"").unwrap());
        assert_eq!(store.work(w1).unwrap().unwrap().done, None);
        assert!(!store.finish_work("b1", 999, 0, b"", b"").unwrap());

        assert!(store.finish_work("b1", w1, 3, b"Linux\n", b"").unwrap());
        let done = store.work(w1).unwrap().unwrap();
        assert!(done.done.is_some());
        assert_eq!(done.exit, Some(3));
        assert_eq!(done.stdout.as_deref(), Some(&b"Linux\n"[..]));
        assert_eq!(done.stderr.as_deref(), Some(&b""[..]));

        // w2 (taken) and w3 (untaken) are pending; w1 is done; b2's work is not b1's.
        assert_eq!(store.drop_pending_work("b1").unwrap(), 2);
        assert_eq!(store.work(w2).unwrap(), None);
        assert_eq!(store.work(w3).unwrap(), None);
        assert_eq!(store.work(w1).unwrap().unwrap(), done);
        assert_eq!(store.take_work("b1").unwrap(), None);
        assert_eq!(store.drop_pending_work("b1").unwrap(), 0);
        assert_eq!(store.take_work("b2").unwrap().unwrap().id, other);
        assert_eq!(store.take_work("b2").unwrap(), None);
        assert_eq!(store.take_work("nope").unwrap(), None);
    }

    #[test]
    fn board_roundtrip_of_every_field() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b0");
        let job = store.insert_job(&new_job("a", 50)).unwrap();
        let states = [BoardState::Idle, BoardState::Job, BoardState::Maintenance];
        let healths = [
            Health::Unknown,
            Health::Online,
            Health::Offline,
            Health::Pending,
            Health::Cloned,
        ];
        let mut expected = vec![Board::new("b0", "rpi4")];
        for (i, health) in healths.into_iter().enumerate() {
            let board = Board {
                id: format!("b{}", i + 1),
                device_type: "bbb".to_string(),
                state: states[i % states.len()],
                health,
                approved: i % 2 == 0,
                from_config: i % 2 == 1,
                token_sha256: Some(format!("{i:064x}")),
                mac: Some("02:00:00:00:00:01".to_string()),
                address: Some("10.0.0.7".to_string()),
                cloned: Some("02:00:00:00:00:02".to_string()),
                current_job: Some(job),
                last_checkin: Some(1_700_000_000_000 + i as i64),
                master_boot: Some(1_600_000_000_000),
                info: serde_json::json!({
                    "kernel": "6.1.0",
                    "cpus": 4,
                    "memory": 3.5,
                    "macs": ["02:00:00:00:00:01"],
                    "ok": true,
                    "none": null,
                }),
                powered: Powered::Unknown,
                powered_at: None,
                reservation: None,
            };
            store.put_board(&board).unwrap();
            assert_eq!(store.board(&board.id).unwrap().unwrap(), board);
            expected.push(board);
        }
        assert_eq!(store.boards().unwrap(), expected);
        assert_eq!(store.board("nope").unwrap(), None);

        // Stored as lowercase names.
        let stored: (String, String, String) = store
            .conn()
            .query_row(
                "SELECT state, health, info FROM boards WHERE id = 'b3'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (stored.0.as_str(), stored.1.as_str()),
            ("maintenance", "offline")
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stored.2).unwrap(),
            expected[3].info
        );

        // Putting again replaces every field, back to the Nones.
        let plain = Board::new("b1", "");
        store.put_board(&plain).unwrap();
        assert_eq!(store.board("b1").unwrap().unwrap(), plain);
        assert_eq!(store.boards().unwrap().len(), 6);
    }

    #[test]
    fn events_newest_first_with_limit() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        put_idle(&store, "b2");
        let before = now_ms();
        for i in 1..=5 {
            store.add_event("b1", "state", &format!("e{i}")).unwrap();
        }
        store.add_event("b2", "power", "other").unwrap();
        let events = store.events("b1", 3).unwrap();
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, vec!["e5", "e4", "e3"]);
        assert!(events.iter().all(|e| e.kind == "state" && e.time >= before));
        assert!(events.windows(2).all(|w| w[0].time >= w[1].time));
        assert_eq!(store.events("b1", 100).unwrap().len(), 5);
        assert_eq!(
            store.events("b2", 100).unwrap(),
            vec![BoardEvent {
                time: store.events("b2", 1).unwrap()[0].time,
                kind: "power".to_string(),
                message: "other".to_string(),
            }]
        );
        assert!(store.events("nope", 10).unwrap().is_empty());
        let message = store
            .add_event("nope", "auth", "x")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("database: add auth event of board 'nope': "),
            "{message}"
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

    #[test]
    fn power_and_reservations_outlive_put_board() {
        let (_dir, store) = temp_store();
        put_idle(&store, "b1");
        put_idle(&store, "b2");
        // Power: recorded with its time, kept by put_board, on again after a check-in.
        store.set_powered("b1", Powered::Off).unwrap();
        let b = store.board("b1").unwrap().unwrap();
        assert_eq!((b.powered, b.power_now()), (Powered::Off, Powered::Off));
        let at = b.powered_at.expect("powered_at");
        store.put_board(&Board::new("b1", "rpi4")).unwrap();
        let mut b = store.board("b1").unwrap().unwrap();
        assert_eq!((b.powered, b.powered_at), (Powered::Off, Some(at)));
        b.last_checkin = Some(at + 1);
        assert_eq!(b.power_now(), Powered::On);
        assert!(store.set_powered("nope", Powered::On).is_err());

        // A board powered off gets no job; nothing is marked off while its type has a job queued.
        let job = store.insert_job(&new_job("a", 50)).unwrap();
        let e = store.start_job(job, "b1").unwrap_err().to_string();
        assert!(e.ends_with("board 'b1' is powered off"), "{e}");
        assert!(!store.mark_off_if_unused("b2").unwrap());

        // Reservations: one at a time, kept by put_board, refused to the scheduler.
        let r = Reservation {
            by: "http.tokens[0]".into(),
            note: "debug".into(),
            since: 1,
            until: 2,
            boot: None,
        };
        assert!(store.reserve("b2", &r).unwrap());
        assert!(!store.reserve("b2", &r).unwrap(), "already reserved");
        assert!(!store.reserve("nope", &r).unwrap());
        let e = store.start_job(job, "b2").unwrap_err().to_string();
        assert!(e.ends_with("board 'b2' is reserved"), "{e}");
        store.put_board(&Board::new("b2", "rpi4")).unwrap();
        assert_eq!(
            store.board("b2").unwrap().unwrap().reservation,
            Some(r.clone())
        );
        let boot = serde_json::json!({"kernel": "/srv/Image", "append": "quiet"});
        assert!(store.set_reservation_boot("b2", Some(&boot)).unwrap());
        assert!(!store.set_reservation_boot("b1", Some(&boot)).unwrap());
        let listed = store.boards().unwrap();
        assert_eq!(listed[0].reservation, None);
        assert_eq!(
            listed[1].reservation.as_ref().unwrap().boot,
            Some(boot.clone())
        );
        let ended = store.end_reservation("b2").unwrap();
        assert_eq!(
            ended,
            Some(Reservation {
                boot: Some(boot),
                ..r.clone()
            })
        );
        assert_eq!(store.end_reservation("b2").unwrap(), None);
        store.start_job(job, "b2").unwrap();

        // A busy board is neither reserved nor marked off; an idle unused one is marked off.
        assert!(!store.reserve("b2", &r).unwrap());
        assert!(!store.mark_off_if_unused("b2").unwrap());
        assert!(store.mark_off_if_unused("b1").unwrap());
        assert_eq!(store.board("b1").unwrap().unwrap().powered, Powered::Off);
        assert!(!store.mark_off_if_unused("nope").unwrap());
    }
}
