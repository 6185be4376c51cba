//! The overlay's layout, modes, generated scripts and refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Mapping;

use super::*;
use crate::error::ErrorKind;
use crate::job::{Definition, DefinitionSource};
use crate::testdef::{resolve, SkipInstall};

fn inline(name: &str, index: usize, yaml: &str) -> ResolvedDefinition {
    let def = Definition {
        name: name.into(),
        source: DefinitionSource::Inline(serde_yaml_ng::from_str(yaml).unwrap()),
        parameters: Mapping::new(),
        line: 1,
    };
    resolve(&def, index, &|u: &str| Err(Error::infra(u.to_string()))).unwrap()
}

const BASIC: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: basic}
params: {GREETING: "it's me"}
install:
  deps: [curl]
  deps-debian: [apt-utils]
  steps: [make -C src]
run:
  steps:
    - echo "$GREETING"
    - lava-test-case x --shell awk '{print $1}' /etc/hostname
"#;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn layout_and_modes() {
    let root = tempfile::tempdir().unwrap();
    let mut a = inline("basic", 0, BASIC);
    a.parameters.push(("GREETING".into(), "hello".into()));
    let mut b = inline(
        "second",
        1,
        "metadata: {format: Lava-Test Test Definition 1.0, name: s}\n",
    );
    b.block = 4;
    b.signal = SignalChannel::Kmsg;
    b.level = Some("1.5.2.1".into());
    let info = write_overlay(root.path(), "42", &[b, a], "debian").unwrap();

    let dir = root.path().join("lava-42");
    assert_eq!(info.dir, dir);
    assert_eq!(info.board_dir, "/lava-42");
    assert_eq!(
        info.runner_command(4),
        "/lava-42/bin/lava-test-runner /lava-42/tests 4"
    );
    assert_eq!(info.blocks(), [0, 4]);
    assert_eq!(info.tests_of_block(0)[0].suite, "0_basic");
    assert_eq!(info.tests_of_block(4)[0].uuid, "42_1.5.2.1");
    for (name, _) in scripts::SCRIPTS {
        assert_eq!(mode(&dir.join("bin").join(name)), 0o755, "{name}");
    }
    assert_eq!(mode(&dir.join("tests/0_basic/run.sh")), 0o755);
    assert_eq!(mode(&dir.join("tests/0_basic")), 0o755);
    assert_eq!(mode(&dir.join("tests/0_basic/uuid")), 0o644);
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert_eq!(read("tests/stage-0.conf"), "0_basic\n");
    assert_eq!(read("tests/stage-4.conf"), "1_second\n");
    assert_eq!(read("tests/0_basic/uuid"), "42_0");
    assert_eq!(read("tests/1_second/lava-signal"), "kmsg\n");
    assert!(read("environment").contains("LAVA_OS='debian'"));
    assert!(read("tests/0_basic/testdef_metadata").contains("branch_vcs: inline"));
    assert!(read("tests/0_basic/testdef.yaml").contains("name: basic"));

    let run = read("tests/0_basic/run.sh");
    assert!(run.starts_with("#!/bin/sh\n"));
    // Definition params first, job parameters after (they win), all literal.
    let def_at = run.find(r"export GREETING='it'\''s me'").unwrap();
    let job_at = run.find("export GREETING='hello'").unwrap();
    assert!(def_at < job_at);
    assert!(run.contains("set -e\n"));
    assert!(run.contains(r"--shell awk '{print \$1}' /etc/hostname"));
    // Install is skipped by default: no install.sh.
    assert!(!dir.join("tests/0_basic/install.sh").exists());
}

#[test]
fn install_script_follows_skip_install() {
    let root = tempfile::tempdir().unwrap();
    let mut d = inline("basic", 0, BASIC);
    d.skip_install = SkipInstall::from_list(&["steps"]).unwrap();
    write_overlay(root.path(), "7", &[d.clone()], "debian").unwrap();
    let install =
        std::fs::read_to_string(root.path().join("lava-7/tests/0_basic/install.sh")).unwrap();
    assert!(
        install.contains("lava-install-packages 'curl' 'apt-utils'\n"),
        "{install}"
    );
    assert!(!install.contains("make -C src"));
    d.skip_install = SkipInstall::none();
    write_overlay(root.path(), "7", &[d], "oe").unwrap();
    let install =
        std::fs::read_to_string(root.path().join("lava-7/tests/0_basic/install.sh")).unwrap();
    assert!(
        install.contains("lava-install-packages 'curl'\n") && install.contains("make -C src\n")
    );
}

#[test]
fn options_and_refusals() {
    let root = tempfile::tempdir().unwrap();
    let d = inline("basic", 0, BASIC);
    let opts = OverlayOptions {
        shell: "/bin/busybox sh".into(),
        board_root: root.path().display().to_string() + "/",
    };
    let info = write_overlay_with(root.path(), "9", std::slice::from_ref(&d), "oe", &opts).unwrap();
    assert_eq!(info.board_dir, format!("{}/lava-9", root.path().display()));
    let runner = std::fs::read_to_string(root.path().join("lava-9/bin/lava-test-runner")).unwrap();
    assert!(runner.starts_with("#!/bin/busybox sh\n"));

    let e = write_overlay(root.path(), "../x", &[], "oe").unwrap_err();
    assert_eq!(e.kind, ErrorKind::LAVABug);
    let mut twin = d.clone();
    twin.index = 1;
    let e = write_overlay(root.path(), "9", &[d, twin], "oe").unwrap_err();
    assert!(
        e.kind == ErrorKind::JobError && e.message.contains("unique"),
        "{e}"
    );
}

#[test]
fn install_git_repos_are_cloned_locally_only() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("helpers.git");
    std::fs::create_dir(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "--quiet"]);
    std::fs::write(repo.join("tool.sh"), "echo tool\n").unwrap();
    std::fs::set_permissions(repo.join("tool.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "tool"]);
    let yaml = format!(
        "metadata: {{format: Lava-Test Test Definition 1.0, name: g}}\nparams: {{REPO: {}}}\ninstall:\n  git-repos:\n    - {}\n    - {{url: REPO, destination: again}}\n",
        repo.display(),
        repo.display()
    );
    let mut d = inline("g", 0, &yaml);
    d.skip_install = SkipInstall::none();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    write_overlay(&root, "1", &[d.clone()], "oe").unwrap();
    let tool = root.join("lava-1/tests/0_g/helpers/tool.sh");
    assert_eq!(mode(&tool), 0o755);
    assert!(root.join("lava-1/tests/0_g/again/tool.sh").is_file());

    let remote = "metadata: {format: Lava-Test Test Definition 1.0, name: g}\ninstall: {git-repos: [https://example.org/x.git]}\n";
    let mut d = inline("g", 0, remote);
    d.skip_install = SkipInstall::none();
    let e = write_overlay(&root, "1", &[d], "oe").unwrap_err();
    assert!(
        e.message
            .contains("install.git-repos[0]: 'https://example.org/x.git' is remote"),
        "{e}"
    );
}
