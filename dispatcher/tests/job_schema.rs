//! The job schema checks, end to end: every good fixture parses, every bad fixture fails with
//! exactly its one `FILE:LINE: key.path: message` line, and (when `LAVA_REFERENCE_DIR` names
//! LAVA's reference data) LAVA's own sample jobs parse.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dispatcher::job::{
    load_job, parse_job, ActionBlock, BootCommands, Compression, DefinitionSource, DeployTo,
    KernelType,
};
use dispatcher::ErrorKind;

/// The job fixtures.
fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jobs")
}

/// Each bad fixture and the error it must give (after `FILE:`).
const BAD: &[(&str, &str)] = &[
    ("action-command", "21: actions[2].command: not supported by labboot: command actions are not run"),
    ("action-timeout-over-job", "19: actions[1].boot.timeout: timeout is longer than the job timeout (600 seconds)"),
    ("action-two-keys", "16: actions[1]: each action is a mapping with exactly one key: deploy, boot or test"),
    ("action-unknown-type", "21: actions[2].tests: unknown action type (deploy, boot or test)"),
    ("artifact-missing-url", "10: actions[0].deploy.kernel.url: required key is missing"),
    ("artifact-url-scheme", "11: actions[0].deploy.kernel.url: URL scheme 'scp' is not supported by labboot (http, https, file or a local path)"),
    ("auto-login-missing-username", "19: actions[1].boot.auto_login.username: required key is missing"),
    ("auto-login-password-alone", "19: actions[1].boot.auto_login.password_prompt: required key is missing"),
    ("boot-commands-bad", "18: actions[1].boot.commands: must be a string or a list of strings (got a mapping)"),
    ("boot-method-unknown", "17: actions[1].boot.method: unknown boot method 'uboot' (labboot boots with u-boot or minimal)"),
    ("boot-method-unsupported", "17: actions[1].boot.method: boot method 'qemu' is not supported by labboot (u-boot, minimal)"),
    ("boot-minimal-commands", "18: actions[1].boot.commands: boot method minimal takes no commands (it powers on and waits)"),
    ("boot-missing-commands", "16: actions[1].boot.commands: required key is missing"),
    ("boot-reset-false", "19: actions[1].boot.reset: only true is supported by labboot: the board is always reset before it boots"),
    ("checksum-md5", "16: actions[0].deploy.ramdisk.md5sum: must be an MD5 sum: 32 hexadecimal digits"),
    ("checksum-sha256", "13: actions[0].deploy.kernel.sha256sum: must be a SHA-256 sum: 64 hexadecimal digits"),
    ("checksum-sha512", "13: actions[0].deploy.kernel.sha512sum: not supported by labboot: use sha256sum or md5sum"),
    ("compression-bad", "15: actions[0].deploy.ramdisk.compression: must be one of gz, xz, zstd, bz2 (got 'lzma')"),
    ("compression-zip", "15: actions[0].deploy.ramdisk.compression: compression 'zip' is not supported by labboot (gz, xz, zstd, bz2)"),
    ("context-labboot-boot", "5: context.labboot_boot: must be one of serial, network (got 'usb')"),
    ("context-unknown-variable", "5: context.kernel_args: unknown context variable (LAVA's context variables and labboot_boot are accepted)"),
    ("definition-from-bad", "24: actions[2].test.definitions[0].from: must be one of git, url, inline (got 'svn')"),
    ("definition-inline-format", "26: actions[2].test.definitions[0].repository.metadata.format: must be 'Lava-Test Test Definition 1.0' (got 'Lava-Test Test Definition 2.0')"),
    ("definition-inline-unknown", "29: actions[2].test.definitions[0].repository.run.step: unknown key (did you mean 'steps'?)"),
    ("definition-missing-path", "23: actions[2].test.definitions[0].path: required key is missing"),
    ("definition-missing-repository", "23: actions[2].test.definitions[0].repository: required key is missing"),
    ("definition-name-bad", "26: actions[2].test.definitions[0].name: 'smoke test' may only hold letters, digits, '-', '_' and '.'"),
    ("deploy-missing-to", "8: actions[0].deploy.to: required key is missing"),
    ("deploy-unknown-target", "9: actions[0].deploy.to: unknown deploy target 'ftp' (labboot deploys to tftp, nfs, nbd, downloads)"),
    ("deploy-unsupported-key", "10: actions[0].deploy.persistent_nfs: not supported by labboot: labboot serves the NFS root it deploys"),
    ("deploy-unsupported-target", "9: actions[0].deploy.to: deploy to 'fastboot' is not supported by labboot (tftp, nfs, nbd, downloads)"),
    ("downloads-empty", "10: actions[0].deploy.images: 'images' is empty"),
    ("empty-actions", "7: actions: a job needs at least one action"),
    ("failure-retry-zero", "22: actions[2].test.failure_retry: must be at least 1 (got 0)"),
    ("global-timeout-over-job", "8: timeouts.actions.lava-test-shell: timeout is longer than the job timeout (600 seconds)"),
    ("header-bad", "16: actions[0].deploy.ramdisk.header: must be 'u-boot' (got 'android')"),
    ("interactive-missing-prompts", "23: actions[2].test.interactive[0].prompts: required key is missing"),
    ("interactive-name-bad", "27: actions[2].test.interactive[0].script[0].name: 'u-boot version' may only hold letters, digits, '-', '_' and '.'"),
    ("interactive-success-empty", "28: actions[2].test.interactive[0].script[0].successes[0].pattern: unknown key"),
    ("job-name-too-long", "3: job_name: must be at most 200 characters long"),
    ("kernel-type-bad", "12: actions[0].deploy.kernel.type: must be one of zimage, image, uimage (got 'Image')"),
    ("missing-actions", "2: actions: required key is missing"),
    ("missing-device-type", "2: device_type: required key is missing"),
    ("missing-job-name", "2: job_name: required key is missing"),
    ("missing-job-timeout", "4: timeouts.job: required key is missing"),
    ("missing-timeouts", "2: timeouts: required key is missing"),
    ("multinode", "5: protocols.lava-multinode: not supported by labboot: a labboot job runs on one board"),
    ("namespace-mixed", "17: actions[1].boot: has no namespace, but others do: when one action has a namespace, every action needs one"),
    ("namespace-reserved", "10: actions[0].deploy.namespace: 'common' is a reserved namespace name (common, docker-test-shell)"),
    ("nbd-missing-nbdroot", "8: actions[0].deploy.nbdroot: required key is missing"),
    ("nfs-prefix", "13: actions[0].deploy.nfsrootfs.prefix: unknown key"),
    ("not-a-mapping", "2: a job is a mapping (job_name, device_type, timeouts, actions, …), got a list"),
    ("priority-bad", "4: priority: must be at most 100 (got 101)"),
    ("prompts-bad", "20: actions[1].boot.prompts[0]: must not be empty"),
    ("repeat", "22: actions[2].test.repeat: not supported by labboot: a block runs once (use failure_retry to run it again when it fails)"),
    ("test-docker", "22: actions[2].test.docker: not supported by labboot: tests run on the board, not in docker"),
    ("test-without-kind", "21: actions[2].test: a test block needs definitions or interactive"),
    ("timeout-not-integer", "6: timeouts.job.minutes: must be a whole number of minutes (got a number)"),
    ("timeout-two-units", "7: timeouts.job.seconds: a timeout takes exactly one unit, 'minutes' is already given"),
    ("timeout-unknown-unit", "6: timeouts.job.mins: unknown key: a timeout takes one of days, hours, minutes or seconds"),
    ("timeout-zero", "20: actions[1].boot.timeout.seconds: must be at least 1 (got 0)"),
    ("transfer-overlay-zmodem", "20: actions[1].boot.transfer_overlay.transfer_method: not supported by labboot: the overlay is downloaded, not sent by zmodem"),
    ("type-not-kernel", "16: actions[0].deploy.ramdisk.type: unknown key"),
    ("unknown-key", "19: actions[1].boot.promts: unknown key (did you mean 'prompts'?)"),
    ("unknown-top-key", "4: job_timeout: unknown key"),
    ("unsupported-top-key", "4: secrets: not supported by labboot: no secrets are passed to the test shell"),
    ("visibility-bad", "4: visibility: must be public, personal or {group: [names]}"),
    ("yaml-syntax", "19: YAML syntax error: while parsing a block mapping, did not find expected key"),
];

#[test]
fn every_bad_job_gives_its_one_line() {
    let mut failures = Vec::new();
    for (name, expected) in BAD {
        let path = jobs_dir().join("bad").join(format!("{name}.yaml"));
        let want = format!("{}:{expected}", path.display());
        match load_job(&path) {
            Ok(_) => failures.push(format!("{name}: parsed, expected: {want}")),
            Err(e) if e.kind != ErrorKind::JobError => {
                failures.push(format!("{name}: {:?} instead of JobError", e.kind))
            }
            Err(e) if e.message != want => {
                failures.push(format!("{name}:\n   got: {}\n  want: {want}", e.message))
            }
            Err(e) if e.message.contains('\n') => failures.push(format!("{name}: not one line")),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_fixture_is_checked() {
    let dir = jobs_dir().join("bad");
    let entries = std::fs::read_dir(&dir).expect("fixtures/jobs/bad exists");
    for entry in entries {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".yaml") {
            assert!(
                BAD.iter().any(|(n, _)| *n == stem),
                "{name} has no expected error in BAD"
            );
        }
    }
}

/// The good fixtures.
fn good_jobs() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(jobs_dir())
        .expect("fixtures/jobs exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_good_job_parses() {
    let paths = good_jobs();
    assert!(paths.len() >= 7, "fixtures missing: {paths:?}");
    for path in paths {
        let job = load_job(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!job.actions.is_empty());
        assert_eq!(job.file, path.display().to_string());
    }
}

fn load(name: &str) -> dispatcher::job::Job {
    let path = jobs_dir().join(name);
    load_job(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn ramdisk_job_content() {
    let job = load("tftp-ramdisk.yaml");
    assert_eq!(job.device_type, "labboot-qemu-arm64");
    assert_eq!(job.timeouts.job, Duration::from_secs(1200));
    assert_eq!(
        job.timeouts.actions["lava-test-shell"],
        Duration::from_secs(480)
    );
    assert_eq!(
        job.timeouts.connections["lava-test-shell"],
        Duration::from_secs(30)
    );
    assert_eq!(job.priority.as_deref(), Some("medium"));
    assert_eq!(job.metadata.get("build.number"), Some(&42.into()));
    let [ActionBlock::Deploy(d), ActionBlock::Boot(b), ActionBlock::Test(t)] =
        job.actions.as_slice()
    else {
        panic!("expected deploy, boot, test: {:?}", job.actions);
    };
    assert_eq!(d.to, DeployTo::Tftp);
    assert_eq!(d.common.line, 28);
    assert_eq!(d.common.timeout, Some(Duration::from_secs(240)));
    let kernel = d.kernel.as_ref().expect("kernel");
    assert_eq!(kernel.kernel_type, Some(KernelType::Image));
    assert_eq!(kernel.compression, Some(Compression::Gz));
    assert_eq!(
        kernel.sha256.as_deref(),
        Some("2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")
    );
    let ramdisk = d.ramdisk.as_ref().expect("ramdisk");
    assert_eq!(ramdisk.install_modules, Some(false));
    assert_eq!(
        ramdisk.md5.as_deref(),
        Some("d41d8cd98f00b204e9800998ecf8427e")
    );
    assert_eq!(d.artifacts().len(), 3);
    assert_eq!(b.commands, Some(BootCommands::Named("ramdisk".into())));
    assert_eq!(b.common.failure_retry, Some(2));
    assert_eq!(
        b.common.timeouts["u-boot-interrupt"],
        Duration::from_secs(40)
    );
    assert_eq!(b.prompts, vec!["root@qemu:~#", "# "]);
    let login = b.auto_login.as_ref().expect("auto_login");
    assert_eq!(
        (login.login_prompt.as_str(), login.username.as_str()),
        ("login:", "root")
    );
    assert_eq!(login.login_commands, vec!["stty cols 200"]);
    assert_eq!(b.soft_reboot, Some("reboot -f".into()));
    assert!(b.parameters.contains_key("shutdown-message"));
    assert_eq!(t.common.failure_retry, Some(3));
    assert_eq!(t.definitions[0].name, "smoke-basic");
    assert!(matches!(
        &t.definitions[0].source,
        DefinitionSource::Git { branch: Some(b), path, .. } if b == "main" && path == "smoke/basic.yaml"
    ));
}

#[test]
fn nfs_nbd_downloads_content() {
    let job = load("tftp-nfsrootfs.yaml");
    let ActionBlock::Deploy(d) = &job.actions[0] else {
        panic!("deploy first")
    };
    let root = d.nfsrootfs.as_ref().expect("nfsrootfs");
    assert_eq!(
        (root.prefix.as_deref(), root.install_overlay),
        (Some("rootfs/"), Some(true))
    );
    assert_eq!(
        job.context.get("extra_kernel_args"),
        Some(&"loglevel=7".into())
    );
    let ActionBlock::Boot(b) = &job.actions[1] else {
        panic!("boot second")
    };
    assert_eq!(b.prompts, vec!["root@debian:~#"]);
    assert!(b.transfer_overlay.is_some());

    let job = load("nbd.yaml");
    let ActionBlock::Deploy(d) = &job.actions[0] else {
        panic!("deploy first")
    };
    assert_eq!(d.to, DeployTo::Nbd);
    assert_eq!(
        d.nbdroot.as_ref().and_then(|a| a.compression),
        Some(Compression::Zstd)
    );
    assert!(d.initrd.is_some() && d.kernel.is_some() && d.dtb.is_some());
    assert!(job.protocols.contains_key("lava-xnbd"));
    let ActionBlock::Boot(b) = &job.actions[1] else {
        panic!("boot second")
    };
    assert!(b.common.protocols.is_some());
    assert_eq!(
        b.auto_login.as_ref().and_then(|l| l.password.as_deref()),
        Some("secret")
    );

    let job = load("downloads.yaml");
    let ActionBlock::Deploy(d) = &job.actions[0] else {
        panic!("deploy first")
    };
    assert_eq!(d.to, DeployTo::Downloads);
    let keys: Vec<&str> = d.other.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["firmware", "kernel"]);
    let ActionBlock::Deploy(d) = &job.actions[1] else {
        panic!("tftp second")
    };
    assert!(d.ramdisk.as_ref().is_some_and(|r| r.uboot_header));
    assert_eq!(d.other.first().map(|a| a.key.as_str()), Some("tee"));
}

#[test]
fn commands_interactive_definitions_content() {
    let job = load("inline-commands.yaml");
    let ActionBlock::Boot(b) = &job.actions[1] else {
        panic!("boot second")
    };
    let Some(BootCommands::Inline(lines)) = &b.commands else {
        panic!("inline commands")
    };
    assert_eq!(lines.len(), 8);
    assert_eq!(
        lines[6],
        "setenv bootargs 'console=ttyAMA0 labboot.root=ramdisk'"
    );

    let job = load("interactive.yaml");
    let ActionBlock::Boot(b) = &job.actions[0] else {
        panic!("boot first")
    };
    assert_eq!((b.method.as_str(), b.commands.as_ref()), ("minimal", None));
    let ActionBlock::Test(t) = &job.actions[1] else {
        panic!("test second")
    };
    assert!(t.definitions.is_empty());
    assert_eq!(t.interactive.len(), 2);
    let script = &t.interactive[0];
    assert_eq!(
        (script.name.as_str(), script.prompts.as_slice()),
        ("uboot-basics", &["=> ".to_string()][..])
    );
    assert_eq!(
        script.script[1].command.as_deref(),
        Some("printenv fdtcontroladdr")
    );
    assert_eq!(script.script[1].successes, vec!["fdtcontroladdr="]);
    assert_eq!(script.script[1].failures, vec!["not defined"]);
    assert_eq!(script.script[2].command, None);

    let job = load("definitions.yaml");
    let ActionBlock::Test(t) = &job.actions[2] else {
        panic!("test third")
    };
    assert!(matches!(
        t.definitions[0].source,
        DefinitionSource::Git { .. }
    ));
    assert!(
        matches!(&t.definitions[1].source, DefinitionSource::Url { repository } if repository.ends_with("stress.yaml"))
    );
    assert_eq!(
        t.definitions[1].parameters.get("DURATION"),
        Some(&60.into())
    );
    let DefinitionSource::Inline(def) = &t.definitions[2].source else {
        panic!("inline third")
    };
    assert_eq!(def["metadata"]["name"], "inline-checks");
    assert_eq!(def["run"]["steps"][0], "echo \"uptime: pass\"");
}

#[test]
fn parse_job_names_the_given_file() {
    let err = parse_job("some/where.yaml", "job_name: x\n").expect_err("incomplete");
    assert_eq!(
        err.message,
        "some/where.yaml:1: device_type: required key is missing"
    );
    let err = load_job(Path::new("/nonexistent/job.yaml")).expect_err("missing file");
    assert_eq!(err.kind, ErrorKind::JobError);
    assert!(err
        .message
        .starts_with("/nonexistent/job.yaml: cannot read the job file"));
}

/// LAVA's sample jobs (optional: needs `LAVA_REFERENCE_DIR`).
#[test]
fn lava_sample_jobs_parse() {
    let Some(dir) = std::env::var_os("LAVA_REFERENCE_DIR") else {
        // Straight to stderr, past the test harness's capture, so it shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** LAVA_REFERENCE_DIR not set: conformance not run (LAVA sample jobs) ***\n"
        );
        return;
    };
    let samples = Path::new(&dir).join("tests/lava_dispatcher/sample_jobs");
    let names = [
        "uboot-ramdisk.yaml",
        "uboot-nfs.yaml",
        "bbb-initrd-nbd.yaml",
        "zcu102-ramdisk.yaml",
        "uboot-ramdisk-inline-commands.yaml",
    ];
    for name in names {
        let path = samples.join(name);
        let job = load_job(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!job.actions.is_empty(), "{name}");
    }
    let job = load_job(&samples.join("bbb-initrd-nbd.yaml")).expect("nbd sample");
    let ActionBlock::Deploy(d) = &job.actions[0] else {
        panic!("deploy first")
    };
    assert_eq!(d.to, DeployTo::Nbd);
    assert_eq!(d.os.as_deref(), Some("agl"));
}
