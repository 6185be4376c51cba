//! `labboot tftp` (being written).

/// Arguments of `labboot tftp`.
#[derive(Debug, clap::Args)]
pub struct TftpArgs {}

/// Runs `labboot tftp`.
pub fn run(_args: TftpArgs) -> anyhow::Result<()> {
    anyhow::bail!("labboot tftp is not built yet")
}
