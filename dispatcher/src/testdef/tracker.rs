//! The test shell's bookkeeping: console lines in, test results out.
//!
//! LAVA's test shell action follows the runner's signals and, while a definition runs, applies
//! its parse pattern to the output. [`RunTracker`] is that logic without the console or the
//! clock: fed lines, it returns what happened: the raw signals (for the log), the test cases
//! of each suite (signals and pattern matches, with the fixupdict and the current test set),
//! the `lava` suite's result for each definition (pass at ENDRUN; fail when a definition
//! stopped without one, LAVA's "unfinished test run"), a raise, the runner's end. Anything
//! that cannot be recorded becomes a [`Tracked::Note`] for the log instead of an error, as
//! LAVA logs and drops malformed results.

use std::collections::BTreeMap;

use super::pattern::{parse_measurement, ParsePattern};
use crate::results::{TestCase, TestResult, LAVA_SUITE};
use crate::signals::{Event, SignalParser};

/// Something the tracker saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Tracked {
    /// A signal, as received.
    Signal(Event),
    /// A definition started (its STARTRUN).
    RunStarted {
        /// Its suite.
        suite: String,
        /// Its uuid.
        uuid: String,
    },
    /// A definition ended: `completed` with its ENDRUN, or not (next STARTRUN, the runner's
    /// exit, a raise or the end of input came first).
    RunEnded {
        /// Its suite.
        suite: String,
        /// Its uuid.
        uuid: String,
        /// Whether its ENDRUN arrived.
        completed: bool,
    },
    /// A result to record in `suite`.
    Case {
        /// `lava` (a definition's run) or the definition's suite.
        suite: String,
        /// The result.
        case: TestCase,
    },
    /// The test asked for a TestError (`lava-test-raise`).
    Raise(String),
    /// A definition's install.sh failed; the runner did not run it.
    InstallFailed,
    /// The runner has exited.
    Finished,
    /// Something to log (a malformed signal, a result that cannot be recorded).
    Note(String),
}

#[derive(Debug, Clone)]
struct Run {
    suite: String,
    uuid: String,
}

/// Follows one runner's output.
#[derive(Debug, Default)]
pub struct RunTracker {
    parser: SignalParser,
    suites: BTreeMap<String, ParsePattern>,
    run: Option<Run>,
    set: Option<String>,
}

impl RunTracker {
    /// A tracker for the given suites and their parse sections.
    pub fn new(suites: impl IntoIterator<Item = (String, ParsePattern)>) -> RunTracker {
        RunTracker {
            suites: suites.into_iter().collect(),
            ..RunTracker::default()
        }
    }

    /// The suite running now.
    pub fn current(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.suite.as_str())
    }

    /// Takes one console line.
    pub fn feed_line(&mut self, line: &str) -> Vec<Tracked> {
        let mut out = Vec::new();
        let quiet = !line.contains("<LAVA_") && !self.parser.is_pending();
        if quiet {
            self.pattern_case(line, &mut out);
        }
        for event in self.parser.feed_line(line) {
            self.on_event(event, &mut out);
        }
        out
    }

    /// Ends the input: a definition still running ended without its ENDRUN.
    pub fn finish(&mut self) -> Vec<Tracked> {
        let mut out = Vec::new();
        for event in self.parser.finish() {
            self.on_event(event, &mut out);
        }
        self.end_run(false, &mut out);
        out
    }

    fn pattern(&self) -> Option<&ParsePattern> {
        self.run.as_ref().and_then(|r| self.suites.get(&r.suite))
    }

    fn pattern_case(&mut self, line: &str, out: &mut Vec<Tracked>) {
        let (Some(run), Some(p)) = (&self.run, self.pattern()) else {
            return;
        };
        match p.match_line(line.trim_end_matches('\r')) {
            None => {}
            Some(Ok(case)) => out.push(Tracked::Case {
                suite: run.suite.clone(),
                case: case.in_set(self.set.as_deref()),
            }),
            Some(Err(why)) => out.push(Tracked::Note(format!("{}: {why}", run.suite))),
        }
    }

    fn end_run(&mut self, completed: bool, out: &mut Vec<Tracked>) {
        let Some(run) = self.run.take() else { return };
        self.set = None;
        let result = if completed {
            TestResult::Pass
        } else {
            TestResult::Fail
        };
        out.push(Tracked::RunEnded {
            suite: run.suite.clone(),
            uuid: run.uuid.clone(),
            completed,
        });
        out.push(Tracked::Case {
            suite: LAVA_SUITE.to_string(),
            case: TestCase::new(run.suite, result).with_meta("uuid", run.uuid),
        });
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Tracked>) {
        out.push(Tracked::Signal(event.clone()));
        match event {
            Event::StartRun { id, uuid } => {
                self.end_run(false, out);
                if !self.suites.contains_key(&id) {
                    out.push(Tracked::Note(format!(
                        "STARTRUN of an unknown definition '{id}'"
                    )));
                }
                self.run = Some(Run {
                    suite: id.clone(),
                    uuid: uuid.clone(),
                });
                self.set = None;
                out.push(Tracked::RunStarted { suite: id, uuid });
            }
            Event::EndRun { id, uuid } => match &self.run {
                Some(run) if run.suite == id => self.end_run(true, out),
                _ => out.push(Tracked::Note(format!(
                    "ENDRUN of '{id}' ({uuid}) that was not running"
                ))),
            },
            Event::TestCase {
                id,
                result,
                measurement,
                units,
            } => {
                let Some(run) = &self.run else {
                    out.push(Tracked::Note(format!(
                        "test case '{id}' outside a test run: dropped"
                    )));
                    return;
                };
                let suite = run.suite.clone();
                let fixed = match self.pattern() {
                    Some(p) => p.fix(&result),
                    None => ParsePattern::default().fix(&result),
                };
                let Some(result) = fixed else {
                    out.push(Tracked::Note(format!(
                        "{suite}: test case '{id}': unknown result '{result}'"
                    )));
                    return;
                };
                let mut case = TestCase::new(id.clone(), result).in_set(self.set.as_deref());
                if let Some(m) = measurement {
                    match parse_measurement(&m) {
                        Some(v) => case = case.with_measurement(v, units.as_deref()),
                        None => {
                            out.push(Tracked::Note(format!(
                                "{suite}: test case '{id}': invalid measurement '{m}'"
                            )));
                            return;
                        }
                    }
                }
                out.push(Tracked::Case { suite, case });
            }
            Event::TestReference {
                case,
                result,
                reference,
            } => {
                let Some(run) = &self.run else {
                    out.push(Tracked::Note(format!(
                        "reference '{case}' outside a test run: dropped"
                    )));
                    return;
                };
                match ParsePattern::default().fix(&result) {
                    Some(r) => out.push(Tracked::Case {
                        suite: run.suite.clone(),
                        case: TestCase::new(case, r)
                            .in_set(self.set.as_deref())
                            .with_meta("reference", reference),
                    }),
                    None => out.push(Tracked::Note(format!(
                        "reference '{case}': unknown result '{result}'"
                    ))),
                }
            }
            Event::TestSetStart { name } => self.set = Some(name),
            Event::TestSetStop => self.set = None,
            Event::TestRaise { message } => out.push(Tracked::Raise(message)),
            Event::InstallFail => out.push(Tracked::InstallFailed),
            Event::RunnerExit => {
                self.end_run(false, out);
                out.push(Tracked::Finished);
            }
            Event::Malformed { raw, reason } => {
                out.push(Tracked::Note(format!("malformed signal ({reason}): {raw}")))
            }
            Event::StartTc { .. }
            | Event::EndTc { .. }
            | Event::TestEvent { .. }
            | Event::TestFeedback { .. }
            | Event::Other { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(events: &[Tracked]) -> Vec<(String, String, TestResult, Option<String>)> {
        events
            .iter()
            .filter_map(|e| match e {
                Tracked::Case { suite, case } => Some((
                    suite.clone(),
                    case.name.clone(),
                    case.result,
                    case.set.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn signals_patterns_sets_and_runs() {
        let fix = BTreeMap::from([
            ("pass".into(), "pass".into()),
            ("fail".into(), "unknown".into()),
        ]);
        let p = ParsePattern::new(
            Some(r"(?P<test_case_id>.*-*):\s+(?P<result>(pass|fail))"),
            fix,
        )
        .unwrap();
        let mut t = RunTracker::new([
            ("0_a".to_string(), p),
            ("1_b".to_string(), ParsePattern::default()),
        ]);
        let mut all = Vec::new();
        for line in [
            "test0: pass",
            "<LAVA_SIGNAL_STARTRUN 0_a 7_0>",
            "+ echo test1: pass",
            "test1: pass",
            "test2: fail",
            "<LAVA_SIGNAL_TESTSET START s1>",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=c1 RESULT=pass MEASUREMENT=2 UNITS=s>",
            "<LAVA_SIGNAL_TESTSET STOP>",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=c2 RESULT=PASS>",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=c3 RESULT=fail MEASUREMENT=x>",
            "<LAVA_SIGNAL_ENDRUN 0_a 7_0>",
            "<LAVA_SIGNAL_STARTRUN 1_b 7_1>",
            "x: pass",
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=d1 RESULT=SKIP>",
            "<LAVA_SIGNAL_TESTREFERENCE r1 pass http://x/y>",
            "<LAVA_TEST_RUNNER EXIT>",
        ] {
            all.extend(t.feed_line(line));
        }
        all.extend(t.finish());
        let s = |x: &str| x.to_string();
        assert_eq!(
            cases(&all),
            vec![
                (s("0_a"), s("test1"), TestResult::Pass, None),
                (s("0_a"), s("test2"), TestResult::Unknown, None),
                (s("0_a"), s("c1"), TestResult::Pass, Some(s("s1"))),
                (s("0_a"), s("c2"), TestResult::Pass, None),
                (s("lava"), s("0_a"), TestResult::Pass, None),
                (s("1_b"), s("d1"), TestResult::Skip, None),
                (s("1_b"), s("r1"), TestResult::Pass, None),
                (s("lava"), s("1_b"), TestResult::Fail, None),
            ]
        );
        let notes: Vec<&Tracked> = all
            .iter()
            .filter(|e| matches!(e, Tracked::Note(_)))
            .collect();
        assert_eq!(notes.len(), 2, "{notes:?}"); // the trace line, the bad measurement
        assert!(all.contains(&Tracked::Finished));
        assert!(all.contains(&Tracked::RunEnded {
            suite: s("1_b"),
            uuid: s("7_1"),
            completed: false
        }));
    }
}
