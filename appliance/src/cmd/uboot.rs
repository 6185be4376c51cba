//! `labboot uboot mkscript` and `labboot uboot inspect`: script images like `mkimage -T script`
//! and listings like `dumpimage -l`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use uboot_scripts::image::{build_multi_script, inspect, timestamp, Arch, ScriptSpec};

use crate::fsutil::write_atomically;

/// `labboot uboot …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UbootCommand {
    /// Make a script image, byte-identical to `mkimage -A ARCH -O linux -T script -C none -n NAME -d IN`.
    ///
    /// The timestamp is SOURCE_DATE_EPOCH when set (read as mkimage reads it), else the current
    /// time. Several inputs make a multi-part image, like `mkimage -d a:b`.
    Mkscript(MkscriptArgs),
    /// List an image like `dumpimage -l` after checking its magic, header CRC and data CRC.
    ///
    /// Exits with status 1 and names the failed check when the image is damaged.
    Inspect(InspectArgs),
}

/// Arguments of `labboot uboot mkscript`.
#[derive(Debug, clap::Args)]
pub struct MkscriptArgs {
    /// Target architecture: arm, arm64, x86, x86_64 or riscv.
    #[arg(long, short = 'A')]
    pub arch: Arch,
    /// Image name, at most 32 bytes.
    #[arg(long, short = 'n')]
    pub name: String,
    /// Where to write the image.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// The U-Boot script (several for a multi-part image).
    #[arg(value_name = "IN", required = true)]
    pub inputs: Vec<PathBuf>,
}

/// Arguments of `labboot uboot inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The image file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Runs a `labboot uboot` subcommand.
pub fn run(command: UbootCommand) -> anyhow::Result<()> {
    match command {
        UbootCommand::Mkscript(args) => mkscript(args),
        UbootCommand::Inspect(args) => inspect_file(args),
    }
}

fn mkscript(args: MkscriptArgs) -> anyhow::Result<()> {
    let mut parts = Vec::with_capacity(args.inputs.len());
    for path in &args.inputs {
        let data = std::fs::read(path)
            .with_context(|| format!("cannot read script {}", path.display()))?;
        if data.is_empty() {
            bail!(
                "script {} is empty; an image cannot carry an empty part",
                path.display()
            );
        }
        parts.push(data);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let (time, warning) = timestamp::source_date(epoch.as_deref(), now);
    if let Some(warning) = warning {
        eprintln!("labboot: {warning}");
    }
    let spec = ScriptSpec {
        arch: args.arch,
        name: args.name,
        time,
    };
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let image = build_multi_script(&spec, &refs).context("cannot build the script image")?;
    write_atomically(&args.output, &image)?;
    Ok(())
}

fn inspect_file(args: InspectArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read image {}", args.file.display()))?;
    match inspect(&bytes) {
        Ok(listing) => {
            print!("{listing}");
            Ok(())
        }
        Err(err) => bail!(
            "{}: {} check failed: {err}",
            args.file.display(),
            err.check()
        ),
    }
}
