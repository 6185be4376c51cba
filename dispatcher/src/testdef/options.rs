//! Per-definition job options: `skip_install` and `lava-signal`.
//!
//! LAVA runs a definition's `install` section on the board unless the job's `skip_install`
//! lists its parts (`keys`, `sources`, `deps`, `steps`, `git-repos`, or `all`). labboot's boards
//! usually have no route to package mirrors, so here install is skipped unless asked for:
//! [`SkipInstall::default`] skips everything, and a job that gives `skip_install` gets LAVA's
//! meaning exactly ([`SkipInstall::from_list`]: what is not listed runs).
//! `lava-signal` chooses where the board writes signals ([`SignalChannel`]).

/// Which parts of a definition's `install` section are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipInstall {
    /// `keys`: `lava-add-keys`.
    pub keys: bool,
    /// `sources`: `lava-add-sources`.
    pub sources: bool,
    /// `deps` and `deps-<os>`: `lava-install-packages`.
    pub deps: bool,
    /// `steps`.
    pub steps: bool,
    /// `git-repos`: cloned into the test's directory by the dispatcher.
    pub git_repos: bool,
}

impl Default for SkipInstall {
    /// labboot's default: nothing of `install` runs.
    fn default() -> SkipInstall {
        SkipInstall::all()
    }
}

impl SkipInstall {
    /// Skip everything.
    pub fn all() -> SkipInstall {
        SkipInstall {
            keys: true,
            sources: true,
            deps: true,
            steps: true,
            git_repos: true,
        }
    }

    /// Skip nothing (LAVA's default when a job gives no `skip_install`).
    pub fn none() -> SkipInstall {
        SkipInstall {
            keys: false,
            sources: false,
            deps: false,
            steps: false,
            git_repos: false,
        }
    }

    /// A job's `skip_install` list, with LAVA's meaning; the error names the bad item.
    pub fn from_list<S: AsRef<str>>(items: &[S]) -> Result<SkipInstall, String> {
        let mut skip = SkipInstall::none();
        for item in items {
            match item.as_ref() {
                "keys" => skip.keys = true,
                "sources" => skip.sources = true,
                "deps" => skip.deps = true,
                "steps" => skip.steps = true,
                "git-repos" => skip.git_repos = true,
                "all" => skip = SkipInstall::all(),
                other => {
                    return Err(format!(
                        "skip_install: unknown item '{other}' (keys, sources, deps, steps, git-repos, all)"
                    ))
                }
            }
        }
        Ok(skip)
    }
}

/// Where the board-side scripts write signals (`lava-signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignalChannel {
    /// On the test's stdout, i.e. the console (LAVA's default).
    #[default]
    Stdout,
    /// To `/dev/kmsg` at KERN_EMERG, so the kernel prints each whole (stdout if not writable).
    Kmsg,
}

impl SignalChannel {
    /// `stdout` or `kmsg`.
    pub fn parse(s: &str) -> Option<SignalChannel> {
        match s {
            "stdout" => Some(SignalChannel::Stdout),
            "kmsg" => Some(SignalChannel::Kmsg),
            _ => None,
        }
    }

    /// The value as a job writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalChannel::Stdout => "stdout",
            SignalChannel::Kmsg => "kmsg",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_lists() {
        assert_eq!(SkipInstall::default(), SkipInstall::all());
        assert_eq!(
            SkipInstall::from_list::<&str>(&[]).unwrap(),
            SkipInstall::none()
        );
        let s = SkipInstall::from_list(&["deps", "git-repos"]).unwrap();
        assert!(s.deps && s.git_repos && !s.steps && !s.keys && !s.sources);
        assert_eq!(
            SkipInstall::from_list(&["steps", "all"]).unwrap(),
            SkipInstall::all()
        );
        assert!(SkipInstall::from_list(&["tests"])
            .unwrap_err()
            .contains("'tests'"));
        assert_eq!(SignalChannel::parse("kmsg"), Some(SignalChannel::Kmsg));
        assert_eq!(SignalChannel::parse("serial"), None);
    }
}
