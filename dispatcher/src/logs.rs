//! The job log: `logs.yaml` in LAVA's line format, mirrored in a human format.
//!
//! LAVA's tools read `logs.yaml` line by line, so every record is one line, a YAML flow
//! mapping with double-quoted strings:
//!
//! ```text
//! - {"dt": "2026-12-04T10:00:00.123456", "lvl": "info", "msg": "start: 1 tftp-deploy"}
//! - {"dt": "2026-12-04T10:00:09.000001", "lvl": "target", "msg": "U-Boot 2024.01"}
//! - {"dt": "2026-12-04T10:01:00.000000", "lvl": "results", "msg": {"case": "job", "definition": "lava", "result": "pass"}}
//! ```
//!
//! Strings are JSON-quoted, and additionally every character YAML does not allow raw in a
//! double-quoted scalar (DEL, C1 controls, U+2028/9, BOM, U+FFFE/F) is escaped, so board
//! console bytes can never break the file. Each line is written and flushed on its own, so a
//! crash loses at most the line being written; a line over LAVA's 100 000-character limit is
//! replaced as LAVA does. The same record goes to an optional sink (stdout) as
//! `10:00:00.123 info     message`. [`LogWriter`] is a cheap `Clone` handle around a mutex:
//! the console reader and the action runner can log from different threads.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::error::{Error, Result};

/// LAVA's line length limit, beyond which the message is replaced.
const MAX_LINE: usize = 100_000;

/// The log levels LAVA writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Details for debugging the dispatcher.
    Debug,
    /// Progress of the job.
    Info,
    /// Something odd that did not fail the job.
    Warning,
    /// A failure.
    Error,
    /// A dispatcher defect (a traceback in LAVA).
    Exception,
    /// One line of the board's console output.
    Target,
    /// What was typed on the board's console.
    Input,
    /// Output of another namespace's console (MultiNode feedback).
    Feedback,
    /// A test result (the message is a mapping).
    Results,
    /// A test event (`lava-test-event`).
    Event,
}

impl Level {
    /// The level's name as LAVA writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Exception => "exception",
            Level::Target => "target",
            Level::Input => "input",
            Level::Feedback => "feedback",
            Level::Results => "results",
            Level::Event => "event",
        }
    }
}

/// Where the records go.
struct Inner {
    file: Option<File>,
    sink: Option<Box<dyn Write + Send>>,
    records: Option<Box<dyn Write + Send>>,
    lines: u64,
    secrets: Vec<String>,
    error: Option<String>,
}

/// A thread-safe handle on the job log; clones write to the same file.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("lines", &self.lines())
            .finish()
    }
}

impl LogWriter {
    /// A log writing `path` (created or truncated), mirrored to `sink` (e.g. stdout) if given.
    pub fn create(path: &Path, sink: Option<Box<dyn Write + Send>>) -> Result<LogWriter> {
        let file = File::create(path)
            .map_err(|e| Error::infra(format!("create the job log {}: {e}", path.display())))?;
        let log = LogWriter::with_file(Some(file));
        log.lock().sink = sink;
        Ok(log)
    }

    /// A log that writes no file (tests, `--validate`); a sink may still be set.
    pub fn discard() -> LogWriter {
        LogWriter::with_file(None)
    }

    fn with_file(file: Option<File>) -> LogWriter {
        LogWriter {
            inner: Arc::new(Mutex::new(Inner {
                file,
                sink: None,
                records: None,
                lines: 0,
                secrets: Vec::new(),
                error: None,
            })),
        }
    }

    /// Mirrors every record, in the human format, to `sink` (e.g. stdout).
    pub fn with_sink(self, sink: Box<dyn Write + Send>) -> LogWriter {
        self.lock().sink = Some(sink);
        self
    }

    /// Copies every record, in the `logs.yaml` format (one line each), to `records` as well
    /// (the appliance's database).
    pub fn with_records(self, records: Box<dyn Write + Send>) -> LogWriter {
        self.lock().records = Some(records);
        self
    }

    /// Replaces `secret` by `[MASKED]` in every later record (as LAVA does for job secrets).
    pub fn mask(&self, secret: &str) {
        if !secret.is_empty() {
            self.lock().secrets.push(secret.to_string());
        }
    }

    /// Writes one record with a text message.
    pub fn log(&self, level: Level, msg: &str) {
        if level == Level::Target && msg.contains('\n') {
            let msg = msg.strip_suffix('\n').unwrap_or(msg);
            for line in msg.split('\n') {
                self.record(level, &quote(line.trim_end_matches('\r')), line);
            }
            return;
        }
        self.record(level, &quote(msg), msg);
    }

    /// A `debug` record.
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }
    /// An `info` record.
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }
    /// A `warning` record.
    pub fn warning(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }
    /// An `error` record.
    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg)
    }
    /// An `exception` record.
    pub fn exception(&self, msg: &str) {
        self.log(Level::Exception, msg)
    }
    /// A `target` record: board console output, one record per line.
    pub fn target(&self, line: &str) {
        self.log(Level::Target, line)
    }
    /// An `input` record: what was sent to the board.
    pub fn input(&self, msg: &str) {
        self.log(Level::Input, msg)
    }
    /// A `feedback` record.
    pub fn feedback(&self, msg: &str) {
        self.log(Level::Feedback, msg)
    }
    /// An `event` record.
    pub fn event(&self, msg: &str) {
        self.log(Level::Event, msg)
    }

    /// A `results` record: `msg` is the result mapping (`definition`, `case`, `result`, …).
    pub fn results(&self, msg: &serde_json::Map<String, Value>) {
        let human = msg
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        self.record(Level::Results, &flow(&Value::Object(msg.clone())), &human);
    }

    /// How many records the file has (the number of the last one written, 1-based).
    pub fn lines(&self) -> u64 {
        self.lock().lines
    }

    /// The first write error, if any (logging itself never fails the job).
    pub fn take_error(&self) -> Option<String> {
        self.lock().error.take()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `- {"dt": …, "lvl": …, "msg": <msg_yaml>}` and the human mirror.
    fn record(&self, level: Level, msg_yaml: &str, human: &str) {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let mut line = format!(
            "- {{\"dt\": \"{}\", \"lvl\": \"{}\", \"msg\": {msg_yaml}}}\n",
            format_dt(now),
            level.as_str()
        );
        if line.len() > MAX_LINE {
            let replacement = if level == Level::Results {
                "{\"skip\": \"line way too long ...\"}"
            } else {
                "\"<line way too long ...>\""
            };
            line = format!(
                "- {{\"dt\": \"{}\", \"lvl\": \"{}\", \"msg\": {replacement}}}\n",
                format_dt(now),
                level.as_str()
            );
        }
        let mut human = format!(
            "{} {:<9}{}\n",
            &format_dt(now)[11..23],
            level.as_str(),
            human
        );
        for secret in &inner.secrets {
            line = line.replace(secret.as_str(), "[MASKED]");
            human = human.replace(secret.as_str(), "[MASKED]");
        }
        inner.lines += 1;
        let Inner {
            file,
            sink,
            records,
            error,
            ..
        } = &mut *inner;
        if let Some(r) = records {
            let _ = r.write_all(line.as_bytes()).and_then(|_| r.flush());
        }
        if let Some(f) = file {
            if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
                error.get_or_insert_with(|| format!("write the job log: {e}"));
            }
        }
        if let Some(s) = sink {
            let _ = s.write_all(human.as_bytes()).and_then(|_| s.flush());
        }
    }
}

/// A string as a double-quoted scalar that is both JSON and YAML.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a one-line YAML flow node (strings quoted with [`quote`]).
pub fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(flow).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", quote(k), flow(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// A UTC time broken down: year, month, day, hour, minute, second, microsecond.
pub(crate) fn utc_parts(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = uboot_scripts::image::timestamp::civil_from_days(days);
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros(),
    )
}

/// `2026-12-04T10:00:00.123456` (UTC, as LAVA's `dt`).
pub fn format_dt(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, us) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dates() {
        let t = |s: u64, us: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us);
        assert_eq!(format_dt(t(0, 0)), "1970-01-01T00:00:00.000000");
        assert_eq!(
            format_dt(t(1_796_378_400, 123_456)),
            "2026-12-04T10:00:00.123456"
        );
        assert_eq!(format_dt(t(951_782_400, 1)), "2000-02-29T00:00:00.000001");
        assert_eq!(format_dt(t(4_107_542_399, 0)), "2100-02-28T23:59:59.000000");
    }

    #[test]
    fn lines_parse_as_yaml_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.yaml");
        let sink = Shared::default();
        let log = LogWriter::create(&path, Some(Box::new(sink.clone()))).unwrap();
        let nasty = "quote\" back\\ tab\t bell\x07 del\x7f c1\u{85} ls\u{2028} bom\u{feff} é ✓ 🦀: - [x] {y} #z";
        log.info("start: 1 tftp-deploy (timeout 00:02:00)");
        log.target(nasty);
        log.target("two\r\nlines\n");
        let mut msg = serde_json::Map::new();
        msg.insert("definition".into(), "lava".into());
        msg.insert("case".into(), "job".into());
        msg.insert("measurement".into(), 99.5.into());
        msg.insert(
            "extra".into(),
            serde_json::json!({"list": [1, "a"], "none": null}),
        );
        log.results(&msg);
        let clone = log.clone();
        std::thread::spawn(move || clone.debug("from a thread"))
            .join()
            .unwrap();
        assert_eq!(log.lines(), 6);

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 6);
        for line in text.lines() {
            assert!(line.starts_with("- {\"dt\": \""), "{line}");
        }
        let parsed: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&text).unwrap();
        let msg_of = |i: usize| parsed[i]["msg"].clone();
        assert_eq!(parsed[0]["lvl"].as_str(), Some("info"));
        assert_eq!(msg_of(1).as_str(), Some(nasty));
        assert_eq!(msg_of(2).as_str(), Some("two"));
        assert_eq!(msg_of(3).as_str(), Some("lines"));
        assert_eq!(parsed[4]["lvl"].as_str(), Some("results"));
        assert_eq!(msg_of(4)["case"].as_str(), Some("job"));
        assert_eq!(msg_of(4)["measurement"].as_f64(), Some(99.5));
        assert_eq!(msg_of(4)["extra"]["list"][1].as_str(), Some("a"));
        // Each line is also plain JSON.
        for line in text.lines() {
            let v: Value = serde_json::from_str(&line[2..]).unwrap();
            assert!(v["dt"].as_str().unwrap().len() == 26);
        }
        let human = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(human.lines().count(), 6);
        assert!(human
            .lines()
            .next()
            .unwrap()
            .ends_with(" info     start: 1 tftp-deploy (timeout 00:02:00)"));
        assert!(human.contains("results  case=job definition=lava"));
        assert_eq!(log.take_error(), None);
    }

    #[test]
    fn secrets_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.yaml");
        let log = LogWriter::create(&path, None).unwrap();
        log.mask("hunter2");
        log.input("password hunter2");
        log.target(&"x".repeat(200_000));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("password [MASKED]") && !text.contains("hunter2"));
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .contains("\"<line way too long ...>\""));
        let sink = Shared::default();
        LogWriter::discard()
            .with_sink(Box::new(sink.clone()))
            .info("nowhere");
        assert!(String::from_utf8(sink.0.lock().unwrap().clone())
            .unwrap()
            .ends_with("info     nowhere\n"));
    }
}
