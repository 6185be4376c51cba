//! `labboot serve --config appliance.yaml [--check]`: the appliance in one process.

use std::path::PathBuf;

use crate::serve::config::ApplianceConfig;

/// Arguments of `labboot serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The appliance config (see appliance/examples/appliance.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the config (and that the master's files and the boards' devices exist), then exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs `labboot serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ApplianceConfig::load(&args.config)?;
    if args.check {
        let mut problems = config.check_files();
        if let Err(e) = check_devices(&config) {
            problems.push(format!("{e:#}"));
        }
        if !problems.is_empty() {
            anyhow::bail!("{}: {}", args.config.display(), problems.join("; "));
        }
        println!(
            "{}: OK ({} boards, API on {}, state in {})",
            args.config.display(),
            config.boards.len(),
            config.http.listen,
            config.state_dir.display()
        );
        return Ok(());
    }
    let runtime = crate::runtime::multi_thread()?;
    runtime.block_on(crate::serve::serve(config))
}

fn check_devices(config: &ApplianceConfig) -> anyhow::Result<()> {
    for (i, b) in config.boards.iter().enumerate() {
        if b.device.is_file() {
            dispatcher::device::load_device(
                &b.device,
                config.device_types.as_deref(),
                &Default::default(),
            )
            .map_err(|e| anyhow::anyhow!("boards[{i}].device: {e}"))?;
        }
    }
    Ok(())
}
