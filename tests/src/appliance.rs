//! A lab for `labboot serve` tests and the demo: a namespace with a tap, a [`LabBoard`] (the
//! virtual QEMU arm64 board with power and console scripts), the built master image, an
//! `appliance.yaml` for them, and the running `labboot serve`. The API is reached with the
//! `labboot job|board` client inside the namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::binary::labboot_bin;
use crate::lab_board::LabBoard;
use crate::netns::Netns;
use crate::process::ServerProcess;

/// The appliance's address inside the namespace.
pub const SERVER_IP: &str = "10.79.0.1";
/// The API's port.
pub const HTTP_PORT: u16 = 8080;
/// The API token the tests use.
pub const TOKEN: &str = "labboot-test-admin-token";
/// The token on the board's card (`make_sdcard` writes `tok`).
pub const BOARD_TOKEN: &str = "tok";

/// A private lab running `labboot serve` with one virtual board.
pub struct ApplianceLab {
    /// The namespace the appliance and the board live in.
    pub ns: Netns,
    /// The board.
    pub board: LabBoard,
    /// Work directory: config, state, device dictionary.
    pub work: tempfile::TempDir,
    /// The master image's directory.
    pub master: PathBuf,
    /// The running appliance.
    pub serve: Option<ServerProcess>,
}

impl ApplianceLab {
    /// A lab whose board has identity `board_id` (not started yet).
    pub fn new(prefix: &str, board_id: &str, master: &Path) -> anyhow::Result<ApplianceLab> {
        let ns = Netns::new(prefix)?;
        let tap = ns.add_tap("altap0", &format!("{SERVER_IP}/24"))?;
        let board = LabBoard::new(&ns, &tap, board_id, "52:54:00:12:34:57")?;
        let work = tempfile::Builder::new()
            .prefix("labboot-appliance-")
            .tempdir()?;
        let w = work.path();
        std::fs::create_dir_all(w.join("tftp"))?;
        let device = w.join(format!("{board_id}.jinja2"));
        std::fs::write(
            &device,
            board.dictionary("labboot-qemu-arm64", "serial", &[]),
        )?;
        let config = format!(
            "# labboot serve test lab\n\
             server_ip: {SERVER_IP}\n\
             state_dir: {state}\n\
             http: {{listen: {SERVER_IP}:{HTTP_PORT}, tokens: [{TOKEN}]}}\n\
             master: {{dir: {master}}}\n\
             agent: {{poll_seconds: 10, interval: 15, checkin_timeout: 240}}\n\
             boards:\n\
             - id: {board_id}\n  token: {BOARD_TOKEN}\n  device: {device}\n\
             tftp: {{listen: {SERVER_IP}:69, root: {tftp}}}\n\
             nbd: {{listen: {SERVER_IP}:10809}}\n\
             nfs: {{listen: {SERVER_IP}:2049, portmap: {SERVER_IP}:111}}\n\
             dhcp: {{interface: {tap}, server_ip: {SERVER_IP}, pool: 10.79.0.10-10.79.0.50, lease_file: {state}/leases.log}}\n",
            state = w.join("state").display(),
            master = master.display(),
            device = device.display(),
            tftp = w.join("tftp").display(),
        );
        std::fs::write(w.join("appliance.yaml"), config)?;
        Ok(ApplianceLab {
            ns,
            board,
            work,
            master: master.to_path_buf(),
            serve: None,
        })
    }

    /// Appends `lines` (top-level YAML, e.g. `power_saving: {idle_off_after: 5}`) to the
    /// config; before [`ApplianceLab::start`].
    pub fn with_config_extra(self, lines: &str) -> anyhow::Result<ApplianceLab> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.config())?;
        writeln!(f, "{}", lines.trim_end())?;
        Ok(self)
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.work.path().join("appliance.yaml")
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{SERVER_IP}:{HTTP_PORT}")
    }

    /// Starts `labboot serve` and waits until its API listens.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = self.ns.command(labboot_bin());
        cmd.args(["--log", "info", "serve", "--config"])
            .arg(self.config());
        let p = ServerProcess::start(
            "labboot serve",
            cmd,
            "labboot: API at",
            Duration::from_secs(30),
        )?;
        self.serve = Some(p);
        Ok(())
    }

    /// Kills `labboot serve` with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.serve.take() {
            p.kill();
        }
    }

    /// `labboot ARGS… --server URL --token TOKEN` inside the namespace, to its end.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.ns
            .command(labboot_bin())
            .args(args)
            .args(["--server", &self.url(), "--token", TOKEN])
            .stdin(Stdio::null())
            .output()
            .expect("run the labboot client")
    }

    /// `curl -s -w '\n%{http_code}' ARGS…` inside the namespace: (status, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        run_curl(self.ns.command("curl"), args)
    }

    /// `POST {url}/api/v1{path}` with the admin token and `body` (JSON), inside the namespace.
    pub fn post(&self, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("{}/api/v1{path}", self.url());
        let auth = format!("Authorization: Bearer {TOKEN}");
        let mut args = vec!["-X", "POST", "-H", auth.as_str()];
        if let Some(b) = body {
            args.extend(["-d", b]);
        }
        args.push(&url);
        self.curl(&args)
    }

    /// A board as JSON text (`labboot board show ID --json`).
    pub fn board_json(&self, id: &str) -> anyhow::Result<String> {
        let out = self.cli(&["board", "show", id, "--json"]);
        if !out.status.success() {
            bail!("board show: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the board's JSON contains `needle` (e.g. `"health": "online"`).
    pub fn wait_board(&self, id: &str, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(j) = self.board_json(id) {
                let compact: String = j.split_whitespace().collect::<Vec<_>>().join(" ");
                if compact.contains(needle) {
                    return Ok(compact);
                }
                last = compact;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        bail!("board {id} never showed {needle} within {timeout:?}; last: {last}")
    }

    /// Powers the board on through the API.
    pub fn power_on(&self) -> anyhow::Result<()> {
        let out = self.cli(&["board", "power", &self.board.board_id, "on"]);
        if !out.status.success() {
            bail!("board power on: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The appliance's log so far.
    pub fn serve_log(&self) -> String {
        self.serve
            .as_ref()
            .map(|p| p.lines().join("\n"))
            .unwrap_or_default()
    }
}

/// Runs `curl` (a command naming it, e.g. inside a namespace) with `-s -w '\n%{http_code}'` and
/// `args`: (status, body).
pub fn run_curl(mut curl: Command, args: &[&str]) -> (u16, String) {
    let out = curl
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The sample job: tftp + ramdisk from the master's kernel and initrd, a serial U-Boot boot,
/// and an inline test with a passing case and a measurement.
pub fn sample_job(master: &Path) -> String {
    format!(
        "device_type: labboot-qemu-arm64\n\
         job_name: labboot demo, tftp + ramdisk smoke test\n\
         timeouts:\n  job: {{minutes: 10}}\n  action: {{minutes: 4}}\n  connection: {{minutes: 2}}\n\
         priority: medium\n\
         visibility: public\n\
         actions:\n\
         - deploy:\n    timeout: {{minutes: 3}}\n    to: tftp\n    os: debian\n    kernel:\n      url: file://{master}/vmlinuz\n      type: image\n    ramdisk:\n      url: file://{master}/initrd.cpio.gz\n      compression: gz\n\
         - boot:\n    method: u-boot\n    commands: ramdisk\n    prompts: ['labboot-ramdisk# ']\n    timeout: {{minutes: 4}}\n\
         - test:\n    timeout: {{minutes: 3}}\n    definitions:\n    - from: inline\n      name: demo\n      path: inline/demo.yaml\n      repository:\n        metadata: {{format: Lava-Test Test Definition 1.0, name: demo, description: labboot demo}}\n        run:\n          steps:\n          - lava-test-case kernel-is-arm64 --shell test \"$(uname -m)\" = aarch64\n          - lava-test-case boot-time --result pass --measurement \"$(cut -d' ' -f1 /proc/uptime)\" --units seconds\n",
        master = master.display()
    )
}

/// A job that only tests in the master image: it runs through the board's agent, no reboot.
pub fn agent_job() -> String {
    "device_type: labboot-qemu-arm64\n\
     job_name: in the master, through the agent\n\
     timeouts:\n  job: {minutes: 5}\n\
     priority: high\n\
     visibility: public\n\
     actions:\n\
     - test:\n    timeout: {minutes: 3}\n    definitions:\n    - from: inline\n      name: master\n      path: inline/master.yaml\n      repository:\n        metadata: {format: Lava-Test Test Definition 1.0, name: master, description: checks in the master}\n        run:\n          steps:\n          - lava-test-case root-is-overlay --shell grep -q '^overlay / overlay' /proc/mounts\n          - lava-test-case memory --result pass --measurement \"$(awk '/MemTotal/ {print $2}' /proc/meminfo)\" --units kB\n"
        .to_string()
}

/// The master image for the appliance's tests, built once per input change: the recipe, the
/// agent and the initrd's scripts are hashed into the directory's name.
pub fn master(tmp: &Path) -> anyhow::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let root = crate::binary::workspace_root();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in [
        "imagebuilder/recipes/master-arm64.yaml",
        "imagebuilder/recipes/labboot-agent.sh",
        "imagebuilder/src/initrd/init.sh",
        "imagebuilder/src/initrd/udhcpc.sh",
    ] {
        std::fs::read(root.join(f))
            .with_context(|| format!("read {f}"))?
            .hash(&mut h);
    }
    let out = tmp.join(format!("appliance-master-{:016x}", h.finish()));
    // One build at a time, across tests and processes (the demo and the tests share it).
    std::fs::create_dir_all(tmp)?;
    let lock = std::fs::File::create(tmp.join("appliance-master.lock"))?;
    // SAFETY: flock on a file descriptor this function owns; released when `lock` drops.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!("flock: {}", std::io::Error::last_os_error());
    }
    if !out.join("manifest.json").is_file() {
        let partial = tmp.join(format!(
            "{}.partial",
            out.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&partial);
        crate::master::build_master(tmp, &partial);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::rename(&partial, &out).with_context(|| format!("rename to {}", out.display()))?;
    }
    drop(lock);
    Ok(out)
}

/// Runs `cmd`, failing with its stderr unless it succeeds.
pub fn run_ok(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the virtual-board tests can run here (root, QEMU arm64, U-Boot); says why not.
pub fn boards_ready() -> bool {
    use crate::qemu::{QEMU_ARM64, UBOOT_ARM64};
    crate::require::root() && crate::require::tool(QEMU_ARM64) && crate::require::file(UBOOT_ARM64)
}

/// [`master`] built once per test process (`tmp`: the test's `CARGO_TARGET_TMPDIR`).
pub fn shared_master(tmp: &Path) -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| master(tmp).expect("master image"))
}

/// `text` as JSON, or a panic that shows it.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl ApplianceLab {
    /// `labboot ARGS… --json`, which must succeed: its JSON (a panic shows the appliance's log).
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "labboot {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.serve_log()
        );
        json(&String::from_utf8_lossy(&out.stdout))
    }

    /// Waits until job `id` is in `state`; its JSON (a panic shows the job, the board and the
    /// appliance's log).
    pub fn wait_job(&self, id: i64, state: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let j = self.cli_json(&["job", "show", &id.to_string()]);
            if j["state"] == state {
                return j;
            }
            if Instant::now() >= deadline {
                let out = self.cli(&["job", "logs", &id.to_string()]);
                let log = String::from_utf8_lossy(&out.stdout);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "job {id} never reached {state}: {j}\n--- the job's log, last lines:\n{}\n--- board:\n{}\n--- labboot serve:\n{}",
                    tail.join("\n"),
                    self.board_json(&self.board.board_id).unwrap_or_default(),
                    self.serve_log()
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}
