//! The web dashboard end to end: Debian's headless Chromium, driven through `chromedriver` by
//! `labboot_tests::webdriver`, against a real `labboot serve` with the virtual QEMU board.
//!
//! The API listens on the lab namespace's own address, so the browser runs inside that
//! namespace (chromedriver via `ip netns exec`) and the WebDriver client talks to it from a
//! thread that joined the namespace (see `webdriver`'s module doc).
//!
//! One test walks a lab day: a wrong token is refused on the login form with the server's 401
//! message; the right one shows the boards table; the board page's power button boots the
//! board and the table turns it online by itself; a bad job's 400 line shows verbatim; the
//! agent job submitted from the form streams its log live until the test results show, then
//! its results table and YAML; a new board is added from its form, and the SD-card image the
//! page downloads carries that board's identity (read back with `mtype`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use labboot_tests::appliance::{agent_job, ApplianceLab, TOKEN};
use labboot_tests::qemu::{QEMU_ARM64, UBOOT_ARM64};
use labboot_tests::require;
use labboot_tests::webdriver::{Options, WebDriver};

const BOARD: &str = "qemu-w1";
const NEW_BOARD: &str = "dash-new-01";

fn ready() -> bool {
    require::root()
        && require::tool(QEMU_ARM64)
        && require::file(UBOOT_ARM64)
        && require::tool("chromium")
        && require::tool("chromedriver")
        && require::tool("mtype")
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | value(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decoder_round_trips() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
    assert_eq!(base64_decode(""), b"");
}

/// Clicks `css`, retrying while the element is not there yet or was just re-rendered.
fn click(wd: &WebDriver, css: &str) {
    wd.wait_until(&format!("a click on {css}"), Duration::from_secs(20), |d| {
        d.click_css(css)?;
        Ok(Some(()))
    })
    .unwrap();
}

/// The page's state, for failure messages.
fn page(wd: &WebDriver) -> String {
    let url = wd.url().unwrap_or_default();
    let text = wd.text_of("body").unwrap_or_default();
    format!("page {url}:\n{text:.6000}")
}

/// Fails the test with the error, the page and the appliance's log.
fn fail(wd: &WebDriver, lab: &ApplianceLab, e: anyhow::Error) -> ! {
    panic!(
        "{e:#}\n{}\n--- browser console:\n{}\n--- labboot serve:\n{}",
        page(wd),
        wd.console_log(),
        lab.serve_log()
    )
}

#[test]
fn dashboard_runs_a_lab_day_in_headless_chromium() {
    if !ready() {
        return;
    }
    let began = Instant::now();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let master = labboot_tests::appliance::master(tmp).expect("master image");
    let mut lab = ApplianceLab::new("adsh", BOARD, &master).unwrap();
    lab.start().unwrap();
    let url = lab.url();
    let downloads = tempfile::tempdir().unwrap();
    let wd = WebDriver::start(&Options {
        netns: Some(lab.ns.name().to_string()),
        dir: downloads.path().to_path_buf(),
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let short = Duration::from_secs(20);

    // The page needs no token; a wrong one is refused with the server's message.
    wd.goto(&format!("{url}/")).unwrap();
    wd.type_into("#login-token", "not-the-token").unwrap();
    wd.click_css("#login-submit").unwrap();
    wd.wait_text("#login-error", "wrong bearer token", short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));

    // The right token: the boards table lists the configured board.
    wd.type_into("#login-token", TOKEN).unwrap();
    wd.click_css("#login-submit").unwrap();
    let row = format!("#boards tr[data-board='{BOARD}']");
    wd.wait_text(&row, BOARD, short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    let token_kept = wd
        .execute("return sessionStorage.getItem('labboot.token');", &[])
        .unwrap();
    assert_eq!(token_kept, TOKEN, "the token is kept in sessionStorage");

    // The board page's power button boots it; the boards table turns it online by itself.
    click(&wd, &format!("{row} a"));
    wd.wait_text("#board-id", BOARD, short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    click(&wd, "button[data-power='on']");
    wd.wait_text(
        "#board-action-status",
        "power on: done",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| fail(&wd, &lab, e));
    wd.wait_text("#board-events", "power on", short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    click(&wd, "nav a[data-nav='boards']");
    wd.wait_text(&row, "online", Duration::from_secs(300))
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    wd.wait_text(&row, "power on", short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    eprintln!("dashboard: board online after {:?}", began.elapsed());

    // A bad job: the API's 400 line, verbatim.
    click(&wd, "nav a[data-nav='submit']");
    let bad = "job_name: no device type\n";
    wd.type_into("#job-definition", bad).unwrap();
    wd.click_css("#job-submit").unwrap();
    let shown = wd
        .wait_until("the submit error", short, |d| {
            let t = d.text_of("#submit-error")?;
            Ok((!t.is_empty()).then_some(t))
        })
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    let (code, body) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "--data-binary",
        bad,
        &format!("{url}/api/v1/jobs"),
    ]);
    assert_eq!(code, 400, "{body}");
    let expected: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown, expected["error"].as_str().unwrap(), "verbatim");

    // The agent job from the form: its page streams the log live until the results show.
    wd.type_into("#job-definition", &agent_job()).unwrap();
    wd.click_css("#job-submit").unwrap();
    let job = wd
        .wait_until("the job page", short, |d| {
            let u = d.url()?;
            Ok(u.split_once("#/job/").map(|(_, id)| id.to_string()))
        })
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    eprintln!("dashboard: job {job} submitted from the form");
    let log = wd
        .wait_text("#job-log", "root-is-overlay", Duration::from_secs(240))
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    assert!(
        log.lines()
            .any(|l| l.len() > 9 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':'),
        "log lines read HH:MM:SS lvl msg: {log:.3000}"
    );
    let case = "#results-table tr[data-case='root-is-overlay']";
    let result = wd
        .wait_text(case, "pass", Duration::from_secs(60))
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    assert!(result.contains("0_master"), "{result}");
    let memory = wd.text_of("#results-table tr[data-case='memory']").unwrap();
    assert!(memory.contains("kB"), "the measurement's unit: {memory}");
    wd.wait_text("#job-fields", "complete", short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    let tree = wd
        .wait_text("#job-pipeline", "agent-test", short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    assert!(tree.contains("1.1"), "{tree}");
    let yaml = wd.text_of("#job-yaml").unwrap();
    assert!(yaml.contains("lava-test-case root-is-overlay"), "{yaml}");
    // The stream's end event was read.
    wd.wait_text("#log-status", "the job has ended", short)
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    eprintln!("dashboard: job {job} complete after {:?}", began.elapsed());

    // A new board from the form: its identity, a one-time token and its card.
    click(&wd, "nav a[data-nav='add-board']");
    wd.type_into("#new-board-id", NEW_BOARD).unwrap();
    wd.type_into("#new-board-type", "labboot-qemu-arm64")
        .unwrap();
    wd.click_css("#new-board-submit").unwrap();
    let token = wd
        .wait_until("the new board's token", short, |d| {
            let t = d.text_of("#new-board-token")?;
            Ok((!t.is_empty()).then_some(t))
        })
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    click(&wd, "#card-download");
    wd.wait_text("#card-status", "downloaded", Duration::from_secs(60))
        .unwrap_or_else(|e| fail(&wd, &lab, e));
    // The bytes the page downloaded, read back from its object URL.
    let b64 = wd
        .execute_async(
            "const done = arguments[arguments.length - 1];\n\
             fetch(document.getElementById('card-link').href)\n\
               .then((r) => r.blob())\n\
               .then((b) => { const f = new FileReader();\n\
                 f.onload = () => done(f.result.split(',')[1]);\n\
                 f.onerror = () => done('error: ' + f.error); f.readAsDataURL(b); })\n\
               .catch((e) => done('error: ' + e));",
            &[],
        )
        .unwrap();
    let b64 = b64.as_str().expect("a string");
    assert!(!b64.starts_with("error"), "{b64}");
    let image = base64_decode(b64);
    assert_eq!(image.len(), 16 << 20, "the default card size");
    let card = downloads.path().join("card.img");
    std::fs::write(&card, &image).unwrap();
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", card.display(), 1 << 20))
        .arg("::labboot.id")
        .output()
        .unwrap();
    let identity = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mtype: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        identity.contains(&format!("board_id={NEW_BOARD}\n"))
            && identity.contains(&format!("board_token={token}\n")),
        "{identity}"
    );
    // Chromium saved the same bytes to its download directory (the button's download).
    let saved = downloads.path().join(format!("{NEW_BOARD}-sdcard.img"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !saved.is_file() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let bytes = std::fs::read(&saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display()));
    assert!(bytes == image, "the saved card is the one the page fetched");

    // The API behind the form: the board is approved; a wrong token gets no card; the id is taken.
    let b = lab.board_json(NEW_BOARD).unwrap();
    assert!(b.contains("\"approved\": true"), "{b}");
    assert!(b.contains("added through the API"), "{b}");
    let (code, body) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-d",
        r#"{"token": "not-the-card-token"}"#,
        &format!("{url}/api/v1/boards/{NEW_BOARD}/sdcard"),
    ]);
    assert_eq!(code, 403, "{body}");
    let (code, body) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-d",
        &format!(r#"{{"id": "{NEW_BOARD}", "device_type": "x"}}"#),
        &format!("{url}/api/v1/boards"),
    ]);
    assert_eq!(code, 409, "{body}");
    let (code, _) = lab.curl(&[
        "-d",
        r#"{"id": "other", "device_type": "x"}"#,
        &format!("{url}/api/v1/boards"),
    ]);
    assert_eq!(code, 401, "adding a board needs the token");

    drop(wd);
    eprintln!("dashboard: done in {:?}", began.elapsed());
}
