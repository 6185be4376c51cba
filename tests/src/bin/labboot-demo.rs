//! `make demo`: see `labboot_tests::demo`. Environment: JOB (a LAVA job for device type
//! labboot-qemu-arm64), OUT (copy the job's outputs there), KEEP=1 (keep the lab until Ctrl-C).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let nonempty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let root = labboot_tests::binary::workspace_root();
    let opts = labboot_tests::demo::DemoOptions {
        job: nonempty("JOB").map(|j| std::env::current_dir().unwrap_or_default().join(j)),
        out: nonempty("OUT").map(|o| std::env::current_dir().unwrap_or_default().join(o)),
        keep: nonempty("KEEP").is_some_and(|k| k != "0"),
        tmp: root.join("target/tmp"),
    };
    if !labboot_tests::require::root() {
        eprintln!("labboot demo: needs root (network namespaces, taps)");
        return ExitCode::FAILURE;
    }
    let _ = PathBuf::new();
    match labboot_tests::demo::run(&opts) {
        Ok(o) if o.complete => {
            println!("labboot demo: job {} complete", o.job_id);
            ExitCode::SUCCESS
        }
        Ok(o) => {
            eprintln!("labboot demo: job {} did not complete", o.job_id);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("labboot demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
