//! The store's conformance suite: every test here runs against each backend, SQLite (a
//! temporary file) and PostgreSQL (a database of its own on the test binary's shared
//! [`PgCluster`]), as `store::conformance::on_sqlite::NAME` and `…::on_postgres::NAME`.
//!
//! A test is a function of a [`Harness`]; list it in the `conformance!` invocation at the end.
//! Backend-specific tests (file modes, pragmas, connection threads) stay with their backend.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::names::SqlName;
use super::pg_cluster::PgCluster;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::*;

/// The test binary's PostgreSQL cluster, started by the first test that needs one (`None` when
/// it cannot start and `LABBOOT_SKIP_POSTGRES=1` is set). Never dropped: its watchdog stops it
/// and removes its directory when the test binary exits.
static CLUSTER: OnceLock<Option<PgCluster>> = OnceLock::new();

/// A new empty database on the shared cluster, its name made of `tag`; its URL, or `None` when
/// PostgreSQL tests are skipped.
pub(super) fn test_database(tag: &str) -> Option<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let cluster = CLUSTER.get_or_init(PgCluster::start_for_tests).as_ref()?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(50)
        .collect();
    Some(
        cluster
            .create_database(&format!("t{n}_{tag}"))
            .expect("create a test database"),
    )
}

/// A store under test, with what the tests need to know of its backend.
pub(super) struct Harness {
    store: Box<dyn Store>,
    backend: Backend,
}

enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
    },
}

impl Harness {
    /// A store on a new SQLite file.
    fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labboot.db");
        let store = Box::new(SqliteStore::open(&path).unwrap());
        Harness {
            store,
            backend: Backend::Sqlite { _dir: dir, path },
        }
    }

    /// A store on a new PostgreSQL database (`None`: PostgreSQL tests are skipped).
    fn postgres(test: &str) -> Option<Harness> {
        let url = test_database(test)?;
        let store = Box::new(PostgresStore::connect(&url).unwrap());
        Some(Harness {
            store,
            backend: Backend::Postgres { url },
        })
    }

    /// The store.
    fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Another store on the same database (another appliance, for PostgreSQL).
    fn reopen(&self) -> Box<dyn Store> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Box::new(SqliteStore::open(path).unwrap()),
            Backend::Postgres { url } => Box::new(PostgresStore::connect(url).unwrap()),
        }
    }

    /// The database's schema version, read behind the store's back.
    fn schema_version(&self) -> usize {
        let version: i64 = match &self.backend {
            Backend::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap(),
            Backend::Postgres { url } => {
                let row = pg_client(url)
                    .query_one("SELECT MAX(version)::bigint FROM labboot_schema", &[])
                    .unwrap();
                row.get(0)
            }
        };
        usize::try_from(version).unwrap()
    }

    /// How many schema versions this binary knows for the backend.
    fn known_versions(&self) -> usize {
        match &self.backend {
            Backend::Sqlite { .. } => super::migrations::MIGRATIONS.len(),
            Backend::Postgres { .. } => super::postgres::migrations::MIGRATIONS.len(),
        }
    }

    /// A board's state, health and info as stored, read behind the store's back.
    fn stored_board_names(&self, id: &str) -> (String, String, serde_json::Value) {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let (state, health, info): (String, String, String) =
                    rusqlite::Connection::open(path)
                        .unwrap()
                        .query_row(
                            "SELECT state, health, info FROM boards WHERE id = ?1",
                            [id],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .unwrap();
                (state, health, serde_json::from_str(&info).unwrap())
            }
            Backend::Postgres { url } => {
                let row = pg_client(url)
                    .query_one(
                        "SELECT state, health, info::text FROM boards WHERE id = $1",
                        &[&id],
                    )
                    .unwrap();
                let info: String = row.get(2);
                (row.get(0), row.get(1), serde_json::from_str(&info).unwrap())
            }
        }
    }
}

impl Harness {
    /// Sets appliance `name`'s last heartbeat to `seen`, behind the store's back.
    fn set_seen(&self, name: &str, seen: Millis) {
        let changed = match &self.backend {
            Backend::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .execute(
                    "UPDATE appliances SET seen = ?2 WHERE name = ?1",
                    rusqlite::params![name, seen],
                )
                .unwrap() as u64,
            Backend::Postgres { url } => pg_client(url)
                .execute(
                    "UPDATE appliances SET seen = $2 WHERE name = $1",
                    &[&name, &seen],
                )
                .unwrap(),
        };
        assert_eq!(changed, 1, "no appliance '{name}'");
    }
}

/// A direct connection to `url`, for looking behind a store's back (plain `#[test]`s run on no
/// tokio runtime, so the synchronous client may be used here).
pub(super) fn pg_client(url: &str) -> ::postgres::Client {
    ::postgres::Client::connect(url, ::postgres::NoTls).unwrap()
}

fn new_job(name: &str, priority: i64) -> NewJob {
    NewJob {
        name: name.to_string(),
        device_type: "rpi4".to_string(),
        priority,
        yaml: format!("job_name: {name}\n"),
    }
}

fn put_idle(store: &dyn Store, id: &str) {
    store.put_board(&Board::new(id, "rpi4")).unwrap();
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// An idle board served by `appliance`.
fn put_served(store: &dyn Store, id: &str, appliance: &str) {
    store
        .put_board(&Board {
            appliance: Some(appliance.to_string()),
            ..Board::new(id, "rpi4")
        })
        .unwrap();
}

/// A new job started on `board`; its id.
fn started_on(store: &dyn Store, board: &str) -> JobId {
    let id = store.insert_job(&new_job(board, 50)).unwrap();
    store.start_job(id, board).unwrap();
    id
}

/// An hour ago.
fn long_ago() -> Millis {
    now_ms() - 3_600_000
}

fn reopen_is_idempotent_and_keeps_data(h: &Harness) {
    let id = {
        let store = h.store();
        put_idle(store, "b1");
        store.add_event("b1", "checkin", "hello").unwrap();
        let id = store.insert_job(&new_job("one", 50)).unwrap();
        store.append_log(id, &["- a".to_string()]).unwrap();
        store.put_results(id, "r: 1\n").unwrap();
        id
    };
    assert_eq!(h.schema_version(), h.known_versions());
    for _ in 0..2 {
        let store = h.reopen();
        assert_eq!(h.schema_version(), h.known_versions());
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

fn insert_and_read_job(h: &Harness) {
    let store = h.store();
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

fn queued_jobs_by_priority_then_fifo(h: &Harness) {
    let store = h.store();
    let a = store.insert_job(&new_job("a", 50)).unwrap();
    let b = store.insert_job(&new_job("b", 100)).unwrap();
    let c = store.insert_job(&new_job("c", 50)).unwrap();
    let d = store.insert_job(&new_job("d", 0)).unwrap();
    let e = store.insert_job(&new_job("e", 100)).unwrap();
    assert_eq!(ids(&store.queued_jobs().unwrap()), vec![b, e, a, c, d]);
    put_idle(store, "b1");
    store.start_job(e, "b1").unwrap();
    assert_eq!(ids(&store.queued_jobs().unwrap()), vec![b, a, c, d]);
}

fn counts_by_state_and_health(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
    put_idle(store, "b2");
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

fn jobs_newest_first_with_filters_and_limit(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
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

fn start_job_success(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
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

fn start_job_refusals_change_nothing(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
    put_idle(store, "b2");
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
        format!("database: start job {queued} on board 'm1': board 'm1' is maintenance, not idle")
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

fn finish_job_returns_board_to_idle(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
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

fn finish_job_leaves_a_board_owned_by_another_job(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
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

fn cancel_semantics(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
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

fn recover_interrupted_jobs(h: &Harness) {
    let store = h.store();
    for b in ["b1", "b2", "b3"] {
        put_idle(store, b);
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
        .recover_interrupted("a1", "the appliance restarted")
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
    assert!(store.recover_interrupted("a1", "again").unwrap().is_empty());
}

fn log_numbering_and_paging(h: &Harness) {
    let store = h.store();
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
    // SQLite says "FOREIGN KEY constraint failed", PostgreSQL "… violates foreign key
    // constraint …".
    assert!(message.to_lowercase().contains("foreign key"), "{message}");
    assert!(store.log_lines(999, 0, 10).unwrap().is_empty());
}

fn results_put_and_replace(h: &Harness) {
    let store = h.store();
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

fn work_take_finish_drop(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
    put_idle(store, "b2");
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

fn board_roundtrip_of_every_field(h: &Harness) {
    let store = h.store();
    put_idle(store, "b0");
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
            appliance: (i % 2 == 0).then(|| format!("appliance-{i}")),
        };
        store.put_board(&board).unwrap();
        assert_eq!(store.board(&board.id).unwrap().unwrap(), board);
        expected.push(board);
    }
    assert_eq!(store.boards().unwrap(), expected);
    assert_eq!(store.board("nope").unwrap(), None);

    // Stored as lowercase names.
    let stored = h.stored_board_names("b3");
    assert_eq!(
        (stored.0.as_str(), stored.1.as_str()),
        ("maintenance", "offline")
    );
    assert_eq!(stored.2, expected[3].info);

    // Putting again replaces every field, back to the Nones.
    let plain = Board::new("b1", "");
    store.put_board(&plain).unwrap();
    assert_eq!(store.board("b1").unwrap().unwrap(), plain);
    assert_eq!(store.boards().unwrap().len(), 6);
}

fn events_newest_first_with_limit(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
    put_idle(store, "b2");
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

fn power_and_reservations_outlive_put_board(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
    put_idle(store, "b2");
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

/// Four stores on one database (four appliances, for PostgreSQL) race for 50 queued jobs and 4
/// idle boards, each looping `queued_jobs` + `start_job` + `finish_job`, all going for the
/// same job first: every job runs exactly once and no board ever has two jobs at once.
fn claims_race_across_stores(h: &Harness) {
    const JOBS: usize = 50;
    const BOARDS: usize = 4;
    const STORES: usize = 4;
    let setup = h.store();
    let boards: Vec<String> = (0..BOARDS).map(|b| format!("race{b}")).collect();
    for board in &boards {
        put_idle(setup, board);
    }
    let mut all: Vec<JobId> = (0..JOBS)
        .map(|i| setup.insert_job(&new_job(&format!("race{i}"), 50)).unwrap())
        .collect();
    let stores: Vec<Box<dyn Store>> = (0..STORES).map(|_| h.reopen()).collect();
    let busy: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let started: Mutex<Vec<(JobId, String)>> = Mutex::new(Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            let (busy, started, boards) = (&busy, &started, &boards);
            scope.spawn(move || loop {
                assert!(Instant::now() < deadline, "the race did not end");
                let queued = store.queued_jobs().unwrap();
                let Some(job) = queued.first() else {
                    return;
                };
                for k in 0..BOARDS {
                    let board = &boards[(n + k) % BOARDS];
                    match store.start_job(job.id, board) {
                        Ok(()) => {
                            assert!(
                                busy.lock().unwrap().insert(board.clone()),
                                "board {board} was given job {} while running another",
                                job.id
                            );
                            let b = store.board(board).unwrap().unwrap();
                            assert_eq!((b.state, b.current_job), (BoardState::Job, Some(job.id)));
                            started.lock().unwrap().push((job.id, board.clone()));
                            std::thread::sleep(Duration::from_millis(2));
                            busy.lock().unwrap().remove(board);
                            store.finish_job(job.id, JobHealth::Complete, None).unwrap();
                            break;
                        }
                        Err(e) => {
                            let message = e.to_string();
                            // PostgreSQL refuses at once a job or board another claim holds.
                            if message.ends_with("not queued")
                                || message.ends_with("being claimed by another appliance")
                            {
                                break;
                            }
                            assert!(
                                message.ends_with("is job, not idle")
                                    || message.ends_with("being claimed by another job"),
                                "{message}"
                            );
                        }
                    }
                }
            });
        }
    });

    let mut started = started.into_inner().unwrap();
    started.sort();
    let mut ran: Vec<JobId> = started.iter().map(|(id, _)| *id).collect();
    ran.dedup();
    all.sort();
    assert_eq!(ran, all, "every job started once");
    assert_eq!(started.len(), JOBS, "no job started twice");
    let mut by_board: HashMap<String, Vec<(Millis, Millis)>> = HashMap::new();
    for id in &all {
        let job = setup.job(*id).unwrap().unwrap();
        assert_eq!(
            (job.state, job.health),
            (JobState::Finished, JobHealth::Complete)
        );
        let board = job.board.clone().unwrap();
        by_board
            .entry(board)
            .or_default()
            .push((job.started.unwrap(), job.ended.unwrap()));
    }
    for (board, mut runs) in by_board {
        runs.sort();
        for pair in runs.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{board} ran two jobs at once: {pair:?}"
            );
        }
    }
    for board in &boards {
        let b = setup.board(board).unwrap().unwrap();
        assert_eq!(
            (b.state, b.current_job),
            (BoardState::Idle, None),
            "{board}"
        );
    }
}

/// Four stores on one database take a board's 100 work items at once: each is handed out once.
fn work_is_handed_out_once_across_stores(h: &Harness) {
    let setup = h.store();
    put_idle(setup, "b1");
    let mut all: Vec<WorkId> = (0..100)
        .map(|i| {
            let run = WorkKind::Run {
                command: format!("echo {i}"),
            };
            setup.add_work("b1", None, &run).unwrap()
        })
        .collect();
    let stores: Vec<Box<dyn Store>> = (0..4).map(|_| h.reopen()).collect();
    let mut taken: Vec<WorkId> = std::thread::scope(|scope| {
        let takers: Vec<_> = stores
            .iter()
            .map(|store| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(work) = store.take_work("b1").unwrap() {
                        assert!(work.taken.is_some());
                        mine.push(work.id);
                    }
                    mine
                })
            })
            .collect();
        takers
            .into_iter()
            .flat_map(|taker| taker.join().unwrap())
            .collect()
    });
    taken.sort();
    all.sort();
    assert_eq!(taken, all);
}

/// `f` run at once (behind a barrier) by four stores on one database; their answers.
fn at_once<T: Send>(h: &Harness, f: impl Fn(&dyn Store) -> T + Sync) -> Vec<T> {
    let stores: Vec<Box<dyn Store>> = (0..4).map(|_| h.reopen()).collect();
    let barrier = std::sync::Barrier::new(stores.len());
    std::thread::scope(|scope| {
        let runs: Vec<_> = stores
            .iter()
            .map(|store| {
                let (barrier, f) = (&barrier, &f);
                scope.spawn(move || {
                    barrier.wait();
                    f(&**store)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

/// Stores racing to reserve a board, finish a job or cancel one: one reservation and one
/// finish succeed, and every cancel sees the same canceled job.
fn reserve_finish_cancel_race_across_stores(h: &Harness) {
    let store = h.store();
    put_idle(store, "b1");
    put_idle(store, "b2");
    let r = Reservation {
        by: "http.tokens[0]".into(),
        note: "race".into(),
        since: 1,
        until: 2,
        boot: None,
    };
    let reserved = at_once(h, |s| s.reserve("b1", &r).unwrap());
    assert_eq!(
        reserved.iter().filter(|&&won| won).count(),
        1,
        "{reserved:?}"
    );
    assert_eq!(
        store.board("b1").unwrap().unwrap().reservation,
        Some(r.clone())
    );

    let running = store.insert_job(&new_job("r", 50)).unwrap();
    store.start_job(running, "b2").unwrap();
    let finished = at_once(h, |s| {
        s.finish_job(running, JobHealth::Complete, None)
            .map_err(|e| e.to_string())
    });
    assert_eq!(
        finished.iter().filter(|f| f.is_ok()).count(),
        1,
        "{finished:?}"
    );
    for refusal in finished.iter().filter_map(|f| f.as_ref().err()) {
        assert!(refusal.ends_with("is already finished"), "{refusal}");
    }
    let b2 = store.board("b2").unwrap().unwrap();
    assert_eq!((b2.state, b2.current_job), (BoardState::Idle, None));

    let queued = store.insert_job(&new_job("q", 50)).unwrap();
    let canceled = at_once(h, |s| s.cancel_job(queued).unwrap().unwrap());
    let stored = store.job(queued).unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.health),
        (JobState::Finished, JobHealth::Canceled)
    );
    assert!(canceled.iter().all(|job| *job == stored), "{canceled:?}");
}

/// `put_board` writes the board's appliance like its other fields; `start_job` copies it to
/// the job, which keeps it once finished.
fn boards_and_jobs_record_their_appliance(h: &Harness) {
    let store = h.store();
    assert_eq!(Board::new("x", "rpi4").appliance, None);
    put_served(store, "e1", "east");
    put_idle(store, "n1");
    assert_eq!(
        store.board("e1").unwrap().unwrap().appliance.as_deref(),
        Some("east")
    );
    assert_eq!(store.board("n1").unwrap().unwrap().appliance, None);

    let queued = store.insert_job(&new_job("q", 50)).unwrap();
    assert_eq!(store.job(queued).unwrap().unwrap().appliance, None);
    store.start_job(queued, "e1").unwrap();
    let job = store.job(queued).unwrap().unwrap();
    assert_eq!(
        (job.state, job.board.as_deref(), job.appliance.as_deref()),
        (JobState::Running, Some("e1"), Some("east"))
    );
    assert_eq!(store.jobs(&JobFilter::default()).unwrap(), vec![job]);
    store.cancel_job(queued).unwrap();
    store.finish_job(queued, JobHealth::Canceled, None).unwrap();
    assert_eq!(
        store.job(queued).unwrap().unwrap().appliance.as_deref(),
        Some("east"),
        "a finished job keeps who ran it"
    );

    // A board served by no appliance gives its jobs none.
    let plain = started_on(store, "n1");
    assert_eq!(store.job(plain).unwrap().unwrap().appliance, None);

    // The board moves to another appliance: its next job is that one's.
    let mut moved = store.board("e1").unwrap().unwrap();
    moved.appliance = Some("west".to_string());
    store.put_board(&moved).unwrap();
    assert_eq!(store.board("e1").unwrap().unwrap(), moved);
    let next = started_on(store, "e1");
    assert_eq!(
        store.job(next).unwrap().unwrap().appliance.as_deref(),
        Some("west")
    );
    // put_board replaces it with None too.
    let mut none = store.board("e1").unwrap().unwrap();
    none.appliance = None;
    store.put_board(&none).unwrap();
    assert_eq!(store.board("e1").unwrap().unwrap().appliance, None);
    // Another store reads the same.
    assert_eq!(
        h.reopen().job(next).unwrap().unwrap().appliance.as_deref(),
        Some("west")
    );
}

/// A heartbeat inserts or updates the appliance: `seen` now, `started` now when it is new or
/// starting, else kept.
fn heartbeats_record_appliances(h: &Harness) {
    let store = h.store();
    assert!(store.appliances().unwrap().is_empty());
    let before = now_ms();
    store
        .heartbeat("west", "http://10.0.0.2:8080", true)
        .unwrap();
    store
        .heartbeat("east", "http://10.0.0.1:8080", false)
        .unwrap();
    let after = now_ms();
    let first = store.appliances().unwrap();
    let names: Vec<&str> = first.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["east", "west"]);
    assert_eq!(first[0].url, "http://10.0.0.1:8080");
    for a in &first {
        assert!(a.seen >= before && a.seen <= after, "{a:?}");
        assert_eq!(
            a.started, a.seen,
            "new: started now whatever `starting` says"
        );
    }

    std::thread::sleep(Duration::from_millis(5));
    store
        .heartbeat("east", "http://10.0.0.9:8080", false)
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    store
        .heartbeat("west", "http://10.0.0.2:8080", true)
        .unwrap();
    let second = store.appliances().unwrap();
    let (east, west) = (&second[0], &second[1]);
    assert_eq!(east.url, "http://10.0.0.9:8080");
    assert!(east.seen > first[0].seen, "{east:?}");
    assert_eq!(east.started, first[0].started, "not starting: kept");
    assert!(west.seen > east.seen, "{west:?}");
    assert_eq!(west.started, west.seen, "starting again: now");
    assert!(west.seen <= now_ms());
    assert_eq!(h.reopen().appliances().unwrap(), second);
}

/// An appliance's restart finishes its own running jobs and those claimed by none, never
/// another appliance's.
fn recover_interrupted_leaves_other_appliances_jobs(h: &Harness) {
    let store = h.store();
    put_served(store, "e1", "east");
    put_served(store, "w1", "west");
    put_served(store, "w2", "west");
    put_idle(store, "n1");
    let east = started_on(store, "e1");
    let west = started_on(store, "w1");
    let canceling = started_on(store, "w2");
    store.cancel_job(canceling).unwrap();
    let unclaimed = started_on(store, "n1");
    let east_before = store.job(east).unwrap().unwrap();

    let recovered = store
        .recover_interrupted("west", "appliance restarted")
        .unwrap();
    assert_eq!(
        recovered,
        vec![
            (west, Some("w1".to_string())),
            (canceling, Some("w2".to_string())),
            (unclaimed, Some("n1".to_string())),
        ]
    );
    for id in [west, canceling, unclaimed] {
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(
            (
                job.state,
                job.health,
                job.error_type.as_deref(),
                job.error.as_deref()
            ),
            (
                JobState::Finished,
                JobHealth::Incomplete,
                Some("InfrastructureError"),
                Some("appliance restarted")
            )
        );
    }
    for b in ["w1", "w2", "n1"] {
        let board = store.board(b).unwrap().unwrap();
        assert_eq!(
            (board.state, board.current_job),
            (BoardState::Idle, None),
            "{b}"
        );
    }
    // East's job runs on, its board still busy with it.
    assert_eq!(store.job(east).unwrap().unwrap(), east_before);
    let e1 = store.board("e1").unwrap().unwrap();
    assert_eq!((e1.state, e1.current_job), (BoardState::Job, Some(east)));
    assert!(store
        .recover_interrupted("west", "again")
        .unwrap()
        .is_empty());
    assert_eq!(
        store.recover_interrupted("east", "restarted").unwrap(),
        vec![(east, Some("e1".to_string()))]
    );
}

/// `running_for` lists the running and canceling jobs an appliance claimed.
fn running_for_lists_an_appliances_jobs(h: &Harness) {
    let store = h.store();
    for b in ["e1", "e2", "e3"] {
        put_served(store, b, "east");
    }
    put_served(store, "w1", "west");
    put_idle(store, "n1");
    let running = started_on(store, "e1");
    let canceling = started_on(store, "e2");
    let done = started_on(store, "e3");
    store.finish_job(done, JobHealth::Complete, None).unwrap();
    let west = started_on(store, "w1");
    started_on(store, "n1");
    store.insert_job(&new_job("queued", 50)).unwrap();
    // Canceled through another appliance: its owner sees it canceling.
    h.reopen().cancel_job(canceling).unwrap();

    let east = store.running_for("east").unwrap();
    assert_eq!(ids(&east), vec![running, canceling]);
    assert_eq!(east[0], store.job(running).unwrap().unwrap());
    assert_eq!(
        (east[0].state, east[1].state),
        (JobState::Running, JobState::Canceling)
    );
    assert_eq!(ids(&store.running_for("west").unwrap()), vec![west]);
    assert!(store.running_for("nope").unwrap().is_empty());
    assert_eq!(h.reopen().running_for("east").unwrap(), east);
}

/// A lost appliance's running jobs are finished incomplete and its boards shown offline, once;
/// the caller itself, appliances heard of lately and other appliances' jobs are left alone.
fn recover_lost_finishes_a_lost_appliances_jobs(h: &Harness) {
    let store = h.store();
    put_served(store, "e1", "east");
    put_served(store, "e2", "east");
    store
        .put_board(&Board {
            state: BoardState::Maintenance,
            health: Health::Online,
            appliance: Some("east".to_string()),
            ..Board::new("em", "rpi4")
        })
        .unwrap();
    put_served(store, "w1", "west");
    put_served(store, "c1", "central");
    put_idle(store, "n1");
    for b in ["e1", "e2", "w1", "c1", "n1"] {
        let mut board = store.board(b).unwrap().unwrap();
        board.health = Health::Online;
        store.put_board(&board).unwrap();
    }
    let done = started_on(store, "e1");
    store.finish_job(done, JobHealth::Complete, None).unwrap();
    let done_before = store.job(done).unwrap().unwrap();
    let running = started_on(store, "e1");
    let canceling = started_on(store, "e2");
    store.cancel_job(canceling).unwrap();
    let west = started_on(store, "w1");
    let own = started_on(store, "c1");
    let unclaimed = started_on(store, "n1");
    for name in ["east", "west", "central", "south"] {
        store
            .heartbeat(name, &format!("http://{name}:8080"), true)
            .unwrap();
    }
    // East and south (no boards, no jobs) are lost; so is the caller, central, which is not
    // its own judge.
    for name in ["east", "central", "south"] {
        h.set_seen(name, long_ago());
    }
    let before = now_ms();
    let lost = store.recover_lost("central", 60_000).unwrap();
    assert_eq!(
        lost,
        vec![
            LostJob {
                job: running,
                board: Some("e1".to_string()),
                appliance: "east".to_string(),
            },
            LostJob {
                job: canceling,
                board: Some("e2".to_string()),
                appliance: "east".to_string(),
            },
        ]
    );
    for id in [running, canceling] {
        let job = store.job(id).unwrap().unwrap();
        assert_eq!(
            (
                job.state,
                job.health,
                job.error_type.as_deref(),
                job.error.as_deref()
            ),
            (
                JobState::Finished,
                JobHealth::Incomplete,
                Some("InfrastructureError"),
                Some("appliance east lost")
            )
        );
        assert!(job.ended.unwrap() >= before);
        assert_eq!(job.appliance.as_deref(), Some("east"));
    }
    assert_eq!(store.job(done).unwrap().unwrap(), done_before);
    for b in ["e1", "e2"] {
        let board = store.board(b).unwrap().unwrap();
        assert_eq!(
            (board.state, board.health, board.current_job),
            (BoardState::Idle, Health::Offline, None),
            "{b}"
        );
    }
    let em = store.board("em").unwrap().unwrap();
    assert_eq!(
        (em.state, em.health, em.current_job),
        (BoardState::Maintenance, Health::Offline, None)
    );
    for (id, board) in [(west, "w1"), (own, "c1"), (unclaimed, "n1")] {
        assert_eq!(
            store.job(id).unwrap().unwrap().state,
            JobState::Running,
            "{board}"
        );
        let b = store.board(board).unwrap().unwrap();
        assert_eq!(
            (b.state, b.health, b.current_job),
            (BoardState::Job, Health::Online, Some(id)),
            "{board}"
        );
    }

    // Nothing more to do the second time: the boards are not even written again.
    let boards_before = store.boards().unwrap();
    assert!(store.recover_lost("central", 60_000).unwrap().is_empty());
    assert_eq!(store.boards().unwrap(), boards_before);
    // Another appliance judges central, silent as long as east was.
    let by_west = h.reopen().recover_lost("west", 60_000).unwrap();
    assert_eq!(
        by_west,
        vec![LostJob {
            job: own,
            board: Some("c1".to_string()),
            appliance: "central".to_string(),
        }]
    );
    assert_eq!(
        store.job(own).unwrap().unwrap().error.as_deref(),
        Some("appliance central lost")
    );
    let c1 = store.board("c1").unwrap().unwrap();
    assert_eq!(
        (c1.state, c1.health, c1.current_job),
        (BoardState::Idle, Health::Offline, None)
    );
    assert!(h.reopen().recover_lost("west", 60_000).unwrap().is_empty());
    for (id, board) in [(west, "w1"), (unclaimed, "n1")] {
        assert_eq!(
            store.job(id).unwrap().unwrap().state,
            JobState::Running,
            "{board}"
        );
    }

    // East comes back: it heartbeats, serves its boards again and is no longer lost.
    store.heartbeat("east", "http://east:8080", true).unwrap();
    let mut e1 = store.board("e1").unwrap().unwrap();
    e1.health = Health::Online;
    store.put_board(&e1).unwrap();
    let again = started_on(store, "e1");
    assert!(store.recover_lost("central", 60_000).unwrap().is_empty());
    assert_eq!(store.job(again).unwrap().unwrap().state, JobState::Running);
    let e1 = store.board("e1").unwrap().unwrap();
    assert_eq!(
        (e1.state, e1.health, e1.current_job),
        (BoardState::Job, Health::Online, Some(again))
    );
    // A lease longer than its silence keeps it; a shorter one does not.
    h.set_seen("east", now_ms() - 10_000);
    assert!(store.recover_lost("central", 60_000).unwrap().is_empty());
    let lost = store.recover_lost("central", 5_000).unwrap();
    assert_eq!(ids_of(&lost), vec![again]);
}

fn ids_of(lost: &[LostJob]) -> Vec<JobId> {
    lost.iter().map(|l| l.job).collect()
}

/// Two appliances find a third lost at the same moment it restarts: each of its jobs is
/// finished by exactly one of the three calls.
fn recover_lost_races_across_stores(h: &Harness) {
    const BOARDS: usize = 8;
    for round in 0..3 {
        let setup = h.store();
        let gone = format!("gone{round}");
        let mut all = Vec::new();
        for b in 0..BOARDS {
            let board = format!("{gone}-b{b}");
            put_served(setup, &board, &gone);
            let id = started_on(setup, &board);
            if b % 3 == 0 {
                setup.cancel_job(id).unwrap();
            }
            all.push(id);
        }
        for name in ["b", "c", gone.as_str()] {
            setup.heartbeat(name, "http://x", true).unwrap();
        }
        h.set_seen(&gone, long_ago());

        let stores: Vec<Box<dyn Store>> = (0..3).map(|_| h.reopen()).collect();
        let barrier = std::sync::Barrier::new(stores.len());
        let mut finished: Vec<JobId> = std::thread::scope(|scope| {
            let runs: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(n, store)| {
                    let (barrier, gone) = (&barrier, &gone);
                    scope.spawn(move || {
                        barrier.wait();
                        match n {
                            0 => ids_of(&store.recover_lost("b", 60_000).unwrap()),
                            1 => ids_of(&store.recover_lost("c", 60_000).unwrap()),
                            _ => store
                                .recover_interrupted(gone, "appliance restarted")
                                .unwrap()
                                .into_iter()
                                .map(|(id, _)| id)
                                .collect(),
                        }
                    })
                })
                .collect();
            runs.into_iter()
                .flat_map(|run| run.join().unwrap())
                .collect()
        });
        finished.sort();
        assert_eq!(finished, all, "round {round}: each job finished once");
        for id in &all {
            let job = setup.job(*id).unwrap().unwrap();
            assert_eq!(
                (job.state, job.health),
                (JobState::Finished, JobHealth::Incomplete)
            );
            assert_eq!(job.error_type.as_deref(), Some("InfrastructureError"));
            let error = job.error.unwrap();
            assert!(
                error == format!("appliance {gone} lost") || error == "appliance restarted",
                "{error}"
            );
        }
        for store in &stores {
            assert!(store.recover_lost("b", 60_000).unwrap().is_empty());
        }
        setup.heartbeat(&gone, "http://x", true).unwrap();
    }
}

/// Generates `on_sqlite::NAME` and `on_postgres::NAME` for each conformance test.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Harness::sqlite());
                }
            )+
        }

        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(harness) = super::Harness::postgres(stringify!($name)) {
                        super::$name(&harness);
                    }
                }
            )+
        }
    };
}

conformance!(
    reopen_is_idempotent_and_keeps_data,
    insert_and_read_job,
    queued_jobs_by_priority_then_fifo,
    counts_by_state_and_health,
    jobs_newest_first_with_filters_and_limit,
    start_job_success,
    start_job_refusals_change_nothing,
    finish_job_returns_board_to_idle,
    finish_job_leaves_a_board_owned_by_another_job,
    cancel_semantics,
    recover_interrupted_jobs,
    log_numbering_and_paging,
    results_put_and_replace,
    work_take_finish_drop,
    board_roundtrip_of_every_field,
    events_newest_first_with_limit,
    power_and_reservations_outlive_put_board,
    claims_race_across_stores,
    work_is_handed_out_once_across_stores,
    reserve_finish_cancel_race_across_stores,
    boards_and_jobs_record_their_appliance,
    heartbeats_record_appliances,
    recover_interrupted_leaves_other_appliances_jobs,
    running_for_lists_an_appliances_jobs,
    recover_lost_finishes_a_lost_appliances_jobs,
    recover_lost_races_across_stores,
);
