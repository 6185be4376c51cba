//! The LAVA overlay: the test shell scripts and the job's test definitions, as a directory
//! the deploy puts into the board's root filesystem (ramdisk, NFS root or NBD initrd).
//!
//! Layout, under `<root>/lava-<job>/` (`/lava-<job>` on the board):
//!
//! ```text
//! bin/lava-test-runner, lava-test-case, …   the scripts (0755), see [`scripts`]
//! environment                               LAVA_OS, LAVA_SHELL: sourced by the runner
//! tests/stage-<block>.conf                  the definitions of one test block, in order
//! tests/<index>_<name>/                     one definition: the files of its git clone, then
//!     run.sh, install.sh                        its scripts (see [`runsh`]),
//!     uuid, lava-signal                         what the runner sends and how,
//!     testdef.yaml, testdef_metadata            the definition, as LAVA keeps it
//! results/                                  written on the board by the runner
//! ```
//!
//! The board runs one test block with [`OverlayInfo::runner_command`]. The scripts find
//! everything relative to themselves, so the same overlay also runs from a temporary
//! directory on the host (the tests do that under dash and busybox sh).
//!
//! Signals go to the console (stdout) unless a definition asks for `/dev/kmsg`: see
//! `scripts/lava-common-functions.sh` for why, and [`crate::signals`] for the reassembly of
//! a signal a kernel message cut in two.

pub mod files;
pub mod runsh;
pub mod scripts;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::testdef::{git, ParsePattern, ResolvedDefinition, RunTracker, SignalChannel, Source};

use files::{copy_tree, make_dir, write_file};
use runsh::shell_quote;

/// Choices of the board side the dispatcher cannot guess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayOptions {
    /// The interpreter of every script (`#!` line and the runner's), default `/bin/sh`
    /// (LAVA's `lava_test_sh_cmd`).
    pub shell: String,
    /// Where `root` is on the board, default `/`: only changes the commands in [`OverlayInfo`].
    pub board_root: String,
}

impl Default for OverlayOptions {
    fn default() -> OverlayOptions {
        OverlayOptions {
            shell: "/bin/sh".to_string(),
            board_root: "/".to_string(),
        }
    }
}

/// One test definition in the overlay.
#[derive(Debug, Clone)]
pub struct SuiteInfo {
    /// The results suite, `<index>_<name>`.
    pub suite: String,
    /// The suite index.
    pub index: usize,
    /// The job's test block that runs it.
    pub block: usize,
    /// The uuid in its STARTRUN/ENDRUN.
    pub uuid: String,
    /// Its `parse.pattern`.
    pub pattern: Option<String>,
    /// Its `parse.fixupdict`.
    pub fixupdict: BTreeMap<String, String>,
    /// Both, compiled.
    pub parser: ParsePattern,
    /// Where it came from (one line, for the log).
    pub source: String,
    /// The commit of a git definition.
    pub commit: Option<String>,
    /// Its `expected` test cases.
    pub expected: Vec<String>,
}

/// What the test shell needs to know about a written overlay.
#[derive(Debug, Clone)]
pub struct OverlayInfo {
    /// The overlay on the host: `<root>/lava-<job>`.
    pub dir: PathBuf,
    /// The overlay on the board: `/lava-<job>`.
    pub board_dir: String,
    /// Every definition, in suite order.
    pub suites: Vec<SuiteInfo>,
}

impl OverlayInfo {
    /// The test blocks that have definitions, in order.
    pub fn blocks(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.suites.iter().map(|s| s.block).collect();
        set.into_iter().collect()
    }

    /// The definitions test block `block` runs, in order.
    pub fn tests_of_block(&self, block: usize) -> Vec<&SuiteInfo> {
        self.suites.iter().filter(|s| s.block == block).collect()
    }

    /// The command that runs test block `block` on the board.
    pub fn runner_command(&self, block: usize) -> String {
        format!("{0}/bin/lava-test-runner {0}/tests {block}", self.board_dir)
    }

    /// A tracker for the output of test block `block`.
    pub fn tracker(&self, block: usize) -> RunTracker {
        RunTracker::new(
            self.tests_of_block(block)
                .into_iter()
                .map(|s| (s.suite.clone(), s.parser.clone())),
        )
    }
}

/// Writes the overlay of job `job_id` for `defs` under `root`, for a board running `os`,
/// with the default [`OverlayOptions`].
pub fn write_overlay(
    root: &Path,
    job_id: &str,
    defs: &[ResolvedDefinition],
    os: &str,
) -> Result<OverlayInfo> {
    write_overlay_with(root, job_id, defs, os, &OverlayOptions::default())
}

/// [`write_overlay`] with explicit options. A previous overlay of the same job is replaced.
pub fn write_overlay_with(
    root: &Path,
    job_id: &str,
    defs: &[ResolvedDefinition],
    os: &str,
    opts: &OverlayOptions,
) -> Result<OverlayInfo> {
    check_inputs(job_id, defs, opts)?;
    let dir = root.join(format!("lava-{job_id}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::infra(format!("overlay: remove the old {}: {e}", dir.display())))?;
    }
    let bin = dir.join("bin");
    let tests = dir.join("tests");
    make_dir(&bin)?;
    make_dir(&tests)?;
    for (name, text) in scripts::SCRIPTS {
        write_file(
            &bin.join(name),
            scripts::with_shell(text, &opts.shell).as_bytes(),
            0o755,
        )?;
    }
    let environment = format!(
        "# Sourced by lava-test-runner.\nLAVA_OS={}\nLAVA_SHELL={}\nexport LAVA_OS LAVA_SHELL\n",
        shell_quote(os),
        shell_quote(&opts.shell)
    );
    write_file(&dir.join("environment"), environment.as_bytes(), 0o644)?;

    let mut ordered: Vec<&ResolvedDefinition> = defs.iter().collect();
    ordered.sort_by_key(|d| d.index);
    let mut stages: BTreeMap<usize, String> = BTreeMap::new();
    let mut suites = Vec::new();
    for def in ordered {
        let suite = def.suite();
        write_test(&tests.join(&suite), def, job_id, os, opts)
            .map_err(|e| e.context(format!("test definition {} '{}'", def.index, def.name)))?;
        stages
            .entry(def.block)
            .or_default()
            .push_str(&format!("{suite}\n"));
        suites.push(SuiteInfo {
            suite,
            index: def.index,
            block: def.block,
            uuid: def.uuid(job_id),
            pattern: def.parser.pattern().map(str::to_string),
            fixupdict: def.parser.fixupdict().clone(),
            parser: def.parser.clone(),
            source: def.describe_source(),
            commit: match &def.source {
                Source::Git { commit, .. } => Some(commit.clone()),
                _ => None,
            },
            expected: def.definition.expected.clone(),
        });
    }
    for (block, list) in &stages {
        write_file(
            &tests.join(format!("stage-{block}.conf")),
            list.as_bytes(),
            0o644,
        )?;
    }
    let board_root = opts.board_root.trim_end_matches('/');
    Ok(OverlayInfo {
        dir,
        board_dir: format!("{board_root}/lava-{job_id}"),
        suites,
    })
}

/// Names LAVA allows in paths and signals.
fn is_word(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_inputs(job_id: &str, defs: &[ResolvedDefinition], opts: &OverlayOptions) -> Result<()> {
    if !is_word(job_id) {
        return Err(Error::bug(format!(
            "overlay: job id '{job_id}' cannot name a directory"
        )));
    }
    if opts.shell.trim().is_empty() || opts.shell.contains('\n') {
        return Err(Error::config(format!(
            "overlay: '{}' is not a shell",
            opts.shell
        )));
    }
    let mut names = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    for d in defs {
        if !is_word(&d.name) {
            return Err(Error::job(format!(
                "test definition {}: name '{}' is not allowed",
                d.index, d.name
            )));
        }
        if !names.insert(d.name.as_str()) {
            return Err(Error::job(format!(
                "test definition names must be unique: '{}' is used more than once",
                d.name
            )));
        }
        if !indexes.insert(d.index) {
            return Err(Error::bug(format!(
                "overlay: two test definitions have index {}",
                d.index
            )));
        }
    }
    Ok(())
}

/// Writes one definition's directory.
fn write_test(
    dir: &Path,
    def: &ResolvedDefinition,
    job_id: &str,
    os: &str,
    opts: &OverlayOptions,
) -> Result<()> {
    make_dir(dir)?;
    if let Some(checkout) = &def.checkout {
        copy_tree(checkout.path(), dir)?;
    }
    if !def.skip_install.git_repos {
        clone_install_repos(dir, def)?;
    }
    write_file(
        &dir.join("run.sh"),
        runsh::run_sh(def, &opts.shell).as_bytes(),
        0o755,
    )?;
    if let Some(install) = runsh::install_sh(def, &opts.shell, os) {
        write_file(&dir.join("install.sh"), install.as_bytes(), 0o755)?;
    }
    write_file(&dir.join("uuid"), def.uuid(job_id).as_bytes(), 0o644)?;
    let signal = match def.signal {
        SignalChannel::Stdout => "stdout\n",
        SignalChannel::Kmsg => "kmsg\n",
    };
    write_file(&dir.join("lava-signal"), signal.as_bytes(), 0o644)?;
    let testdef = serde_yaml_ng::to_string(&def.definition.raw)
        .map_err(|e| Error::bug(format!("overlay: testdef.yaml: {e}")))?;
    write_file(&dir.join("testdef.yaml"), testdef.as_bytes(), 0o644)?;
    write_file(
        &dir.join("testdef_metadata"),
        metadata(def).as_bytes(),
        0o644,
    )
}

/// `testdef_metadata`, the summary LAVA leaves next to each definition.
fn metadata(def: &ResolvedDefinition) -> String {
    let m = &def.definition.metadata;
    let mut map = BTreeMap::new();
    let list = |v: &Vec<String>| {
        serde_yaml_ng::Value::Sequence(v.iter().map(|s| s.clone().into()).collect())
    };
    map.insert("os", list(&m.os));
    map.insert("devices", list(&m.devices));
    map.insert("environment", list(&m.environment));
    map.insert("branch_vcs", def.source.from().into());
    map.insert("project_name", m.name.clone().into());
    if let Source::Git { commit, .. } = &def.source {
        map.insert("commit_id", commit.clone().into());
    }
    serde_yaml_ng::to_string(&map).unwrap_or_default()
}

/// `install.git-repos`, cloned (local repositories only) into the definition's directory.
fn clone_install_repos(dir: &Path, def: &ResolvedDefinition) -> Result<()> {
    let vars = def.variables();
    // A value that names a variable is replaced by the variable's value, as LAVA does.
    let lookup = |v: &str| -> String {
        vars.iter()
            .rev()
            .find(|(k, _)| k == v)
            .map_or_else(|| v.to_string(), |(_, val)| val.clone())
    };
    for (i, repo) in def.definition.install.git_repos.iter().enumerate() {
        let key = format!("install.git-repos[{i}]");
        let url = lookup(&repo.url);
        let branch = repo.branch.as_deref().map(lookup);
        let Some(src) = git::local_path(&url) else {
            return Err(Error::job(format!(
                "{key}: '{url}' is remote: labboot only clones local git repositories (a path or file:// URL on the lab host)"
            )));
        };
        let default_name = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        let default_name = default_name
            .strip_suffix(".git")
            .unwrap_or(default_name)
            .to_string();
        let name = repo
            .destination
            .as_deref()
            .map(lookup)
            .unwrap_or(default_name);
        let mut parts = Path::new(&name).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(Error::job(format!(
                "{key}: destination '{name}' must be one directory name"
            )));
        }
        let dest = dir.join(&name);
        if dest.exists() {
            return Err(Error::job(format!(
                "{key}: destination '{name}' already exists"
            )));
        }
        git::clone(&src, branch.as_deref(), None, &dest).map_err(|e| e.context(&key))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
