//! Resolving definitions from every source, with real files and a real git repository.

use std::path::Path;
use std::process::Command;

use serde_yaml_ng::{Mapping, Value};

use super::*;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{Definition, DefinitionSource};

const DEF: &str = "metadata:\n  format: Lava-Test Test Definition 1.0\n  name: smoke\nrun:\n  steps:\n    - echo one\n";

fn entry(name: &str, source: DefinitionSource) -> Definition {
    let mut parameters = Mapping::new();
    parameters.insert("COUNT".into(), 3.into());
    Definition {
        name: name.into(),
        source,
        parameters,
        line: 12,
    }
}

fn no_fetch(url: &str) -> Result<Vec<u8>> {
    Err(Error::infra(format!("no network for {url}")))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn inline() {
    let v: Value = serde_yaml_ng::from_str(DEF).unwrap();
    let r = resolve(&entry("smoke", DefinitionSource::Inline(v)), 3, &no_fetch).unwrap();
    assert_eq!(r.suite(), "3_smoke");
    assert_eq!(r.definition.run_steps, ["echo one"]);
    assert_eq!(r.variables(), [("COUNT".to_string(), "3".to_string())]);
    assert_eq!(r.describe_source(), "inline");
    assert_eq!(r.uuid("42"), "42_3");
    assert_eq!(r.skip_install, SkipInstall::all());
    let copy = r.clone();
    assert_eq!(copy.suite(), "3_smoke");
}

#[test]
fn url_local_file_and_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("smoke.yaml");
    std::fs::write(&file, DEF).unwrap();
    for repo in [
        file.display().to_string(),
        format!("file://{}", file.display()),
    ] {
        let r = resolve(
            &entry("s", DefinitionSource::Url { repository: repo }),
            0,
            &no_fetch,
        )
        .unwrap();
        assert_eq!(r.definition.metadata.name, "smoke");
    }
    let fetch = |url: &str| -> Result<Vec<u8>> {
        assert_eq!(url, "https://lab.example/smoke.yaml");
        Ok(DEF.as_bytes().to_vec())
    };
    let src = DefinitionSource::Url {
        repository: "https://lab.example/smoke.yaml".into(),
    };
    let r = resolve(&entry("s", src.clone()), 0, &fetch).unwrap();
    assert_eq!(r.describe_source(), "url https://lab.example/smoke.yaml");
    let e = resolve(&entry("s", src), 0, &no_fetch).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError);
    assert!(
        e.message
            .starts_with("test definition 0 's' (job line 12): "),
        "{e}"
    );
    let missing = DefinitionSource::Url {
        repository: "/nonexistent/x.yaml".into(),
    };
    let e = resolve(&entry("s", missing), 0, &no_fetch).unwrap_err();
    assert!(
        e.kind == ErrorKind::JobError && e.message.contains("cannot read /nonexistent/x.yaml"),
        "{e}"
    );
}

#[test]
fn git_local_branch_revision_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("tests");
    std::fs::create_dir_all(repo.join("defs")).unwrap();
    git(&repo, &["init", "--quiet"]);
    std::fs::write(repo.join("defs/smoke.yaml"), DEF).unwrap();
    std::fs::write(repo.join("helper.sh"), "echo helper\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(
        repo.join("defs/smoke.yaml"),
        DEF.replace("echo one", "echo two"),
    )
    .unwrap();
    git(&repo, &["commit", "--quiet", "-am", "two"]);
    git(&repo, &["branch", "old", &first]);
    let second = git(&repo, &["rev-parse", "HEAD"]);

    let src = |branch: Option<&str>, revision: Option<&str>, path: &str| DefinitionSource::Git {
        repository: repo.display().to_string(),
        path: path.into(),
        branch: branch.map(str::to_string),
        revision: revision.map(str::to_string),
    };
    let head = resolve(
        &entry("smoke", src(None, None, "defs/smoke.yaml")),
        1,
        &no_fetch,
    )
    .unwrap();
    assert_eq!(head.definition.run_steps, ["echo two"]);
    assert!(matches!(&head.source, Source::Git { commit, .. } if *commit == second));
    let checkout = head.checkout.as_ref().unwrap().path();
    assert!(checkout.join("helper.sh").is_file());
    assert!(head
        .describe_source()
        .ends_with(&format!("defs/smoke.yaml @ {second}")));

    let by_branch = resolve(
        &entry("smoke", src(Some("old"), None, "defs/smoke.yaml")),
        1,
        &no_fetch,
    )
    .unwrap();
    assert_eq!(by_branch.definition.run_steps, ["echo one"]);
    let by_rev = resolve(
        &entry("smoke", src(None, Some(&first), "./defs/smoke.yaml")),
        1,
        &no_fetch,
    )
    .unwrap();
    assert!(matches!(&by_rev.source, Source::Git { commit, .. } if *commit == first));

    let err = |s: DefinitionSource| resolve(&entry("smoke", s), 1, &no_fetch).unwrap_err();
    let e = err(src(Some("nope"), None, "defs/smoke.yaml"));
    assert!(
        e.kind == ErrorKind::JobError && e.message.contains("git failed"),
        "{e}"
    );
    let e = err(src(None, None, "defs/missing.yaml"));
    assert!(
        e.message.contains("path: cannot read 'defs/missing.yaml'"),
        "{e}"
    );
    let e = err(src(None, None, "../escape.yaml"));
    assert!(e.message.contains("must be a relative path inside"), "{e}");
    let e = err(src(None, Some("--upload-pack=evil"), "defs/smoke.yaml"));
    assert!(
        e.message
            .contains("revision: '--upload-pack=evil' is not a git reference"),
        "{e}"
    );

    let file_url = DefinitionSource::Git {
        repository: format!("file://{}", repo.display()),
        path: "defs/smoke.yaml".into(),
        branch: None,
        revision: None,
    };
    assert!(resolve(&entry("smoke", file_url), 0, &no_fetch).is_ok());
}

#[test]
fn remote_git_is_refused_but_describes() {
    let src = DefinitionSource::Git {
        repository: "git://git.linaro.org/lava-team/lava-functional-tests.git".into(),
        path: "lava-test-shell/smoke-tests-basic.yaml".into(),
        branch: None,
        revision: None,
    };
    let def = entry("smoke-tests", src);
    let e = resolve(&def, 0, &no_fetch).unwrap_err();
    assert_eq!(e.kind, ErrorKind::JobError);
    assert!(
        e.message.contains("only clones local git repositories"),
        "{e}"
    );
    let d = describe(&def, 0).unwrap();
    assert_eq!(
        (d.suite.as_str(), d.from, d.fetchable),
        ("0_smoke-tests", "git", false)
    );
}

#[test]
fn bad_entries_name_definition_and_key() {
    let v: Value = serde_yaml_ng::from_str(DEF).unwrap();
    let e = describe(&entry("bad name", DefinitionSource::Inline(v.clone())), 2).unwrap_err();
    assert!(
        e.message
            .starts_with("test definition 2 'bad name' (job line 12): name:"),
        "{e}"
    );
    assert!(describe(&entry("lava", DefinitionSource::Inline(v.clone())), 0).is_err());

    let bad: Value = serde_yaml_ng::from_str("metadata: {name: x}\nrun: {steps: [a: b]}").unwrap();
    let e = resolve(&entry("x", DefinitionSource::Inline(bad)), 0, &no_fetch).unwrap_err();
    assert!(
        e.message.contains("repository.metadata.format: missing"),
        "{e}"
    );

    let mut with_bad_param = entry("x", DefinitionSource::Inline(v.clone()));
    with_bad_param
        .parameters
        .insert("NOT-A-NAME".into(), "1".into());
    let e = describe(&with_bad_param, 0).unwrap_err();
    assert!(
        e.message
            .contains("parameters.NOT-A-NAME: not a shell variable"),
        "{e}"
    );

    let bad_pattern: Value =
        serde_yaml_ng::from_str(&format!("{DEF}parse:\n  pattern: '(?P<x>'\n")).unwrap();
    let e = resolve(
        &entry("x", DefinitionSource::Inline(bad_pattern)),
        0,
        &no_fetch,
    )
    .unwrap_err();
    assert!(
        e.message.contains("parse.pattern: not a usable regex"),
        "{e}"
    );
}
