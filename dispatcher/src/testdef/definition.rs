//! A Lava-Test Test Definition 1.0, read from its YAML with errors that name the key.
//!
//! The rules are LAVA's (`lava_common/schemas/test/testdef.py`, unknown keys allowed): an inline
//! definition must say `format: Lava-Test Test Definition 1.0`, as LAVA's job schema requires;
//! a definition read from a file or repository is taken as LAVA's dispatcher takes it, with
//! only `metadata.name` required. `run.steps` must be strings (a step like `- echo a: b` is a
//! YAML mapping, a common mistake, and is reported with a hint); null steps are skipped as
//! LAVA skips them.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

/// The `format` LAVA requires of an inline definition.
pub const FORMAT: &str = "Lava-Test Test Definition 1.0";

/// `metadata:`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// `format`
    pub format: Option<String>,
    /// `name`
    pub name: String,
    /// `description`
    pub description: Option<String>,
    /// `version`
    pub version: Option<String>,
    /// `os`
    pub os: Vec<String>,
    /// `devices`
    pub devices: Vec<String>,
    /// `scope`
    pub scope: Vec<String>,
    /// `environment`
    pub environment: Vec<String>,
    /// `maintainer`
    pub maintainer: Vec<String>,
}

/// One entry of `install.git-repos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRepo {
    /// `url` (or the entry itself when it is a string).
    pub url: String,
    /// `branch`
    pub branch: Option<String>,
    /// `destination`: a directory name inside the test's directory.
    pub destination: Option<String>,
}

/// `install:`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Install {
    /// `keys`
    pub keys: Vec<String>,
    /// `sources`
    pub sources: Vec<String>,
    /// `deps`
    pub deps: Vec<String>,
    /// `deps-<distro>`, by distro.
    pub distro_deps: BTreeMap<String, Vec<String>>,
    /// `steps`
    pub steps: Vec<String>,
    /// `git-repos`
    pub git_repos: Vec<GitRepo>,
}

impl Install {
    /// Whether the section asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.sources.is_empty()
            && self.deps.is_empty()
            && self.distro_deps.values().all(Vec::is_empty)
            && self.steps.is_empty()
            && self.git_repos.is_empty()
    }
}

/// `parse:`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParseSpec {
    /// `pattern`: a regex with named groups `test_case_id` and `result` (and optionally
    /// `measurement`, `units`) applied to each line of the test's output.
    pub pattern: Option<String>,
    /// `fixupdict`: maps the test's own result words to pass/fail/skip/unknown.
    pub fixupdict: BTreeMap<String, String>,
}

/// A parsed test definition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestDefinition {
    /// `metadata`
    pub metadata: Metadata,
    /// `install`
    pub install: Install,
    /// `run.steps`
    pub run_steps: Vec<String>,
    /// `parse`
    pub parse: Option<ParseSpec>,
    /// `params` then `parameters` of the definition: default values of the run's variables,
    /// as shell text (LAVA's spelling of YAML values, e.g. `True` for true).
    pub params: Vec<(String, String)>,
    /// `expected`: the test cases the definition should report.
    pub expected: Vec<String>,
    /// The YAML as read.
    pub raw: Value,
}

impl TestDefinition {
    /// Reads a definition; `inline` applies the job schema's stricter rules. The error is
    /// `key: problem`.
    pub fn from_value(v: &Value, inline: bool) -> Result<TestDefinition, String> {
        let top = v
            .as_mapping()
            .ok_or_else(|| format!("the definition is {}, not a mapping", kind(v)))?;
        let meta = mapping(top, "metadata")?.ok_or("metadata: missing")?;
        let metadata = Metadata {
            format: opt_string(meta, "format", "metadata.")?,
            name: opt_string(meta, "name", "metadata.")?.ok_or("metadata.name: missing")?,
            description: opt_string(meta, "description", "metadata.")?,
            version: opt_string(meta, "version", "metadata.")?,
            os: word_list(meta, "os", "metadata.")?,
            devices: word_list(meta, "devices", "metadata.")?,
            scope: word_list(meta, "scope", "metadata.")?,
            environment: word_list(meta, "environment", "metadata.")?,
            maintainer: word_list(meta, "maintainer", "metadata.")?,
        };
        if inline && metadata.format.as_deref() != Some(FORMAT) {
            return Err(match &metadata.format {
                None => format!("metadata.format: missing (must be '{FORMAT}')"),
                Some(f) => format!("metadata.format: '{f}' (must be '{FORMAT}')"),
            });
        }
        let install = match mapping(top, "install")? {
            Some(m) => parse_install(m)?,
            None => Install::default(),
        };
        let run_steps = match mapping(top, "run")? {
            Some(run) => steps(run, "run.steps", "steps")?,
            None => Vec::new(),
        };
        let parse = match mapping(top, "parse")? {
            Some(p) => Some(parse_spec(p, inline)?),
            None => None,
        };
        let mut params = params(top, "params")?;
        params.extend(self::params(top, "parameters")?);
        Ok(TestDefinition {
            metadata,
            install,
            run_steps,
            parse,
            params,
            expected: word_list(top, "expected", "")?,
            raw: v.clone(),
        })
    }
}

/// What a YAML node is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn mapping<'a>(m: &'a Mapping, key: &str) -> Result<Option<&'a Mapping>, String> {
    match get(m, key) {
        None => Ok(None),
        Some(Value::Mapping(inner)) => Ok(Some(inner)),
        Some(other) => Err(format!("{key}: must be a mapping, not {}", kind(other))),
    }
}

/// A scalar as text (numbers and booleans as YAML wrote them).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn opt_string(m: &Mapping, key: &str, prefix: &str) -> Result<Option<String>, String> {
    match get(m, key) {
        None => Ok(None),
        Some(v) => scalar_text(v)
            .map(Some)
            .ok_or_else(|| format!("{prefix}{key}: must be a string, not {}", kind(v))),
    }
}

/// A list of scalars (a single scalar is taken as a one-item list).
fn word_list(m: &Mapping, key: &str, prefix: &str) -> Result<Vec<String>, String> {
    match get(m, key) {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| {
                scalar_text(v)
                    .ok_or_else(|| format!("{prefix}{key}[{i}]: must be a string, not {}", kind(v)))
            })
            .collect(),
        Some(v) => scalar_text(v)
            .map(|s| vec![s])
            .ok_or_else(|| format!("{prefix}{key}: must be a list of strings, not {}", kind(v))),
    }
}

/// Shell steps: strings only; null entries skipped.
fn steps(m: &Mapping, label: &str, key: &str) -> Result<Vec<String>, String> {
    match get(m, key) {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Mapping(_) => Err(format!(
                    "{label}[{i}]: is a mapping, not a string: quote a step that contains ': '"
                )),
                other => Err(format!(
                    "{label}[{i}]: must be a string, not {}",
                    kind(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "{label}: must be a list of strings, not {}",
            kind(other)
        )),
    }
}

fn parse_install(m: &Mapping) -> Result<Install, String> {
    let mut install = Install {
        keys: steps(m, "install.keys", "keys")?,
        sources: steps(m, "install.sources", "sources")?,
        deps: word_list(m, "deps", "install.")?,
        steps: steps(m, "install.steps", "steps")?,
        ..Install::default()
    };
    for (k, _) in m {
        if let Some(distro) = k.as_str().and_then(|k| k.strip_prefix("deps-")) {
            let key = format!("deps-{distro}");
            install
                .distro_deps
                .insert(distro.to_string(), word_list(m, &key, "install.")?);
        }
    }
    match get(m, "git-repos") {
        None => {}
        Some(Value::Sequence(items)) => {
            for (i, item) in items.iter().enumerate() {
                let label = format!("install.git-repos[{i}]");
                install.git_repos.push(match item {
                    Value::String(url) => GitRepo {
                        url: url.clone(),
                        branch: None,
                        destination: None,
                    },
                    Value::Mapping(r) => GitRepo {
                        url: opt_string(r, "url", &format!("{label}."))?
                            .ok_or(format!("{label}.url: missing"))?,
                        branch: opt_string(r, "branch", &format!("{label}."))?,
                        destination: opt_string(r, "destination", &format!("{label}."))?,
                    },
                    other => {
                        return Err(format!(
                            "{label}: must be a URL or a mapping, not {}",
                            kind(other)
                        ))
                    }
                });
            }
        }
        Some(other) => {
            return Err(format!(
                "install.git-repos: must be a list, not {}",
                kind(other)
            ))
        }
    }
    Ok(install)
}

/// `strict`: fixupdict values must be results (LAVA's job schema, for inline definitions;
/// LAVA's own `params.yaml` maps to `PASS`, which only a file definition may do).
fn parse_spec(m: &Mapping, strict: bool) -> Result<ParseSpec, String> {
    let pattern = match get(m, "pattern") {
        None => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(other) => {
            return Err(format!(
                "parse.pattern: must be a string, not {}",
                kind(other)
            ))
        }
    };
    let mut fixupdict = BTreeMap::new();
    if let Some(fix) = mapping(m, "fixupdict").map_err(|e| format!("parse.{e}"))? {
        for (k, v) in fix {
            let key = scalar_text(k).ok_or("parse.fixupdict: keys must be strings")?;
            let value = scalar_text(v).unwrap_or_default();
            if strict && !matches!(value.as_str(), "pass" | "fail" | "skip" | "unknown") {
                return Err(format!(
                    "parse.fixupdict.{key}: must be pass, fail, skip or unknown, not {}",
                    scalar_text(v).map_or_else(|| kind(v).to_string(), |s| format!("'{s}'"))
                ));
            }
            fixupdict.insert(key, value);
        }
    }
    Ok(ParseSpec { pattern, fixupdict })
}

/// `params` / `parameters` of a definition, in order, as shell text.
pub(crate) fn params(m: &Mapping, key: &str) -> Result<Vec<(String, String)>, String> {
    match get(m, key) {
        None => Ok(Vec::new()),
        Some(Value::Mapping(p)) => param_list(p).map_err(|e| format!("{key}.{e}")),
        Some(other) => Err(format!("{key}: must be a mapping, not {}", kind(other))),
    }
}

/// Parameters as (name, shell text); names must be shell variable names.
pub fn param_list(p: &Mapping) -> Result<Vec<(String, String)>, String> {
    p.iter()
        .map(|(k, v)| {
            let name = scalar_text(k).ok_or("a parameter name must be a string")?;
            if !is_shell_name(&name) {
                return Err(format!(
                    "{name}: not a shell variable name (letters, digits, '_')"
                ));
            }
            Ok((name, python_text(v)))
        })
        .collect()
}

/// Whether `s` can name a shell variable.
pub fn is_shell_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A YAML value as LAVA's Python writes it into run.sh (`str()` of the loaded value).
fn python_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Mapping(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", python_repr(k), python_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Tagged(t) => python_text(&t.value),
    }
}

fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => python_text(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(yaml: &str, inline: bool) -> Result<TestDefinition, String> {
        TestDefinition::from_value(&serde_yaml_ng::from_str(yaml).unwrap(), inline)
    }

    #[test]
    fn lava_params_example() {
        // LAVA's own file, read where the lab keeps LAVA's reference data (not copied here).
        let path = "/work/shared/lava-reference/tests/lava_dispatcher/testdefs/params.yaml";
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipped: {path} is not there");
            return;
        };
        // LAVA's own example maps to upper case, which its job schema refuses inline.
        assert!(def(&text, true)
            .unwrap_err()
            .contains("parse.fixupdict.pass"));
        let d = def(&text, false).unwrap();
        assert_eq!(d.metadata.name, "parameters-test");
        assert_eq!(d.metadata.os, ["ubuntu"]);
        assert_eq!(d.metadata.devices.len(), 5);
        assert_eq!(d.run_steps.len(), 18);
        assert_eq!(
            d.run_steps[4],
            "lava-test-case echo1 --shell echo \"test1b:\" \"pass\""
        );
        let parse = d.parse.unwrap();
        assert_eq!(
            parse.pattern.as_deref(),
            Some("(?P<test_case_id>.*-*):\\s+(?P<result>(pass|fail))")
        );
        assert_eq!(parse.fixupdict["fail"], "UNKNOWN");
        assert!(def(&text, false).is_ok());
        assert_eq!(
            d.params,
            [
                ("VARIABLE_NAME_1".into(), "value_1".into()),
                ("VARIABLE_NAME_2".into(), "value_2".into())
            ]
        );
    }

    #[test]
    fn full_definition() {
        let d = def(
            r#"
metadata: {format: Lava-Test Test Definition 1.0, name: smoke, description: d, scope: functional}
install:
  deps: [curl, 7zip]
  deps-debian: [apt-utils]
  steps: [make]
  git-repos:
    - file:///srv/a.git
    - {url: /srv/b, branch: main, destination: bee}
params: {A: 1, B: true, C: null, D: [1, x], E: 1.5}
parameters: {A: overridden}
run:
  steps: [echo hi, null, "lava-test-case x --result pass"]
parse: {fixupdict: {PASS: pass, BROKEN: fail}}
expected: [x, y]
"#,
            true,
        )
        .unwrap();
        assert_eq!(d.metadata.scope, ["functional"]);
        assert_eq!(d.install.deps, ["curl", "7zip"]);
        assert_eq!(d.install.distro_deps["debian"], ["apt-utils"]);
        assert_eq!(d.install.git_repos[1].destination.as_deref(), Some("bee"));
        assert_eq!(d.run_steps, ["echo hi", "lava-test-case x --result pass"]);
        assert_eq!(d.parse.as_ref().unwrap().pattern, None);
        assert_eq!(d.expected, ["x", "y"]);
        let p: Vec<(&str, &str)> = d
            .params
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            p,
            [
                ("A", "1"),
                ("B", "True"),
                ("C", ""),
                ("D", "[1, 'x']"),
                ("E", "1.5"),
                ("A", "overridden")
            ]
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[1]", true, "not a mapping"),
            ("metadata: {name: x}", true, "metadata.format: missing"),
            ("metadata: {name: x, format: Lava-Test-Shell Test Definition 1.0}", true, "metadata.format: 'Lava"),
            ("metadata: {format: f}", false, "metadata.name: missing"),
            ("metadata: {name: x}\nrun: {steps: [echo a: b]}", false, "run.steps[0]: is a mapping"),
            ("metadata: {name: x}\nrun: {steps: [ok, 3]}", false, "run.steps[1]: must be a string"),
            ("metadata: {name: x}\nrun: {steps: echo}", false, "run.steps: must be a list"),
            ("metadata: {name: x}\nrun: [a]", false, "run: must be a mapping"),
            (
                "metadata: {name: x, format: Lava-Test Test Definition 1.0}\nparse: {fixupdict: {ok: good}}",
                true,
                "parse.fixupdict.ok: must be",
            ),
            ("metadata: {name: x}\nparse: {pattern: [a]}", false, "parse.pattern: must be a string"),
            ("metadata: {name: x}\nparams: {A-B: 1}", false, "params.A-B: not a shell variable"),
            ("metadata: {name: x}\nparameters: [a]", false, "parameters: must be a mapping"),
            ("metadata: {name: x}\ninstall: {git-repos: [{branch: b}]}", false, "install.git-repos[0].url: missing"),
            ("metadata: {name: x}\ninstall: {deps: {a: b}}", false, "install.deps: must be a list"),
        ];
        for (yaml, inline, want) in cases {
            let err = def(yaml, inline).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
        // A file definition may use another format, as LAVA's dispatcher allows.
        assert!(def(
            "metadata: {name: x, format: Lava-Test-Shell Test Definition 1.0}",
            false
        )
        .is_ok());
        assert!(def("metadata: {name: x}\nparse: {fixupdict: {ok: good}}", false).is_ok());
    }

    #[test]
    fn shell_names() {
        assert!(is_shell_name("_A9"));
        assert!(!is_shell_name("9A") && !is_shell_name("") && !is_shell_name("a b"));
    }
}
