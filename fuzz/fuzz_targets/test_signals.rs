//! Test-shell output: console bytes through `signals::SignalParser` (the `<LAVA_SIGNAL_…>` and
//! `<LAVA_TEST_RUNNER …>` lines, split across lines and reads) and `testdef::RunTracker` (runs,
//! test cases, parse patterns, fixupdicts) into `results::Results` and `results.yaml`, as the
//! test shell action handles a board's output.
//!
//! Input: frames (see `common`), each one read from the console; a frame's tag picks the
//! split mode (bit 0: raw bytes to the signal parser, else lines to the tracker).

#![no_main]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use dispatcher::results::Results;
use dispatcher::signals::SignalParser;
use dispatcher::testdef::{ParsePattern, RunTracker, Tracked};
use libfuzzer_sys::fuzz_target;

/// The suites, compiled once (a regex compile per input would dominate the run).
fn suites() -> Vec<(String, ParsePattern)> {
    static SUITES: OnceLock<Vec<(String, ParsePattern)>> = OnceLock::new();
    SUITES.get_or_init(compile).clone()
}

fn compile() -> Vec<(String, ParsePattern)> {
    let fix: BTreeMap<String, String> = [("PASS", "pass"), ("FAIL", "fail"), ("SKIP", "skip")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    vec![
        (
            "0_smoke".to_string(),
            ParsePattern::new(
                Some(r"^(?P<test_case_id>[^:\s]+):\s*(?P<result>PASS|FAIL|SKIP)(\s+(?P<measurement>[0-9.]+)\s*(?P<units>\w+))?"),
                fix,
            )
            .expect("pattern compiles"),
        ),
        ("1_plain".to_string(), ParsePattern::default()),
    ]
}

fuzz_target!(|data: &[u8]| {
    let mut raw = SignalParser::new();
    let mut tracker = RunTracker::new(suites());
    let mut results = Results::new();
    let mut line = Vec::new();
    let record = |tracked: Vec<Tracked>, results: &mut Results| {
        for t in tracked {
            if let Tracked::Case { suite, case } = t {
                results.record(&suite, case);
            }
        }
    };
    for f in common::frames(data, 256) {
        if f.tag & 1 == 1 {
            for e in raw.feed_bytes(f.bytes) {
                let _ = format!("{e:?}");
            }
        }
        // The tracker takes lines, as the console session hands them over.
        for &b in f.bytes {
            if b == b'\n' {
                let l = String::from_utf8_lossy(&line).into_owned();
                record(tracker.feed_line(&l), &mut results);
                line.clear();
            } else if line.len() < 64 * 1024 {
                line.push(b);
            }
        }
    }
    let _ = raw.finish();
    if !line.is_empty() {
        let l = String::from_utf8_lossy(&line).into_owned();
        record(tracker.feed_line(&l), &mut results);
    }
    record(tracker.finish(), &mut results);
    let yaml = results.to_yaml().expect("results serialise");
    // What we write, LAVA's tools (and we) must read back.
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).expect("results.yaml parses");
});
