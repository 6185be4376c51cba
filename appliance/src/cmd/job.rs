//! `labboot job …`: jobs on a running appliance, through its HTTP API (`appliance/API.md`).
//!
//! `submit` posts a LAVA job definition and, with `--wait`, follows its log stream until the
//! job ends, exiting 0 only if it completed; `logs` prints or follows a job's `logs.yaml` lines
//! as `HH:MM:SS lvl msg` (raw with `--json`); `list`, `show` and `cancel` print tables, fields
//! or the new state.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use serde_json::Value;

use crate::client::table::{self, Table};
use crate::client::{ignore_closed_stdout, query, ApiArgs, ApiClient, Out, API_PREFIX};

/// `labboot job …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Submit a LAVA job definition (YAML); with --wait, follow its log until it finishes.
    Submit {
        /// Follow the job's log until it finishes; exit 0 only if it completes.
        #[arg(long)]
        wait: bool,
        /// The job definition, a YAML file (`-` reads standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<JobState>,
        /// Only jobs with this health.
        #[arg(long, value_enum)]
        health: Option<JobHealth>,
        /// Only jobs that ran on this board.
        #[arg(long, value_name = "ID")]
        board: Option<String>,
        /// Only jobs for this device type.
        #[arg(long, value_name = "TYPE")]
        device_type: Option<String>,
        /// At most this many jobs (the appliance's default is 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Show one job's fields.
    Show {
        /// The job's number.
        id: u64,
    },
    /// Print a job's log as `HH:MM:SS lvl msg` lines (raw logs.yaml lines with --json).
    Logs {
        /// The job's number.
        id: u64,
        /// Keep printing new lines until the job finishes.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a job: at once if queued, after its finalize step if running.
    Cancel {
        /// The job's number.
        id: u64,
    },
}

/// A job's `state`, as `job list --state` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobState {
    /// Waiting for a board.
    Queued,
    /// Running on a board.
    Running,
    /// Canceled while running; its finalize step is still going.
    Canceling,
    /// Ended (see its health).
    Finished,
}

impl JobState {
    /// The API's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Canceling => "canceling",
            JobState::Finished => "finished",
        }
    }
}

/// A job's `health`, as `job list --health` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobHealth {
    /// Not finished yet.
    Unknown,
    /// Finished and passed its checks.
    Complete,
    /// Finished with an error.
    Incomplete,
    /// Canceled.
    Canceled,
}

impl JobHealth {
    /// The API's name of the health.
    pub fn as_str(self) -> &'static str {
        match self {
            JobHealth::Unknown => "unknown",
            JobHealth::Complete => "complete",
            JobHealth::Incomplete => "incomplete",
            JobHealth::Canceled => "canceled",
        }
    }
}

/// Runs `labboot job …`.
pub fn run(api: ApiArgs, c: JobCommand) -> anyhow::Result<()> {
    let client = ApiClient::from_args(&api)?;
    let mut out = Out::stdout();
    ignore_closed_stdout(execute(&client, &mut out, api.json, c))
}

fn execute(client: &ApiClient, out: &mut Out, json: bool, c: JobCommand) -> anyhow::Result<()> {
    match c {
        JobCommand::Submit { wait, file } => submit(client, out, json, &file, wait),
        JobCommand::List {
            state,
            health,
            board,
            device_type,
            limit,
        } => {
            let q = query(&[
                ("state", state.map(|s| s.as_str().to_string())),
                ("health", health.map(|h| h.as_str().to_string())),
                ("board", board),
                ("device_type", device_type),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let jobs: Value = client.get_json(&format!("/jobs{q}"))?;
            if json {
                return out.json(&jobs);
            }
            let list = jobs
                .as_array()
                .ok_or_else(|| anyhow!("GET {API_PREFIX}/jobs: the answer is not a list"))?;
            out.text(&jobs_table(list).render())
        }
        JobCommand::Show { id } => {
            let job: Value = client.get_json(&format!("/jobs/{id}"))?;
            if json {
                out.json(&job)
            } else {
                out.text(&job_fields(&job))
            }
        }
        JobCommand::Logs { id, follow } => {
            if follow {
                let job = follow_log(client, out, id, json)?;
                if !json {
                    out.line(&outcome(&job).1)?;
                }
                Ok(())
            } else {
                client.get_lines(&format!("/jobs/{id}/logs"), |line| {
                    print_log_line(out, line, json)
                })
            }
        }
        JobCommand::Cancel { id } => {
            let job: Value = client.post_empty(&format!("/jobs/{id}/cancel"))?;
            if json {
                return out.json(&job);
            }
            let mut line = format!(
                "job {} {}",
                table::get(&job, "id"),
                table::get(&job, "state")
            );
            if job.get("state").and_then(Value::as_str) == Some("finished") {
                line.push_str(&format!(" ({})", table::get(&job, "health")));
            }
            out.line(&line)
        }
    }
}

/// `job submit`: post the file, print the job, with `wait` follow it to its end.
fn submit(
    client: &ApiClient,
    out: &mut Out,
    json: bool,
    file: &Path,
    wait: bool,
) -> anyhow::Result<()> {
    let body = read_job_file(file)?;
    // The file's name, so the appliance's errors say `my-job.yaml:12: …`.
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n != "-");
    let path = format!("/jobs{}", crate::client::query(&[("file", name)]));
    let job: Value = client.post_body(&path, "application/yaml", &body)?;
    let id = job
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("POST {API_PREFIX}/jobs: the answer has no job id"))?;
    if json {
        out.json(&job)?;
    } else {
        out.line(&submitted_line(&job))?;
    }
    if !wait {
        return Ok(());
    }
    let job = follow_log(client, out, id, json)?;
    if json {
        out.json(&job)?;
    }
    let (complete, text) = outcome(&job);
    if !complete {
        bail!("{text}");
    }
    if !json {
        out.line(&text)?;
    }
    Ok(())
}

/// The job definition's bytes, from the file or (for `-`) standard input.
fn read_job_file(file: &Path) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    let result = if file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::read(file).map(|b| body = b)
    };
    let name = if file.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        file.display().to_string()
    };
    result.map_err(|e| anyhow!("cannot read the job file {name}: {e}"))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        bail!("the job file {name} is empty");
    }
    Ok(body)
}

/// `job 7 queued (smoke on labboot-qemu-arm64)`.
fn submitted_line(job: &Value) -> String {
    let mut line = format!("job {} {}", table::get(job, "id"), table::get(job, "state"));
    let name = job
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let device_type = job
        .get("device_type")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (name, device_type) {
        (Some(n), Some(d)) => line.push_str(&format!(" ({n} on {d})")),
        (Some(x), None) | (None, Some(x)) => line.push_str(&format!(" ({x})")),
        (None, None) => {}
    }
    table::clean(&line)
}

/// Follows `/jobs/{id}/logs/stream`, printing each log line, until the `end` event; returns the
/// finished job.
fn follow_log(client: &ApiClient, out: &mut Out, id: u64, json: bool) -> anyhow::Result<Value> {
    let mut last_line: Option<u64> = None;
    for event in client.stream_events(&format!("/jobs/{id}/logs/stream")) {
        let event = event?;
        match event.event.as_str() {
            "log" => {
                let number = event.id.as_deref().and_then(|i| i.parse::<u64>().ok());
                // A resumed stream never repeats a line already printed.
                if let (Some(n), Some(last)) = (number, last_line) {
                    if n <= last {
                        continue;
                    }
                }
                last_line = number.or(last_line);
                for line in event.data.lines() {
                    print_log_line(out, line, json)?;
                }
            }
            "end" => {
                return match serde_json::from_str::<Value>(&event.data) {
                    Ok(job) if job.get("health").is_some() => Ok(job),
                    _ => client.get_json(&format!("/jobs/{id}")),
                };
            }
            _ => {}
        }
    }
    bail!("the log stream of job {id} ended before the job finished")
}

fn print_log_line(out: &mut Out, line: &str, json: bool) -> anyhow::Result<()> {
    if json {
        out.line(line)
    } else if line.trim().is_empty() {
        Ok(())
    } else {
        out.line(&human_log_line(line))
    }
}

/// Whether the finished job completed, and its one-line outcome: `job 7 complete`,
/// `job 7 incomplete: InfrastructureError: message`, `job 7 canceled`.
fn outcome(job: &Value) -> (bool, String) {
    let id = table::get(job, "id");
    let text = |key: &str| {
        job.get(key)
            .and_then(Value::as_str)
            .map(|s| table::clean(s).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    match job
        .get("health")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
    {
        "complete" => (true, format!("job {id} complete")),
        "incomplete" => {
            let reason = match (text("error_type"), text("error")) {
                (Some(t), Some(e)) => format!(": {t}: {e}"),
                (Some(x), None) | (None, Some(x)) => format!(": {x}"),
                (None, None) => String::new(),
            };
            (false, format!("job {id} incomplete{reason}"))
        }
        "canceled" => (false, format!("job {id} canceled")),
        other => (
            false,
            format!(
                "job {id} ended {} with health {}",
                table::get(job, "state"),
                table::clean(other)
            ),
        ),
    }
}

/// The jobs as a table: ID, STATE, HEALTH, DEVICE TYPE, BOARD, NAME, SUBMITTED.
fn jobs_table(jobs: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "HEALTH",
        "DEVICE TYPE",
        "BOARD",
        "NAME",
        "SUBMITTED",
    ]);
    for job in jobs {
        t.row(
            [
                "id",
                "state",
                "health",
                "device_type",
                "board",
                "name",
                "submitted",
            ]
            .iter()
            .map(|k| table::get(job, k))
            .collect(),
        );
    }
    t
}

/// A job's `key: value` lines.
fn job_fields(job: &Value) -> String {
    let keys = [
        ("id", "id"),
        ("name", "name"),
        ("state", "state"),
        ("health", "health"),
        ("device type", "device_type"),
        ("board", "board"),
        ("priority", "priority"),
        ("submitted", "submitted"),
        ("started", "started"),
        ("ended", "ended"),
        ("error type", "error_type"),
        ("error", "error"),
    ];
    let pairs: Vec<(&str, String)> = keys
        .iter()
        .map(|(label, key)| (*label, table::get(job, key)))
        .collect();
    table::fields(&pairs)
}

/// One `logs.yaml` line (`- {"dt": "…", "lvl": "info", "msg": "…"}`) as `HH:MM:SS lvl msg`; a
/// line that does not parse is shown as it is (control characters dropped).
pub fn human_log_line(line: &str) -> String {
    let item = line.trim_start();
    let item = item.strip_prefix('-').map(str::trim_start).unwrap_or(item);
    let parsed = serde_json::from_str::<Value>(item)
        .ok()
        .or_else(|| serde_yaml_ng::from_str::<Value>(item).ok())
        .filter(|v| v.get("msg").is_some() || v.get("lvl").is_some());
    let Some(entry) = parsed else {
        return strip_controls(line);
    };
    let dt = entry.get("dt").and_then(Value::as_str).unwrap_or("");
    let time = match dt.get(11..19) {
        Some(t) if dt.len() >= 19 && matches!(dt.as_bytes()[10], b'T' | b't' | b' ') => t,
        _ if dt.is_empty() => "--:--:--",
        _ => dt,
    };
    let lvl = entry.get("lvl").and_then(Value::as_str).unwrap_or("-");
    let msg = match entry.get("msg") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let text = format!(
        "{} {:<8} {}",
        strip_controls(time),
        strip_controls(lvl),
        strip_controls(&msg)
    );
    text.trim_end().to_string()
}

/// `s` without terminal escape sequences (CSI, OSC) and control characters other than tab and
/// newline, so that a board's console output cannot drive the terminal.
fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // Operating system command, ended by BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use crate::client::testing::{answer, fake_server, header, stream_answer, Captured};
    use clap::{CommandFactory, Parser};
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: JobCommand,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("job").chain(args.iter().copied()))
    }

    #[test]
    fn client_job_arguments() {
        Cli::command().debug_assert();
        let cli = parse(&[
            "--server",
            "http://lab:8080",
            "submit",
            "--wait",
            "job.yaml",
        ])
        .unwrap();
        assert_eq!(cli.api.server, "http://lab:8080");
        assert!(
            matches!(cli.command, JobCommand::Submit { wait: true, ref file } if file == Path::new("job.yaml"))
        );
        // Global options work after the subcommand too.
        let cli = parse(&[
            "list", "--state", "queued", "--limit", "5", "--json", "--token", "t",
        ])
        .unwrap();
        assert!(cli.api.json);
        assert_eq!(cli.api.token.as_deref(), Some("t"));
        match cli.command {
            JobCommand::List {
                state,
                health,
                board,
                device_type,
                limit,
            } => {
                assert_eq!(state, Some(JobState::Queued));
                assert_eq!(
                    (health, board, device_type, limit),
                    (None, None, None, Some(5))
                );
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "list",
            "--health",
            "incomplete",
            "--board",
            "qemu-01",
            "--device-type",
            "x",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            JobCommand::List {
                health: Some(JobHealth::Incomplete),
                ..
            }
        ));
        assert!(matches!(
            parse(&["logs", "-f", "7"]).unwrap().command,
            JobCommand::Logs {
                id: 7,
                follow: true
            }
        ));
        assert!(matches!(
            parse(&["logs", "7"]).unwrap().command,
            JobCommand::Logs {
                id: 7,
                follow: false
            }
        ));
        assert!(matches!(
            parse(&["show", "7"]).unwrap().command,
            JobCommand::Show { id: 7 }
        ));
        assert!(matches!(
            parse(&["cancel", "7"]).unwrap().command,
            JobCommand::Cancel { id: 7 }
        ));
        for bad in [
            &["list", "--state", "done"][..],
            &["list", "--limit", "0"],
            &["show", "seven"],
            &["submit"],
            &["cancel"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        if std::env::var_os("LABBOOT_SERVER").is_none() {
            assert_eq!(
                parse(&["show", "1"]).unwrap().api.server,
                crate::client::DEFAULT_SERVER
            );
        }
    }

    #[test]
    fn client_job_wired_into_labboot() {
        let cli = crate::cli::Cli::try_parse_from([
            "labboot", "job", "--server", "h:1", "logs", "-f", "3",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Job { api, command } => {
                assert_eq!(api.server, "h:1");
                assert!(matches!(
                    command,
                    JobCommand::Logs {
                        id: 3,
                        follow: true
                    }
                ));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_every_command_and_flag_has_help() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(arg.get_help().is_some(), "{path} {id}");
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path}");
                check(sub, &path);
            }
        }
        let mut cli = crate::cli::Cli::command();
        cli.build();
        for name in ["job", "board"] {
            let cmd = cli.find_subcommand(name).unwrap();
            assert!(cmd.get_about().is_some(), "{name}");
            check(cmd, name);
        }
        let help = cli
            .find_subcommand_mut("job")
            .unwrap()
            .find_subcommand_mut("submit")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("--server <URL>") && help.contains("LABBOOT_SERVER"),
            "{help}"
        );
        assert!(help.contains("--wait"), "{help}");
    }

    #[test]
    fn client_log_lines_are_human_readable() {
        assert_eq!(
            human_log_line(
                r#"- {"dt": "2026-12-04T13:00:00.123456", "lvl": "info", "msg": "start: 1 tftp-deploy"}"#
            ),
            "13:00:00 info     start: 1 tftp-deploy"
        );
        assert_eq!(
            human_log_line(
                r#"- {"dt": "2026-12-04T13:00:09.000001", "lvl": "target", "msg": "\u001b[1;32mU-Boot\u001b[0m 2024.01\r"}"#
            ),
            "13:00:09 target   U-Boot 2024.01"
        );
        assert_eq!(
            human_log_line(
                r#"- {"dt": "2026-12-04T13:01:00.000000", "lvl": "results", "msg": {"case": "job", "result": "pass", "n": 1}}"#
            ),
            "13:01:00 results  case=job n=1 result=pass"
        );
        assert_eq!(
            human_log_line(
                r#"- {"dt": "2026-12-04T13:01:00.000000", "lvl": "exception", "msg": "boom"}"#
            ),
            "13:01:00 exception boom"
        );
        // YAML-only escapes, a missing dt, an unparsable line.
        assert_eq!(
            human_log_line(r#"- {"lvl": "target", "msg": "a\x41\e]0;t\x07b"}"#),
            "--:--:-- target   aAb"
        );
        assert_eq!(human_log_line("not yaml: [\x1b[31m"), "not yaml: [");
        assert_eq!(
            human_log_line(r#"- {"dt": "x", "lvl": "info", "msg": ""}"#),
            "x info"
        );
    }

    #[test]
    fn client_job_outcomes() {
        let job = |h: &str, t: Value, e: Value| json!({"id": 7, "state": "finished", "health": h, "error_type": t, "error": e});
        assert_eq!(
            outcome(&job("complete", Value::Null, Value::Null)),
            (true, "job 7 complete".into())
        );
        assert_eq!(
            outcome(&job(
                "incomplete",
                json!("InfrastructureError"),
                json!("tftp timed out\n")
            )),
            (
                false,
                "job 7 incomplete: InfrastructureError: tftp timed out".into()
            )
        );
        assert_eq!(
            outcome(&job("incomplete", Value::Null, Value::Null)).1,
            "job 7 incomplete"
        );
        assert_eq!(
            outcome(&job("canceled", Value::Null, Value::Null)),
            (false, "job 7 canceled".into())
        );
        assert_eq!(
            outcome(&job("unknown", Value::Null, Value::Null)).1,
            "job 7 ended finished with health unknown"
        );
    }

    #[test]
    fn client_job_table_and_fields() {
        let jobs = json!([
            {"id": 8, "name": "smoke", "device_type": "labboot-qemu-arm64", "priority": 50, "state": "queued",
             "health": "unknown", "board": null, "submitted": "2026-12-04T13:00:00Z", "started": null},
            {"id": 7, "name": "boot", "device_type": "rpi4", "state": "finished", "health": "complete",
             "board": "rpi-01", "submitted": "2026-12-04T12:00:00Z"}
        ]);
        assert_eq!(
            jobs_table(jobs.as_array().unwrap()).render(),
            "ID  STATE     HEALTH    DEVICE TYPE         BOARD   NAME   SUBMITTED\n\
             8   queued    unknown   labboot-qemu-arm64  -       smoke  2026-12-04T13:00:00Z\n\
             7   finished  complete  rpi4                rpi-01  boot   2026-12-04T12:00:00Z\n"
        );
        let fields = job_fields(&jobs[0]);
        assert!(
            fields.starts_with("id:          8\nname:        smoke\n"),
            "{fields}"
        );
        assert!(fields.contains("\nstarted:     -\n"), "{fields}");
        assert!(fields.ends_with("\nerror:       -\n"), "{fields}");
        assert_eq!(
            submitted_line(&jobs[0]),
            "job 8 queued (smoke on labboot-qemu-arm64)"
        );
        assert_eq!(
            submitted_line(&json!({"id": 9, "state": "queued", "device_type": "x"})),
            "job 9 queued (x)"
        );
    }

    #[test]
    fn client_job_file_errors_name_the_file() {
        let err = read_job_file(Path::new("/nonexistent/job.yaml")).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot read the job file /nonexistent/job.yaml: "),
            "{err:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.yaml");
        std::fs::write(&path, "\n").unwrap();
        let err = read_job_file(&path).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("the job file {} is empty", path.display())
        );
    }

    fn job_file(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("smoke.yaml");
        std::fs::write(&path, "job_name: smoke\n").unwrap();
        path
    }

    #[test]
    fn client_submit_wait_follows_the_log_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = job_file(&dir);
        let job = r#"{"id": 7, "name": "smoke", "device_type": "labboot-qemu-arm64", "state": "queued", "health": "unknown"}"#;
        let line = |n: u32, msg: &str| {
            format!("event: log\nid: {n}\ndata: - {{\"dt\": \"2026-12-04T13:00:0{n}.000000\", \"lvl\": \"info\", \"msg\": \"{msg}\"}}\n\n")
        };
        let (url, heads) = fake_server(vec![
            answer("201 Created", "application/json", job),
            // The stream drops after two lines and resumes with a repeated line 2.
            stream_answer(&format!("{}{}", line(1, "one"), line(2, "two"))),
            stream_answer(&format!(
                "{}{}event: end\ndata: {{\"id\": 7, \"state\": \"finished\", \"health\": \"incomplete\", \"error_type\": \"InfrastructureError\", \"error\": \"no board\"}}\n\n",
                line(2, "two"),
                line(3, "three")
            )),
        ]);
        let client = ApiClient::new(&url, Some("t")).unwrap();
        let captured = Captured::default();
        let mut out = captured.out();
        let cmd = JobCommand::Submit { wait: true, file };
        let err = execute(&client, &mut out, false, cmd).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "job 7 incomplete: InfrastructureError: no board"
        );
        assert_eq!(
            captured.text(),
            "job 7 queued (smoke on labboot-qemu-arm64)\n\
             13:00:01 info     one\n\
             13:00:02 info     two\n\
             13:00:03 info     three\n"
        );
        let post = heads.recv().unwrap();
        assert!(post.ends_with("job_name: smoke\n"), "{post}");
        assert!(heads
            .recv()
            .unwrap()
            .starts_with("GET /api/v1/jobs/7/logs/stream "));
        assert_eq!(header(&heads.recv().unwrap(), "last-event-id"), Some("2"));
    }

    #[test]
    fn client_submit_shows_the_servers_error_and_json() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _heads) = fake_server(vec![
            answer(
                "400 Bad Request",
                "application/json",
                r#"{"error": "job.yaml:12: actions[0].deploy.to: unknown method \"usb\""}"#,
            ),
            answer(
                "201 Created",
                "application/json",
                r#"{"id": 8, "state": "queued"}"#,
            ),
            answer(
                "200 OK",
                "application/json",
                r#"{"id": 8, "state": "canceling", "health": "unknown"}"#,
            ),
            answer(
                "200 OK",
                "text/yaml",
                "- {\"dt\": \"2026-12-04T13:00:00.1\", \"lvl\": \"info\", \"msg\": \"hi\"}\n",
            ),
        ]);
        let client = ApiClient::new(&url, None).unwrap();
        let captured = Captured::default();
        let mut out = captured.out();
        let cmd = JobCommand::Submit {
            wait: false,
            file: job_file(&dir),
        };
        let err = execute(&client, &mut out, false, cmd).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            r#"POST /api/v1/jobs?file=smoke.yaml: 400: job.yaml:12: actions[0].deploy.to: unknown method "usb""#
        );
        let cmd = JobCommand::Submit {
            wait: false,
            file: job_file(&dir),
        };
        execute(&client, &mut out, true, cmd).unwrap();
        execute(&client, &mut out, false, JobCommand::Cancel { id: 8 }).unwrap();
        execute(
            &client,
            &mut out,
            true,
            JobCommand::Logs {
                id: 8,
                follow: false,
            },
        )
        .unwrap();
        assert_eq!(
            captured.text(),
            "{\n  \"id\": 8,\n  \"state\": \"queued\"\n}\njob 8 canceling\n\
             - {\"dt\": \"2026-12-04T13:00:00.1\", \"lvl\": \"info\", \"msg\": \"hi\"}\n"
        );
    }
}
