//! Rows to the store's types, and the reads and row locks the calls share.
//!
//! Every column is read with `try_get`: a row that does not map (a NULL where there should be
//! none, an unknown enum name, JSON that is not JSON) is a [`Fail::BadRow`] naming the column,
//! never a panic.

use ::postgres::types::FromSql;
use ::postgres::Row;

use super::super::names::SqlName;
use super::super::{Board, Job, JobId, Reservation, Work, WorkId, WorkKind};
use super::error::{error_text, Fail};
use super::worker::Sql;

/// The columns `put_board` writes, in its parameters' order.
pub(super) const BOARD_COLUMNS: &str = "id, device_type, state, health, approved, from_config, \
     token_sha256, mac, address, cloned, current_job, last_checkin, master_boot, info, appliance";

/// A board's row with its power and reservation, for [`board_row`] (add `WHERE`/`ORDER BY`).
pub(super) const BOARD_SELECT: &str = "SELECT b.id, b.device_type, b.state, b.health, \
     b.approved, b.from_config, b.token_sha256, b.mac, b.address, b.cloned, b.current_job, \
     b.last_checkin, b.master_boot, b.info, b.powered, b.powered_at, r.reserved_by, r.note, \
     r.since, r.until, r.boot, b.appliance FROM boards b \
     LEFT JOIN reservations r ON r.board = b.id";

/// A job's columns, for [`job_row`].
pub(super) const JOB_COLUMNS: &str = "id, name, device_type, priority, state, health, board, \
     submitted, started, ended, error_type, error, yaml, appliance";

/// A work item's columns, for [`work_row`].
pub(super) const WORK_COLUMNS: &str =
    "id, board, job, kind, command, url, path, created, taken, done, exit, stdout, stderr";

/// The name of column `index` of `row`, for messages.
fn column_name(row: &Row, index: usize) -> &str {
    row.columns().get(index).map_or("?", |column| column.name())
}

/// Column `index` of `row` as a `T`.
pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, Fail> {
    row.try_get(index).map_err(|e| {
        Fail::BadRow(format!(
            "column {}: {}",
            column_name(row, index),
            error_text(&e)
        ))
    })
}

/// Column `index` of `row`, an enum stored as its name.
pub(super) fn get_enum<T: SqlName>(row: &Row, index: usize) -> Result<T, Fail> {
    let name: &str = get(row, index)?;
    T::parse_sql_name(name)
        .map_err(|message| Fail::BadRow(format!("column {}: {message}", column_name(row, index))))
}

/// A board from a row of [`BOARD_SELECT`].
pub(super) fn board_row(row: &Row) -> Result<Board, Fail> {
    let reservation = match get::<Option<String>>(row, 16)? {
        None => None,
        Some(by) => Some(Reservation {
            by,
            note: get(row, 17)?,
            since: get(row, 18)?,
            until: get(row, 19)?,
            boot: get(row, 20)?,
        }),
    };
    Ok(Board {
        id: get(row, 0)?,
        device_type: get(row, 1)?,
        state: get_enum(row, 2)?,
        health: get_enum(row, 3)?,
        approved: get(row, 4)?,
        from_config: get(row, 5)?,
        token_sha256: get(row, 6)?,
        mac: get(row, 7)?,
        address: get(row, 8)?,
        cloned: get(row, 9)?,
        current_job: get(row, 10)?,
        last_checkin: get(row, 11)?,
        master_boot: get(row, 12)?,
        info: get(row, 13)?,
        powered: get_enum(row, 14)?,
        powered_at: get(row, 15)?,
        reservation,
        appliance: get(row, 21)?,
    })
}

/// A job from a row of [`JOB_COLUMNS`].
pub(super) fn job_row(row: &Row) -> Result<Job, Fail> {
    Ok(Job {
        id: get(row, 0)?,
        name: get(row, 1)?,
        device_type: get(row, 2)?,
        priority: get(row, 3)?,
        state: get_enum(row, 4)?,
        health: get_enum(row, 5)?,
        board: get(row, 6)?,
        submitted: get(row, 7)?,
        started: get(row, 8)?,
        ended: get(row, 9)?,
        error_type: get(row, 10)?,
        error: get(row, 11)?,
        yaml: get(row, 12)?,
        appliance: get(row, 13)?,
    })
}

/// A work item from a row of [`WORK_COLUMNS`].
pub(super) fn work_row(row: &Row) -> Result<Work, Fail> {
    let kind: String = get(row, 3)?;
    let text = |index: usize, name: &str| -> Result<String, Fail> {
        get::<Option<String>>(row, index)?
            .ok_or_else(|| Fail::BadRow(format!("{kind} work without {name}")))
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
        other => {
            return Err(Fail::BadRow(format!(
                "column kind: '{other}' is not a work kind"
            )))
        }
    };
    Ok(Work {
        id: get(row, 0)?,
        board: get(row, 1)?,
        job: get(row, 2)?,
        kind,
        created: get(row, 7)?,
        taken: get(row, 8)?,
        done: get(row, 9)?,
        exit: get(row, 10)?,
        stdout: get(row, 11)?,
        stderr: get(row, 12)?,
    })
}

/// Maps every row of a result.
pub(super) fn all<T>(rows: &[Row], map: impl Fn(&Row) -> Result<T, Fail>) -> Result<Vec<T>, Fail> {
    rows.iter().map(map).collect()
}

/// The job, if known.
pub(super) fn get_job(sql: &mut Sql<'_>, id: JobId) -> Result<Option<Job>, Fail> {
    sql.query_opt(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(job_row)
    .transpose()
}

/// The job, if known, its row locked until the transaction ends (the latest committed version
/// once the lock is had, so a job another store just started is seen running).
pub(super) fn lock_job(sql: &mut Sql<'_>, id: JobId) -> Result<Option<Job>, Fail> {
    sql.query_opt(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR NO KEY UPDATE"),
        &[&id],
    )?
    .as_ref()
    .map(job_row)
    .transpose()
}

/// [`lock_job`] for a claim: a job another transaction holds (another appliance claiming it)
/// is refused at once instead of waited for.
pub(super) fn claim_lock_job(sql: &mut Sql<'_>, id: JobId) -> Result<Option<Job>, Fail> {
    let row = sql
        .query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR NO KEY UPDATE NOWAIT"),
            &[&id],
        )
        .map_err(|e| {
            busy(e, || {
                format!("job {id} is being claimed by another appliance")
            })
        })?;
    row.as_ref().map(job_row).transpose()
}

/// [`lock_board`] for a claim, refused at once when another transaction holds the board.
pub(super) fn claim_lock_board(sql: &mut Sql<'_>, id: &str) -> Result<Option<Board>, Fail> {
    let locked = sql
        .query_opt(
            "SELECT id FROM boards WHERE id = $1 FOR NO KEY UPDATE NOWAIT",
            &[&id],
        )
        .map_err(|e| {
            busy(e, || {
                format!("board '{id}' is being claimed by another job")
            })
        })?;
    if locked.is_none() {
        return Ok(None);
    }
    get_board(sql, id)
}

/// A `NOWAIT` lock that was not available becomes a refusal saying `why`.
fn busy(fail: Fail, why: impl FnOnce() -> String) -> Fail {
    if fail.code() == Some(&::postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
        Fail::Refused(why())
    } else {
        fail
    }
}

/// The board with its reservation, if known.
pub(super) fn get_board(sql: &mut Sql<'_>, id: &str) -> Result<Option<Board>, Fail> {
    sql.query_opt(&format!("{BOARD_SELECT} WHERE b.id = $1"), &[&id])?
        .as_ref()
        .map(board_row)
        .transpose()
}

/// The board, if known, its row locked until the transaction ends. The board is read by a
/// statement of its own after the lock is had, so it (and its reservation) is what the store
/// that held the lock before committed.
pub(super) fn lock_board(sql: &mut Sql<'_>, id: &str) -> Result<Option<Board>, Fail> {
    let locked = sql.query_opt(
        "SELECT id FROM boards WHERE id = $1 FOR NO KEY UPDATE",
        &[&id],
    )?;
    if locked.is_none() {
        return Ok(None);
    }
    get_board(sql, id)
}

/// The work item, if known.
pub(super) fn get_work(sql: &mut Sql<'_>, id: WorkId) -> Result<Option<Work>, Fail> {
    sql.query_opt(
        &format!("SELECT {WORK_COLUMNS} FROM work WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(work_row)
    .transpose()
}
