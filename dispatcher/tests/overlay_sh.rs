//! The overlay's board-side scripts, run for real on the host under busybox sh and dash.
//!
//! An overlay is written into a temporary directory (the scripts find their paths relative to
//! themselves), the runner is started like the board would start it, with stderr merged into
//! stdout as on a serial console, and its output goes through the dispatcher's own signal
//! parser and tracker. The test asserts the exact signals and results, including a signal
//! that a (simulated) kernel message cut in two, a failing definition without ENDRUN, a
//! `lava-test-raise` that stops the runner, install steps and a failing install.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dispatcher::job::{Definition, DefinitionSource};
use dispatcher::overlay::{write_overlay_with, OverlayInfo, OverlayOptions};
use dispatcher::results::TestResult;
use dispatcher::signals::Event;
use dispatcher::testdef::{resolve, ResolvedDefinition, SignalChannel, SkipInstall, Tracked};

const SHELL_TESTS: &str = r#"
metadata:
  format: Lava-Test Test Definition 1.0
  name: shell-tests
  description: passing, failing, measured and --shell cases, a test set, parse pattern steps
params:
  VARIABLE_NAME_1: value_1
  SPACED: "a b"
run:
  steps:
    - echo "test1a:" "pass"
    - echo "test2a:" "fail"
    - echo 'test3a:' 'skip'
    - lava-test-case echo1 --shell echo "test1b:" "pass"
    - lava-test-case echo2 --shell false
    - lava-test-case pipe --shell "echo found | grep -q found"
    - lava-test-case exits --shell "exit 3"
    - lava-test-case passing --result pass
    - lava-test-case failing --result fail
    - lava-test-case test5 --result pass --measurement 99 --units bottles
    - lava-test-set start group1
    - lava-test-case in-set --result skip
    - lava-test-set stop
    - lava-test-reference ref1 --result pass --reference https://example.org/log
    - echo "var:" "$VARIABLE_NAME_1"
    - lava-test-case param --shell test "$SPACED" = "a b"
    - lava-test-case dollar --shell "set -- one two; test $2 = two"
    - lava-test-case cwd --shell test -f run.sh
parse:
  pattern: "(?P<test_case_id>.*-*):\\s+(?P<result>(pass|fail))"
  fixupdict:
    pass: pass
    fail: unknown
"#;

const ABORTS: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: aborts}
run:
  steps:
    - lava-test-case before --result pass
    - "false"
    - lava-test-case never --result pass
"#;

const RAISES: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: raises}
run:
  steps:
    - lava-test-raise "disk <full>" now
    - lava-test-case never2 --result pass
"#;

const AFTER_RAISE: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: after}
run:
  steps:
    - lava-test-case never3 --result pass
"#;

const INSTALLS: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: installs}
install:
  steps:
    - echo "$MARK" > installed.txt
run:
  steps:
    - lava-test-case installed --shell grep -q yes installed.txt
"#;

const BAD_INSTALL: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: bad-install}
install:
  steps: ["false"]
run:
  steps:
    - lava-test-case not-run --result pass
"#;

const KMSG: &str = r#"
metadata: {format: Lava-Test Test Definition 1.0, name: kmsg}
run:
  steps:
    - lava-test-case k1 --result pass
    - echo plain output
"#;

fn def(name: &str, index: usize, block: usize, yaml: &str) -> ResolvedDefinition {
    let mut parameters = serde_yaml_ng::Mapping::new();
    parameters.insert("MARK".into(), "yes".into());
    let entry = Definition {
        name: name.to_string(),
        source: DefinitionSource::Inline(serde_yaml_ng::from_str(yaml).unwrap()),
        parameters,
        line: 1,
    };
    let mut d = resolve(&entry, index, &|u: &str| panic!("no fetch expected: {u}")).unwrap();
    d.block = block;
    d
}

/// The first of `paths` that exists, or a loud failure naming the package to install.
fn find(paths: &[&str], package: &str) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{} not found: install the Debian package {package}",
                paths[0]
            )
        })
}

/// Runs stage `block` with `interpreter` (`[program, args…]`) and the extra environment
/// `env`, stdout and stderr merged.
fn run_stage(
    interpreter: &[String],
    info: &OverlayInfo,
    block: usize,
    tmp: &Path,
    env: &[(&str, &Path)],
) -> (String, i32) {
    let command = info.runner_command(block);
    let words: Vec<&str> = command.split(' ').collect();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = Command::new(&interpreter[0]);
    cmd.args(&interpreter[1..])
        .args(&words)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("TMPDIR", tmp)
        .envs(env.iter().copied())
        .current_dir(tmp)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let collector = std::thread::spawn(move || {
        let mut out = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut out).unwrap();
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the runner did not finish within 60 s ({interpreter:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (collector.join().unwrap(), status.code().unwrap_or(-1))
}

/// A kernel message printed into the middle of the test5 signal, as a shared console shows it.
fn with_kernel_message(output: &str) -> String {
    let signal =
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=test5 RESULT=pass MEASUREMENT=99 UNITS=bottles>";
    assert!(output.contains(signal), "{output}");
    output.replace(
        signal,
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=test5 RESULT=pa[   12.345678] random: crng init done\r\nss MEASUREMENT=99 UNITS=bottles>",
    )
}

fn track(info: &OverlayInfo, block: usize, output: &str) -> Vec<Tracked> {
    let mut tracker = info.tracker(block);
    let mut all: Vec<Tracked> = output.lines().flat_map(|l| tracker.feed_line(l)).collect();
    all.extend(tracker.finish());
    all
}

fn signals(events: &[Tracked]) -> Vec<Event> {
    events
        .iter()
        .filter_map(|e| match e {
            Tracked::Signal(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

type Row = (
    String,
    String,
    TestResult,
    Option<f64>,
    Option<String>,
    Option<String>,
);

fn results(events: &[Tracked]) -> Vec<Row> {
    events
        .iter()
        .filter_map(|e| match e {
            Tracked::Case { suite, case } => Some((
                suite.clone(),
                case.name.clone(),
                case.result,
                case.measurement,
                case.units.clone(),
                case.set.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn start_run(id: &str, uuid: &str) -> Event {
    Event::StartRun {
        id: id.into(),
        uuid: uuid.into(),
    }
}

fn tc(id: &str, result: &str) -> Event {
    Event::TestCase {
        id: id.into(),
        result: result.into(),
        measurement: None,
        units: None,
    }
}

fn shell_case(id: &str, result: &str) -> Vec<Event> {
    vec![
        Event::StartTc { case: id.into() },
        Event::EndTc { case: id.into() },
        tc(id, result),
    ]
}

fn expected_stage0_signals() -> Vec<Event> {
    let mut v = vec![start_run("0_shell-tests", "42_0")];
    v.extend(shell_case("echo1", "pass"));
    v.extend(shell_case("echo2", "fail"));
    v.extend(shell_case("pipe", "pass"));
    v.extend(shell_case("exits", "fail"));
    v.push(tc("passing", "pass"));
    v.push(tc("failing", "fail"));
    v.push(Event::TestCase {
        id: "test5".into(),
        result: "pass".into(),
        measurement: Some("99".into()),
        units: Some("bottles".into()),
    });
    v.push(Event::TestSetStart {
        name: "group1".into(),
    });
    v.push(tc("in-set", "skip"));
    v.push(Event::TestSetStop);
    v.push(Event::TestReference {
        case: "ref1".into(),
        result: "pass".into(),
        reference: "https://example.org/log".into(),
    });
    v.extend(shell_case("param", "pass"));
    v.extend(shell_case("dollar", "pass"));
    v.extend(shell_case("cwd", "pass"));
    v.push(Event::EndRun {
        id: "0_shell-tests".into(),
        uuid: "42_0".into(),
    });
    v.push(start_run("1_aborts", "42_1"));
    v.push(tc("before", "pass"));
    v.push(start_run("2_raises", "42_2"));
    v.push(Event::TestRaise {
        message: "disk (full) now".into(),
    });
    v.push(Event::RunnerExit);
    v
}

fn expected_stage0_results() -> Vec<Row> {
    let s = |x: &str| x.to_string();
    let row = |suite: &str, name: &str, r: TestResult| (s(suite), s(name), r, None, None, None);
    use TestResult::*;
    let t = "0_shell-tests";
    // The fixupdict (fail: unknown) applies to lava-test-case results too, as in LAVA.
    vec![
        row(t, "test1a", Pass),
        row(t, "test2a", Unknown),
        row(t, "test1b", Pass),
        row(t, "echo1", Pass),
        row(t, "echo2", Unknown),
        row(t, "pipe", Pass),
        row(t, "exits", Unknown),
        row(t, "passing", Pass),
        row(t, "failing", Unknown),
        (s(t), s("test5"), Pass, Some(99.0), Some(s("bottles")), None),
        (s(t), s("in-set"), Skip, None, None, Some(s("group1"))),
        row(t, "ref1", Pass),
        row(t, "param", Pass),
        row(t, "dollar", Pass),
        row(t, "cwd", Pass),
        row("lava", "0_shell-tests", Pass),
        row("1_aborts", "before", Pass),
        row("lava", "1_aborts", Fail),
        row("lava", "2_raises", Fail),
    ]
}

fn check_shell(label: &str, interpreter: Vec<String>, shebang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut install = def("installs", 4, 1, INSTALLS);
    install.skip_install = SkipInstall::none();
    let mut bad_install = def("bad-install", 5, 1, BAD_INSTALL);
    bad_install.skip_install = SkipInstall::none();
    let mut kmsg = def("kmsg", 6, 2, KMSG);
    kmsg.signal = SignalChannel::Kmsg;
    let defs = vec![
        kmsg,
        def("shell-tests", 0, 0, SHELL_TESTS),
        def("aborts", 1, 0, ABORTS),
        def("raises", 2, 0, RAISES),
        def("after", 3, 0, AFTER_RAISE),
        install,
        bad_install,
    ];
    let opts = OverlayOptions {
        shell: shebang.to_string(),
        board_root: root.display().to_string(),
    };
    let info = write_overlay_with(&root, "42", &defs, "oe", &opts).unwrap();

    // Stage 0: the tests, an aborted definition, a raise.
    let (output, status) = run_stage(&interpreter, &info, 0, tmp.path(), &[]);
    assert_eq!(status, 1, "{label}: the runner's status\n{output}");
    let events = track(&info, 0, &with_kernel_message(&output));
    let malformed: Vec<&Tracked> = events
        .iter()
        .filter(|e| matches!(e, Tracked::Signal(Event::Malformed { .. })))
        .collect();
    assert!(malformed.is_empty(), "{label}: {malformed:?}\n{output}");
    assert_eq!(
        signals(&events),
        expected_stage0_signals(),
        "{label}\n{output}"
    );
    assert_eq!(
        results(&events),
        expected_stage0_results(),
        "{label}\n{output}"
    );
    assert!(
        events.contains(&Tracked::Raise("disk (full) now".into())),
        "{label}"
    );
    assert!(events.contains(&Tracked::Finished), "{label}");
    // Only the shell's trace lines were set aside (ids with blanks), nothing else.
    for e in &events {
        if let Tracked::Note(n) = e {
            assert!(
                n.contains("with whitespace"),
                "{label}: unexpected note {n}\n{output}"
            );
        }
    }
    assert!(
        !output.contains("never"),
        "{label}: a step ran after its definition stopped\n{output}"
    );
    assert!(
        output.contains("1_aborts: run.sh exited with 1"),
        "{label}\n{output}"
    );
    let results_dir = root.join("lava-42/results");
    let read = |p: &str| std::fs::read_to_string(results_dir.join(p)).unwrap_or_default();
    assert_eq!(read("0_shell-tests/return_code"), "0\n", "{label}");
    assert_eq!(
        read("0_shell-tests/results/test5/measurement"),
        "99\n",
        "{label}"
    );
    assert!(
        !results_dir.join("3_after").exists(),
        "{label}: ran after the raise"
    );

    // Stage 1: install steps with the job's parameters, then a failing install.
    let (output, status) = run_stage(&interpreter, &info, 1, tmp.path(), &[]);
    assert_eq!(status, 1, "{label}\n{output}");
    let events = track(&info, 1, &output);
    assert_eq!(
        signals(&events),
        [
            vec![start_run("4_installs", "42_4")],
            shell_case("installed", "pass"),
            vec![
                Event::EndRun {
                    id: "4_installs".into(),
                    uuid: "42_4".into()
                },
                Event::InstallFail,
                Event::RunnerExit
            ],
        ]
        .concat(),
        "{label}\n{output}"
    );
    assert!(events.contains(&Tracked::InstallFailed));
    assert!(!output.contains("not-run"), "{label}\n{output}");

    // Stage 2: `lava-signal: kmsg` sends every signal to the kernel log (a file stands in for
    // /dev/kmsg), none to stdout; the console shows them as kernel messages.
    let kmsg = tmp.path().join("kmsg");
    std::fs::write(&kmsg, "").unwrap();
    let (output, status) = run_stage(
        &interpreter,
        &info,
        2,
        tmp.path(),
        &[("LAVA_KMSG_DEVICE", &kmsg)],
    );
    assert_eq!(status, 0, "{label}\n{output}");
    assert!(!output.contains("<LAVA_"), "{label}\n{output}");
    assert!(output.contains("plain output"), "{label}\n{output}");
    let logged = std::fs::read_to_string(&kmsg).unwrap();
    assert!(
        logged.lines().all(|l| l.starts_with("<0><LAVA_")),
        "{label}\n{logged}"
    );
    let console: String = logged
        .lines()
        .map(|l| format!("[    5.000000] {}\r\n", l.trim_start_matches("<0>")))
        .collect();
    let events = track(&info, 2, &console);
    assert_eq!(
        signals(&events),
        [
            start_run("6_kmsg", "42_6"),
            tc("k1", "pass"),
            Event::EndRun {
                id: "6_kmsg".into(),
                uuid: "42_6".into()
            },
            Event::RunnerExit
        ],
        "{label}\n{logged}"
    );
}

#[test]
fn runner_under_busybox_sh() {
    let busybox = find(
        &["/bin/busybox", "/usr/bin/busybox"],
        "busybox-static (or busybox)",
    );
    let b = busybox.display().to_string();
    check_shell(
        "busybox sh",
        vec![b.clone(), "sh".into()],
        &format!("{b} sh"),
    );
}

#[test]
fn runner_under_dash() {
    let dash = find(&["/usr/bin/dash", "/bin/dash"], "dash");
    let d = dash.display().to_string();
    check_shell("dash", vec![d.clone()], &d);
}
