//! `labboot sdcard`: the tiny SD-card image of one board.

use std::path::PathBuf;

use anyhow::Context;
use uboot_scripts::bootstrap::Identity;
use uboot_scripts::image::{timestamp, Arch};
use uboot_scripts::sdcard::{write_sdcard, SdCardSpec, DEFAULT_SIZE};

use crate::fsutil::{parse_size, AtomicFile};

/// Arguments of `labboot sdcard`.
///
/// The image holds an MBR and one bootable FAT partition with `boot.scr` (the generic bootstrap
/// script) and `labboot.id` (the identity). Same arguments, same bytes; the script image's
/// timestamp is SOURCE_DATE_EPOCH when set, else 0.
#[derive(Debug, clap::Args)]
pub struct SdcardArgs {
    /// Board id: letters, digits, '.', '_' and '-' (at most 64).
    #[arg(long, value_name = "ID")]
    pub board_id: String,
    /// Secret the board presents to the appliance.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
    /// MAC address the board should use instead of its NIC's (for boards with cloned MACs).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// Architecture written in the script image header: arm, arm64, x86, x86_64, riscv.
    #[arg(long)]
    pub arch: Arch,
    /// Where to write the image.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Image size: bytes, or with K, M or G (powers of 1024), 4M to 2G.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_SIZE, value_name = "SIZE")]
    pub size: u64,
}

/// Runs `labboot sdcard`.
pub fn run(args: SdcardArgs) -> anyhow::Result<()> {
    let identity = Identity::new(&args.board_id, &args.token, args.mac.as_deref())
        .context("invalid board identity")?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let (time, warning) = match epoch {
        Some(value) => timestamp::source_date(Some(&value), 0),
        None => (0, None),
    };
    if let Some(warning) = warning {
        eprintln!("labboot: {warning}");
    }
    let spec = SdCardSpec {
        identity,
        arch: args.arch,
        size: args.size,
        time,
    };
    let mut out = AtomicFile::create(&args.output, args.size)?;
    write_sdcard(out.file(), &spec)
        .with_context(|| format!("cannot write SD card image {}", args.output.display()))?;
    out.commit()?;
    eprintln!(
        "labboot: wrote {} ({} MiB) for board {}",
        args.output.display(),
        args.size >> 20,
        spec.identity.board_id
    );
    Ok(())
}
