//! `labboot serve`'s `GET /metrics` and `--log-format json`, end to end: real TFTP (curl), NBD
//! (nbdinfo) and agent (curl) traffic on loopback, the page checked by Prometheus' `promtool`
//! and its counters read back.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use labboot_tests::appliance::free_port;
use labboot_tests::appliance::TOKEN;
use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;
use labboot_tests::require;

fn master() -> PathBuf {
    labboot_tests::appliance::master(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("master image")
}

/// An appliance on loopback with free ports, its config in `dir`.
struct Ports {
    http: u16,
    tftp: u16,
    nbd: u16,
}

fn write_config(dir: &Path, master: &Path) -> Ports {
    let p = Ports {
        http: free_port(),
        tftp: free_port(),
        nbd: free_port(),
    };
    let nfs = free_port();
    let config = format!(
        "server_ip: 127.0.0.1\nstate_dir: state\nhttp: {{listen: 127.0.0.1:{}, tokens: [{TOKEN}]}}\n\
         master: {{dir: {}}}\n\
         tftp: {{listen: 127.0.0.1:{}, root: tftp}}\nnbd: {{listen: 127.0.0.1:{}}}\nnfs: {{listen: 127.0.0.1:{nfs}}}\n",
        p.http,
        master.display(),
        p.tftp,
        p.nbd
    );
    std::fs::create_dir_all(dir.join("tftp")).unwrap();
    std::fs::write(dir.join("appliance.yaml"), config).unwrap();
    p
}

fn serve(dir: &Path, json: bool) -> ServerProcess {
    let mut cmd = Command::new(labboot_bin());
    if json {
        cmd.args(["--log-format", "json"]);
    }
    cmd.args(["serve", "--config"])
        .arg(dir.join("appliance.yaml"));
    ServerProcess::start("labboot serve", cmd, "API at", Duration::from_secs(60)).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn checkin(http: u16, board: &str) -> String {
    run(Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer card-token-1",
            "-d",
        ])
        .arg(format!(
            r#"{{"board":"{board}","mac":"02:00:00:00:00:07"}}"#
        ))
        .arg(format!("http://127.0.0.1:{http}/api/v1/agent/checkin")))
}

/// The samples of a page: `name{labels}` → value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            (
                key.to_string(),
                value.parse().unwrap_or_else(|_| panic!("bad value in {l}")),
            )
        })
        .collect()
}

/// The sum of every sample of `family` (any labels).
fn sum(samples: &BTreeMap<String, f64>, family: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.as_str() == family || k.starts_with(&format!("{family}{{")))
        .map(|(_, v)| v)
        .sum()
}

fn get(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

#[test]
fn metrics_count_real_traffic_and_pass_promtool() {
    for tool in ["curl", "nbdinfo", "promtool"] {
        if !require::tool(tool) {
            return;
        }
    }
    let master = master();
    let dir = tempfile::tempdir().unwrap();
    let ports = write_config(dir.path(), &master);
    let mut server = serve(dir.path(), false);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", ports.http);

    // Before any traffic: a valid page (no token needed) with zero boards.
    let before = samples(&run(Command::new("curl").args(["-sSf", &metrics_url])));
    assert_eq!(sum(&before, "labboot_boards"), 0.0);

    // TFTP: the master's kernel.
    let kernel = dir.path().join("vmlinuz");
    run(Command::new("curl")
        .args(["-sSf", "--tftp-blksize", "8192", "-o"])
        .arg(&kernel)
        .arg(format!(
            "tftp://127.0.0.1:{}/labboot/master/vmlinuz",
            ports.tftp
        )));
    let size = std::fs::metadata(master.join("vmlinuz")).unwrap().len();
    assert_eq!(std::fs::metadata(&kernel).unwrap().len(), size);
    // The counters move before the transfer's log line.
    server
        .wait_for_line(
            r"tftp: sent.*labboot/master/vmlinuz",
            Duration::from_secs(10),
        )
        .unwrap();

    // NBD: the master export's handshake (and whatever nbdinfo reads).
    let info = run(Command::new("nbdinfo").arg(format!("nbd://127.0.0.1:{}/master", ports.nbd)));
    assert!(info.contains("export-size"), "{info}");
    server
        .wait_for_line(r"nbd: .*(disconnected|closed)", Duration::from_secs(10))
        .unwrap();

    // An agent's check-in: an unknown board, pending.
    assert!(checkin(ports.http, "metrics-1").contains("pending"));

    let out = Command::new("curl")
        .args(["-sSf", "-D", "-", &metrics_url])
        .output()
        .unwrap();
    assert!(out.status.success());
    let response = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, page) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );

    // Prometheus' own checker: format and lint (names, units, _total, HELP).
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n{page}",
        checked.status,
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let s = samples(page);
    assert!(
        get(&s, "labboot_tftp_sent_bytes_total") >= size as f64,
        "{page}"
    );
    assert!(get(&s, r#"labboot_tftp_transfers_total{outcome="ok"}"#) >= 1.0);
    assert!(get(&s, "labboot_nbd_connections_accepted_total") >= 1.0);
    assert_eq!(get(&s, "labboot_nbd_connections_open"), 0.0);
    get(&s, r#"labboot_nbd_read_bytes_total{export="master"}"#);
    assert_eq!(sum(&s, "labboot_boards"), 1.0, "{page}");
    assert_eq!(
        get(&s, r#"labboot_boards{state="idle",health="pending"}"#),
        1.0
    );
    assert_eq!(sum(&s, "labboot_jobs"), 0.0);
    assert_eq!(
        get(
            &s,
            r#"labboot_job_duration_seconds_count{health="complete"}"#
        ),
        0.0
    );
    // Not part of the token-protected API.
    let api = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{}/api/v1/boards", ports.http),
    ]));
    assert_eq!(api, "401");
    drop(server);
}

#[test]
fn json_log_lines_carry_fields() {
    if !require::tool("curl") {
        return;
    }
    let master = master();
    let dir = tempfile::tempdir().unwrap();
    let ports = write_config(dir.path(), &master);
    let mut server = serve(dir.path(), true);
    assert!(checkin(ports.http, "json-1").contains("pending"));
    server
        .wait_for_line(r#""board":"json-1""#, Duration::from_secs(10))
        .unwrap();
    let lines = server.lines();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["fields"]["message"].is_string(),
            "no fields.message: {line}"
        );
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    let ready = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("labboot: API at"))
        })
        .expect("the API line");
    assert_eq!(ready["target"], "appliance::serve");
    let board = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["fields"]["board"] == "json-1")
        .unwrap();
    assert_eq!(board["level"], "INFO");
    drop(server);
}
