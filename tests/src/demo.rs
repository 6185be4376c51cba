//! `make demo`: the appliance end to end in a private namespace. Builds the master image,
//! starts `labboot serve`, powers on the virtual QEMU arm64 board (which netboots the master
//! over NBD from its card, with no console typing, and whose agent checks in), submits a LAVA
//! job with `labboot job submit --wait`, prints its results, waits for the board to boot the
//! master and check in again, and cleans everything up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::appliance::{sample_job, ApplianceLab, HTTP_PORT, SERVER_IP, TOKEN};
use crate::binary::labboot_bin;

/// What the demo runs.
#[derive(Debug, Default, Clone)]
pub struct DemoOptions {
    /// A lab's own job instead of the sample.
    pub job: Option<PathBuf>,
    /// Where to copy the job's output directory.
    pub out: Option<PathBuf>,
    /// Leave the lab running after the job until SIGINT/SIGTERM.
    pub keep: bool,
    /// Work directory for the master image build (cached there).
    pub tmp: PathBuf,
}

/// How the demo's job went.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The job's id.
    pub job_id: i64,
    /// `labboot job submit --wait` succeeded (the job is complete).
    pub complete: bool,
    /// The job's `results.yaml`.
    pub results: String,
}

fn step(msg: &str) {
    println!("==> {msg}");
}

fn json(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

/// Runs the demo; Ok with the outcome once everything is cleaned up.
pub fn run(opts: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    let started = Instant::now();
    step("building the master image (cached when its inputs did not change)");
    let master = crate::appliance::master(&opts.tmp)?;
    let job_text = match &opts.job {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => sample_job(&master),
    };
    step("starting labboot serve in a private network namespace");
    let mut lab = ApplianceLab::new("demo", "qemu-01", &master)?;
    lab.start()?;
    println!(
        "    API at http://{SERVER_IP}:{HTTP_PORT} (netns {}), token {TOKEN}",
        lab.ns.name()
    );
    let outcome = flow(&lab, &job_text, opts);
    if let Err(e) = &outcome {
        eprintln!(
            "demo failed: {e:#}\n--- labboot serve log:\n{}",
            lab.serve_log()
        );
    }
    let outcome = outcome?;
    if opts.keep {
        println!(
            "labboot: API at http://{SERVER_IP}:{HTTP_PORT} token {TOKEN} netns {}",
            lab.ns.name()
        );
        println!("    (the lab keeps running; Ctrl-C ends it)");
        wait_for_signal();
    }
    step("cleaning up");
    drop(lab);
    println!("demo finished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(outcome)
}

fn flow(lab: &ApplianceLab, job_text: &str, opts: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    let board = lab.board.board_id.clone();
    step(&format!(
        "powering on board {board}: U-Boot, its card, the master over NBD"
    ));
    lab.power_on()?;
    let b = lab.wait_board(&board, "\"health\": \"online\"", Duration::from_secs(300))?;
    let first = json(&b)?;
    println!(
        "    {board} checked in from {} ({}), kernel {}",
        first["address"].as_str().unwrap_or("?"),
        first["mac"].as_str().unwrap_or("?"),
        first["info"]["kernel"].as_str().unwrap_or("?")
    );

    step("submitting the job with labboot job submit --wait");
    let job_file = lab.work.path().join("demo-job.yaml");
    std::fs::write(&job_file, job_text)?;
    let status = lab
        .ns
        .command(labboot_bin())
        .args(["job", "submit", "--wait"])
        .arg(&job_file)
        .args(["--server", &lab.url(), "--token", TOKEN])
        .stdin(Stdio::null())
        .status()
        .context("run labboot job submit")?;
    let list = lab.cli(&["job", "list", "--json"]);
    let jobs = json(&String::from_utf8_lossy(&list.stdout))?;
    let job = jobs
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .context("the job list is empty")?;
    let job_id = job["id"].as_i64().context("job id")?;
    println!(
        "    job {job_id}: {} / {}",
        job["state"].as_str().unwrap_or("?"),
        job["health"].as_str().unwrap_or("?")
    );
    let (code, results) = lab.curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{}/api/v1/jobs/{job_id}/results", lab.url()),
    ]);
    if code == 200 {
        step("results.yaml");
        print!("{results}");
    }
    if let Some(out) = &opts.out {
        let dir = lab.work.path().join("state/jobs").join(job_id.to_string());
        copy_dir(&dir, out)?;
        println!("    job output copied to {}", out.display());
    }

    step(&format!(
        "board {board} goes back to the master image and checks in again"
    ));
    let ended = job["ended"].as_str().unwrap_or("").to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let b = json(&lab.board_json(&board)?)?;
        let last = b["last_checkin"].as_str().unwrap_or("");
        if b["state"] == "idle" && b["health"] == "online" && last > ended.as_str() {
            println!("    {board} idle and checked in at {last}");
            break;
        }
        if Instant::now() > deadline {
            bail!("board {board} did not check in again after the job: {b}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(DemoOutcome {
        job_id,
        complete: status.success(),
        results: if code == 200 { results } else { String::new() },
    })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), &t).with_context(|| format!("copy to {}", t.display()))?;
        }
    }
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() {
    // SAFETY: plain libc signal-mask calls on a local, zero-initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}
