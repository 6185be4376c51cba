//! Local git repositories: telling a local repository from a remote one, and cloning it.
//!
//! labboot runs on an appliance whose only way out is its lab network, so test repositories are
//! cloned only from the lab host itself (a path or a `file://` URL). The real `git` does the
//! clone (so every repository format, branch and revision works as it does for LAVA), with the
//! caller's `GIT_*` variables removed and prompts disabled; arguments that could be read as
//! options are refused before git sees them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The local path `url` names, or None for a remote repository (`scheme://`, `host:path`).
pub fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        return rest
            .starts_with('/')
            .then(|| PathBuf::from(percent_decode(rest)));
    }
    if url.contains("://") || url.is_empty() {
        return None;
    }
    // git's rule: a ':' before the first '/' makes an scp-like address (user@host:path).
    if let Some(colon) = url.find(':') {
        if !url[..colon].contains('/') {
            return None;
        }
    }
    Some(PathBuf::from(url))
}

/// `%xx` sequences decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `s` can be given to git as a branch or revision.
pub fn is_safe_ref(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@^~{}-+".contains(c))
}

/// A `git` command with the caller's repository variables removed.
fn git() -> Command {
    let mut cmd = Command::new("git");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CEILING_DIRECTORIES",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

/// Runs `cmd`; a failure is a JobError with git's own last lines of message.
fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::infra("git is not installed on the dispatcher host".to_string())
        } else {
            Error::infra(format!("{what}: cannot run git: {e}"))
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("; ");
        return Err(Error::job(format!("{what}: git failed: {tail}")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Clones the local repository `src` into the empty directory `dest`, checks out `branch` or
/// `revision`, and returns the commit checked out.
pub fn clone(
    src: &Path,
    branch: Option<&str>,
    revision: Option<&str>,
    dest: &Path,
) -> Result<String> {
    for (what, r) in [("branch", branch), ("revision", revision)] {
        if let Some(r) = r {
            if !is_safe_ref(r) {
                return Err(Error::job(format!("{what} '{r}' is not a git reference")));
            }
        }
    }
    if !src.exists() {
        return Err(Error::job(format!(
            "repository {} does not exist",
            src.display()
        )));
    }
    let mut cmd = git();
    cmd.args(["-c", "protocol.file.allow=always", "clone", "--quiet"]);
    if let Some(b) = branch {
        cmd.args(["--branch", b]);
    }
    cmd.arg("--").arg(src).arg(dest);
    run(cmd, &format!("clone {}", src.display()))?;
    if let Some(rev) = revision {
        let mut cmd = git();
        cmd.arg("-C").arg(dest).args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            rev,
            "--",
        ]);
        run(cmd, &format!("check out {rev} of {}", src.display()))?;
    }
    let mut cmd = git();
    cmd.arg("-C").arg(dest).args(["rev-parse", "HEAD"]);
    run(cmd, &format!("read the commit of {}", src.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_or_remote() {
        assert_eq!(
            local_path("/srv/git/tests.git"),
            Some("/srv/git/tests.git".into())
        );
        assert_eq!(local_path("./tests"), Some("./tests".into()));
        assert_eq!(
            local_path("file:///srv/my%20tests"),
            Some("/srv/my tests".into())
        );
        assert_eq!(local_path("file://localhost/srv/t"), Some("/srv/t".into()));
        assert_eq!(local_path("file://host/srv/t"), None);
        assert_eq!(local_path("git://git.linaro.org/lava-team/x.git"), None);
        assert_eq!(local_path("https://github.com/a/b"), None);
        assert_eq!(local_path("git@github.com:a/b.git"), None);
        assert_eq!(local_path("host:repo"), None);
        assert_eq!(
            local_path("./dir:with-colon"),
            Some("./dir:with-colon".into())
        );
        assert_eq!(local_path(""), None);
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("a%zz%41"), "a%zzA");
    }

    #[test]
    fn refs() {
        assert!(is_safe_ref("main") && is_safe_ref("v1.2^{}") && is_safe_ref("feature/x"));
        assert!(!is_safe_ref("--upload-pack=x") && !is_safe_ref("a b") && !is_safe_ref(""));
    }
}
