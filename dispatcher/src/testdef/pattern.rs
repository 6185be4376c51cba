//! A definition's `parse` section applied to its output, and result words made LAVA's.
//!
//! LAVA searches the console output for the definition's `parse.pattern` while the definition
//! runs; a match with named groups `test_case_id` and `result` (and optionally `measurement`
//! and `units`) is a test case. Here the pattern is searched in each line (LAVA's patterns are
//! line patterns: they are compiled with `re.M` and `.` never crosses a line end there).
//! As in LAVA, a case id with whitespace in it is not a case (this is what keeps the shell's
//! `set -x` trace lines, such as `+ echo test1a: pass`, from being recorded) and the
//! `fixupdict` maps the test's own words to results; without a fixupdict, `PASS`, `FAIL`,
//! `SKIP` and `UNKNOWN` are mapped, which LAVA also applies to signals. Unlike LAVA, the
//! word the fixupdict gives is then read without regard to case: LAVA's server drops a `PASS`
//! (its own `params.yaml` example maps `pass: PASS`), labboot records it as pass.

use std::collections::BTreeMap;

use regex::Regex;

use crate::results::{TestCase, TestResult};

/// A compiled `parse` section (the pattern may be absent: the fixupdict still applies to
/// `lava-test-case` results).
#[derive(Debug, Clone, Default)]
pub struct ParsePattern {
    regex: Option<Regex>,
    fixupdict: BTreeMap<String, String>,
}

impl ParsePattern {
    /// Compiles `pattern`; the error says why it cannot be used.
    pub fn new(
        pattern: Option<&str>,
        fixupdict: BTreeMap<String, String>,
    ) -> Result<ParsePattern, String> {
        let regex = match pattern {
            None => None,
            Some(p) => {
                let re = regex::RegexBuilder::new(p)
                    .multi_line(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        format!(
                            "parse.pattern: not a usable regex: {}",
                            one_line(&e.to_string())
                        )
                    })?;
                let names: Vec<&str> = re.capture_names().flatten().collect();
                for needed in ["test_case_id", "result"] {
                    if !names.contains(&needed) {
                        return Err(format!("parse.pattern: has no (?P<{needed}>…) group"));
                    }
                }
                Some(re)
            }
        };
        Ok(ParsePattern { regex, fixupdict })
    }

    /// The pattern, as given.
    pub fn pattern(&self) -> Option<&str> {
        self.regex.as_ref().map(Regex::as_str)
    }

    /// The fixupdict.
    pub fn fixupdict(&self) -> &BTreeMap<String, String> {
        &self.fixupdict
    }

    /// A result word after the fixupdict (LAVA's default mapping when there is none).
    pub fn fix(&self, word: &str) -> Option<TestResult> {
        let fixed = if self.fixupdict.is_empty() {
            match word {
                "PASS" => "pass",
                "FAIL" => "fail",
                "SKIP" => "skip",
                "UNKNOWN" => "unknown",
                w => w,
            }
        } else {
            self.fixupdict.get(word).map_or(word, String::as_str)
        };
        TestResult::parse(&fixed.to_ascii_lowercase())
    }

    /// The test case in `line`, if the pattern matches it: `Some(Err(why))` for a match that
    /// cannot be recorded (whitespace in the id, an unknown result, a bad measurement).
    pub fn match_line(&self, line: &str) -> Option<Result<TestCase, String>> {
        let caps = self.regex.as_ref()?.captures(line)?;
        let group = |n: &str| caps.name(n).map(|m| m.as_str());
        let id = group("test_case_id").unwrap_or("").trim();
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Some(Err(format!(
                "skipping test case id '{id}' (empty or with whitespace)"
            )));
        }
        let word = group("result").unwrap_or("");
        let Some(result) = self.fix(word) else {
            return Some(Err(format!("test case '{id}': unknown result '{word}'")));
        };
        let mut case = TestCase::new(id, result);
        if let Some(m) = group("measurement") {
            match parse_measurement(m) {
                Some(v) => case = case.with_measurement(v, group("units")),
                None => return Some(Err(format!("test case '{id}': invalid measurement '{m}'"))),
            }
        }
        Some(Ok(case))
    }
}

/// A measurement as LAVA accepts it (a finite float).
pub fn parse_measurement(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params_pattern() -> ParsePattern {
        let fix = BTreeMap::from([
            ("pass".into(), "pass".into()),
            ("fail".into(), "unknown".into()),
        ]);
        ParsePattern::new(
            Some(r"(?P<test_case_id>.*-*):\s+(?P<result>(pass|fail))"),
            fix,
        )
        .unwrap()
    }

    #[test]
    fn lava_params_pattern() {
        let p = params_pattern();
        let ok = |l: &str| p.match_line(l).unwrap().unwrap();
        assert_eq!(ok("test1a: pass").name, "test1a");
        assert_eq!(ok("test1a: pass").result, TestResult::Pass);
        assert_eq!(ok("test2a: fail").result, TestResult::Unknown);
        assert!(p.match_line("test3a: skip").is_none());
        assert!(p.match_line("+ echo test1a: pass").unwrap().is_err());
        assert!(p.match_line("plain output").is_none());
    }

    #[test]
    fn measurements_and_defaults() {
        let p = ParsePattern::new(
            Some(r"^(?P<test_case_id>\S+) (?P<result>\w+) (?P<measurement>\S+) (?P<units>\S+)$"),
            BTreeMap::new(),
        )
        .unwrap();
        let c = p.match_line("speed PASS 12.5 MB/s").unwrap().unwrap();
        assert_eq!(
            (c.result, c.measurement, c.units.as_deref()),
            (TestResult::Pass, Some(12.5), Some("MB/s"))
        );
        assert!(p.match_line("speed pass fast MB/s").unwrap().is_err());
        assert!(p.match_line("speed good 1 s").unwrap().is_err());
        assert_eq!(
            p.match_line("speed Fail 1 s").unwrap().unwrap().result,
            TestResult::Fail
        );
        assert_eq!(p.fix("SKIP"), Some(TestResult::Skip));
        assert_eq!(ParsePattern::default().match_line("x: pass"), None);
    }

    #[test]
    fn unusable_patterns() {
        assert!(ParsePattern::new(Some("(?P<test_case_id>a"), BTreeMap::new()).is_err());
        assert!(ParsePattern::new(
            Some("(?<=x)(?P<test_case_id>a)(?P<result>b)"),
            BTreeMap::new()
        )
        .is_err());
        let e = ParsePattern::new(Some("(?P<test_case_id>a)"), BTreeMap::new()).unwrap_err();
        assert!(e.contains("result"), "{e}");
    }
}
