//! `labboot tftp`: the TFTP server alone, for admins and benchmarks.
//!
//! Settings come from flags, or from the `tftp:` section of a labboot YAML config (`--config`)
//! with flags overriding it; either way they pass through [`TftpSettings`]' checks, so a bad
//! value is reported as one line naming the field. The command builds its own tokio runtime and
//! stops cleanly on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use netboot::tftp::{DirResolver, TftpConfig, TftpServer, TftpSettings, VirtualResolver};
use uboot_scripts::image::Arch;

use crate::boardscript::BoardScripts;

/// Arguments of `labboot tftp`.
#[derive(Debug, clap::Args)]
pub struct TftpArgs {
    /// Directory to serve (required unless the config file sets `tftp.root`).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Address and port to listen on [default: 0.0.0.0:69].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Largest block size granted to clients (8–65464) [default: 65464].
    #[arg(long, value_name = "N")]
    pub max_blksize: Option<u16>,
    /// Largest window (RFC 7440) granted to clients [default: 64].
    #[arg(long, value_name = "N")]
    pub max_window: Option<u16>,
    /// Transfers in progress at once [default: 512].
    #[arg(long, value_name = "N")]
    pub max_transfers: Option<usize>,
    /// Transfers in progress at once from one client address [default: 32].
    #[arg(long, value_name = "N")]
    pub max_transfers_per_client: Option<usize>,
    /// First retransmission timeout in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Retransmissions without progress before a transfer is abandoned [default: 5].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Accept write requests into this directory (separate from --root).
    #[arg(long, value_name = "DIR")]
    pub upload_root: Option<PathBuf>,
    /// Read settings from the `tftp:` section of this YAML file; flags override them.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve `labboot/<board_id>/boot.scr` rendered at request time from `DIR/<board_id>.txt`
    /// (or `DIR/default.txt`): U-Boot commands with `{BOARD_ID}` and `{CLIENT_IP}` filled in.
    #[arg(long, value_name = "DIR")]
    pub board_scripts: Option<PathBuf>,
    /// Architecture written in the headers of rendered board scripts.
    #[arg(long, value_name = "ARCH", default_value = "arm64")]
    pub board_script_arch: Arch,
}

impl TftpArgs {
    /// Merges the config file (if any) and the flags into one unchecked config.
    fn to_config(&self) -> anyhow::Result<TftpConfig> {
        let mut config = match &self.config {
            Some(path) => crate::config_file::read_section(path, "tftp")?,
            None => {
                let root = self
                    .root
                    .clone()
                    .context("--root DIR is required (or --config FILE with tftp.root)")?;
                TftpConfig::new(root)
            }
        };
        if let Some(v) = &self.root {
            config.root = v.clone();
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.max_blksize {
            config.max_blksize = v;
        }
        if let Some(v) = self.max_window {
            config.max_window = v;
        }
        if let Some(v) = self.max_transfers {
            config.max_transfers = v;
        }
        if let Some(v) = self.max_transfers_per_client {
            config.max_transfers_per_client = v;
        }
        if let Some(v) = self.timeout_ms {
            config.timeout_ms = v;
            config.max_timeout_ms = config.max_timeout_ms.max(v);
        }
        if let Some(v) = self.retries {
            config.retries = v;
        }
        if let Some(v) = &self.upload_root {
            config.upload_root = Some(v.clone());
        }
        Ok(config)
    }
}

/// Runs `labboot tftp`.
pub fn run(args: TftpArgs) -> anyhow::Result<()> {
    let settings = TftpSettings::try_from(args.to_config()?)?;
    let board_scripts = args
        .board_scripts
        .as_deref()
        .map(|dir| BoardScripts::new(dir, args.board_script_arch))
        .transpose()?;
    let runtime = crate::runtime::multi_thread()?;
    runtime.block_on(async move {
        let server = match board_scripts {
            Some(scripts) => {
                let files = DirResolver::new(settings.root())
                    .with_context(|| format!("cannot serve {}", settings.root().display()))?;
                let resolver = scripts
                    .serve_in(VirtualResolver::new())
                    .with_fallback(files);
                TftpServer::new(settings, resolver)?
            }
            None => TftpServer::serving_root(settings)?,
        };
        let socket = server.bind().await?;
        server.run(socket, crate::shutdown::on_signal()?).await?;
        anyhow::Ok(())
    })
}
