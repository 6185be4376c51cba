//! The appliance's state behind one trait: boards, board events, jobs, job logs and results,
//! the agents' work items, and the appliances sharing a database (their heartbeats, and the
//! jobs of one that stopped heartbeating). No SQL lives outside this module; [`sqlite`] is the default
//! backend, [`postgres`] the one several appliances share. [`open`] picks one from the config's
//! `database:` URL. [`pg_cluster`] starts a throwaway PostgreSQL for tests.
//!
//! Every method that changes something has committed it when it returns, so an answer sent to
//! a client after a call never acknowledges a write a crash could lose. Both backends pass the
//! same conformance suite (`conformance.rs`).

#[cfg(test)]
mod conformance;
mod migrations;
mod names;
pub mod pg_cluster;
pub mod postgres;
pub mod sqlite;

use serde::Serialize;

/// A job's number.
pub type JobId = i64;
/// An agent work item's number.
pub type WorkId = i64;

/// A storage failure (the database's own message, with what was being done).
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(pub String);

/// Result of a storage call.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The error of a job [`Store::recover_lost`] finished because appliance `name` was lost.
fn lost_message(name: &str) -> String {
    format!("appliance {name} lost")
}

/// What a board is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BoardState {
    /// Boots the master image and waits for work.
    Idle,
    /// A job owns it.
    Job,
    /// Stops at the U-Boot prompt; no jobs.
    Maintenance,
}

/// What the appliance knows of a board's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Never checked in.
    Unknown,
    /// Checked in since its last master boot.
    Online,
    /// Missed its check-in after a master boot.
    Offline,
    /// An unknown identity awaiting approval.
    Pending,
    /// A second card with this identity was seen while the board was online.
    Cloned,
}

/// A board as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Board {
    /// The identity on its card.
    pub id: String,
    /// Its device type ("" until an unknown board is approved with one).
    pub device_type: String,
    /// What it is doing.
    pub state: BoardState,
    /// Liveness.
    pub health: Health,
    /// May run jobs (boards in the config are approved).
    pub approved: bool,
    /// Named in the appliance config (not discovered by check-in).
    pub from_config: bool,
    /// sha256 (hex) of the token an unknown board first presented.
    #[serde(skip)]
    pub token_sha256: Option<String>,
    /// MAC of the last check-in.
    pub mac: Option<String>,
    /// Address of the last check-in or lease.
    pub address: Option<String>,
    /// The MAC of a second card presenting this identity.
    pub cloned: Option<String>,
    /// The job that owns it.
    pub current_job: Option<JobId>,
    /// Last check-in.
    pub last_checkin: Option<Millis>,
    /// Last time the master was handed to it (boot script served or power-on into idle).
    pub master_boot: Option<Millis>,
    /// The last check-in's report (kernel, cpus, memory, MACs, addresses).
    pub info: serde_json::Value,
    /// Power as the appliance last switched it (see [`Board::power_now`]); only
    /// [`Store::set_powered`] and [`Store::mark_off_if_unused`] change it, never `put_board`.
    pub powered: Powered,
    /// When `powered` was recorded.
    pub powered_at: Option<Millis>,
    /// A person's reservation; only the reservation calls change it, never `put_board`.
    pub reservation: Option<Reservation>,
    /// The appliance that serves the board (its `name:`), if any.
    pub appliance: Option<String>,
}

/// Whether a board has power, as far as the appliance knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Powered {
    /// Switched on (or seen alive).
    On,
    /// Switched off by the appliance.
    Off,
    /// Not switched by this appliance yet.
    Unknown,
}

/// A person's hold on a board: the scheduler gives it no job until it ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reservation {
    /// Who: the API token used (`http.tokens[N]`).
    pub by: String,
    /// What for, in the person's words.
    pub note: String,
    /// Reserved at.
    pub since: Millis,
    /// When the appliance gives the board back.
    pub until: Millis,
    /// The person's boot request (the JSON of `POST …/boot`), if they booted their own kernel.
    pub boot: Option<serde_json::Value>,
}

impl Board {
    /// A new board: idle, health unknown, nothing recorded.
    pub fn new(id: &str, device_type: &str) -> Board {
        Board {
            id: id.to_string(),
            device_type: device_type.to_string(),
            state: BoardState::Idle,
            health: Health::Unknown,
            approved: false,
            from_config: false,
            token_sha256: None,
            mac: None,
            address: None,
            cloned: None,
            current_job: None,
            last_checkin: None,
            master_boot: None,
            info: serde_json::Value::Null,
            powered: Powered::Unknown,
            powered_at: None,
            reservation: None,
            appliance: None,
        }
    }

    /// Its power now: a board recorded off that checked in or fetched the master since is on;
    /// one never switched is on while it is online.
    pub fn power_now(&self) -> Powered {
        match self.powered {
            Powered::Off if self.last_checkin.max(self.master_boot) > self.powered_at => {
                Powered::On
            }
            Powered::Unknown if self.health == Health::Online => Powered::On,
            p => p,
        }
    }
}

/// One line of a board's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoardEvent {
    /// When.
    pub time: Millis,
    /// `checkin`, `lease`, `power`, `state`, `health`, `clone`, `auth`, `job`, `agent`.
    pub kind: String,
    /// What happened, for people.
    pub message: String,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a board.
    Queued,
    /// Running on a board.
    Running,
    /// Canceled while running; finalize still runs.
    Canceling,
    /// Done, whatever the outcome.
    Finished,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobHealth {
    /// Not finished.
    Unknown,
    /// Every action passed.
    Complete,
    /// An error ended it.
    Incomplete,
    /// Canceled.
    Canceled,
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// `job_name`.
    pub name: String,
    /// `device_type`.
    pub device_type: String,
    /// 0–100 (high = 100, medium = 50, low = 0).
    pub priority: i64,
    /// The submitted YAML, as submitted.
    pub yaml: String,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Its number.
    pub id: JobId,
    /// `job_name`.
    pub name: String,
    /// `device_type`.
    pub device_type: String,
    /// 0–100.
    pub priority: i64,
    /// Where it is.
    pub state: JobState,
    /// How it ended.
    pub health: JobHealth,
    /// The board it ran on.
    pub board: Option<String>,
    /// Submitted at.
    pub submitted: Millis,
    /// Started at.
    pub started: Option<Millis>,
    /// Finished at.
    pub ended: Option<Millis>,
    /// `InfrastructureError`, `JobError`, `TestError`, `Canceled`, `LAVATimeout`, `Bug`…
    pub error_type: Option<String>,
    /// The error's message.
    pub error: Option<String>,
    /// The submitted YAML.
    #[serde(skip)]
    pub yaml: String,
    /// The appliance that claimed the job (ran or runs it).
    pub appliance: Option<String>,
}

/// Filters of a job listing (all optional; newest first).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this health.
    pub health: Option<JobHealth>,
    /// Only jobs on this board.
    pub board: Option<String>,
    /// Only this device type.
    pub device_type: Option<String>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

/// What an agent is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WorkKind {
    /// `sh -c command`.
    Run {
        /// The command.
        command: String,
    },
    /// Download `url` to `path` on the board.
    Fetch {
        /// An http:// URL with a numeric address.
        url: String,
        /// Destination on the board.
        path: String,
    },
    /// Reboot the board.
    Reboot,
}

/// An agent work item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Work {
    /// Its number.
    pub id: WorkId,
    /// The board that runs it.
    pub board: String,
    /// The job it belongs to, if any.
    pub job: Option<JobId>,
    /// What to do.
    #[serde(flatten)]
    pub kind: WorkKind,
    /// Created at.
    pub created: Millis,
    /// Handed to the agent at.
    pub taken: Option<Millis>,
    /// Result reported at.
    pub done: Option<Millis>,
    /// Exit code reported.
    pub exit: Option<i32>,
    /// Standard output reported.
    pub stdout: Option<Vec<u8>>,
    /// Standard error reported.
    pub stderr: Option<Vec<u8>>,
}

/// An appliance as the shared database last heard of it ([`Store::heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplianceSeen {
    /// Its `name:`.
    pub name: String,
    /// Where its API answers, as it said in its last heartbeat.
    pub url: String,
    /// Its last heartbeat.
    pub seen: Millis,
    /// When it last started (its first heartbeat after a start).
    pub started: Millis,
}

/// A job [`Store::recover_lost`] finished because its appliance stopped heartbeating.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostJob {
    /// The job.
    pub job: JobId,
    /// The board it ran on.
    pub board: Option<String>,
    /// The appliance that was running it.
    pub appliance: String,
}

/// The appliance's storage.
pub trait Store: Send + Sync {
    // Boards.

    /// The board, if known.
    fn board(&self, id: &str) -> Result<Option<Board>>;
    /// Every board, by id.
    fn boards(&self) -> Result<Vec<Board>>;
    /// How many boards there are of each (state, health) present.
    fn board_counts(&self) -> Result<Vec<(BoardState, Health, i64)>>;
    /// Inserts the board or replaces every field of it but `powered`, `powered_at` and
    /// `reservation`.
    fn put_board(&self, board: &Board) -> Result<()>;
    /// Appends to the board's history.
    fn add_event(&self, board: &str, kind: &str, message: &str) -> Result<()>;
    /// The board's latest `limit` events, newest first.
    fn events(&self, board: &str, limit: usize) -> Result<Vec<BoardEvent>>;

    // Jobs.

    /// Queues a job; its id.
    fn insert_job(&self, job: &NewJob) -> Result<JobId>;
    /// The job, if known.
    fn job(&self, id: JobId) -> Result<Option<Job>>;
    /// Jobs matching `filter`, newest first.
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// How many jobs there are of each (state, health) present.
    fn job_counts(&self) -> Result<Vec<(JobState, JobHealth, i64)>>;
    /// Queued jobs in run order: priority high to low, then oldest first.
    fn queued_jobs(&self) -> Result<Vec<Job>>;
    /// In one transaction: the job becomes running on `board` (started now) and claimed by the
    /// board's appliance (its `appliance` copied to the job's), the board's state becomes `job`
    /// with `current_job` set. Fails (changing nothing) unless the job is queued and the board
    /// idle, not reserved and not powered off.
    fn start_job(&self, id: JobId, board: &str) -> Result<()>;
    /// Marks a running job `canceling`, or finishes a queued one as canceled at once; the job
    /// after the change.
    fn cancel_job(&self, id: JobId) -> Result<Option<Job>>;
    /// In one transaction: the job is finished with `health` and the error (ended now), and its
    /// board, if any, goes back to `idle` with no current job.
    fn finish_job(&self, id: JobId, health: JobHealth, error: Option<(&str, &str)>) -> Result<()>;
    /// At the start of `appliance`: every running or canceling job it claimed, or claimed by
    /// no appliance (jobs started before jobs recorded one), is finished incomplete with
    /// `InfrastructureError` / `message`; their boards go back to idle. Jobs of other
    /// appliances are left alone. The (job, board) pairs, by job.
    fn recover_interrupted(
        &self,
        appliance: &str,
        message: &str,
    ) -> Result<Vec<(JobId, Option<String>)>>;
    /// Running and canceling jobs claimed by `appliance`, by id (its owner polls this to
    /// notice a cancel made through another appliance).
    fn running_for(&self, appliance: &str) -> Result<Vec<Job>>;
    /// Appends log lines (each one line of `logs.yaml`); the number of the first, counting
    /// from 1 per job.
    fn append_log(&self, job: JobId, lines: &[String]) -> Result<i64>;
    /// The job's log lines numbered after `after` (0 for all), in order, at most `limit`.
    fn log_lines(&self, job: JobId, after: i64, limit: usize) -> Result<Vec<(i64, String)>>;
    /// Stores the job's `results.yaml`.
    fn put_results(&self, job: JobId, yaml: &str) -> Result<()>;
    /// The job's `results.yaml`, if stored.
    fn results(&self, job: JobId) -> Result<Option<String>>;

    // Agent work.

    /// Queues work for a board's agent; its id.
    fn add_work(&self, board: &str, job: Option<JobId>, kind: &WorkKind) -> Result<WorkId>;
    /// The board's oldest work not yet handed out, marked taken now.
    fn take_work(&self, board: &str) -> Result<Option<Work>>;
    /// Records the agent's report of `id` (only for work of `board`); false if there was none.
    fn finish_work(
        &self,
        board: &str,
        id: WorkId,
        exit: i32,
        stdout: &[u8],
        stderr: &[u8],
    ) -> Result<bool>;
    /// The work item, if known.
    fn work(&self, id: WorkId) -> Result<Option<Work>>;
    /// Drops the board's work not yet reported (a reboot or restart ends it); how many.
    fn drop_pending_work(&self, board: &str) -> Result<usize>;

    // Power and reservations (`put_board` never changes them).

    /// Records the board's power as `powered` (now).
    fn set_powered(&self, board: &str, powered: Powered) -> Result<()>;
    /// In one transaction: records the board as powered off (now) if it is idle, not reserved
    /// and no job of its device type is queued; whether it did.
    fn mark_off_if_unused(&self, board: &str) -> Result<bool>;
    /// In one transaction: reserves the board if it is idle and not reserved; whether it did.
    fn reserve(&self, board: &str, reservation: &Reservation) -> Result<bool>;
    /// Replaces the boot request of the board's reservation; false if it has none.
    fn set_reservation_boot(&self, board: &str, boot: Option<&serde_json::Value>) -> Result<bool>;
    /// Ends the board's reservation; what it was, if it had one.
    fn end_reservation(&self, board: &str) -> Result<Option<Reservation>>;

    // Appliances sharing the database.

    /// Records that appliance `name` is alive and its API answers at `url`: `seen` becomes
    /// now, and `started` too when the appliance is new or `starting` (its first heartbeat
    /// after a start). PostgreSQL takes "now" from the database server's clock, so appliances
    /// on hosts whose clocks disagree still agree on who is lost.
    fn heartbeat(&self, name: &str, url: &str, starting: bool) -> Result<()>;
    /// Every appliance that ever sent a heartbeat, by name.
    fn appliances(&self) -> Result<Vec<ApplianceSeen>>;
    /// In one transaction, for every appliance but `me` whose last heartbeat is older than
    /// `lease_ms` (on the clock [`Store::heartbeat`] uses): each of its running or canceling
    /// jobs is finished incomplete (`InfrastructureError`, "appliance NAME lost", ended now),
    /// and the boards it serves become `offline`, `idle` (unless in maintenance) with no
    /// current job. The jobs it finished, by appliance then job. Several appliances may run
    /// this at once: each job is finished by one of them, and a second call finds nothing.
    /// An appliance that heartbeats again is no longer lost.
    fn recover_lost(&self, me: &str, lease_ms: Millis) -> Result<Vec<LostJob>>;
}

/// Why job `job` cannot start on `board` now (`None`: it can): the rule both backends check
/// inside `start_job`'s transaction, once they hold the two rows.
pub fn start_refusal(job: &Job, board: &Board) -> Option<String> {
    job_refusal(job).or_else(|| board_refusal(board))
}

/// Why `job` cannot start at all: it is not queued.
pub fn job_refusal(job: &Job) -> Option<String> {
    use names::SqlName;
    (job.state != JobState::Queued)
        .then(|| format!("job {} is {}, not queued", job.id, job.state.sql_name()))
}

/// Why `board` cannot take a job: busy, reserved or powered off.
pub fn board_refusal(board: &Board) -> Option<String> {
    use names::SqlName;
    if board.state != BoardState::Idle {
        return Some(format!(
            "board '{}' is {}, not idle",
            board.id,
            board.state.sql_name()
        ));
    }
    if board.reservation.is_some() {
        return Some(format!("board '{}' is reserved", board.id));
    }
    if board.power_now() == Powered::Off {
        return Some(format!("board '{}' is powered off", board.id));
    }
    None
}

/// Opens the store a `database:` URL names: `sqlite:PATH` (relative to `state_dir`), or
/// `postgres://…` / `postgresql://…` (a PostgreSQL database, migrated on open). Errors name the
/// URL without its password.
pub fn open(url: &str, state_dir: &std::path::Path) -> Result<Box<dyn Store>> {
    if postgres::is_postgres_url(url) {
        return Ok(Box::new(postgres::PostgresStore::connect(url)?));
    }
    match url.split_once(':') {
        Some(("sqlite", path)) => {
            let path = state_dir.join(path);
            Ok(Box::new(sqlite::SqliteStore::open(&path)?))
        }
        _ => Err(StoreError(format!(
            "'{}' is not a supported URL (sqlite:PATH, postgres://…)",
            postgres::redact(url)
        ))),
    }
}
