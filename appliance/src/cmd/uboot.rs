//! `labboot uboot` (being written).

/// Arguments of `labboot uboot`.
#[derive(Debug, clap::Subcommand)]
pub enum UbootCommand {}

/// Runs `labboot uboot`.
pub fn run(_args: UbootCommand) -> anyhow::Result<()> {
    anyhow::bail!("labboot uboot is not built yet")
}
