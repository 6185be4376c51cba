//! `labboot dispatch --validate`: the repo's own job fixtures validate on the repo's own device
//! dictionaries and get a `description.yaml`; a bad job is one line naming the file, line and
//! key, with exit status 1; a device of another type is refused. With `LAVA_REFERENCE_DIR`,
//! LAVA's sample jobs validate through the command line with their rendered devices and with
//! their device dictionaries and LAVA's templates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use labboot_tests::binary::{labboot_bin, workspace_root};

fn fixtures() -> PathBuf {
    workspace_root().join("dispatcher/fixtures")
}

fn validate(device: &Path, templates: Option<&Path>, job: &Path, out: &Path) -> Output {
    let mut cmd = Command::new(labboot_bin());
    cmd.args(["dispatch", "--validate", "--device"]).arg(device);
    if let Some(t) = templates {
        cmd.arg("--templates").arg(t);
    }
    cmd.arg(job).arg("--output-dir").arg(out);
    cmd.output().expect("run labboot dispatch --validate")
}

fn device_for(job: &Path) -> PathBuf {
    let text = std::fs::read_to_string(job).unwrap();
    if text.contains("device_type: labboot-uboot") {
        fixtures().join("devices/generic-board.jinja2")
    } else {
        fixtures().join("devices/qemu-board.jinja2")
    }
}

#[test]
fn every_fixture_job_validates_and_is_described() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures().join("jobs")).unwrap() {
        let job = entry.unwrap().path();
        if job.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = tmp.path().join(job.file_stem().unwrap());
        let o = validate(&device_for(&job), None, &job, &out);
        assert!(
            o.status.success(),
            "{}: {}",
            job.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let desc = std::fs::read_to_string(out.join("description.yaml")).unwrap();
        assert!(
            desc.contains("pipeline:") && desc.contains("name: finalize"),
            "{desc}"
        );
        n += 1;
    }
    assert!(n >= 5, "only {n} fixture jobs");
}

#[test]
fn a_bad_job_is_one_line_with_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let job = fixtures().join("jobs/bad/unknown-key.yaml");
    let o = validate(&device_for(&job), None, &job, tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("unknown-key.yaml:19: actions[1].boot.promts: unknown key"),
        "{err}"
    );
}

#[test]
fn a_device_of_another_type_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let job = fixtures().join("jobs/tftp-ramdisk.yaml");
    let o = validate(
        &fixtures().join("devices/generic-board.jinja2"),
        None,
        &job,
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("device_type"), "{err}");
}

#[test]
fn lava_sample_jobs_validate_through_the_command_line() {
    let Some(root) = std::env::var_os("LAVA_REFERENCE_DIR").map(PathBuf::from) else {
        eprintln!("*** LAVA_REFERENCE_DIR is not set: LAVA's sample jobs were NOT validated ***");
        return;
    };
    let templates = root.join("etc/dispatcher-config/device-types");
    let tmp = tempfile::tempdir().unwrap();
    let samples = root.join("tests/lava_dispatcher/sample_jobs");
    let mut n = 0;
    for entry in std::fs::read_dir(&samples).unwrap() {
        let job = entry.unwrap().path();
        let name = job.file_stem().unwrap().to_string_lossy().into_owned();
        let dev = if name.starts_with("zcu102") {
            "zcu102"
        } else {
            "bbb-01"
        };
        let rendered = root.join(format!("rendered-devices/{dev}.yaml"));
        let dict = root.join(format!("tests/lava_scheduler_app/devices/{dev}.jinja2"));
        for (device, t, tag) in [
            (&rendered, None, "rendered"),
            (&dict, Some(templates.as_path()), "dict"),
        ] {
            let out = tmp.path().join(format!("{name}-{tag}"));
            let o = validate(device, t, &job, &out);
            assert!(
                o.status.success(),
                "{name} with {}: {}",
                device.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(out.join("description.yaml").is_file());
        }
        n += 1;
    }
    assert_eq!(n, 5, "five LAVA sample jobs");
}
