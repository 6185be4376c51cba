//! Job parsing rules, one small job each (the fixture files are checked in tests/job_schema.rs).

use std::time::Duration;

use super::*;
use crate::ErrorKind;

/// A job whose first action block is `block` (indented as a list item's content).
fn job_with(header: &str, block: &str) -> String {
    format!(
        "device_type: qemu\njob_name: t\ntimeouts:\n  job:\n    minutes: 10\n{header}actions:\n{block}"
    )
}

/// A minimal valid test block.
const TEST: &str =
    "- test:\n    definitions:\n    - {from: git, repository: r, path: p, name: n}\n";

fn ok(text: &str) -> Job {
    parse_job("t.yaml", text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn err(text: &str) -> String {
    let e = parse_job("t.yaml", text).expect_err(text);
    assert_eq!(e.kind, ErrorKind::JobError);
    e.message
}

#[test]
fn minimal_job() {
    let job = ok(&job_with("", TEST));
    assert_eq!(job.name, "t");
    assert_eq!(job.timeouts.job, Duration::from_secs(600));
    assert_eq!(job.actions.len(), 1);
    assert_eq!(job.actions[0].common().line, 7);
    assert_eq!(job.visibility, None);
}

#[test]
fn header_values() {
    let header = "priority: 0\nvisibility:\n  group: [a, b]\ncontext:\n  extra_kernel_args: quiet\n  booti_kernel_addr: 0x40400000\n  boot_retry: [1, two]\n  labboot_boot: serial\ntags: [x]\nnotify:\n  criteria: {status: finished}\nreboot_to_fastboot: false\ndevice: board-1\n";
    let job = ok(&job_with(header, TEST));
    assert_eq!(job.priority.as_deref(), Some("0"));
    assert!(job.visibility.is_some());
    assert_eq!(job.context.len(), 4);
    assert_eq!(job.context.get("extra_kernel_args"), Some(&"quiet".into()));
}

#[test]
fn context_values_are_scalars_or_lists() {
    let m = err(&job_with("context:\n  extra_kernel_args: {a: 1}\n", TEST));
    assert_eq!(
        m,
        "t.yaml:7: context.extra_kernel_args: must be an integer, a string or a list of them (got a mapping)"
    );
}

#[test]
fn namespaces_everywhere_are_fine() {
    let block = "- boot:\n    namespace: a\n    method: minimal\n- test:\n    namespace: a\n    interactive:\n    - {name: x, prompts: ['#'], script: [{command: ls}]}\n";
    let job = ok(&job_with("", block));
    assert_eq!(job.actions[0].common().namespace.as_deref(), Some("a"));
}

#[test]
fn duplicate_keys_are_refused() {
    let m = err(&job_with("job_name: again\n", TEST));
    assert_eq!(m, "t.yaml:6: job_name: duplicate key in the same mapping");
}

#[test]
fn unsupported_values_of_accepted_keys() {
    let cases = [
        (
            "- boot:\n    method: u-boot\n    commands: nfs\n    use_bootscript: true\n",
            "t.yaml:10: actions[0].boot.use_bootscript: only false is supported by labboot",
        ),
        (
            "- test:\n    definitions:\n    - {from: git, repository: r, path: p, name: n, lava-signal: kmsg}\n",
            "t.yaml:9: actions[0].test.definitions[0].lava-signal: not supported by labboot",
        ),
        (
            "- test:\n    interactive:\n    - {name: x, prompts: ['#'], script: [{command: ls, wait_for_prompt: false}]}\n",
            "t.yaml:9: actions[0].test.interactive[0].script[0].wait_for_prompt: only true",
        ),
        (
            "- test:\n    interactive:\n    - {name: x, prompts: ['#'], script: [{command: ls, failures: [{message: x, exception: JobError}]}]}\n",
            "t.yaml:9: actions[0].test.interactive[0].script[0].failures[0].exception: not supported",
        ),
        (
            "- deploy:\n    to: nfs\n    images: {rootfs: {url: x}}\n",
            "t.yaml:9: actions[0].deploy.images: not supported by labboot",
        ),
    ];
    for (block, want) in cases {
        let m = err(&job_with("", block));
        assert!(m.starts_with(want), "got: {m}\nwant: {want}");
    }
}

#[test]
fn lava_accepted_keys_are_accepted() {
    let block = "- deploy:\n    to: tftp\n    os: oe\n    authorize: ssh\n    role: [a]\n    failure_retry: 2\n    kernel: {url: k, type: uimage, use_cache: false}\n    dtb: {url: d}\n    preseed: {url: p}\n    nfsrootfs: {url: n, compression: null, install_modules: false}\n- boot:\n    method: minimal\n    reset: true\n    pre_power_command: false\n    ignore_kernel_messages: false\n    prompts: ['#']\n    transfer_overlay: {download_command: wget, unpack_command: tar xf, transfer_method: http}\n";
    let job = ok(&job_with("", block));
    let ActionBlock::Deploy(d) = &job.actions[0] else {
        panic!("deploy");
    };
    assert_eq!(
        d.kernel.as_ref().and_then(|k| k.kernel_type),
        Some(KernelType::Uimage)
    );
    assert_eq!(d.nfsrootfs.as_ref().and_then(|n| n.compression), None);
    assert_eq!(d.other.len(), 1);
    assert_eq!(d.common.failure_retry, Some(2));
}

#[test]
fn lists_that_must_be_lists() {
    let m = err(&job_with("", "- test:\n    definitions: {from: git}\n"));
    assert_eq!(
        m,
        "t.yaml:8: actions[0].test.definitions: must be a list (got a mapping)"
    );
    let m = err(&job_with("", "  deploy: {to: tftp}\n"));
    assert_eq!(m, "t.yaml:6: actions: must be a list (got a mapping)");
}

#[test]
fn definitions_and_interactive_together() {
    let block = "- test:\n    definitions: []\n    interactive: []\n";
    let m = err(&job_with("", block));
    assert_eq!(
        m,
        "t.yaml:9: actions[0].test.interactive: a test block has either definitions or interactive, not both"
    );
}

#[test]
fn block_timeouts_map() {
    let block = "- boot:\n    method: minimal\n    timeouts:\n      auto-login-action: {minutes: 2}\n      bad: {minutes: 0}\n";
    let m = err(&job_with("", block));
    assert_eq!(
        m,
        "t.yaml:11: actions[0].boot.timeouts.bad.minutes: must be at least 1 (got 0)"
    );
}
