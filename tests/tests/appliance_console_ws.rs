//! A board's serial console shared over the appliance's WebSocket, end to end: a real
//! `labboot serve` on loopback keeps the board's line open (a shell script stands for the
//! line: it echoes what it reads and prints a tick every second), and `labboot board console`
//! processes follow it (two readers see the same bytes), type on it (`--write`: the echo
//! reaches every reader), are refused its keyboard while another holds it (one line naming the
//! holder), get it once the holder left (closing releases it) and are turned away without the
//! right token (401), for an unknown board (404) and a board without a console (409). The
//! dashboard's console panel does the same in headless Chromium: it shows the line live and
//! its "Take the keyboard" types on it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use labboot_tests::appliance::free_port;
use labboot_tests::appliance::TOKEN;
use labboot_tests::binary::labboot_bin;
use labboot_tests::process::ServerProcess;
use labboot_tests::require;
use labboot_tests::webdriver::{Options, WebDriver};

const BOARD: &str = "console-01";
/// A second board, without a console.
const QUIET_BOARD: &str = "quiet-01";

/// The "serial line": echoes what it reads, and a tick every second.
const LINE_SCRIPT: &str = "#!/bin/sh\n\
    echo 'line up'\n\
    i=0\n\
    while :; do i=$((i+1)); echo \"tick $i\"; sleep 1; done &\n\
    ticker=$!\n\
    trap 'kill $ticker 2>/dev/null' EXIT INT TERM\n\
    cat\n";

/// `labboot serve` on loopback with two boards, `BOARD` with the script as its console.
struct Lab {
    dir: tempfile::TempDir,
    url: String,
    serve: Option<ServerProcess>,
}

impl Lab {
    fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let master = d.join("master");
        std::fs::create_dir_all(&master).unwrap();
        for f in ["vmlinuz", "initrd.cpio.gz", "rootfs.squashfs"] {
            std::fs::write(master.join(f), vec![0u8; 4096]).unwrap();
        }
        std::fs::create_dir_all(d.join("tftp")).unwrap();
        let line = d.join("line.sh");
        std::fs::write(&line, LINE_SCRIPT).unwrap();
        // No connection_command: the quiet board has no console (BOARD's is its console:).
        for id in [BOARD, QUIET_BOARD] {
            std::fs::write(
                d.join(format!("{id}.jinja2")),
                format!(
                    "{{% extends 'labboot-qemu-arm64.jinja2' %}}\n\
                     {{% set power_on_command = 'true' %}}\n\
                     {{% set power_off_command = 'true' %}}\n\
                     {{% set hard_reset_command = 'true' %}}\n\
                     {{% set board_id = '{id}' %}}\n"
                ),
            )
            .unwrap();
        }
        let (http, tftp, nbd, nfs) = (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            "server_ip: 127.0.0.1\nstate_dir: {state}\n\
             http: {{listen: 127.0.0.1:{http}, tokens: [{TOKEN}, second-token-0002]}}\n\
             master: {{dir: {master}}}\n\
             boards:\n\
             - id: {BOARD}\n  token: card-1\n  device: {dev1}\n  console: {{command: 'sh {line}'}}\n\
             - id: {QUIET_BOARD}\n  token: card-2\n  device: {dev2}\n\
             tftp: {{listen: 127.0.0.1:{tftp}, root: {tftp_root}}}\n\
             nbd: {{listen: 127.0.0.1:{nbd}}}\n\
             nfs: {{listen: 127.0.0.1:{nfs}, portmap: 127.0.0.1:{portmap}}}\n",
            state = d.join("state").display(),
            master = master.display(),
            dev1 = d.join(format!("{BOARD}.jinja2")).display(),
            dev2 = d.join(format!("{QUIET_BOARD}.jinja2")).display(),
            line = line.display(),
            tftp_root = d.join("tftp").display(),
            portmap = free_port(),
        );
        std::fs::write(d.join("appliance.yaml"), config).unwrap();
        let mut cmd = Command::new(labboot_bin());
        cmd.args(["--log", "info", "serve", "--config"])
            .arg(d.join("appliance.yaml"));
        let mut serve = ServerProcess::start(
            "labboot serve",
            cmd,
            "labboot: API at",
            Duration::from_secs(60),
        )
        .unwrap();
        // Readers attach once the line is up: one that came first would rightly be told that
        // the line is down, which the tests below count as an error.
        serve
            .wait_for_line("console connected \\(", Duration::from_secs(30))
            .unwrap();
        Lab {
            dir,
            url: format!("http://127.0.0.1:{http}"),
            serve: Some(serve),
        }
    }

    fn log(&self) -> String {
        self.serve
            .as_ref()
            .map(|p| p.lines().join("\n"))
            .unwrap_or_default()
    }

    /// `labboot board console ARGS… --server URL` with `token`, its output into files.
    fn console(&self, name: &str, args: &[&str], token: &str, stdin: Stdio) -> Client {
        let out = self.dir.path().join(format!("{name}.out"));
        let err = self.dir.path().join(format!("{name}.err"));
        let child = Command::new(labboot_bin())
            .args(["board", "console"])
            .args(args)
            .args(["--server", &self.url])
            .env("LABBOOT_TOKEN", token)
            .stdin(stdin)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start labboot board console");
        Client {
            name: name.to_string(),
            child,
            out,
            err,
        }
    }

    /// `labboot board console ARGS…` to its end.
    fn console_output(&self, args: &[&str], token: &str) -> Output {
        Command::new(labboot_bin())
            .args(["board", "console"])
            .args(args)
            .args(["--server", &self.url])
            .env("LABBOOT_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("run labboot board console")
    }

    /// `curl` of the console endpoint without an upgrade: the HTTP status.
    fn curl_status(&self, path_and_query: &str) -> u16 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}/api/v1{path_and_query}", self.url))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

/// A `labboot board console` process, killed on drop.
struct Client {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Client {
    fn stdout(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("stdin is piped")
    }

    /// Waits until standard output contains `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration, lab: &Lab) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.stdout();
            if contains(&out, needle.as_bytes()) {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} never printed {needle:?} (exit {exited:?}); stdout:\n{}\nstderr:\n{}\nlabboot serve:\n{}",
                self.name,
                String::from_utf8_lossy(&out),
                self.stderr(),
                lab.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the process to end by itself.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not end; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn console_is_shared_read_by_many_written_by_one() {
    if !require::tool("curl") {
        return;
    }
    let mut lab = Lab::start();
    let long = Duration::from_secs(20);

    // Two readers at once see the line from its start (the backlog), then the same live bytes.
    let mut a = lab.console("reader-a", &[BOARD], TOKEN, Stdio::null());
    a.wait_for("tick 2\n", long, &lab);
    let mut b = lab.console("reader-b", &[BOARD], TOKEN, Stdio::null());
    b.wait_for("tick 3\n", long, &lab);
    a.wait_for("tick 3\n", long, &lab);
    let (out_a, out_b) = (a.stdout(), b.stdout());
    assert!(
        out_a.starts_with(b"line up\n") && out_b.starts_with(b"line up\n"),
        "{:?} / {:?}",
        String::from_utf8_lossy(&out_a),
        String::from_utf8_lossy(&out_b)
    );

    // The keyboard: typed bytes reach the line, and its echo reaches every reader.
    let mut w = lab.console("writer", &[BOARD, "--write"], TOKEN, Stdio::piped());
    w.wait_for("line up\n", long, &lab);
    w.stdin().write_all(b"typed-by-the-writer\n").unwrap();
    w.stdin().flush().unwrap();
    for c in [&mut a, &mut b, &mut w] {
        c.wait_for("typed-by-the-writer\n", long, &lab);
    }

    // One keyboard at a time: a second writer (another token) is refused with the holder.
    let refused = lab.console_output(&[BOARD, "--write"], "second-token-0002");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    let err = stderr_of(&refused);
    assert!(
        err.starts_with(&format!(
            "labboot: console of {BOARD} is held by http.tokens[0] via websocket from 127.0.0.1:"
        )) && err.lines().count() == 1,
        "{err}"
    );
    assert!(refused.stdout.is_empty(), "a refused writer prints nothing");

    // `~.` at the start of a line leaves (after a `~` in the middle of one went through), and
    // leaving releases the keyboard: the other token gets it now.
    w.stdin().write_all(b"a~b\n~.").unwrap();
    w.stdin().flush().unwrap();
    let status = w.wait_exit(long);
    assert!(status.success(), "{status:?}: {}", w.stderr());
    a.wait_for("a~b\n", long, &lab);
    let taken = lab.console_output(&[BOARD, "--write"], "second-token-0002");
    assert!(taken.status.success(), "{}", stderr_of(&taken));

    // The readers kept reading all along, byte for byte the same.
    let next = format!("tick {}\n", last_tick(&a.stdout()) + 2);
    a.wait_for(&next, long, &lab);
    b.wait_for(&next, long, &lab);
    let (out_a, out_b) = (a.stdout(), b.stdout());
    let common = out_a.len().min(out_b.len());
    assert_eq!(
        String::from_utf8_lossy(&out_a[..common]),
        String::from_utf8_lossy(&out_b[..common]),
        "both readers see the same bytes"
    );
    for c in [&a, &b] {
        assert_eq!(c.stderr(), "", "{}", c.name);
    }

    // Turned away: a wrong token (401), an unknown board (404), a board without a console
    // (409); each one line.
    for (args, token, expect) in [
        (
            &[BOARD][..],
            "wrong-token-0000",
            format!("labboot: GET /api/v1/boards/{BOARD}/console: 401: wrong bearer token\n"),
        ),
        (
            &["no-such-board"][..],
            TOKEN,
            "labboot: GET /api/v1/boards/no-such-board/console: 404: no board no-such-board\n"
                .to_string(),
        ),
        (
            &[QUIET_BOARD, "--write"][..],
            TOKEN,
            format!("labboot: GET /api/v1/boards/{QUIET_BOARD}/console: 409: board {QUIET_BOARD} has no console\n"),
        ),
    ] {
        let out = lab.console_output(args, token);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr_of(&out));
        assert_eq!(stderr_of(&out), expect, "{args:?}");
    }

    // The browser's way: the token in the query, on this endpoint only; a plain GET (no
    // upgrade) that passes the checks is told to upgrade.
    let console = format!("/boards/{BOARD}/console");
    assert_eq!(lab.curl_status(&console), 401);
    assert_eq!(
        lab.curl_status(&format!("{console}?token=wrong-token-0000")),
        401
    );
    assert_eq!(lab.curl_status(&format!("{console}?token={TOKEN}")), 426);
    assert_eq!(lab.curl_status(&format!("/boards?token={TOKEN}")), 401);

    // SIGTERM with readers connected: the appliance still stops, and they end.
    let status = lab
        .serve
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        lab.log()
    );
    for c in [&mut a, &mut b] {
        let status = c.wait_exit(long);
        assert_eq!(status.code(), Some(1), "{}", c.name);
        assert_eq!(
            c.stderr(),
            format!("labboot: console of {BOARD}: the appliance stops\n"),
            "{}",
            c.name
        );
    }
}

/// The number of the last `tick N` line in `out`.
fn last_tick(out: &[u8]) -> u64 {
    String::from_utf8_lossy(out)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn console_panel_of_the_dashboard_in_headless_chromium() {
    if !require::tool("chromium") || !require::tool("chromedriver") {
        return;
    }
    let lab = Lab::start();
    let long = Duration::from_secs(20);
    let mut reader = lab.console("reader", &[BOARD], TOKEN, Stdio::null());
    let wd = WebDriver::start(&Options {
        netns: None,
        dir: lab.dir.path().join("browser"),
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let fail = |e: anyhow::Error| -> ! {
        panic!(
            "{e:#}\nchromedriver:\n{}\nlabboot serve:\n{}",
            wd.log(),
            lab.log()
        )
    };
    wd.goto(&format!("{}/", lab.url)).unwrap();
    wd.type_into("#login-token", TOKEN).unwrap();
    wd.click_css("#login-submit").unwrap();
    wd.wait_text("#boards", BOARD, long)
        .unwrap_or_else(|e| fail(e));

    // The board page shows the line live, read-only at first.
    wd.goto(&format!("{}/#/board/{BOARD}", lab.url)).unwrap();
    wd.wait_text("#console", "line up", long)
        .unwrap_or_else(|e| fail(e));
    wd.wait_text("#console", "tick 2", long)
        .unwrap_or_else(|e| fail(e));
    wd.wait_text("#console-status", "connected", long)
        .unwrap_or_else(|e| fail(e));

    // "Take the keyboard": what is typed on the panel reaches the line, whose echo every
    // reader sees; meanwhile the command line's --write is refused.
    wd.click_css("#console-take").unwrap();
    wd.wait_text("#console-status", "you have the keyboard", long)
        .unwrap_or_else(|e| fail(e));
    let screen = wd.find("#console").unwrap();
    wd.send_keys(&screen, "typed-in-the-browser\n").unwrap();
    reader.wait_for("typed-in-the-browser\r", long, &lab);
    wd.wait_text("#console", "typed-in-the-browser", long)
        .unwrap_or_else(|e| fail(e));
    let refused = lab.console_output(&[BOARD, "--write"], TOKEN);
    assert!(
        stderr_of(&refused).contains("is held by http.tokens[0] via websocket from"),
        "{}",
        stderr_of(&refused)
    );

    // Giving it back lets the command line take it.
    wd.click_css("#console-take").unwrap();
    wd.wait_until("the keyboard given back", long, |d| {
        Ok((d.text_of("#console-take")? == "Take the keyboard").then_some(()))
    })
    .unwrap_or_else(|e| fail(e));
    let taken = lab.console_output(&[BOARD, "--write"], TOKEN);
    assert!(taken.status.success(), "{}", stderr_of(&taken));

    // A board without a console says so.
    wd.goto(&format!("{}/#/board/{QUIET_BOARD}", lab.url))
        .unwrap();
    wd.wait_text("#console-status", "has no console", long)
        .unwrap_or_else(|e| fail(e));
}
