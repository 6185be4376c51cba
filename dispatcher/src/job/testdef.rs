//! An inline test definition (`from: inline`, `repository: {metadata: …, run: …}`), checked
//! with LAVA's `testdef()` schema so a typo in it is caught before the board boots.
//!
//! One deliberate difference: LAVA's strict schema lists only `fixupdict` under `parse`, which
//! would refuse the `pattern` every parsing test definition needs; labboot accepts `pattern`.

use super::schema::{At, Check};

/// The only test definition format LAVA knows.
const FORMAT: &str = "Lava-Test Test Definition 1.0";

/// What a `fixupdict` may map results to.
const RESULTS: &[&str] = &["pass", "fail", "skip", "unknown"];

/// Checks an inline test definition.
pub fn inline_testdef(at: &At<'_>) -> Check<()> {
    at.keys(
        &[
            "metadata",
            "install",
            "parameters",
            "params",
            "parse",
            "run",
            "expected",
        ],
        &[],
    )?;
    metadata(&at.req("metadata")?)?;
    if let Some(i) = at.opt("install") {
        install(&i)?;
    }
    for key in ["parameters", "params"] {
        if let Some(p) = at.opt(key) {
            p.map()?;
        }
    }
    if let Some(p) = at.opt("parse") {
        p.keys(&["fixupdict", "pattern"], &[])?;
        if let Some(f) = p.opt("fixupdict") {
            for (_, v) in f.map()? {
                v.one_of(RESULTS)?;
            }
        }
        if let Some(pattern) = p.opt("pattern") {
            pattern.str()?;
        }
    }
    if let Some(r) = at.opt("run") {
        r.keys(&["steps"], &[])?;
        r.req("steps")?.strings(false)?;
    }
    if let Some(e) = at.opt("expected") {
        e.strings(false)?;
    }
    Ok(())
}

/// `metadata:` format and name are required.
fn metadata(at: &At<'_>) -> Check<()> {
    let lists = ["environment", "devices", "maintainer", "scope", "os"];
    let mut keys = vec!["format", "name", "description"];
    keys.extend(lists);
    at.keys(&keys, &[])?;
    at.req("format")?.one_of(&[FORMAT])?;
    at.req("name")?.str()?;
    if let Some(d) = at.opt("description") {
        d.str()?;
    }
    for key in lists {
        if let Some(l) = at.opt(key) {
            l.strings(false)?;
        }
    }
    Ok(())
}

/// `install:` lists of strings; `git-repos` items are URLs or `{url, branch, destination}`.
fn install(at: &At<'_>) -> Check<()> {
    let lists = ["deps", "keys", "steps", "sources"];
    for (name, value) in at.map()? {
        if lists.contains(&name.as_str())
            || name.strip_prefix("deps-").is_some_and(|s| !s.is_empty())
        {
            value.strings(false)?;
        } else if name == "git-repos" {
            for repo in value.items()? {
                if repo.node.as_str().is_some() {
                    continue;
                }
                repo.keys(&["url", "branch", "destination"], &[])?;
                repo.req("url")?.str()?;
                for key in ["branch", "destination"] {
                    if let Some(v) = repo.opt(key) {
                        v.str()?;
                    }
                }
            }
        } else {
            return Err(value.fail(
                "unknown key (install takes deps, deps-<os>, git-repos, keys, steps, sources)",
            ));
        }
    }
    Ok(())
}
