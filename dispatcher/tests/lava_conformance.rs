//! Conformance with LAVA's own test data, when `LAVA_REFERENCE_DIR` points at it (`.ci/run`
//! sets it to `../shared/lava-reference` when that exists): every sample job validates with its
//! rendered device and with its device dictionary + LAVA's device-type templates, and the
//! pipeline tree has the shape of LAVA's pipeline reference (names, levels, retries, timeouts).

use std::path::{Path, PathBuf};

use dispatcher::device::load_device;
use dispatcher::job::load_job;
use dispatcher::pipeline::{build, describe};
use serde_yaml_ng::Value;

fn reference_dir() -> Option<PathBuf> {
    match std::env::var_os("LAVA_REFERENCE_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!(
                "*** LAVA_REFERENCE_DIR is not set: the LAVA conformance test did NOT run ***"
            );
            None
        }
    }
}

/// (sample job, rendered device, device dictionary) as LAVA's own tests pair them.
const SAMPLES: [(&str, &str, &str); 5] = [
    ("uboot-ramdisk", "bbb-01", "bbb-01"),
    ("uboot-nfs", "bbb-01", "bbb-01"),
    ("uboot-ramdisk-inline-commands", "bbb-01", "bbb-01"),
    ("bbb-initrd-nbd", "bbb-01", "bbb-01"),
    ("zcu102-ramdisk", "zcu102", "zcu102"),
];

/// The shape of a tree: (level, name, max_retries, timeout) for every action, depth first.
fn shape(tree: &Value) -> Vec<(String, String, u64, u64)> {
    let mut out = Vec::new();
    fn rec(v: &Value, out: &mut Vec<(String, String, u64, u64)>) {
        for a in v.as_sequence().into_iter().flatten() {
            let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let n = |k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX);
            out.push((s("level"), s("name"), n("max_retries"), n("timeout")));
            if let Some(p) = a.get("pipeline") {
                rec(p, out);
            }
        }
    }
    rec(tree, &mut out);
    out
}

fn check(root: &Path, job: &str, device: &Path, templates: Option<&Path>) -> Value {
    let job_path = root.join(format!("tests/lava_dispatcher/sample_jobs/{job}.yaml"));
    let j = load_job(&job_path).unwrap_or_else(|e| panic!("{job}: {e}"));
    let d = load_device(device, templates, &j.context)
        .unwrap_or_else(|e| panic!("{job} with {}: {e}", device.display()));
    let p = build(&j, &d).unwrap_or_else(|e| panic!("{job} with {}: {e}", device.display()));
    describe(&p)
}

#[test]
fn sample_jobs_validate_and_match_the_pipeline_references() {
    let Some(root) = reference_dir() else {
        return;
    };
    let templates = root.join("etc/dispatcher-config/device-types");
    let mut compared = 0;
    for (job, rendered, dict) in SAMPLES {
        let from_rendered = check(
            &root,
            job,
            &root.join(format!("rendered-devices/{rendered}.yaml")),
            None,
        );
        let from_dict = check(
            &root,
            job,
            &root.join(format!("tests/lava_scheduler_app/devices/{dict}.jinja2")),
            Some(&templates),
        );
        assert_eq!(
            shape(&from_rendered),
            shape(&from_dict),
            "{job}: the rendered device and the dictionary give different trees"
        );
        let reference = root.join(format!("tests/lava_dispatcher/pipeline_refs/{job}.yaml"));
        if let Ok(text) = std::fs::read_to_string(&reference) {
            let want: Value = serde_yaml_ng::from_str(&text).unwrap();
            let (got, want) = (shape(&from_rendered), shape(&want));
            for (g, w) in got.iter().zip(want.iter()) {
                assert_eq!(
                    g, w,
                    "{job}: first difference from LAVA's pipeline reference"
                );
            }
            assert_eq!(
                got.len(),
                want.len(),
                "{job}: tree length differs from LAVA's reference"
            );
            compared += 1;
        }
        eprintln!("{job}: valid with {rendered}.yaml and {dict}.jinja2");
    }
    assert_eq!(compared, 4, "four sample jobs have pipeline references");
}
