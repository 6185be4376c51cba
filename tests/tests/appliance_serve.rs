//! `labboot serve` end to end: the demo's flow on the virtual QEMU arm64 board, a SIGKILL and
//! restart in the middle of a job, a cloned card, tokens, a bad job at submit, and two
//! appliances side by side on one host.

use std::path::Path;
use std::time::{Duration, Instant};

use labboot_tests::appliance::{agent_job, sample_job, ApplianceLab, BOARD_TOKEN, TOKEN};
use labboot_tests::appliance::{boards_ready as ready, free_port, json};
use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;
use labboot_tests::require;

fn master() -> &'static Path {
    labboot_tests::appliance::shared_master(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn job_json(lab: &ApplianceLab, id: i64) -> serde_json::Value {
    let out = lab.cli(&["job", "show", &id.to_string(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

fn submit(lab: &ApplianceLab, name: &str, text: &str) -> i64 {
    let file = lab.work.path().join(name);
    std::fs::write(&file, text).unwrap();
    let out = lab.cli(&["job", "submit", file.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "submit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))["id"]
        .as_i64()
        .expect("job id")
}

#[test]
fn demo_flow_boots_the_master_runs_a_job_and_returns_the_board() {
    if !ready() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let outcome = labboot_tests::demo::run(&labboot_tests::demo::DemoOptions {
        job: None,
        out: Some(out.path().to_path_buf()),
        keep: false,
        tmp: tmp().to_path_buf(),
    })
    .expect("the demo runs to its end");
    assert!(outcome.complete, "the sample job is complete");
    let results = outcome.results;
    assert!(
        results.contains("name: kernel-is-arm64") && results.contains("result: pass"),
        "{results}"
    );
    assert!(
        results.contains("name: boot-time") && results.contains("units: seconds"),
        "{results}"
    );
    for f in ["logs.yaml", "results.yaml", "job.yaml"] {
        assert!(out.path().join(f).is_file(), "OUT has {f}");
    }
    let logs = std::fs::read_to_string(out.path().join("logs.yaml")).unwrap();
    assert!(
        logs.contains("Linux version"),
        "the log has the kernel's boot"
    );
}

#[test]
fn sigkill_mid_job_then_restart_marks_it_incomplete_and_runs_the_queue() {
    if !ready() {
        return;
    }
    let mut lab = ApplianceLab::new("akil", "qemu-k1", master()).unwrap();
    lab.start().unwrap();
    lab.power_on().unwrap();
    lab.wait_board(
        "qemu-k1",
        "\"health\": \"online\"",
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.serve_log()));
    let first = submit(&lab, "first.yaml", &sample_job(master()));
    let second = submit(&lab, "second.yaml", &agent_job());
    lab.wait_job(first, "running", Duration::from_secs(60));
    // Once the job has powered the board on (its log says so), kill the appliance outright.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = lab.cli(&["job", "logs", &first.to_string()]);
        if String::from_utf8_lossy(&out.stdout).contains("pdu-reboot") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {first} never reset the board"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.kill();
    lab.start().unwrap();
    let j = job_json(&lab, first);
    assert_eq!(j["state"], "finished", "{j}");
    assert_eq!(j["health"], "incomplete", "{j}");
    assert_eq!(j["error_type"], "InfrastructureError", "{j}");
    assert_eq!(j["error"], "appliance restarted", "{j}");
    assert_eq!(job_json(&lab, second)["state"], "queued");
    // The pipeline trees: the deploying job's, built for the board it ran on, and the agent job's.
    let (code, tree) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{}/api/v1/jobs/{first}/pipeline", lab.url()),
    ]);
    assert_eq!(code, 200, "{tree}");
    let tree: serde_json::Value = serde_json::from_str(&tree).unwrap();
    assert_eq!(tree["board"], "qemu-k1", "{tree}");
    assert_eq!(tree["pipeline"][0]["level"], "1", "{tree}");
    assert!(
        tree["pipeline"][0]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-deploy")),
        "{tree}"
    );
    assert!(
        tree["pipeline"][0]["pipeline"][0]["level"] == "1.1",
        "{tree}"
    );
    let (code, tree) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{}/api/v1/jobs/{second}/pipeline", lab.url()),
    ]);
    assert_eq!(code, 200, "{tree}");
    assert!(tree.contains(r#""agent":true"#), "{tree}");
    // The board was powered off and on: it boots the master and checks in again; then the
    // queued job (a test in the master) runs through the agent and completes.
    let done = lab.wait_job(second, "finished", Duration::from_secs(600));
    assert_eq!(done["health"], "complete", "{done}\n{}", lab.serve_log());
    let (code, results) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{}/api/v1/jobs/{second}/results", lab.url()),
    ]);
    assert_eq!(code, 200, "{results}");
    assert!(
        results.contains("name: root-is-overlay") && results.contains("units: kB"),
        "{results}"
    );
    assert!(!results.contains("result: fail"), "{results}");
    let b = lab.board_json("qemu-k1").unwrap();
    assert!(
        b.contains("appliance restarted"),
        "the board's events say why: {b}"
    );
}

fn checkin(lab: &ApplianceLab, board: &str, token: &str, mac: &str) -> (u16, String) {
    lab.curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-d",
        &format!(r#"{{"board":"{board}","mac":"{mac}","addresses":["10.79.0.77/24"],"kernel":"6.1.0-test"}}"#),
        &format!("{}/api/v1/agent/checkin", lab.url()),
    ])
}

#[test]
fn cloned_card_tokens_and_bad_jobs_are_refused() {
    if !require::root() {
        return;
    }
    let mut lab = ApplianceLab::new("acln", "qemu-c1", master()).unwrap();
    lab.start().unwrap();
    let url = lab.url();

    // Tokens: every people's endpoint wants one; health does not.
    for path in [
        "/api/v1/boards",
        "/api/v1/jobs",
        "/api/v1/boards/qemu-c1",
        "/api/v1/jobs/1/logs",
    ] {
        let (code, body) = lab.curl(&[&format!("{url}{path}")]);
        assert_eq!(code, 401, "{path}: {body}");
        assert_eq!(json(&body)["error"], "missing bearer token");
        let (code, body) = lab.curl(&[
            "-H",
            "Authorization: Bearer not-the-token",
            &format!("{url}{path}"),
        ]);
        assert_eq!(code, 401, "{path}: {body}");
        assert_eq!(json(&body)["error"], "wrong bearer token");
    }
    let (code, body) = lab.curl(&[
        "-X",
        "POST",
        "--data-binary",
        "job_name: x",
        &format!("{url}/api/v1/jobs"),
    ]);
    assert_eq!(
        (code, json(&body)["error"].as_str().unwrap()),
        (401, "missing bearer token")
    );
    let (code, body) = lab.curl(&[&format!("{url}/api/v1/health")]);
    assert_eq!(code, 200, "{body}");
    // An agent with a wrong card token is refused too, and the board's history says so.
    let (code, _) = checkin(&lab, "qemu-c1", "wrong-card-token", "52:54:00:00:00:01");
    assert_eq!(code, 401);

    // A cloned card: the same identity from another MAC while the first is online.
    let (code, body) = checkin(&lab, "qemu-c1", BOARD_TOKEN, "52:54:00:00:00:01");
    assert_eq!(code, 200, "{body}");
    let (code, body) = checkin(&lab, "qemu-c1", BOARD_TOKEN, "52:54:00:00:00:02");
    assert_eq!(code, 409, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .starts_with("cloned card"),
        "{body}"
    );
    let b = json(&lab.board_json("qemu-c1").unwrap());
    assert_eq!(b["cloned"], "52:54:00:00:00:02", "{b}");
    let events = b["events"].to_string();
    assert!(
        events.contains("wrong token") && events.contains("cloned card"),
        "{events}"
    );
    // The clone's poll gets no work; a job for the board's type waits in the queue.
    let (code, body) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {BOARD_TOKEN}"),
        &format!("{url}/api/v1/agent/poll?board=qemu-c1&mac=52:54:00:00:00:02"),
    ]);
    assert_eq!(code, 409, "{body}");
    let id = submit(&lab, "queued.yaml", &sample_job(master()));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        job_json(&lab, id)["state"],
        "queued",
        "a flagged board gets no job"
    );
    let out = lab.cli(&["job", "cancel", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = job_json(&lab, id);
    assert_eq!(
        (j["state"].as_str(), j["health"].as_str()),
        (Some("finished"), Some("canceled"))
    );

    // A bad job is refused at submit with its line, and never queued.
    let bad = lab.work.path().join("bad-job.yaml");
    std::fs::write(
        &bad,
        "device_type: labboot-qemu-arm64\njob_name: bad\ntimeouts:\n  job: {minutes: 5}\nactions:\n- deploy:\n    to: floppy\n",
    )
    .unwrap();
    let out = lab.cli(&["job", "submit", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad-job.yaml:7:") && err.contains("to"),
        "{err}"
    );
    let list = lab.cli(&["job", "list", "--json"]);
    assert_eq!(
        json(&String::from_utf8_lossy(&list.stdout))
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn two_appliances_run_side_by_side() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut serves = Vec::new();
    let mut urls = Vec::new();
    for d in &dirs {
        let (http, tftp, nbd, nfs) = (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            "server_ip: 127.0.0.1\nstate_dir: state\nhttp: {{listen: 127.0.0.1:{http}, tokens: [{TOKEN}]}}\n\
             master: {{dir: {}}}\n\
             tftp: {{listen: 127.0.0.1:{tftp}, root: tftp}}\nnbd: {{listen: 127.0.0.1:{nbd}}}\nnfs: {{listen: 127.0.0.1:{nfs}}}\n",
            master().display()
        );
        std::fs::create_dir_all(d.path().join("tftp")).unwrap();
        std::fs::write(d.path().join("appliance.yaml"), config).unwrap();
        let mut cmd = std::process::Command::new(labboot_bin());
        cmd.args(["serve", "--config"])
            .arg(d.path().join("appliance.yaml"));
        serves.push(
            ServerProcess::start(
                "labboot serve",
                cmd,
                "labboot: API at",
                Duration::from_secs(30),
            )
            .unwrap(),
        );
        urls.push(format!("http://127.0.0.1:{http}"));
    }
    // A board checks in to the first one only.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer card-token-1",
            "-d",
        ])
        .arg(r#"{"board":"side-1","mac":"02:00:00:00:00:01"}"#)
        .arg(format!("{}/api/v1/agent/checkin", urls[0]))
        .output()
        .unwrap();
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["status"],
        "pending"
    );
    for (i, url) in urls.iter().enumerate() {
        let out = std::process::Command::new(labboot_bin())
            .args(["board", "list", "--json", "--server", url, "--token", TOKEN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let boards = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            boards.as_array().unwrap().len(),
            1 - i,
            "appliance {i}: {boards}"
        );
        assert!(dirs[i].path().join("state/labboot.db").is_file());
    }
    // SIGTERM with an agent's long poll in flight: every server stops and the exit is 0.
    let mut poll = std::process::Command::new("curl")
        .args(["-s", "-H", "Authorization: Bearer card-token-1"])
        .arg(format!(
            "{}/api/v1/agent/poll?board=side-1&mac=02:00:00:00:00:01",
            urls[0]
        ))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for (i, s) in serves.iter_mut().enumerate() {
        let status = s.terminate(Duration::from_secs(15));
        assert!(
            status.is_some_and(|st| st.success()),
            "appliance {i} after SIGTERM: {status:?}\n{}",
            s.lines().join("\n")
        );
        assert!(s.lines().iter().any(|l| l.contains("labboot: stopped")));
    }
    let _ = poll.kill();
    let _ = poll.wait();
}
