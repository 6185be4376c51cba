//! The dispatch benchmark (`bench/dispatch/run.sh`, not part of `make test`): time from
//! `labboot dispatch` start to the test runner's first signal for the tftp + ramdisk job, with
//! LAVA's serial boot and with labboot's network-driven boot, alternated on the same virtual
//! board, printed side by side with their ratio (goal: network ≤ 0.7 × serial).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use labboot_tests::dispatch::DispatchLab;

fn job(lab: &DispatchLab) -> String {
    format!(
        "device_type: labboot-qemu-arm64\njob_name: bench-ramdisk\n\
         timeouts:\n  job: {{minutes: 10}}\n  action: {{minutes: 4}}\n\
         priority: medium\nvisibility: public\nactions:\n\
         - deploy:\n    to: tftp\n    kernel:\n      url: {}\n      type: image\n    ramdisk:\n      url: {}\n      compression: gz\n\
         - boot:\n    method: u-boot\n    commands: ramdisk\n    prompts: ['labboot-ramdisk# ']\n\
         - test:\n    definitions:\n    - from: inline\n      name: bench\n      path: inline/bench.yaml\n      repository:\n        metadata: {{format: Lava-Test Test Definition 1.0, name: bench, description: bench}}\n        run:\n          steps:\n          - lava-test-case started --result pass\n",
        lab.master_url("vmlinuz"),
        lab.master_url("initrd.cpio.gz")
    )
}

fn time_to_first_signal(lab: &DispatchLab, device: &Path, name: &str) -> f64 {
    let start = Instant::now();
    let (mut child, _out) = lab.spawn(name, device, &job(lab));
    let stdout = child.stdout.take().unwrap();
    let mut first = None;
    // With BENCH_TRACE set, where the time goes: the seconds at which each milestone passed.
    let trace = std::env::var_os("BENCH_TRACE").is_some();
    let marks = [
        "end: 1",
        "pdu-reboot:",
        "U-Boot 20",
        "Hit any key",
        "labboot: fetching",
        "Starting kernel",
        "Linux version",
        "Run /init",
        "labboot-initrd:",
        "<LAVA_SIGNAL_STARTRUN",
    ];
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if trace && marks.iter().any(|m| line.contains(m)) {
            println!("  {name} {:6.2} s  {line}", start.elapsed().as_secs_f64());
        }
        if first.is_none() && line.contains("<LAVA_SIGNAL_STARTRUN") {
            first = Some(start.elapsed().as_secs_f64());
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{name}: the job failed");
    first.unwrap_or_else(|| panic!("{name}: no STARTRUN signal"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: bench/dispatch/run.sh"]
fn serial_vs_network_time_to_first_signal() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let master: PathBuf = tmp.join("dispatch-master");
    if !master.join("manifest.json").is_file() {
        labboot_tests::master::build_master(tmp, &master);
    }
    let serial_lab = DispatchLab::new("bds", "bench1", &master).unwrap();
    let serial_dev = serial_lab.device("serial", &[]);
    let net_lab = DispatchLab::new("bdn", "bench1", &master).unwrap();
    let net_dev = net_lab.device("network", &[]);
    let (mut serial, mut network) = (Vec::new(), Vec::new());
    for i in 0..runs {
        serial.push(time_to_first_signal(
            &serial_lab,
            &serial_dev,
            &format!("serial{i}"),
        ));
        network.push(time_to_first_signal(
            &net_lab,
            &net_dev,
            &format!("network{i}"),
        ));
        println!(
            "run {i}: serial {:.2} s, network {:.2} s",
            serial[i], network[i]
        );
    }
    let (s, n) = (median(&mut serial), median(&mut network));
    println!("| boot | median time to first signal ({runs} runs) |");
    println!("|---|---:|");
    println!("| serial (LAVA: interrupt U-Boot, type commands) | {s:.2} s |");
    println!("| network-driven (labboot: board boot script) | {n:.2} s |");
    println!("network / serial = {:.2} (goal <= 0.70)", n / s);
}
