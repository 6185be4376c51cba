//! `claims-load`: queued jobs claimed by several appliances on one PostgreSQL, against one
//! appliance on SQLite (`bench/claims/run.sh`, issue 14).
//!
//! Usage: `claims-load [--jobs N] [--instances N] [--boards N] [--no-fsync] [--spread]`
//!
//! Starts its own PostgreSQL ([`PgCluster`], removed at exit) and makes it durable like a
//! production server (`fsync`, `synchronous_commit` and `full_page_writes` on, as SQLite's
//! `synchronous=FULL`; `--no-fsync` keeps the test cluster's settings, all three off). Then, for
//! each backend:
//!
//! * setup (not timed): `--boards` idle boards per instance (default 8), each served by its
//!   instance (`boards.appliance`), and `--jobs` queued jobs (default 1,000) of one device type;
//! * the race (timed): every instance (default 4 on PostgreSQL, 1 on SQLite) is a thread with
//!   its OWN store, as separate appliances would have, released at once behind a barrier. Each
//!   loops as the scheduler does: `queued_jobs`, pair the queue in run order with its idle
//!   boards, `start_job` each pair (a refusal because another instance claimed the job first is
//!   a lost race, counted), and `finish_job` a claimed job at once; until the queue is empty.
//!   With `--spread`, instance `n` of `N` pairs its boards with the queue from `n/N` of its
//!   length on (wrapping), so the instances mostly go for different jobs;
//! * the check: every claim is recorded in memory as (job, instance); no job may be claimed
//!   twice and every job must be claimed once; in the database every job must be finished and
//!   complete, claimed by the instance that recorded it, on one of that instance's boards, and
//!   every board idle with no current job.
//!
//! Prints, per backend, wall time, claims/s, lost races and double claims, and the ratio of
//! PostgreSQL's claims/s to SQLite's. Exit status 1 on any double claim or failed check.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use appliance::store::pg_cluster::PgCluster;
use appliance::store::postgres::PostgresStore;
use appliance::store::sqlite::SqliteStore;
use appliance::store::{Board, BoardState, JobFilter, JobHealth, JobId, JobState, NewJob, Store};

/// The device type of every board and job.
const DEVICE_TYPE: &str = "bench";

/// How long the cluster may take to apply `--fsync` settings after a reload.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// The command line.
struct Args {
    /// Queued jobs.
    jobs: usize,
    /// Appliances on PostgreSQL.
    instances: usize,
    /// Boards per appliance.
    boards: usize,
    /// Make the cluster durable (`fsync` and friends on).
    durable: bool,
    /// Instances start at different places of the queue.
    spread: bool,
}

fn usage() -> String {
    "usage: claims-load [--jobs N] [--instances N] [--boards N] [--no-fsync] [--spread]".to_string()
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        jobs: 1000,
        instances: 4,
        boards: 8,
        durable: true,
        spread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut number = |name: &str| -> std::result::Result<usize, String> {
            let v = it
                .next()
                .ok_or_else(|| format!("{name}: a value is needed"))?;
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: '{v}' is not a positive number"))
        };
        match a.as_str() {
            "--jobs" => args.jobs = number("--jobs")?,
            "--instances" => args.instances = number("--instances")?,
            "--boards" => args.boards = number("--boards")?,
            "--no-fsync" => args.durable = false,
            "--spread" => args.spread = true,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument '{other}'\n{}", usage())),
        }
    }
    Ok(args)
}

/// An instance's name.
fn instance_name(n: usize) -> String {
    format!("a{n}")
}

/// The boards of instance `n`.
fn instance_boards(n: usize, boards: usize) -> Vec<String> {
    (0..boards).map(|b| format!("a{n}-b{b}")).collect()
}

/// What one instance did.
#[derive(Default)]
struct Tally {
    /// Jobs it claimed, in order.
    claimed: Vec<JobId>,
    /// `start_job` refused because another instance had claimed the job.
    lost: u64,
    /// `queued_jobs` calls.
    rounds: u64,
}

/// What one backend's run measured and found.
struct Outcome {
    /// Barrier release to the last instance's end.
    wall: Duration,
    /// Per instance.
    tallies: Vec<Tally>,
    /// Jobs claimed more than once (in memory).
    double_claims: usize,
    /// What the check found wrong (empty: nothing).
    problems: Vec<String>,
}

impl Outcome {
    /// Jobs claimed, by every instance.
    fn claims(&self) -> usize {
        self.tallies.iter().map(|t| t.claimed.len()).sum()
    }

    /// Claims per second of wall time.
    fn per_second(&self) -> f64 {
        self.claims() as f64 / self.wall.as_secs_f64()
    }

    /// Prints the figures under `title`.
    fn print(&self, title: &str) {
        println!("{title}");
        println!(
            "  wall {:.3} s, {} claims, {:.1} claims/s, lost races {}, double claims {}",
            self.wall.as_secs_f64(),
            self.claims(),
            self.per_second(),
            self.tallies.iter().map(|t| t.lost).sum::<u64>(),
            self.double_claims
        );
        let per: Vec<String> = self
            .tallies
            .iter()
            .enumerate()
            .map(|(n, t)| {
                format!(
                    "{} {} claims / {} lost / {} rounds",
                    instance_name(n),
                    t.claimed.len(),
                    t.lost,
                    t.rounds
                )
            })
            .collect();
        println!("  per instance: {}", per.join("; "));
        for problem in &self.problems {
            println!("  PROBLEM: {problem}");
        }
    }
}

/// The scheduler's loop of an instance on its own `store` with its `boards`, until the queue is
/// empty. With `spread: Some((n, of))`, it starts at `n/of` of the queue.
fn claim_loop(
    store: &dyn Store,
    boards: &[String],
    spread: Option<(usize, usize)>,
) -> Result<Tally> {
    let mut tally = Tally::default();
    loop {
        let mut queued = store.queued_jobs().context("queued_jobs")?;
        tally.rounds += 1;
        if queued.is_empty() {
            return Ok(tally);
        }
        if let Some((n, of)) = spread {
            let len = queued.len();
            queued.rotate_left(n * len / of);
        }
        // Every board is idle here: a claimed job is finished at once.
        for (job, board) in queued.iter().zip(boards) {
            match store.start_job(job.id, board) {
                Ok(()) => {
                    tally.claimed.push(job.id);
                    store
                        .finish_job(job.id, JobHealth::Complete, None)
                        .with_context(|| format!("finish job {}", job.id))?;
                }
                Err(e)
                    if e.to_string().ends_with(", not queued")
                        || e.to_string()
                            .ends_with("being claimed by another appliance") =>
                {
                    tally.lost += 1
                }
                Err(e) => bail!("start job {} on {board}: {e}", job.id),
            }
        }
    }
}

/// Boards and jobs for `instances` instances, through `setup`.
fn populate(setup: &dyn Store, args: &Args, instances: usize) -> Result<()> {
    for n in 0..instances {
        for board in instance_boards(n, args.boards) {
            setup.put_board(&Board {
                approved: true,
                appliance: Some(instance_name(n)),
                ..Board::new(&board, DEVICE_TYPE)
            })?;
        }
        setup.heartbeat(&instance_name(n), &format!("http://{n}.invalid"), true)?;
    }
    for i in 0..args.jobs {
        setup.insert_job(&NewJob {
            name: format!("claim-{i}"),
            device_type: DEVICE_TYPE.to_string(),
            priority: 50,
            yaml: format!("job_name: claim-{i}\ndevice_type: {DEVICE_TYPE}\n"),
        })?;
    }
    Ok(())
}

/// Runs the instances (one store each) at once, then checks the outcome through `check`.
fn race(stores: &[Box<dyn Store>], check: &dyn Store, args: &Args) -> Result<Outcome> {
    let barrier = Barrier::new(stores.len() + 1);
    let (wall, results) = std::thread::scope(|scope| {
        let runs: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| {
                let barrier = &barrier;
                let boards = instance_boards(n, args.boards);
                let spread = args.spread.then_some((n, stores.len()));
                scope.spawn(move || {
                    barrier.wait();
                    claim_loop(&**store, &boards, spread)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<Result<Tally>> = runs
            .into_iter()
            .map(|run| {
                run.join()
                    .unwrap_or_else(|_| Err(anyhow!("an instance panicked")))
            })
            .collect();
        (start.elapsed(), results)
    });
    let tallies = results.into_iter().collect::<Result<Vec<Tally>>>()?;

    // In memory: who claimed what.
    let mut claimers: HashMap<JobId, Vec<usize>> = HashMap::new();
    for (n, tally) in tallies.iter().enumerate() {
        for job in &tally.claimed {
            claimers.entry(*job).or_default().push(n);
        }
    }
    let double_claims = claimers.values().filter(|c| c.len() > 1).count();
    let mut problems = Vec::new();
    if double_claims > 0 {
        problems.push(format!("{double_claims} jobs claimed more than once"));
    }
    if claimers.len() != args.jobs {
        problems.push(format!(
            "{} distinct jobs claimed, {} queued",
            claimers.len(),
            args.jobs
        ));
    }

    // In the database: every job finished once, complete, by the instance that claimed it.
    let jobs = check.jobs(&JobFilter {
        limit: Some(args.jobs + 1),
        ..JobFilter::default()
    })?;
    if jobs.len() != args.jobs {
        problems.push(format!("{} jobs stored, {} queued", jobs.len(), args.jobs));
    }
    for job in &jobs {
        let claimer = claimers.get(&job.id).and_then(|c| c.first()).copied();
        let expected = claimer.map(instance_name);
        let on_its_board = match (&job.board, claimer) {
            (Some(board), Some(n)) => board.starts_with(&format!("{}-", instance_name(n))),
            _ => false,
        };
        if job.state != JobState::Finished
            || job.health != JobHealth::Complete
            || job.started.is_none()
            || job.ended.is_none()
            || job.appliance != expected
            || !on_its_board
        {
            problems.push(format!(
                "job {}: {:?}/{:?} on {:?} by {:?}, claimed by {:?}",
                job.id, job.state, job.health, job.board, job.appliance, expected
            ));
        }
    }
    for board in check.boards()? {
        if board.state != BoardState::Idle || board.current_job.is_some() {
            problems.push(format!(
                "board {}: {:?} with job {:?}",
                board.id, board.state, board.current_job
            ));
        }
    }
    problems.truncate(20);
    Ok(Outcome {
        wall,
        tallies,
        double_claims,
        problems,
    })
}

/// Runs `statements` (separated by `;`) one by one as the superuser on the cluster's
/// `postgres` database; the first column of every row they returned.
fn admin(cluster: &PgCluster, statements: &'static str) -> Result<Vec<String>> {
    let url = cluster.url("postgres");
    std::thread::spawn(move || -> Result<Vec<String>> {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls)
            .with_context(|| format!("connect to {url}"))?;
        let mut values = Vec::new();
        for statement in statements
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            for message in client.simple_query(statement)? {
                if let ::postgres::SimpleQueryMessage::Row(row) = message {
                    values.push(row.get(0).unwrap_or("").to_string());
                }
            }
        }
        Ok(values)
    })
    .join()
    .map_err(|_| anyhow!("the admin connection panicked"))?
}

/// Turns `fsync`, `synchronous_commit` and `full_page_writes` on and waits until new
/// connections see them.
fn make_durable(cluster: &PgCluster) -> Result<()> {
    admin(
        cluster,
        "ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET synchronous_commit = on; \
         ALTER SYSTEM SET full_page_writes = on; SELECT pg_reload_conf()",
    )?;
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let shown = admin(
            cluster,
            "SHOW fsync; SHOW synchronous_commit; SHOW full_page_writes",
        )?;
        if shown.iter().all(|v| v == "on") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cluster still shows {shown:?} after a reload");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The load average, for the report.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

fn run(args: &Args) -> Result<bool> {
    println!(
        "{} jobs, {} boards per instance, load average {} at start",
        args.jobs,
        args.boards,
        loadavg()
    );

    // PostgreSQL: `instances` appliances, each with its own store.
    let cluster = PgCluster::start().context("start PostgreSQL")?;
    if args.durable {
        make_durable(&cluster)?;
    }
    let settings = admin(
        &cluster,
        "SHOW server_version; SHOW fsync; SHOW synchronous_commit",
    )?;
    let url = cluster.create_database("claims")?;
    let setup = PostgresStore::connect(&url)?;
    populate(&setup, args, args.instances)?;
    let stores = (0..args.instances)
        .map(|_| Ok(Box::new(PostgresStore::connect(&url)?) as Box<dyn Store>))
        .collect::<Result<Vec<_>>>()?;
    let pg = race(&stores, &setup, args)?;
    pg.print(&format!(
        "PostgreSQL {} (fsync {}, synchronous_commit {}), {} instance(s), one store each, \
         picking {}:",
        settings.first().map_or("?", String::as_str),
        settings.get(1).map_or("?", String::as_str),
        settings.get(2).map_or("?", String::as_str),
        args.instances,
        if args.spread {
            "spread over the queue"
        } else {
            "from the queue's head"
        }
    ));
    drop((stores, setup, cluster));

    // SQLite: one appliance, one store (which also sets up and checks).
    let dir = tempfile::tempdir().context("create a temporary directory")?;
    let stores: Vec<Box<dyn Store>> =
        vec![Box::new(SqliteStore::open(&dir.path().join("labboot.db"))?)];
    populate(&*stores[0], args, 1)?;
    let lite = race(&stores, &*stores[0], args)?;
    lite.print("SQLite (WAL, synchronous=FULL), 1 instance:");

    println!(
        "ratio: PostgreSQL {} instance(s) / SQLite 1 instance = {:.2}x claims/s",
        args.instances,
        pg.per_second() / lite.per_second()
    );
    println!("load average {} at the end", loadavg());
    let clean = pg.problems.is_empty() && lite.problems.is_empty();
    Ok(clean && pg.double_claims == 0 && lite.double_claims == 0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("claims-load: FAILED: double claims or a failed check (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("claims-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
