//! `labboot dispatch` on the virtual QEMU arm64 board with real U-Boot and the real Debian
//! arm64 kernel: tftp + ramdisk, tftp + nfsrootfs and nbd jobs, each booted the LAVA way
//! (U-Boot interrupted, commands typed) and the labboot way (commands in the board's network
//! boot script), each running an inline test definition with passing, failing and measured
//! cases; then the failures a lab meets: a bad checksum, a kernel that never prints, a test
//! that hangs, a board that stays silent on its first power-on, and SIGTERM during a test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use labboot_tests::dispatch::DispatchLab;
use labboot_tests::qemu::{QEMU_ARM64, UBOOT_ARM64};
use labboot_tests::require;

fn ready() -> bool {
    require::root() && require::tool(QEMU_ARM64) && require::file(UBOOT_ARM64)
}

/// The master image, built once for every test of this file.
fn master() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = tmp.join("dispatch-master");
        if !out.join("manifest.json").is_file() {
            labboot_tests::master::build_master(tmp, &out);
        }
        out
    })
}

/// The inline test definition every job runs: two passes, a failure, a measurement, a
/// `--shell` pass and fail, a test set, and a line for the parse pattern.
const DEFINITION: &str = r#"
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata:
          format: Lava-Test Test Definition 1.0
          name: smoke
          description: labboot dispatcher end-to-end checks
        params:
          GREETING: hello
        run:
          steps:
          - lava-test-case always-passes --result pass
          - lava-test-case always-fails --result fail
          - lava-test-case boot-speed --result pass --measurement 42.5 --units seconds
          - lava-test-case kernel-is-arm64 --shell test "$(uname -m)" = aarch64
          - lava-test-case false-command --shell false
          - lava-test-set start network
          - lava-test-case loopback --shell ip link show lo
          - lava-test-set stop network
          - 'echo "parsed-greeting: $([ "$GREETING" = hello ] && echo pass || echo fail)"'
        parse:
          pattern: '(?P<test_case_id>parsed-[a-z]+):\s+(?P<result>(pass|fail))'
"#;

/// A job on the virtual board: a deploy, a u-boot boot, a test block.
struct Job<'a> {
    name: &'a str,
    deploy: String,
    commands: &'a str,
    prompt: &'a str,
    job_timeout: &'a str,
    boot_timeout: &'a str,
    boot_extra: &'a str,
    test: String,
}

impl<'a> Job<'a> {
    /// `name` with the usual timeouts and the smoke test.
    fn new(name: &'a str, deploy: String, commands: &'a str, prompt: &'a str) -> Job<'a> {
        Job {
            name,
            deploy,
            commands,
            prompt,
            job_timeout: "{minutes: 12}",
            boot_timeout: "{minutes: 4}",
            boot_extra: "",
            test: smoke_test(),
        }
    }

    fn text(&self) -> String {
        format!(
            "device_type: labboot-qemu-arm64\n\
             job_name: {name}\n\
             timeouts:\n  job: {job_timeout}\n  action: {{minutes: 4}}\n  connection: {{minutes: 2}}\n\
             priority: medium\n\
             visibility: public\n\
             actions:\n\
             - deploy:\n    timeout: {{minutes: 3}}\n{deploy}\
             - boot:\n    method: u-boot\n    commands: {commands}\n    prompts: ['{prompt}']\n    timeout: {boot_timeout}\n{boot_extra}\
             - test:\n{test}",
            name = self.name,
            job_timeout = self.job_timeout,
            deploy = self.deploy,
            commands = self.commands,
            prompt = self.prompt,
            boot_timeout = self.boot_timeout,
            boot_extra = self.boot_extra,
            test = self.test,
        )
    }
}

/// The test block of most jobs: the inline smoke definition.
fn smoke_test() -> String {
    format!("    timeout: {{minutes: 3}}\n    definitions:{DEFINITION}")
}

/// A test block with one inline definition `name` of `steps`.
fn inline_test(name: &str, timeout: &str, steps: &[&str]) -> String {
    let mut t = format!(
        "    timeout: {timeout}\n    definitions:\n    - from: inline\n      name: {name}\n      path: inline/{name}.yaml\n      repository:\n        metadata: {{format: Lava-Test Test Definition 1.0, name: {name}, description: {name}}}\n        run:\n          steps:\n"
    );
    for step in steps {
        t.push_str(&format!("          - {step}\n"));
    }
    t
}

const RAMDISK_PROMPT: &str = "labboot-ramdisk# ";

fn ramdisk_deploy(lab: &DispatchLab, kernel_sha: &str) -> String {
    format!(
        "    to: tftp\n    os: debian\n    kernel:\n      url: {}\n      type: image\n      sha256sum: {kernel_sha}\n    ramdisk:\n      url: {}\n      compression: gz\n",
        lab.master_url("vmlinuz"),
        lab.master_url("initrd.cpio.gz")
    )
}

fn nfs_deploy(lab: &DispatchLab) -> String {
    format!(
        "    to: tftp\n    os: debian\n    kernel:\n      url: {}\n      type: image\n    ramdisk:\n      url: {}\n      compression: gz\n    nfsrootfs:\n      url: {}\n      compression: gz\n",
        lab.master_url("vmlinuz"),
        lab.master_url("initrd.cpio.gz"),
        lab.master_url("rootfs.tar.gz")
    )
}

fn nbd_deploy(lab: &DispatchLab) -> String {
    format!(
        "    to: nbd\n    os: debian\n    kernel:\n      url: {}\n      type: image\n    initrd:\n      url: {}\n      compression: gz\n    nbdroot:\n      url: {}\n",
        lab.master_url("vmlinuz"),
        lab.master_url("initrd.cpio.gz"),
        lab.master_url("rootfs.squashfs")
    )
}

/// `results.yaml` as (suite, name) → the entry's fields.
fn results(out: &Path) -> BTreeMap<(String, String), serde_yaml_ng::Mapping> {
    let text = std::fs::read_to_string(out.join("results.yaml")).expect("results.yaml");
    let list: Vec<serde_yaml_ng::Mapping> =
        serde_yaml_ng::from_str(&text).expect("results.yaml is a list");
    list.into_iter()
        .map(|m| {
            let s = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            ((s("suite"), s("name")), m)
        })
        .collect()
}

fn result_of(
    r: &BTreeMap<(String, String), serde_yaml_ng::Mapping>,
    suite: &str,
    name: &str,
) -> String {
    r.get(&(suite.to_string(), name.to_string()))
        .and_then(|m| m.get("result"))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no result {suite}/{name} in {:?}",
                r.keys().collect::<Vec<_>>()
            )
        })
        .to_string()
}

fn check_smoke_results(out: &Path) {
    let r = results(out);
    let suite = "0_smoke";
    assert_eq!(result_of(&r, suite, "always-passes"), "pass");
    assert_eq!(result_of(&r, suite, "always-fails"), "fail");
    assert_eq!(result_of(&r, suite, "boot-speed"), "pass");
    let m = &r[&(suite.to_string(), "boot-speed".to_string())];
    let meas = m.get("measurement").map(|v| match v {
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    });
    assert_eq!(
        meas.as_deref()
            .map(|s| s.trim_end_matches('0').trim_end_matches('.')),
        Some("42.5")
    );
    assert_eq!(m.get("unit").and_then(|v| v.as_str()), Some("seconds"));
    assert_eq!(result_of(&r, suite, "kernel-is-arm64"), "pass");
    assert_eq!(result_of(&r, suite, "false-command"), "fail");
    assert_eq!(result_of(&r, suite, "loopback"), "pass");
    assert_eq!(result_of(&r, suite, "parsed-greeting"), "pass");
    assert_eq!(result_of(&r, "lava", "job"), "pass");
}

fn run_complete(
    prefix: &str,
    name: &str,
    boot: &str,
    deploy: impl Fn(&DispatchLab) -> String,
    commands: &str,
    prompt: &str,
) {
    run_complete_with(prefix, name, boot, &[], deploy, commands, prompt)
}

fn run_complete_with(
    prefix: &str,
    name: &str,
    boot: &str,
    device_vars: &[(&str, &str)],
    deploy: impl Fn(&DispatchLab) -> String,
    commands: &str,
    prompt: &str,
) {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new(prefix, "qboard1", master()).unwrap();
    let device = lab.device(boot, device_vars);
    let text = Job::new(name, deploy(&lab), commands, prompt).text();
    let run = lab.run(name, &device, &text);
    assert!(
        run.output.status.success(),
        "the job is incomplete: {}",
        run.stderr()
    );
    check_smoke_results(&run.out);
    for f in ["logs.yaml", "results.yaml", "description.yaml"] {
        assert!(run.out.join(f).is_file(), "{f} missing");
    }
    assert!(!lab.board.is_powered(), "finalize left the board powered");
}

#[test]
fn ramdisk_job_serial_boot() {
    run_complete(
        "dsr",
        "ramdisk-serial",
        "serial",
        |l| ramdisk_deploy(l, &l.master_sha256("vmlinuz")),
        "ramdisk",
        RAMDISK_PROMPT,
    );
}

#[test]
fn ramdisk_job_network_boot() {
    run_complete(
        "dnr",
        "ramdisk-network",
        "network",
        |l| ramdisk_deploy(l, &l.master_sha256("vmlinuz")),
        "ramdisk",
        RAMDISK_PROMPT,
    );
}

#[test]
fn nfsrootfs_job_serial_boot() {
    run_complete(
        "dsf",
        "nfs-serial",
        "serial",
        nfs_deploy,
        "nfs",
        "labboot-master# ",
    );
}

#[test]
fn nfsrootfs_job_network_boot() {
    run_complete(
        "dnf",
        "nfs-network",
        "network",
        nfs_deploy,
        "nfs",
        "labboot-master# ",
    );
}

/// With the device's `check_exit_codes`: each typed U-Boot command's exit code is checked.
#[test]
fn nbd_job_serial_boot() {
    run_complete_with(
        "dsn",
        "nbd-serial",
        "serial",
        &[("check_exit_codes", "true")],
        nbd_deploy,
        "nbd",
        "labboot-master# ",
    );
}

#[test]
fn nbd_job_network_boot() {
    run_complete(
        "dnn",
        "nbd-network",
        "network",
        nbd_deploy,
        "nbd",
        "labboot-master# ",
    );
}

fn error_of(out: &Path) -> (String, String) {
    let r = results(out);
    let job = &r[&("lava".to_string(), "job".to_string())];
    assert_eq!(job.get("result").and_then(|v| v.as_str()), Some("fail"));
    let meta = job
        .get("metadata")
        .and_then(|v| v.as_mapping())
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    (s("error_type"), s("error_msg"))
}

#[test]
fn wrong_checksum_is_a_job_error_before_power_on() {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new("dck", "qboard1", master()).unwrap();
    let device = lab.device("serial", &[]);
    let bad = "0".repeat(64);
    let text = Job::new(
        "bad-sum",
        ramdisk_deploy(&lab, &bad),
        "ramdisk",
        RAMDISK_PROMPT,
    )
    .text();
    let run = lab.run("bad-sum", &device, &text);
    assert_eq!(run.output.status.code(), Some(1));
    let (kind, msg) = error_of(&run.out);
    assert_eq!(kind, "JobError", "{msg}");
    assert!(msg.contains("sha256"), "{msg}");
    assert!(
        !run.stdout().contains("pdu-reboot:"),
        "the board was powered: {}",
        run.stdout()
    );
    assert!(
        !lab.board.dir().join("qemu.pid").exists(),
        "the board was powered on"
    );
}

#[test]
fn kernel_that_never_prints_is_blamed_on_starting_kernel() {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new("dkh", "qboard1", master()).unwrap();
    // An arm64 Image header that passes booti's checks over code that faults at once: U-Boot
    // starts it and nothing is ever printed.
    let mut real = std::fs::read(lab.master.join("vmlinuz")).unwrap();
    if real.starts_with(&[0x1f, 0x8b]) {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(lab.master.join("vmlinuz"))
            .output()
            .unwrap();
        real = out.stdout;
    }
    let mut dead = vec![0u8; 4 << 20];
    dead[..64].copy_from_slice(&real[..64]);
    let dead_path = lab.work.path().join("dead-Image");
    std::fs::write(&dead_path, &dead).unwrap();
    assert_eq!(
        &dead[0x38..0x3c],
        b"ARM\x64",
        "vmlinuz is not an uncompressed arm64 Image"
    );
    let deploy = format!(
        "    to: tftp\n    kernel:\n      url: file://{}\n      type: image\n    ramdisk:\n      url: {}\n      compression: gz\n",
        dead_path.display(),
        lab.master_url("initrd.cpio.gz")
    );
    let device = lab.device("serial", &[]);
    let text = Job {
        job_timeout: "{minutes: 6}",
        boot_timeout: "{seconds: 45}",
        ..Job::new("dead-kernel", deploy, "ramdisk", RAMDISK_PROMPT)
    }
    .text();
    let run = lab.run("dead-kernel", &device, &text);
    assert_eq!(run.output.status.code(), Some(1));
    let (kind, msg) = error_of(&run.out);
    assert!(
        msg.contains("last milestone: Starting kernel"),
        "{kind}: {msg}"
    );
    assert!(!lab.board.is_powered());
}

#[test]
fn hanging_test_hits_its_timeout() {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new("dth", "qboard1", master()).unwrap();
    let device = lab.device("serial", &[]);
    let text = Job {
        test: inline_test(
            "hang",
            "{seconds: 40}",
            &["lava-test-case before-hang --result pass", "sleep 3600"],
        ),
        ..Job::new(
            "hang",
            ramdisk_deploy(&lab, &lab.master_sha256("vmlinuz")),
            "ramdisk",
            RAMDISK_PROMPT,
        )
    }
    .text();
    let run = lab.run("hang", &device, &text);
    assert_eq!(run.output.status.code(), Some(1));
    let (kind, msg) = error_of(&run.out);
    assert_eq!(kind, "TestError", "{msg}");
    assert!(msg.contains("lava-test-shell timed out"), "{msg}");
    let r = results(&run.out);
    assert_eq!(result_of(&r, "0_hang", "before-hang"), "pass");
    assert!(!lab.board.is_powered());
}

#[test]
fn failure_retry_recovers_from_a_silent_first_boot() {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new("dfr", "qboard1", master()).unwrap();
    // bootloader-interrupt waits 30 s for U-Boot, so the silent first boot fails fast.
    let device = lab.device("serial", &[]);
    lab.board.fail_next_power_on();
    let text = Job {
        boot_extra: "    failure_retry: 2\n",
        ..Job::new(
            "retry",
            ramdisk_deploy(&lab, &lab.master_sha256("vmlinuz")),
            "ramdisk",
            RAMDISK_PROMPT,
        )
    }
    .text();
    let run = lab.run("retry", &device, &text);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert!(
        run.stdout().contains("failed (attempt 1 of 2)"),
        "no retry seen"
    );
    check_smoke_results(&run.out);
}

#[test]
fn sigterm_during_a_test_cancels_cleanly() {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new("dst", "qboard1", master()).unwrap();
    let device = lab.device("serial", &[]);
    let text = Job {
        test: inline_test(
            "long",
            "{minutes: 3}",
            &["lava-test-case first --result pass", "sleep 3600"],
        ),
        ..Job::new(
            "sigterm",
            ramdisk_deploy(&lab, &lab.master_sha256("vmlinuz")),
            "ramdisk",
            RAMDISK_PROMPT,
        )
    }
    .text();
    let (mut child, out) = lab.spawn("sigterm", &device, &text);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "the test never started");
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "dispatch ended before the test started:\n{}",
                seen.join("\n")
            );
        };
        seen.push(line.clone());
        if line.contains("TESTCASE") && line.contains("first") {
            break;
        }
    }
    // `ip netns exec` runs labboot in its own process: signal it, not the wrapper.
    let pid = child.id();
    std::process::Command::new("pkill")
        .args(["-TERM", "-P", &pid.to_string()])
        .status()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", rest.join("\n"));
    let (kind, msg) = error_of(&out);
    assert_eq!(kind, "Canceled", "{msg}");
    let r = results(&out);
    assert_eq!(result_of(&r, "0_long", "first"), "pass");
    assert!(
        !lab.board.is_powered(),
        "finalize did not power the board off"
    );
}

#[test]
fn interactive_test_records_each_step() {
    if !ready() {
        return;
    }
    let lab = DispatchLab::new("dit", "qboard1", master()).unwrap();
    let device = lab.device("serial", &[]);
    let test = "    timeout: {minutes: 2}\n    interactive:\n    - name: shell-checks\n      prompts: ['labboot-ramdisk# ']\n      script:\n      - command: echo $((6 * 7))\n        name: arithmetic\n        successes:\n        - message: '42'\n      - command: cat /does/not/exist\n        name: missing-file\n        successes:\n        - message: 'never printed'\n        failures:\n        - message: 'No such file or directory'\n      - command: uname -m\n";
    let text = Job {
        test: test.to_string(),
        ..Job::new(
            "interactive",
            ramdisk_deploy(&lab, &lab.master_sha256("vmlinuz")),
            "ramdisk",
            RAMDISK_PROMPT,
        )
    }
    .text();
    let run = lab.run("interactive", &device, &text);
    assert!(run.output.status.success(), "{}", run.stderr());
    let r = results(&run.out);
    assert_eq!(result_of(&r, "shell-checks", "arithmetic"), "pass");
    assert_eq!(result_of(&r, "shell-checks", "missing-file"), "fail");
    assert!(!lab.board.is_powered());
}
