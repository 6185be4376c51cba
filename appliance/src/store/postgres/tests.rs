//! The PostgreSQL store's own tests: URLs, migrations, connection threads, lost connections and
//! bad rows. What every backend must do is in `store/conformance.rs`.

use std::sync::{Arc, Barrier};

use super::super::conformance::{pg_client, test_database};
use super::*;

fn new_job(name: &str) -> NewJob {
    NewJob {
        name: name.to_string(),
        device_type: "rpi4".to_string(),
        priority: 50,
        yaml: format!("job_name: {name}\n"),
    }
}

/// Some calls of every kind, from whatever thread this runs on.
fn exercise(store: &dyn Store) {
    store.put_board(&Board::new("b1", "rpi4")).unwrap();
    let id = store.insert_job(&new_job("a")).unwrap();
    store.start_job(id, "b1").unwrap();
    assert_eq!(store.append_log(id, &["- x".to_string()]).unwrap(), 1);
    store.finish_job(id, JobHealth::Complete, None).unwrap();
    let job = store.job(id).unwrap().unwrap();
    assert_eq!(
        (job.state, job.health),
        (JobState::Finished, JobHealth::Complete)
    );
}

#[test]
fn schema_lists_are_shared_in_intent() {
    assert_eq!(
        migrations::MIGRATIONS.len(),
        super::super::migrations::MIGRATIONS.len(),
        "a schema change goes into both SQLite's and PostgreSQL's migrations"
    );
}

#[test]
fn open_takes_both_schemes_and_migrates() {
    let Some(url) = test_database("open_schemes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = super::super::open(&url, dir.path()).unwrap();
    exercise(&*store);
    let other = url.replacen("postgres://", "postgresql://", 1);
    let again = super::super::open(&other, dir.path()).unwrap();
    assert_eq!(again.boards().unwrap().len(), 1);
    let versions: Vec<i32> = pg_client(&url)
        .query("SELECT version FROM labboot_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected: Vec<i32> = (1..=migrations::MIGRATIONS.len() as i32).collect();
    assert_eq!(versions, expected);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written to the state directory"
    );
}

#[test]
fn connect_errors_name_the_url_without_its_password() {
    // Nothing listens on port 1 of loopback.
    let message = PostgresStore::connect("postgres://labboot:s3cret@127.0.0.1:1/lab")
        .unwrap_err()
        .to_string();
    assert!(
        message
            .starts_with("database: open postgres://labboot:***@127.0.0.1:1/lab: cannot connect: "),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!message.contains('\n'), "{message}");

    let message = PostgresStore::connect("postgres://u:pw@127.0.0.1:notaport/db")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("database: open postgres://u:***@127.0.0.1:notaport/db: "),
        "{message}"
    );
    assert!(!message.contains("pw"), "{message}");
}

#[test]
fn newer_database_is_refused() {
    let Some(url) = test_database("newer") else {
        return;
    };
    drop(PostgresStore::connect(&url).unwrap());
    let known = migrations::MIGRATIONS.len() as i32;
    let newer = known + 1;
    pg_client(&url)
        .execute(
            "INSERT INTO labboot_schema (version, applied) VALUES ($1, 0)",
            &[&newer],
        )
        .unwrap();
    let message = PostgresStore::connect(&url).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("database: open {url}: ")),
        "{message}"
    );
    assert!(
        message.contains(&format!("schema version {newer}")),
        "{message}"
    );
    assert!(message.contains(&format!("up to {known}")), "{message}");
    let top: i32 = pg_client(&url)
        .query_one("SELECT MAX(version) FROM labboot_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(top, newer, "the database was left alone");
}

/// Appliances starting at once on an empty database: each migration is applied once, and every
/// one of them opens.
#[test]
fn concurrent_migrations_on_a_fresh_database() {
    for round in 0..3 {
        let Some(url) = test_database(&format!("migrate_race{round}")) else {
            return;
        };
        let barrier = Arc::new(Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (url, barrier) = (url.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    PostgresStore::connect(&url).map(|_| ())
                })
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
        let rows = pg_client(&url)
            .query("SELECT version FROM labboot_schema ORDER BY version", &[])
            .unwrap();
        assert_eq!(rows.len(), migrations::MIGRATIONS.len(), "round {round}");
        exercise(&PostgresStore::connect(&url).unwrap());
    }
}

/// The synchronous client panics inside a tokio runtime; the store's calls run on its own
/// threads, so they work from an async task, a blocking task and a current-thread runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_a_multi_thread_runtime() {
    let Some(url) = test_database("tokio_multi") else {
        return;
    };
    let store = Arc::new(PostgresStore::connect(&url).unwrap());
    exercise(&*store);
    let blocking = Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        let id = blocking.insert_job(&new_job("b")).unwrap();
        assert!(blocking.job(id).unwrap().is_some());
    })
    .await
    .unwrap();
    let spawned = Arc::clone(&store);
    tokio::spawn(async move { assert_eq!(spawned.queued_jobs().unwrap().len(), 1) })
        .await
        .unwrap();
    // Dropping the store in the runtime is fine too: the clients are dropped on their threads.
    drop(store);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_from_a_current_thread_runtime() {
    let Some(url) = test_database("tokio_current") else {
        return;
    };
    let store = PostgresStore::connect(&url).unwrap();
    exercise(&store);
    drop(store);
}

/// The URL of the cluster's `postgres` database, beside the test database `url` names.
fn admin_url(url: &str) -> String {
    format!("{}/postgres", url.rsplit_once('/').unwrap().0)
}

/// The name of the database `url` names.
fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Ends every connection to the database `url` names (as a server restart would), and waits
/// until they are gone.
fn terminate_connections(url: &str) {
    let mut admin = pg_client(&admin_url(url));
    let db = db_name(url);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .unwrap();
    for _ in 0..500 {
        let left: i64 = admin
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the connections did not end");
}

/// A lost connection costs a reconnect: reads and writes after it succeed (a write lost before
/// its commit runs again on the new connection).
#[test]
fn calls_survive_a_lost_connection() {
    let Some(url) = test_database("reconnect") else {
        return;
    };
    let store = PostgresStore::connect_with(&url, 1).unwrap();
    store.put_board(&Board::new("b1", "rpi4")).unwrap();
    terminate_connections(&url);
    assert!(store.board("b1").unwrap().is_some(), "a read reconnects");
    terminate_connections(&url);
    let id = store.insert_job(&new_job("after")).unwrap();
    assert_eq!(store.job(id).unwrap().unwrap().name, "after");
    assert_eq!(store.queued_jobs().unwrap().len(), 1, "inserted once");
}

/// With the server gone, a call fails with an error naming the URL; once it is back, the next
/// call works.
#[test]
fn unreachable_server_is_a_clear_error() {
    let Some(url) = test_database("unreachable") else {
        return;
    };
    let store = PostgresStore::connect_with(&url, 1).unwrap();
    // Lose the store's connection and make its database refuse new ones.
    let set_allowed = |allowed: bool| {
        pg_client(&admin_url(&url))
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allowed}",
                db_name(&url)
            ))
            .unwrap();
    };
    set_allowed(false);
    terminate_connections(&url);
    let message = store.board("b1").unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "database: read board 'b1': cannot connect to {url}: "
        )),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    set_allowed(true);
    assert_eq!(store.board("b1").unwrap(), None);
}

/// A row the store's types cannot hold is an error naming the column, not a panic.
#[test]
fn bad_rows_are_errors() {
    let Some(url) = test_database("bad_rows") else {
        return;
    };
    let store = PostgresStore::connect(&url).unwrap();
    store.put_board(&Board::new("b1", "rpi4")).unwrap();
    let id = store.insert_job(&new_job("a")).unwrap();
    pg_client(&url)
        .batch_execute(&format!(
            "ALTER TABLE boards DROP CONSTRAINT boards_state_check; \
             UPDATE boards SET state = 'sideways' WHERE id = 'b1'; \
             ALTER TABLE jobs ALTER COLUMN yaml DROP NOT NULL; \
             UPDATE jobs SET yaml = NULL WHERE id = {id}"
        ))
        .unwrap();
    let message = store.board("b1").unwrap_err().to_string();
    assert_eq!(
        message,
        "database: read board 'b1': bad row: column state: 'sideways' is not a BoardState"
    );
    assert!(store.boards().is_err());
    let message = store.job(id).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("database: read job {id}: bad row: column yaml: ")),
        "{message}"
    );
    let message = store.start_job(id, "b1").unwrap_err().to_string();
    assert!(message.contains("bad row"), "{message}");
}

/// Server errors are one line with their SQLSTATE; a string PostgreSQL cannot hold (a NUL
/// character) is refused with an error, and the store goes on.
#[test]
fn server_errors_are_one_line() {
    let Some(url) = test_database("errors") else {
        return;
    };
    let store = PostgresStore::connect(&url).unwrap();
    let message = store
        .add_event("nope", "auth", "x")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("database: add auth event of board 'nope': insert or update on table"),
        "{message}"
    );
    assert!(message.contains("[SQLSTATE 23503]"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(store.put_board(&Board::new("nul\0", "rpi4")).is_err());
    store.put_board(&Board::new("b1", "rpi4")).unwrap();
}

/// A database of schema version 2 with a job running: after the upgrade the job and its board
/// belong to no appliance, and any appliance's restart recovers the job.
#[test]
fn upgrade_leaves_old_jobs_to_any_appliance() {
    let Some(url) = test_database("upgrade_v2") else {
        return;
    };
    let mut client = pg_client(&url);
    client
        .batch_execute(
            "CREATE TABLE labboot_schema (
                 version  INTEGER PRIMARY KEY NOT NULL,
                 applied  BIGINT NOT NULL
             )",
        )
        .unwrap();
    for (n, migration) in migrations::MIGRATIONS[..2].iter().enumerate() {
        client.batch_execute(migration).unwrap();
        client
            .execute(
                "INSERT INTO labboot_schema (version, applied) VALUES ($1, 0)",
                &[&(n as i32 + 1)],
            )
            .unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO boards (id, device_type, state, health, approved, from_config)
                 VALUES ('b1', 'rpi4', 'idle', 'online', true, true);
             INSERT INTO jobs (name, device_type, priority, state, health, board, submitted,
                               started, yaml)
                 VALUES ('old', 'rpi4', 50, 'running', 'unknown', 'b1', 1, 2, 'x');
             UPDATE boards SET state = 'job', current_job = 1 WHERE id = 'b1';",
        )
        .unwrap();
    drop(client);
    let store = PostgresStore::connect(&url).unwrap();
    let top: i32 = pg_client(&url)
        .query_one("SELECT MAX(version) FROM labboot_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(top as usize, migrations::MIGRATIONS.len());
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

/// Heartbeats take the database server's clock: `seen` is within the database's idea of now.
#[test]
fn heartbeats_use_the_servers_clock() {
    let Some(url) = test_database("heartbeat_clock") else {
        return;
    };
    let store = PostgresStore::connect(&url).unwrap();
    let mut client = pg_client(&url);
    let server_now = |client: &mut ::postgres::Client| -> i64 {
        client
            .query_one(
                "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let before = server_now(&mut client);
    store.heartbeat("a", "http://a", true).unwrap();
    let after = server_now(&mut client);
    let seen = store.appliances().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].seen >= before && seen[0].seen <= after, "{seen:?}");
}
