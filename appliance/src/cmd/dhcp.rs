//! `labboot dhcp` (being written).

/// Arguments of `labboot dhcp`.
#[derive(Debug, clap::Args)]
pub struct DhcpArgs {}

/// Runs `labboot dhcp`.
pub fn run(_args: DhcpArgs) -> anyhow::Result<()> {
    anyhow::bail!("labboot dhcp is not built yet")
}
