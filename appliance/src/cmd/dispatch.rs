//! `labboot dispatch`: run (or `--validate`) one LAVA job on one board, like `lava-run`.
//!
//! The job and the device are checked and the pipeline built before anything else; with
//! `--validate` that is all (plus `description.yaml`). Otherwise the servers the job needs
//! start in-process from the lab config, the job runs with its log streaming to stdout and to
//! `logs.yaml`, and the servers stop at the end. SIGINT/SIGTERM cancel the job cleanly:
//! finalize still powers the board off and removes the job's exports.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use dispatcher::device::{self, Device};
use dispatcher::job::{self, ActionBlock, Job};
use dispatcher::logs::LogWriter;
use dispatcher::pipeline::{self, Pipeline};
use dispatcher::run::{self, RunEnv};

use crate::lab::{Lab, LabConfig, Needs};

/// Arguments of `labboot dispatch`.
#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    /// The device: a rendered device YAML, or a device dictionary (`{% extends … %}`).
    #[arg(long, value_name = "DEVICE.yaml|DICT.jinja2")]
    pub device: PathBuf,
    /// Device-type templates for a dictionary [default: labboot's own device types].
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// The lab config (`server_ip`, `tftp:`, `nbd:`, `nfs:`, `dhcp:` sections).
    #[arg(long, value_name = "LAB.yaml")]
    pub config: Option<PathBuf>,
    /// The job (LAVA V2 YAML).
    #[arg(value_name = "JOB.yaml")]
    pub job: PathBuf,
    /// Where logs.yaml, results.yaml, description.yaml and the downloads go.
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// Build and check the pipeline, write description.yaml, touch no server and no board.
    #[arg(long)]
    pub validate: bool,
    /// The job's id (names its exports and its directory on the board) [default: from the
    /// output directory's name].
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
}

/// Loads and checks the job and the device and builds the pipeline.
pub fn prepare(args: &DispatchArgs) -> anyhow::Result<(Job, Device, Pipeline)> {
    let job = job::load_job(&args.job).map_err(|e| anyhow!("{e}"))?;
    let dev = device::load_device(&args.device, args.templates.as_deref(), &job.context)
        .map_err(|e| anyhow!("{e}"))?;
    if !dev.device_type.is_empty() && dev.device_type != job.device_type {
        return Err(anyhow!(
            "JobError: {}: device_type '{}' does not match the device {} ('{}')",
            args.job.display(),
            job.device_type,
            args.device.display(),
            dev.device_type
        ));
    }
    let pipeline = pipeline::build(&job, &dev).map_err(|e| anyhow!("{e}"))?;
    let style = device::boot_style(&dev, &job.context).map_err(|e| anyhow!("{e}"))?;
    pipeline::validate(&job, &dev, style).map_err(|e| anyhow!("{e}"))?;
    Ok((job, dev, pipeline))
}

fn job_id(args: &DispatchArgs) -> String {
    args.job_id.clone().unwrap_or_else(|| {
        let name = args
            .output_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let clean: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if clean.is_empty() {
            std::process::id().to_string()
        } else {
            clean
        }
    })
}

fn write_description(
    dir: &Path,
    job: &Job,
    dev: &Device,
    pipeline: &Pipeline,
    style: &str,
) -> anyhow::Result<()> {
    let mut top = serde_yaml_ng::Mapping::new();
    let mut j = serde_yaml_ng::Mapping::new();
    j.insert("job_name".into(), job.name.clone().into());
    j.insert("device_type".into(), job.device_type.clone().into());
    j.insert("timeout".into(), job.timeouts.job.as_secs().into());
    if let Some(p) = &job.priority {
        j.insert("priority".into(), p.clone().into());
    }
    if let Some(v) = &job.visibility {
        j.insert("visibility".into(), v.clone());
    }
    for (key, map) in [
        ("context", &job.context),
        ("metadata", &job.metadata),
        ("protocols", &job.protocols),
    ] {
        if !map.is_empty() {
            j.insert(key.into(), map.clone().into());
        }
    }
    top.insert("job".into(), j.into());
    let mut d = serde_yaml_ng::Mapping::new();
    d.insert("file".into(), dev.file.clone().into());
    d.insert("device_type".into(), dev.device_type.clone().into());
    d.insert("boot".into(), style.into());
    top.insert("device".into(), d.into());
    top.insert("pipeline".into(), pipeline::describe(pipeline));
    let text = serde_yaml_ng::to_string(&top)?;
    crate::fsutil::write_atomically(&dir.join("description.yaml"), text.as_bytes())
}

/// Runs `labboot dispatch`.
pub fn run(args: DispatchArgs) -> anyhow::Result<()> {
    let (job, dev, pipeline) = prepare(&args)?;
    let style = device::boot_style(&dev, &job.context).map_err(|e| anyhow!("{e}"))?;
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    write_description(&args.output_dir, &job, &dev, &pipeline, style.as_str())?;
    if args.validate {
        println!(
            "valid: job '{}' on {} ({} actions, {} boot), description in {}",
            job.name,
            args.device.display(),
            pipeline.walk().len(),
            style.as_str(),
            args.output_dir.join("description.yaml").display()
        );
        return Ok(());
    }
    let config = match &args.config {
        Some(p) => LabConfig::load(p)?,
        None => LabConfig::default(),
    };
    let needs = needs(&job);
    let lab = Lab::start(config, needs, &args.output_dir.join("tftp-root"))
        .context("cannot start the lab's servers")?;
    let cancel = Arc::new(AtomicBool::new(false));
    watch_signals(cancel.clone())?;
    let log = LogWriter::create(
        &args.output_dir.join("logs.yaml"),
        Some(Box::new(std::io::stdout())),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let env = RunEnv {
        job_id: job_id(&args),
        output_dir: args.output_dir.clone(),
        services: lab.services(),
        cancel,
        log: log.clone(),
        progress_bar: std::io::stdout().is_terminal(),
        boot_style: style,
    };
    log.info(&format!(
        "job '{}' ({}) on {} — {} boot",
        job.name,
        env.job_id,
        args.device.display(),
        style.as_str()
    ));
    let outcome = run::run(&job, &dev, &pipeline, &env);
    drop(env);
    drop(lab);
    outcome
        .results
        .write(&args.output_dir.join("results.yaml"))
        .map_err(|e| anyhow!("{e}"))?;
    print!(
        "{}",
        outcome
            .results
            .summary(&job.name, outcome.error.as_ref(), outcome.duration)
    );
    match outcome.error {
        None => Ok(()),
        Some(e) => Err(anyhow!("job incomplete: {}: {}", e.kind, e.message)),
    }
}

fn needs(job: &Job) -> Needs {
    let mut n = Needs::default();
    for b in &job.actions {
        if let ActionBlock::Deploy(d) = b {
            n.nfs |= d.nfsrootfs.is_some();
            n.nbd |= d.nbdroot.is_some();
        }
    }
    n
}

/// Sets `flag` on SIGINT or SIGTERM (from a thread of its own).
fn watch_signals(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    let rt = crate::runtime::current_thread()?;
    let signal = rt.block_on(async { crate::shutdown::on_signal() })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(signal);
            flag.store(true, Ordering::SeqCst);
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
