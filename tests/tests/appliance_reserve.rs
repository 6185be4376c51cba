//! Running a lab day to day, end to end on the virtual QEMU arm64 board: a reservation keeps
//! the scheduler off a board until its time is up; power saving switches an idle board off and
//! a job wakes it; a reserved board boots its person's own kernel the network way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labboot_tests::appliance::{agent_job, ApplianceLab, TOKEN};
use labboot_tests::appliance::{boards_ready as ready, json};

fn master() -> &'static Path {
    labboot_tests::appliance::shared_master(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

fn board(lab: &ApplianceLab) -> serde_json::Value {
    json(&lab.board_json(&lab.board.board_id).unwrap())
}

fn submit(lab: &ApplianceLab, text: &str) -> i64 {
    let file = lab.work.path().join("job.yaml");
    std::fs::write(&file, text).unwrap();
    lab.cli_json(&["job", "submit", file.to_str().unwrap()])["id"]
        .as_i64()
        .expect("job id")
}

/// `curl -X POST` with the API token and a JSON body: (status, JSON answer).
fn post(lab: &ApplianceLab, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, text) = lab.curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        &format!("{}/api/v1{path}", lab.url()),
    ]);
    (code, json(&text))
}

fn events(b: &serde_json::Value) -> String {
    b["events"].to_string()
}

/// The board's console as the appliance logs it (`STATE_DIR/consoles/<board>.log`): the
/// appliance keeps the line open itself, so the test reads its log instead of a second reader
/// on the board's FIFO.
struct ConsoleLog {
    file: PathBuf,
}

impl ConsoleLog {
    fn start(lab: &ApplianceLab) -> ConsoleLog {
        let file = lab
            .work
            .path()
            .join("state/consoles")
            .join(format!("{}.log", lab.board.board_id));
        ConsoleLog { file }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap_or_default()
    }

    /// Waits until the console shows `needle` after byte `from`; the offset after it.
    fn wait_for(&self, needle: &str, from: usize, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let needle = needle.as_bytes();
        loop {
            let bytes = self.bytes();
            let found = bytes
                .get(from..)
                .and_then(|b| b.windows(needle.len()).position(|w| w == needle));
            if let Some(at) = found {
                return Ok(from + at + needle.len());
            }
            if Instant::now() > deadline {
                let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(3000)..]);
                return Err(format!(
                    "the console never showed {:?}; its end:\n{tail}",
                    String::from_utf8_lossy(needle)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn a_reservation_keeps_jobs_off_the_board_until_its_time_is_up() {
    if !ready() {
        return;
    }
    let mut lab = ApplianceLab::new("arsv", "qemu-r1", master()).unwrap();
    lab.start().unwrap();
    let _console = ConsoleLog::start(&lab);

    // Wrong requests get one-line errors.
    let (code, e) = post(&lab, "/boards/nope/reserve", "{}");
    assert_eq!((code, e["error"].as_str()), (404, Some("no board nope")));
    let (code, e) = post(&lab, "/boards/qemu-r1/reserve", r#"{"for_seconds": 0}"#);
    assert_eq!(code, 400, "{e}");
    let (code, e) = post(&lab, "/boards/qemu-r1/reserve", r#"{"hours": 2}"#);
    assert_eq!(code, 400, "{e}");
    let (code, e) = post(&lab, "/boards/qemu-r1/release", "");
    assert_eq!(
        (code, e["error"].as_str()),
        (409, Some("board qemu-r1 is not reserved"))
    );

    // Reserved (the board was off: the reservation powers it on, into the master).
    let b = lab.cli_json(&[
        "board",
        "reserve",
        "qemu-r1",
        "--for",
        "20s",
        "--note",
        "e2e: bisecting",
    ]);
    let until = b["reservation"]["until"]
        .as_str()
        .expect("until")
        .to_string();
    assert_eq!(b["reservation"]["note"], "e2e: bisecting", "{b}");
    assert_eq!(b["reservation"]["by"], "http.tokens[0]", "{b}");
    assert_eq!(b["powered"], "on", "{b}");
    let (code, e) = post(&lab, "/boards/qemu-r1/reserve", "{}");
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("already reserved"),
        "{e}"
    );
    let list = lab.cli(&["board", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("RESERVED") && list.contains(&until), "{list}");

    // A job for the board's type waits while it is reserved, the board online or not.
    let id = submit(&lab, &agent_job());
    std::thread::sleep(Duration::from_secs(10));
    let j = lab.cli_json(&["job", "show", &id.to_string()]);
    assert_eq!(j["state"], "queued", "{j}");
    assert!(!board(&lab)["reservation"].is_null());

    // Its time is up: off, on into the master, a check-in, then the job runs through the agent.
    let done = lab.wait_job(id, "finished", Duration::from_secs(600));
    assert_eq!(done["health"], "complete", "{done}\n{}", lab.serve_log());
    let started = done["started"].as_str().unwrap();
    assert!(
        started >= until.as_str(),
        "started {started}, reserved until {until}"
    );
    let b = board(&lab);
    assert!(b["reservation"].is_null(), "{b}");
    let ev = events(&b);
    assert!(
        ev.contains("reserved by http.tokens[0] until") && ev.contains("e2e: bisecting"),
        "{ev}"
    );
    assert!(
        ev.contains("released (its time is up): back to the master"),
        "{ev}"
    );
}

#[test]
fn power_saving_switches_an_idle_board_off_and_a_job_wakes_it() {
    if !ready() {
        return;
    }
    let mut lab = ApplianceLab::new("apws", "qemu-p1", master())
        .unwrap()
        .with_config_extra("power_saving: {idle_off_after: 5}")
        .unwrap();
    lab.start().unwrap();
    let _console = ConsoleLog::start(&lab);
    lab.power_on().unwrap();
    assert_eq!(board(&lab)["powered"], "on");
    // It boots the master, checks in, stays idle 5 s: off.
    lab.wait_board("qemu-p1", "\"powered\": \"off\"", Duration::from_secs(400))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.serve_log()));
    let ev = events(&board(&lab));
    assert!(ev.contains("checked in from"), "{ev}");
    assert!(ev.contains("power saving: off (idle for 5 s"), "{ev}");
    assert!(!lab.board.is_powered(), "QEMU still runs");
    let list = lab.cli(&["board", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("POWER") && list.contains(" off "), "{list}");

    // A job for its type wakes it: on, the master, a check-in, the job.
    let id = submit(&lab, &agent_job());
    let done = lab.wait_job(id, "finished", Duration::from_secs(600));
    assert_eq!(done["health"], "complete", "{done}\n{}", lab.serve_log());
    let ev = events(&board(&lab));
    assert!(
        ev.contains("power saving: on (a labboot-qemu-arm64 job waits)"),
        "{ev}"
    );
}

#[test]
fn a_reserved_board_boots_its_persons_kernel() {
    if !ready() {
        return;
    }
    let mut lab = ApplianceLab::new("aboo", "qemu-b1", master()).unwrap();
    lab.start().unwrap();
    let console = ConsoleLog::start(&lab);
    let kernel = lab.master.join("vmlinuz");
    let initrd = lab.master.join("initrd.cpio.gz");
    let body = format!(r#"{{"kernel": "{}"}}"#, kernel.display());
    let (code, e) = post(&lab, "/boards/qemu-b1/boot", &body);
    assert_eq!(
        (code, e["error"].as_str()),
        (409, Some("board qemu-b1 is not reserved: reserve it first"))
    );

    lab.cli_json(&["board", "reserve", "qemu-b1", "--for", "30m"]);
    let (code, e) = post(&lab, "/boards/qemu-b1/boot", r#"{"kernel": "vmlinuz"}"#);
    assert_eq!(code, 400, "{e}");
    let (code, e) = post(
        &lab,
        "/boards/qemu-b1/boot",
        r#"{"kernel": "/nonexistent/Image"}"#,
    );
    assert_eq!(code, 400, "{e}");
    let (code, e) = post(&lab, "/boards/qemu-b1/maintenance/on", "");
    assert_eq!(code, 409, "{e}");

    let start = console.bytes().len();
    let b = lab.cli_json(&[
        "board",
        "boot",
        "qemu-b1",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--append",
        "labboot.root=ramdisk",
    ]);
    assert_eq!(
        b["reservation"]["boot"]["kernel"],
        kernel.to_str().unwrap(),
        "{b}"
    );
    // U-Boot runs the reserved board's script, fetches the person's files, and the labboot
    // initrd stays in the ramdisk: its shell prompt.
    let at = console
        .wait_for(
            "labboot: board qemu-b1 is reserved: booting a kernel of its own",
            start,
            Duration::from_secs(240),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.serve_log()));
    console
        .wait_for("labboot-ramdisk# ", at, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.serve_log()));
    let log = lab.serve_log();
    assert!(log.contains("serving the job's boot script"), "{log}");

    // The reservation and its boot outlive a restart of the appliance.
    lab.kill();
    lab.start().unwrap();
    let b = board(&lab);
    assert_eq!(
        b["reservation"]["boot"]["kernel"],
        kernel.to_str().unwrap(),
        "{b}"
    );
    let out = lab.cli(&["board", "power", "qemu-b1", "cycle"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at = console
        .wait_for(
            "labboot: board qemu-b1 is reserved: booting a kernel of its own",
            at,
            Duration::from_secs(240),
        )
        .unwrap_or_else(|e| panic!("after the restart: {e}\n{}", lab.serve_log()));
    console
        .wait_for("labboot-ramdisk# ", at, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("after the restart: {e}\n{}", lab.serve_log()));

    // Released: the board's own boot goes, it boots the master and checks in.
    let b = lab.cli_json(&["board", "release", "qemu-b1"]);
    assert!(b["reservation"].is_null(), "{b}");
    lab.wait_board(
        "qemu-b1",
        "\"health\": \"online\"",
        Duration::from_secs(400),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.serve_log()));
    let ev = events(&board(&lab));
    assert!(ev.contains(&format!("boots {}", kernel.display())), "{ev}");
    assert!(ev.contains("released (by http.tokens[0])"), "{ev}");
    assert!(!lab.work.path().join("state/reservations/qemu-b1").exists());
}
