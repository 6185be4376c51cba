//! The boards' consoles, owned by the appliance: each configured board's serial line is kept
//! open all the time by a keeper thread, which reads it into the board's [`ConsoleHub`] (for
//! people, through the API) and its rotating log ([`log`]), writes what the hub's writer
//! sends, and opens the line again when it drops (backoff 1 s → 10 s).
//!
//! A job does not open the line itself: the runner attaches the job to its board
//! ([`Consoles::attach_job`], which takes the hub's write side as `job <id>` for the whole run)
//! and the dispatcher's `LabServices::console` gets a port on the hub
//! ([`crate::lab::ConsoleProvider`]): it reads everything from its opening on and writes with
//! the job's writer. People can still read meanwhile, not write.
//!
//! The line of a board is its `console:` in the config ([`source::Source`]: a command, raw
//! TCP or a tty), by default the device's `connection_command`. A command's processes carry
//! an environment marker, so the ones a SIGKILLed appliance left behind are killed before the
//! line is opened again.

pub mod hub;
pub mod log;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use dispatcher::services::{Chunk, ConsolePort};

pub use hub::{ConsoleHub, ConsoleWriter};
use log::{ConsoleLog, LogSettings};
use source::{Line, Source};

use super::config::{ApplianceConfig, ConsoleConfig};
use super::registry::Registry;

/// First wait before a dropped line is opened again.
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that lasted this long starts the backoff over.
const STABLE: Duration = Duration::from_secs(10);
/// How often a keeper looks up from a quiet line (stop, the command's exit).
const POLL: Duration = Duration::from_millis(200);

/// Every board's console: board id → hub, the keepers, the jobs attached.
#[derive(Clone)]
pub struct Consoles {
    inner: Arc<Inner>,
}

struct Inner {
    boards: BTreeMap<String, (Arc<ConsoleHub>, Source)>,
    dir: PathBuf,
    settings: LogSettings,
    stop: Stop,
    keepers: Mutex<Vec<JoinHandle<()>>>,
    jobs: Mutex<HashMap<String, Attached>>,
}

struct Attached {
    hub: Arc<ConsoleHub>,
    writer: Arc<ConsoleWriter>,
    source: String,
}

#[derive(Default)]
struct Stop {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Stop {
    fn stopped(&self) -> bool {
        *self.flag.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps `d` unless stopped meanwhile; whether it was.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.flag.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    fn set(&self) {
        *self.flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }
}

impl Consoles {
    /// Consoles for `boards` (id, line), logging into `dir`; not started.
    pub fn new(boards: Vec<(String, Source)>, dir: PathBuf, settings: LogSettings) -> Consoles {
        Consoles {
            inner: Arc::new(Inner {
                boards: boards
                    .into_iter()
                    .map(|(id, s)| {
                        let hub = Arc::new(ConsoleHub::new(&id));
                        (id, (hub, s))
                    })
                    .collect(),
                dir,
                settings,
                stop: Stop::default(),
                keepers: Mutex::new(Vec::new()),
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The consoles of the config's boards: each board's `console:`, else its device's
    /// `connection_command` (a board with neither has no console here); logs under
    /// `<state_dir>/consoles`.
    pub fn from_config(config: &ApplianceConfig, registry: &Registry) -> Consoles {
        let mut boards = Vec::new();
        for b in &config.boards {
            let source = match &b.console {
                Some(c) => Some(source_of(c)),
                None => match registry.device(&b.id, &Default::default()) {
                    Ok(dev) => dev.connection_command.map(Source::Command),
                    Err(e) => {
                        tracing::warn!(board = %b.id, "console: cannot render the device: {e}");
                        None
                    }
                },
            };
            match source {
                Some(s) => boards.push((b.id.clone(), s)),
                None => tracing::info!(
                    board = %b.id,
                    "console: none (no console: and no connection_command); jobs open their own"
                ),
            }
        }
        let settings = config
            .consoles
            .as_ref()
            .map(|c| LogSettings {
                max_bytes: c.log_max_bytes,
                keep: c.log_keep,
            })
            .unwrap_or_default();
        Consoles::new(boards, config.state_dir.join("consoles"), settings)
    }

    /// The console of `board`, if the appliance keeps one.
    pub fn get(&self, board: &str) -> Option<Arc<ConsoleHub>> {
        self.inner.boards.get(board).map(|(h, _)| Arc::clone(h))
    }

    /// The boards that have a console, sorted.
    pub fn boards(&self) -> Vec<String> {
        self.inner.boards.keys().cloned().collect()
    }

    /// Where `board`'s line comes from.
    pub fn source(&self, board: &str) -> Option<&Source> {
        self.inner.boards.get(board).map(|(_, s)| s)
    }

    /// The current log file of `board` (rotated ones add `.1` … `.N`).
    pub fn log_path(&self, board: &str) -> PathBuf {
        log::log_path(&self.inner.dir, board)
    }

    /// Starts one keeper thread per board.
    pub fn start(&self) -> anyhow::Result<()> {
        let mut keepers = self.inner.keepers.lock().unwrap_or_else(|p| p.into_inner());
        if !keepers.is_empty() {
            return Ok(());
        }
        for (board, (hub, source)) in &self.inner.boards {
            let (hub, source, me) = (Arc::clone(hub), source.clone(), self.clone());
            let t = std::thread::Builder::new()
                .name(format!("console-{board}"))
                .spawn(move || me.keep(&hub, &source))
                .map_err(|e| anyhow::anyhow!("console of {board}: cannot start its thread: {e}"))?;
            keepers.push(t);
        }
        Ok(())
    }

    /// Stops the keepers (a command's whole process group is killed), waits for them, and
    /// closes the hubs: subscribers see the end. Blocking.
    pub fn stop(&self) {
        self.inner.stop.set();
        let keepers =
            std::mem::take(&mut *self.inner.keepers.lock().unwrap_or_else(|p| p.into_inner()));
        for k in keepers {
            let _ = k.join();
        }
        for (hub, _) in self.inner.boards.values() {
            hub.close();
        }
    }

    /// Lends `board`'s console to job `job_id` until the guard drops: the write side is taken
    /// as `job <id>` (over whoever held it) and the job's `LabServices::console` reads and
    /// writes through the hub. None when the appliance keeps no console for the board.
    pub fn attach_job(&self, job_id: &str, board: &str) -> Option<JobConsole> {
        let (hub, source) = self.inner.boards.get(board)?;
        let (writer, previous) = hub.take_writer_over(&format!("job {job_id}"));
        if let Some(p) = &previous {
            tracing::warn!(board, job = job_id, "console: write side taken from {p}");
        }
        self.jobs().insert(
            job_id.to_string(),
            Attached {
                hub: Arc::clone(hub),
                writer: Arc::new(writer),
                source: source.to_string(),
            },
        );
        Some(JobConsole {
            consoles: self.clone(),
            job_id: job_id.to_string(),
            took_over: previous,
        })
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<String, Attached>> {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A board's keeper: open, pump, and open again, until stopped.
    fn keep(&self, hub: &Arc<ConsoleHub>, source: &Source) {
        let board = hub.board();
        let owner = self.log_path(board).to_string_lossy().into_owned();
        let stale = source::kill_stale(&owner);
        if stale > 0 {
            tracing::warn!(
                board,
                "console: killed {stale} process(es) a previous run left"
            );
        }
        let mut log = Logger::open(&self.inner.dir, board, self.inner.settings);
        let stop = &self.inner.stop;
        let mut backoff = MIN_BACKOFF;
        let mut opened = false;
        let mut failing = false;
        while !stop.stopped() {
            match source.open(&owner) {
                Ok(line) => {
                    failing = false;
                    let msg = if opened {
                        let n = hub.count_reconnect();
                        format!("console connected again ({source}), reconnect {n}")
                    } else {
                        format!("console connected ({source})")
                    };
                    opened = true;
                    tracing::info!(board, "{msg}");
                    log.note(&msg);
                    let since = Instant::now();
                    let Some(why) = pump(hub, line, &mut log, stop) else {
                        log.note("console closed: the appliance stops");
                        break;
                    };
                    if since.elapsed() >= STABLE {
                        backoff = MIN_BACKOFF;
                    }
                    let msg = format!(
                        "console dropped: {why}; reconnecting in {} s",
                        backoff.as_secs()
                    );
                    tracing::warn!(board, "{msg}");
                    log.note(&msg);
                }
                Err(e) => {
                    let msg = format!(
                        "console: cannot open {source}: {e}; retrying in {} s",
                        backoff.as_secs()
                    );
                    // Once per run of failures, in the log; every time at debug level.
                    if !failing {
                        tracing::warn!(board, "{msg}");
                        log.note(&msg);
                    } else {
                        tracing::debug!(board, "{msg}");
                    }
                    failing = true;
                }
            }
            if stop.sleep(backoff) {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        hub.set_line(None);
    }
}

fn source_of(c: &ConsoleConfig) -> Source {
    match (&c.command, &c.tcp, &c.tty) {
        (Some(cmd), _, _) => Source::Command(cmd.clone()),
        (_, Some(addr), _) => Source::Tcp(addr.clone()),
        (_, _, Some(t)) => Source::Tty {
            path: t.path.clone(),
            baud: t.baud,
        },
        // The config's check refuses a console: with none of them.
        (None, None, None) => Source::Command(String::from("false")),
    }
}

/// The console log, or nothing after it failed (said once).
struct Logger {
    board: String,
    log: Option<ConsoleLog>,
}

impl Logger {
    fn open(dir: &Path, board: &str, settings: LogSettings) -> Logger {
        let log = ConsoleLog::open(dir, board, settings)
            .map_err(|e| {
                tracing::error!(
                    board,
                    "console: cannot open its log in {}: {e}",
                    dir.display()
                )
            })
            .ok();
        Logger {
            board: board.to_string(),
            log,
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        tracing::error!(board = %self.board, "console: its log stops: {e}");
        self.log = None;
    }

    fn write(&mut self, data: &[u8]) {
        if let Some(Err(e)) = self.log.as_mut().map(|l| l.write(data, SystemTime::now())) {
            self.fail(e);
        }
    }

    fn note(&mut self, text: &str) {
        if let Some(Err(e)) = self.log.as_mut().map(|l| l.note(text, SystemTime::now())) {
            self.fail(e);
        }
    }
}

/// Moves one connection's bytes until it drops (why) or the appliance stops (None).
fn pump(hub: &ConsoleHub, mut line: Line, log: &mut Logger, stop: &Stop) -> Option<String> {
    let (tx, rx) = mpsc::channel::<Bytes>();
    if let Some(mut w) = line.writer.take() {
        let spawned = std::thread::Builder::new()
            .name(format!("console-w-{}", hub.board()))
            .spawn(move || {
                use std::io::Write;
                for bytes in rx {
                    if w.write_all(&bytes).and_then(|()| w.flush()).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            line.close();
            return Some(format!("cannot start its writer thread: {e}"));
        }
    }
    hub.set_line(Some(tx));
    let mut buf = vec![0u8; 16 * 1024];
    let mut take = |line: &mut Line, log: &mut Logger| -> std::io::Result<usize> {
        let n = line.reader.read(&mut buf)?;
        log.write(&buf[..n]);
        hub.publish(&buf[..n]);
        Ok(n)
    };
    let why = loop {
        if stop.stopped() {
            break None;
        }
        match source::readable(&line.reader, POLL) {
            Err(e) => break Some(format!("poll: {e}")),
            Ok(false) => {
                if let Some(status) = line.exited() {
                    // What it wrote before it ended, if nothing else holds its output open.
                    while matches!(source::readable(&line.reader, Duration::ZERO), Ok(true))
                        && matches!(take(&mut line, log), Ok(n) if n > 0)
                    {}
                    break Some(format!("the command ended ({status})"));
                }
            }
            Ok(true) => match take(&mut line, log) {
                Ok(0) => {
                    // A command's end usually comes with its output's: say how it ended.
                    let deadline = Instant::now() + Duration::from_millis(300);
                    let status = loop {
                        match line.exited() {
                            Some(s) => break Some(s),
                            None if Instant::now() < deadline => {
                                std::thread::sleep(Duration::from_millis(10))
                            }
                            None => break None,
                        }
                    };
                    break Some(match status {
                        Some(s) => format!("the command ended ({s})"),
                        None => "end of file".to_string(),
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => break Some(format!("read: {e}")),
            },
        }
    };
    hub.set_line(None);
    line.close();
    why
}

/// A job's hold on its board's console; lets go (write side included) when dropped.
pub struct JobConsole {
    consoles: Consoles,
    job_id: String,
    took_over: Option<String>,
}

impl JobConsole {
    /// Who held the write side before the job took it, if anyone.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
    }
}

impl Drop for JobConsole {
    fn drop(&mut self) {
        self.consoles.jobs().remove(&self.job_id);
    }
}

impl crate::lab::ConsoleProvider for Consoles {
    fn console(&self, job_id: &str) -> Option<dispatcher::Result<Box<dyn ConsolePort>>> {
        let jobs = self.jobs();
        let a = jobs.get(job_id)?;
        Some(Ok(Box::new(HubPort {
            board: a.hub.board().to_string(),
            source: a.source.clone(),
            tap: Some(a.hub.tap()),
            writer: Arc::clone(&a.writer),
        })))
    }
}

/// The dispatcher's view of a hub: a tap from its opening on, the job's writer.
struct HubPort {
    board: String,
    source: String,
    tap: Option<mpsc::Receiver<Bytes>>,
    writer: Arc<ConsoleWriter>,
}

impl ConsolePort for HubPort {
    fn describe(&self) -> String {
        format!(
            "board {}'s console ({}), kept by labboot serve",
            self.board, self.source
        )
    }

    fn read(&mut self, until: Instant) -> Chunk {
        let Some(tap) = &self.tap else {
            return Chunk::Closed;
        };
        match tap.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(b) => Chunk::Data(b.to_vec()),
            Err(mpsc::RecvTimeoutError::Timeout) => Chunk::Idle,
            Err(mpsc::RecvTimeoutError::Disconnected) => Chunk::Closed,
        }
    }

    fn write(&mut self, bytes: &[u8]) -> dispatcher::Result<()> {
        self.writer
            .write(bytes)
            .map_err(|e| dispatcher::Error::infra(e.to_string()))
    }

    fn close(&mut self) {
        self.tap = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::ConsoleProvider;

    fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_dropping_command_is_reopened_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo line one; echo line two; exit 3";
        let c = Consoles::new(
            vec![("b1".into(), Source::Command(script.into()))],
            dir.path().join("consoles"),
            LogSettings::default(),
        );
        c.start().unwrap();
        let hub = c.get("b1").unwrap();
        wait_until("two reconnects", Duration::from_secs(15), || {
            hub.reconnects() >= 2
        });
        c.stop();
        assert!(!hub.connected());
        let text = std::fs::read_to_string(c.log_path("b1")).unwrap();
        assert!(text.matches(" line one\n").count() >= 3, "{text}");
        assert!(
            text.contains(
                "[labboot] console connected (command 'echo line one; echo line two; exit 3')"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "console dropped: the command ended (exit status: 3); reconnecting in 1 s"
            ),
            "{text}"
        );
        assert!(text.contains("reconnect 2"), "{text}");
        assert!(text.contains("[labboot] console"), "{text}");
    }

    #[test]
    fn a_job_reads_and_writes_through_the_hub_and_people_only_read() {
        let dir = tempfile::tempdir().unwrap();
        // A line that echoes what it is sent, upper-cased.
        let c = Consoles::new(
            vec![(
                "b1".into(),
                Source::Command(
                    r#"while read -r l; do printf '%s\n' "$l" | tr a-z A-Z; done"#.into(),
                ),
            )],
            dir.path().join("consoles"),
            LogSettings::default(),
        );
        c.start().unwrap();
        let hub = c.get("b1").unwrap();
        wait_until("connected", Duration::from_secs(5), || hub.connected());
        let person = hub.take_writer("http.tokens[0] via websocket").unwrap();
        let (_, mut people) = hub.subscribe();

        assert!(c.console("7").is_none(), "no job attached");
        let job = c.attach_job("7", "b1").unwrap();
        assert_eq!(job.took_over(), Some("http.tokens[0] via websocket"));
        assert_eq!(hub.writer().as_deref(), Some("job 7"));
        assert!(person.write(b"nope\n").is_err());
        assert!(hub.take_writer("http.tokens[1]").is_err());
        let mut conn = dispatcher::console::connection::Connection::from_port(
            c.console("7").unwrap().unwrap(),
        );
        assert!(
            conn.command().contains("board b1's console"),
            "{}",
            conn.command()
        );
        conn.send("hello\n", Duration::ZERO).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !got.ends_with(b"HELLO\n") {
            match conn.read(deadline) {
                Chunk::Data(d) => got.extend(d),
                other => panic!("{other:?} after {got:?}"),
            }
        }
        // People saw it too.
        let mut seen = Vec::new();
        while !seen.ends_with(b"HELLO\n") {
            seen.extend(people.try_recv().expect("people see the job's console"));
        }
        conn.close();
        drop(conn);
        drop(job);
        assert_eq!(hub.writer(), None, "released at the job's end");
        assert!(c.console("7").is_none());
        drop(person);
        let w = hub.take_writer("http.tokens[0] via websocket").unwrap();
        w.write(b"again\n").unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"AGAIN\n") {
            seen.extend(people.blocking_recv().expect("the person's line"));
        }
        c.stop();
        assert!(w.write(b"x").is_err(), "stopped");
        assert!(matches!(
            people.blocking_recv(),
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        ));
        let text = std::fs::read_to_string(c.log_path("b1")).unwrap();
        assert!(
            text.contains("Z HELLO\n") && text.contains("Z AGAIN\n"),
            "{text}"
        );
        assert!(c.attach_job("8", "nope").is_none());
    }
}
