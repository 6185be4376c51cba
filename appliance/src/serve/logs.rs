//! Job logs into the store as they come: the dispatcher's log writer copies each record (one
//! `logs.yaml` line) here; a writer thread commits them in batches and wakes the live streams.

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;

use super::App;
use crate::store::JobId;

/// A `Write` for [`dispatcher::logs::LogWriter::with_records`]: complete lines go to the
/// store through a thread of their own, so the job never waits for a commit.
pub struct DbSink {
    partial: Vec<u8>,
    tx: Option<mpsc::Sender<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DbSink {
    /// A sink for `job`'s lines.
    pub fn new(app: Arc<App>, job: JobId) -> DbSink {
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::Builder::new()
            .name(format!("log-{job}"))
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                        if batch.len() >= 1000 {
                            break;
                        }
                    }
                    if let Err(e) = app.store.append_log(job, &batch) {
                        tracing::error!(job, "job log: {e}");
                    }
                    let _ = app.log_events.send(job);
                }
            })
            .ok();
        DbSink {
            partial: Vec::new(),
            tx: Some(tx),
            thread,
        }
    }

    /// Flushes the last partial line and waits until every line is committed.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            if let Some(tx) = &self.tx {
                let _ = tx.send(line);
            }
        }
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Write for DbSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if let Some(tx) = &self.tx {
                let _ = tx.send(text);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for DbSink {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A [`DbSink`] shared between the job's log writer and the runner, which finishes it (every
/// line committed) before it marks the job finished.
#[derive(Clone)]
pub struct SharedSink(pub Arc<std::sync::Mutex<DbSink>>);

impl SharedSink {
    /// A shared sink for `job`.
    pub fn new(app: Arc<App>, job: JobId) -> SharedSink {
        SharedSink(Arc::new(std::sync::Mutex::new(DbSink::new(app, job))))
    }

    /// Commits every line written so far; later lines are dropped.
    pub fn finish(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.finish();
        }
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut s) => s.write(buf),
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `logs.yaml` error line the appliance itself writes into a job's log (a job ended by a
/// restart or by a lost appliance): `- {"dt": …, "lvl": "error", "msg": "…"}`.
pub fn error_line(message: &str) -> String {
    let dt = super::api::views::rfc3339(crate::store::now_ms());
    format!(
        "- {{\"dt\": \"{}\", \"lvl\": \"error\", \"msg\": {}}}",
        dt.trim_end_matches('Z'),
        serde_json::Value::String(message.to_string())
    )
}
