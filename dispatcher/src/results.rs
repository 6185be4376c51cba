//! The job's results, and `results.yaml` written in the shape of LAVA's results export.
//!
//! LAVA keeps results in its database and exports them (`/results/<job>/yaml`) as a list of
//! test cases, each a mapping of strings: `name`, `suite`, `result`, `measurement`, `unit`,
//! `level`, `logged`, `metadata` (the result as the dispatcher logged it), … Tools written
//! against that export read labboot's `results.yaml` unchanged: the keys, the string forms
//! (`measurement: 'None'`, ten decimals, `logged` as Python prints a datetime) and the
//! suites are LAVA's:
//! * `lava`: the job's own results: `job` (with `error_type` and `error_msg` when the job is
//!   incomplete), the actions' results (with their `level` and `duration`), and one result per
//!   test definition run (named by its suite);
//! * `<index>_<name>`: one suite per test definition, its test cases.
//!
//! Every record can also be logged as a `results` line of `logs.yaml` ([`Results::attach_log`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::logs::{utc_parts, LogWriter};

/// The suite of the job's own results.
pub const LAVA_SUITE: &str = "lava";

/// A test case's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestResult {
    /// pass
    Pass,
    /// fail
    Fail,
    /// skip
    Skip,
    /// unknown
    Unknown,
}

impl TestResult {
    /// The value as LAVA writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TestResult::Pass => "pass",
            TestResult::Fail => "fail",
            TestResult::Skip => "skip",
            TestResult::Unknown => "unknown",
        }
    }

    /// `pass`, `fail`, `skip` or `unknown` (exactly; apply a fixupdict first).
    pub fn parse(s: &str) -> Option<TestResult> {
        match s {
            "pass" => Some(TestResult::Pass),
            "fail" => Some(TestResult::Fail),
            "skip" => Some(TestResult::Skip),
            "unknown" => Some(TestResult::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for TestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result to record.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    /// The test case name (`job`, an action name, a test's case id).
    pub name: String,
    /// The outcome.
    pub result: TestResult,
    /// A measurement.
    pub measurement: Option<f64>,
    /// Its units.
    pub units: Option<String>,
    /// The test set it was recorded in.
    pub set: Option<String>,
    /// The pipeline level of the action that recorded it (`lava` suite).
    pub level: Option<String>,
    /// How long it took.
    pub duration: Option<Duration>,
    /// Further metadata keys (`error_type`, `error_msg`, `namespace`, `uuid`, `extra`, …).
    pub metadata: Map<String, Value>,
    /// First and last `logs.yaml` line of the case (its STARTTC/ENDTC), if known.
    pub log_lines: Option<(u64, u64)>,
}

impl TestCase {
    /// A result with nothing else.
    pub fn new(name: impl Into<String>, result: TestResult) -> TestCase {
        TestCase {
            name: name.into(),
            result,
            measurement: None,
            units: None,
            set: None,
            level: None,
            duration: None,
            metadata: Map::new(),
            log_lines: None,
        }
    }

    /// With a measurement and its units.
    pub fn with_measurement(mut self, value: f64, units: Option<&str>) -> TestCase {
        self.measurement = Some(value);
        self.units = units.map(str::to_string);
        self
    }

    /// With a pipeline level.
    pub fn with_level(mut self, level: &str) -> TestCase {
        self.level = Some(level.to_string());
        self
    }

    /// With a duration.
    pub fn with_duration(mut self, duration: Duration) -> TestCase {
        self.duration = Some(duration);
        self
    }

    /// In a test set.
    pub fn in_set(mut self, set: Option<&str>) -> TestCase {
        self.set = set.map(str::to_string);
        self
    }

    /// With one more metadata key.
    pub fn with_meta(mut self, key: &str, value: impl Into<Value>) -> TestCase {
        self.metadata.insert(key.to_string(), value.into());
        self
    }

    /// The result as LAVA's dispatcher logs it (a `results` line's `msg`).
    pub fn log_dict(&self, suite: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("definition".into(), suite.into());
        m.insert("case".into(), self.name.clone().into());
        m.insert("result".into(), self.result.as_str().into());
        if let Some(set) = &self.set {
            m.insert("set".into(), set.clone().into());
        }
        if let Some(level) = &self.level {
            m.insert("level".into(), level.clone().into());
        }
        if let Some(d) = self.duration {
            m.insert("duration".into(), format!("{:.2}", d.as_secs_f64()).into());
        }
        if let Some(v) = self.measurement.and_then(serde_json::Number::from_f64) {
            m.insert("measurement".into(), Value::Number(v));
        }
        if let Some(u) = &self.units {
            m.insert("units".into(), u.clone().into());
        }
        for (k, v) in &self.metadata {
            m.insert(k.clone(), v.clone());
        }
        m
    }
}

/// A recorded result.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The suite (`lava` or `<index>_<name>`).
    pub suite: String,
    /// The result.
    pub case: TestCase,
    /// When it was recorded.
    pub logged: SystemTime,
    /// Its number in the job, from 1.
    pub id: u64,
}

/// All results of a job, in the order recorded.
#[derive(Debug, Clone, Default)]
pub struct Results {
    job_id: String,
    entries: Vec<Entry>,
    log: Option<LogWriter>,
}

impl Results {
    /// No results yet.
    pub fn new() -> Results {
        Results::default()
    }

    /// Sets the job id written in each entry's `job`.
    pub fn set_job_id(&mut self, job_id: &str) {
        self.job_id = job_id.to_string();
    }

    /// Logs every later record as a `results` line of `log`.
    pub fn attach_log(&mut self, log: LogWriter) {
        self.log = Some(log);
    }

    /// Records `case` in `suite`.
    pub fn record(&mut self, suite: &str, mut case: TestCase) {
        if let Some(log) = &self.log {
            log.results(&case.log_dict(suite));
            if case.log_lines.is_none() {
                let line = log.lines();
                case.log_lines = Some((line, line));
            }
        }
        self.entries.push(Entry {
            suite: suite.to_string(),
            case,
            logged: SystemTime::now(),
            id: self.entries.len() as u64 + 1,
        });
    }

    /// Records an action's result in the `lava` suite (a failure carries the error).
    pub fn record_action(
        &mut self,
        level: &str,
        name: &str,
        error: Option<&Error>,
        duration: Duration,
        extra: Option<Map<String, Value>>,
    ) {
        let mut case = TestCase::new(name, pass_fail(error))
            .with_level(level)
            .with_duration(duration)
            .with_meta("namespace", "common");
        if let Some(e) = error {
            case = with_error(case, e);
        }
        if let Some(extra) = extra {
            case = case.with_meta("extra", Value::Object(extra));
        }
        self.record(LAVA_SUITE, case);
    }

    /// Records the job's own result, `lava`/`job`: fail with `error_type` and `error_msg`
    /// when the job is incomplete.
    pub fn record_job(&mut self, error: Option<&Error>, duration: Duration) {
        let mut case = TestCase::new("job", pass_fail(error)).with_duration(duration);
        if let Some(e) = error {
            case = with_error(case, e);
        }
        self.record(LAVA_SUITE, case);
    }

    /// Records a test case given as the board sent it: `result` must be pass, fail, skip or
    /// unknown, `measurement` a number. What cannot be recorded is logged as a warning (when a
    /// log is attached) and dropped, as LAVA drops it; the return value says which happened.
    pub fn record_case(
        &mut self,
        suite: &str,
        set: Option<&str>,
        name: &str,
        result: &str,
        measurement: Option<&str>,
        units: Option<&str>,
    ) -> bool {
        let problem = if name.is_empty() || name.contains(char::is_whitespace) {
            Some(format!("invalid test case name '{name}'"))
        } else {
            None
        };
        let parsed = TestResult::parse(result);
        let value = measurement.map(|m| m.trim().parse::<f64>().ok().filter(|v| v.is_finite()));
        let problem = problem.or_else(|| match (parsed, value) {
            (None, _) => Some(format!("test case '{name}': unknown result '{result}'")),
            (_, Some(None)) => Some(format!(
                "test case '{name}': invalid measurement '{}'",
                measurement.unwrap_or_default()
            )),
            _ => None,
        });
        if let Some(p) = problem {
            if let Some(log) = &self.log {
                log.warning(&format!("{suite}: {p}: not recorded"));
            }
            return false;
        }
        let mut case = TestCase::new(name, parsed.unwrap_or(TestResult::Unknown)).in_set(set);
        if let Some(Some(v)) = value {
            case = case.with_measurement(v, units);
        }
        self.record(suite, case);
        true
    }

    /// A few lines for a person: the job's outcome and each suite's counts.
    pub fn summary(&self, job_name: &str, error: Option<&Error>, duration: Duration) -> String {
        let secs = duration.as_secs();
        let took = format!("{}m{:02}s", secs / 60, secs % 60);
        let mut out = match error {
            None => format!("job '{job_name}': complete in {took}\n"),
            Some(e) => format!(
                "job '{job_name}': incomplete after {took}: {}: {}\n",
                e.kind, e.message
            ),
        };
        for suite in self.suites() {
            let mut counts: Vec<(TestResult, usize)> = Vec::new();
            for e in self.suite(suite) {
                match counts.iter_mut().find(|(r, _)| *r == e.case.result) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((e.case.result, 1)),
                }
            }
            counts.sort_by_key(|(r, _)| *r as u8);
            let text: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
            out.push_str(&format!("  {suite}: {}\n", text.join(", ")));
        }
        out
    }

    /// Everything recorded, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The results of one suite.
    pub fn suite<'a>(&'a self, suite: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.suite == suite)
    }

    /// The suite names, in order of their first result.
    pub fn suites(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !out.contains(&e.suite.as_str()) {
                out.push(&e.suite);
            }
        }
        out
    }

    /// `results.yaml`'s text.
    pub fn to_yaml(&self) -> Result<String> {
        let list: Vec<BTreeMap<&str, serde_yaml_ng::Value>> =
            self.entries.iter().map(|e| self.export(e)).collect();
        serde_yaml_ng::to_string(&list).map_err(|e| Error::bug(format!("results.yaml: {e}")))
    }

    /// Writes `results.yaml` to `path` (through a temporary file, so readers never see half).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = self.to_yaml()?;
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| Error::infra(format!("write {}: {e}", path.display())))
    }

    /// One entry as LAVA's export writes a test case.
    fn export(&self, e: &Entry) -> BTreeMap<&'static str, serde_yaml_ng::Value> {
        let s = |v: &str| serde_yaml_ng::Value::String(v.to_string());
        let c = &e.case;
        // The `lava` suite's measurement is the duration in seconds (as LAVA stores it).
        let (measurement, unit) = if e.suite == LAVA_SUITE {
            match c.duration {
                Some(d) => (
                    Some((d.as_secs_f64() * 100.0).round() / 100.0),
                    "seconds".to_string(),
                ),
                None => (None, String::new()),
            }
        } else {
            (c.measurement, c.units.clone().unwrap_or_default())
        };
        let mut metadata = c.log_dict(&e.suite);
        if let Some(Value::Object(extra)) = metadata.remove("extra") {
            // LAVA's export lists `extra` as one single-key mapping per item.
            let items = extra
                .into_iter()
                .map(|(k, v)| Value::Object(Map::from_iter([(k, v)])))
                .collect();
            metadata.insert("extra".into(), Value::Array(items));
        }
        let (start, end) = c
            .log_lines
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or_default();
        let mut m = BTreeMap::new();
        m.insert("id", s(&e.id.to_string()));
        m.insert("job", s(&self.job_id));
        m.insert("suite", s(&e.suite));
        m.insert("name", s(&c.name));
        m.insert("result", s(c.result.as_str()));
        m.insert(
            "measurement",
            s(&measurement.map_or("None".to_string(), |v| format!("{v:.10}"))),
        );
        m.insert("unit", s(&unit));
        m.insert("level", s(c.level.as_deref().unwrap_or("")));
        m.insert(
            "duration",
            s(&c.duration
                .map_or(String::new(), |d| format!("{:.2}", d.as_secs_f64()))),
        );
        m.insert("timeout", s(""));
        m.insert("logged", s(&python_datetime(e.logged)));
        m.insert("log_start_line", s(&start));
        m.insert("log_end_line", s(&end));
        m.insert("url", s(&format!("/results/testcase/{}", e.id)));
        m.insert("metadata", yaml_sorted(&Value::Object(metadata)));
        m
    }
}

fn pass_fail(error: Option<&Error>) -> TestResult {
    if error.is_some() {
        TestResult::Fail
    } else {
        TestResult::Pass
    }
}

fn with_error(case: TestCase, e: &Error) -> TestCase {
    case.with_meta("error_type", e.kind.as_str())
        .with_meta("error_msg", e.message.clone())
}

/// A time as Python prints an aware UTC datetime: `2026-12-04 10:00:00.123456+00:00`.
fn python_datetime(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, us) = utc_parts(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}+00:00")
}

/// A JSON value as YAML with every mapping's keys sorted (as PyYAML dumps them).
fn yaml_sorted(v: &Value) -> serde_yaml_ng::Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => serde_yaml_ng::to_value(n).unwrap_or(Y::Null),
        Value::String(s) => Y::String(s.clone()),
        Value::Array(a) => Y::Sequence(a.iter().map(yaml_sorted).collect()),
        Value::Object(o) => {
            let sorted: BTreeMap<&String, &Value> = o.iter().collect();
            let mut m = serde_yaml_ng::Mapping::new();
            for (k, v) in sorted {
                m.insert(Y::String(k.clone()), yaml_sorted(v));
            }
            Y::Mapping(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::Value as Y;

    #[test]
    fn export_has_lavas_keys_and_forms() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs.yaml");
        let log = LogWriter::create(&logs, None).unwrap();
        let mut r = Results::new();
        r.set_job_id("42");
        r.attach_log(log.clone());
        let mut extra = Map::new();
        extra.insert("url".into(), "http://x/zImage".into());
        extra.insert("size".into(), 1234.into());
        r.record_action(
            "1.1",
            "http-download",
            None,
            Duration::from_millis(1234),
            Some(extra),
        );
        r.record(
            "0_smoke",
            TestCase::new("test5", TestResult::Pass).with_measurement(99.0, Some("bottles")),
        );
        r.record(
            "0_smoke",
            TestCase::new("linux-linaro-ubuntu-pwd", TestResult::Fail).in_set(Some("net")),
        );
        r.record_job(
            Some(&Error::test("lava-test-shell timed out after 300 seconds")),
            Duration::from_secs(400),
        );

        let path = dir.path().join("results.yaml");
        r.write(&path).unwrap();
        let list: Vec<BTreeMap<String, Y>> =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(list.len(), 4);
        let keys: Vec<&str> = list[0].keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "duration",
                "id",
                "job",
                "level",
                "log_end_line",
                "log_start_line",
                "logged",
                "measurement",
                "metadata",
                "name",
                "result",
                "suite",
                "timeout",
                "unit",
                "url"
            ]
        );
        let get = |i: usize, k: &str| list[i][k].as_str().unwrap_or("").to_string();
        assert_eq!(get(0, "suite"), "lava");
        assert_eq!(get(0, "name"), "http-download");
        assert_eq!(get(0, "level"), "1.1");
        assert_eq!(get(0, "measurement"), "1.2300000000");
        assert_eq!(get(0, "unit"), "seconds");
        assert_eq!(get(0, "job"), "42");
        assert_eq!(get(0, "log_start_line"), "1");
        assert_eq!(list[0]["metadata"]["extra"][0]["size"].as_u64(), Some(1234));
        assert_eq!(list[0]["metadata"]["duration"].as_str(), Some("1.23"));
        assert_eq!(get(1, "suite"), "0_smoke");
        assert_eq!(get(1, "measurement"), "99.0000000000");
        assert_eq!(get(1, "unit"), "bottles");
        assert_eq!(get(1, "level"), "");
        assert_eq!(get(2, "measurement"), "None");
        assert_eq!(list[2]["metadata"]["set"].as_str(), Some("net"));
        assert_eq!(get(3, "name"), "job");
        assert_eq!(get(3, "result"), "fail");
        assert_eq!(
            list[3]["metadata"]["error_type"].as_str(),
            Some("TestError")
        );
        assert!(list[3]["metadata"]["error_msg"]
            .as_str()
            .unwrap()
            .contains("timed out"));
        assert!(get(3, "logged").ends_with("+00:00"));
        assert_eq!(r.suites(), ["lava", "0_smoke"]);
        assert_eq!(r.suite("0_smoke").count(), 2);
        // The results lines went to the job log too.
        let log_text = std::fs::read_to_string(&logs).unwrap();
        assert_eq!(
            log_text
                .lines()
                .filter(|l| l.contains("\"lvl\": \"results\""))
                .count(),
            4
        );
        assert!(log_text.contains("\"msg\": {\"case\": \"job\", \"definition\": \"lava\""));
    }

    #[test]
    fn cases_from_the_board_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogWriter::create(&dir.path().join("logs.yaml"), None).unwrap();
        let mut r = Results::new();
        r.attach_log(log.clone());
        assert!(r.record_case("0_a", Some("s"), "t1", "pass", Some("1.5"), Some("s")));
        assert!(r.record_case("0_a", None, "t2", "fail", None, None));
        assert!(!r.record_case("0_a", None, "t3", "PASSED", None, None));
        assert!(!r.record_case("0_a", None, "t4", "pass", Some("fast"), None));
        assert!(!r.record_case("0_a", None, "bad name", "pass", None, None));
        assert_eq!(r.entries().len(), 2);
        assert_eq!(r.entries()[0].case.measurement, Some(1.5));
        r.record_job(None, Duration::from_secs(125));
        let s = r.summary("smoke", None, Duration::from_secs(125));
        assert_eq!(
            s,
            "job 'smoke': complete in 2m05s\n  0_a: 1 pass, 1 fail\n  lava: 1 pass\n"
        );
        let e = Error::test("boom");
        assert!(r
            .summary("smoke", Some(&e), Duration::ZERO)
            .starts_with("job 'smoke': incomplete after 0m00s: TestError: boom"));
        assert_eq!(log.lines(), 6); // three results, three warnings
    }

    #[test]
    fn result_names() {
        for r in [
            TestResult::Pass,
            TestResult::Fail,
            TestResult::Skip,
            TestResult::Unknown,
        ] {
            assert_eq!(TestResult::parse(r.as_str()), Some(r));
        }
        assert_eq!(TestResult::parse("PASS"), None);
        assert_eq!(Results::new().to_yaml().unwrap().trim(), "[]");
    }
}
