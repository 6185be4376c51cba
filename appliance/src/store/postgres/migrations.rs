//! The PostgreSQL schema as an ordered list of migrations, and the code that applies them.
//!
//! The list is shared in intent with SQLite's ([`crate::store::migrations`]): the `n`th
//! migration of each brings a database to schema version `n` with the same tables and columns,
//! in PostgreSQL's types (BIGINT times and numbers, BIGSERIAL ids, BOOLEAN flags, BYTEA output,
//! JSON documents). Append new migrations at the end of both lists; never edit or reorder one
//! that shipped.
//!
//! The version is the highest row of `labboot_schema`. Each migration runs in its own
//! transaction that first takes a transaction-scoped advisory lock, so appliances starting at
//! once against the same (empty) database apply each migration exactly once: the others wait,
//! then find it applied.
//!
//! Enums are stored as their lowercase names and times as [`crate::store::Millis`], as in
//! SQLite. JSON columns are `JSON`, not `JSONB`: the document is kept as written, and a string
//! with `\u0000` in it is accepted (JSONB refuses it), as SQLite's TEXT does; nothing queries
//! inside them.

use super::super::{now_ms, StoreError};
use super::error::Fail;
use super::rows::get;
use super::worker::Session;

/// The advisory lock every migration takes ("labboot" in ASCII); advisory locks are per
/// database, so stores of different databases do not wait for each other.
const MIGRATION_LOCK: i64 = 0x006c_6162_626f_6f74;

/// The migrations, oldest first: the `n`th (from 1) brings a database to schema version `n`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE boards (
    id            TEXT PRIMARY KEY NOT NULL,
    device_type   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('idle', 'job', 'maintenance')),
    health        TEXT NOT NULL
                  CHECK (health IN ('unknown', 'online', 'offline', 'pending', 'cloned')),
    approved      BOOLEAN NOT NULL,
    from_config   BOOLEAN NOT NULL,
    token_sha256  TEXT,
    mac           TEXT,
    address       TEXT,
    cloned        TEXT,
    current_job   BIGINT,
    last_checkin  BIGINT,
    master_boot   BIGINT,
    info          JSON NOT NULL DEFAULT 'null'
);

CREATE TABLE board_events (
    id       BIGSERIAL PRIMARY KEY,
    board    TEXT NOT NULL REFERENCES boards (id),
    time     BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX board_events_board_time ON board_events (board, time);

CREATE TABLE jobs (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL,
    device_type  TEXT NOT NULL,
    priority     BIGINT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'canceling', 'finished')),
    health       TEXT NOT NULL
                 CHECK (health IN ('unknown', 'complete', 'incomplete', 'canceled')),
    board        TEXT REFERENCES boards (id),
    submitted    BIGINT NOT NULL,
    started      BIGINT,
    ended        BIGINT,
    error_type   TEXT,
    error        TEXT,
    yaml         TEXT NOT NULL
);
CREATE INDEX jobs_state_priority ON jobs (state, priority DESC, id);
CREATE INDEX jobs_board ON jobs (board, id);

-- boards and jobs name each other: the board's reference is added once both exist.
ALTER TABLE boards ADD CONSTRAINT boards_current_job_fkey
    FOREIGN KEY (current_job) REFERENCES jobs (id);

CREATE TABLE job_logs (
    job   BIGINT NOT NULL REFERENCES jobs (id),
    seq   BIGINT NOT NULL,
    line  TEXT NOT NULL,
    PRIMARY KEY (job, seq)
);

CREATE TABLE job_results (
    job   BIGINT PRIMARY KEY NOT NULL REFERENCES jobs (id),
    yaml  TEXT NOT NULL
);

CREATE TABLE work (
    id       BIGSERIAL PRIMARY KEY,
    board    TEXT NOT NULL REFERENCES boards (id),
    job      BIGINT REFERENCES jobs (id),
    kind     TEXT NOT NULL CHECK (kind IN ('run', 'fetch', 'reboot')),
    command  TEXT,
    url      TEXT,
    path     TEXT,
    created  BIGINT NOT NULL,
    taken    BIGINT,
    done     BIGINT,
    exit     INTEGER,
    stdout   BYTEA,
    stderr   BYTEA,
    CHECK (kind <> 'run' OR command IS NOT NULL),
    CHECK (kind <> 'fetch' OR (url IS NOT NULL AND path IS NOT NULL))
);
CREATE INDEX work_board ON work (board, taken, id);
"#,
    // 2: boards' power as the appliance switched it, and people's reservations.
    r#"
ALTER TABLE boards ADD COLUMN powered TEXT NOT NULL DEFAULT 'unknown'
    CHECK (powered IN ('on', 'off', 'unknown'));
ALTER TABLE boards ADD COLUMN powered_at BIGINT;

CREATE TABLE reservations (
    board        TEXT PRIMARY KEY NOT NULL REFERENCES boards (id),
    reserved_by  TEXT NOT NULL,
    note         TEXT NOT NULL,
    since        BIGINT NOT NULL,
    until        BIGINT NOT NULL,
    boot         JSON
);
"#,
    // 3: several appliances on one database: who serves a board, who claimed a job, and the
    // appliances' heartbeats.
    r#"
ALTER TABLE boards ADD COLUMN appliance TEXT;
ALTER TABLE jobs ADD COLUMN appliance TEXT;

CREATE TABLE appliances (
    name     TEXT PRIMARY KEY NOT NULL,
    url      TEXT NOT NULL,
    seen     BIGINT NOT NULL,
    started  BIGINT NOT NULL
);
"#,
];

/// The schema version table, created by the first migration run under the lock.
const VERSION_TABLE: &str = "CREATE TABLE labboot_schema (
    version  INTEGER PRIMARY KEY NOT NULL,
    applied  BIGINT NOT NULL
)";

/// Applies the migrations the database lacks, each in its own transaction under the migration
/// lock (re-reading the version inside it). Refuses a database newer than this binary. Errors
/// name `shown` (the URL without its password) and the step that failed.
pub(super) fn migrate(session: &mut Session, shown: &str) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    loop {
        let mut step = String::from("begin migration");
        let applied = session.write(|sql| {
            // A migration may take long on a big database: wait for the lock as long as it takes.
            step = "begin migration".into();
            sql.batch("SET LOCAL lock_timeout = 0")?;
            step = "take the migration lock".into();
            sql.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            step = "read schema version".into();
            let row = sql.query_one("SELECT to_regclass('labboot_schema') IS NOT NULL", &[])?;
            if !get::<bool>(&row, 0)? {
                step = "create the schema version table".into();
                sql.batch(VERSION_TABLE)?;
            }
            step = "read schema version".into();
            let row = sql.query_one("SELECT COALESCE(MAX(version), 0) FROM labboot_schema", &[])?;
            let version: i32 = get(&row, 0)?;
            let version = match usize::try_from(version) {
                Ok(v) if v <= known => v,
                _ => {
                    return Err(Fail::Refused(format!(
                        "the database has schema version {version}, but this labboot knows \
                         schema versions up to {known} (was it written by a newer labboot?)"
                    )))
                }
            };
            if version == known {
                return Ok(None);
            }
            let next = version + 1;
            step = format!("migrate to schema version {next}");
            sql.batch(MIGRATIONS[version])?;
            sql.execute(
                "INSERT INTO labboot_schema (version, applied) VALUES ($1, $2)",
                &[&i32::try_from(next).unwrap_or(i32::MAX), &now_ms()],
            )?;
            Ok(Some(next))
        });
        match applied {
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(()),
            Err(Fail::Connect(message)) => {
                return Err(StoreError(format!(
                    "open {shown}: cannot connect: {message}"
                )))
            }
            Err(Fail::Refused(message)) => {
                return Err(StoreError(format!("open {shown}: {message}")))
            }
            Err(fail) => return Err(fail.context(&format!("open {shown}: {step}"), shown)),
        }
    }
}
