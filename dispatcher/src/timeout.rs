//! LAVA durations: `{days: N}`, `{hours: N}`, `{minutes: N}` or `{seconds: N}`.
//!
//! Jobs and devices write every timeout this way. LAVA's own parser silently adds up several
//! units and turns a zero into its default; labboot asks for exactly one unit and a whole
//! number, so a typo (`minutes: 5, seconds: 30` meant as 5.5 minutes, or `minute: 5`) is caught
//! where it was written. The job schema's optional `skip: <bool>` is accepted beside the unit.

use std::time::Duration;

use crate::yaml::{join_key, Node, Problem, Value};

/// The units, with their length in seconds.
pub const UNITS: [(&str, u64); 4] = [
    ("days", 86_400),
    ("hours", 3_600),
    ("minutes", 60),
    ("seconds", 1),
];

/// The message part that lists the units.
const UNIT_LIST: &str = "days, hours, minutes or seconds";

/// One key of a timeout mapping, reduced to what the check needs.
struct Part {
    key: String,
    line: usize,
    value: PartValue,
}

/// The value of one key.
enum PartValue {
    Int(i64),
    Bool,
    Other(&'static str),
}

/// Parses a timeout written in a YAML tree. `path` names the timeout (`timeouts.job`), `line`
/// the line to blame when the mapping itself is wrong, `min` the smallest number allowed (LAVA's
/// job schema: 1; device files: 0).
pub fn parse_node(node: &Node, path: &str, line: usize, min: u64) -> Result<Duration, Problem> {
    let Some(entries) = node.as_map() else {
        return Err(not_a_mapping(line, path, node.kind()));
    };
    let parts = entries
        .iter()
        .map(|e| Part {
            key: e.name(),
            line: e.key.line,
            value: match e.value.value {
                Value::Int(i) => PartValue::Int(i),
                Value::Bool(_) => PartValue::Bool,
                _ => PartValue::Other(e.value.kind()),
            },
        })
        .collect();
    from_parts(parts, path, line, min)
}

/// Parses a timeout given as a serde value (no line numbers: problems carry line 0).
pub fn parse_value(
    value: &serde_yaml_ng::Value,
    path: &str,
    min: u64,
) -> Result<Duration, Problem> {
    use serde_yaml_ng::Value as S;
    let S::Mapping(map) = value else {
        return Err(not_a_mapping(0, path, "not a mapping"));
    };
    let parts = map
        .iter()
        .map(|(k, v)| Part {
            key: match k {
                S::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            },
            line: 0,
            value: match v {
                S::Number(n) => match n.as_i64() {
                    Some(i) => PartValue::Int(i),
                    None => PartValue::Other("a number that is not a whole number"),
                },
                S::Bool(_) => PartValue::Bool,
                S::String(_) => PartValue::Other("a string"),
                _ => PartValue::Other("not a number"),
            },
        })
        .collect();
    from_parts(parts, path, 0, min)
}

/// Turns a number of one unit into a duration (None if it overflows).
pub fn duration(unit: &str, count: u64) -> Option<Duration> {
    let (_, secs) = UNITS.iter().find(|(name, _)| *name == unit)?;
    count.checked_mul(*secs).map(Duration::from_secs)
}

/// The problem for a timeout that is not a mapping.
fn not_a_mapping(line: usize, path: &str, kind: &str) -> Problem {
    Problem::new(
        line,
        path,
        format!("a timeout is a mapping with one of {UNIT_LIST} (got {kind})"),
    )
}

/// The shared check.
fn from_parts(parts: Vec<Part>, path: &str, line: usize, min: u64) -> Result<Duration, Problem> {
    let mut found: Option<(String, Duration)> = None;
    for part in parts {
        let key_path = join_key(path, &part.key);
        if part.key == "skip" {
            if !matches!(part.value, PartValue::Bool) {
                return Err(Problem::new(
                    part.line,
                    key_path,
                    "skip must be true or false",
                ));
            }
            continue;
        }
        if !UNITS.iter().any(|(name, _)| *name == part.key) {
            return Err(Problem::new(
                part.line,
                key_path,
                format!("unknown key: a timeout takes one of {UNIT_LIST}"),
            ));
        }
        if let Some((first, _)) = &found {
            return Err(Problem::new(
                part.line,
                key_path,
                format!("a timeout takes exactly one unit, '{first}' is already given"),
            ));
        }
        let count = match part.value {
            PartValue::Int(i) => u64::try_from(i).ok(),
            _ => None,
        };
        let Some(count) = count else {
            let got = match part.value {
                PartValue::Int(i) => format!("{i}"),
                PartValue::Bool => "a boolean".to_string(),
                PartValue::Other(kind) => kind.to_string(),
            };
            return Err(Problem::new(
                part.line,
                key_path,
                format!("must be a whole number of {} (got {got})", part.key),
            ));
        };
        if count < min {
            return Err(Problem::new(
                part.line,
                key_path,
                format!("must be at least {min} (got {count})"),
            ));
        }
        let Some(d) = duration(&part.key, count) else {
            return Err(Problem::new(part.line, key_path, "is too large"));
        };
        found = Some((part.key, d));
    }
    match found {
        Some((_, d)) => Ok(d),
        None => Err(Problem::new(
            line,
            path,
            format!("a timeout needs one of {UNIT_LIST}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn node(text: &str) -> Node {
        parse(text).expect("test YAML parses")
    }

    #[test]
    fn each_unit() {
        for (text, secs) in [
            ("days: 2", 172_800),
            ("hours: 1", 3_600),
            ("minutes: 5", 300),
            ("seconds: 90", 90),
            ("seconds: 0", 0),
            ("{minutes: 3, skip: true}", 180),
        ] {
            let d = parse_node(&node(text), "t", 1, 0).expect(text);
            assert_eq!(d, Duration::from_secs(secs), "{text}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "minutes: 1\nseconds: 2\n",
                2,
                "t.seconds",
                "exactly one unit",
            ),
            ("minute: 1\n", 1, "t.minute", "unknown key"),
            ("minutes: -1\n", 1, "t.minutes", "whole number"),
            ("minutes: '5'\n", 1, "t.minutes", "whole number"),
            ("minutes: 1.5\n", 1, "t.minutes", "whole number"),
            ("skip: true\n", 9, "t", "needs one of"),
            ("skip: 1\nminutes: 1\n", 1, "t.skip", "true or false"),
            ("5\n", 9, "t", "is a mapping"),
            ("days: 9223372036854775807\n", 1, "t.days", "too large"),
        ];
        for (text, line, path, msg) in cases {
            let err = parse_node(&node(text), "t", 9, 0).expect_err(text);
            assert_eq!((err.line, err.path.as_str()), (line, path), "{text}");
            assert!(err.message.contains(msg), "{text}: {}", err.message);
        }
    }

    #[test]
    fn minimum() {
        let err = parse_node(&node("minutes: 0"), "timeouts.job", 1, 1).expect_err("zero");
        assert_eq!(err.path, "timeouts.job.minutes");
        assert!(err.message.contains("at least 1"));
    }

    #[test]
    fn serde_values() {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str("minutes: 2").expect("yaml");
        assert_eq!(parse_value(&v, "x", 0), Ok(Duration::from_secs(120)));
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str("hours: x").expect("yaml");
        assert_eq!(parse_value(&v, "x", 0).expect_err("bad").path, "x.hours");
    }
}
