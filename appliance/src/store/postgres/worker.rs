//! The store's connection threads.
//!
//! The synchronous `postgres::Client` drives a tokio runtime of its own and panics when it is
//! used on a thread that is inside another runtime, which is where the appliance calls its store
//! from. So each connection lives on a dedicated std thread ([`Pool`]): a call sends a boxed
//! closure down a channel, one of the threads runs it on its [`Session`] and sends the answer
//! back, and the caller waits for it on a std channel, whatever thread it is on.
//!
//! A thread connects on its first call and again after its connection was lost. A call whose
//! connection was lost before its transaction committed runs again on a new connection (nothing
//! of it was committed); one that lost it while committing says that the outcome is unknown.
//! A transaction PostgreSQL chose as a deadlock or serialization victim runs again too.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, NoTls, Row, Statement};

use super::error::{error_text, Fail};

/// A connection idle this long is checked (an empty query) before a call uses it, so a server
/// restart or an idle connection dropped by the network costs a reconnect, not a failed call.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// How long that check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a call runs at most (connection lost before commit, deadlock victim).
const ATTEMPTS: u32 = 3;

/// How long a statement waits for a row or table lock before failing (SQLite's busy timeout).
const LOCK_TIMEOUT_MS: u32 = 10_000;

/// A parameter of a statement.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// Where the threads connect.
pub(crate) struct Target {
    /// The parsed URL.
    pub config: Config,
}

/// One connection and the statements prepared on it.
struct Live {
    /// The connection.
    client: Client,
    /// Statements prepared on it, by their SQL.
    statements: HashMap<String, Statement>,
    /// When a call last used it (an idle one is checked first).
    last_used: Instant,
}

/// A thread's connection, made when a call needs it.
pub(crate) struct Session {
    /// Where to connect.
    target: Arc<Target>,
    /// The connection, if there is one.
    live: Option<Live>,
}

/// What a call's closure uses: the connection, with statements prepared once per connection.
pub(crate) struct Sql<'a> {
    /// The session's connection.
    live: &'a mut Live,
}

impl Sql<'_> {
    /// The statement for `sql`, prepared on this connection the first time.
    fn statement(&mut self, sql: &str) -> Result<Statement, Fail> {
        if let Some(statement) = self.live.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.live.client.prepare(sql)?;
        self.live
            .statements
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// The rows of `sql`.
    pub(crate) fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, Fail> {
        let statement = self.statement(sql)?;
        Ok(self.live.client.query(&statement, params)?)
    }

    /// The row of `sql`, if it returned one (an error if it returned more).
    pub(crate) fn query_opt(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, Fail> {
        let statement = self.statement(sql)?;
        Ok(self.live.client.query_opt(&statement, params)?)
    }

    /// The one row of `sql` (an error if it returned none or more).
    pub(crate) fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, Fail> {
        let statement = self.statement(sql)?;
        Ok(self.live.client.query_one(&statement, params)?)
    }

    /// Runs `sql`; the number of rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, Fail> {
        let statement = self.statement(sql)?;
        Ok(self.live.client.execute(&statement, params)?)
    }

    /// Runs statements without parameters (a migration's DDL), not prepared.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), Fail> {
        Ok(self.live.client.batch_execute(sql)?)
    }
}

/// Whether a call may run again after `fail`: the connection is gone (nothing was committed), or
/// PostgreSQL rolled the transaction back to break a deadlock or a serialization conflict.
fn may_retry(fail: &Fail, closed: bool) -> bool {
    closed
        || fail.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

impl Session {
    /// A session that connects to `target` when a call needs it.
    fn new(target: Arc<Target>) -> Session {
        Session { target, live: None }
    }

    /// The connection, made (again) if there is none, it was closed or it fails its check.
    fn live(&mut self) -> Result<&mut Live, Fail> {
        let usable = match &mut self.live {
            Some(live) if live.client.is_closed() => false,
            Some(live) if live.last_used.elapsed() > IDLE_CHECK => {
                live.client.is_valid(CHECK_TIMEOUT).is_ok()
            }
            Some(_) => true,
            None => false,
        };
        if !usable {
            self.live = None;
            let mut client = self
                .target
                .config
                .connect(NoTls)
                .map_err(|e| Fail::Connect(error_text(&e)))?;
            client
                .batch_execute(&format!("SET lock_timeout = {LOCK_TIMEOUT_MS}"))
                .map_err(|e| Fail::Connect(format!("set lock_timeout: {}", error_text(&e))))?;
            self.live = Some(Live {
                client,
                statements: HashMap::new(),
                last_used: Instant::now(),
            });
        }
        match &mut self.live {
            Some(live) => {
                live.last_used = Instant::now();
                Ok(live)
            }
            None => Err(Fail::Connect("no connection".to_string())),
        }
    }

    /// After a failed call: forgets a closed connection, and the prepared statements of an open
    /// one when a statement failed (it may have failed because the schema changed under it);
    /// whether the connection was closed.
    fn after_failure(&mut self, fail: &Fail) -> bool {
        let closed = match &mut self.live {
            Some(live) => {
                if matches!(fail, Fail::Sql(_)) {
                    live.statements.clear();
                }
                live.client.is_closed()
            }
            None => true,
        };
        if closed {
            self.live = None;
        }
        closed
    }

    /// Forgets the connection (a panic may have left it inside a transaction).
    fn forget(&mut self) {
        self.live = None;
    }

    /// Runs `f` outside a transaction (reads of one statement each), again on a new
    /// connection if the connection was lost.
    pub(crate) fn read<T>(
        &mut self,
        mut f: impl FnMut(&mut Sql<'_>) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let mut attempt = 1;
        loop {
            let live = self.live()?;
            match f(&mut Sql { live }) {
                Ok(value) => return Ok(value),
                Err(fail) => {
                    let closed = self.after_failure(&fail);
                    if attempt < ATTEMPTS && matches!(fail, Fail::Sql(_)) && closed {
                        attempt += 1;
                        continue;
                    }
                    return Err(fail);
                }
            }
        }
    }

    /// Runs `f` in one transaction, committed if `f` succeeds and rolled back otherwise; again
    /// (from the start) if the connection was lost before the commit or PostgreSQL chose the
    /// transaction as a deadlock or serialization victim.
    pub(crate) fn write<T>(
        &mut self,
        mut f: impl FnMut(&mut Sql<'_>) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let mut attempt = 1;
        loop {
            let live = self.live()?;
            let mut sql = Sql { live };
            let result = sql.batch("BEGIN").and_then(|()| f(&mut sql));
            let fail = match result {
                Ok(value) => match sql.live.client.batch_execute("COMMIT") {
                    Ok(()) => return Ok(value),
                    Err(e) if e.as_db_error().is_none() => {
                        // The server did not answer: it may or may not have committed.
                        let fail = Fail::Lost(format!(
                            "the connection failed while committing, so the change may or may \
                             not have been saved: {}",
                            error_text(&e)
                        ));
                        self.after_failure(&fail);
                        return Err(fail);
                    }
                    // The server refused the commit (and rolled back).
                    Err(e) => Fail::Sql(e),
                },
                Err(fail) => {
                    // Nothing is lost if this fails: a connection in doubt is dropped below.
                    let _ = sql.live.client.batch_execute("ROLLBACK");
                    fail
                }
            };
            let closed = self.after_failure(&fail);
            if attempt < ATTEMPTS && matches!(fail, Fail::Sql(_)) && may_retry(&fail, closed) {
                attempt += 1;
                continue;
            }
            return Err(fail);
        }
    }
}

/// A call as the threads run it.
type Task = Box<dyn FnOnce(&mut Session) + Send>;

/// The connection threads of one store.
pub(crate) struct Pool {
    /// Where calls go (`None` once the pool is being dropped).
    sender: Option<Sender<Task>>,
    /// The threads, joined on drop.
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `size` threads (at least one) that connect to `target` when a call needs it.
    pub(crate) fn start(target: Arc<Target>, size: usize) -> Result<Pool, String> {
        let (sender, receiver) = mpsc::channel::<Task>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut pool = Pool {
            sender: Some(sender),
            threads: Vec::new(),
        };
        for n in 0..size.max(1) {
            let receiver = Arc::clone(&receiver);
            let target = Arc::clone(&target);
            let thread = std::thread::Builder::new()
                .name(format!("labboot-pg-{n}"))
                .spawn(move || serve(&receiver, Session::new(target)))
                .map_err(|e| format!("start a connection thread: {e}"))?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Runs `task` on one of the threads and waits for its answer (from any thread, a tokio
    /// worker included).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        task: impl FnOnce(&mut Session) -> Result<T, Fail> + Send + 'static,
    ) -> Result<T, Fail> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| Fail::Lost("the store is closed".to_string()))?;
        sender
            .send(Box::new(move |session: &mut Session| {
                // The caller is waiting; it cannot have gone.
                let _ = reply.send(task(session));
            }))
            .map_err(|_| Fail::Lost("the store's connection threads have stopped".to_string()))?;
        answer.recv().map_err(|_| {
            Fail::Lost(
                "the connection thread panicked during the call, so the change may or may not \
                 have been saved"
                    .to_string(),
            )
        })?
    }
}

impl Drop for Pool {
    /// Stops the threads once they have answered the calls already sent, and closes their
    /// connections.
    fn drop(&mut self) {
        drop(self.sender.take());
        for thread in self.threads.drain(..) {
            // A thread only ends by a closed channel; a panic was caught in `serve`.
            let _ = thread.join();
        }
    }
}

/// A connection thread: runs calls until the store is dropped. A call that panics loses its
/// answer (the caller gets an error) and the connection, not the thread.
fn serve(receiver: &Mutex<Receiver<Task>>, mut session: Session) {
    loop {
        let task = {
            // A panic cannot happen while the lock is held (only `recv` runs under it).
            let receiver = receiver
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            receiver.recv()
        };
        let Ok(task) = task else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| task(&mut session))).is_err() {
            session.forget();
        }
    }
}
