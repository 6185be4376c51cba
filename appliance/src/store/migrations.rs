//! The SQLite schema as an ordered list of migrations.
//!
//! A database's schema version (`PRAGMA user_version`) is the number of these it has applied;
//! [`super::sqlite::SqliteStore::open`] applies the missing ones in order, each in its own
//! transaction. Append new migrations at the end; never edit or reorder one that shipped.
//!
//! Enums are stored as their lowercase names, times as [`super::Millis`], booleans as 0/1.

/// The migrations, oldest first: the `n`th (from 1) brings a database to schema version `n`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE boards (
    id            TEXT PRIMARY KEY NOT NULL,
    device_type   TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('idle', 'job', 'maintenance')),
    health        TEXT NOT NULL
                  CHECK (health IN ('unknown', 'online', 'offline', 'pending', 'cloned')),
    approved      INTEGER NOT NULL CHECK (approved IN (0, 1)),
    from_config   INTEGER NOT NULL CHECK (from_config IN (0, 1)),
    token_sha256  TEXT,
    mac           TEXT,
    address       TEXT,
    cloned        TEXT,
    current_job   INTEGER REFERENCES jobs (id),
    last_checkin  INTEGER,
    master_boot   INTEGER,
    info          TEXT NOT NULL DEFAULT 'null'
);

CREATE TABLE board_events (
    id       INTEGER PRIMARY KEY,
    board    TEXT NOT NULL REFERENCES boards (id),
    time     INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX board_events_board_time ON board_events (board, time);

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    device_type  TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('queued', 'running', 'canceling', 'finished')),
    health       TEXT NOT NULL
                 CHECK (health IN ('unknown', 'complete', 'incomplete', 'canceled')),
    board        TEXT REFERENCES boards (id),
    submitted    INTEGER NOT NULL,
    started      INTEGER,
    ended        INTEGER,
    error_type   TEXT,
    error        TEXT,
    yaml         TEXT NOT NULL
);
CREATE INDEX jobs_state_priority ON jobs (state, priority DESC, id);
CREATE INDEX jobs_board ON jobs (board, id);

CREATE TABLE job_logs (
    job   INTEGER NOT NULL REFERENCES jobs (id),
    seq   INTEGER NOT NULL,
    line  TEXT NOT NULL,
    PRIMARY KEY (job, seq)
) WITHOUT ROWID;

CREATE TABLE job_results (
    job   INTEGER PRIMARY KEY NOT NULL REFERENCES jobs (id),
    yaml  TEXT NOT NULL
);

CREATE TABLE work (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    board    TEXT NOT NULL REFERENCES boards (id),
    job      INTEGER REFERENCES jobs (id),
    kind     TEXT NOT NULL CHECK (kind IN ('run', 'fetch', 'reboot')),
    command  TEXT,
    url      TEXT,
    path     TEXT,
    created  INTEGER NOT NULL,
    taken    INTEGER,
    done     INTEGER,
    exit     INTEGER,
    stdout   BLOB,
    stderr   BLOB,
    CHECK (kind <> 'run' OR command IS NOT NULL),
    CHECK (kind <> 'fetch' OR (url IS NOT NULL AND path IS NOT NULL))
);
CREATE INDEX work_board ON work (board, taken, id);
"#,
    // 2: boards' power as the appliance switched it, and people's reservations.
    r#"
ALTER TABLE boards ADD COLUMN powered TEXT NOT NULL DEFAULT 'unknown'
    CHECK (powered IN ('on', 'off', 'unknown'));
ALTER TABLE boards ADD COLUMN powered_at INTEGER;

CREATE TABLE reservations (
    board        TEXT PRIMARY KEY NOT NULL REFERENCES boards (id),
    reserved_by  TEXT NOT NULL,
    note         TEXT NOT NULL,
    since        INTEGER NOT NULL,
    until        INTEGER NOT NULL,
    boot         TEXT
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
    seen     INTEGER NOT NULL,
    started  INTEGER NOT NULL
);
"#,
];
