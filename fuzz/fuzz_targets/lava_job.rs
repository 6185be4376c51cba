//! LAVA jobs: job YAML (what `labboot job submit` and `labboot dispatch` take from users)
//! through the dispatcher's line-keeping YAML parser and schema checks, then, as
//! `serve::submit` does before a job is queued, the board's device dictionary rendered with the
//! job's `context`, the pipeline built and validated, and `description.yaml` made.
//!
//! The device is `dispatcher/fixtures/devices/qemu-board.jinja2` on the shipped device-type
//! templates.

#![no_main]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use dispatcher::device::{boot_style, load_device};
use dispatcher::job::parse_job;
use dispatcher::pipeline;
use libfuzzer_sys::fuzz_target;

fn device_file() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let path = common::scratch_dir("job").join("qemu-board.jinja2");
        let text = include_str!("../../dispatcher/fixtures/devices/qemu-board.jinja2");
        std::fs::write(&path, text).unwrap();
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(job) = parse_job("job.yaml", text) else {
        return;
    };
    let Ok(device) = load_device(device_file(), None, &job.context) else {
        return;
    };
    let Ok(tree) = pipeline::build(&job, &device) else {
        return;
    };
    let _ = serde_yaml_ng::to_string(&pipeline::describe(&tree)).expect("description.yaml");
    if let Ok(style) = boot_style(&device, &job.context) {
        let _ = pipeline::validate(&job, &device, style);
    }
});
