//! A job's `definitions` entry turned into a parsed definition: read inline, from a file or
//! URL, or from a local git clone.
//!
//! [`resolve`] does the I/O (reading files, `git clone`, the caller's `fetch` for http(s));
//! [`describe`] checks the same entry without any I/O, for `--validate`: it accepts remote git
//! repositories (LAVA's sample jobs name git.linaro.org), which only [`resolve`] refuses.
//! Every error is a JobError naming the definition (its index, name and job line) and the key.

use std::path::{Component, Path};
use std::sync::Arc;

use serde_yaml_ng::Value;

use super::definition::{param_list, TestDefinition};
use super::git;
use super::pattern::ParsePattern;
use super::{ResolvedDefinition, SignalChannel, SkipInstall, Source};
use crate::error::{Error, Result};
use crate::job::{Definition, DefinitionSource};

/// A definition entry checked without I/O (what `--validate` reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionSummary {
    /// The suite index.
    pub index: usize,
    /// The suite name, `<index>_<name>`.
    pub suite: String,
    /// `inline`, `url` or `git`.
    pub from: &'static str,
    /// `repository` (None for inline).
    pub repository: Option<String>,
    /// `path` inside a git repository.
    pub path: Option<String>,
    /// Whether running the job can fetch it (inline, a local file or repository, or http(s)).
    pub fetchable: bool,
}

/// `test definition 3 'smoke' (job line 61)`.
fn label(def: &Definition, index: usize) -> String {
    format!(
        "test definition {index} '{}' (job line {})",
        def.name, def.line
    )
}

/// A JobError about `def`.
fn job_err(def: &Definition, index: usize, msg: impl std::fmt::Display) -> Error {
    Error::job(format!("{}: {msg}", label(def, index)))
}

/// Checks the entry's name and the parts of its source that need no I/O.
pub fn describe(def: &Definition, index: usize) -> Result<DefinitionSummary> {
    check_name(def, index)?;
    param_list(&def.parameters).map_err(|e| job_err(def, index, format!("parameters.{e}")))?;
    let suite = format!("{index}_{}", def.name);
    Ok(match &def.source {
        DefinitionSource::Inline(v) => {
            TestDefinition::from_value(v, true)
                .map_err(|e| job_err(def, index, format!("repository.{e}")))?;
            DefinitionSummary {
                index,
                suite,
                from: "inline",
                repository: None,
                path: None,
                fetchable: true,
            }
        }
        DefinitionSource::Url { repository } => DefinitionSummary {
            index,
            suite,
            from: "url",
            fetchable: url_fetchable(repository),
            repository: Some(repository.clone()),
            path: None,
        },
        DefinitionSource::Git {
            repository,
            path,
            branch,
            revision,
        } => {
            check_repo_path(path).map_err(|e| job_err(def, index, e))?;
            for (key, r) in [("branch", branch), ("revision", revision)] {
                if let Some(r) = r {
                    if !git::is_safe_ref(r) {
                        return Err(job_err(
                            def,
                            index,
                            format!("{key}: '{r}' is not a git reference"),
                        ));
                    }
                }
            }
            DefinitionSummary {
                index,
                suite,
                from: "git",
                fetchable: git::local_path(repository).is_some(),
                repository: Some(repository.clone()),
                path: Some(path.clone()),
            }
        }
    })
}

/// Reads, clones or fetches the definition `def`, whose suite index is `index` (its position
/// among all the job's definitions). `fetch` gets the http(s) URLs of `from: url`.
pub fn resolve(
    def: &Definition,
    index: usize,
    fetch: &dyn Fn(&str) -> Result<Vec<u8>>,
) -> Result<ResolvedDefinition> {
    describe(def, index)?;
    let parameters =
        param_list(&def.parameters).map_err(|e| job_err(def, index, format!("parameters.{e}")))?;
    let (definition, source, checkout) = match &def.source {
        DefinitionSource::Inline(v) => {
            let d = TestDefinition::from_value(v, true)
                .map_err(|e| job_err(def, index, format!("repository.{e}")))?;
            (d, Source::Inline, None)
        }
        DefinitionSource::Url { repository } => {
            let bytes = match git::local_path(repository) {
                Some(p) => std::fs::read(&p).map_err(|e| {
                    job_err(
                        def,
                        index,
                        format!("repository: cannot read {}: {e}", p.display()),
                    )
                })?,
                None if url_fetchable(repository) => {
                    fetch(repository).map_err(|e| e.context(label(def, index)))?
                }
                None => {
                    return Err(job_err(
                        def,
                        index,
                        format!(
                            "repository: '{repository}' is neither a local file nor an http(s) URL"
                        ),
                    ))
                }
            };
            let d = from_bytes(&bytes)
                .map_err(|e| job_err(def, index, format!("{repository}: {e}")))?;
            (
                d,
                Source::Url {
                    repository: repository.clone(),
                },
                None,
            )
        }
        DefinitionSource::Git {
            repository,
            path,
            branch,
            revision,
        } => {
            let Some(local) = git::local_path(repository) else {
                return Err(job_err(
                    def,
                    index,
                    format!(
                        "repository: '{repository}' is remote: labboot only clones local git \
                         repositories (a path or file:// URL on the lab host); mirror it there"
                    ),
                ));
            };
            let dir = tempfile::Builder::new()
                .prefix("labboot-testdef-")
                .tempdir()
                .map_err(|e| {
                    Error::infra(format!("{}: temporary directory: {e}", label(def, index)))
                })?;
            let commit = git::clone(&local, branch.as_deref(), revision.as_deref(), dir.path())
                .map_err(|e| e.context(label(def, index)))?;
            let file = dir.path().join(path);
            let bytes = std::fs::read(&file).map_err(|e| {
                job_err(
                    def,
                    index,
                    format!("path: cannot read '{path}' in {repository}: {e}"),
                )
            })?;
            let d = from_bytes(&bytes)
                .map_err(|e| job_err(def, index, format!("{repository} {path}: {e}")))?;
            let source = Source::Git {
                repository: repository.clone(),
                path: path.clone(),
                branch: branch.clone(),
                revision: revision.clone(),
                commit,
            };
            (d, source, Some(Arc::new(dir)))
        }
    };
    let parse = definition.parse.clone().unwrap_or_default();
    let parser = ParsePattern::new(parse.pattern.as_deref(), parse.fixupdict)
        .map_err(|e| job_err(def, index, e))?;
    Ok(ResolvedDefinition {
        index,
        block: 0,
        name: def.name.clone(),
        definition,
        parameters,
        source,
        checkout,
        parser,
        skip_install: SkipInstall::default(),
        signal: SignalChannel::default(),
        level: None,
    })
}

/// A definition from a file's bytes.
fn from_bytes(bytes: &[u8]) -> std::result::Result<TestDefinition, String> {
    let v: Value =
        serde_yaml_ng::from_slice(bytes).map_err(|e| format!("not a YAML test definition: {e}"))?;
    TestDefinition::from_value(&v, false)
}

/// LAVA's rule for names (`^[-_a-zA-Z0-9.]+$`), and `lava` is the job's own suite.
fn check_name(def: &Definition, index: usize) -> Result<()> {
    let ok = !def.name.is_empty()
        && def
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(job_err(
            def,
            index,
            "name: only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    if def.name == "lava" {
        return Err(job_err(
            def,
            index,
            "name: 'lava' is reserved for the job's own results",
        ));
    }
    Ok(())
}

/// A `path` inside a repository: relative, never above it.
fn check_repo_path(path: &str) -> std::result::Result<(), String> {
    let p = Path::new(path);
    let inside = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "path: '{path}' must be a relative path inside the repository"
        ))
    }
}

fn url_fetchable(url: &str) -> bool {
    git::local_path(url).is_some() || url.starts_with("http://") || url.starts_with("https://")
}
