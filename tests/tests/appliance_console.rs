//! Consoles owned by `labboot serve`, end to end: the appliance keeps the virtual board's
//! serial line open from its start (the device's `connection_command`), logs it with
//! timestamps under `STATE_DIR/consoles/`, and lends it to a job (the dispatcher reads and
//! writes through the board's hub, spawning no console of its own); a console command that
//! keeps ending is opened again with a backoff; and a SIGKILLed appliance leaves no console
//! process behind (its watchdog ends them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labboot_tests::appliance::boards_ready as ready;
use labboot_tests::appliance::{sample_job, ApplianceLab};

fn master() -> &'static Path {
    labboot_tests::appliance::shared_master(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// The board's console log in the appliance's state directory.
fn console_log(lab: &ApplianceLab) -> PathBuf {
    lab.work
        .path()
        .join("state/consoles")
        .join(format!("{}.log", lab.board.board_id))
}

/// Waits until the console log shows `needle`; the whole log.
fn wait_log(lab: &ApplianceLab, needle: &str, timeout: Duration) -> String {
    let file = console_log(lab);
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {needle:?} within {timeout:?}; its end:\n{}\n--- labboot serve:\n{}",
            file.display(),
            &text[text.len().saturating_sub(3000)..],
            lab.serve_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Processes whose environment carries the appliance's console marker for `log`.
fn console_processes(log: &Path) -> Vec<i32> {
    let wanted = format!("LABBOOT_CONSOLE={}", log.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Every line of the log starts with a UTC timestamp with milliseconds.
fn assert_timestamped(text: &str) {
    for line in text.lines() {
        let stamp = line.get(..24).unwrap_or("");
        let ok = stamp.len() == 24
            && stamp.as_bytes()[10] == b'T'
            && stamp.ends_with('Z')
            && stamp.as_bytes()[19] == b'.'
            && line.as_bytes().get(24) == Some(&b' ');
        assert!(ok, "a line without its timestamp: {line:?}");
    }
}

#[test]
fn the_appliance_keeps_the_console_and_a_job_runs_through_it() {
    if !ready() {
        return;
    }
    let mut lab = ApplianceLab::new("acon", "qemu-con1", master()).unwrap();
    let t0 = Instant::now();
    lab.start().unwrap();
    // The line is open from the start, before the board is powered.
    let script = lab.board.script("console");
    wait_log(
        &lab,
        &format!(
            "[labboot] console connected (command '{}')",
            script.display()
        ),
        Duration::from_secs(20),
    );

    // The demo's flow: power on, U-Boot, the master's boot, the agent's check-in.
    lab.power_on().unwrap();
    wait_log(&lab, "U-Boot", Duration::from_secs(120));
    let text = wait_log(
        &lab,
        "labboot-master board=qemu-con1",
        Duration::from_secs(300),
    );
    assert_timestamped(&text);
    lab.wait_board(
        "qemu-con1",
        "\"health\": \"online\"",
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.serve_log()));
    eprintln!("master booted and checked in after {:?}", t0.elapsed());

    // A job: its console is the appliance's.
    let file = lab.work.path().join("sample.yaml");
    std::fs::write(&file, sample_job(master())).unwrap();
    let id = lab.cli_json(&["job", "submit", file.to_str().unwrap()])["id"]
        .as_i64()
        .expect("job id");
    let deadline = Instant::now() + Duration::from_secs(900);
    let job = loop {
        let j = lab.cli_json(&["job", "show", &id.to_string()]);
        if j["state"] == "finished" {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish: {j}\n{}",
            lab.serve_log()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let logs = lab.cli(&["job", "logs", &id.to_string()]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert_eq!(job["health"], "complete", "{job}\n{logs}");
    assert!(
        logs.contains("board qemu-con1's console (command '")
            && logs.contains("kept by labboot serve"),
        "the job's console is the appliance's:\n{logs}"
    );
    eprintln!("job {id} complete after {:?}", t0.elapsed());
    // What the job saw is in the board's log too: its U-Boot commands and its test shell.
    let text = wait_log(&lab, "labboot-ramdisk# ", Duration::from_secs(10));
    assert!(text.contains("Linux version"), "the job's boot is logged");
    assert!(
        text.matches("[labboot] console connected").count() == 1,
        "one connection for the whole run:\n{text}"
    );
    assert!(!lab.serve_log().contains("console dropped"));

    // SIGKILL: nothing can close the console, its watchdog ends it.
    let log = console_log(&lab);
    assert!(
        !console_processes(&log).is_empty(),
        "the console command runs with its marker"
    );
    lab.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !console_processes(&log).is_empty() {
        assert!(
            Instant::now() < deadline,
            "console processes outlived the appliance: {:?}",
            console_processes(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Started again, the appliance appends to the same log.
    lab.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("[labboot] console connected")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no second connection after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_console_that_drops_is_opened_again() {
    if !ready() {
        return;
    }
    let lab = ApplianceLab::new("acdr", "qemu-con2", master()).unwrap();
    // The board's console: a command that prints two lines and ends, each time it runs.
    let script = lab.work.path().join("flaky-console");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"flaky console up (pid $$)\"\necho 'second line'\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(lab.config()).unwrap();
    let device = format!(
        "  device: {}\n",
        lab.work.path().join("qemu-con2.jinja2").display()
    );
    assert!(config.contains(&device), "{config}");
    let config = config.replace(
        &device,
        &format!("{device}  console: {{command: '{}'}}\n", script.display()),
    );
    std::fs::write(lab.config(), config).unwrap();
    // Its device names no connection_command: the appliance's console is enough for jobs.
    let dict = lab.work.path().join("qemu-con2.jinja2");
    let text = std::fs::read_to_string(&dict).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.contains("connection_command"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text, "{text}");
    std::fs::write(&dict, without).unwrap();
    let mut lab = lab
        .with_config_extra("consoles: {log_max_bytes: 65536, log_keep: 2}")
        .unwrap();
    let t0 = Instant::now();
    lab.start().unwrap();

    // Opened at 0 s, then after 1, 2 and 4 s: the third reconnect comes about 7 s in.
    let text = wait_log(&lab, "reconnect 3\n", Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(5), "backoff: {took:?}\n{text}");
    assert_timestamped(&text);
    assert!(
        text.matches(" flaky console up (pid ").count() >= 4,
        "{text}"
    );
    assert!(text.matches(" second line\n").count() >= 4, "{text}");
    let script = script.display();
    for want in [
        format!("[labboot] console connected (command '{script}')\n"),
        "[labboot] console dropped: the command ended (exit status: 0); reconnecting in 1 s\n"
            .into(),
        "reconnecting in 2 s\n".into(),
        "reconnecting in 4 s\n".into(),
        format!("[labboot] console connected again (command '{script}'), reconnect 1\n"),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }
    let serve = lab.serve_log();
    assert!(
        serve.contains("console dropped: the command ended"),
        "{serve}"
    );
    // The reconnects show in the board's JSON and in /metrics.
    let board = lab.cli_json(&["board", "show", "qemu-con2"]);
    assert!(
        board["console"]["reconnects"].as_u64().unwrap_or(0) >= 3,
        "{board}"
    );
    let (code, metrics) = lab.curl(&[&format!("{}/metrics", lab.url())]);
    assert_eq!(code, 200, "{metrics}");
    let reconnects = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"labboot_console_reconnects_total{board="qemu-con2"} "#))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(reconnects.is_some_and(|n| n >= 3), "{metrics}");

    // A deploying job is accepted for the board without a connection_command (then canceled).
    let job = lab.work.path().join("deploy.yaml");
    std::fs::write(&job, sample_job(master())).unwrap();
    let out = lab.cli(&["job", "submit", job.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = queued["id"].as_i64().expect("a job id").to_string();
    let out = lab.cli(&["job", "cancel", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No job ran, so no writer: people could take it (checked at the hub's level in unit tests).
}
