//! Test definitions: LAVA's Lava-Test Test Definition 1.0, resolved from a job's
//! `definitions` entries, and the bookkeeping of their results on the console.
//!
//! * [`definition`]: the YAML format, checked with key-naming errors.
//! * [`resolve`]: inline, file/URL and local git sources; a no-I/O `describe` for validation.
//! * [`git`]: local clones with the real git.
//! * [`options`]: `skip_install` and `lava-signal`.
//! * [`pattern`]: `parse.pattern` and `fixupdict`.
//! * [`tracker`]: console lines to results, as LAVA's test shell action records them.
//!
//! The board side (run.sh, the runner and its helpers) is written by [`crate::overlay`].

pub mod definition;
pub mod git;
pub mod options;
pub mod pattern;
pub mod resolve;
pub mod tracker;

use std::sync::Arc;

pub use definition::TestDefinition;
pub use options::{SignalChannel, SkipInstall};
pub use pattern::ParsePattern;
pub use resolve::{describe, resolve, DefinitionSummary};
pub use tracker::{RunTracker, Tracked};

/// Where a resolved definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `from: inline`
    Inline,
    /// `from: url`
    Url {
        /// `repository`
        repository: String,
    },
    /// `from: git`, cloned.
    Git {
        /// `repository`
        repository: String,
        /// `path`
        path: String,
        /// `branch`
        branch: Option<String>,
        /// `revision`
        revision: Option<String>,
        /// The commit checked out.
        commit: String,
    },
}

impl Source {
    /// `inline`, `url` or `git`.
    pub fn from(&self) -> &'static str {
        match self {
            Source::Inline => "inline",
            Source::Url { .. } => "url",
            Source::Git { .. } => "git",
        }
    }
}

/// A job's definition entry, read and checked, ready for the overlay.
#[derive(Debug, Clone)]
pub struct ResolvedDefinition {
    /// The suite index: the definition's position among all the job's definitions.
    pub index: usize,
    /// The job's test block the definition belongs to: the runner runs one block at a time.
    pub block: usize,
    /// The job's `name` for it.
    pub name: String,
    /// The definition.
    pub definition: TestDefinition,
    /// The job's `parameters`, as shell text; they override the definition's `params`.
    pub parameters: Vec<(String, String)>,
    /// Where it came from.
    pub source: Source,
    /// The git clone (copied into the test's directory on the board).
    pub checkout: Option<Arc<tempfile::TempDir>>,
    /// Its compiled `parse` section.
    pub parser: ParsePattern,
    /// What of `install` is skipped (default: all of it, see [`SkipInstall`]).
    pub skip_install: SkipInstall,
    /// Where the board writes its signals.
    pub signal: SignalChannel,
    /// The pipeline level of its repo action (makes LAVA's uuid `<job>_<level>`).
    pub level: Option<String>,
}

impl ResolvedDefinition {
    /// The results suite, `<index>_<name>` as LAVA names it.
    pub fn suite(&self) -> String {
        format!("{}_{}", self.index, self.name)
    }

    /// The definition's uuid in the STARTRUN/ENDRUN signals: `<job>_<level>` as LAVA makes it
    /// (`<job>_<index>` without a level).
    pub fn uuid(&self, job_id: &str) -> String {
        match &self.level {
            Some(level) => format!("{job_id}_{level}"),
            None => format!("{job_id}_{}", self.index),
        }
    }

    /// One line for the log: `inline`, `url <repository>`, `git <repository> <path> @ <commit>`.
    pub fn describe_source(&self) -> String {
        match &self.source {
            Source::Inline => "inline".to_string(),
            Source::Url { repository } => format!("url {repository}"),
            Source::Git {
                repository,
                path,
                commit,
                ..
            } => format!("git {repository} {path} @ {commit}"),
        }
    }

    /// The run's variables in assignment order: the definition's `params`/`parameters`, then
    /// the job's `parameters` (the last assignment of a name wins).
    pub fn variables(&self) -> Vec<(String, String)> {
        let mut v = self.definition.params.clone();
        v.extend(self.parameters.iter().cloned());
        v
    }
}

#[cfg(test)]
mod tests;
