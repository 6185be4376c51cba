use super::*;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use dispatcher::results::TestResult;

/// One entry of a packed tarball.
struct Packed {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64, String),
    link: Option<String>,
    data: Vec<u8>,
}

/// Every entry of a gzipped tarball, in order.
fn entries(tarball: &Path) -> Vec<Packed> {
    let gz = flate2::read::GzDecoder::new(File::open(tarball).unwrap());
    let mut ar = tar::Archive::new(gz);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Packed {
            path: e.path().unwrap().to_string_lossy().into_owned(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            owner: (
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.username().unwrap().unwrap_or_default().to_string(),
            ),
            link: e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned()),
            data,
        });
    }
    out
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn packs_the_tree_with_modes_owned_by_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("overlay");
    let top = root.join("lava-7");
    std::fs::create_dir_all(top.join("bin")).unwrap();
    std::fs::create_dir_all(top.join("tests/0_smoke")).unwrap();
    std::fs::write(top.join("bin/lava-test-runner"), "#!/bin/sh\necho hi\n").unwrap();
    set_mode(&top.join("bin/lava-test-runner"), 0o755);
    std::fs::write(top.join("environment"), "LAVA_OS=oe\n").unwrap();
    set_mode(&top.join("environment"), 0o644);
    std::fs::write(top.join("tests/0_smoke/secret"), "x").unwrap();
    set_mode(&top.join("tests/0_smoke/secret"), 0o600);
    set_mode(&top.join("tests"), 0o750);
    std::os::unix::fs::symlink("../bin/lava-test-runner", top.join("tests/runner")).unwrap();
    let long = "d".repeat(120);
    std::fs::create_dir_all(top.join(&long)).unwrap();
    std::fs::write(top.join(&long).join("f"), "long").unwrap();

    let out = tmp.path().join("agent/overlay.tar.gz");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let size = pack_overlay(&root, &out).unwrap();
    assert_eq!(size, std::fs::metadata(&out).unwrap().len());
    assert!(!out.with_extension("gz.part").exists());

    let got = entries(&out);
    let names: Vec<&str> = got.iter().map(|e| e.path.as_str()).collect();
    let long_dir = format!("lava-7/{long}");
    let long_file = format!("lava-7/{long}/f");
    assert_eq!(
        names,
        [
            "lava-7",
            "lava-7/bin",
            "lava-7/bin/lava-test-runner",
            long_dir.as_str(),
            long_file.as_str(),
            "lava-7/environment",
            "lava-7/tests",
            "lava-7/tests/0_smoke",
            "lava-7/tests/0_smoke/secret",
            "lava-7/tests/runner",
        ]
    );
    let by: HashMap<&str, &Packed> = got.iter().map(|e| (e.path.as_str(), e)).collect();
    for e in &got {
        assert_eq!(e.owner, (0, 0, "root".to_string()), "{}", e.path);
    }
    let runner = by["lava-7/bin/lava-test-runner"];
    assert_eq!((runner.kind, runner.mode), (tar::EntryType::Regular, 0o755));
    assert_eq!(runner.data, b"#!/bin/sh\necho hi\n");
    assert_eq!(by["lava-7/environment"].mode, 0o644);
    assert_eq!(by["lava-7/tests/0_smoke/secret"].mode, 0o600);
    assert_eq!(
        (by["lava-7/tests"].kind, by["lava-7/tests"].mode),
        (tar::EntryType::Directory, 0o750)
    );
    let link = by["lava-7/tests/runner"];
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some("../bin/lava-test-runner"));
    assert_eq!(by[long_file.as_str()].data, b"long");

    // The master image unpacks it with busybox tar: check that it can, when the host has it.
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    if let Some(busybox) = busybox {
        let into = tmp.path().join("board");
        std::fs::create_dir_all(&into).unwrap();
        let status = std::process::Command::new(busybox)
            .args(["tar", "-C"])
            .arg(&into)
            .arg("-xzf")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let mode = |p: &str| {
            std::fs::symlink_metadata(into.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("lava-7/bin/lava-test-runner"), 0o755);
        assert_eq!(mode("lava-7/tests/0_smoke/secret"), 0o600);
        assert_eq!(std::fs::read(into.join(&long_file)).unwrap(), b"long");
        assert_eq!(
            std::fs::read_link(into.join("lava-7/tests/runner")).unwrap(),
            Path::new("../bin/lava-test-runner")
        );
    }
}

#[test]
fn packing_a_missing_overlay_is_an_infrastructure_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("overlay.tar.gz");
    let e = pack_overlay(&tmp.path().join("nothing"), &out).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError);
    assert!(!out.exists() && !out.with_extension("gz.part").exists());
}

const DEFINITION: &str = "metadata: {format: Lava-Test Test Definition 1.0, name: smoke, description: agent test}\n\
    run:\n  steps:\n  - lava-test-case uname --shell uname -s\n  - lava-test-case speed --result pass --measurement 12.5 --units MB/s\n  - lava-test-case broken --result fail\n";

/// A test-only job: two blocks, the second with its own timeout.
fn agent_job() -> Job {
    let def = |name: &str| {
        format!(
            "    - from: inline\n      name: {name}\n      path: inline/{name}.yaml\n      repository:\n{}",
            DEFINITION
                .lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        )
    };
    let yaml = format!(
        "device_type: qemu\njob_name: agent\ntimeouts:\n  job:\n    minutes: 10\n  action:\n    minutes: 2\nactions:\n\
         - test:\n    definitions:\n{}{}\
         - test:\n    timeout:\n      minutes: 3\n    failure_retry: 3\n    definitions:\n{}",
        def("smoke"),
        def("second"),
        def("third")
    );
    let job =
        dispatcher::job::parse_job("job.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(is_agent_job(&job));
    job
}

/// A runner's output as the agent reports it for a job's block 0: a passing, measured
/// and failing case, a test set, a pattern-free line, a signal a kernel message cut in
/// two, a definition whose run.sh failed (no ENDRUN), then the runner's exit.
const CAPTURED: &str = "\
+ cd /lava-7/tests/0_smoke
<LAVA_SIGNAL_STARTRUN 0_smoke 7_0>
<LAVA_SIGNAL_STARTTC uname>
Linux
<LAVA_SIGNAL_ENDTC uname>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=uname RESULT=pass>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=speed RESULT=pa[   12.345678] random: crng init done\r
ss MEASUREMENT=12.5 UNITS=MB/s>
<LAVA_SIGNAL_TESTSET START net>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=ping RESULT=FAIL>
<LAVA_SIGNAL_TESTSET STOP>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=broken RESULT=fail>
<LAVA_SIGNAL_ENDRUN 0_smoke 7_0>
<LAVA_SIGNAL_STARTRUN 1_second 7_1>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=before RESULT=pass>
<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bad RESULT=maybe>
<LAVA_TEST_RUNNER EXIT>
after the runner
";

fn info_for(job: &Job, dir: &Path) -> OverlayInfo {
    let defs =
        resolve_definitions(job, dir, &LogWriter::discard(), &AtomicBool::new(false)).unwrap();
    dispatcher::overlay::write_overlay(&dir.join("overlay"), "7", &defs, OVERLAY_OS).unwrap()
}

/// A recorded case: name, result, measurement, units, test set.
type Case = (
    String,
    TestResult,
    Option<f64>,
    Option<String>,
    Option<String>,
);

fn cases(results: &Results, suite: &str) -> Vec<Case> {
    results
        .suite(suite)
        .map(|e| {
            (
                e.case.name.clone(),
                e.case.result,
                e.case.measurement,
                e.case.units.clone(),
                e.case.set.clone(),
            )
        })
        .collect()
}

#[test]
fn captured_runner_output_becomes_results() {
    let tmp = tempfile::tempdir().unwrap();
    let job = agent_job();
    let info = info_for(&job, tmp.path());
    assert_eq!(info.board_dir, "/lava-7");
    assert_eq!(info.blocks(), [0, 1]);
    assert_eq!(
        info.runner_command(0),
        "/lava-7/bin/lava-test-runner /lava-7/tests 0"
    );
    let logfile = tmp.path().join("logs.yaml");
    let log = LogWriter::create(&logfile, None).unwrap();
    let mut results = Results::new();
    results.set_job_id("7");
    results.attach_log(log.clone());
    let mut tracker = info.tracker(0);
    let f = follow_output(CAPTURED.as_bytes(), &mut tracker, &mut results, &log);
    assert_eq!(
        f,
        Followed {
            finished: true,
            raised: None,
            lines: CAPTURED.lines().count()
        }
    );
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        cases(&results, "0_smoke"),
        [
            ("uname".into(), TestResult::Pass, None, None, None),
            (
                "speed".into(),
                TestResult::Pass,
                Some(12.5),
                s("MB/s"),
                None
            ),
            ("ping".into(), TestResult::Fail, None, None, s("net")),
            ("broken".into(), TestResult::Fail, None, None, None),
        ]
    );
    assert_eq!(
        cases(&results, "1_second"),
        [("before".into(), TestResult::Pass, None, None, None)]
    );
    // The lava suite: a completed definition passes, one without ENDRUN fails.
    let lava: Vec<_> = results
        .suite("lava")
        .map(|e| {
            (
                e.case.name.clone(),
                e.case.result,
                e.case.metadata.get("uuid").cloned(),
            )
        })
        .collect();
    assert_eq!(
        lava,
        [
            ("0_smoke".into(), TestResult::Pass, Some("7_0".into())),
            ("1_second".into(), TestResult::Fail, Some("7_1".into())),
        ]
    );
    drop(log);
    let text = std::fs::read_to_string(&logfile).unwrap();
    // Every output line is a target line (the lines after the exit too), in order.
    assert!(
        text.contains("\"lvl\": \"target\", \"msg\": \"+ cd /lava-7/tests/0_smoke\""),
        "{text}"
    );
    assert!(
        text.contains("\"lvl\": \"target\", \"msg\": \"after the runner\""),
        "{text}"
    );
    assert!(text.contains("unknown result 'maybe'"), "{text}");
    assert!(text.contains("1_second ended without its ENDRUN"), "{text}");
    assert!(text.contains("\"lvl\": \"results\""), "{text}");
}

#[test]
fn a_raise_stops_the_tracking() {
    let out = "<LAVA_SIGNAL_STARTRUN 0_smoke 7_0>\n\
               <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>\n\
               <LAVA_SIGNAL_TESTRAISE disk full>\n\
               <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=b RESULT=pass>\n\
               <LAVA_TEST_RUNNER EXIT>\n";
    let tmp = tempfile::tempdir().unwrap();
    let info = info_for(&agent_job(), tmp.path());
    let mut results = Results::new();
    let mut tracker = info.tracker(0);
    let f = follow_output(
        out.as_bytes(),
        &mut tracker,
        &mut results,
        &LogWriter::discard(),
    );
    assert_eq!(f.raised.as_deref(), Some("disk full"));
    assert!(!f.finished);
    assert_eq!(f.lines, 5);
    assert_eq!(cases(&results, "0_smoke").len(), 1);
    // Empty or unterminated output is no trouble.
    let f = follow_output(
        b"",
        &mut info.tracker(0),
        &mut results,
        &LogWriter::discard(),
    );
    assert_eq!(f, Followed::default());
    let f = follow_output(
        b"\xff\xfe\n<LAVA_TEST_RUNNER EXIT>",
        &mut info.tracker(0),
        &mut results,
        &LogWriter::discard(),
    );
    assert!(f.finished);
}

#[test]
fn block_timeouts_follow_the_pipeline_precedence() {
    let job = agent_job();
    let common = |i: usize| job.actions[i].common().clone();
    // The job's action timeout; the second block's own, shared by its three tries.
    assert_eq!(
        block_timeouts(&job, None, &common(0)),
        (Duration::from_secs(120), Duration::from_secs(120))
    );
    assert_eq!(
        block_timeouts(&job, None, &common(1)),
        (Duration::from_secs(180), Duration::from_secs(60))
    );
    let mut j = job.clone();
    j.timeouts
        .actions
        .insert("lava-test-shell".into(), Duration::from_secs(7));
    assert_eq!(
        block_timeouts(&j, None, &common(0)).1,
        Duration::from_secs(7)
    );
    j.timeouts.action = None;
    j.timeouts.actions.clear();
    assert_eq!(
        block_timeouts(&j, None, &common(0)),
        (
            dispatcher::pipeline::timeouts::DEFAULT,
            dispatcher::pipeline::timeouts::DEFAULT
        )
    );
}

/// An agent on the host: fetches copy the job's published file, runs go to `sh -c` with
/// `/lava-…` and `/tmp/lava-overlay-…` moved under a temporary root (the overlay's scripts
/// find their files relative to themselves, as on the board).
struct HostAgent {
    root: PathBuf,
    published: PathBuf,
    work: Mutex<Vec<Work>>,
    /// Commands containing this never report.
    hang: Option<&'static str>,
    /// Fetches fail with this stderr.
    fetch_fails: Option<&'static str>,
    dropped: AtomicBool,
}

impl HostAgent {
    fn new(root: &Path, published: &Path) -> HostAgent {
        HostAgent {
            root: root.to_path_buf(),
            published: published.to_path_buf(),
            work: Mutex::new(Vec::new()),
            hang: None,
            fetch_fails: None,
            dropped: AtomicBool::new(false),
        }
    }

    fn commands(&self) -> Vec<String> {
        self.work
            .lock()
            .unwrap()
            .iter()
            .map(|w| match &w.kind {
                WorkKind::Run { command } => format!("run {command}"),
                WorkKind::Fetch { url, path } => format!("fetch {url} {path}"),
                WorkKind::Reboot => "reboot".into(),
            })
            .collect()
    }

    fn host(&self, command: &str) -> String {
        let r = self.root.display().to_string();
        let cmd = command
            .replace("-C / ", &format!("-C {r}/ "))
            .replace(" /lava-", &format!(" {r}/lava-"))
            .replace(" /tmp/lava-overlay", &format!(" {r}/tmp/lava-overlay"));
        // Never touch the host's own files.
        for word in cmd.split_whitespace().filter(|w| w.starts_with('/')) {
            assert!(word.starts_with(&r), "'{word}' is outside {r}: {cmd}");
        }
        cmd
    }

    /// `sh -c`: busybox's, with busybox's tar, timeout and rm first in PATH as in the
    /// master image, when the host has busybox; else the host's.
    fn shell(&self) -> std::process::Command {
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file());
        let Some(busybox) = busybox else {
            let mut c = std::process::Command::new("sh");
            c.arg("-c");
            return c;
        };
        let bin = self.root.join("busybox-bin");
        for applet in ["tar", "timeout", "rm"] {
            if !bin.join(applet).exists() {
                std::fs::create_dir_all(&bin).unwrap();
                std::os::unix::fs::symlink(busybox, bin.join(applet)).unwrap();
            }
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let mut c = std::process::Command::new(busybox);
        c.args(["sh", "-c"])
            .env("PATH", format!("{}:{path}", bin.display()));
        c
    }

    fn perform(&self, kind: &WorkKind) -> Option<(i32, Vec<u8>, Vec<u8>)> {
        match kind {
            WorkKind::Fetch { url, path } => {
                if let Some(err) = self.fetch_fails {
                    return Some((1, Vec::new(), err.as_bytes().to_vec()));
                }
                let name = url.rsplit('/').next().unwrap();
                let dest = self.root.join(path.trim_start_matches('/'));
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                let n = std::fs::copy(self.published.join(name), dest).unwrap();
                Some((0, n.to_string().into_bytes(), Vec::new()))
            }
            WorkKind::Run { command } => {
                if self.hang.is_some_and(|h| command.contains(h)) {
                    return None;
                }
                // Output into files, as the agent does (orphans cannot hold a pipe).
                let (out, err) = (self.root.join("out"), self.root.join("err"));
                let status = self
                    .shell()
                    .arg(self.host(command))
                    .current_dir(&self.root)
                    .stdin(std::process::Stdio::null())
                    .stdout(File::create(&out).unwrap())
                    .stderr(File::create(&err).unwrap())
                    .status()
                    .unwrap();
                Some((
                    status.code().unwrap_or(-1),
                    std::fs::read(out).unwrap(),
                    std::fs::read(err).unwrap(),
                ))
            }
            WorkKind::Reboot => Some((0, Vec::new(), Vec::new())),
        }
    }
}

impl AgentLink for HostAgent {
    fn board(&self) -> &str {
        "qemu-01"
    }

    fn queue(&self, kind: &WorkKind) -> Result<WorkId, String> {
        let mut work = self.work.lock().unwrap();
        let id = work.len() as WorkId + 1;
        let started = crate::store::now_ms();
        let done = self.perform(kind);
        work.push(Work {
            id,
            board: "qemu-01".into(),
            job: Some(7),
            kind: kind.clone(),
            created: started,
            taken: Some(started),
            done: done.as_ref().map(|_| crate::store::now_ms()),
            exit: done.as_ref().map(|d| d.0),
            stdout: done.as_ref().map(|d| d.1.clone()),
            stderr: done.map(|d| d.2),
        });
        Ok(id)
    }

    fn work(&self, id: WorkId) -> Result<Option<Work>, String> {
        Ok(self
            .work
            .lock()
            .unwrap()
            .iter()
            .find(|w| w.id == id)
            .cloned())
    }

    fn wait(&self, slice: Duration) {
        std::thread::sleep(slice)
    }

    fn drop_pending(&self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn plan<'a>(job: &'a Job, dir: &'a Path, log: &'a LogWriter, cancel: &'a AtomicBool) -> Plan<'a> {
    Plan {
        job_id: 7,
        job,
        device: None,
        dir,
        files_url: "http://192.0.2.1:8080/api/v1/agent/files/7".into(),
        log,
        cancel,
    }
}

fn host_job(steps: &str) -> Job {
    let yaml = format!(
        "device_type: qemu\njob_name: agent\ntimeouts:\n  job:\n    minutes: 10\n  action:\n    minutes: 2\nactions:\n\
         - test:\n    definitions:\n    - from: inline\n      name: smoke\n      path: inline/smoke.yaml\n      repository:\n        metadata: {{format: Lava-Test Test Definition 1.0, name: smoke}}\n        run:\n          steps:\n{steps}"
    );
    dispatcher::job::parse_job("job.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

#[test]
fn a_job_runs_through_a_host_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, board) = (tmp.path().join("job"), tmp.path().join("board"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&board).unwrap();
    let job = host_job(
        "          - lava-test-case hello --shell echo hello\n          - lava-test-case size --result pass --measurement 3 --units files\n          - lava-test-case nope --shell false\n",
    );
    let agent = HostAgent::new(&board, &dir.join("agent"));
    let log = LogWriter::create(&dir.join("logs.yaml"), None).unwrap();
    let cancel = AtomicBool::new(false);
    let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
    drop(log);
    let logtext = std::fs::read_to_string(dir.join("logs.yaml")).unwrap();
    assert_eq!(ending.error, None, "{logtext}");
    assert_eq!(ending.health, JobHealth::Complete);
    let cmds = agent.commands();
    assert_eq!(
        cmds,
        [
            "fetch http://192.0.2.1:8080/api/v1/agent/files/7/overlay.tar.gz /tmp/lava-overlay-7.tar.gz",
            "run tar -C / -xzf /tmp/lava-overlay-7.tar.gz",
            "run timeout -s KILL 120 /lava-7/bin/lava-test-runner /lava-7/tests 0 2>&1",
            "run rm -rf /lava-7 /tmp/lava-overlay-7.tar.gz",
        ]
    );
    assert!(!agent.dropped.load(Ordering::SeqCst));
    // Cleaned up on the board.
    assert!(!board.join("lava-7").exists());
    assert!(!board.join("tmp/lava-overlay-7.tar.gz").exists());
    let yaml = ending.results.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("results.yaml")).unwrap(),
        yaml
    );
    let list: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&yaml).unwrap();
    let get = |suite: &str, name: &str| {
        list.iter()
            .find(|c| c["suite"] == suite && c["name"] == name)
            .unwrap_or_else(|| panic!("no {suite}/{name} in\n{yaml}"))
            .clone()
    };
    assert_eq!(get("0_smoke", "hello")["result"], "pass");
    assert_eq!(get("0_smoke", "nope")["result"], "fail");
    assert_eq!(get("0_smoke", "size")["unit"], "files");
    assert_eq!(get("lava", "0_smoke")["result"], "pass");
    assert_eq!(get("lava", "lava-test-shell")["level"], "1.1");
    assert_eq!(get("lava", "lava-test-retry")["result"], "pass");
    assert_eq!(get("lava", "job")["result"], "pass");
    assert!(
        logtext.contains("\"lvl\": \"target\", \"msg\": \"<LAVA_TEST_RUNNER EXIT>\""),
        "{logtext}"
    );
}

#[test]
fn a_failing_fetch_is_an_infrastructure_error_with_the_agents_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    std::fs::create_dir_all(&dir).unwrap();
    let job = host_job("          - lava-test-case a --result pass\n");
    let mut agent = HostAgent::new(tmp.path(), &dir.join("agent"));
    agent.fetch_fails = Some("fetch http://192.0.2.1:8080/x: HTTP 404: no job 7");
    let log = LogWriter::discard();
    let cancel = AtomicBool::new(false);
    let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
    assert_eq!(ending.health, JobHealth::Incomplete);
    let (kind, msg) = ending.error.unwrap();
    assert_eq!(kind, "InfrastructureError");
    assert!(
        msg.contains("HTTP 404: no job 7") && msg.contains("qemu-01"),
        "{msg}"
    );
    let yaml = ending.results.unwrap();
    assert!(yaml.contains("error_type: InfrastructureError"), "{yaml}");
    // Still cleaned up.
    assert_eq!(
        agent.commands().last().unwrap(),
        "run rm -rf /lava-7 /tmp/lava-overlay-7.tar.gz"
    );
}

#[test]
fn a_step_without_report_times_out_and_a_cancel_stops_the_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let mut agent = HostAgent::new(tmp.path(), tmp.path());
    agent.hang = Some("sleep");
    let log = LogWriter::discard();
    let cancel = AtomicBool::new(false);
    let mut s = Session {
        link: &agent,
        cancel: &cancel,
        log: &log,
        abandoned: false,
    };
    let kind = WorkKind::Run {
        command: "sleep 100".into(),
    };
    let e = s
        .step(
            "test block actions[0]",
            kind.clone(),
            after(Instant::now(), Duration::from_millis(300)),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InfrastructureError);
    assert!(
        e.message
            .contains("board qemu-01's agent did not report work 1 within 1 s"),
        "{}",
        e.message
    );
    assert!(s.abandoned);
    cancel.store(true, Ordering::SeqCst);
    let e = s
        .step("x", kind, after(Instant::now(), Duration::from_secs(60)))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Canceled);
    s.cleanup(7);
    assert!(agent.dropped.load(Ordering::SeqCst));
}

#[test]
fn a_canceled_job_ends_canceled_with_results() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("job");
    std::fs::create_dir_all(&dir).unwrap();
    let job = host_job("          - lava-test-case a --result pass\n");
    let agent = HostAgent::new(tmp.path(), &dir.join("agent"));
    let log = LogWriter::discard();
    let cancel = AtomicBool::new(true);
    let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
    assert_eq!(ending.health, JobHealth::Canceled);
    assert_eq!(ending.error.unwrap().0, "Canceled");
    assert!(ending.results.unwrap().contains("name: job"));
}

#[test]
fn a_runaway_test_is_stopped_on_the_board_at_the_blocks_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, board) = (tmp.path().join("job"), tmp.path().join("board"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&board).unwrap();
    let mut job = host_job(
        "          - lava-test-case first --result pass\n          - sleep 3\n          - lava-test-case never --result pass\n",
    );
    if let ActionBlock::Test(t) = &mut job.actions[0] {
        t.common.timeout = Some(Duration::from_secs(1));
    }
    let agent = HostAgent::new(&board, &dir.join("agent"));
    let log = LogWriter::discard();
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let ending = execute(&agent, &plan(&job, &dir, &log, &cancel));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(ending.health, JobHealth::Incomplete);
    let (kind, msg) = ending.error.unwrap();
    assert_eq!(kind, "TestError");
    assert!(
        msg.contains("timed out") && msg.contains("after 1 s"),
        "{msg}"
    );
    assert!(agent.commands()[2].contains("timeout -s KILL 1 "));
    let yaml = ending.results.unwrap();
    let list: Vec<serde_yaml_ng::Value> = serde_yaml_ng::from_str(&yaml).unwrap();
    let result = |suite: &str, name: &str| {
        list.iter()
            .find(|c| c["suite"] == suite && c["name"] == name)
            .map(|c| c["result"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(result("0_smoke", "first").as_deref(), Some("pass"));
    assert_eq!(result("0_smoke", "never"), None);
    // The definition did not finish: LAVA's failed run.
    assert_eq!(result("lava", "0_smoke").as_deref(), Some("fail"));
    assert_eq!(result("lava", "job").as_deref(), Some("fail"));
}

#[test]
fn output_text_is_one_bounded_line() {
    assert_eq!(output_text(Some(b"a\n b\tc\n")), "a b c");
    assert_eq!(output_text(None), "");
    let long = "é".repeat(600);
    assert_eq!(output_text(Some(long.as_bytes())).chars().count(), 501);
    assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
    assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
}
