//! `labboot image build`: a recipe to a master image, initrd, kernel and manifest.
//!
//! The work is `imagebuilder`'s; this module only maps arguments (output and cache
//! directories, the epoch from `--epoch` or SOURCE_DATE_EPOCH) and prints a summary. Errors
//! stay one line: imagebuilder's messages already name the recipe field, package or step.

use std::path::PathBuf;

use anyhow::{bail, Context};
use imagebuilder::build::{self, Options, Progress};
use imagebuilder::recipe::Recipe;

/// `labboot image …` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build a recipe's outputs: rootfs.squashfs, rootfs.tar.gz, rootfs.ext4, initrd.cpio.gz, vmlinuz, dtbs/, boot.scr, disk.img + disk.qcow2 (the appliance VM), manifest.json.
    Build(BuildArgs),
}

/// Arguments of `labboot image build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The recipe (YAML).
    pub recipe: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR", required_unless_present = "check")]
    pub out: Option<PathBuf>,
    /// Only check the recipe (its fields, the files and .debs it names, a nested master
    /// recipe), print what it builds, and exit: nothing is fetched or written.
    #[arg(long, conflicts_with = "out")]
    pub check: bool,
    /// Where downloaded packages are kept between builds (default: $LABBOOT_CACHE, else
    /// ~/.cache/labboot/debs).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Timestamp of every file, overriding SOURCE_DATE_EPOCH and the recipe's epoch.
    #[arg(long, value_name = "SECONDS")]
    pub epoch: Option<u32>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The default package cache: `$LABBOOT_CACHE`, else `$HOME/.cache/labboot/debs`.
fn default_cache() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LABBOOT_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home =
        std::env::var_os("HOME").context("neither --cache, LABBOOT_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/labboot/debs"))
}

/// The epoch: `--epoch`, else SOURCE_DATE_EPOCH, else none (the recipe's is used).
fn epoch(arg: Option<u32>) -> anyhow::Result<Option<u32>> {
    if arg.is_some() {
        return Ok(arg);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(e) => Ok(Some(e)),
            Err(_) => {
                bail!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds between 0 and 4294967295")
            }
        },
        Err(_) => Ok(None),
    }
}

/// Runs `labboot image …`.
pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Build(args) => {
            let recipe = Recipe::load(&args.recipe)?;
            let Some(out) = args.out else {
                let outputs: Vec<String> = recipe
                    .outputs
                    .iter()
                    .map(|o| format!("{o:?}").to_lowercase())
                    .collect();
                println!(
                    "{}: ok: {} for {}, {} packages, {} local .debs{}",
                    args.recipe.display(),
                    outputs.join(", "),
                    recipe.arch.debian(),
                    recipe.packages.len(),
                    recipe.local_debs.len(),
                    recipe
                        .master
                        .as_ref()
                        .map(|m| format!(", master {} in /{}", m.recipe.name, m.dir))
                        .unwrap_or_default()
                );
                return Ok(());
            };
            let cache = match args.cache {
                Some(c) => c,
                None => default_cache()?,
            };
            let opts = Options {
                out: out.clone(),
                cache,
                epoch: epoch(args.epoch)?,
            };
            let mut progress = if args.quiet {
                Progress::quiet()
            } else {
                Progress::auto()
            };
            let manifest = build::build(&recipe, &opts, &mut progress)?;
            if !args.quiet {
                for o in &manifest.outputs {
                    println!(
                        "{}  {:>10}  {}",
                        o.sha256,
                        o.size,
                        out.join(&o.name).display()
                    );
                }
            }
            Ok(())
        }
    }
}
