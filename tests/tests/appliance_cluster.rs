//! Several appliances, one lab (issue 14): two `labboot serve` instances, `east` and `west`,
//! each in its own namespace with one virtual QEMU board, and an API-only front end on
//! loopback, all on one throwaway PostgreSQL cluster (reached over its Unix socket, which
//! every namespace sees).
//!
//! 20 jobs submitted to the three APIs in turn each run exactly once, on a board of the
//! appliance that claimed them; any API lists every board; an action on another appliance's
//! board is refused naming it. Then `east` is killed mid-job: within its lease the others end
//! that job (`InfrastructureError`, "appliance east lost") and show its board offline, `west`
//! keeps working, and a restarted `east` serves its board again.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use appliance::store::pg_cluster::{PgCluster, SUPERUSER};
use labboot_tests::appliance::{agent_job, boards_ready, free_port, run_curl, ApplianceLab, TOKEN};
use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;

const LEASE: u64 = 9;

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// A job that only tests in the master and takes `seconds`.
fn slow_job(seconds: u32) -> String {
    agent_job()
        .replace(
            "job_name: in the master, through the agent",
            "job_name: slow",
        )
        .replace(
            "          - lava-test-case root-is-overlay",
            &format!("          - sleep {seconds}\n          - lava-test-case root-is-overlay"),
        )
}

/// `curl` from the host (the front end listens on loopback): (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    run_curl(Command::new("curl"), args)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

struct FrontEnd {
    url: String,
    _dir: tempfile::TempDir,
    process: ServerProcess,
}

impl FrontEnd {
    /// `labboot serve` with no lab section: the API and the dashboard of the whole lab.
    fn start(database: &str) -> FrontEnd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("appliance.yaml");
        std::fs::write(
            &config,
            format!(
                "# a front end: no servers, no boards\nname: front\nstate_dir: {}\ndatabase: '{database}'\nlease_seconds: {LEASE}\nhttp: {{listen: 127.0.0.1:{port}, tokens: [{TOKEN}]}}\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(labboot_bin());
        cmd.args(["--log", "info", "serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null());
        let process = ServerProcess::start(
            "labboot serve (front end)",
            cmd,
            "labboot: API at",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        FrontEnd {
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            process,
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (code, body) = curl(&[
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("{}/api/v1{path}", self.url),
        ]);
        assert_eq!(code, 200, "{path}: {body}");
        json(&body)
    }

    fn submit(&self, yaml: &str) -> i64 {
        let (code, body) = curl(&[
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "--data-binary",
            yaml,
            &format!("{}/api/v1/jobs", self.url),
        ]);
        assert_eq!(code, 201, "{body}\n{}", self.process.lines().join("\n"));
        json(&body)["id"].as_i64().expect("a job id")
    }
}

fn submit_to(lab: &ApplianceLab, yaml: &str) -> i64 {
    let file = lab.work.path().join(format!("job-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    let j = lab.cli_json(&["job", "submit", file.to_str().unwrap()]);
    j["id"].as_i64().expect("a job id")
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn two_appliances_share_one_postgresql() {
    if !boards_ready() {
        return;
    }
    let began = Instant::now();
    let master = labboot_tests::appliance::master(tmp()).expect("master image");
    let pg = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    pg.create_database("lab").unwrap();
    // The socket: every namespace sees the file system, not the host's loopback.
    let database = format!(
        "postgres://{SUPERUSER}@/lab?host={}&port={}",
        pg.dir().display(),
        pg.port()
    );
    let extra =
        |name: &str| format!("name: {name}\ndatabase: '{database}'\nlease_seconds: {LEASE}");
    let mut east = ApplianceLab::new("clea", "qemu-east", &master)
        .unwrap()
        .with_config_extra(&extra("east"))
        .unwrap();
    let mut west = ApplianceLab::new("clwe", "qemu-west", &master)
        .unwrap()
        .with_config_extra(&extra("west"))
        .unwrap();
    east.start().unwrap();
    west.start().unwrap();
    let front = FrontEnd::start(&database);
    east.power_on().unwrap();
    west.power_on().unwrap();
    for (lab, id) in [(&east, "qemu-east"), (&west, "qemu-west")] {
        lab.wait_board(id, "\"health\": \"online\"", Duration::from_secs(400))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.serve_log()));
    }
    eprintln!("cluster: both boards online after {:?}", began.elapsed());

    // Every API lists every board, with the appliance that serves it.
    let served: HashMap<String, String> = front
        .get("/boards")
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["appliance"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(served.get("qemu-east").map(String::as_str), Some("east"));
    assert_eq!(served.get("qemu-west").map(String::as_str), Some("west"));
    let from_east = east.cli_json(&["board", "list"]);
    assert_eq!(from_east.as_array().map(Vec::len), Some(2), "{from_east}");
    let names: Vec<String> = front
        .get("/appliances")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["east", "front", "west"]);

    // Acting on another appliance's board: refused, naming the appliance.
    let (code, body) = east.post("/boards/qemu-west/power/cycle", None);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("served by appliance west"), "{body}");

    // 20 jobs, to the three APIs in turn: each runs once, on a board of its appliance.
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(match i % 3 {
            0 => submit_to(&east, &agent_job()),
            1 => submit_to(&west, &agent_job()),
            _ => front.submit(&agent_job()),
        });
    }
    let mut per_board: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let j = wait_until(
            &format!("job {id} finished"),
            Duration::from_secs(900),
            || {
                let j = front.get(&format!("/jobs/{id}"));
                (j["state"] == "finished").then(|| j.to_string())
            },
        );
        let j = json(&j);
        assert_eq!(j["health"], "complete", "{j}");
        let board = j["board"].as_str().unwrap().to_string();
        assert_eq!(
            served.get(&board).map(String::as_str),
            j["appliance"].as_str(),
            "job {id} was claimed by the appliance that serves its board: {j}"
        );
        *per_board.entry(board).or_default() += 1;
        // Exactly once: one start in the log, one start event on the board.
        let (_, log) = curl(&[
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("{}/api/v1/jobs/{id}/logs", front.url),
        ]);
        assert_eq!(
            log.matches(&format!("labboot job {id} ")).count(),
            1,
            "job {id} started once: {log:.2000}"
        );
    }
    eprintln!(
        "cluster: 20 jobs complete after {:?}: {per_board:?}",
        began.elapsed()
    );
    let events: usize = ["qemu-east", "qemu-west"]
        .iter()
        .map(|b| {
            front.get(&format!("/boards/{b}"))["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["kind"] == "job"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| ids.iter().any(|id| m == format!("job {id} starts")))
                })
                .count()
        })
        .sum();
    assert_eq!(events, 20, "one start event per job");

    // East dies mid-job: the others end its job within the lease; west keeps working.
    let (code, _) = west.post(
        "/boards/qemu-west/reserve",
        Some(r#"{"for_seconds": 3600, "note": "keep west's board for the test"}"#),
    );
    assert_eq!(code, 200);
    let doomed = front.submit(&slow_job(600));
    wait_until(
        "the slow job running on east",
        Duration::from_secs(120),
        || {
            let j = front.get(&format!("/jobs/{doomed}"));
            (j["state"] == "running").then(|| j.to_string())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    east.kill();
    let killed = Instant::now();
    let ended = wait_until(
        "east's job ended by the others",
        Duration::from_secs(LEASE * 3),
        || {
            let j = front.get(&format!("/jobs/{doomed}"));
            (j["state"] == "finished").then(|| j.to_string())
        },
    );
    let lost_after = killed.elapsed();
    let ended = json(&ended);
    assert_eq!(ended["health"], "incomplete", "{ended}");
    assert_eq!(ended["error_type"], "InfrastructureError", "{ended}");
    assert_eq!(ended["error"], "appliance east lost", "{ended}");
    assert_eq!(front.get("/boards/qemu-east")["health"], "offline");
    eprintln!("cluster: east's job incomplete {lost_after:?} after the kill");
    let (code, _) = west.post("/boards/qemu-west/release", None);
    assert_eq!(code, 200);
    let on_west = submit_to(&west, &agent_job());
    let j = west.wait_job(on_west, "finished", Duration::from_secs(300));
    assert_eq!(j["health"], "complete", "{j}");
    assert_eq!(j["board"], "qemu-west", "{j}");
    eprintln!(
        "cluster: west's job after the release done at {:?}",
        began.elapsed()
    );

    // East comes back and serves its board again: a job only its board can take runs there.
    east.start().unwrap();
    let out = east.cli(&["board", "power", "qemu-east", "cycle"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    east.wait_board(
        "qemu-east",
        "\"health\": \"online\"",
        Duration::from_secs(400),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", east.serve_log()));
    eprintln!(
        "cluster: east back, its board online at {:?}",
        began.elapsed()
    );
    let (code, _) = west.post("/boards/qemu-west/reserve", None);
    assert_eq!(code, 200);
    // A cancel through another instance reaches the appliance that runs the job.
    let slow = front.submit(&slow_job(600));
    east.wait_job(slow, "running", Duration::from_secs(120));
    let (code, body) = west.post(&format!("/jobs/{slow}/cancel"), None);
    assert_eq!(code, 200, "{body}");
    let j = east.wait_job(slow, "finished", Duration::from_secs(120));
    assert_eq!(j["health"], "canceled", "{j}");
    assert_eq!(j["appliance"], "east", "{j}");
    eprintln!("cluster: cancel through west done at {:?}", began.elapsed());
    let back = front.submit(&agent_job());
    let j = east.wait_job(back, "finished", Duration::from_secs(300));
    assert_eq!(j["health"], "complete", "{j}");
    assert_eq!(j["board"], "qemu-east", "{j}");
    assert_eq!(j["appliance"], "east", "{j}");
    eprintln!("cluster: done in {:?}", began.elapsed());
}
